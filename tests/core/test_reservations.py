"""The reservation book against API.md §7 (V1-V6, G1-G3, U1-U6), §3.1 and §4.

Every row or test names the rule it checks. Time is injected (`T0`, an aware UTC datetime), uuids
come from a counter ("uuid-1", "uuid-2", ...). Outputs are compared in order, through `norm`:
("update", status, sender, reservation_id, uuid, evse_id), ("start", evse, reservation_start),
("end", evse, reservation_id, reason). The readings the book chose where API.md leaves room are in
the module docstring of firmware/core/reservations.py; tests that depend on one say so.

Tests marked xfail(strict=True) show where the book does not do what API.md (or the shell
contract of `next_deadline`) says; the reason names the rule and what happens instead.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.core.reservations import (
    Reservation,
    ReservationBook,
    ReservationCheckStatus,
    ReservationResult,
    ReservationStatus,
    ReservationUpdate,
    fits,
    global_room,
)
from firmware.wire import payload
from tests.core.reservation_helpers import (
    CCS2,
    CT2,
    EXAMPLE,
    MIN,
    ONE,
    T0,
    T2,
    THREE,
    TWO,
    UNKNOWN,
    H,
    S,
    brute_room,
    end,
    hold,
    new_book,
    norm,
    res,
    start,
    upd,
    uuids,
)

ACCEPTED = ReservationResult.ACCEPTED
OCCUPIED = ReservationResult.OCCUPIED
REJECTED = ReservationResult.REJECTED
FAULTED = ReservationResult.FAULTED
UNAVAILABLE = ReservationResult.UNAVAILABLE

CANCELLED = "Cancelled"
EXPIRED = "Expired"
USED = "UsedToStartCharging"
DROPPED = "GlobalReservationRequirementDropped"

LIVE: dict[str, dict[str, bool]] = {
    "free": {"occupied": False, "faulted": False, "enabled": True},
    "occupied": {"occupied": True, "faulted": False, "enabled": True},
    "faulted": {"occupied": False, "faulted": True, "enabled": True},
    "disabled": {"occupied": False, "faulted": False, "enabled": False},
    "occupied+faulted": {"occupied": True, "faulted": True, "enabled": True},
    "faulted+disabled": {"occupied": False, "faulted": True, "enabled": False},
}

Step = Reservation | tuple[str, int]


def prepare(layout: dict[int, list[str]], setup: list[Step], now: datetime = T0) -> ReservationBook:
    """A book brought into a state by real calls: reservations (each must be Accepted) and EVSE states."""
    book = new_book(layout)
    for step in setup:
        if isinstance(step, Reservation):
            result, _, _ = book.reserve(step, now)
            assert result is ACCEPTED, f"setup reservation {step} was {result}"
        else:
            kind, evse = step
            book.set_evse(evse, **LIVE[kind], now=now)
    return book


def set_live(book: ReservationBook, evse: int, kind: str, now: datetime = T0) -> list[object]:
    return norm(book.set_evse(evse, **LIVE[kind], now=now))


def keys(book: ReservationBook) -> list[tuple[str, int]]:
    return [e.key for e in book.entries]


# === V1 =========================================================================================


@pytest.mark.parametrize(("expiry", "expected"), [
    pytest.param(T0 - S, REJECTED, id="V1: expiry before now -> Rejected"),
    pytest.param(T0, REJECTED, id="V1: expiry equal to now -> Rejected (empty window)"),
    pytest.param(T0 + S, ACCEPTED, id="V1: expiry one second after now -> Accepted"),
])
@pytest.mark.parametrize("evse", [None, 1], ids=["global", "specific"])
def test_v1_expiry(expiry: datetime, expected: ReservationResult, evse: int | None) -> None:
    book = new_book(TWO)
    result, uuid, out = book.reserve(res(1, evse=evse, expiry=expiry), T0)
    assert result is expected
    if expected is ACCEPTED:
        assert uuid == "uuid-1"
    else:
        assert (uuid, out, book.entries) == (None, [], [])


@pytest.mark.parametrize("evse", [None, 1], ids=["global", "specific"])
def test_v1_reservations_switched_off_rejects(evse: int | None) -> None:
    """V1: reservations switched off in config -> Rejected, nothing stored."""
    for book in (new_book(TWO, enabled=False), new_book(TWO)):
        book.enabled = False
        assert book.reserve(res(1, evse=evse), T0) == (REJECTED, None, [])
        assert book.entries == []


NAIVE = datetime(2026, 11, 21, 12, 0)
CET = timezone(timedelta(hours=1))


@pytest.mark.parametrize("fields", [
    pytest.param({"expiry_utc": NAIVE}, id="V1: naive expiry_time"),
    pytest.param({"start_utc": NAIVE}, id="V1: naive start_time"),
    pytest.param({"expiry_utc": datetime(2026, 11, 21, 12, 0, tzinfo=CET)}, id="V1: expiry not in UTC"),
    pytest.param({"expiry_utc": "2026-11-21T12:00:00Z"}, id="V1: expiry as a string"),
    pytest.param({"start_utc": T0 + 4 * H}, id="V1: start_time == expiry_time"),
    pytest.param({"start_utc": T0 + 5 * H}, id="V1: start_time after expiry_time"),
    pytest.param({"id_token": ""}, id="V1: empty id_token"),
    pytest.param({"id_token": "x" * 256}, id="V1: id_token longer than 255"),
    pytest.param({"id_token": 1234}, id="V1: id_token not a string"),
    pytest.param({"reservation_id": True}, id="V1: bool reservation_id"),
    pytest.param({"reservation_id": "7"}, id="V1: reservation_id as a string"),
    pytest.param({"reservation_id": 7.0}, id="V1: float reservation_id"),
    pytest.param({"evse_id": 0}, id="V1: evse_id 0"),
    pytest.param({"evse_id": -1}, id="V1: negative evse_id"),
    pytest.param({"evse_id": True}, id="V1: bool evse_id"),
    pytest.param({"parent_id_token": ""}, id="V1: empty parent_id_token"),
    pytest.param({"connector_type": ""}, id="V1: empty connector_type"),
    pytest.param({"sender": None}, id="V1: sender not a string"),
])
def test_v1_malformed_fields_raise_value_error(fields: dict[str, object]) -> None:
    """V1: malformed fields are invalid_args (a ValueError), never a ReservationResult."""
    args: dict[str, object] = {"reservation_id": 1, "id_token": "TOKEN-A", "expiry_utc": T0 + 4 * H}
    args.update(fields)
    field = next(iter(fields)).removesuffix("_utc")  # the message names the API field (expiry_time)
    with pytest.raises(ValueError, match=rf"^{field}\w* must be"):
        Reservation(**args)  # type: ignore[arg-type]


def test_v1_well_formed_edge_values_are_accepted_by_the_constructor() -> None:
    """V1 (control): the limits themselves are valid."""
    r = Reservation(reservation_id=0, id_token="x" * 255, expiry_utc=T0 + S, start_utc=T0, evse_id=1,
                    parent_id_token="P", sender="emsp")
    assert r.key == ("emsp", 0)


def test_v1_naive_now_is_refused() -> None:
    """Time is an aware UTC datetime everywhere (injected `now`)."""
    book = new_book(ONE)
    with pytest.raises(ValueError, match="aware UTC datetime"):
        book.reserve(res(1), datetime(2026, 11, 21, 8, 0))
    with pytest.raises(ValueError, match="aware UTC datetime"):
        book.tick(datetime(2026, 11, 21, 8, 0))


# === V2 =========================================================================================


@pytest.mark.parametrize(("layout", "first", "again", "other"), [
    pytest.param(ONE, res(1, evse=1), res(1, evse=1, expiry=T0 + 2 * H), res(2, evse=1),
                 id="V2: specific replacement is evaluated without the old one (else V3 overlap)"),
    pytest.param(ONE, res(1), res(1, expiry=T0 + 2 * H), res(2),
                 id="V2: global replacement is evaluated without the old one (else G1 count)"),
    pytest.param(EXAMPLE, res(1, conn=T2), res(1, conn=T2, token="TOKEN-B"), res(2, conn=T2),
                 id="V2: typed global replacement on the G1 example"),
])
def test_v2_replacement_is_evaluated_without_the_old_one(layout: dict[int, list[str]], first: Reservation,
                                                         again: Reservation, other: Reservation) -> None:
    book = prepare(layout, [first])
    assert book.reserve(other, T0)[0] is OCCUPIED  # a new id is judged with the first one counted
    result, uuid, out = book.reserve(again, T0)
    assert result is ACCEPTED
    assert [e.uuid for e in book.entries] == [uuid]


@pytest.mark.parametrize(("setup", "replacement", "expected"), [
    pytest.param([], res(1, evse=2), FAULTED, id="V2: replacement onto a faulted EVSE -> Faulted, old kept"),
    pytest.param([], res(1, evse=1, expiry=T0 - S), REJECTED, id="V2: replacement already expired, old kept"),
    pytest.param([], res(1, evse=9), REJECTED, id="V2: replacement onto an unknown EVSE, old kept"),
    pytest.param([], res(1, evse=1, conn=T2), REJECTED, id="V2: replacement with a type EVSE 1 lacks, old kept"),
    pytest.param([res(2, evse=3)], res(1, evse=3), OCCUPIED, id="V2: replacement onto a reserved EVSE, old kept"),
])
def test_v2_refused_replacement_leaves_the_old_one_untouched(setup: list[Reservation], replacement: Reservation,
                                                             expected: ReservationResult) -> None:
    book = prepare({1: [CCS2], 2: [UNKNOWN], 3: [UNKNOWN]}, [res(1, evse=1), *setup, ("faulted", 2)])
    before = book.snapshot()
    old = book.get("", 1)
    assert old is not None
    assert book.reserved(1)
    assert book.reserve(replacement, T0) == (expected, None, [])
    assert book.get("", 1) is old  # same uuid, same EVSE
    assert book.snapshot() == before
    assert book.reserved(1)


def test_v2_accepted_replacement_replaces_atomically() -> None:
    """V2 + §4: new uuid, one Placed for the new version only, none for the replaced one."""
    book = prepare(TWO, [res(1, evse=1)])
    assert book.get("", 1).uuid == "uuid-1"  # type: ignore[union-attr]
    result, uuid, out = book.reserve(res(1, evse=1, token="TOKEN-B", expiry=T0 + 2 * H), T0 + MIN)
    assert (result, uuid) == (ACCEPTED, "uuid-2")
    assert norm(out) == [upd("Placed", 1, "uuid-2", evse=1)]
    entry = book.get("", 1)
    assert entry is not None
    assert len(book.entries) == 1
    assert (entry.uuid, entry.reservation.id_token, entry.reservation.expiry_utc) == ("uuid-2", "TOKEN-B", T0 + 2 * H)
    # the replaced version is gone: its token no longer matches
    assert book.match(1, "TOKEN-A", None, T0 + MIN) is None
    assert book.match(1, "TOKEN-B", None, T0 + MIN) is entry


# === V3 =========================================================================================

V3_ROWS = [
    # (id, layout, setup, reservation, expected)
    ("V3: unknown EVSE -> Rejected", ONE, [], res(1, evse=9), REJECTED),
    ("V3: overlapping specific reservation -> Occupied", ONE, [res(1, evse=1)], res(2, evse=1), OCCUPIED),
    ("V3: overlap checked before connector fit", {1: [CCS2]}, [res(1, evse=1)], res(2, evse=1, conn=T2), OCCUPIED),
    ("V3: overlap of a scheduled one -> Occupied", ONE, [res(1, evse=1, start=T0 + H, expiry=T0 + 2 * H)],
     res(2, evse=1, start=T0 + 90 * MIN), OCCUPIED),
    ("V3: no fitting connector -> Rejected", {1: [CCS2]}, [], res(1, evse=1, conn=T2), REJECTED),
    ("V3: connector fit checked before plug-in", {1: [CCS2]}, [("occupied", 1)], res(1, evse=1, conn=T2), REJECTED),
    ("V3: EV plugged in -> Occupied", ONE, [("occupied", 1)], res(1, evse=1), OCCUPIED),
    ("V3: plug-in checked before fault", ONE, [("occupied+faulted", 1)], res(1, evse=1), OCCUPIED),
    ("V3: faulted -> Faulted", ONE, [("faulted", 1)], res(1, evse=1), FAULTED),
    ("V3: fault checked before disabled", ONE, [("faulted+disabled", 1)], res(1, evse=1), FAULTED),
    ("V3: disabled -> Unavailable", ONE, [("disabled", 1)], res(1, evse=1), UNAVAILABLE),
    ("V3: leaves the globals no room -> Occupied", TWO, [res(1), res(2)], res(3, evse=1), OCCUPIED),
    ("V3: G1 example, taking the only T2 EVSE -> Occupied", EXAMPLE, [res(1, conn=T2)], res(2, evse=3), OCCUPIED),
    ("V3: G1 example, taking a CCS2-only EVSE -> Accepted", EXAMPLE, [res(1, conn=T2)], res(2, evse=1), ACCEPTED),
    ("V3: a free EVSE -> Accepted", ONE, [], res(1, evse=1), ACCEPTED),
    ("V3: Unknown connector on the EVSE fits any type", ONE, [], res(1, evse=1, conn=CT2), ACCEPTED),
    ("V3: plug-in at another EVSE does not matter", TWO, [("occupied", 2)], res(1, evse=1), ACCEPTED),
    ("V3: adjacent windows do not overlap", ONE, [res(1, evse=1, expiry=T0 + H)],
     res(2, evse=1, start=T0 + H, expiry=T0 + 2 * H), ACCEPTED),
    # V5: a scheduled reservation is judged at its start, not at acceptance
    ("V3+V5: scheduled on an occupied EVSE -> Accepted", ONE, [("occupied", 1)], res(1, evse=1, start=T0 + H),
     ACCEPTED),
    ("V3+V5: scheduled on a faulted EVSE -> Accepted", ONE, [("faulted", 1)], res(1, evse=1, start=T0 + H), ACCEPTED),
    ("V3+V5: scheduled on a disabled EVSE -> Accepted", ONE, [("disabled", 1)], res(1, evse=1, start=T0 + H),
     ACCEPTED),
    ("V3+V5: scheduled, still no fitting connector -> Rejected", {1: [CCS2]}, [("occupied", 1)],
     res(1, evse=1, conn=T2, start=T0 + H), REJECTED),
    ("V3+V5: start_time in the past is not scheduled", ONE, [("faulted", 1)], res(1, evse=1, start=T0 - H), FAULTED),
]


@pytest.mark.parametrize(("layout", "setup", "reservation", "expected"),
                         [pytest.param(*row[1:], id=row[0]) for row in V3_ROWS])
def test_v3_specific(layout: dict[int, list[str]], setup: list[Step], reservation: Reservation,
                     expected: ReservationResult) -> None:
    book = prepare(layout, setup)
    before = book.snapshot()
    result, uuid, out = book.reserve(reservation, T0)
    assert result is expected
    if expected is not ACCEPTED:
        assert (uuid, out) == (None, [])
        assert book.snapshot() == before


# === V4 =========================================================================================

V4_ROWS = [
    ("V4: no EVSE has a fitting connector -> Rejected", {1: [CCS2], 2: [CT2]}, [], res(1, conn=T2), REJECTED),
    ("V4: no fitting EVSE -> Rejected even with reservations", {1: [CCS2]}, [res(1)], res(2, conn=T2), REJECTED),
    ("V4: no room, a global reservation exists -> Occupied", ONE, [res(1)], res(2), OCCUPIED),
    ("V4: no room, a specific reservation exists -> Occupied", ONE, [res(1, evse=1)], res(2), OCCUPIED),
    ("V4: no room, reservation exists beats fault", TWO, [res(1, evse=1), ("faulted", 2)], res(2), OCCUPIED),
    ("V4: no room, an EV plugged in -> Occupied", ONE, [("occupied", 1)], res(1), OCCUPIED),
    ("V4: no room, EV plugged in at a non-fitting EVSE -> Occupied", {1: [T2], 2: [CCS2]},
     [("faulted", 1), ("occupied", 2)], res(1, conn=T2), OCCUPIED),
    ("V4: single EVSE faulted -> Faulted", ONE, [("faulted", 1)], res(1), FAULTED),
    ("V4: single EVSE disabled -> Unavailable", ONE, [("disabled", 1)], res(1), UNAVAILABLE),
    ("V4: worst state, Faulted > Unavailable", TWO, [("faulted", 1), ("disabled", 2)], res(1), FAULTED),
    ("V4: worst state, Occupied > Faulted", TWO, [("faulted", 1), ("occupied", 2)], res(1), OCCUPIED),
    ("V4: only fitting EVSEs give the state", {1: [T2], 2: [CCS2]}, [("disabled", 1), ("faulted", 2)],
     res(1, conn=T2), UNAVAILABLE),
    ("V4: one free fitting EVSE is enough", TWO, [("faulted", 1)], res(1), ACCEPTED),
    ("V4: Unknown requested type fits any connector", {1: [CCS2]}, [], res(1), ACCEPTED),
    ("V4: Unknown EVSE connector fits a typed request", {1: [UNKNOWN]}, [], res(1, conn=CT2), ACCEPTED),
    ("V4+V5: scheduled global on a faulted EVSE -> Accepted (judged at start)", ONE, [("faulted", 1)],
     res(1, start=T0 + H), ACCEPTED),
    ("V4+V5: scheduled global on an occupied EVSE -> Accepted", ONE, [("occupied", 1)], res(1, start=T0 + H),
     ACCEPTED),
]


@pytest.mark.parametrize(("layout", "setup", "reservation", "expected"),
                         [pytest.param(*row[1:], id=row[0]) for row in V4_ROWS])
def test_v4_global(layout: dict[int, list[str]], setup: list[Step], reservation: Reservation,
                   expected: ReservationResult) -> None:
    book = prepare(layout, setup)
    before = book.snapshot()
    result, uuid, out = book.reserve(reservation, T0)
    assert result is expected
    if expected is not ACCEPTED:
        assert (uuid, out) == (None, [])
        assert book.snapshot() == before


# === V5 =========================================================================================


def test_v5_scheduled_reservation_starts_at_start_time() -> None:
    """V5: Scheduled until start_time (not Reserved, no ReservationStart); Active at tick(start)."""
    book = new_book(TWO)
    result, uuid, out = book.reserve(res(1, evse=1, start=T0 + H, expiry=T0 + 2 * H), T0)
    assert result is ACCEPTED
    assert norm(out) == [upd("Placed", 1, "uuid-1", evse=1)]  # §4: Placed at acceptance
    assert not book.reserved(1)
    assert book.exists("TOKEN-A", 1, None, T0) is ReservationCheckStatus.NOT_RESERVED
    assert book.walk_in_allowed(1, T0)
    assert book.next_deadline() == T0 + H
    assert book.tick(T0 + H - S) == []
    assert not book.get("", 1).active  # type: ignore[union-attr]
    assert norm(book.tick(T0 + H)) == [start(1, 1)]
    assert book.reserved(1)
    assert book.get("", 1).active
    assert book.next_deadline() == T0 + 2 * H
    assert book.exists("TOKEN-A", 1, None, T0 + H) is ReservationCheckStatus.RESERVED_FOR_TOKEN


def test_v5_scheduled_global_is_counted_only_from_its_start() -> None:
    """V5: a scheduled global reservation does not hold anything before start_time."""
    book = new_book(ONE)
    assert book.reserve(res(1, start=T0 + H), T0)[0] is ACCEPTED
    assert not book.reserved(1)
    assert book.walk_in_allowed(1, T0)
    assert book.exists("TOKEN-A", None, None, T0) is ReservationCheckStatus.NOT_RESERVED
    assert norm(book.tick(T0 + H)) == [hold(1)]  # G3: one free EVSE, one global
    assert book.exists("TOKEN-A", None, None, T0 + H) is ReservationCheckStatus.RESERVED_FOR_TOKEN


def test_v5_busy_at_start_stays_scheduled_until_the_evse_is_free() -> None:
    book = prepare(ONE, [("occupied", 1), res(1, evse=1, start=T0 + H)])
    assert book.tick(T0 + H) == []
    assert not book.reserved(1)
    assert not book.get("", 1).active
    # still in its window: the EVSE is locked for other tokens (U1, U5)
    assert book.exists("TOKEN-B", 1, None, T0 + H) is ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN
    assert set_live(book, 1, "free", T0 + H + MIN) == [start(1, 1)]
    assert book.reserved(1)
    assert book.get("", 1).active


def test_v5_busy_until_expiry_ends_expired_without_reservation_end() -> None:
    """V5 + U2: a reservation that never became Active expires with the update only."""
    book = prepare(ONE, [("occupied", 1), res(1, evse=1, start=T0 + H, expiry=T0 + 2 * H)])
    book.tick(T0 + H)
    assert norm(book.tick(T0 + 2 * H)) == [upd("Expired", 1, "uuid-1", evse=1)]
    assert book.entries == []


@pytest.mark.parametrize("kind", ["faulted", "disabled"])
def test_v5_faulted_or_disabled_at_start_is_removed(kind: str) -> None:
    """V5: faulted or disabled at start_time -> ends as in U4 (update Removed; it never started)."""
    book = prepare(TWO, [res(1, evse=1, start=T0 + H), (kind, 1)])
    assert book.get("", 1) is not None  # not removed at the fault: it is not active yet
    assert norm(book.tick(T0 + H)) == [upd("Removed", 1, "uuid-1", evse=1)]
    assert book.entries == []
    assert not book.reserved(1)


@pytest.mark.parametrize(("second", "expected"), [
    pytest.param(res(2, evse=1, start=T0 + 2 * H, expiry=T0 + 3 * H), ACCEPTED,
                 id="V5: non-overlapping windows on one EVSE -> both Accepted"),
    pytest.param(res(2, evse=1, start=T0 + H - S, expiry=T0 + 3 * H), OCCUPIED,
                 id="V5: windows overlapping by one second -> Occupied"),
    pytest.param(res(2, evse=1, start=T0 + 30 * MIN, expiry=T0 + 40 * MIN), OCCUPIED,
                 id="V5: window inside the other -> Occupied"),
    pytest.param(res(2, evse=1, expiry=T0 + 30 * MIN + S), OCCUPIED,
                 id="V5: unscheduled window [now, expiry) overlaps the scheduled one -> Occupied"),
    pytest.param(res(2, evse=1, expiry=T0 + 30 * MIN), ACCEPTED,
                 id="V5: unscheduled window ending at the scheduled start -> Accepted"),
])
def test_v5_windows_on_one_evse(second: Reservation, expected: ReservationResult) -> None:
    book = prepare(ONE, [res(1, evse=1, start=T0 + 30 * MIN, expiry=T0 + H)])
    assert book.reserve(second, T0)[0] is expected


@pytest.mark.parametrize(("setup", "new", "expected"), [
    pytest.param([res(1, evse=1, start=T0 + 2 * H, expiry=T0 + 3 * H)], res(2, expiry=T0 + 4 * H), OCCUPIED,
                 id="V5: G1 holds at the new start but fails when a specific one begins inside -> Occupied"),
    pytest.param([res(1, evse=1, start=T0 + 2 * H, expiry=T0 + 3 * H)], res(2, expiry=T0 + 2 * H), ACCEPTED,
                 id="V5: the new window ends when the specific one begins -> Accepted"),
    pytest.param([res(1, start=T0 + 2 * H, expiry=T0 + 3 * H)], res(2, expiry=T0 + 4 * H), OCCUPIED,
                 id="V5: a scheduled global begins inside the new window -> Occupied"),
    pytest.param([res(1, start=T0 + 2 * H, expiry=T0 + 3 * H)], res(2, start=T0 + 3 * H), ACCEPTED,
                 id="V5: scheduled globals one after the other -> Accepted"),
    pytest.param([res(1, expiry=T0 + 3 * H)], res(2, evse=1, start=T0 + 2 * H), OCCUPIED,
                 id="V5: a scheduled specific in a global's window -> Occupied (G1 at its start)"),
    pytest.param([res(1, expiry=T0 + 2 * H)], res(2, evse=1, start=T0 + 2 * H), ACCEPTED,
                 id="V5: a scheduled specific after the global's window -> Accepted"),
])
def test_v5_g1_at_every_instant_of_the_new_window(setup: list[Step], new: Reservation,
                                                  expected: ReservationResult) -> None:
    """V5: G1 at the new window's start and at each other window's start inside it (1 EVSE)."""
    book = prepare(ONE, setup)
    assert book.reserve(new, T0)[0] is expected


def test_v5_g1_at_later_starts_with_two_evses() -> None:
    """V5: 2 EVSEs; at T0 two globals fit, but from +2 h a specific one takes EVSE 1 -> Occupied."""
    book = prepare(TWO, [res(1, evse=1, start=T0 + 2 * H, expiry=T0 + 3 * H), res(2, expiry=T0 + 4 * H)])
    assert global_room([UNKNOWN, UNKNOWN], [[UNKNOWN], [UNKNOWN]])  # the new start alone is fine
    assert book.reserve(res(3, expiry=T0 + 4 * H), T0)[0] is OCCUPIED
    assert book.reserve(res(3, expiry=T0 + 2 * H), T0)[0] is ACCEPTED


# === V6 =========================================================================================


def test_v6_replacement_on_the_same_evse_emits_no_evse_events() -> None:
    book = prepare(TWO, [res(1, evse=1)])
    result, uuid, out = book.reserve(res(1, evse=1, token="TOKEN-B", expiry=T0 + 3 * H), T0 + MIN)
    assert result is ACCEPTED
    assert norm(out) == [upd("Placed", 1, "uuid-2", evse=1)]
    assert book.reserved(1)


def test_v6_moving_replacement_ends_on_the_old_evse_and_starts_on_the_new() -> None:
    book = prepare(TWO, [res(1, evse=1)])
    result, uuid, out = book.reserve(res(1, evse=2, token="TOKEN-B"), T0 + MIN)
    assert result is ACCEPTED
    assert norm(out) == [end(1, 1, CANCELLED), upd("Placed", 1, "uuid-2", evse=2), start(2, 1, "TOKEN-B")]
    assert not book.reserved(1)
    assert book.reserved(2)


def test_v6_replacement_from_specific_to_global_ends_on_the_old_evse() -> None:
    book = prepare(THREE, [res(1, evse=1)])
    out = book.reserve(res(1), T0 + MIN)[2]
    assert norm(out) == [end(1, 1, CANCELLED), upd("Placed", 1, "uuid-2")]
    assert not book.reserved(1)


def test_v6_replacement_from_global_to_specific_starts_on_the_new_evse() -> None:
    book = prepare(THREE, [res(1)])
    out = book.reserve(res(1, evse=2), T0 + MIN)[2]
    assert norm(out) == [upd("Placed", 1, "uuid-2", evse=2), start(2, 1)]


def test_v6_replacing_a_scheduled_one_with_an_active_one_starts_it() -> None:
    book = prepare(TWO, [res(1, evse=1, start=T0 + H)])
    out = book.reserve(res(1, evse=1), T0 + MIN)[2]
    assert norm(out) == [upd("Placed", 1, "uuid-2", evse=1), start(1, 1)]


def test_v5_v6_replacement_moved_into_the_future_does_not_keep_the_evse_reserved() -> None:
    book = prepare(TWO, [res(1, evse=1)])
    result, _, out = book.reserve(res(1, evse=1, start=T0 + 2 * H), T0)
    assert result is ACCEPTED
    assert book.specific(1, T0) is None  # nothing holds EVSE 1 now ...
    assert not book.reserved(1)  # ... so it must not show Reserved
    assert norm(out) == [end(1, 1, CANCELLED), upd("Placed", 1, "uuid-2", evse=1)]


def test_v5_reservation_in_the_gap_of_a_rescheduled_one_gets_its_own_start() -> None:
    book = prepare(TWO, [res(1, evse=1)])
    book.reserve(res(1, evse=1, start=T0 + 2 * H), T0)
    result, _, out = book.reserve(res(7, "TOKEN-B", evse=1, expiry=T0 + H, sender="b"), T0)
    assert result is ACCEPTED
    assert start(1, 7, "TOKEN-B") in norm(out)


# === G1 =========================================================================================


@pytest.mark.parametrize("conn", [UNKNOWN, CCS2, T2])
def test_g1_api_example_accepts_no_further_global(conn: str) -> None:
    """G1: EVSEs CCS2 | CCS2 | CCS2+T2 with one global T2 reservation accept no further global one."""
    book = new_book(EXAMPLE)
    assert book.reserve(res(1, conn=T2), T0)[0] is ACCEPTED
    assert book.reserve(res(2, conn=conn), T0)[0] is OCCUPIED


def test_g1_api_example_the_other_order_is_fine() -> None:
    """G1 (control): a CCS2 reservation first leaves room for one T2 (EVSE 3) ... and then none."""
    book = new_book(EXAMPLE)
    assert book.reserve(res(1, conn=CCS2), T0)[0] is ACCEPTED
    assert book.reserve(res(2, conn=T2), T0)[0] is OCCUPIED  # the CCS2 car may take EVSE 3
    assert book.reserve(res(2, conn=CCS2), T0)[0] is ACCEPTED  # 2 CCS2 cars leave 1 EVSE


def test_g1_count_of_reservations_may_not_exceed_evses() -> None:
    book = new_book(TWO)
    assert book.reserve(res(1), T0)[0] is ACCEPTED
    assert book.reserve(res(2, evse=1), T0)[0] is ACCEPTED
    assert book.reserve(res(3), T0)[0] is OCCUPIED
    assert book.reserve(res(3, start=T0 + 4 * H, expiry=T0 + 5 * H), T0)[0] is ACCEPTED  # other window


G1_ROWS = [
    ("G1: no reservations", [], [], True),
    ("G1: no EVSE for one car", [UNKNOWN], [], False),
    ("G1: count, 3 cars on 2 EVSEs", [UNKNOWN] * 3, [[UNKNOWN]] * 2, False),
    ("G1: count, 2 cars on 2 EVSEs", [UNKNOWN] * 2, [[UNKNOWN]] * 2, True),
    ("G1: API example, T2 alone", [T2], [[CCS2], [CCS2], [CCS2, T2]], True),
    ("G1: API example, T2 + Unknown", [T2, UNKNOWN], [[CCS2], [CCS2], [CCS2, T2]], False),
    ("G1: API example, T2 + CCS2", [T2, CCS2], [[CCS2], [CCS2], [CCS2, T2]], False),
    ("G1: API example, T2 + T2", [T2, T2], [[CCS2], [CCS2], [CCS2, T2]], False),
    ("G1: API example, CCS2 + CCS2", [CCS2, CCS2], [[CCS2], [CCS2], [CCS2, T2]], True),
    ("G1: Unknown connector fits every type", [T2, CCS2, CT2], [[UNKNOWN]] * 3, True),
    ("G1: Unknown requested type fits all", [UNKNOWN, UNKNOWN], [[CCS2], [T2]], True),
    ("G1: Unknown request may take the only T2", [UNKNOWN, T2], [[CCS2], [T2]], False),
    ("G1: Unknown EVSE may be taken by the CCS2 car", [T2, CCS2], [[UNKNOWN], [CCS2]], False),
    ("G1: disjoint types", [T2, CCS2], [[T2], [CCS2]], True),
    ("G1: type absent", [CT2], [[T2], [CCS2]], False),
]


@pytest.mark.parametrize(("types", "evses", "expected"), [pytest.param(*row[1:], id=row[0]) for row in G1_ROWS])
def test_g1_global_room_table(types: list[str], evses: list[list[str]], expected: bool) -> None:
    assert global_room(types, evses) is expected
    assert brute_room(types, evses) is expected  # the reference agrees on the hand-made rows


@pytest.mark.parametrize(("requested", "connectors", "expected"), [
    pytest.param(UNKNOWN, [CCS2], True, id="§3.1: requested Unknown fits any connector"),
    pytest.param(T2, [UNKNOWN], True, id="§3.1: connector Unknown fits any request"),
    pytest.param(T2, [CCS2, T2], True, id="§3.1: one of the connectors fits"),
    pytest.param(T2, [CCS2], False, id="§3.1: no connector fits"),
    pytest.param(T2, [], False, id="§3.1: no connectors at all"),
])
def test_fits(requested: str, connectors: list[str], expected: bool) -> None:
    assert fits(requested, connectors) is expected


TYPES = st.sampled_from([CCS2, T2, CT2, UNKNOWN])
LAYOUTS = st.lists(st.lists(TYPES, min_size=1, max_size=2, unique=True), min_size=1, max_size=6)


@settings(max_examples=2000)
@given(evses=LAYOUTS, types=st.lists(TYPES, max_size=6))
def test_g1_global_room_agrees_with_brute_force(evses: list[list[str]], types: list[str]) -> None:
    """G1: the memoised multiset recursion gives the answer of the enumeration of every order and pick."""
    assert global_room(types, evses) is brute_room(types, evses)


# === G2 =========================================================================================

G2_ROWS = [
    # (id, layout, setup, {evse: allowed})
    ("G2: API example, EVSE 1/2 allowed, EVSE 3 refused", EXAMPLE, [res(1, conn=T2)], {1: True, 2: True, 3: False}),
    ("G2: no global reservation, walk-in everywhere", EXAMPLE, [], {1: True, 2: True, 3: True}),
    ("G2: 2 EVSEs, 1 global: walk-in at either", TWO, [res(1)], {1: True, 2: True}),
    ("G2: 2 EVSEs, 2 globals: walk-in nowhere", TWO, [res(1), res(2)], {1: False, 2: False}),
    ("G2: T2 | CCS2, 1 CCS2 global: only the T2 EVSE", {1: [T2], 2: [CCS2]}, [res(1, conn=CCS2)],
     {1: True, 2: False}),
    ("G2: 3 EVSEs, one specific + one global: the third free EVSE is needed", THREE, [res(1, evse=1), res(2)],
     {2: True, 3: True}),
    ("G2: specifically reserved EVSE refuses a walk-in", TWO, [res(1, evse=1)], {1: False, 2: True}),
    ("G2: a faulted EVSE does not count as room", THREE, [res(1), ("faulted", 3)], {1: True, 2: True}),
    ("G2: one global, one faulted of two", TWO, [res(1), ("faulted", 2)], {1: False}),
    ("G2: Unknown EVSE is the only T2 room", {1: [UNKNOWN], 2: [CCS2], 3: [CCS2]}, [res(1, conn=T2)],
     {1: False, 2: True, 3: True}),
]


@pytest.mark.parametrize(("layout", "setup", "allowed"), [pytest.param(*row[1:], id=row[0]) for row in G2_ROWS])
def test_g2_walk_in_allowed(layout: dict[int, list[str]], setup: list[Step], allowed: dict[int, bool]) -> None:
    book = prepare(layout, setup)
    assert {e: book.walk_in_allowed(e, T0) for e in allowed} == allowed


# === G3 =========================================================================================

G3_ROWS = [
    # (id, layout, globals, held EVSEs)
    ("G3: 2 EVSEs, 2 globals -> both held", TWO, [res(1), res(2)], {1, 2}),
    ("G3: 2 EVSEs, 1 global (Unknown x2) -> none held", TWO, [res(1)], set()),
    ("G3: API example, 1 T2 global -> only EVSE 3 held", EXAMPLE, [res(1, conn=T2)], {3}),
    ("G3: 3 EVSEs, 3 globals -> all held", THREE, [res(1), res(2), res(3)], {1, 2, 3}),
    ("G3: 3 EVSEs, 2 globals -> none held", THREE, [res(1), res(2)], set()),
    ("G3: T2 | CCS2, 1 CCS2 global -> the CCS2 EVSE held", {1: [T2], 2: [CCS2]}, [res(1, conn=CCS2)], {2}),
    ("G3: free count == globals after a specific one", THREE, [res(1, evse=1), res(2), res(3)], {2, 3}),
]


@pytest.mark.parametrize(("layout", "setup", "held"), [pytest.param(*row[1:], id=row[0]) for row in G3_ROWS])
def test_g3_held_evses_show_reserved(layout: dict[int, list[str]], setup: list[Step], held: set[int]) -> None:
    book = prepare(layout, setup)
    specific = {r.evse_id for r in setup if isinstance(r, Reservation) and r.evse_id is not None}
    assert {e for e in layout if book.reserved(e)} - specific == held
    # G3 reading: held exactly where G2 refuses a walk-in
    assert {e for e in layout if e not in specific and not book.walk_in_allowed(e, T0)} == held


def test_g3_hold_payload_and_order() -> None:
    """G3 + §4: the hold is ReservationStart {reservation_id: -1, id_tag: "", global: true}."""
    book = new_book(EXAMPLE)
    result, _, out = book.reserve(res(1, conn=T2), T0)
    assert result is ACCEPTED
    assert norm(out) == [upd("Placed", 1, "uuid-1"), hold(3)]
    event = out[1]
    assert payload(event)["reservation_start"] == {"reservation_id": -1, "id_tag": "", "global": True}  # type: ignore[union-attr]
    assert payload(event)["evse_id"] == 3  # type: ignore[union-attr]


def test_g3_second_global_holds_both() -> None:
    book = new_book(TWO)
    assert norm(book.reserve(res(1), T0)[2]) == [upd("Placed", 1, "uuid-1")]
    assert norm(book.reserve(res(2), T0)[2]) == [upd("Placed", 2, "uuid-2"), hold(1), hold(2)]
    assert book.reserved(1)
    assert book.reserved(2)


def test_g3_hold_drops_on_cancel() -> None:
    book = prepare(EXAMPLE, [res(1, conn=T2)])
    ok, out = book.cancel("", 1, T0 + MIN)
    assert ok
    assert norm(out) == [upd("Cancelled", 1, "uuid-1"), end(3, -1, DROPPED)]
    assert not book.reserved(3)


def test_g3_hold_drops_on_expiry() -> None:
    book = prepare(EXAMPLE, [res(1, conn=T2, expiry=T0 + H)])
    assert norm(book.tick(T0 + H)) == [upd("Expired", 1, "uuid-1"), end(3, -1, DROPPED)]
    assert not book.reserved(3)


def test_g3_hold_drops_when_one_of_two_globals_ends() -> None:
    book = prepare(TWO, [res(1), res(2, expiry=T0 + H)])
    assert norm(book.tick(T0 + H)) == [upd("Expired", 2, "uuid-2"), end(1, -1, DROPPED), end(2, -1, DROPPED)]


def test_g3_ev_plugging_in_at_a_held_evse_ends_its_hold() -> None:
    """§5 + G3: an EV can always plug in; its EVSE's hold ends (GlobalReservationRequirementDropped)."""
    book = prepare(TWO, [res(1), res(2)])
    assert set_live(book, 1, "occupied", T0 + MIN) == [end(1, -1, DROPPED)]
    assert not book.reserved(1)
    assert book.reserved(2)
    assert [e.key for e in book.entries] == [("", 1), ("", 2)]  # U4 reading: a plug-in removes nothing
    assert set_live(book, 1, "free", T0 + 2 * MIN) == [hold(1)]


