"""Fail-safe: every relay open, CP to F, LEDs to fault (DESIGN.md principle 3).

What it is for: the controller calls `failsafe()` before anything else runs, on any crash of a
safety-relevant task, on SIGTERM/SIGINT and on exit. It is idempotent, bounded in time
(FAILSAFE_STEP_S per step) and never raises but a cancellation, which it lets go on after trying
every step. It must never wait on the disk or the network, or skip a step because another failed.

Standard: IEC 61851-1 Annex A (state F: "EVSE not available"); STYLE.md B3.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Final

from firmware.core.events import DUTY_F, Led
from hal.protocols import Board

log = logging.getLogger(__name__)

FAILSAFE_STEP_S: Final = 0.5


async def failsafe(board: Board, evse_ids: list[int]) -> None:
    """Every relay open, CP to F, LEDs to fault. Idempotent, bounded in time, never raises but a
    cancellation: every step is still tried, then the cancellation goes on (it is never swallowed)."""
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    for cid in evse_ids:
        steps += [
            (f"open relay {cid}", partial(board.relays.set_closed, cid, False)),
            (f"CP F {cid}", partial(board.pilot.set_duty, cid, DUTY_F)),
            (f"LED fault {cid}", partial(board.leds.set_led, cid, Led.FAULT)),
        ]
    cancelled: asyncio.CancelledError | None = None
    for name, step in steps:
        stopped = await _failsafe_step(name, step)
        if stopped is not None:  # try the other steps first, then let it go on
            cancelled = stopped
            log.error("failsafe: %s cancelled", name)
    if cancelled is not None:
        raise cancelled


async def _failsafe_step(name: str, step: Callable[[], Awaitable[None]]) -> asyncio.CancelledError | None:
    """One step of `failsafe`, bounded by FAILSAFE_STEP_S. A failure is logged with its traceback; a
    cancellation is returned, not raised, so that the caller still tries the other steps."""
    try:
        async with asyncio.timeout(FAILSAFE_STEP_S):
            await step()
    except asyncio.CancelledError as exc:
        return exc
    except Exception:  # noqa: BLE001 - a failing step must not keep the others from running
        log.exception("failsafe: %s failed", name)
    return None
