"""The reservation book: reserve, cancel, check, use and expire reservations over the EVSEs.

What it is for: `ReservationBook` holds every reservation of one charger and implements API.md §7
(rules V1-V6, G1-G3, U1-U6) with the names and enum values of the EVerest `reservation` and
`evse_manager` types, OCPI's ReserveNow rules (sender namespaces, atomic replacement) and the depot
API's scheduled reservations. UTC time (`now`, an aware `datetime`) is passed in; expiry and
activation happen in `tick(now)`, with `next_deadline()` telling the shell when. Every change
returns its outputs: `ReservationUpdate`s for `R/reservation` and `EmitSessionEvent`s
(ReservationStart / ReservationEnd) for the EVSEs concerned. The room questions (G1, and V3/V4's
judgement) are asked of room.py; the snapshot's plain data is snapshot.py's.

It must never read a clock, persist or publish anything itself (the shell does, from the returned
outputs and `snapshot()`), nor drive an EVSE: it only knows the EVSEs' live state the charger
reports (`set_evses`). It is part of the sans-I/O core (DESIGN.md principle 1, STYLE.md B1).

Readings chosen where API.md leaves room (each is tested):
* G3 "per connector type": an EVSE is held for global reservations exactly when G2 would refuse a
  walk-in there, i.e. when G1 fails with that EVSE taken. This contains the count clause (free ==
  globals) and makes "shows Reserved" and "refuses a walk-in" the same fact.
* G2 at an EVSE that fits none of the global reservations' types always allows a walk-in: no
  reserved car could use it, so taking it cannot break G1 (this matters once G1 already fails, e.g.
  after a stranger plugged into the only fitting EVSE).
* G1 at instants after now (V5) counts hardware and EVSE-specific reservations only; plug-ins,
  faults and disabled EVSEs are judged when the instant comes (as V5 says for scheduled ones).
* U4 capacity is the working hardware: an EVSE that becomes faulted or disabled shrinks it, an EV
  plugging in does not (it will leave, and its driver may hold a reservation). Global reservations
  are removed, newest first, when the working EVSEs (occupied ones included) cannot hold them: on
  a fault, when a scheduled reservation becomes active, and on restore.
* `exists_reservation` and token use consider reservations whose window contains now.

Standard: API.md §7 (V1-V6, G1-G3, U1-U6); the EVerest `reservation` interface and types
(/work/shared/seeds/everest_interfaces_reservation.rst, everest_types_reservation.rst), OCPI
ReserveNow (ocpi_reserve_now.rs.txt) and the depot reservations API (depot_reservations_api.txt).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from firmware.core.reservations.model import (
    GLOBAL_HOLD_ID,
    UNKNOWN,
    BookOutput,
    Entry,
    EvseLive,
    Reservation,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
    ReservationStatus,
    _check_utc,
    _Outputs,
    fits,
)
from firmware.core.reservations.room import (
    free_evses,
    g1_at,
    global_room,
    judge,
)
from firmware.core.reservations.snapshot import _entry_to_plain, _parse_snapshot


class ReservationBook:
    """All reservations of one charger. Every mutating call returns its outputs, in order."""

    def __init__(
        self,
        evses: Mapping[int, Iterable[str]],
        *,
        new_uuid: Callable[[], str],
        enabled: bool = True,
    ) -> None:
        if not evses:
            raise ValueError("the book needs at least one EVSE")
        self._evses = {evse_id: EvseLive(connectors=tuple(c) or (UNKNOWN,)) for evse_id, c in evses.items()}
        self._new_uuid = new_uuid
        self.enabled = enabled
        self._entries: dict[tuple[str, int], Entry] = {}
        self._order = 0
        self._started: dict[int, int] = {}  # EVSE -> reservation id of its open ReservationStart
        self._held: set[int] = set()  # EVSEs held by G3 (their open ReservationStart has id -1)
        self._now: datetime | None = None  # the latest time the book was told

    # --- queries ---------------------------------------------------------------------------------

    @property
    def entries(self) -> list[Entry]:
        """Every reservation, oldest first."""
        return sorted(self._entries.values(), key=lambda e: e.order)

    def get(self, sender: str, reservation_id: int) -> Entry | None:
        return self._entries.get((sender, reservation_id))

    def reserved(self, evse_id: int) -> bool:
        """The EVSE shows Reserved (before the EVSE machine's own status is considered)."""
        return evse_id in self._started

    def specific(self, evse_id: int, now: datetime) -> Entry | None:
        """The EVSE-specific reservation whose window contains now, if any."""
        for entry in self._entries.values():
            if entry.reservation.evse_id == evse_id and entry.in_window(now):
                return entry
        return None

    def next_deadline(self) -> datetime | None:
        deadlines = [e.reservation.expiry_utc for e in self._entries.values()]
        # A due reservation that waits for its busy EVSE is re-judged when the EVSE frees (set_evse),
        # not at a deadline that has passed.
        deadlines += [e.window_start for e in self._entries.values()
                      if not e.active and (self._now is None or e.window_start > self._now)]
        return min(deadlines) if deadlines else None

    def walk_in_allowed(self, evse_id: int, now: datetime) -> bool:
        """G2: a token without a reservation may start at this EVSE only if G1 holds without it."""
        if self.specific(evse_id, now) is not None:
            return False
        globals_now = [e.reservation.connector_type for e in self._globals(now)]
        connectors = self._evses[evse_id].connectors
        if not any(fits(t, connectors) for t in globals_now):
            return True  # no reserved car could use this EVSE: taking it cannot hurt them
        free = [self._evses[e].connectors for e in free_evses(self._evses, self._entries.values(), now) if e != evse_id]
        return global_room(globals_now, free)

    def exists(self, id_token: str, evse_id: int | None, group_id_token: str | None,
               now: datetime) -> ReservationCheckStatus:
        """U5: `exists_reservation`."""
        if evse_id is None:
            for entry in self._globals(now):
                if entry.reservation.matches(id_token, group_id_token):
                    return ReservationCheckStatus.RESERVED_FOR_TOKEN
            return ReservationCheckStatus.NOT_RESERVED
        specific = self.specific(evse_id, now)
        if specific is None:
            return ReservationCheckStatus.NOT_RESERVED
        entry = specific
        if entry.reservation.matches(id_token, group_id_token):
            return ReservationCheckStatus.RESERVED_FOR_TOKEN
        if entry.reservation.parent_id_token is not None and group_id_token is None:
            return ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN
        return ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN

    def match(self, evse_id: int, id_token: str, parent_id_token: str | None, now: datetime) -> Entry | None:
        """U1: the reservation this token would use at this EVSE, without consuming it."""
        specific = self.specific(evse_id, now)
        if specific is not None:
            return specific if specific.reservation.matches(id_token, parent_id_token) else None
        connectors = self._evses[evse_id].connectors
        for entry in self._globals(now):  # oldest first
            if fits(entry.reservation.connector_type, connectors) and entry.reservation.matches(
                id_token, parent_id_token
            ):
                return entry
        return None

    def needs_parent(self, evse_id: int, now: datetime) -> bool:
        """A reservation that could match this EVSE by parent token exists (OCPP 2.0.1 H03.FR.08)."""
        specific = self.specific(evse_id, now)
        if specific is not None:
            return specific.reservation.parent_id_token is not None
        return any(e.reservation.parent_id_token is not None for e in self._globals(now))

    # --- commands --------------------------------------------------------------------------------

    def reserve(self, reservation: Reservation,
                now: datetime) -> tuple[ReservationResult, str | None, list[BookOutput]]:
        """`reserve_now` (V1-V6). Returns the result, the uuid when Accepted, and the outputs."""
        _check_utc("now", now)
        if reservation.evse_id is not None and reservation.evse_id not in self._evses:
            return ReservationResult.REJECTED, None, []  # V3: unknown EVSE
        old = self._entries.get(reservation.key)
        candidate = Entry(reservation=reservation, uuid="", placed_utc=now, order=self._order + 1)
        result = self._evaluate(candidate, old, now)
        if result is not ReservationResult.ACCEPTED:
            return result, None, []  # V2: a refused replacement leaves the old one untouched
        out = _Outputs()
        if old is not None:
            del self._entries[old.key]
            # V6: the EVSE stays reserved only if the new version holds the same EVSE from now on.
            stays = old.reservation.evse_id == reservation.evse_id and candidate.window_start <= now
            if old.active and old.reservation.evse_id is not None and self._started.get(old.reservation.evse_id) == \
                    old.reservation.reservation_id and not stays:
                del self._started[old.reservation.evse_id]
                out.end(old.reservation.evse_id, old.reservation.reservation_id, ReservationEndReason.CANCELLED)
        self._order += 1
        entry = replace(candidate, uuid=self._new_uuid(), order=self._order)
        self._entries[entry.key] = entry
        out.update(entry, ReservationStatus.PLACED)
        self._refresh(now, out)
        return ReservationResult.ACCEPTED, entry.uuid, out.items

    def cancel(self, sender: str, reservation_id: int, now: datetime) -> tuple[bool, list[BookOutput]]:
        """U3: cancel by (sender, reservation_id); False when there is no such reservation."""
        entry = self._entries.get((sender, reservation_id))
        if entry is None:
            return False, []
        out = _Outputs()
        self._end(entry, ReservationStatus.CANCELLED, ReservationEndReason.CANCELLED, out)
        self._refresh(now, out)
        return True, out.items

    def use(self, entry: Entry, evse_id: int, now: datetime) -> list[BookOutput]:
        """U1: consume `entry` (from `match`) to start charging at `evse_id`, which is busy from now
        on: the holds are refreshed once with both changes (no hold ends and starts again)."""
        if self._entries.get(entry.key) is not entry:
            raise ValueError("that reservation is no longer in the book")
        out = _Outputs()
        del self._entries[entry.key]
        self._evses[evse_id].occupied = True  # a session starts there (the charger reports it next)
        out.update(entry, ReservationStatus.USED, evse_id=evse_id)
        # Its own start, or the G3 hold where a global one is used (U1 uses a specific one only at
        # its EVSE): either ends with the used reservation's id (§4).
        if self._started.pop(evse_id, None) is not None:
            self._held.discard(evse_id)
            out.end(evse_id, entry.reservation.reservation_id, ReservationEndReason.USED_TO_START_CHARGING)
        self._refresh(now, out)
        return out.items

    def set_evse(self, evse_id: int, *, occupied: bool, faulted: bool, enabled: bool,
                 now: datetime) -> list[BookOutput]:
        """One EVSE's live state (see `set_evses`)."""
        return self.set_evses({evse_id: (occupied, faulted, enabled)}, now)

    def tick(self, now: datetime) -> list[BookOutput]:
        """U2 expiry (to the second) and V5 activation; call at `next_deadline()`."""
        return self.set_evses({}, now, expire=True)

    def set_evses(self, live: Mapping[int, tuple[bool, bool, bool]], now: datetime, *,
                  expire: bool = False) -> list[BookOutput]:
        """The charger reports the EVSEs' live state `(occupied, faulted, enabled)` after its step,
        with `expire` also U2 expiry: U4 for what became faulted or disabled, then V5 activation and
        the G3 holds are refreshed once for all, so an EVSE gets hold events only when its held state
        really changes over the step (never End then Start again)."""
        out = _Outputs()
        changed, shrank = expire, False
        if expire:
            _check_utc("now", now)
            for entry in self.entries:
                if entry.reservation.expiry_utc <= now:
                    self._end(entry, ReservationStatus.EXPIRED, ReservationEndReason.EXPIRED, out)
        for evse_id, (occupied, faulted, enabled) in live.items():
            state = self._evses[evse_id]
            if (state.occupied, state.faulted, state.enabled) == (occupied, faulted, enabled):
                continue
            changed = True
            if (faulted and not state.faulted) or (not enabled and state.enabled):
                shrank = True
                specific = self.specific(evse_id, now)
                if specific is not None and specific.active:
                    self._end(specific, ReservationStatus.REMOVED, ReservationEndReason.CANCELLED, out)
            state.occupied, state.faulted, state.enabled = occupied, faulted, enabled
        if shrank:
            self._shrink(now, out)
        if changed:
            self._refresh(now, out)
        return out.items

    # --- persistence (U6) ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """Plain data for the store: every reservation and the open EVSE events."""
        return {
            "order": self._order,
            "started": [[evse_id, rid] for evse_id, rid in sorted(self._started.items())],
            "held": sorted(self._held),
            "entries": [_entry_to_plain(e) for e in self.entries],
        }

    def restore(self, data: Mapping[str, object], now: datetime) -> list[BookOutput]:
        """Load a snapshot taken before a restart; ends what expired or no longer fits (U6)."""
        _check_utc("now", now)
        entries, order, started, held = _parse_snapshot(data, self._evses)
        self._entries = {e.key: e for e in entries}
        self._order, self._started, self._held = order, started, held
        out = _Outputs()
        for entry in self.entries:
            r = entry.reservation
            if r.expiry_utc <= now:
                self._end(entry, ReservationStatus.EXPIRED, ReservationEndReason.EXPIRED, out)
            elif (r.evse_id is not None and r.evse_id not in self._evses) or not any(
                fits(r.connector_type, live.connectors)
                for evse_id, live in self._evses.items()
                if r.evse_id in (None, evse_id)
            ):
                self._end(entry, ReservationStatus.REMOVED, ReservationEndReason.CANCELLED, out)
        self._shrink(now, out)
        self._refresh(now, out)
        return out.items

    # --- internals -------------------------------------------------------------------------------

    def _globals(self, now: datetime) -> list[Entry]:
        return [e for e in self.entries if e.reservation.evse_id is None and e.in_window(now)]

    def _evaluate(self, candidate: Entry, old: Entry | None, now: datetime) -> ReservationResult:
        if not self.enabled or candidate.reservation.expiry_utc <= now:
            return ReservationResult.REJECTED  # V1
        return judge(self._evses, candidate, [e for e in self._entries.values() if e is not old], now)  # V3, V4

    def _end(self, entry: Entry, status: ReservationStatus, reason: ReservationEndReason, out: _Outputs) -> None:
        del self._entries[entry.key]
        out.update(entry, status)
        evse_id = entry.reservation.evse_id
        # Only an active one has a start; an open start with its id may be another sender's.
        if entry.active and evse_id is not None and self._started.get(evse_id) == entry.reservation.reservation_id:
            del self._started[evse_id]
            out.end(evse_id, entry.reservation.reservation_id, reason)

    def _shrink(self, now: datetime, out: _Outputs) -> None:
        """U4: while the hardware that works cannot hold the reservations, remove the newest global."""
        while not g1_at(self._evses, list(self._entries.values()), now, now, capacity=True):
            newest = self._globals(now)
            if not newest:
                return
            self._end(newest[-1], ReservationStatus.REMOVED, ReservationEndReason.CANCELLED, out)

    def _refresh(self, now: datetime, out: _Outputs) -> None:
        """V5 activation of specific reservations and G3 holds; emits the EVSE events."""
        self._now = now if self._now is None else max(self._now, now)
        self._activate(now, out)
        self._shrink(now, out)  # U4: what just became active may leave a global without room
        self._restart_specific(out)
        self._hold_for_globals(now, out)

    def _activate(self, now: datetime, out: _Outputs) -> None:
        """V5: reservations whose window has come become active; a specific one only on a free EVSE
        (it waits while its EVSE is busy) and ends as in U4 on a faulted or disabled one."""
        for entry in self.entries:
            r = entry.reservation
            if entry.active or not entry.in_window(now):
                continue
            if r.evse_id is None:
                self._entries[entry.key] = replace(entry, active=True)
                continue
            live = self._evses[r.evse_id]
            if live.faulted or not live.enabled:
                self._end(entry, ReservationStatus.REMOVED, ReservationEndReason.CANCELLED, out)
            elif not live.occupied:
                self._entries[entry.key] = replace(entry, active=True)

    def _restart_specific(self, out: _Outputs) -> None:
        """The ReservationStart / ReservationEnd events of EVSE-specific reservations."""
        # A ReservationStart whose reservation is gone or no longer active (replaced by a scheduled
        # version, or a stale one from a snapshot) ends: every start gets exactly one end (§4).
        for evse_id, reservation_id in sorted(self._started.items()):
            if evse_id in self._held:
                continue
            if not any(e.active and e.reservation.evse_id == evse_id and e.reservation.reservation_id == reservation_id
                       for e in self._entries.values()):
                del self._started[evse_id]
                out.end(evse_id, reservation_id, ReservationEndReason.CANCELLED)
        # Specific reservations: ReservationStart once active on a free EVSE.
        for entry in self.entries:
            target = entry.reservation.evse_id
            if target is None or not entry.active or target in self._started and target not in self._held:
                continue
            evse_id = target
            if evse_id in self._held:
                self._held.discard(evse_id)
                del self._started[evse_id]
                out.end(evse_id, GLOBAL_HOLD_ID, ReservationEndReason.GLOBAL_RESERVATION_REQUIREMENT_DROPPED)
            self._started[evse_id] = entry.reservation.reservation_id
            out.start(evse_id, entry)

    def _hold_for_globals(self, now: datetime, out: _Outputs) -> None:
        """G3: EVSEs where a walk-in would break G1 are held for the global reservations."""
        free = free_evses(self._evses, self._entries.values(), now)
        held = {evse_id for evse_id in free if not self.walk_in_allowed(evse_id, now)}
        for evse_id in sorted(self._held - held):
            self._held.discard(evse_id)
            del self._started[evse_id]
            out.end(evse_id, GLOBAL_HOLD_ID, ReservationEndReason.GLOBAL_RESERVATION_REQUIREMENT_DROPPED)
        for evse_id in sorted(held - self._held):
            if evse_id in self._started:
                continue
            self._held.add(evse_id)
            self._started[evse_id] = GLOBAL_HOLD_ID
            out.start(evse_id, None)