def test_g3_using_a_global_at_a_held_evse_ends_the_hold_with_its_id() -> None:
    """§4: the hold ends with UsedToStartCharging and the used reservation's id."""
    book = prepare(EXAMPLE, [res(5, "T2-CAR", conn=T2)])
    entry = book.match(3, "t2-car", None, T0 + MIN)
    assert entry is not None
    assert entry.reservation.reservation_id == 5
    out = book.use(entry, 3, T0 + MIN)
    assert norm(out) == [upd("Used", 5, "uuid-1", evse=3), end(3, 5, USED)]
    assert not book.reserved(3)
    assert book.entries == []


def test_g3_using_a_global_keeps_the_other_holds_still_needed() -> None:
    """The EVSE where a reservation is used is busy from then on (a session starts there): one
    EVSE and one global less, EVSE 2 is still the last room of global 2 and stays held, without
    events (it used to get End + Start, once the charger reported EVSE 1 busy)."""
    book = prepare(TWO, [res(1, "A"), res(2, "B")])
    entry = book.match(1, "A", None, T0)
    assert entry is not None
    out = book.use(entry, 1, T0)
    assert norm(out) == [upd("Used", 1, "uuid-1", evse=1), end(1, 1, USED)]
    assert book.reserved(2)
    assert set_live(book, 1, "occupied", T0) == []  # the charger reports the session: nothing changes


