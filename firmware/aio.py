"""Small asyncio helpers of the shell: the loop's clock (and the core's `Instant` built from it), the
process age, a cancellation that always ends a task, and the heap settled after boot.

What it must never do: decide anything or hide an error; `cancellable` only makes sure that one
cancellation (SIGTERM) reaches the fail-safe even through libraries that swallow one.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from firmware.core.instant import Instant

log = logging.getLogger(__name__)


def settle_heap() -> None:
    """After boot: collect once, then move every object alive now (modules, config, the core's
    structures: they live as long as the process) out of the garbage collector's reach (`gc.freeze`).
    Its full passes then walk only what was made since: under load they took up to 13 ms with the loop,
    safety lane included, stalled; after this, under 2 ms (tools/bench/reaction.py with gc callbacks)."""
    gc.collect()
    gc.freeze()


def unsettle_heap() -> None:
    """When the controller stops: what `settle_heap` froze is the collector's again (a process that
    goes on, a test run or the fleet simulator, must still reclaim a stopped controller's cycles)."""
    gc.unfreeze()


def utc_now() -> datetime:
    """The wall clock in UTC (reservation expiry, timestamps); the core gets it passed in."""
    return datetime.now(UTC)


def loop_time() -> float:
    """The running loop's clock (monotonic seconds), the time base of the core."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:  # built outside a loop (a script): the default loop clock is time.monotonic
        return time.monotonic()


def instant() -> Instant:
    """Both clocks read once, for one step of the core: the loop's monotonic time, then UTC."""
    return Instant(mono=loop_time(), utc=utc_now())


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), for the boot log."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - start, 0.0)


async def cancellable(coro: Coroutine[Any, Any, None], name: str) -> None:
    """Run a link task so that one cancellation always ends it. Libraries that await through
    `asyncio.wait_for` (aiomqtt, pymodbus) can swallow a cancel on Python 3.11 (CPython gh-86296);
    then a SIGTERM would never reach the fail-safe. The inner task is cancelled until it stops."""
    inner = asyncio.get_running_loop().create_task(coro, name=f"{name}-inner")
    try:
        await asyncio.wait([inner])
        inner.result()
    finally:
        for _ in range(100):
            if inner.done():
                break
            inner.cancel()
            await asyncio.wait([inner], timeout=0.02)
        else:
            log.error("%s did not stop after repeated cancellation; abandoning it", name)
