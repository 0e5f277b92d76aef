"""Every row of DESIGN.md's timing table as a deadline in the core, tested with `now` on either side
(STYLE.md B7; IEC 61851-1:2017 Annex A, Table A.6). No sleeps: time is injected."""

from __future__ import annotations

import pytest

from firmware.core.events import (
    DUTY_F,
    DUTY_X1,
    AuthorizationGranted,
    CurrentLimitChanged,
    EmitSessionEvent,
    Error,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    OpenRelay,
    PpChanged,
    ReplugRequested,
    SessionEvent,
    SetPwm,
    StopRequested,
)
from firmware.core.evse import EvseConfig, EvseMachine, State
from firmware.core.pilot import Cp
from tests.core.helpers import AUTH, CID, at, cp, machine, session_events

EPS = 1e-3


@pytest.mark.parametrize("start", [State.CHARGING])
@pytest.mark.parametrize(("command", "ramp_state", "end_state"), [
    (StopRequested(cid=CID), State.STOPPING, State.FINISHING),
    (CurrentLimitChanged(cid=CID, current_a=0), State.PAUSING, State.SUSPENDED_EVSE),
])
def test_ev_staying_in_c_is_cut_after_6_s_and_counted(start: State, command: object, ramp_state: State,
                                                        end_state: State) -> None:
    """Table A.6: EVSE ends charging, EV stays in C: X1, wait up to 6 s for B, then open under load."""
    m, now = at(start)
    actions = m.handle(command, now)  # type: ignore[arg-type]
    assert SetPwm(cid=CID, duty_pct=DUTY_X1) in actions
    assert m.relay_closed
    assert m.next_deadline() == pytest.approx(now + 6.0)
    assert m.tick(now + 6.0 - EPS) == []
    assert m.state is ramp_state
    assert m.relay_closed
    actions = m.tick(now + 6.0)
    assert actions[0] == OpenRelay(cid=CID, under_load=True)
    assert m.state is end_state
    assert not m.relay_closed
    assert m.counters.openings_under_load == 1


def test_close_on_b_to_c_is_immediate_and_counted() -> None:
    """Table A.6: close within 3 s of B->C with PWM on and authorized; we close on the same event."""
    m, now = at(State.SUSPENDED_EV)
    assert m.pwm_on
    assert not m.relay_closed
    m.handle(cp(Cp.C), now)
    assert m.relay_closed
    assert m.counters.contactor_cycles == 1


def test_no_close_in_c_without_pwm() -> None:
    """C1 (EV in C, no PWM, e.g. simplified mode before the token): the relay stays open."""
    m, now = at(State.AVAILABLE)
    m.handle(PpChanged(cid=CID, ohms=220.0), now)
    m.handle(cp(Cp.C), now + 1)
    assert m.state is State.WAITING_FOR_AUTH
    assert not m.relay_closed
    assert m.duty_pct == DUTY_X1
    m.handle(AUTH, now + 2)  # simplified mode: PWM on and close at once
    assert m.pwm_on
    assert m.relay_closed
    assert m.state is State.CHARGING


def test_f_is_held_300_ms_from_the_fault_then_x1_while_it_lasts() -> None:
    """Table A.6: after a fault, hold F for >= 300 ms; a lasting fault then gets X1, relay open (EVerest)."""
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), now)
    assert m.next_deadline() == pytest.approx(now + 0.3)  # the F -> X1 switch
    assert m.tick(now + 0.3 - EPS) == []
    assert m.duty_pct == DUTY_F
    assert m.state is State.FAULTED
    assert m.tick(now + 0.3) == [SetPwm(cid=CID, duty_pct=DUTY_X1)]
    assert m.state is State.FAULTED
    assert not m.relay_closed
    assert m.next_deadline() is None  # nothing more is due while the fault lasts
    m.handle(FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), now + 5)
    assert m.state is State.AVAILABLE
    assert m.duty_pct == DUTY_X1


def test_a_fault_shorter_than_300_ms_still_holds_f_for_300_ms() -> None:
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.PILOT_FAULT), now)
    m.handle(FaultCleared(cid=CID, fault=Fault.PILOT_FAULT), now + 0.001)
    assert m.tick(now + 0.3) == []
    assert m.duty_pct == DUTY_F
    m.tick(now + 0.301)
    assert m.duty_pct == DUTY_X1


def test_diode_fault_holds_f_then_waits_for_unplug() -> None:
    """A.2.2: missing diode -> open, F for 300 ms; the session is over, so no PWM until a new one."""
    m, now = at(State.CHARGING)
    m.handle(cp(Cp.C, diode_ok=False), now)
    assert m.state is State.FAULTED
    assert not m.relay_closed
    assert m.tick(now + 0.3 - EPS) == []
    assert m.duty_pct == DUTY_F
    m.tick(now + 0.3)
    assert m.duty_pct == DUTY_X1
    assert m.state is State.FINISHING
    assert m.cp is None
    actions = m.handle(cp(Cp.A), now + 0.4)
    assert session_events(actions) == [SessionEvent.SESSION_FINISHED]
    assert m.state is State.AVAILABLE


def test_pwm_changes_at_most_every_5_s() -> None:
    """Table A.6: at most one duty change per 5 s; the deferred change happens at the 5 s mark."""
    m, now = at(State.CHARGING)
    m.handle(CurrentLimitChanged(cid=CID, current_a=16), now)
    assert m.duty_pct == 53.3  # PWM went on < 5 s ago
    on_at = now - 0.01  # the recipe's AUTH switched PWM on one step before CHARGING
    assert m.next_deadline() == pytest.approx(on_at + 5.0)
    assert m.tick(on_at + 5.0 - EPS) == []
    assert m.tick(on_at + 5.0) == [SetPwm(cid=CID, duty_pct=26.6)]
    m.handle(CurrentLimitChanged(cid=CID, current_a=20), on_at + 5.5)
    assert m.duty_pct == 26.6
    assert m.next_deadline() == pytest.approx(on_at + 10.0)
    assert m.tick(on_at + 10.0) == [SetPwm(cid=CID, duty_pct=33.3)]


