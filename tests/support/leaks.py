"""A fixture that fails an async test which leaves tasks running (STYLE.md B7: pymodbus and aiomqtt
leave tasks behind when a client is not closed; so would a controller that was not stopped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

#: How long the loop may take to finish tasks that are already cancelled or ending; a test module
#: may set its own, stricter `LEAK_SETTLE_S`.
SETTLE_S = 1.0


@pytest.fixture(autouse=True)
async def no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    settle_s = getattr(request.module, "LEAK_SETTLE_S", SETTLE_S)
    before = asyncio.all_tasks()
    yield
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settle_s
    while True:
        leaked = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()}
        if not leaked or loop.time() >= deadline:
            break
        await asyncio.sleep(0.01)
    names = sorted(f"{t.get_name()} ({getattr(t.get_coro(), '__qualname__', t.get_coro())})" for t in leaked)
    for task in leaked:
        task.cancel()
    assert not leaked, f"the test left {len(leaked)} task(s) running: {names}"
