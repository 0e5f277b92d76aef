"""Table-driven transitions of the EVSE machine, and the exhaustive legality check (STYLE.md B7).

Each row: the state a recipe of real inputs reached, one more input, the state it must settle in,
and the exact actions, in order. IEC 61851-1 references are in firmware/core/evse/machine.py.
"""

from __future__ import annotations

import pytest

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    DUTY_F,
    DUTY_X1,
    AuthorizationGranted,
    AuthorizationRefused,
    CloseRelay,
    CurrentLimitChanged,
    EmitSessionEvent,
    Error,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    Led,
    MeterSampled,
    OpenRelay,
    PilotChanged,
    PpChanged,
    RcdSelfTested,
    ReplugRequested,
    SessionCancellationReason,
    SessionEvent,
    SetEnabled,
    SetLed,
    SetLock,
    SetPwm,
    StopRequested,
)
from firmware.core.evse import EVENT_TYPES, TRANSITIONS, EvseMachine, State
from firmware.core.pilot import Cp
from tests.core.helpers import AUTH, CID, at, cp

S = State
DUTY_32A = 53.3
SESSION = "session-1"


def note(event: SessionEvent, uuid: str = SESSION, **fields: object) -> EmitSessionEvent:
    return EmitSessionEvent(cid=CID, uuid=uuid, event=event, **fields)  # type: ignore[arg-type]


def energy(event: SessionEvent, uuid: str = SESSION, **fields: object) -> EmitSessionEvent:
    return note(event, uuid, energy_wh_import=0.0, energy_wh_export=0.0, **fields)


