"""Issue 8: three reservation contract points, through the whole core (Charger), time injected.

1. G3 (API.md §4, §7): an EVSE gets hold events only when its held state changes. One step of the
   charger (a token, a plug-in with a held token, a tick) never ends a hold and starts it again, nor
   starts one and ends it again.
2. V5: a scheduled reservation whose EVSE is busy at `start_time` stays Scheduled (no
   ReservationStart, not Reserved) until the EVSE is free, or until it expires (update Expired, no
   ReservationEnd); faulted or disabled at `start_time` it ends as in U4 (Removed).
3. §5 / OCPP 2.0.1 H03.FR.08: the local auth list knows a token's parent (or that it has none); only
   a token it does not hold is looked up through the backend before a reservation refuses it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from firmware.core.auth import AuthStatus, LocalAuthEntry, LocalAuthStatus
from firmware.core.charger import Charger, Output
from firmware.core.events import (
    EmitSessionEvent,
    Fault,
    FaultRaised,
    RequestBackendAuth,
    SessionCancellationReason,
    SessionEvent,
    Status,
)
from firmware.core.pilot import Cp
from firmware.core.reservations import ReservationStatus, ReservationUpdate
from firmware.wire import payload
from tests.support.charger import HOUR, M0, T2, UTC0, at, charger, decided, events, plug, reserve

HOLD = {"reservation_id": -1, "id_tag": "", "global": True}


def reservation_events(out: list[Output]) -> list[tuple[int, str, dict[str, object]]]:
    """(EVSE, event, data) of every ReservationStart / ReservationEnd, in order."""
    result = []
    for item in out:
        if isinstance(item, EmitSessionEvent) and item.event in (SessionEvent.RESERVATION_START,
                                                                 SessionEvent.RESERVATION_END):
            doc = payload(item)
            data = doc.get("reservation_start", doc.get("reservation_end"))
            assert isinstance(data, dict)
            result.append((item.cid, item.event.value, data))
    return result


def updates(out: list[Output]) -> list[tuple[int, ReservationStatus]]:
    return [(u.reservation_id, u.status) for u in out if isinstance(u, ReservationUpdate)]


# --- 1. no hold blips ------------------------------------------------------------------------------


def test_g3_global_used_at_one_held_evse_gives_no_event_at_the_other() -> None:
    """EVSEs 1..5, EVs at 1, 3, 4, two global reservations: 2 and 5 are held (2 free = 2 globals).
    The first global used at 2 ends 2's hold (UsedToStartCharging, its id); 5 stays held, silently."""
    c = charger(T2, T2, T2, T2, T2)
    for cid in (1, 3, 4):
        plug(c, cid, Cp.B, at(M0))
    out = reserve(c, at(M0 + 1), reservation_id=1, id_token="AA11") + reserve(c, at(M0 + 2), reservation_id=2,
                                                                           id_token="BB22")
    assert reservation_events(out) == [(2, "ReservationStart", HOLD), (5, "ReservationStart", HOLD)]
    assert [c.status(i) for i in (2, 5)] == [Status.RESERVED, Status.RESERVED]

    decision, out = c.present_token(2, "AA11", at(M0 + 3))
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    assert reservation_events(out) == [(2, "ReservationEnd", {"reservation_id": 1,
                                                              "reason": "UsedToStartCharging"})]
    assert updates(out) == [(1, ReservationStatus.USED)]
    assert c.status(5) is Status.RESERVED
    assert c.book.reserved(5)


def test_g3_held_token_that_uses_a_global_at_plug_in_starts_no_hold() -> None:
    """Three free EVSEs, two globals: nothing held. A held token (authorize without EVSE) of the
    first global meets the EV that plugs in at 1: one step, one global and one EVSE less, so still
    2 free for 1 global: no hold starts (and ends) on 2 and 3."""
    c = charger(T2, T2, T2)
    reserve(c, reservation_id=1, id_token="AA11")
    reserve(c, reservation_id=2, id_token="BB22")
    cid, decision, _ = c.authorize_anywhere("AA11", at(M0 + 1))
    assert (cid, decision and decision.status) == (None, AuthStatus.ACCEPTED)
    out = plug(c, 1, Cp.B, at(M0 + 2))
    assert reservation_events(out) == []
    assert updates(out) == [(1, ReservationStatus.USED)]
    session = c.evses[1].session
    assert session is not None
    assert session.authorized
    assert session.reservation_id == 1
    assert [c.status(i) for i in (2, 3)] == [Status.AVAILABLE, Status.AVAILABLE]