def test_g3_global_used_at_one_of_two_held_evses_leaves_the_other_alone() -> None:
    """Issue 8: EVSEs 1..5, EVs at 1, 3, 4, two globals hold 2 and 5 (G3: 2 free = 2 globals)."""
    book = prepare({i: [UNKNOWN] for i in range(1, 6)},
                   [("occupied", 1), ("occupied", 3), ("occupied", 4), res(1, "A"), res(2, "B")])
    assert [book.reserved(i) for i in range(1, 6)] == [False, True, False, False, True]
    entry = book.match(2, "a", None, T0 + MIN)
    assert entry is not None
    assert norm(book.use(entry, 2, T0 + MIN)) == [upd("Used", 1, "uuid-1", evse=2), end(2, 1, USED)]
    assert set_live(book, 2, "occupied", T0 + MIN) == []
    assert book.reserved(5)


def test_g3_using_a_global_drops_the_holds_no_longer_needed() -> None:
    """EVSEs CCS2+T2 | CCS2 | T2 with a CCS2 and a T2 global: 2 and 3 are held (a walk-in at either
    lets one car take EVSE 1 and strand the other). The CCS2 one used at 2: the T2 car has 1 and 3,
    so 3 is no longer held."""
    book = prepare({1: [CCS2, T2], 2: [CCS2], 3: [T2]}, [res(1, "A", conn=CCS2), res(2, "B", conn=T2)])
    assert [book.reserved(i) for i in (1, 2, 3)] == [False, True, True]
    entry = book.match(2, "A", None, T0)
    assert entry is not None
    out = book.use(entry, 2, T0)
    assert norm(out) == [upd("Used", 1, "uuid-1", evse=2), end(2, 1, USED), end(3, -1, DROPPED)]
    assert [book.reserved(i) for i in (1, 2, 3)] == [False, False, False]


