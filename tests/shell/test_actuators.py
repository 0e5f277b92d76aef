"""The slow outputs (firmware/actuators.py): the lock and the RCD self-test run beside the core task,
one at a time per EVSE, and report their result into the inbox as facts for the core."""

from __future__ import annotations

import asyncio
import gc

from firmware.actuators import SlowOutputs
from firmware.core.events import RcdSelfTested
from firmware.core.supervision_events import LockSensed
from firmware.inbox import Inbox
from firmware.items import Item
from hal.sim import SimBoard


async def drained(inbox: Inbox[Item]) -> list[Item]:
    return [await inbox.get() for _ in range(len(inbox))]


async def test_a_lock_and_a_self_test_report_their_results() -> None:
    sim = SimBoard([1, 2], clock=asyncio.get_running_loop().time)
    inbox: Inbox[Item] = Inbox()
    slow = SlowOutputs(sim, inbox)
    slow.lock(1, True)
    slow.rcd_self_test(2)
    sim.rcd_self_test_fails(1)
    slow.rcd_self_test(1)
    await slow.idle()
    items = await drained(inbox)
    assert LockSensed(cid=1, locked=True, confirmed=True) in items
    assert RcdSelfTested(cid=2, passed=True) in items
    assert RcdSelfTested(cid=1, passed=False) in items
    assert sim.locked(1)


async def test_jobs_of_one_evse_run_in_order_and_a_cancelled_queue_leaves_nothing_behind() -> None:
    sim = SimBoard([1], clock=asyncio.get_running_loop().time)
    inbox: Inbox[Item] = Inbox()
    slow = SlowOutputs(sim, inbox)
    for locked in (True, False, True):
        slow.lock(1, locked)
    await slow.idle()
    assert [i.locked for i in await drained(inbox) if isinstance(i, LockSensed)] == [True, False, True]
    for locked in (True, False, True):
        slow.lock(1, locked)
    slow.cancel()  # the queued jobs never started: no "coroutine was never awaited" (an error here)
    await asyncio.sleep(0)
    await slow.idle()
    gc.collect()
    assert sim.locked(1) is True  # the last completed job's state: the cancelled ones did nothing
