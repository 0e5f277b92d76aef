"""Issue 8: reservation contract points, through the whole core (Charger), time injected.

1. G3 (API.md §4, §7): an EVSE gets hold events only when its held state changes. One step of the
   charger (a token, a plug-in with a held token, a tick) never ends a hold and starts it again, nor
   starts one and ends it again.
"""

from __future__ import annotations

from datetime import timedelta

from firmware.core.auth import AuthStatus, LocalAuthEntry, LocalAuthStatus
from firmware.core.charger import Output
from firmware.core.events import (
    EmitSessionEvent,
    SessionEvent,
    Status,
)
from firmware.core.pilot import Cp
from firmware.core.reservations import ReservationStatus, ReservationUpdate
from tests.core.test_charger_reservations import (
    M0,
    UTC0,
    charger,
    events,
    plug,
    reserve,
)

T2 = ("sType2",)
HOLD = {"reservation_id": -1, "id_tag": "", "global": True}


def reservation_events(out: list[Output]) -> list[tuple[int, str, dict[str, object]]]:
    """(EVSE, event, data) of every ReservationStart / ReservationEnd, in order."""
    result = []
    for item in out:
        if isinstance(item, EmitSessionEvent) and item.event in (SessionEvent.RESERVATION_START,
                                                                 SessionEvent.RESERVATION_END):
            payload = item.payload()
            data = payload.get("reservation_start", payload.get("reservation_end"))
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
        plug(c, cid, Cp.B, M0)
    out = reserve(c, M0 + 1, reservation_id=1, id_token="AA11") + reserve(c, M0 + 2, reservation_id=2,
                                                                           id_token="BB22")
    assert reservation_events(out) == [(2, "ReservationStart", HOLD), (5, "ReservationStart", HOLD)]
    assert [c.status(i) for i in (2, 5)] == [Status.RESERVED, Status.RESERVED]

    decision, out = c.present_token(2, "AA11", M0 + 3)
    assert decision is not None and decision.status is AuthStatus.ACCEPTED
    assert reservation_events(out) == [(2, "ReservationEnd", {"reservation_id": 1,
                                                              "reason": "UsedToStartCharging"})]
    assert updates(out) == [(1, ReservationStatus.USED)]
    assert c.status(5) is Status.RESERVED and c.book.reserved(5)


def test_g3_held_token_that_uses_a_global_at_plug_in_starts_no_hold() -> None:
    """Three free EVSEs, two globals: nothing held. A held token (authorize without EVSE) of the
    first global meets the EV that plugs in at 1: one step, one global and one EVSE less, so still
    2 free for 1 global: no hold starts (and ends) on 2 and 3."""
    c = charger(T2, T2, T2)
    reserve(c, reservation_id=1, id_token="AA11")
    reserve(c, reservation_id=2, id_token="BB22")
    cid, decision, _ = c.authorize_anywhere("AA11", M0 + 1)
    assert (cid, decision and decision.status) == (None, AuthStatus.ACCEPTED)
    out = plug(c, 1, Cp.B, M0 + 2)
    assert reservation_events(out) == []
    assert updates(out) == [(1, ReservationStatus.USED)]
    session = c.evses[1].session
    assert session is not None and session.authorized and session.reservation_id == 1
    assert [c.status(i) for i in (2, 3)] == [Status.AVAILABLE, Status.AVAILABLE]


def test_g3_tick_that_frees_an_evse_and_activates_a_reservation_starts_no_hold() -> None:
    """EVSE 1 waits for an EV (authorized, 60 s connection timeout); two globals over EVSEs 2..4; a
    scheduled reservation on 4 starts exactly when 1's session times out. After the tick 1, 2, 3
    are free for 2 globals: nothing is held, and no hold starts and ends on the way."""
    c = charger(T2, T2, T2, T2)
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="LOCAL", status=LocalAuthStatus.ACCEPTED)])
    c.present_token(1, "LOCAL", M0)
    reserve(c, reservation_id=1, id_token="AA11")
    reserve(c, reservation_id=2, id_token="BB22")
    reserve(c, reservation_id=3, id_token="CC33", evse_id=4, start_utc=UTC0 + timedelta(seconds=60))
    assert not any(c.book.reserved(i) for i in (1, 2, 3, 4))
    assert c.next_deadline() == M0 + 60
    out = c.tick(M0 + 60)
    assert [e.event for e in events(out, SessionEvent.SESSION_CANCELLED)] == [SessionEvent.SESSION_CANCELLED]
    assert reservation_events(out) == [(4, "ReservationStart", {"reservation_id": 3, "id_tag": "CC33"})]
    assert [c.status(i) for i in (1, 2, 3, 4)] == [Status.AVAILABLE] * 3 + [Status.RESERVED]


def test_g3_a_held_evse_that_becomes_specifically_reserved_changes_its_start() -> None:
    """Not a blip: the hold (-1) ends and the specific reservation starts (a real change)."""
    c = charger(T2, T2)
    reserve(c, reservation_id=1, id_token="AA11")
    plug(c, 1, Cp.B, M0)
    assert c.book.reserved(2)
    out = reserve(c, M0 + 1, reservation_id=1, id_token="AA11", evse_id=2)  # V2: the global moves to EVSE 2
    assert reservation_events(out) == [
        (2, "ReservationEnd", {"reservation_id": -1, "reason": "GlobalReservationRequirementDropped"}),
        (2, "ReservationStart", {"reservation_id": 1, "id_tag": "AA11"}),
    ]