def test_g3_specific_reservation_taking_over_a_held_evse() -> None:
    """G3 + V5: a scheduled specific reservation starting at a held EVSE replaces the hold."""
    book = prepare(TWO, [res(1, expiry=T0 + 3 * H), res(2, expiry=T0 + H), res(3, evse=1, start=T0 + H)])
    assert book.reserved(1)
    assert book.reserved(2)
    assert norm(book.tick(T0 + H)) == [
        upd("Expired", 2, "uuid-2"),
        end(1, -1, DROPPED), start(1, 3),  # the hold on EVSE 1 gives way to reservation 3
    ]  # EVSE 2 is now the only room of reservation 1: its hold stays
    assert book.reserved(1)
    assert book.reserved(2)


# === U1 =========================================================================================

U1_MATCH_ROWS = [
    # (id, reservation, token, parent, matches)
    ("U1: same token", res(1, "AbC", evse=1), "AbC", None, True),
    ("U1: token case-insensitive", res(1, "AbC", evse=1), "aBc", None, True),
    ("U1: other token", res(1, "AbC", evse=1), "XYZ", None, False),
    ("U1: parent tokens equal", res(1, "A", evse=1, parent="Group"), "B", "GROUP", True),
    ("U1: reservation has no parent", res(1, "A", evse=1), "B", "GROUP", False),
    ("U1: token has no parent", res(1, "A", evse=1, parent="GROUP"), "B", None, False),
    ("U1: parents differ", res(1, "A", evse=1, parent="GROUP"), "B", "OTHER", False),
    ("U1: token equals even if parents differ", res(1, "A", evse=1, parent="GROUP"), "a", "OTHER", True),
    ("U1: global, token case-insensitive", res(1, "AbC"), "abc", None, True),
    ("U1: global, parent tokens equal", res(1, "A", parent="g"), "B", "G", True),
    ("U1: global of a type the EVSE lacks", res(1, "A", conn=T2), "A", None, False),
]


