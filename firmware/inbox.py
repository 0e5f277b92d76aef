"""The core task's input: one inbox with two lanes, and barriers that tell when an input was seen.

What it is for.

* **Two lanes.** Hardware facts that can require opening a relay (CP and PP samples, faults) go in
  the *safety* lane; requests, link changes, meter readings and timers go in the *normal* lane. The
  core task always takes the safety lane first, so a CP change never queues behind a burst of backend
  requests (DESIGN.md timing table: "the relay-open action never waits behind a disk write or a
  network send"). Within a lane the order is kept.
* **Barriers** make the simulated board deterministic (API.md §8: a `sim_*` reply means the
  controller has seen the change). A waiter asks to be told when the core has handled the input of a
  *channel* (the pilot of EVSE 1, the token reader, ...) read at or after a given time. Producers call
  `reached(channel, read_at)` after queuing what they read; if someone waits, a `Barrier` item goes
  into the normal lane behind it. Because the safety lane is always drained first, everything a
  producer queued before the barrier, in either lane, has been handled when the barrier is.

What it must never do: block a producer (both lanes are unbounded and `put` never waits), reorder
items within a lane, or let a cancelled waiter break the core task.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Barrier:
    """Handled by the core task after everything its producer queued before it."""

    channel: Hashable
    read_at: float


@dataclass(slots=True)
class Inbox(Generic[T]):
    """Two FIFO lanes; `get()` returns the oldest safety item, else the oldest normal item."""

    _safety: deque[T] = field(default_factory=deque)
    _normal: deque[T] = field(default_factory=deque)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put_safety(self, item: T) -> None:
        self._safety.append(item)
        self._ready.set()

    def put(self, item: T) -> None:
        self._normal.append(item)
        self._ready.set()

    async def get(self) -> T:
        while not (self._safety or self._normal):
            self._ready.clear()
            await self._ready.wait()
        return self._safety.popleft() if self._safety else self._normal.popleft()

    async def get_until(self, when: float | None) -> T | None:
        """The oldest item as `get()`, or None once the loop's clock reaches `when` with none queued.
        (A timer handle rather than `asyncio.timeout_at`: this runs for every wake of the core task,
        and a timeout's cancellation costs several times more CPU.)"""
        if not (self._safety or self._normal) and when is not None:
            self._ready.clear()
            timer = asyncio.get_running_loop().call_at(when, self._ready.set)
            try:
                await self._ready.wait()
            finally:
                timer.cancel()
            if not (self._safety or self._normal):
                return None
        return await self.get()

    def __len__(self) -> int:
        return len(self._safety) + len(self._normal)


class BarrierLane(Protocol):
    """Where barriers are queued: the normal lane of an inbox whose items include `Barrier`."""

    def put(self, item: Barrier) -> None: ...


@dataclass(slots=True)
class Barriers:
    """Waiters for "the core has handled channel C's input read at or after time T"."""

    inbox: BarrierLane
    _waiters: dict[Hashable, list[tuple[float, asyncio.Future[None]]]] = field(default_factory=dict)

    def wait(self, channel: Hashable, read_after: float) -> asyncio.Future[None]:
        """A future done once the core has handled a barrier of `channel` read at >= `read_after`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append((read_after, future))
        return future

    def awaited(self, channel: Hashable) -> bool:
        """Someone waits for `channel` (its producer should read at its fast pace until then)."""
        return bool(self._waiters.get(channel))

    def reached(self, channel: Hashable, read_at: float) -> None:
        """A producer has queued everything it read at `read_at` (cheap when nobody waits)."""
        waiters = self._waiters.get(channel)
        if waiters and any(after <= read_at for after, _ in waiters):
            self.inbox.put(Barrier(channel, read_at))

    def handled(self, barrier: Barrier) -> None:
        """The core task handled `barrier`: release the waiters it satisfies."""
        waiters = self._waiters.get(barrier.channel, [])
        keep = []
        for after, future in waiters:
            if after <= barrier.read_at:
                if not future.done():  # a waiter that gave up (cancelled) is simply dropped
                    future.set_result(None)
            else:
                keep.append((after, future))
        if keep:
            self._waiters[barrier.channel] = keep
        else:
            self._waiters.pop(barrier.channel, None)
