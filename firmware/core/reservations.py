"""The reservation book: reserve, cancel, check, use and expire reservations over the EVSEs.

It implements API.md §7 (rules V1-V6, G1-G3, U1-U6) with the names and enum values of the EVerest
`reservation` and `evse_manager` types, OCPI's ReserveNow rules (sender namespaces, atomic
replacement) and the depot API's scheduled reservations. It is pure: UTC time (`now`, an aware
`datetime`) is passed in; expiry and activation happen in `tick(now)`, with `next_deadline()`
telling the shell when. Every change returns its outputs: `ReservationUpdate`s for `R/reservation`
and `EmitSessionEvent`s (ReservationStart / ReservationEnd) for the EVSEs concerned.

G1, the worst-case room check for global reservations, asks: for every order in which the cars of
the global reservations may arrive, and every free fitting EVSE each may pick, does every later car
still find a free fitting EVSE? EVerest enumerates permutations (factorial). Here it is a bipartite
matching question per connector type (`global_room`), polynomial in the number of cars and EVSEs.
Tests prove it agrees with the brute-force enumeration on thousands of random layouts.

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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from firmware.core.events import EmitSessionEvent, SessionEvent

UNKNOWN: Final = "Unknown"
#: The id EVerest uses on an EVSE held for global reservations (G3).
GLOBAL_HOLD_ID: Final = -1
MAX_TOKEN_LEN: Final = 255


class ReservationResult(StrEnum):
    ACCEPTED = "Accepted"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"
    REJECTED = "Rejected"
    UNAVAILABLE = "Unavailable"


class ReservationCheckStatus(StrEnum):
    NOT_RESERVED = "NotReserved"
    RESERVED_FOR_TOKEN = "ReservedForToken"
    RESERVED_FOR_OTHER_TOKEN = "ReservedForOtherToken"
    RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN = "ReservedForOtherTokenAndHasParentToken"


class ReservationStatus(StrEnum):
    """ReservationUpdateStatus.reservation_status."""

    PLACED = "Placed"
    EXPIRED = "Expired"
    REMOVED = "Removed"
    CANCELLED = "Cancelled"
    USED = "Used"


class ReservationEndReason(StrEnum):
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"
    USED_TO_START_CHARGING = "UsedToStartCharging"
    GLOBAL_RESERVATION_REQUIREMENT_DROPPED = "GlobalReservationRequirementDropped"


def _check_utc(name: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be an aware UTC datetime, got {value!r}")


def check_token(name: str, value: object) -> str:
    """A token (id, parent, group): a string of 1..MAX_TOKEN_LEN characters, else ValueError."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_LEN:
        raise ValueError(f"{name} must be a string of 1..{MAX_TOKEN_LEN} characters")
    return value