@pytest.mark.parametrize(("reservation", "token", "parent", "matches"),
                         [pytest.param(*row[1:], id=row[0]) for row in U1_MATCH_ROWS])
def test_u1_match(reservation: Reservation, token: str, parent: str | None, matches: bool) -> None:
    book = prepare({1: [CCS2], 2: [T2]}, [reservation])
    entry = book.match(1, token, parent, T0)
    assert (entry is not None) is matches
    if matches:
        assert entry is book.get("", 1)


def test_u1_at_a_specifically_reserved_evse_only_its_own_reservation_counts() -> None:
    book = prepare(THREE, [res(1, "A", evse=1), res(2, "B")])
    assert book.match(1, "B", None, T0) is None  # B's global reservation does not open EVSE 1
    assert book.match(1, "A", None, T0) is book.get("", 1)
    assert book.match(2, "B", None, T0) is book.get("", 2)
    assert book.match(2, "A", None, T0) is None  # A's specific reservation is for EVSE 1 only


def test_u1_globals_are_used_oldest_first() -> None:
    book = prepare(THREE, [res(2, "A", sender="x"), res(1, "A", sender="y")])
    first = book.match(1, "a", None, T0)
    assert first is not None
    assert first.key == ("x", 2)
    book.use(first, 1, T0)
    second = book.match(2, "A", None, T0)
    assert second is not None
    assert second.key == ("y", 1)