ROWS: list[tuple[str, State, Event, State, list[object]]] = [
    # --- plug-in and authorization, token after plug-in (IEC 61851-1 Table A.6, sequences 1-2)
    ("plug in", S.AVAILABLE, cp(Cp.B), S.WAITING_FOR_AUTH, [
        SetLed(cid=CID, led=Led.WAITING),
        energy(SessionEvent.SESSION_STARTED, reason="EVConnected"),
        note(SessionEvent.AUTH_REQUIRED),
    ]),
    ("simplified mode A->C", S.AVAILABLE, cp(Cp.C), S.WAITING_FOR_AUTH, [
        SetLed(cid=CID, led=Led.WAITING),
        energy(SessionEvent.SESSION_STARTED, reason="EVConnected"),
        note(SessionEvent.AUTH_REQUIRED),
    ]),
    ("token after plug-in: PWM on (B2)", S.WAITING_FOR_AUTH, AUTH, S.SUSPENDED_EV, [
        SetPwm(cid=CID, duty_pct=DUTY_32A), SetLock(cid=CID, locked=True), SetLed(cid=CID, led=Led.PAUSED),
    ]),
    ("refused token changes nothing", S.WAITING_FOR_AUTH, AuthorizationRefused(cid=CID, id_token="x"),
     S.WAITING_FOR_AUTH, []),
    ("reservation lock-out is reported", S.WAITING_FOR_AUTH,
     AuthorizationRefused(cid=CID, id_token="x", reservation_mismatch=True), S.WAITING_FOR_AUTH,
     [note(SessionEvent.RESERVATION_AUTHTOKEN_MISMATCH)]),
    # --- token before plug-in (API.md §5)
    ("token before plug-in", S.AVAILABLE, AUTH, S.WAITING_FOR_EV, [
        SetLed(cid=CID, led=Led.WAITING),
        energy(SessionEvent.SESSION_STARTED, reason="Authorized", id_token="04A2B3C4"),
    ]),
    ("EV arrives after the token", S.WAITING_FOR_EV, PpChanged(cid=CID, ohms=220.0), S.WAITING_FOR_EV, []),
    ("stop before the EV came", S.WAITING_FOR_EV, StopRequested(cid=CID), S.AVAILABLE, [
        SetLed(cid=CID, led=Led.IDLE),
        energy(SessionEvent.SESSION_CANCELLED, reason="Remote"),
        energy(SessionEvent.SESSION_FINISHED),
    ]),
    # --- charging (sequence 7: close within 3 s of B->C; we close on the same event)
    ("B->C closes the relay", S.SUSPENDED_EV, cp(Cp.C), S.CHARGING, [
        SetLed(cid=CID, led=Led.CHARGING), CloseRelay(cid=CID), note(SessionEvent.CHARGING_STARTED),
    ]),
    ("D without ventilation: no power", S.SUSPENDED_EV, cp(Cp.D), S.SUSPENDED_EVSE, [
        SetPwm(cid=CID, duty_pct=DUTY_X1), note(SessionEvent.ERROR, error=Error.VENTILATION_NOT_AVAILABLE),
    ]),
    # --- opening reactions: on the same event
    ("C->B opens", S.CHARGING, cp(Cp.B), S.SUSPENDED_EV, [
        OpenRelay(cid=CID, under_load=False), SetLed(cid=CID, led=Led.PAUSED),
        note(SessionEvent.CHARGING_PAUSED_EV),
    ]),
    ("C->A opens under load and finishes", S.CHARGING, cp(Cp.A), S.AVAILABLE, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_X1),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.IDLE),
        energy(SessionEvent.SESSION_FINISHED),
    ]),
    ("C->E opens and drives F", S.CHARGING, cp(Cp.E), S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.FAULT_PILOT),
        note(SessionEvent.ERROR, error=Error.PILOT_FAULT),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    ("unexpected -12 V opens", S.CHARGING, cp(Cp.F), S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.FAULT_PILOT),
        note(SessionEvent.ERROR, error=Error.PILOT_FAULT),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    ("out-of-band CP opens, no fault yet", S.CHARGING, cp(None), S.SUSPENDED_EV, [
        OpenRelay(cid=CID, under_load=True), SetLed(cid=CID, led=Led.PAUSED),
        note(SessionEvent.CHARGING_PAUSED_EV),
    ]),
    ("lasting out-of-band CP is a pilot fault", S.CHARGING, cp(None, lasting=True), S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.FAULT_PILOT),
        note(SessionEvent.ERROR, error=Error.PILOT_FAULT),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    ("diode fault opens", S.CHARGING, cp(Cp.C, diode_ok=False), S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.FAULT),
        note(SessionEvent.ERROR, error=Error.CAR_DIODE_FAULT),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    ("RCD trip opens", S.CHARGING, FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.FAULT_RCD),
        note(SessionEvent.ERROR, error=Error.RCD),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    ("welded relay keeps the connector locked", S.CHARGING, FaultRaised(cid=CID, fault=Fault.RELAY_WELDED),
     S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F), SetLed(cid=CID, led=Led.FAULT_RELAY),
        note(SessionEvent.ERROR, error=Error.RELAIS),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    ("PP lost on a socket outlet opens", S.CHARGING, PpChanged(cid=CID, ohms=None), S.SUSPENDED_EVSE, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_X1), SetLed(cid=CID, led=Led.PAUSED),
        note(SessionEvent.CHARGING_PAUSED_EVSE),
    ]),
    # --- EVSE-side stop and pause while the EV stays in C: X1, relay kept for up to 6 s
    ("stop while charging ramps down", S.CHARGING, StopRequested(cid=CID, reason=SessionCancellationReason.LOCAL),
     S.STOPPING, [
        SetPwm(cid=CID, duty_pct=DUTY_X1), SetLed(cid=CID, led=Led.FINISHING),
        energy(SessionEvent.SESSION_CANCELLED, reason="Local"),
    ]),
    ("PP lost during the ramp-down opens at once", S.STOPPING, PpChanged(cid=CID, ohms=None), S.FINISHING, [
        OpenRelay(cid=CID, under_load=True), SetLock(cid=CID, locked=False),
    ]),
    ("EV answers the stop with B", S.STOPPING, cp(Cp.B), S.FINISHING, [
        OpenRelay(cid=CID, under_load=False), SetLock(cid=CID, locked=False),
    ]),
    ("limit 0 while charging ramps down", S.CHARGING, CurrentLimitChanged(cid=CID, current_a=0), S.PAUSING, [
        SetPwm(cid=CID, duty_pct=DUTY_X1), SetLed(cid=CID, led=Led.PAUSED),
        note(SessionEvent.CHARGING_PAUSED_EVSE),
    ]),
    ("EV answers the pause with B", S.PAUSING, cp(Cp.B), S.SUSPENDED_EVSE, [OpenRelay(cid=CID, under_load=False)]),
    ("limit back while pausing", S.PAUSING, CurrentLimitChanged(cid=CID, current_a=16), S.CHARGING, [
        SetPwm(cid=CID, duty_pct=26.6), SetLed(cid=CID, led=Led.CHARGING), note(SessionEvent.CHARGING_RESUMED),
    ]),
    ("resume after pause", S.SUSPENDED_EVSE, CurrentLimitChanged(cid=CID, current_a=32), S.SUSPENDED_EV, [
        SetPwm(cid=CID, duty_pct=DUTY_32A),
    ]),
    ("disable while charging stops first", S.CHARGING, SetEnabled(cid=CID, enabled=False), S.STOPPING, [
        SetPwm(cid=CID, duty_pct=DUTY_X1), SetLed(cid=CID, led=Led.FINISHING),
        note(SessionEvent.DISABLED), energy(SessionEvent.SESSION_CANCELLED, reason="Remote"),
    ]),
    ("disable when idle", S.AVAILABLE, SetEnabled(cid=CID, enabled=False), S.UNAVAILABLE, [
        SetLed(cid=CID, led=Led.UNAVAILABLE), note(SessionEvent.DISABLED, uuid=""),
    ]),
    ("enable again", S.UNAVAILABLE, SetEnabled(cid=CID, enabled=True), S.AVAILABLE, [
        SetLed(cid=CID, led=Led.IDLE), note(SessionEvent.ENABLED, uuid=""),
    ]),
    ("enable twice is a no-op", S.AVAILABLE, SetEnabled(cid=CID, enabled=True), S.AVAILABLE, []),
    ("plug-in while disabled starts no session", S.UNAVAILABLE, cp(Cp.B), S.UNAVAILABLE, []),
    # --- finishing and unplug (SessionFinished always comes at unplug)
    ("unplug after stop", S.FINISHING, cp(Cp.A), S.AVAILABLE, [
        SetLed(cid=CID, led=Led.IDLE), energy(SessionEvent.SESSION_FINISHED),
    ]),
    ("stop before the token", S.WAITING_FOR_AUTH, StopRequested(cid=CID), S.FINISHING, [
        SetLed(cid=CID, led=Led.FINISHING), energy(SessionEvent.SESSION_CANCELLED, reason="Remote"),
    ]),
    # --- faults
    ("fault while idle", S.AVAILABLE, FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE), S.FAULTED, [
        SetPwm(cid=CID, duty_pct=DUTY_F), SetLed(cid=CID, led=Led.FAULT_OVERTEMPERATURE),
        note(SessionEvent.ERROR, uuid="", error=Error.OVERTEMPERATURE),
    ]),
    ("same fault twice is one fault", S.FAULTED, FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), S.FAULTED, []),
    # the RCD's pattern gives way to the plain fault pattern while F is still held after the clear
    ("cleared fault still holds F", S.FAULTED, FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), S.FAULTED,
     [SetLed(cid=CID, led=Led.FAULT)]),
    ("meter lost while charging", S.CHARGING, FaultRaised(cid=CID, fault=Fault.METER_LOST), S.FAULTED, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F),
        SetLock(cid=CID, locked=False), SetLed(cid=CID, led=Led.FAULT_METER),
        note(SessionEvent.ERROR, error=Error.METER_LOST),
        energy(SessionEvent.SESSION_CANCELLED, reason="EmergencyStop"),
    ]),
    # --- replug
    ("replug drives F", S.CHARGING, ReplugRequested(cid=CID), S.REPLUGGING, [
        OpenRelay(cid=CID, under_load=True), SetPwm(cid=CID, duty_pct=DUTY_F), SetLed(cid=CID, led=Led.PAUSED),
        note(SessionEvent.REPLUG_STARTED), note(SessionEvent.CHARGING_PAUSED_EVSE),
    ]),
    ("stop during replug: F runs its course", S.REPLUGGING, StopRequested(cid=CID), S.REPLUGGING, [
        SetLock(cid=CID, locked=False), energy(SessionEvent.SESSION_CANCELLED, reason="Remote"),
    ]),
    ("readings while driving F are stale", S.REPLUGGING, cp(Cp.A), S.REPLUGGING, []),
    # --- meter samples only record energy
    ("meter sample", S.CHARGING, MeterSampled(cid=CID, energy_wh_import=10.0, currents_a=(16.0,)),
     S.CHARGING, []),
]