def test_switching_pwm_off_is_never_delayed() -> None:
    m, now = at(State.CHARGING)
    actions = m.handle(CurrentLimitChanged(cid=CID, current_a=0), now)
    assert SetPwm(cid=CID, duty_pct=DUTY_X1) in actions


def test_token_before_plug_in_lapses_after_connection_timeout() -> None:
    """API.md §5: no EV within auth.connection_timeout_s -> SessionCancelled(Other) + SessionFinished."""
    m, now = at(State.AVAILABLE)
    m.handle(AUTH, now)
    assert m.next_deadline() == pytest.approx(now + 60.0)
    assert m.tick(now + 60.0 - EPS) == []
    assert m.state is State.WAITING_FOR_EV
    actions = m.tick(now + 60.0)
    cancelled = [a for a in actions if isinstance(a, EmitSessionEvent)]
    assert [a.event for a in cancelled] == [SessionEvent.SESSION_CANCELLED, SessionEvent.SESSION_FINISHED]
    assert cancelled[0].reason == "Other"
    assert m.state is State.AVAILABLE


def test_plug_in_before_the_timeout_keeps_the_session() -> None:
    m = machine()
    m.handle(AuthorizationGranted(cid=CID, id_token="t"), 0.0)
    m.handle(PpChanged(cid=CID, ohms=680.0), 59.0)
    m.handle(cp(Cp.B), 59.5)
    assert m.next_deadline() is None
    assert m.state is State.SUSPENDED_EV
    assert m.offered_a == 20.0  # the 680 Ohm cable limits a 32 A EVSE to 20 A (Table B.2)


def _charging_at_16a() -> tuple[EvseMachine, float]:
    m, now = at(State.CHARGING, max_current_a=16.0)
    return m, now


def test_soft_overcurrent_stops_after_its_timeout() -> None:
    """Measured current above the signalled limit + tolerance for overcurrent_timeout_s -> OverCurrent."""
    m, now = _charging_at_16a()
    over = MeterSampled(cid=CID, energy_wh_import=1.0, currents_a=(18.2, 10.0, 10.0))  # > 16*1.1+0.5
    m.handle(over, now)
    assert m.next_deadline() == pytest.approx(now + 7.0)
    assert m.tick(now + 7.0 - EPS) == []
    assert m.state is State.CHARGING
    actions = m.tick(now + 7.0)
    notes = [a for a in actions if isinstance(a, EmitSessionEvent)]
    assert notes[0].event is SessionEvent.ERROR
    assert notes[0].error is Error.OVER_CURRENT
    assert notes[1].event is SessionEvent.SESSION_CANCELLED
    assert notes[1].reason == "EmergencyStop"
    assert m.state is State.STOPPING


def test_current_within_tolerance_resets_the_overcurrent_timer() -> None:
    m, now = _charging_at_16a()
    m.handle(MeterSampled(cid=CID, energy_wh_import=1.0, currents_a=(18.2,)), now)
    m.handle(MeterSampled(cid=CID, energy_wh_import=2.0, currents_a=(18.0,)), now + 6.0)
    assert m.next_deadline() is None
    m.tick(now + 7.0)
    assert m.state is State.CHARGING


def test_replug_holds_f_for_its_duration_then_offers_again() -> None:
    m, now = at(State.CHARGING)
    m.handle(ReplugRequested(cid=CID, duration_s=3.0), now)
    assert m.duty_pct == DUTY_F
    assert not m.relay_closed
    assert m.tick(now + 3.0 - EPS) == []
    actions = m.tick(now + 3.0)
    assert session_events(actions) == [SessionEvent.REPLUG_FINISHED]
    assert m.pwm_on
    assert m.state is State.SUSPENDED_EV
    assert m.cp is None
    actions = m.handle(cp(Cp.C), now + 3.1)
    assert m.relay_closed
    assert session_events(actions) == [SessionEvent.CHARGING_RESUMED]


def test_a_bug_inside_the_machine_ends_fail_safe() -> None:
    """STYLE.md B2: any exception inside the core forces FAULTED and returns fail-safe actions."""

    def broken_ids() -> str:
        raise RuntimeError("boom")

    m = EvseMachine(EvseConfig(cid=CID, has_meter=False), new_session_id=broken_ids)  # sessions start at once
    m.tick(0.0)
    actions = m.handle(cp(Cp.B), 1.0)
    assert actions[:2] == [OpenRelay(cid=CID, under_load=False), SetPwm(cid=CID, duty_pct=DUTY_F)]
    assert m.state is State.FAULTED
    assert Fault.INTERNAL in m.faults
    assert m.tick(100.0) == []
    assert m.state is State.FAULTED


@pytest.mark.parametrize(("field", "value"), [
    ("fault_hold_s", 0.2), ("stop_timeout_s", 6.5), ("pwm_min_interval_s", 4.0), ("max_current_a", 5.0),
    ("max_current_a", 81.0), ("phases", 2), ("cid", 0), ("connection_timeout_s", 0.0),
])
def test_config_refuses_values_outside_the_standard(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        EvseConfig(**{"cid": 1, field: value})  # type: ignore[arg-type]