def test_u1_use_of_a_specific_reservation() -> None:
    """U1: update Used (with evse_id) and ReservationEnd UsedToStartCharging."""
    book = prepare(TWO, [res(4, "A", evse=2, parent="G")])
    assert book.reserved(2)
    entry = book.match(2, "B", "g", T0 + MIN)
    assert entry is not None
    assert norm(book.use(entry, 2, T0 + MIN)) == [upd("Used", 4, "uuid-1", evse=2), end(2, 4, USED)]
    assert book.entries == []
    assert not book.reserved(2)


def test_u1_use_of_a_global_reservation_at_an_evse_that_is_not_held() -> None:
    book = prepare(THREE, [res(1, "A")])
    entry = book.match(2, "A", None, T0)
    assert entry is not None
    assert norm(book.use(entry, 2, T0)) == [upd("Used", 1, "uuid-1", evse=2)]


def test_u1_start_event_carries_the_parent_token() -> None:
    """§4: reservation_start {reservation_id, id_tag, parent_id?}."""
    book = new_book(ONE)
    out = book.reserve(res(3, "A", evse=1, parent="G"), T0)[2]
    assert norm(out) == [upd("Placed", 3, "uuid-1", evse=1), start(1, 3, "A", parent="G")]


def test_u1_use_of_a_reservation_still_scheduled_because_the_driver_is_plugged_in() -> None:
    """V5 + U1: busy at start (the driver plugged in early), still in its window: usable; it never
    started, so there is no ReservationEnd."""
    book = prepare(TWO, [res(1, "A", evse=1, start=T0 + H), ("occupied", 1)])
    book.tick(T0 + H)
    entry = book.match(1, "A", None, T0 + H)
    assert entry is not None
    assert not entry.active
    assert norm(book.use(entry, 1, T0 + H)) == [upd("Used", 1, "uuid-1", evse=1)]
    assert book.entries == []


def test_u1_a_used_reservation_cannot_be_used_again() -> None:
    book = prepare(ONE, [res(1, "A", evse=1)])
    entry = book.match(1, "A", None, T0)
    assert entry is not None
    book.use(entry, 1, T0)
    with pytest.raises(ValueError, match="no longer in the book"):
        book.use(entry, 1, T0)


# === U2 =========================================================================================


def test_u2_specific_reservation_expires_at_expiry_time() -> None:
    book = prepare(TWO, [res(1, evse=1, expiry=T0 + H)])
    assert book.next_deadline() == T0 + H
    assert book.tick(T0 + H - S) == []
    assert norm(book.tick(T0 + H)) == [upd("Expired", 1, "uuid-1", evse=1), end(1, 1, EXPIRED)]
    assert book.entries == []
    assert not book.reserved(1)
    assert book.next_deadline() is None


def test_u2_global_reservation_expires_on_r_reservation_only() -> None:
    """§4: a global reservation that expires is reported on R/reservation only."""
    book = prepare(TWO, [res(1, expiry=T0 + H)])
    assert book.next_deadline() == T0 + H
    assert book.tick(T0 + H - S) == []
    assert norm(book.tick(T0 + H)) == [upd("Expired", 1, "uuid-1")]


def test_u2_late_tick_expires_everything_due_in_placement_order() -> None:
    book = prepare(THREE, [res(1, evse=1, expiry=T0 + 2 * H), res(2, expiry=T0 + H), res(3, evse=3, expiry=T0 + H)])
    assert book.next_deadline() == T0 + H
    assert norm(book.tick(T0 + 3 * H)) == [
        upd("Expired", 1, "uuid-1", evse=1), end(1, 1, EXPIRED),
        upd("Expired", 2, "uuid-2"),
        upd("Expired", 3, "uuid-3", evse=3), end(3, 3, EXPIRED),
        end(2, -1, DROPPED),  # EVSE 2 was held: the only free EVSE for the global one
    ]


def test_u2_next_deadline_is_the_earliest_of_starts_and_expiries() -> None:
    book = prepare(THREE, [res(1, expiry=T0 + 3 * H), res(2, evse=2, start=T0 + 2 * H, expiry=T0 + 5 * H)])
    assert book.next_deadline() == T0 + 2 * H
    book.tick(T0 + 2 * H)
    assert book.next_deadline() == T0 + 3 * H


def test_next_deadline_after_tick_is_in_the_future() -> None:
    book = prepare(ONE, [("occupied", 1), res(1, evse=1, start=T0 + H, expiry=T0 + 2 * H)])
    book.tick(T0 + H)
    deadline = book.next_deadline()
    assert deadline is None or deadline > T0 + H


# === U3 =========================================================================================


def test_u3_cancel_specific() -> None:
    book = prepare(TWO, [res(1, evse=1, sender="a")])
    ok, out = book.cancel("a", 1, T0 + MIN)
    assert ok
    assert norm(out) == [upd("Cancelled", 1, "uuid-1", evse=1, sender="a"), end(1, 1, CANCELLED)]
    assert book.entries == []
    assert not book.reserved(1)
    assert book.cancel("a", 1, T0 + MIN) == (False, [])  # already gone


def test_u3_cancel_global_and_scheduled() -> None:
    book = prepare(THREE, [res(1), res(2, evse=2, start=T0 + H)])
    assert norm(book.cancel("", 1, T0)[1]) == [upd("Cancelled", 1, "uuid-1")]
    assert norm(book.cancel("", 2, T0)[1]) == [upd("Cancelled", 2, "uuid-2", evse=2)]  # never started: no end


def test_u3_cancel_unknown_is_false() -> None:
    book = prepare(TWO, [res(1)])
    assert book.cancel("", 2, T0) == (False, [])
    assert keys(book) == [("", 1)]


def test_u3_another_sender_can_neither_cancel_nor_replace() -> None:
    book = prepare(TWO, [res(1, "A", evse=1, sender="a")])
    before = book.snapshot()
    assert book.cancel("b", 1, T0) == (False, [])
    assert book.cancel("", 1, T0) == (False, [])
    # the same reservation_id from "b" is a new reservation, not a replacement: it overlaps "a"'s
    assert book.reserve(res(1, "B", evse=1, sender="b"), T0) == (OCCUPIED, None, [])
    assert book.snapshot() == before
    result, _, _ = book.reserve(res(1, "B", evse=2, sender="b"), T0)
    assert result is ACCEPTED
    assert keys(book) == [("a", 1), ("b", 1)]
    assert book.get("a", 1).reservation.evse_id == 1  # type: ignore[union-attr]
    assert book.cancel("b", 1, T0)[0]
    assert keys(book) == [("a", 1)]



def test_u3_another_senders_scheduled_reservation_with_the_same_id_leaves_the_active_one_alone() -> None:
    """Sender a's reservation 2 is active on EVSE 1; sender b's reservation 2 is scheduled there after
    it. Cancelling or replacing b's must not end (and restart) a's ReservationStart: the EVSE's open
    start is a's (found by the stateful test's one-event-per-reservation-and-step check)."""
    book = prepare(TWO, [res(2, "A", evse=1, expiry=T0 + H, sender="a"),
                         res(2, "B", evse=1, start=T0 + H, expiry=T0 + 2 * H, sender="b")])
    assert book.reserved(1)
    out = book.reserve(res(2, "B", expiry=T0 + H, sender="b"), T0)[2]  # V2: b's becomes a global one
    assert norm(out) == [upd("Placed", 2, "uuid-3", sender="b"), hold(2)]
    book.reserve(res(2, "B", evse=1, start=T0 + H, expiry=T0 + 2 * H, sender="b"), T0)  # and back
    assert norm(book.cancel("b", 2, T0)[1]) == [upd("Cancelled", 2, "uuid-4", evse=1, sender="b")]
    assert book.reserved(1)
    assert keys(book) == [("a", 2)]


# === U4 =========================================================================================


@pytest.mark.parametrize("kind", ["faulted", "disabled"])
def test_u4_fault_or_disable_removes_the_active_specific_reservation(kind: str) -> None:
    book = prepare(TWO, [res(1, evse=1)])
    assert set_live(book, 1, kind, T0 + MIN) == [upd("Removed", 1, "uuid-1", evse=1), end(1, 1, CANCELLED)]
    assert book.entries == []
    assert not book.reserved(1)
    assert set_live(book, 1, "free", T0 + 2 * MIN) == []  # it never comes back


@pytest.mark.parametrize("kind", ["faulted", "disabled"])
def test_u4_globals_that_no_longer_fit_are_removed_newest_first(kind: str) -> None:
    book = prepare(THREE, [res(1), res(2), res(3)])
    assert all(book.reserved(e) for e in THREE)
    assert set_live(book, 1, kind, T0 + MIN) == [upd("Removed", 3, "uuid-3"), end(1, -1, DROPPED)]
    assert keys(book) == [("", 1), ("", 2)]
    assert book.reserved(2)
    assert book.reserved(3)
    # recovery brings nothing back; the holds drop (3 free for 2 globals)
    assert set_live(book, 1, "free", T0 + 2 * MIN) == [end(2, -1, DROPPED), end(3, -1, DROPPED)]
    assert keys(book) == [("", 1), ("", 2)]


