"""Timestamps inside a running in-process controller: which board read made the core open a relay, and when.

What it is for: the "after the debounce" reaction figure of tools/bench/reaction.py. The probe wraps,
on one `Controller` and its `SimBoard` (instance attributes only, behaviour unchanged):

* the board's reads, `read_cp` (pilot) and `tripped` (RCD): the perf_counter time each returned;
* the producers' inbox (`Producers.inbox`, a forwarding view), its safety lane `put_safety`: each
  `PilotSampled` / `InputsSensed` is tagged with the time of the read it came from (the producer puts
  it right after the read, with no await in between);
* the core task's `dispatch`: while it handles an item, that item's tag is the current cause;
* the relay output, `set_closed(cid, False)` while the relay is commanded closed: the time of the open
  command, with the cause's read time. For a CP change that read is the sample that completed the
  debounce; for an RCD trip, the read that saw the trip.

An open that no tagged item caused (the producers changed, say, or the stop's fail-safe) is timed from
the EVSE's last read instead, and marked `tagged=False`.

What it must never do: change what the controller does or when (each wrapper only reads a clock).
Standard: none beyond the controller's own (firmware/app.py, firmware/core_loop.py, hal/sim.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from firmware.app import Controller
from firmware.core.events import PilotSampled
from firmware.core.supervision_events import InputsSensed
from hal.protocols import PilotSample
from hal.sim import SimBoard


@dataclass(frozen=True, slots=True)
class Opened:
    """One relay-open command: when, which EVSE, and the read (perf_counter s) that caused it."""

    at: float
    cid: int
    read_at: float
    tagged: bool  # False: no tagged item caused it; `read_at` is then the EVSE's last read before it


class Probe:
    """The wrappers (see the module docstring); `opens` is the log of relay-open commands."""

    def __init__(self, controller: Controller, sim: SimBoard) -> None:
        self.sim = sim
        self.read_at: dict[tuple[str, int], float] = {}
        self._tags: dict[int, float] = {}
        self._cause: float | None = None
        self.opens: list[Opened] = []
        clock = time.perf_counter
        read_cp, tripped, set_closed = sim.read_cp, sim.tripped, sim.set_closed
        inbox, dispatch = controller.producers.inbox, controller.core.dispatch

        async def timed_read_cp(cid: int) -> PilotSample:
            sample = await read_cp(cid)
            self.read_at["cp", cid] = clock()
            return sample

        async def timed_tripped(cid: int) -> bool:
            result = await tripped(cid)
            self.read_at["rcd", cid] = clock()
            return result

        probe = self

        class TaggingInbox:
            """The producers' view of the inbox: the same inbox, its safety items tagged on the way in."""

            def put_safety(self, item: Any) -> None:  # noqa: ANN401 - the inbox's item type
                kind = "cp" if isinstance(item, PilotSampled) else "rcd" if isinstance(item, InputsSensed) else None
                if kind is not None and (read := probe.read_at.get((kind, item.cid))) is not None:
                    probe._tags[id(item)] = read
                inbox.put_safety(item)

            def __getattr__(self, name: str) -> Any:  # noqa: ANN401 - whatever the inbox has
                return getattr(inbox, name)

        async def traced_dispatch(item: Any, at: Any) -> None:  # noqa: ANN401 - the core loop's types
            self._cause = self._tags.pop(id(item), None)
            try:
                await dispatch(item, at)
            finally:
                self._cause = None

        async def timed_set_closed(cid: int, closed: bool) -> None:
            if not closed and sim.relay_commanded(cid):
                now, cause = clock(), self._cause
                if cause is None:
                    last = [t for (_, c), t in self.read_at.items() if c == cid]
                    self.opens.append(Opened(now, cid, max(last, default=now), tagged=False))
                else:
                    self.opens.append(Opened(now, cid, cause, tagged=True))
            await set_closed(cid, closed)

        sim.read_cp = timed_read_cp  # type: ignore[method-assign]
        sim.tripped = timed_tripped  # type: ignore[method-assign]
        sim.set_closed = timed_set_closed  # type: ignore[method-assign]
        controller.producers.inbox = TaggingInbox()  # type: ignore[assignment]
        controller.core.dispatch = traced_dispatch  # type: ignore[method-assign]

    def opened_since(self, index: int, cid: int) -> Opened | None:
        """The first open of EVSE `cid` logged at or after position `index` of `opens`."""
        return next((o for o in self.opens[index:] if o.cid == cid), None)