def fits(requested: str, connectors: Iterable[str]) -> bool:
    """A requested connector type fits an EVSE (API.md §3.1: `Unknown` is a wildcard on both sides)."""
    return requested == UNKNOWN or any(c == requested or c == UNKNOWN for c in connectors)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """The args of `reserve_now` (API.md §3.1), validated."""

    reservation_id: int
    id_token: str
    expiry_utc: datetime
    evse_id: int | None = None
    parent_id_token: str | None = None
    connector_type: str = UNKNOWN
    start_utc: datetime | None = None
    sender: str = ""
    token_type: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reservation_id, bool) or not isinstance(self.reservation_id, int):
            raise ValueError(f"reservation_id must be an integer, got {self.reservation_id!r}")
        check_token("id_token", self.id_token)
        _check_utc("expiry_time", self.expiry_utc)
        if self.start_utc is not None:
            _check_utc("start_time", self.start_utc)
            if self.start_utc >= self.expiry_utc:
                raise ValueError("start_time must be before expiry_time")
        if self.evse_id is not None and (
            isinstance(self.evse_id, bool) or not isinstance(self.evse_id, int) or self.evse_id < 1
        ):
            raise ValueError(f"evse_id must be a positive integer, got {self.evse_id!r}")
        if self.parent_id_token is not None:
            check_token("parent_id_token", self.parent_id_token)
        if not isinstance(self.connector_type, str) or not self.connector_type:
            raise ValueError("connector_type must be a non-empty string")
        if not isinstance(self.sender, str):
            raise ValueError("sender must be a string")

    @property
    def key(self) -> tuple[str, int]:
        return (self.sender, self.reservation_id)

    def matches(self, id_token: str, parent_id_token: str | None) -> bool:
        """U1: the token equals, or both parent tokens are present and equal (case-insensitive)."""
        if id_token.casefold() == self.id_token.casefold():
            return True
        return (
            parent_id_token is not None
            and self.parent_id_token is not None
            and parent_id_token.casefold() == self.parent_id_token.casefold()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A reservation in the book, with what the book adds: uuid, placement time and order."""

    reservation: Reservation
    uuid: str
    placed_utc: datetime
    order: int  # placement order: oldest first (U1), newest removed first (U4)
    active: bool = False  # Scheduled until activated (V5)

    @property
    def key(self) -> tuple[str, int]:
        return self.reservation.key

    @property
    def window_start(self) -> datetime:
        r = self.reservation
        return self.placed_utc if r.start_utc is None else max(r.start_utc, self.placed_utc)

    def in_window(self, instant: datetime) -> bool:
        return self.window_start <= instant < self.reservation.expiry_utc


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationUpdate:
    """ReservationUpdateStatus for `R/reservation` (the shell adds timestamp and seq)."""

    reservation_id: int
    sender: str
    uuid: str
    status: ReservationStatus
    evse_id: int | None = None
    reason: str | None = None

    def payload(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "reservation_id": self.reservation_id,
            "sender": self.sender,
            "uuid": self.uuid,
            "reservation_status": self.status.value,
        }
        if self.evse_id is not None:
            doc["evse_id"] = self.evse_id
        if self.reason is not None:
            doc["reason"] = self.reason
        return doc


BookOutput = ReservationUpdate | EmitSessionEvent


@dataclass(slots=True)
class EvseLive:
    """What the book needs to know of an EVSE, kept current by the charger."""

    connectors: tuple[str, ...]
    occupied: bool = False  # an EV plugged in or a session running
    faulted: bool = False
    enabled: bool = True


# --- G1 ------------------------------------------------------------------------------------------

def _max_matching(cars: list[str], evses: list[tuple[str, ...]]) -> int:
    """Size of a maximum matching of cars to EVSEs they fit (Kuhn's augmenting paths)."""
    owner: list[int | None] = [None] * len(evses)

    def augment(car: int, seen: list[bool]) -> bool:
        for j, connectors in enumerate(evses):
            if not seen[j] and fits(cars[car], connectors):
                seen[j] = True
                holder = owner[j]
                if holder is None or augment(holder, seen):
                    owner[j] = car
                    return True
        return False

    return sum(augment(car, [False] * len(evses)) for car in range(len(cars)))


def global_room(types: Iterable[str], free_evses: Iterable[Iterable[str]]) -> bool:
    """G1's worst-case clause: whatever order the cars of the global reservations (`types`) arrive
    in, and whichever free fitting EVSE each picks, every car finds a free fitting EVSE.

    A car c is stranded exactly when the cars before it can occupy *every* free EVSE that fits c,
    each taking a different EVSE that fits itself, i.e. when the other cars can be matched onto all
    of c's fitting EVSEs (the adversary sends those cars first, each to its matched EVSE). So G1
    holds iff, for every car c, a maximum matching of the other cars into c's fitting EVSEs is
    smaller than their number. Cars of one type share the question, so it is asked once per type:
    polynomial time instead of EVerest's n! orders (tests compare it with the brute force).
    """
    cars = list(types)
    evses = [tuple(c) for c in free_evses]
    if len(cars) > len(evses):
        return False
    for requested in set(cars):
        fitting = [e for e in evses if fits(requested, e)]
        others = list(cars)
        others.remove(requested)
        if len(others) >= len(fitting) and _max_matching(others, fitting) == len(fitting):
            return False
    return True


# --- the book ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Outputs:
    items: list[BookOutput] = field(default_factory=list)

    def update(self, entry: Entry, status: ReservationStatus, evse_id: int | None = None) -> None:
        r = entry.reservation
        self.items.append(
            ReservationUpdate(
                reservation_id=r.reservation_id,
                sender=r.sender,
                uuid=entry.uuid,
                status=status,
                evse_id=r.evse_id if evse_id is None else evse_id,
            )
        )

    def start(self, evse_id: int, entry: Entry | None) -> None:
        if entry is None:
            data: dict[str, object] = {"reservation_id": GLOBAL_HOLD_ID, "id_tag": "", "global": True}
        else:
            r = entry.reservation
            data = {"reservation_id": r.reservation_id, "id_tag": r.id_token}
            if r.parent_id_token is not None:
                data["parent_id"] = r.parent_id_token
        self.items.append(
            EmitSessionEvent(cid=evse_id, uuid="", event=SessionEvent.RESERVATION_START,
                             extra=(("reservation_start", data),))
        )

    def end(self, evse_id: int, reservation_id: int, reason: ReservationEndReason) -> None:
        data = {"reservation_id": reservation_id, "reason": reason.value}
        self.items.append(
            EmitSessionEvent(cid=evse_id, uuid="", event=SessionEvent.RESERVATION_END,
                             extra=(("reservation_end", data),))
        )


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
        free = [self._evses[e].connectors for e in self._free(now) if e != evse_id]
        return global_room(globals_now, free)

    def exists(self, id_token: str, evse_id: int | None, group_id_token: str | None,
               now: datetime) -> ReservationCheckStatus:
        """U5: `exists_reservation`."""
        if evse_id is None:
            for entry in self._globals(now):
                if entry.reservation.matches(id_token, group_id_token):
                    return ReservationCheckStatus.RESERVED_FOR_TOKEN
            return ReservationCheckStatus.NOT_RESERVED
        entry = self.specific(evse_id, now)
        if entry is None:
            return ReservationCheckStatus.NOT_RESERVED
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

    def reserve(self, reservation: Reservation, now: datetime) -> tuple[ReservationResult, str | None, list[BookOutput]]:
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
        try:
            entries = [_entry_from_plain(item) for item in _as_list(data.get("entries", []))]
            order = max([int(str(data.get("order", 0)))] + [e.order for e in entries])
            started = {int(pair[0]): int(pair[1]) for pair in _as_list(data.get("started", []))
                       if isinstance(pair, list) and int(pair[0]) in self._evses}
            held = {int(x) for x in _as_list(data.get("held", [])) if int(x) in self._evses}
        except (KeyError, TypeError, IndexError, OverflowError, AttributeError) as exc:
            raise ValueError(f"the reservation snapshot is damaged: {type(exc).__name__}: {exc}") from exc
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

    def _free(self, now: datetime, instant: datetime | None = None, skip: Entry | None = None) -> list[int]:
        """EVSEs free for global reservations at `instant` (default now). V5: live state only at now."""
        instant = now if instant is None else instant
        held = {
            e.reservation.evse_id
            for e in self._entries.values()
            if e is not skip and e.reservation.evse_id is not None and e.in_window(instant)
        }
        return [
            evse_id
            for evse_id, live in self._evses.items()
            if evse_id not in held
            and (instant > now or (not live.occupied and not live.faulted and live.enabled))
        ]

    def _g1(self, entries: list[Entry], instant: datetime, now: datetime, *, capacity: bool = False) -> bool:
        """G1 at one instant over `entries` (those whose windows contain it are counted). With
        `capacity`, only faulted and disabled EVSEs are missing (U4: a plug-in removes nothing)."""
        counted = [e for e in entries if e.in_window(instant)]
        if len(counted) > len(self._evses):
            return False
        specific = {e.reservation.evse_id for e in counted if e.reservation.evse_id is not None}
        free = [
            live.connectors
            for evse_id, live in self._evses.items()
            if evse_id not in specific
            and (instant > now or ((capacity or not live.occupied) and not live.faulted and live.enabled))
        ]
        return global_room((e.reservation.connector_type for e in counted if e.reservation.evse_id is None), free)

    def _g1_over_window(self, candidate: Entry, others: list[Entry], now: datetime) -> bool:
        """V5: G1 at the new window's start and at every other window's start inside it."""
        entries = [*others, candidate]
        instants = {candidate.window_start}
        instants.update(
            e.window_start for e in others if candidate.window_start < e.window_start < candidate.reservation.expiry_utc
        )
        return all(self._g1(entries, instant, now) for instant in sorted(instants))

    def _evaluate(self, candidate: Entry, old: Entry | None, now: datetime) -> ReservationResult:
        r = candidate.reservation
        if not self.enabled or r.expiry_utc <= now:
            return ReservationResult.REJECTED  # V1
        others = [e for e in self._entries.values() if e is not old]
        scheduled = candidate.window_start > now
        if r.evse_id is not None:  # V3
            live = self._evses[r.evse_id]
            for e in others:
                if e.reservation.evse_id == r.evse_id and _overlap(e, candidate):
                    return ReservationResult.OCCUPIED
            if not fits(r.connector_type, live.connectors):
                return ReservationResult.REJECTED
            if not scheduled:
                if live.occupied:
                    return ReservationResult.OCCUPIED
                if live.faulted:
                    return ReservationResult.FAULTED
                if not live.enabled:
                    return ReservationResult.UNAVAILABLE
            if not self._g1_over_window(candidate, others, now):
                return ReservationResult.OCCUPIED
            return ReservationResult.ACCEPTED
        fitting = [live for live in self._evses.values() if fits(r.connector_type, live.connectors)]  # V4
        if not fitting:
            return ReservationResult.REJECTED
        if self._g1_over_window(candidate, others, now):
            return ReservationResult.ACCEPTED
        if others or any(live.occupied for live in self._evses.values()):
            return ReservationResult.OCCUPIED
        if any(live.faulted for live in fitting):
            return ReservationResult.FAULTED
        if any(not live.enabled for live in fitting):
            return ReservationResult.UNAVAILABLE
        return ReservationResult.OCCUPIED

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
        while not self._g1(list(self._entries.values()), now, now, capacity=True):
            newest = self._globals(now)
            if not newest:
                return
            self._end(newest[-1], ReservationStatus.REMOVED, ReservationEndReason.CANCELLED, out)

    def _refresh(self, now: datetime, out: _Outputs) -> None:
        """V5 activation of specific reservations and G3 holds; emits the EVSE events."""
        self._now = now if self._now is None else max(self._now, now)
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
        self._shrink(now, out)  # U4: what just became active may leave a global without room
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
            evse_id = entry.reservation.evse_id
            if evse_id is None or not entry.active or evse_id in self._started and evse_id not in self._held:
                continue
            if evse_id in self._held:
                self._held.discard(evse_id)
                del self._started[evse_id]
                out.end(evse_id, GLOBAL_HOLD_ID, ReservationEndReason.GLOBAL_RESERVATION_REQUIREMENT_DROPPED)
            self._started[evse_id] = entry.reservation.reservation_id
            out.start(evse_id, entry)
        # G3: EVSEs where a walk-in would break G1 are held for the global reservations.
        free = self._free(now)
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


def _overlap(a: Entry, b: Entry) -> bool:
    return a.window_start < b.reservation.expiry_utc and b.window_start < a.reservation.expiry_utc


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list in the reservation snapshot, got {type(value).__name__}")
    return value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO time, got {value!r}")
    return datetime.fromisoformat(value)


def _entry_to_plain(entry: Entry) -> dict[str, object]:
    r = entry.reservation
    return {
        "reservation_id": r.reservation_id,
        "id_token": r.id_token,
        "expiry_time": _iso(r.expiry_utc),
        "evse_id": r.evse_id,
        "parent_id_token": r.parent_id_token,
        "connector_type": r.connector_type,
        "start_time": _iso(r.start_utc),
        "sender": r.sender,
        "token_type": r.token_type,
        "uuid": entry.uuid,
        "placed_at": _iso(entry.placed_utc),
        "order": entry.order,
        "active": entry.active,
    }


def _entry_from_plain(item: object) -> Entry:
    if not isinstance(item, dict):
        raise ValueError("a reservation in the snapshot is not a map")
    expiry = _from_iso(item["expiry_time"])
    placed = _from_iso(item["placed_at"])
    if expiry is None or placed is None:
        raise ValueError("a reservation in the snapshot has no expiry_time or placed_at")
    reservation = Reservation(
        reservation_id=item["reservation_id"],
        id_token=item["id_token"],
        expiry_utc=expiry,
        evse_id=item.get("evse_id"),
        parent_id_token=item.get("parent_id_token"),
        connector_type=item.get("connector_type", UNKNOWN),
        start_utc=_from_iso(item.get("start_time")),
        sender=item.get("sender", ""),
        token_type=item.get("token_type"),
    )
    if not isinstance(item["uuid"], str) or not item["uuid"]:
        raise ValueError("a reservation in the snapshot has no uuid")
    return Entry(reservation=reservation, uuid=item["uuid"], placed_utc=placed, order=int(item["order"]),
                 active=bool(item.get("active", False)))