@pytest.mark.parametrize(("start", "event", "state", "actions"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_step(start: State, event: Event, state: State, actions: list[object]) -> None:
    m, now = at(start)
    assert m.handle(event, now + 0.01) == actions
    assert m.state is state


#: Written out here, independently of `firmware.core.evse.states`: the commands, each accepted pair
#: (state, command), and where the example command (`COMMAND_EXAMPLES`) settles from the state that
#: `tests.core.helpers.RECIPES` builds. Every other (state, command) pair must raise
#: IllegalTransition and change nothing (STYLE.md B7).
COMMAND_SETTLES: dict[tuple[State, type[Event]], State] = {
    (S.AVAILABLE, AuthorizationGranted): S.WAITING_FOR_EV,
    (S.WAITING_FOR_AUTH, AuthorizationGranted): S.SUSPENDED_EV,
    (S.AVAILABLE, AuthorizationRefused): S.AVAILABLE,
    (S.WAITING_FOR_AUTH, AuthorizationRefused): S.WAITING_FOR_AUTH,
    (S.WAITING_FOR_EV, StopRequested): S.AVAILABLE,
    (S.WAITING_FOR_AUTH, StopRequested): S.FINISHING,
    (S.SUSPENDED_EV, StopRequested): S.FINISHING,
    (S.SUSPENDED_EVSE, StopRequested): S.FINISHING,
    (S.CHARGING, StopRequested): S.STOPPING,
    (S.PAUSING, StopRequested): S.STOPPING,
    (S.REPLUGGING, StopRequested): S.REPLUGGING,
    (S.SUSPENDED_EV, ReplugRequested): S.REPLUGGING,
    (S.SUSPENDED_EVSE, ReplugRequested): S.REPLUGGING,
    (S.CHARGING, ReplugRequested): S.REPLUGGING,
}
COMMAND_EXAMPLES: dict[type[Event], Event] = {
    AuthorizationGranted: AUTH,
    AuthorizationRefused: AuthorizationRefused(cid=CID, id_token="x"),
    StopRequested: StopRequested(cid=CID),
    ReplugRequested: ReplugRequested(cid=CID),
}
#: Facts from sensors and settings, accepted in every state (one example of each).
FACT_EXAMPLES: dict[type[Event], Event] = {
    PilotChanged: cp(Cp.B),
    PpChanged: PpChanged(cid=CID, ohms=680.0),
    FaultRaised: FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE),
    FaultCleared: FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED),
    MeterSampled: MeterSampled(cid=CID, energy_wh_import=5.0, currents_a=(10.0,)),
    CurrentLimitChanged: CurrentLimitChanged(cid=CID, current_a=16),
    SetEnabled: SetEnabled(cid=CID, enabled=True),
    RcdSelfTested: RcdSelfTested(cid=CID, passed=False),
}