def test_u4_typed_global_without_its_connector_is_removed() -> None:
    book = prepare(EXAMPLE, [res(1, conn=T2), res(2, conn=CCS2, start=T0 + 4 * H, expiry=T0 + 5 * H)])
    assert set_live(book, 3, "faulted", T0 + MIN) == [upd("Removed", 1, "uuid-1"), end(3, -1, DROPPED)]
    assert keys(book) == [("", 2)]


def test_u4_only_as_many_globals_as_needed_are_removed() -> None:
    book = prepare({1: [CCS2], 2: [T2], 3: [T2]}, [res(1, conn=T2), res(2, conn=CCS2), res(3, conn=T2)])
    out = set_live(book, 1, "faulted", T0)  # only the CCS2 reservation lost its room ... but it is not newest
    assert out[0] == upd("Removed", 3, "uuid-3")  # newest first
    assert upd("Removed", 2, "uuid-2") in out
    assert keys(book) == [("", 1)]


def test_u4_plug_in_removes_nothing_and_shrink_does_not_touch_scheduled_ones() -> None:
    """U4 reading: an EV plugging in does not shrink capacity; a scheduled specific one is judged at start."""
    book = prepare(TWO, [res(1), res(2, evse=2, start=T0 + H)])
    assert set_live(book, 1, "occupied", T0) == [hold(2)]  # G3: EVSE 2 is the global's only room
    assert keys(book) == [("", 1), ("", 2)]
    # EVSE 2 faults: the working hardware (EVSE 1, whose EV will leave) still holds the global,
    # so nothing is removed; the hold on EVSE 2 ends; the scheduled specific one is judged at start.
    assert set_live(book, 2, "faulted", T0) == [end(2, -1, DROPPED)]
    assert keys(book) == [("", 1), ("", 2)]
    # EVSE 1 faults too: no working hardware is left for the global, so it is removed (U4).
    assert set_live(book, 1, "faulted", T0) == [upd("Removed", 1, "uuid-1")]
    assert keys(book) == [("", 2)]


def test_u4_a_fault_with_enough_room_removes_nothing() -> None:
    book = prepare(THREE, [res(1), res(2, evse=2)])
    assert set_live(book, 3, "faulted", T0) == [hold(1)]  # G3: EVSE 1 is its last room
    assert keys(book) == [("", 1), ("", 2)]


def test_v5_u4_scheduled_global_starting_without_room_is_removed() -> None:
    book = prepare(ONE, [("faulted", 1), res(1, start=T0 + H)])
    assert norm(book.tick(T0 + H)) == [upd("Removed", 1, "uuid-1")]


def test_v5_u4_specific_starting_while_capacity_is_short_removes_the_global() -> None:
    book = prepare(TWO, [res(1, evse=1, start=T0 + H), res(2), ("faulted", 2)])
    assert keys(book) == [("", 1), ("", 2)]
    out = norm(book.tick(T0 + H))
    assert upd("Removed", 2, "uuid-2") in out


# === U5 =========================================================================================

RFT = ReservationCheckStatus.RESERVED_FOR_TOKEN
NOT = ReservationCheckStatus.NOT_RESERVED
OTHER = ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN
OTHER_PARENT = ReservationCheckStatus.RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN

U5_ROWS = [
    # (id, setup, id_token, evse_id, group_id_token, expected)
    ("U5: no evse_id, global of the token", [res(1, "A")], "a", None, None, RFT),
    ("U5: no evse_id, global by group token", [res(1, "A", parent="G")], "B", None, "g", RFT),
    ("U5: no evse_id, global of another token", [res(1, "A", parent="G")], "B", None, None, NOT),
    ("U5: no evse_id, global, other group token", [res(1, "A", parent="G")], "B", None, "H", NOT),
    ("U5: no evse_id looks at globals only", [res(1, "A", evse=1)], "A", None, None, NOT),
    ("U5: no evse_id, nothing reserved", [], "A", None, None, NOT),
    ("U5: no evse_id, scheduled global not yet started", [res(1, "A", start=T0 + H)], "A", None, None, NOT),
    ("U5: evse not specifically reserved", [], "A", 1, None, NOT),
    ("U5: evse with only a global reservation", [res(1, "A")], "A", 1, None, NOT),
    ("U5: evse reserved for the token", [res(1, "A", evse=1)], "a", 1, None, RFT),
    ("U5: evse reserved, group token matches", [res(1, "A", evse=1, parent="G")], "B", 1, "G", RFT),
    ("U5: evse reserved for another, has parent, no group given", [res(1, "A", evse=1, parent="G")], "B", 1, None,
     OTHER_PARENT),
    ("U5: evse reserved for another, has parent, wrong group given", [res(1, "A", evse=1, parent="G")], "B", 1, "H",
     OTHER),
    ("U5: evse reserved for another, no parent", [res(1, "A", evse=1)], "B", 1, None, OTHER),
    ("U5: evse reserved for another, no parent, group given", [res(1, "A", evse=1)], "B", 1, "G", OTHER),
    ("U5: other evse reserved", [res(1, "A", evse=2)], "A", 1, None, NOT),
    ("U5: scheduled specific not yet started", [res(1, "A", evse=1, start=T0 + H)], "A", 1, None, NOT),
]


@pytest.mark.parametrize(("setup", "token", "evse", "group", "expected"),
                         [pytest.param(*row[1:], id=row[0]) for row in U5_ROWS])
def test_u5_exists(setup: list[Step], token: str, evse: int | None, group: str | None,
                   expected: ReservationCheckStatus) -> None:
    book = prepare(THREE, setup)
    assert book.exists(token, evse, group, T0) is expected


# === U6 =========================================================================================


def populated() -> ReservationBook:
    """A book with one of each: active specific, scheduled specific, global (held), parent token, two senders."""
    book = prepare({1: [CCS2], 2: [CCS2, T2], 3: [CCS2]}, [
        res(1, "A", evse=1, expiry=T0 + H, sender="a"),
        res(2, "B", evse=3, start=T0 + 2 * H, expiry=T0 + 3 * H, parent="G"),
        res(1, "C", conn=T2, expiry=T0 + 2 * H, sender="b"),
    ])
    assert book.reserved(1)
    assert book.reserved(2)
    assert not book.reserved(3)
    return book


def test_u6_snapshot_restore_round_trip() -> None:
    book = populated()
    snap = book.snapshot()
    fresh = ReservationBook({1: [CCS2], 2: [CCS2, T2], 3: [CCS2]}, new_uuid=uuids("other"))
    assert fresh.restore(copy.deepcopy(snap), T0) == []
    assert fresh.entries == book.entries  # same reservations, uuids, placement order, Scheduled/Active
    assert fresh.snapshot() == snap
    assert [fresh.reserved(e) for e in (1, 2, 3)] == [True, True, False]
    # and both behave the same from now on
    for instant in (T0 + H, T0 + 2 * H, T0 + 3 * H):
        assert norm(fresh.tick(instant)) == norm(book.tick(instant))
    assert fresh.entries == book.entries == []


def test_u6_snapshot_is_plain_data() -> None:
    snap = populated().snapshot()
    assert json.loads(json.dumps(snap)) == snap


def test_u6_restore_keeps_placement_order_for_new_reservations() -> None:
    book = populated()
    fresh = ReservationBook({1: [CCS2], 2: [CCS2, T2], 3: [CCS2]}, new_uuid=uuids("other"))
    fresh.restore(book.snapshot(), T0)
    fresh.reserve(res(9, "Z", evse=3, expiry=T0 + H), T0)
    assert [e.key for e in fresh.entries][-1] == ("", 9)
    assert fresh.entries[-1].order > max(e.order for e in book.entries)


def test_u6_restore_later_ends_expired_ones() -> None:
    """U6: expired while down -> Expired (and ReservationEnd Expired for a started specific one)."""
    snap = populated().snapshot()
    fresh = ReservationBook({1: [CCS2], 2: [CCS2, T2], 3: [CCS2]}, new_uuid=uuids("other"))
    out = norm(fresh.restore(snap, T0 + 2 * H + MIN))
    assert out == [
        upd("Expired", 1, "uuid-1", evse=1, sender="a"), end(1, 1, EXPIRED),
        upd("Expired", 1, "uuid-3", sender="b"),
        start(3, 2, "B", parent="G"),  # the scheduled one started while the controller was down
        end(2, -1, DROPPED),  # the T2 global's hold
    ]
    assert keys(fresh) == [("", 2)]


def test_u6_restore_at_exactly_expiry() -> None:
    """U2 + U6: to the second, also after a restart."""
    snap = prepare(ONE, [res(1, evse=1, expiry=T0 + H)]).snapshot()
    assert ReservationBook(ONE, new_uuid=uuids()).restore(snap, T0 + H - S) == []
    assert norm(ReservationBook(ONE, new_uuid=uuids()).restore(snap, T0 + H)) == [
        upd("Expired", 1, "uuid-1", evse=1), end(1, 1, EXPIRED)]


