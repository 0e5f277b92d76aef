"""The controller in the benchmark's own event loop: started on the simulated board, probed, stopped, bounded.

What it is for: tools/bench/reaction.py and roundtrip.py run `Controller` (firmware/app.py) in-process,
as the program runs it (`build_meters` for its meters), against a private mosquitto.

What it must never do: hang (every wait is bounded and a hang prints every task's stack) or leave the
controller running. Standard: none beyond the controller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from firmware.app import Controller
from firmware.boards import build_meters
from firmware.config import load_config
from firmware.store import Store
from hal.sim import SimBoard
from tests.support.store import SlowStore
from tools.bench.probe import Probe

T = TypeVar("T")


async def bounded(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """`coro`, or a clear error with every task's stack when it takes longer than `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await coro
    except TimeoutError:
        for other in asyncio.all_tasks():
            other.print_stack(limit=8, file=sys.stderr)
        raise SystemExit(f"bench: a measurement took over {timeout_s:g} s (tasks above)") from None


async def running(flag: asyncio.Event, controller: asyncio.Task[None], what: str, timeout_s: float = 30.0) -> None:
    """Wait for `flag`; a controller that stopped meanwhile raises its error."""
    waiter = asyncio.get_running_loop().create_task(flag.wait(), name=f"wait-{what}")
    done, _ = await asyncio.wait({waiter, controller}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        if controller in done:
            controller.result()  # its exception, if it raised
        raise SystemExit(f"bench: the controller was not {what} after {timeout_s:g} s")


async def stop(task: asyncio.Task[None], grace_s: float = 10.0) -> None:
    """Cancel the controller and wait for it, bounded (a hang ends the benchmark with every task's stack)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        for other in asyncio.all_tasks():
            other.print_stack(limit=8, file=sys.stderr)
        raise SystemExit(f"bench: the controller did not stop within {grace_s:g} s (tasks above)")


@contextlib.asynccontextmanager
async def in_process(config_path: Path, fsync_delay_s: float = 0.0, *,
                     probed: bool = True) -> AsyncIterator[tuple[Controller, Probe | None]]:
    """The controller on the simulated board in this loop (probed: tools/bench/probe.py), connected to its
    broker; with `fsync_delay_s` every durable commit takes that much longer (tests/support/store.py)."""
    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    sim = SimBoard([e.id for e in config.evses], clock=loop.time)
    state_dir = config.charger.state_dir
    store = SlowStore(state_dir, fsync_delay_s) if fsync_delay_s else Store(state_dir)
    controller = Controller(config, sim, store, meters=build_meters(config, sim), sim=sim)
    probe = Probe(controller, sim) if probed else None
    task = loop.create_task(controller.run(), name="controller")
    try:
        await running(controller.ready, task, "ready")
        await running(controller.link.connected, task, "connected to the broker")
        yield controller, probe
    finally:
        await stop(task)
