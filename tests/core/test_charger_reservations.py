"""Reservations and tokens wired into the EVSE machines, end to end in the pure core (API.md §5, §7).

A reserved EVSE refuses other tokens, shows Reserved and never starts for the wrong token; the right
token, or a sibling through its parent, starts a session that carries the reservation_id.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from firmware.core.auth import (
    AuthSettings,
    AuthStatus,
    BackendAnswer,
    LocalAuthEntry,
    LocalAuthStatus,
    OfflinePolicy,
)
from firmware.core.charger import Output
from firmware.core.events import (
    CloseRelay,
    EmitSessionEvent,
    Fault,
    FaultCleared,
    FaultRaised,
    Led,
    PilotChanged,
    PpChanged,
    RequestBackendAuth,
    SessionEvent,
    SetLed,
    Status,
)
from firmware.core.evse import State
from firmware.core.pilot import Cp
from firmware.core.reservations import (
    Reservation,
    ReservationStatus,
    ReservationUpdate,
)
from firmware.wire import payload
from tests.support.charger import HOUR, M0, UTC0, at, charger, decided, events, plug, reserve


def test_reserved_evse_shows_reserved_and_locks_out_other_tokens() -> None:
    c = charger(("sType2",))
    out = reserve(c, reservation_id=7, id_token="AA11", evse_id=1)
    assert c.status(1) is Status.RESERVED
    assert SetLed(cid=1, led=Led.RESERVED) in out
    start = events(out, SessionEvent.RESERVATION_START)[0]
    assert payload(start)["reservation_start"] == {"reservation_id": 7, "id_tag": "AA11"}

    out = plug(c, 1, Cp.C, at(M0 + 1))  # simplified mode: the EV asks for power at once
    assert c.status(1) is Status.PREPARING
    decision, out = c.present_token(1, "BB22", at(M0 + 2))
    assert decision is not None
    assert decision.status is AuthStatus.RESERVED_FOR_OTHER
    assert events(out, SessionEvent.RESERVATION_AUTHTOKEN_MISMATCH)
    assert decided(out).status == "ReservedForOther"
    assert not c.evses[1].relay_closed
    assert not c.evses[1].pwm_on
    assert c.book.get("", 7) is not None  # the EVSE stays reserved

    decision, out = c.present_token(1, "aa11", at(M0 + 3))  # the right token, any case
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    assert any(isinstance(a, CloseRelay) for a in out)
    session = c.evses[1].session
    assert session is not None
    assert session.reservation_id == 7
    (used,) = [a for a in out if isinstance(a, ReservationUpdate)]
    assert used.status is ReservationStatus.USED
    assert used.evse_id == 1
    (end,) = events(out, SessionEvent.RESERVATION_END)
    assert payload(end)["reservation_end"] == {"reservation_id": 7, "reason": "UsedToStartCharging"}
    assert end.uuid == session.uuid
    assert decided(out).reservation_id == 7


def test_token_before_plug_in_carries_the_reservation_id_in_session_started() -> None:
    c = charger(("sType2",))
    reserve(c, reservation_id=7, id_token="AA11", evse_id=1)
    _, out = c.present_token(1, "AA11", at(M0 + 1))
    (started,) = events(out, SessionEvent.SESSION_STARTED)
    assert payload(started)["session_started"]["reservation_id"] == 7  # type: ignore[index]
    assert c.status(1) is Status.PREPARING


def test_sibling_token_through_the_local_list_uses_the_reservation() -> None:
    c = charger(("sType2",))
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="CC33", status=LocalAuthStatus.ACCEPTED,
                                                parent_id_token="FLEET")])
    reserve(c, reservation_id=7, id_token="AA11", parent_id_token="fleet", evse_id=1)
    plug(c, 1, Cp.B, at(M0 + 1))
    decision, _ = c.present_token(1, "CC33", at(M0 + 2))
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    assert c.evses[1].session is not None
    assert c.evses[1].session.reservation_id == 7


def test_unknown_parent_is_asked_of_the_backend_then_decided() -> None:
    c = charger(("sType2",))
    reserve(c, reservation_id=7, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    plug(c, 1, Cp.B, at(M0 + 1))
    decision, out = c.present_token(1, "DD44", at(M0 + 2))
    assert decision is None
    (request,) = [a for a in out if isinstance(a, RequestBackendAuth)]
    assert c.next_deadline() == M0 + 2 + 5.0
    assert c.backend_auth_answer("nope", BackendAnswer(status=LocalAuthStatus.ACCEPTED), at(M0 + 3)) == []
    out = c.backend_auth_answer(request.request_id,
                                BackendAnswer(status=LocalAuthStatus.ACCEPTED, parent_id_token="FLEET"), at(M0 + 3))
    assert decided(out).status == "Accepted"
    assert decided(out).request_id == request.request_id
    assert c.evses[1].session is not None
    assert c.evses[1].session.reservation_id == 7


def test_backend_timeout_refuses_a_token_a_reservation_locks_out() -> None:
    c = charger(("sType2",), auth=AuthSettings(offline_policy=OfflinePolicy.ACCEPT_ALL))
    reserve(c, reservation_id=7, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    plug(c, 1, Cp.B, at(M0 + 1))
    _, out = c.present_token(1, "DD44", at(M0 + 2))
    assert c.tick(at(M0 + 6.99)) == []
    out = c.tick(at(M0 + 7.0))
    assert decided(out).status == "ReservedForOther"
    assert events(out, SessionEvent.RESERVATION_AUTHTOKEN_MISMATCH)
    assert c.evses[1].session is not None
    assert not c.evses[1].session.authorized


def test_walk_in_without_reservation_uses_the_offline_policy_when_offline() -> None:
    c = charger(("sType2",))
    c.online = False
    plug(c, 1, Cp.B, at(M0 + 1))
    decision, _ = c.present_token(1, "EE55", at(M0 + 2))
    assert decision is not None
    assert decision.status is AuthStatus.REJECTED
    assert decision.source == "offline_policy"


def test_g3_held_evse_refuses_a_walk_in_the_others_accept() -> None:
    c = charger(("cCCS2",), ("cCCS2",), ("cCCS2", "sType2"))
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="BB22", status=LocalAuthStatus.ACCEPTED)])
    out = reserve(c, reservation_id=1, id_token="AA11", connector_type="sType2")
    assert [c.status(i) for i in (1, 2, 3)] == [Status.AVAILABLE, Status.AVAILABLE, Status.RESERVED]
    assert payload(events(out, SessionEvent.RESERVATION_START)[0])["reservation_start"] == {
        "reservation_id": -1, "id_tag": "", "global": True}
    out = plug(c, 3, Cp.B, at(M0 + 1))  # an EV can always plug in: the hold ends, the lock-out stays
    assert c.status(3) is Status.PREPARING
    (end,) = events(out, SessionEvent.RESERVATION_END)
    assert payload(end)["reservation_end"]["reason"] == "GlobalReservationRequirementDropped"  # type: ignore[index]
    decision, _ = c.present_token(3, "BB22", at(M0 + 2))
    assert decision is not None
    assert decision.status is AuthStatus.RESERVED_FOR_OTHER
    plug(c, 1, Cp.B, at(M0 + 3))
    decision, _ = c.present_token(1, "BB22", at(M0 + 4))
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    decision, _ = c.present_token(3, "AA11", at(M0 + 5))  # the reserved driver at the T2 EVSE
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    assert decision.reservation is not None


def test_fault_on_a_reserved_evse_removes_the_reservation() -> None:
    c = charger(("sType2",), ("sType2",))
    reserve(c, reservation_id=7, id_token="AA11", evse_id=2)
    out = c.handle(FaultRaised(cid=2, fault=Fault.RCD_TRIPPED), at(M0 + 1))
    (removed,) = [a for a in out if isinstance(a, ReservationUpdate)]
    assert removed.status is ReservationStatus.REMOVED
    assert payload(events(out, SessionEvent.RESERVATION_END)[0])["reservation_end"] == {
        "reservation_id": 7, "reason": "Cancelled"}
    assert c.status(2) is Status.FAULTED
    assert c.book.get("", 7) is None


def test_expiry_to_the_second_through_the_charger_deadline() -> None:
    c = charger(("sType2",))
    reserve(c, reservation_id=7, id_token="AA11", evse_id=1, expiry_utc=UTC0 + timedelta(seconds=90))
    assert c.next_deadline() == M0 + 90
    assert c.tick(at(M0 + 89.999)) == []
    assert c.status(1) is Status.RESERVED
    out = c.tick(at(M0 + 90))
    assert [a.status for a in out if isinstance(a, ReservationUpdate)] == [ReservationStatus.EXPIRED]
    assert c.status(1) is Status.AVAILABLE
    assert SetLed(cid=1, led=Led.IDLE) in out


def test_scheduled_reservation_shows_nowhere_until_its_start() -> None:
    c = charger(("sType2",))
    reserve(c, reservation_id=7, id_token="AA11", evse_id=1, start_utc=UTC0 + HOUR, expiry_utc=UTC0 + 2 * HOUR)
    assert c.status(1) is Status.AVAILABLE
    assert c.next_deadline() == M0 + 3600
    out = c.tick(at(M0 + 3600))
    assert c.status(1) is Status.RESERVED
    assert events(out, SessionEvent.RESERVATION_START)


def test_token_at_a_busy_evse_is_rejected_without_side_effects() -> None:
    c = charger(("sType2",))
    plug(c, 1, Cp.B, at(M0))
    c.present_token(1, "AA11", at(M0 + 1), token_type="RFID")  # asks the backend (unknown token)
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="AA11", status=LocalAuthStatus.ACCEPTED)])
    decision, _ = c.present_token(1, "AA11", at(M0 + 2))
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    decision, out = c.present_token(1, "AA11", at(M0 + 3))
    assert decision is not None
    assert decision.status is AuthStatus.REJECTED
    assert out == []
    out = c.tick(at(M0 + 6.0))  # the first request times out: the EVSE no longer takes a token
    assert decided(out).status == "Rejected"


# --- a stateful test: the wrong token never gets a session on a reserved EVSE -------------------

TOKENS = ["AA11", "aa11", "BB22", "CC33", "DD44"]


class ReservedChargerMachine(RuleBasedStateMachine):
    """Random reservations (global or specific, some scheduled), cancels, plugs, tokens, faults,
    enable/disable and time over three EVSEs.

    Besides the lock-out, every charger call is one step whose ReservationStart / ReservationEnd
    events are checked (API.md §4, G3): a start only on an EVSE without an open one, an end only on
    one with an open one, and at most one event per EVSE and reservation id in one step, so an
    EVSE that stays held never gets an End followed by a Start (nor a Start and an End again)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = charger(("sType2",), ("sType2",), ("cCCS2", "sType2"))
        self.c.local_list.apply(1, True, [
            LocalAuthEntry(id_token="CC33", status=LocalAuthStatus.ACCEPTED, parent_id_token="FLEET"),
            LocalAuthEntry(id_token="DD44", status=LocalAuthStatus.ACCEPTED),
        ])
        self.now = M0
        self.open: dict[int, int] = {}  # EVSE -> reservation id of its open ReservationStart

    def step(self, out: list[Output]) -> list[Output]:
        seen: set[tuple[int, int]] = set()
        for item in out:
            if not isinstance(item, EmitSessionEvent):
                continue
            if item.event is SessionEvent.RESERVATION_START:
                assert item.cid not in self.open, f"second ReservationStart on EVSE {item.cid}"
                data = payload(item)["reservation_start"]
                assert isinstance(data, dict)
                assert isinstance(data["reservation_id"], int)
                opened = self.open[item.cid] = data["reservation_id"]
            elif item.event is SessionEvent.RESERVATION_END:
                assert item.cid in self.open, f"ReservationEnd without a start on EVSE {item.cid}"
                opened = self.open.pop(item.cid)
            else:
                continue
            assert (item.cid, opened) not in seen, f"EVSE {item.cid}: reservation {opened} blipped in one step"
            seen.add((item.cid, opened))
        return out

    def utc(self) -> datetime:
        return at(self.now).utc

    @rule(rid=st.integers(1, 3), token=st.sampled_from(["AA11", "BB22"]), evse=st.sampled_from([None, 1, 2, 3]),
          parent=st.sampled_from([None, "FLEET"]), minutes=st.integers(1, 120),
          start=st.sampled_from([None, None, 1, 30]))
    def reserve(self, rid: int, token: str, evse: int | None, parent: str | None, minutes: int,
                start: int | None) -> None:
        utc = self.utc()
        self.step(self.c.reserve_now(Reservation(
            reservation_id=rid, id_token=token, evse_id=evse, parent_id_token=parent,
            start_utc=None if start is None else utc + timedelta(minutes=start),
            expiry_utc=utc + timedelta(minutes=minutes + (start or 0))), at(self.now))[2])

    @rule(rid=st.integers(1, 3))
    def cancel(self, rid: int) -> None:
        self.step(self.c.cancel_reservation("", rid, at(self.now))[1])

    @rule(cid=st.integers(1, 3), cp=st.sampled_from([Cp.A, Cp.B, Cp.C]))
    def pilot(self, cid: int, cp: Cp) -> None:
        self.step(self.c.handle(PpChanged(cid=cid, ohms=220.0), at(self.now)))
        self.step(self.c.handle(PilotChanged(cid=cid, cp=cp), at(self.now)))

    @rule(cid=st.integers(1, 3), token=st.sampled_from(TOKENS))
    def token(self, cid: int, token: str) -> None:
        utc = self.utc()
        specific = self.c.book.specific(cid, utc)
        walk_in = self.c.book.walk_in_allowed(cid, utc)
        global_match = self.c.book.match(cid, token, "FLEET" if token == "CC33" else None, utc)
        decision, out = self.c.present_token(cid, token, at(self.now))
        self.step(out)
        if decision is not None and decision.status is AuthStatus.ACCEPTED:
            if specific is not None:
                assert specific.reservation.matches(token, "FLEET" if token == "CC33" else None)
                assert self.c.evses[cid].session.reservation_id == specific.reservation.reservation_id  # type: ignore[union-attr]
            elif not walk_in:
                assert global_match is not None, "a walk-in started where G2 forbids it"

    @rule(token=st.sampled_from(TOKENS))
    def authorize_anywhere(self, token: str) -> None:
        self.step(self.c.authorize_anywhere(token, at(self.now))[2])

    @rule(cid=st.integers(1, 3), active=st.booleans())
    def fault(self, cid: int, active: bool) -> None:
        event = FaultRaised if active else FaultCleared
        self.step(self.c.handle(event(cid=cid, fault=Fault.OVERTEMPERATURE), at(self.now)))

    @rule(cid=st.integers(1, 3), enabled=st.booleans())
    def enable(self, cid: int, enabled: bool) -> None:
        self.step(self.c.set_enabled(cid, enabled, at(self.now)))

    @rule(seconds=st.floats(0.01, 1800))
    def wait(self, seconds: float) -> None:
        target = self.now + seconds
        while (deadline := self.c.next_deadline()) is not None and deadline <= target:
            self.now = max(self.now, deadline)
            self.step(self.c.tick(at(self.now)))
        self.now = target
        self.step(self.c.tick(at(self.now)))

    @invariant()
    def reserved_evses_never_close_for_a_stranger(self) -> None:
        for cid, evse in self.c.evses.items():
            assert Fault.INTERNAL not in evse.faults, repr(evse.last_crash)
            if evse.relay_closed:
                assert evse.session is not None
                assert evse.session.authorized
            if self.c.status(cid) is Status.RESERVED:
                assert evse.state is State.AVAILABLE
                assert not evse.relay_closed

    @invariant()
    def reserved_is_an_open_start(self) -> None:
        for cid in self.c.evses:
            assert self.c.book.reserved(cid) is (cid in self.open), (cid, self.open)


TestReservedCharger = ReservedChargerMachine.TestCase