def _observable(m: EvseMachine) -> tuple[object, ...]:
    return (m.state, m.relay_closed, m.duty_pct, m.faults, m.session and m.session.uuid,
            m.session and m.session.cancelled)


@pytest.mark.parametrize("start", list(State), ids=lambda s: s.name)
@pytest.mark.parametrize("event_type", list(COMMAND_EXAMPLES), ids=lambda t: t.__name__)
def test_every_pair_is_handled_or_rejected_without_change(start: State, event_type: type[Event]) -> None:
    """STYLE.md B7: a command is handled where COMMAND_SETTLES says, and raises and changes nothing
    everywhere else."""
    m, now = at(start)
    expected = COMMAND_SETTLES.get((start, event_type))
    if expected is not None:
        m.handle(COMMAND_EXAMPLES[event_type], now + 0.01)
        assert Fault.INTERNAL not in m.faults, repr(m.last_crash)
        assert m.state is expected
    else:
        before = _observable(m)
        with pytest.raises(IllegalTransition):
            m.handle(COMMAND_EXAMPLES[event_type], now + 0.01)
        assert _observable(m) == before


@pytest.mark.parametrize("start", list(State), ids=lambda s: s.name)
@pytest.mark.parametrize("event_type", list(FACT_EXAMPLES), ids=lambda t: t.__name__)
def test_facts_are_accepted_in_every_state(start: State, event_type: type[Event]) -> None:
    m, now = at(start)
    m.handle(FACT_EXAMPLES[event_type], now + 0.01)  # raises IllegalTransition if refused
    assert Fault.INTERNAL not in m.faults, repr(m.last_crash)


def test_the_declared_table_accepts_exactly_these_pairs() -> None:
    """The module's table declares the same accepted pairs as this test, and no other event type."""
    expected = set(COMMAND_SETTLES) | {(state, event_type) for state in State for event_type in FACT_EXAMPLES}
    assert set(TRANSITIONS) == expected
    assert set(EVENT_TYPES) == set(COMMAND_EXAMPLES) | set(FACT_EXAMPLES)


def test_event_for_another_evse_is_refused() -> None:
    m, now = at(State.AVAILABLE)
    with pytest.raises(ValueError, match="EVSE 2"):
        m.handle(FaultRaised(cid=2, fault=Fault.RCD_TRIPPED), now)
    assert m.state is State.AVAILABLE


@pytest.mark.parametrize("current_a", [-1.0, 3.0, 5.9, 32.5, 80.0])
def test_out_of_range_limit_is_refused_without_change(current_a: float) -> None:
    m, now = at(State.CHARGING)
    with pytest.raises(ValueError, match=r"current_a must be (0 or 6\.\.32|>= 0), got"):
        m.handle(CurrentLimitChanged(cid=CID, current_a=current_a), now + 1)
    assert m.state is State.CHARGING
    assert m.duty_pct == DUTY_32A


def test_status_and_views() -> None:
    m, _ = at(State.CHARGING)
    assert m.status.value == "Charging"
    assert m.relay_closed
    assert m.pwm_on
    assert m.cp is Cp.C
    assert m.enabled
    assert m.offered_a == 32.0
    assert m.session is not None
    assert m.session.id_token == "04A2B3C4"
    assert m.session.authorized
    assert m.counters.contactor_cycles == 1
