"""Group commit, and what is durable: the one writer between the core task and the durable store.

What it is for. The core task must never wait on the disk (DESIGN.md principle 6: "nothing
safety-relevant ever waits for a commit"; an SD card's fsync can take hundreds of milliseconds). So the
core task only *stages* what a step produced (outbox messages, the names of state parts it changed)
and goes on at once; this module's writer task commits everything staged meanwhile in one
transaction with one fsync, as databases do (group commit), and only then releases what had to wait
for it: replies to requests (API.md §2: an `ok` reply follows durability), meter samples (never ahead
of the stored energy), and the outbox sender (a message is published only once committed).

Guarantees kept:

* Order. Steps get increasing tickets; a batch holds every step staged before it; a callback waits for
  its own ticket, so replies are released in the order their requests were executed.
* Atomicity. One batch is one `Store.commit` (one fsync'ed record): after a power cut either all of it
  is there or none of it, and no reply was sent for anything that is not.
* The event loop never blocks on the store: `pending()` and `ack()` work on an in-memory view that is
  updated on the loop after each commit; the store's own lock is only ever taken by the one worker
  thread that writes.

What it must never do: decide anything, drop a message that is not droppable, or raise out of a
callback (a failing callback is logged; the others still run).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from firmware.core.charger import Charger, Output
from firmware.core.errors import ChargerError
from firmware.core.events import SessionCancellationReason
from firmware.core.evse import StoredSession
from firmware.core.instant import Instant
from firmware.store import OutboxRecord, Store
from hal.protocols import MeterSample

log = logging.getLogger(__name__)

#: Called on the event loop, before each commit, with the names of the large state parts that steps
#: marked changed; returns every state part as it is now (the writer keeps only what changed).
Collector = Callable[[set[str]], dict[str, Any]]


@dataclass(slots=True)
class CommitStats:
    commits: int = 0  # writes to the store (batches that changed nothing durable write nothing)
    steps: int = 0  # staged steps (steps / commits = the grouping factor)
    largest_batch: int = 0


@dataclass(slots=True)
class Persistence:
    """Stage on the loop, commit in one worker thread, release callbacks after durability."""

    store: Store
    collect: Collector
    on_committed: Callable[[], None] = lambda: None  # the outbox sender's wake-up
    stats: CommitStats = field(default_factory=CommitStats)
    _staged_ticket: int = 0
    _durable_ticket: int = 0
    _records: list[OutboxRecord] = field(default_factory=list)
    _dirty: set[str] = field(default_factory=set)
    _extra: dict[str, Any] = field(default_factory=dict)
    _acks: list[int] = field(default_factory=list)
    _steps: int = 0
    _waiting: deque[tuple[int, Callable[[], None]]] = field(default_factory=deque)
    _committed: dict[str, Any] = field(default_factory=dict)
    _view: dict[int, OutboxRecord] = field(default_factory=dict)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _writing: asyncio.Future[list[int]] | None = None

    def loaded(self, state: dict[str, Any], pending: list[OutboxRecord]) -> None:
        """What `Store.load()` returned at boot: the baseline for diffs and the outbox view."""
        self._committed = dict(state)
        self._view = {r.seq: r for r in pending}

    # --- on the event loop (never blocks) --------------------------------------------------------

    @property
    def staged_ticket(self) -> int:
        """The ticket of the last step staged; `when_durable(staged_ticket, ...)` waits for it."""
        return self._staged_ticket

    def stage(self, records: list[OutboxRecord] | None = None, *, dirty: set[str] | None = None,
              extra: dict[str, Any] | None = None) -> int:
        """One step's durable output; returns its ticket. Always starts a commit: state parts the
        step changed are found by the collector's diff even when nothing is named."""
        self._staged_ticket += 1
        self._steps += 1
        self._records.extend(records or ())
        self._dirty |= dirty or set()
        self._extra.update(extra or {})
        if not self._settled_unchanged():  # else the writer has nothing to do: it is not woken
            self._wakeup.set()
        return self._staged_ticket

    def when_durable(self, ticket: int, callback: Callable[[], None]) -> None:
        """Run `callback` once everything up to `ticket` is committed (at once if it already is)."""
        if ticket <= self._durable_ticket:
            _call(callback)
        else:
            self._waiting.append((ticket, callback))

    def _settled_unchanged(self) -> bool:
        """The writer's no-write case, decided at once: when no commit is under way, no message, ack
        or extra part is staged and the state parts equal the committed ones, the steps staged so far
        changed nothing durable, so they are durable now (a read-only request's reply goes out without
        a trip through the writer task). False: the writer must commit."""
        if self._writing is not None or self._records or self._acks or self._extra or self._dirty:
            return False
        parts = self.collect(set())
        if any(self._committed.get(k) != v for k, v in parts.items()):
            return False
        self.stats.steps += self._steps
        self._steps = 0
        self._mark_durable(self._staged_ticket)
        return True

    def _mark_durable(self, ticket: int) -> None:
        self._durable_ticket = max(self._durable_ticket, ticket)
        while self._waiting and self._waiting[0][0] <= self._durable_ticket:
            _call(self._waiting.popleft()[1])

    def pending(self) -> list[OutboxRecord]:
        """The committed messages not yet acknowledged, in seq order (meter samples first)."""
        return [self._view[s] for s in sorted(self._view)]

    def ack(self, seqs: list[int]) -> None:
        """The broker acknowledged these; written with the next commit (a lost ack only means one
        more delivery after a power cut, which QoS 1 allows: API.md §6)."""
        for seq in seqs:
            if self._view.pop(seq, None) is not None:
                self._acks.append(seq)
        if self._acks:
            self._wakeup.set()

    # --- the writer ------------------------------------------------------------------------------

    async def run(self) -> None:
        """The writer task: one batch at a time, for the life of the controller."""
        while True:
            await self._wakeup.wait()
            await self.flush()

    async def flush(self) -> None:
        """Commit everything staged so far (and wait for a commit already under way)."""
        if self._writing is not None:  # cancelled while a worker was writing: let it finish first
            await asyncio.shield(self._writing)
        self._wakeup.clear()
        if not (self._steps or self._acks or self._records or self._extra):
            return
        records, acks, ticket, steps = self._records, self._acks, self._staged_ticket, self._steps
        self._records, self._acks, self._steps = [], [], 0
        parts = self.collect(self._dirty)
        parts.update(self._extra)
        self._dirty, self._extra = set(), {}
        changed = {k: v for k, v in parts.items() if self._committed.get(k) != v}
        dropped: list[int] = []
        if records or changed or acks:  # else the steps changed nothing durable: no write at all
            self._writing = asyncio.get_running_loop().run_in_executor(None, self._write, records, changed, acks)
            try:
                dropped = await asyncio.shield(self._writing)
            finally:
                if self._writing.done():
                    self._writing = None
            self.stats.commits += 1
        self._committed.update(changed)
        for record in records:
            self._view[record.seq] = record
        for seq in dropped:
            self._view.pop(seq, None)
        self.stats.steps += steps
        self.stats.largest_batch = max(self.stats.largest_batch, steps)
        if records:  # the outbox sender first: the messages a request caused go out before its reply
            self.on_committed()
        self._mark_durable(ticket)

    def _write(self, records: list[OutboxRecord], changed: dict[str, Any], acks: list[int]) -> list[int]:
        return self.store.commit(records, changed, acks=acks)


