"""The core task's inbox (safety lane first, barriers) and the group-commit writer, on their own."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from firmware.inbox import Barrier, Barriers, Inbox
from firmware.persistence import Persistence
from firmware.store import OutboxRecord, Store


async def test_the_safety_lane_is_always_taken_first_and_each_lane_keeps_its_order() -> None:
    inbox: Inbox[str] = Inbox()
    for item in ("request-1", "request-2"):
        inbox.put(item)
    inbox.put_safety("cp-1")
    inbox.put_safety("cp-2")
    inbox.put("request-3")
    got = [await inbox.get() for _ in range(5)]
    assert got == ["cp-1", "cp-2", "request-1", "request-2", "request-3"]
    assert len(inbox) == 0


async def test_get_waits_for_an_item() -> None:
    inbox: Inbox[str] = Inbox()
    waiter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    inbox.put_safety("cp")
    assert await waiter == "cp"


async def test_a_barrier_is_queued_only_for_a_waiter_and_releases_only_late_enough_reads() -> None:
    inbox: Inbox[object] = Inbox()
    barriers = Barriers(inbox)
    barriers.reached("pilot1", 1.0)
    assert len(inbox) == 0  # nobody waits: nothing queued
    future = barriers.wait("pilot1", 2.0)
    barriers.reached("pilot1", 1.5)  # read before the change was due: not enough
    assert len(inbox) == 0
    inbox.put_safety("PilotSampled")
    barriers.reached("pilot1", 2.0)
    assert await inbox.get() == "PilotSampled"  # what the producer queued before the barrier comes first
    barrier = await inbox.get()
    assert barrier == Barrier("pilot1", 2.0)
    assert not future.done()  # released only when the core task has handled the barrier
    barriers.handled(barrier)
    assert future.done()


async def test_a_cancelled_waiter_is_dropped_without_error() -> None:
    barriers = Barriers(Inbox())
    future = barriers.wait("meter1", 0.0)
    future.cancel()
    barriers.handled(Barrier("meter1", 1.0))  # must not raise InvalidStateError


class CountingStore(Store):
    """Counts commits and can hold a commit inside the worker thread (a slow fsync)."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir, fsync=False)
        self.commits: list[tuple[list[int], dict[str, Any], list[int]]] = []
        self.gate = threading.Event()
        self.gate.set()

    def commit(self, messages: list[OutboxRecord] | None = None, state: dict[str, Any] | None = None, *,
               acks: list[int] | None = None) -> list[int]:
        self.gate.wait(5)
        self.commits.append(([m.seq for m in messages or []], dict(state or {}), list(acks or [])))
        return super().commit(messages, state, acks=acks)


def _record(seq: int) -> OutboxRecord:
    return OutboxRecord(seq=seq, topic="t", payload=b"p", kind="session")


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    s = CountingStore(tmp_path)
    s.load()
    return s


async def test_steps_staged_during_a_slow_commit_share_the_next_one_and_replies_keep_their_order(
        store: CountingStore) -> None:
    limit = {"value": 0}
    writer = Persistence(store, collect=lambda _dirty: {"limit": limit["value"]})
    writer.loaded({}, [])
    released: list[str] = []
    task = asyncio.create_task(writer.run())
    store.gate.clear()  # the first commit hangs in the worker thread, like a slow fsync
    limit["value"] = 1
    writer.when_durable(writer.stage([_record(1)]), lambda: released.append("r1"))
    await asyncio.sleep(0.05)
    for seq in (2, 3, 4):  # three more steps while the first commit is under way
        limit["value"] = seq
        writer.when_durable(writer.stage([_record(seq)]), lambda s=seq: released.append(f"r{s}"))
    assert released == []  # nothing is replied before it is durable
    store.gate.set()
    await asyncio.wait_for(_until(lambda: len(released) == 4), 5)
    assert released == ["r1", "r2", "r3", "r4"]
    assert [seqs for seqs, _, _ in store.commits] == [[1], [2, 3, 4]]  # one commit for the three
    assert store.commits[-1][1] == {"limit": 4}
    assert [r.seq for r in writer.pending()] == [1, 2, 3, 4]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_acks_leave_the_view_at_once_and_a_step_that_changed_nothing_writes_nothing(
        store: CountingStore) -> None:
    writer = Persistence(store, collect=lambda _dirty: {"limit": 1})
    writer.loaded({}, [])
    writer.stage([_record(1), _record(2)])
    await writer.flush()
    writer.ack([1])
    assert [r.seq for r in writer.pending()] == [2]  # no waiting for the write
    await writer.flush()
    assert store.commits[-1] == ([], {}, [1])
    commits = len(store.commits)
    released: list[int] = []
    writer.when_durable(writer.stage(), lambda: released.append(1))
    await writer.flush()
    assert released == [1]
    assert len(store.commits) == commits  # nothing durable changed: no write at all
    assert writer.stats.steps == 2
    assert writer.stats.commits == 2


async def _until(predicate: Any) -> None:  # noqa: ANN401
    while not predicate():
        await asyncio.sleep(0.01)


async def test_the_loop_side_never_takes_the_store_lock(store: CountingStore) -> None:
    """A worker holding the store's lock through a long fsync must not block the event loop: the
    outbox view and the acks live on the loop (issue 8 §2)."""
    writer = Persistence(store, collect=lambda _dirty: {})
    writer.loaded({}, [_record(1), _record(2)])
    held, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with store._lock:  # noqa: SLF001 - what a worker thread holds during a commit
            held.set()
            release.wait(5)

    worker = threading.Thread(target=hold_lock)
    worker.start()
    try:
        assert held.wait(5)
        loop = asyncio.get_running_loop()
        before = loop.time()
        assert [r.seq for r in writer.pending()] == [1, 2]
        writer.ack([1])
        writer.stage([_record(3)])
        assert [r.seq for r in writer.pending()] == [2]
        assert loop.time() - before < 0.1  # nothing above waited for the lock
    finally:
        release.set()
        worker.join(5)