def test_g3_tick_that_frees_an_evse_and_activates_a_reservation_starts_no_hold() -> None:
    """EVSE 1 waits for an EV (authorized, 60 s connection timeout); two globals over EVSEs 2..4; a
    scheduled reservation on 4 starts exactly when 1's session times out. After the tick 1, 2, 3
    are free for 2 globals: nothing is held, and no hold starts and ends on the way."""
    c = charger(T2, T2, T2, T2)
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="LOCAL", status=LocalAuthStatus.ACCEPTED)])
    c.present_token(1, "LOCAL", at(M0))
    reserve(c, reservation_id=1, id_token="AA11")
    reserve(c, reservation_id=2, id_token="BB22")
    reserve(c, reservation_id=3, id_token="CC33", evse_id=4, start_utc=UTC0 + timedelta(seconds=60))
    assert not any(c.book.reserved(i) for i in (1, 2, 3, 4))
    assert c.next_deadline() == M0 + 60
    out = c.tick(at(M0 + 60))
    assert [e.event for e in events(out, SessionEvent.SESSION_CANCELLED)] == [SessionEvent.SESSION_CANCELLED]
    assert reservation_events(out) == [(4, "ReservationStart", {"reservation_id": 3, "id_tag": "CC33"})]
    assert [c.status(i) for i in (1, 2, 3, 4)] == [Status.AVAILABLE] * 3 + [Status.RESERVED]


def test_g3_a_held_evse_that_becomes_specifically_reserved_changes_its_start() -> None:
    """Not a blip: the hold (-1) ends and the specific reservation starts (a real change)."""
    c = charger(T2, T2)
    reserve(c, reservation_id=1, id_token="AA11")
    plug(c, 1, Cp.B, at(M0))
    assert c.book.reserved(2)
    out = reserve(c, at(M0 + 1), reservation_id=1, id_token="AA11", evse_id=2)  # V2: the global moves to EVSE 2
    assert reservation_events(out) == [
        (2, "ReservationEnd", {"reservation_id": -1, "reason": "GlobalReservationRequirementDropped"}),
        (2, "ReservationStart", {"reservation_id": 1, "id_tag": "AA11"}),
    ]


# --- 2. V5: busy at start_time ---------------------------------------------------------------------


START = M0 + 3600  # start_time of the scheduled reservations below (UTC0 + 1 h)


def busy(c: Charger, how: str, now: float) -> None:
    """Make EVSE 1 busy: an EV plugged in, charging, or a session authorized before plug-in."""
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="LOCAL", status=LocalAuthStatus.ACCEPTED)])
    if how != "waiting for the EV":
        plug(c, 1, Cp.C if how == "charging" else Cp.B, at(now))
    if how != "plugged in":
        c.present_token(1, "LOCAL", at(now))
    assert c.evses[1].relay_closed is (how == "charging")
    assert c.evses[1].plugged is (how != "waiting for the EV")


def free_up(c: Charger, how: str, now: float) -> list[Output]:
    if how == "waiting for the EV":
        return c.stop_session(1, SessionCancellationReason.REMOTE, at(now))[1]
    return plug(c, 1, Cp.A, at(now))


BUSY = ["plugged in", "charging", "waiting for the EV"]


@pytest.mark.parametrize("how", BUSY)
def test_v5_busy_at_start_stays_scheduled_until_the_evse_is_free(how: str) -> None:
    c = charger(T2, T2)
    reserve(c, at(M0), reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 3 * HOUR)
    busy(c, how, START - 10)
    out = c.tick(at(START))
    assert reservation_events(out) == []
    assert updates(out) == []
    entry = c.book.get("", 7)
    assert entry is not None
    assert not entry.active
    assert c.status(1) is not Status.RESERVED
    assert not c.book.reserved(1)
    assert c.book.next_deadline() == UTC0 + 3 * HOUR  # nothing due until the EVSE frees or it expires

    out = free_up(c, how, START + 20)
    assert reservation_events(out) == [(1, "ReservationStart", {"reservation_id": 7, "id_tag": "AA11"})]
    entry = c.book.get("", 7)
    assert entry is not None
    assert entry.active
    assert c.status(1) is Status.RESERVED


def test_v5_session_that_times_out_after_start_lets_the_reservation_start() -> None:
    c = charger(T2, T2)
    reserve(c, at(M0), reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 3 * HOUR)
    busy(c, "waiting for the EV", START - 10)  # connection timeout 60 s: at START + 50
    assert reservation_events(c.tick(at(START))) == []
    assert c.next_deadline() == START + 50
    out = c.tick(at(START + 50))
    assert events(out, SessionEvent.SESSION_CANCELLED)
    assert reservation_events(out) == [(1, "ReservationStart", {"reservation_id": 7, "id_tag": "AA11"})]


