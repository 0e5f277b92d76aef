"""Outputs that take time: the connector lock and the RCD self-test, run beside the safety path.

What it is for. A motor lock needs a pulse and then its feedback switch (a few hundred ms), and an
RCD self-test pulses the test input and waits for the trip (up to half a second). The core task must
never wait for either: a CP change on another EVSE, or on this one, has to open a relay at once. So
the core loop hands these actions here; each runs as its own task, one at a time per EVSE and kind
(a newer lock command waits for the one still moving), and its result goes back into the inbox as a
fact for the core: `LockSensed` (supervision decides CONNECTOR_LOCK_FAILED) and `RcdSelfTested`
(the EVSE machine decides whether charging may start).

What it must never do: decide anything (a failure is reported, never acted on here), block the
core task, or let a failing device escape as an exception (a HardwareError is a failed result).

Standard: IEC 62196 (the socket's locking device, checked before energising); IEC 62955 / IEC 62752
(the RCD's test input); EVerest's connector_lock and ac_rcd interfaces for the error model.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from firmware.core.errors import HardwareError
from firmware.core.events import RcdSelfTested
from firmware.core.supervision_events import LockSensed
from firmware.inbox import Inbox
from firmware.items import Item
from hal.protocols import Board

log = logging.getLogger(__name__)


class SlowOutputs:
    """The lock and RCD self-test tasks of one controller; results go to `inbox`."""

    def __init__(self, board: Board, inbox: Inbox[Item]) -> None:
        self.board = board
        self.inbox = inbox
        self._serial: dict[tuple[str, int], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def lock(self, cid: int, locked: bool) -> None:
        """Drive the lock to `locked`; report `LockSensed` when its feedback confirmed or not."""
        self._start(("lock", cid), partial(self._lock, cid, locked), f"lock{cid}")

    def rcd_self_test(self, cid: int) -> None:
        """Run the RCD's self-test; report `RcdSelfTested`."""
        self._start(("rcd", cid), partial(self._rcd, cid), f"rcd-test{cid}")

    def cancel(self) -> None:
        """At stop (the outputs are driven safe by failsafe() anyway)."""
        for task in list(self._tasks):
            task.cancel()

    async def idle(self) -> None:
        """Wait until every started task has reported (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start(self, key: tuple[str, int], job: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        serial = self._serial.setdefault(key, asyncio.Lock())

        async def run() -> None:
            async with serial:  # one at a time per EVSE and kind, in the order the core asked
                await job()  # created only now: a job cancelled while queued leaves no coroutine behind

        task = asyncio.get_running_loop().create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lock(self, cid: int, locked: bool) -> None:
        try:
            await self.board.lock.set_locked(cid, locked)
        except HardwareError as exc:
            log.error("c%d connector lock: %s", cid, exc)  # noqa: TRY400 - the message says it all
            self.inbox.put_safety(LockSensed(cid=cid, locked=locked, confirmed=False))
        else:
            self.inbox.put_safety(LockSensed(cid=cid, locked=locked, confirmed=True))

    async def _rcd(self, cid: int) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            passed = await self.board.rcd.self_test(cid)
        except HardwareError as exc:
            log.error("c%d RCD self-test could not run: %s", cid, exc)  # noqa: TRY400
            passed = False
        log.log(logging.INFO if passed else logging.ERROR, "c%d RCD self-test %s in %.0f ms", cid,
                "passed" if passed else "FAILED", (loop.time() - started) * 1000)
        self.inbox.put_safety(RcdSelfTested(cid=cid, passed=passed))