def _call(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # noqa: BLE001 - one bad callback must not stop the writer or the others
        log.exception("a callback after commit failed")


# --- what is durable, and how it comes back ------------------------------------------------------

def collect_state(charger: Charger, last_meter: Mapping[int, MeterSample], dirty: set[str]) -> dict[str, Any]:
    """The durable state parts as they are now (the writer's collector). The energy registers go with
    every commit, so nothing published ever exceeds what a restart restores; the reservation book and
    the local list only when a step marked them changed (they can be large)."""
    parts: dict[str, Any] = {
        "sessions": {str(cid): (asdict(StoredSession.of(m.session)) if m.session is not None else None)
                     for cid, m in charger.evses.items()},
        "limits": {str(cid): charger.commanded_limit_a(cid) for cid in charger.evses},
        "enabled": {str(cid): m.enabled for cid, m in charger.evses.items()},
        "counters": {str(cid): [m.counters.contactor_cycles, m.counters.openings_under_load]
                     for cid, m in charger.evses.items()},
    }
    energy = {str(cid): sample.energy_wh_import for cid, sample in last_meter.items()}
    if energy:
        parts["energy"] = energy
    if "reservations" in dirty:
        parts["reservations"] = charger.book.snapshot()
    if "local_list" in dirty:
        parts["local_list"] = charger.local_list.snapshot()
    return parts


def restore_state(charger: Charger, state: dict[str, Any], at: Instant, *,
                  resume_after_power_loss: bool) -> list[Output]:
    """Bring back what the store holds; a damaged part is logged and skipped, never fatal. Sessions
    come back before the reservations, so the book judges scheduled reservations and G3 holds on
    EVSEs whose sessions are back (API.md §7 V5, U6)."""
    out: list[Output] = []

    def attempt(part: str, step: Callable[[], list[Output]]) -> None:
        if part not in state:
            return
        try:
            out.extend(step())
        except (ValueError, KeyError, TypeError, IndexError, ChargerError):
            log.exception("stored %s could not be restored; continuing with the rest", part)

    attempt("local_list", partial(_restored_list, charger, state.get("local_list")))
    for key, limit in _items(state.get("limits")):
        attempt("limits", partial(_restored_limit, charger, key, limit, at))
    for key, enabled in _items(state.get("enabled")):
        if enabled is False:
            attempt("enabled", partial(_restored_disabled, charger, key, at))
    for key, counts in _items(state.get("counters")):
        attempt("counters", partial(_restored_counters, charger, key, counts))
    reason = SessionCancellationReason.REBOOT if state.get("clean") is True else SessionCancellationReason.POWER_LOSS
    for key, stored in _items(state.get("sessions")):
        if isinstance(stored, dict):
            attempt("sessions", partial(charger.restore_session, _cid(key), StoredSession(**stored), at,
                                        reason=reason, resume=resume_after_power_loss))
    attempt("reservations", partial(_restored_book, charger, state.get("reservations"), at))
    return out


def _cid(key: object) -> int:
    return int(str(key))


def _restored_limit(charger: Charger, key: object, limit: object, at: Instant) -> list[Output]:
    if isinstance(limit, bool) or not isinstance(limit, int | float):
        raise TypeError(f"limit {limit!r} is not a number")
    return list(charger.set_max_current(_cid(key), float(limit), at)[1])


def _restored_disabled(charger: Charger, key: object, at: Instant) -> list[Output]:
    return charger.set_enabled(_cid(key), False, at)


def _restored_book(charger: Charger, data: object, at: Instant) -> list[Output]:
    if not isinstance(data, Mapping):
        raise TypeError("the stored reservation book is not a map")
    return list(charger.book.restore(data, at.utc))


def _restored_list(charger: Charger, data: object) -> list[Output]:
    if not isinstance(data, Mapping):
        raise TypeError("the stored local list is not a map")
    charger.local_list.restore(data)
    return []


def _restored_counters(charger: Charger, key: object, counts: object) -> list[Output]:
    if not isinstance(counts, list | tuple) or len(counts) < 2:
        raise TypeError(f"counters {counts!r} are not a pair")
    counters = charger.evses[_cid(key)].counters
    counters.contactor_cycles, counters.openings_under_load = int(counts[0]), int(counts[1])
    return []


def _items(value: object) -> list[tuple[object, object]]:
    """The (key, value) pairs of a stored map; anything else is treated as empty (damaged)."""
    return list(value.items()) if isinstance(value, dict) else []