@pytest.mark.parametrize("how", ["plugged in", "charging"])
def test_v5_busy_until_expiry_ends_expired_without_evse_events(how: str) -> None:
    c = charger(T2, T2)
    reserve(c, at(M0), reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 2 * HOUR)
    busy(c, how, START - 10)
    out = c.tick(at(START))
    assert c.next_deadline() == START + 3600
    out += c.tick(at(START + 3600))
    assert updates(out) == [(7, ReservationStatus.EXPIRED)]
    assert reservation_events(out) == []  # it never started: no ReservationStart, no ReservationEnd
    assert c.book.entries == []
    assert reservation_events(free_up(c, how, START + 3700)) == []


@pytest.mark.parametrize("kind", ["faulted", "disabled"])
def test_v5_faulted_or_disabled_at_start_ends_as_in_u4(kind: str) -> None:
    c = charger(T2, T2)
    reserve(c, at(M0), reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 2 * HOUR)
    if kind == "faulted":
        c.handle(FaultRaised(cid=1, fault=Fault.RCD_TRIPPED), at(M0 + 1))
    else:
        c.set_enabled(1, False, at(M0 + 1))
    assert c.book.get("", 7) is not None  # judged at start_time, not before
    out = c.tick(at(M0 + 3600))
    assert updates(out) == [(7, ReservationStatus.REMOVED)]
    assert reservation_events(out) == []
    assert c.book.entries == []


def test_v5_busy_and_faulted_at_start_ends_as_in_u4() -> None:
    c = charger(T2, T2)
    plug(c, 1, Cp.B, at(M0))
    reserve(c, at(M0), reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 2 * HOUR)
    c.handle(FaultRaised(cid=1, fault=Fault.RCD_TRIPPED), at(M0 + 1))
    out = c.tick(at(M0 + 3600))
    assert updates(out) == [(7, ReservationStatus.REMOVED)]
    assert reservation_events(out) == []


def test_v5_waiting_reservation_faulted_later_is_removed_without_evse_events() -> None:
    c = charger(T2, T2)
    plug(c, 1, Cp.B, at(M0))
    reserve(c, at(M0), reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 2 * HOUR)
    c.tick(at(M0 + 3600))
    out = c.handle(FaultRaised(cid=1, fault=Fault.RCD_TRIPPED), at(M0 + 3700))
    assert updates(out) == [(7, ReservationStatus.REMOVED)]
    assert reservation_events(out) == []


# --- 3. the local list knows a token's parent --------------------------------------------------------


@pytest.mark.parametrize("status", list(LocalAuthStatus))
def test_local_token_without_parent_is_refused_at_once_at_a_group_reservation(status: LocalAuthStatus) -> None:
    c = charger(T2)
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="LOCAL", status=status)])
    reserve(c, reservation_id=7, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    plug(c, 1, Cp.B, at(M0 + 1))
    decision, out = c.present_token(1, "local", at(M0 + 2))
    assert decision is not None
    assert decision.status is AuthStatus.RESERVED_FOR_OTHER
    assert decision.mismatch
    assert not [a for a in out if isinstance(a, RequestBackendAuth)]
    assert events(out, SessionEvent.RESERVATION_AUTHTOKEN_MISMATCH)
    assert decided(out).status == "ReservedForOther"
    assert c.next_deadline() is None or c.next_deadline() > M0 + 2 + 60  # no auth request pending
    assert c.book.get("", 7) is not None
    assert not c.evses[1].relay_closed


def test_unknown_token_is_still_looked_up_at_a_group_reservation() -> None:
    c = charger(T2)
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="LOCAL", status=LocalAuthStatus.ACCEPTED)])
    reserve(c, reservation_id=7, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    plug(c, 1, Cp.B, at(M0 + 1))
    decision, out = c.present_token(1, "STRANGER", at(M0 + 2))
    assert decision is None
    assert [a.id_token for a in out if isinstance(a, RequestBackendAuth)] == ["STRANGER"]


def test_authorize_without_evse_matches_a_group_reservation_through_the_local_list_parent() -> None:
    """`authorize` without EVSE (§5): the only EVSE is reserved for the group FLEET; a token the local
    list holds with parent FLEET can use it, so the token is held, not NoEvseAvailable."""
    c = charger(T2)
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="CC33", status=LocalAuthStatus.ACCEPTED,
                                                parent_id_token="FLEET")])
    reserve(c, reservation_id=7, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    cid, decision, _ = c.authorize_anywhere("CC33", at(M0 + 1))
    assert cid is None
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    out = plug(c, 1, Cp.B, at(M0 + 2))
    assert updates(out) == [(7, ReservationStatus.USED)]
    session = c.evses[1].session
    assert session is not None
    assert session.authorized
    assert session.reservation_id == 7
