"""`firmware.core.why`: every condition that keeps an EVSE from charging, read off the core's facts.

A real `Charger` is brought into each condition by real inputs (its API and the events the shell feeds
it), never by poking private fields; the table checks the exact codes, in order. A random run of real
inputs (hypothesis) checks that the answer agrees with what the machine does: `[]` exactly when it
charges, a closed relay outside CHARGING only in a ramp-down that the list explains, and codes that do
not change between steps (the state document publishes them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError, dataclass
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.core.auth import AuthSettings, BackendAnswer, LocalAuthEntry, LocalAuthStatus, OfflinePolicy
from firmware.core.charger import Charger
from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    DUTY_F,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    PilotChanged,
    PpChanged,
    RcdSelfTested,
    ReplugRequested,
    RequestBackendAuth,
    SessionCancellationReason,
)
from firmware.core.evse import EvseConfig, State
from firmware.core.evse.facts import RcdTest
from firmware.core.instant import Instant
from firmware.core.pilot import Cp
from firmware.core.reservations import Reservation
from firmware.core.why import CODES, Blocker, blocked_by
from tests.support.charger import HOUR, M0, PP_32A_OHMS, T2, UTC0, at, build, plug, reserve

CID = 1
TOKEN = "AA11"  # the local list accepts it


def charger(**config: object) -> Charger:
    """EVSE 1 (a Type 2 socket, `config`), started at M0 with its meter read; the local list accepts AA11."""
    c = build([EvseConfig(cid=CID, connectors=T2, **config)])  # type: ignore[arg-type]
    c.local_list.apply(1, True, [LocalAuthEntry(id_token=TOKEN, status=LocalAuthStatus.ACCEPTED)])
    return c


def t(dt: float = 0.0) -> Instant:
    return at(M0 + dt)


def send(c: Charger, event: Event, dt: float = 0.0) -> None:
    c.handle(event, t(dt))


def waiting(c: Charger, dt: float = 0.0) -> None:
    """A 32 A cable, the EV in B, no token."""
    plug(c, CID, Cp.B, t(dt))


def authorized(c: Charger, dt: float = 0.0) -> None:
    """A 32 A cable, the EV in B, an accepted token: PWM on, SuspendedEV."""
    waiting(c, dt)
    decision, _ = c.present_token(CID, TOKEN, t(dt))
    assert decision is not None


def charging(c: Charger, dt: float = 0.0) -> None:
    authorized(c, dt)
    send(c, PilotChanged(cid=CID, cp=Cp.C), dt)
    assert c.evses[CID].relay_closed


def codes(c: Charger, dt: float = 0.0) -> list[str]:
    return [b.code for b in blocked_by(c, CID, M0 + dt)]


def fault(which: Fault) -> Callable[[Charger], None]:
    return lambda c: send(c, FaultRaised(cid=CID, fault=which))


@dataclass(frozen=True)
class Case:
    recipe: Callable[[Charger], None]
    expected: list[str]
    config: dict[str, object] | None = None


NOTHING = ["no_ev", "not_authorized"]  # an idle EVSE: no EV, no token

CASES: dict[str, Case] = {
    "idle": Case(lambda c: None, NOTHING),
    "charging": Case(charging, []),
    "disabled": Case(lambda c: c.set_enabled(CID, False, t()), ["disabled", *NOTHING]),
    "disabled_while_charging": Case(
        lambda c: (charging(c), c.set_enabled(CID, False, t(1))), ["disabled", "session_finished"]),
    "rcd_tripped": Case(fault(Fault.RCD_TRIPPED), ["rcd_tripped", *NOTHING]),
    "relay_welded": Case(fault(Fault.RELAY_WELDED), ["relay_fault", *NOTHING]),
    "relay_stuck_open": Case(fault(Fault.RELAY_STUCK_OPEN), ["relay_fault", *NOTHING]),
    "over_current": Case(fault(Fault.OVER_CURRENT), ["faulted", *NOTHING]),
    "internal": Case(fault(Fault.INTERNAL), ["faulted", *NOTHING]),
    "overtemperature": Case(fault(Fault.OVERTEMPERATURE), ["overtemperature", *NOTHING]),
    "meter_lost": Case(fault(Fault.METER_LOST), ["meter_lost", *NOTHING]),
    "pilot_fault_reported": Case(fault(Fault.PILOT_FAULT), ["pilot_fault", *NOTHING]),
    "lock_failed": Case(fault(Fault.CONNECTOR_LOCK_FAILED), ["lock_failed", *NOTHING]),
    "output_failed": Case(fault(Fault.OUTPUT_FAILED), ["output_failed", *NOTHING]),
    "cp_shorted_while_charging": Case(
        lambda c: (charging(c), send(c, PilotChanged(cid=CID, cp=Cp.E), 1)), ["pilot_fault", "session_finished"]),
    "diode_fault_f_hold": Case(
        lambda c: (charging(c), send(c, PilotChanged(cid=CID, cp=Cp.C, diode_ok=False), 1)),
        ["fault_hold", "session_finished"]),
    "fault_cleared_within_its_f_hold": Case(
        lambda c: (fault(Fault.RCD_TRIPPED)(c), send(c, FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), 0.1)),
        ["fault_hold", *NOTHING]),
    "rcd_self_test_running": Case(waiting, ["rcd_self_test", "not_authorized"], {"rcd_self_test": True}),
    "rcd_self_test_failed": Case(
        lambda c: (waiting(c), send(c, RcdSelfTested(cid=CID, passed=False), 1)),
        ["rcd_self_test", "session_finished"], {"rcd_self_test": True}),
    "replugging": Case(lambda c: (charging(c), send(c, ReplugRequested(cid=CID), 1)), ["replugging"]),
    "cp_not_read_after_a_replug": Case(
        lambda c: (charging(c), send(c, ReplugRequested(cid=CID, duration_s=1.0), 1), c.tick(t(2))),
        ["cp_not_read"]),
    "token_first": Case(lambda c: c.present_token(CID, TOKEN, t()), ["no_ev"]),
    "pp_invalid": Case(
        lambda c: (authorized(c), send(c, PpChanged(cid=CID, ohms=None), 1)), ["pp_invalid"]),
    "cp_out_of_band": Case(lambda c: (charging(c), send(c, PilotChanged(cid=CID, cp=None), 1)), ["cp_out_of_band"]),
    "ventilation": Case(lambda c: (authorized(c), send(c, PilotChanged(cid=CID, cp=Cp.D), 1)),
                        ["ventilation_unavailable"]),
    "stopped": Case(lambda c: (authorized(c), c.stop_session(CID, SessionCancellationReason.REMOTE, t(1))),
                    ["session_finished"]),
    "stopped_while_charging": Case(
        lambda c: (charging(c), c.stop_session(CID, SessionCancellationReason.REMOTE, t(1))), ["session_finished"]),
    "ev_in_b": Case(authorized, ["ev_not_requesting"]),
    "no_token": Case(waiting, ["not_authorized"]),
    "reserved": Case(lambda c: (reserve(c, reservation_id=7, id_token="RES7", evse_id=CID), waiting(c)),
                     ["not_authorized", "reserved_for_other"]),
    "held_for_a_global_reservation": Case(lambda c: (reserve(c, reservation_id=8, id_token="RES8"), waiting(c)),
                                          ["not_authorized", "reserved_for_other"]),
    "limit_zero": Case(lambda c: (authorized(c), c.set_max_current(CID, 0, t(1))), ["current_limit_zero"]),
    "limit_zero_while_charging": Case(lambda c: (charging(c), c.set_max_current(CID, 0, t(1))),
                                      ["current_limit_zero"]),
    "fallback_zero": Case(lambda c: (authorized(c), c.set_fallback(0.0, t(1))), ["fallback_zero"]),
    "fallback_below_6_a": Case(lambda c: (authorized(c), c.set_fallback(4.0, t(1))), ["fallback_zero"]),
    "pwm_holdoff": Case(lambda c: (authorized(c), c.set_max_current(CID, 16, t(1))),
                        ["ev_not_requesting", "pwm_holdoff"]),
    "tethered_cable_below_6_a": Case(authorized, ["current_limit_zero"],
                                     {"socket_outlet": False, "cable_max_current_a": 5.0}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_condition_gives_its_codes(name: str) -> None:
    case = CASES[name]
    c = charger(**(case.config or {}))
    case.recipe(c)
    assert codes(c, 1) == case.expected
    assert (codes(c, 1) == []) == (c.evses[CID].state is State.CHARGING)


def test_the_meter_s_first_reading() -> None:
    c = Charger([EvseConfig(cid=CID)], new_session_id=lambda: "s-1")
    c.start(t())
    assert codes(c) == ["meter_first_reading", *NOTHING]
    send(c, MeterSampled(cid=CID, energy_wh_import=0.0))
    assert codes(c) == NOTHING


def test_many_conditions_at_once_are_all_listed_most_fundamental_first() -> None:
    c = charger()
    reserve(c, reservation_id=7, id_token="RES7", evse_id=CID)
    waiting(c)
    send(c, PpChanged(cid=CID, ohms=None), 1)
    c.set_max_current(CID, 0, t(1))
    c.set_fallback(0.0, t(1))
    send(c, FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE), 1)
    send(c, FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), 1)
    c.set_enabled(CID, False, t(1))
    assert codes(c, 1) == ["disabled", "rcd_tripped", "overtemperature", "pp_invalid", "session_finished",
                           "current_limit_zero", "fallback_zero"]
    # The fault cancelled the session and ended the reservation (U4); after the unplug, what is left stays.
    send(c, PilotChanged(cid=CID, cp=Cp.F), 2)  # our own F is no news; then X1 and the EV is read
    c.tick(t(2))
    send(c, PilotChanged(cid=CID, cp=Cp.A), 3)
    assert codes(c, 3) == ["disabled", "rcd_tripped", "overtemperature", "no_ev", "not_authorized",
                           "current_limit_zero", "fallback_zero"]
    r = charger()
    reserve(r, reservation_id=7, id_token="RES7", evse_id=CID)
    waiting(r)
    send(r, PpChanged(cid=CID, ohms=None), 1)
    r.set_max_current(CID, 0, t(1))
    assert codes(r, 1) == ["pp_invalid", "not_authorized", "reserved_for_other", "current_limit_zero"]


def test_messages_carry_the_numbers_that_matter() -> None:
    c = charger()
    authorized(c)
    c.set_max_current(CID, 16, t(1.8))  # PWM went on at M0: the change may come at M0 + 5
    (_, holdoff) = blocked_by(c, CID, M0 + 1.8)
    assert holdoff.message == ("the PWM duty change to 26.6 % (16 A) waits 3.2 s more (IEC 61851-1: one change "
                               "per 5 s); the EV still sees 53.3 %")
    c.set_fallback(0.0, t(2))
    (fallback,) = blocked_by(c, CID, M0 + 62)  # PWM is off: no EV request to wait for, no duty change
    assert fallback.message == ("the fallback current is 0 A because the backend is unreachable (the offline "
                                "fallback has applied for 60.0 s)")

    r = charger()
    reserve(r, reservation_id=7, id_token="RES7", evse_id=CID, expiry_utc=UTC0 + timedelta(hours=6, minutes=5))
    (reserved,) = [b for b in blocked_by(r, CID, M0) if b.code == "reserved_for_other"]
    assert reserved.message.startswith("reserved for another token until 14:05 UTC (reservation 7)")
    tomorrow = charger()
    reserve(tomorrow, reservation_id=9, id_token="RES9", evse_id=CID, expiry_utc=UTC0 + timedelta(days=1))
    (reserved,) = [b for b in blocked_by(tomorrow, CID, M0) if b.code == "reserved_for_other"]
    assert "until 2026-11-22 08:00 UTC (reservation 9)" in reserved.message


def test_seconds_left_count_down_and_never_go_negative() -> None:
    c = charger()
    c.present_token(CID, TOKEN, t())  # token first: connection_timeout_s (60 s) runs
    assert blocked_by(c, CID, M0 + 15)[0].message == ("nothing is plugged in (CP reads A); the token's "
                                                      "authorization lapses in 45.0 s")
    send(c, FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), 20)
    send(c, FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), 20.1)
    hold = blocked_by(c, CID, M0 + 20.2)[0]
    assert hold.code == "fault_hold"
    assert "for 0.2 s more" in hold.message
    assert "for 0.0 s more" in blocked_by(c, CID, M0 + 30)[0].message  # the tick is due


def test_a_token_checked_with_the_backend_and_the_offline_policy() -> None:
    c = charger()
    waiting(c)
    decision, out = c.present_token(CID, "UNKNOWN", t(1))
    assert decision is None
    (request,) = [a for a in out if isinstance(a, RequestBackendAuth)]
    (blocker,) = blocked_by(c, CID, M0 + 2)
    assert blocker.code == "not_authorized"
    assert blocker.message == f"a token is being checked with the backend (request {request.request_id}, answer " \
                              "due in 4.0 s)"
    c.backend_auth_answer(request.request_id, BackendAnswer(status=LocalAuthStatus.INVALID), t(2))
    c.online = False
    (blocker,) = blocked_by(c, CID, M0 + 2)
    assert blocker.message.endswith("the backend is offline, so the offline policy local_list_only decides")


def test_a_held_token_is_no_authorization_blocker() -> None:
    c = charger()
    evse_id, decision, _ = c.authorize_anywhere(TOKEN, t())
    assert evse_id is None
    assert decision is not None
    assert codes(c) == ["no_ev"]
    c.tick(t(61))  # the held token lapsed
    assert codes(c, 61) == NOTHING


def test_pilot_fault_words_follow_the_reading() -> None:
    c = charger()
    charging(c)
    send(c, PilotChanged(cid=CID, cp=Cp.E), 1)
    assert "state E" in blocked_by(c, CID, M0 + 1)[0].message
    c.tick(t(2))  # F served: X1 while the short lasts; CP is re-read
    assert "latched until a clean CP reading" in blocked_by(c, CID, M0 + 2)[0].message
    send(c, PilotChanged(cid=CID, cp=Cp.F), 2.1)  # -12 V under X1: not ours
    assert "-12 V that the EVSE does not drive" in blocked_by(c, CID, M0 + 2.1)[0].message
    send(c, PilotChanged(cid=CID, cp=None, lasting=True), 2.2)
    assert "outside every band for more than 0.5 s" in blocked_by(c, CID, M0 + 2.2)[0].message
    d = charger()
    send(d, FaultRaised(cid=CID, fault=Fault.PILOT_FAULT))
    send(d, FaultCleared(cid=CID, fault=Fault.PILOT_FAULT), 1)
    waiting(d, 2)
    send(d, PilotChanged(cid=CID, cp=Cp.E), 3)
    send(d, FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE), 3)
    c.tick(t(4))
    assert [b.code for b in blocked_by(d, CID, M0 + 4)][:2] == ["overtemperature", "pilot_fault"]


def test_an_internal_fault_names_the_crash() -> None:
    def broken_ids() -> str:
        raise RuntimeError("boom")

    c = Charger([EvseConfig(cid=CID, has_meter=False)], new_session_id=broken_ids)  # sessions start at once
    c.start(t())
    waiting(c)  # the session id cannot be made: the machine crashes into its internal fault, fail-safe
    (crash, *_) = blocked_by(c, CID, M0)
    assert crash == Blocker(code="faulted", message="faulted: an internal error of the EVSE machine; CP stays at F "
                                                    "until it is cleared (RuntimeError: boom)")


def test_unknown_evse_and_bad_blockers_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown EVSE id 9"):
        blocked_by(charger(), 9, M0)
    with pytest.raises(ValueError, match="unknown blocker code"):
        Blocker(code="nope", message="x")
    with pytest.raises(ValueError, match="needs a message"):
        Blocker(code="disabled", message="")
    with pytest.raises(FrozenInstanceError):
        Blocker(code="disabled", message="x").code = "no_ev"  # type: ignore[misc]


def test_the_views_why_reads_are_read_only_and_follow_the_inputs() -> None:
    c = charger(rcd_self_test=True)
    m = c.evses[CID]
    assert (m.pp_max_a, m.pilot_reading, m.limit_a, m.offer_limit_a) == (None, None, 32.0, 0.0)
    assert (m.f_hold_until, m.replug_until, m.duty_change_due, m.rcd_test) == (None, None, None, RcdTest.UNTESTED)
    assert not m.pilot_fault
    assert m.disable_reason is SessionCancellationReason.REMOTE
    waiting(c, 1)
    assert m.rcd_test is RcdTest.RUNNING
    send(c, RcdSelfTested(cid=CID, passed=True), 1)
    assert m.rcd_test is RcdTest.PASSED
    assert (m.pp_max_a, m.offer_limit_a) == (32, 32.0)
    assert m.pilot_reading is not None
    assert m.pilot_reading.cp is Cp.B
    c.present_token(CID, TOKEN, t(1))
    c.set_max_current(CID, 16, t(2))
    assert (m.limit_a, m.duty_change_due) == (16.0, M0 + 1 + 5.0)
    send(c, FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), 3)
    assert m.f_hold_until == M0 + 3 + 0.3
    assert m.duty_pct == DUTY_F
    c.set_enabled(CID, False, t(3))
    assert m.disable_reason is SessionCancellationReason.REMOTE
    assert c.fallback_a is None
    assert c.fallback_since is None
    c.set_fallback(10.0, t(4))
    c.set_fallback(8.0, t(5))
    assert (c.fallback_a, c.fallback_since) == (8.0, M0 + 4)
    c.set_fallback(None, t(6))
    assert (c.fallback_a, c.fallback_since) == (None, None)
    assert c.last_instant == t(6)
    for name in ("pp_max_a", "pilot_reading", "pilot_fault", "f_hold_until", "replug_until", "duty_change_due",
                 "rcd_test", "limit_a", "offer_limit_a", "disable_reason"):
        with pytest.raises(AttributeError):
            setattr(m, name, None)
    for name in ("last_instant", "fallback_a", "fallback_since"):
        with pytest.raises(AttributeError):
            setattr(c, name, None)
    with pytest.raises(AttributeError):
        c.tokens.held = ()  # type: ignore[misc]


def test_replug_until_is_the_replug_s_end() -> None:
    c = charger()
    charging(c)
    send(c, ReplugRequested(cid=CID, duration_s=2.0), 1)
    assert c.evses[CID].replug_until == M0 + 3


def test_codes_do_not_depend_on_the_time_between_steps() -> None:
    for name, case in CASES.items():
        c = charger(**(case.config or {}))
        case.recipe(c)
        deadline = c.next_deadline()
        last = c.last_instant.mono
        later = last + 1000.0 if deadline is None else (last + deadline) / 2
        assert codes(c, last - M0) == codes(c, later - M0), name


# --- random runs of real inputs -----------------------------------------------------------------

TOKENS = [TOKEN, "UNKNOWN", "RES7"]
FAULTS = [f for f in Fault if f is not Fault.INTERNAL]

clean_cp = st.builds(PilotChanged, cid=st.just(CID), cp=st.sampled_from([Cp.A, Cp.B, Cp.C, Cp.B, Cp.C, Cp.C]))
odd_cp = st.builds(PilotChanged, cid=st.just(CID), cp=st.sampled_from([Cp.D, Cp.E, Cp.F, None]),
                   diode_ok=st.sampled_from([True, True, False]), lasting=st.booleans())
machine_events = st.one_of(
    clean_cp, clean_cp, clean_cp, odd_cp,
    st.builds(PpChanged, cid=st.just(CID), ohms=st.sampled_from([None, PP_32A_OHMS, PP_32A_OHMS, 680.0, 1500.0])),
    st.builds(FaultRaised, cid=st.just(CID), fault=st.sampled_from(FAULTS)),
    st.builds(FaultCleared, cid=st.just(CID), fault=st.sampled_from(FAULTS)),
    st.builds(FaultCleared, cid=st.just(CID), fault=st.sampled_from(FAULTS)),
    st.builds(MeterSampled, cid=st.just(CID), energy_wh_import=st.floats(0, 1e6)),
    st.builds(RcdSelfTested, cid=st.just(CID), passed=st.sampled_from([True, True, True, False])),
    st.builds(ReplugRequested, cid=st.just(CID), duration_s=st.floats(0.3, 5.0)),
)
commands = st.one_of(
    st.tuples(st.just("token"), st.sampled_from([TOKEN, TOKEN, *TOKENS])),
    st.tuples(st.just("anywhere"), st.sampled_from(TOKENS)),
    st.tuples(st.just("answer"), st.sampled_from(list(LocalAuthStatus))),
    st.tuples(st.just("stop"), st.none()),
    st.tuples(st.just("enable"), st.sampled_from([True, True, False])),
    st.tuples(st.just("limit"), st.sampled_from([0.0, 6.0, 16.0, 32.0])),
    st.tuples(st.just("fallback"), st.sampled_from([None, None, 0.0, 4.0, 10.0])),
    st.tuples(st.just("online"), st.booleans()),
    st.tuples(st.just("reserve"), st.sampled_from([CID, None])),
)
inputs = st.one_of(machine_events, machine_events, commands)
#: A way into charging (meter, cable, EV in B, token, C) that a run may start with, so that the random
#: inputs after it also pull a charging EVSE apart.
PRELUDE: list[Event | tuple[str, object]] = [
    MeterSampled(cid=CID, energy_wh_import=0.0), PpChanged(cid=CID, ohms=PP_32A_OHMS),
    PilotChanged(cid=CID, cp=Cp.B), RcdSelfTested(cid=CID, passed=True), ("token", TOKEN),
    PilotChanged(cid=CID, cp=Cp.C),
]
time_steps = st.one_of(st.just(0.0), st.floats(0.001, 0.5), st.floats(0.5, 10.0), st.floats(10.0, 90.0))


def apply(c: Charger, item: Event | tuple[str, object], when: Instant, pending: list[str]) -> None:
    """One real input: an event for the machine, or an operation of the charger's API."""
    if isinstance(item, Event):
        try:
            c.handle(item, when)
        except IllegalTransition:
            pass  # refused: changes nothing
        return
    op, arg = item
    if op in ("token", "anywhere"):
        out = c.present_token(CID, str(arg), when)[1] if op == "token" else c.authorize_anywhere(str(arg), when)[2]
        pending.extend(a.request_id for a in out if isinstance(a, RequestBackendAuth))
    elif op == "answer" and pending:
        c.backend_auth_answer(pending.pop(0), BackendAnswer(status=arg), when)  # type: ignore[arg-type]
    elif op == "stop":
        c.stop_session(CID, SessionCancellationReason.REMOTE, when)
    elif op == "enable":
        c.set_enabled(CID, bool(arg), when)
    elif op == "limit":
        c.set_max_current(CID, float(arg), when)  # type: ignore[arg-type]
    elif op == "fallback":
        c.set_fallback(arg, when)  # type: ignore[arg-type]
    elif op == "online":
        c.online = bool(arg)
    elif op == "reserve":
        c.reserve_now(Reservation(reservation_id=7, id_token="RES7", evse_id=arg,  # type: ignore[arg-type]
                                  expiry_utc=when.utc + HOUR), when)


