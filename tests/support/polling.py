"""Polling for conditions that no backend message announces (the broker is down, there is no backend,
or the condition is the controller's own state)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def until(predicate: Callable[[], Any], timeout: float, step: float = 0.01) -> Any:  # noqa: ANN401
    """Poll `predicate` until it is true (returns its value); AssertionError after `timeout` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if loop.time() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)


async def stays(predicate: Callable[[], Any], seconds: float, step: float = 0.01) -> bool:
    """True if `predicate()` holds at every check for `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        if not predicate():
            return False
        await asyncio.sleep(step)
    return bool(predicate())