def test_u6_restore_without_the_evse_removes_its_reservation() -> None:
    snap = populated().snapshot()
    fresh = ReservationBook({2: [CCS2, T2], 3: [CCS2]}, new_uuid=uuids("other"))
    out = norm(fresh.restore(snap, T0))
    assert out == [upd("Removed", 1, "uuid-1", evse=1, sender="a")]  # no EVSE 1 to end it on
    assert keys(fresh) == [("", 2), ("b", 1)]


def test_u6_restore_without_the_connector_type_removes() -> None:
    snap = populated().snapshot()
    fresh = ReservationBook({1: [CCS2], 2: [CCS2], 3: [CCS2]}, new_uuid=uuids("other"))
    out = norm(fresh.restore(snap, T0))
    assert out == [upd("Removed", 1, "uuid-3", sender="b"), end(2, -1, DROPPED)]  # the T2 global
    assert keys(fresh) == [("a", 1), ("", 2)]


def test_u6_restore_specific_whose_evse_lost_the_type_is_removed_with_end() -> None:
    snap = prepare({1: [T2]}, [res(1, evse=1, conn=T2)]).snapshot()
    fresh = ReservationBook({1: [CCS2]}, new_uuid=uuids())
    assert norm(fresh.restore(snap, T0)) == [upd("Removed", 1, "uuid-1", evse=1), end(1, 1, CANCELLED)]


def test_u6_restore_with_fewer_evses_removes_newest_globals() -> None:
    snap = prepare(THREE, [res(1), res(2), res(3)]).snapshot()
    fresh = ReservationBook(TWO, new_uuid=uuids("other"))
    out = norm(fresh.restore(snap, T0))
    assert out == [upd("Removed", 3, "uuid-3")]  # holds on 1 and 2 stay: 2 free, 2 globals
    assert keys(fresh) == [("", 1), ("", 2)]
    assert fresh.reserved(1)
    assert fresh.reserved(2)


def test_u6_restart_with_an_ev_plugged_in_removes_nothing() -> None:
    book = prepare(TWO, [res(1), res(2), ("occupied", 1)])
    assert keys(book) == [("", 1), ("", 2)]
    fresh = ReservationBook(TWO, new_uuid=uuids("other"))
    fresh.set_evse(1, **LIVE["occupied"], now=T0)
    out = norm(fresh.restore(book.snapshot(), T0))
    assert upd("Removed", 2, "uuid-2") not in out
    assert keys(fresh) == [("", 1), ("", 2)]


def _snap_entry(**changes: object) -> dict[str, object]:
    snap = prepare(ONE, [res(1, evse=1)]).snapshot()
    entry = dict(snap["entries"][0])  # type: ignore[index]
    entry.update(changes)
    return {"order": 1, "started": [], "held": [], "entries": [entry]}


def _without(key: str) -> dict[str, object]:
    snap = _snap_entry()
    del snap["entries"][0][key]  # type: ignore[index]
    return snap


GARBAGE = [
    # (id, data) - each must raise ValueError, KeyError or TypeError
    ("U6 garbage: entries not a list", {"entries": {}}),
    ("U6 garbage: entries a string", {"entries": "x"}),
    ("U6 garbage: entry not a map", {"entries": [1]}),
    ("U6 garbage: entry without uuid", _without("uuid")),
    ("U6 garbage: entry without expiry_time", _without("expiry_time")),
    ("U6 garbage: entry without placed_at", _without("placed_at")),
    ("U6 garbage: entry without order", _without("order")),
    ("U6 garbage: entry without reservation_id", _without("reservation_id")),
    ("U6 garbage: entry without id_token", _without("id_token")),
    ("U6 garbage: expiry_time not a time", _snap_entry(expiry_time="soon")),
    ("U6 garbage: expiry_time a number", _snap_entry(expiry_time=5)),
    ("U6 garbage: expiry_time naive", _snap_entry(expiry_time="2026-11-21T09:00:00")),
    ("U6 garbage: placed_at null", _snap_entry(placed_at=None)),
    ("U6 garbage: start after expiry", _snap_entry(start_time="2026-11-21T23:00:00+00:00")),
    ("U6 garbage: reservation_id a string", _snap_entry(reservation_id="1")),
    ("U6 garbage: id_token a number", _snap_entry(id_token=5)),
    ("U6 garbage: evse_id a string", _snap_entry(evse_id="1")),
    ("U6 garbage: connector_type null", _snap_entry(connector_type=None)),
    ("U6 garbage: sender null", _snap_entry(sender=None)),
    ("U6 garbage: entry order not a number", _snap_entry(order="x")),
    ("U6 garbage: entry order null", _snap_entry(order=None)),
    ("U6 garbage: entry order NaN", _snap_entry(order=float("nan"))),
    ("U6 garbage: order not a number", {"order": "x"}),
    ("U6 garbage: order null", {"order": None}),
    ("U6 garbage: started not a list", {"started": 5}),
    ("U6 garbage: started evse not a number", {"started": [["x", 1]]}),
    ("U6 garbage: started evse null", {"started": [[None, 1]]}),
    ("U6 garbage: held not a list", {"held": {}}),
    ("U6 garbage: held null item", {"held": [None]}),
    ("U6 garbage: held list item", {"held": [[1]]}),
    ("U6 garbage: snapshot is a list", []),
    ("U6 garbage: snapshot is null", None),
    ("U6 garbage: snapshot is a string", "x"),
    ("U6 garbage: started pair empty", {"started": [[]]}),
    ("U6 garbage: started pair with one item", {"started": [[1]]}),
    ("U6 garbage: entry order infinite", _snap_entry(order=float("inf"))),
    ("U6 garbage: started evse infinite", {"started": [[float("inf"), 1]]}),
]


@pytest.mark.parametrize("data", [pytest.param(row[1], id=row[0]) for row in GARBAGE])
def test_u6_garbage_snapshot_raises_a_value_key_or_type_error(data: object) -> None:
    book = ReservationBook(ONE, new_uuid=uuids())
    with pytest.raises((ValueError, KeyError, TypeError)):
        book.restore(data, T0)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [pytest.param(row[1], id=row[0]) for row in GARBAGE])
def test_u6_garbage_snapshot_changes_nothing(data: object) -> None:
    """A damaged snapshot leaves the book as it was: nothing half-restored, no outputs."""
    book = populated()
    before = book.snapshot()
    with pytest.raises((ValueError, KeyError, TypeError)):
        book.restore(data, T0 + MIN)  # type: ignore[arg-type]
    assert book.snapshot() == before


def test_u6_restore_of_an_empty_map_is_an_empty_book() -> None:
    book = ReservationBook(ONE, new_uuid=uuids())
    assert book.restore({}, T0) == []
    assert book.entries == []
    assert book.snapshot() == {"order": 0, "started": [], "held": [], "entries": []}


# === misc =======================================================================================


def test_book_needs_an_evse() -> None:
    with pytest.raises(ValueError, match="at least one EVSE"):
        ReservationBook({}, new_uuid=uuids())


def test_evse_without_connectors_is_unknown() -> None:
    """§3.1: an EVSE configured without connector types fits every requested type."""
    book = ReservationBook({1: []}, new_uuid=uuids())
    assert book.reserve(res(1, evse=1, conn=T2), T0)[0] is ACCEPTED


def test_set_evse_without_change_emits_nothing() -> None:
    book = prepare(TWO, [res(1), res(2)])
    assert set_live(book, 1, "free") == []


def test_payload_of_a_reservation_update() -> None:
    """§4 ReservationUpdateStatus: evse_id only when set."""
    book = new_book(TWO)
    out = book.reserve(res(3, evse=2, sender="emsp"), T0)[2]
    assert payload(out[0]) == {  # type: ignore[union-attr]
        "reservation_id": 3, "sender": "emsp", "uuid": "uuid-1", "reservation_status": "Placed", "evse_id": 2}
    out = book.reserve(res(4, sender="emsp"), T0)[2]
    assert payload(out[0]) == {  # type: ignore[union-attr]
        "reservation_id": 4, "sender": "emsp", "uuid": "uuid-2", "reservation_status": "Placed"}


def test_payload_of_a_reservation_update_with_a_reason() -> None:
    """§4: `reason` is optional; it is written when set."""
    update = ReservationUpdate(reservation_id=1, sender="", uuid="u", status=ReservationStatus.REMOVED,
                               reason="EVSE faulted")
    assert payload(update) == {"reservation_id": 1, "sender": "", "uuid": "u", "reservation_status": "Removed",
                                "reason": "EVSE faulted"}


def test_needs_parent() -> None:
    """§5 / OCPP 2.0.1 H03.FR.08: a parent lookup is needed where a reservation has a parent token."""
    book = prepare(THREE, [res(1, "A", evse=1, parent="G"), res(2, "B", evse=2)])
    assert book.needs_parent(1, T0)
    assert not book.needs_parent(2, T0)
    assert not book.needs_parent(3, T0)
    book.reserve(res(3, "C", parent="H"), T0)
    assert book.needs_parent(3, T0)