def check(c: Charger) -> None:
    """What `why` says agrees with what the machine does, at the time of the last step and until the next."""
    evse = c.evses[CID]
    now = c.last_instant.mono
    found = [b.code for b in blocked_by(c, CID, now)]
    assert found == sorted(set(found), key=CODES.index)
    assert (found == []) == (evse.state is State.CHARGING), (found, evse.state)
    if evse.relay_closed and evse.state is not State.CHARGING:
        assert evse.state in (State.PAUSING, State.STOPPING)  # the ramp-down (<= 6 s), explained by `found`
    assert ("disabled" in found) == (not evse.enabled)
    assert ("no_ev" in found) == (not evse.plugged)
    assert ("meter_first_reading" in found) == (not evse.meter_ready)
    if evse.faults or evse.state is State.FAULTED:
        assert set(found) & {"rcd_tripped", "relay_fault", "faulted", "overtemperature", "meter_lost",
                             "pilot_fault", "rcd_self_test", "lock_failed", "output_failed", "fault_hold"}
    deadline = c.next_deadline()
    later = now + 1000.0 if deadline is None else now + (deadline - now) / 2
    if later > now:
        assert [b.code for b in blocked_by(c, CID, later)] == found


def run_until(c: Charger, until: float) -> None:
    for _ in range(200):
        deadline = c.next_deadline()
        if deadline is None or deadline > until:
            return
        c.tick(at(max(deadline, c.last_instant.mono)))
        check(c)
    raise AssertionError("deadlines do not advance")


@settings(max_examples=300)
@given(
    config=st.builds(dict, socket_outlet=st.booleans(), ventilation_available=st.booleans(),
                     rcd_self_test=st.booleans(), has_meter=st.booleans()),
    policy=st.sampled_from(list(OfflinePolicy)),
    prelude=st.booleans(),
    steps=st.lists(st.tuples(time_steps, inputs), max_size=40),
)
def test_why_agrees_with_the_machine_for_any_inputs(
    config: dict[str, object], policy: OfflinePolicy, prelude: bool,
    steps: list[tuple[float, Event | tuple[str, object]]],
) -> None:
    c = Charger([EvseConfig(cid=CID, connectors=T2, **config)],  # type: ignore[arg-type]
                new_session_id=iter(f"s-{i}" for i in range(10_000)).__next__,
                auth=AuthSettings(offline_policy=policy))
    c.local_list.apply(1, True, [LocalAuthEntry(id_token=TOKEN, status=LocalAuthStatus.ACCEPTED)])
    now = M0
    c.start(at(now))
    check(c)
    pending: list[str] = []
    for dt, item in [(0.01, item) for item in PRELUDE if prelude] + steps:
        run_until(c, now + dt)
        now = max(now + dt, c.last_instant.mono)
        apply(c, item, at(now), pending)
        check(c)
