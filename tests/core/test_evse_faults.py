"""A lasting fault: F for fault_hold_s from the fault, then X1 while it stays active (issue 8, defect A).

While the EVSE drives F (-12 V) it cannot see the EV: its own -12 V hides the EV's resistor. So, as
EVerest does (CX -> F for >= 300 ms -> X1, relay open), a fault that outlasts the hold switches CP to
X1 (constant +12 V): the relay stays open and the status Faulted until the fault clears, but an
unplug is seen and ends the session (IEC 61851-1 Table A.6; DESIGN.md timing table).
No sleeps: time is injected.
"""

from __future__ import annotations

import pytest

from firmware.core.events import (
    DUTY_F,
    DUTY_X1,
    CloseRelay,
    OpenRelay,
    EmitSessionEvent,
    Error,
    Fault,
    FaultCleared,
    FaultRaised,
    Led,
    PilotChanged,
    PilotSampled,
    SessionEvent,
    SetLed,
    SetPwm,
    Status,
)
from firmware.core.evse import EvseConfig, EvseMachine, State
from firmware.core.instant import Instant
from firmware.core.pilot import Cp
from tests.core.helpers import (
    AUTH,
    CID,
    PP_32A,
    T0,
    at,
    cp,
    outputs,
    session_events,
)
from tests.support.charger import Clock, build

EPS = 1e-3
HOLD_S = 0.3
LASTING_FAULTS = [Fault.RCD_TRIPPED, Fault.RELAY_WELDED, Fault.RELAY_STUCK_OPEN, Fault.OVER_CURRENT,
                  Fault.OVERTEMPERATURE, Fault.METER_LOST]


def _faulted_while_charging(fault: Fault) -> tuple[EvseMachine, float]:
    m, now = at(State.CHARGING)
    actions = m.handle(FaultRaised(cid=CID, fault=fault), now)
    assert SetPwm(cid=CID, duty_pct=DUTY_F) in actions
    assert not m.relay_closed
    assert SessionEvent.SESSION_CANCELLED in session_events(actions)
    return m, now


@pytest.mark.parametrize("fault", LASTING_FAULTS, ids=lambda f: f.name)
def test_an_unplug_during_a_lasting_fault_ends_the_session(fault: Fault) -> None:
    m, now = at(State.CHARGING)
    m.handle(FaultRaised(cid=CID, fault=fault), now)
    # F for fault_hold_s from the fault; the F -> X1 switch is a deadline the shell's tick performs.
    assert m.next_deadline() == pytest.approx(now + HOLD_S)
    assert m.tick(now + HOLD_S - EPS) == []
    assert m.duty_pct == DUTY_F
    assert m.tick(now + HOLD_S) == [SetPwm(cid=CID, duty_pct=DUTY_X1)]
    assert m.state is State.FAULTED
    assert m.status is Status.FAULTED
    assert not m.relay_closed
    assert m.cp is None  # what was read while driving F was our own -12 V: read CP afresh
    assert m.next_deadline() is None  # nothing more is due while the fault lasts
    actions = m.handle(cp(Cp.A), now + 1.0)
    (finished,) = [a for a in actions if isinstance(a, EmitSessionEvent)]
    assert finished.event is SessionEvent.SESSION_FINISHED
    assert finished.uuid == "session-1"
    assert m.session is None
    assert m.state is State.FAULTED
    assert m.duty_pct == DUTY_X1
    assert not m.relay_closed


def test_relay_stays_open_and_no_session_starts_until_the_fault_clears() -> None:
    """A plug-in while faulted (X1) is seen but starts no session (EVerest: no session while in error)."""
    m, now = _faulted_while_charging(Fault.RCD_TRIPPED)
    m.tick(now + HOLD_S)
    m.handle(cp(Cp.A), now + 1.0)
    for step, reading in enumerate([Cp.B, Cp.C, Cp.B], start=2):
        actions = m.handle(cp(reading), now + step)
        assert session_events(actions) == []
        assert outputs(actions) == []
        assert m.session is None
        assert m.state is State.FAULTED
        assert not m.relay_closed
        assert m.duty_pct == DUTY_X1
    # The fault clears: no second F (it was held >= 300 ms already); the usual rules apply at once.
    actions = m.handle(FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), now + 10.0)
    assert SetPwm(cid=CID, duty_pct=DUTY_F) not in actions
    assert session_events(actions) == [SessionEvent.SESSION_STARTED, SessionEvent.AUTH_REQUIRED]
    assert m.state is State.WAITING_FOR_AUTH
    assert m.duty_pct == DUTY_X1
    m.handle(AUTH, now + 11.0)
    assert CloseRelay(cid=CID) in m.handle(cp(Cp.C), now + 12.0)


def test_the_ev_staying_through_a_lasting_fault_finishes_its_session_after_the_clear() -> None:
    m, now = _faulted_while_charging(Fault.OVERTEMPERATURE)
    m.tick(now + HOLD_S)
    m.handle(cp(Cp.C), now + 1.0)  # the EV is still there, and asks for power: nothing closes
    assert m.state is State.FAULTED
    assert not m.relay_closed
    actions = m.handle(FaultCleared(cid=CID, fault=Fault.OVERTEMPERATURE), now + 2.0)
    assert session_events(actions) == []
    assert m.state is State.FINISHING
    assert not m.relay_closed
    assert session_events(m.handle(cp(Cp.A), now + 3.0)) == [SessionEvent.SESSION_FINISHED]


def test_a_fault_cleared_within_the_hold_keeps_f_for_the_hold_after_the_clear() -> None:
    """A fault shorter than the hold: unchanged, F lasts fault_hold_s after the clear (>= 300 ms)."""
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), now)
    m.handle(FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), now + 0.1)
    assert m.next_deadline() == pytest.approx(now + 0.1 + HOLD_S)
    assert m.tick(now + 0.1 + HOLD_S - EPS) == []
    assert m.state is State.FAULTED
    m.tick(now + 0.1 + HOLD_S)
    assert m.state is State.AVAILABLE
    assert m.duty_pct == DUTY_X1


def test_a_new_fault_during_x1_drives_f_again_a_repeated_one_does_not() -> None:
    m, now = _faulted_while_charging(Fault.RCD_TRIPPED)
    m.tick(now + HOLD_S)
    assert m.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), now + 1.0) == []  # already active
    actions = m.handle(FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE), now + 2.0)
    assert outputs(actions) == [SetPwm(cid=CID, duty_pct=DUTY_F)]
    assert m.next_deadline() == pytest.approx(now + 2.0 + HOLD_S)
    assert m.tick(now + 2.0 + HOLD_S) == [SetPwm(cid=CID, duty_pct=DUTY_X1)]
    assert m.state is State.FAULTED


def test_a_fault_on_an_idle_evse_also_switches_to_x1() -> None:
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.METER_LOST), now)
    m.tick(now + HOLD_S)
    assert m.duty_pct == DUTY_X1
    assert m.state is State.FAULTED
    m.handle(PP_32A, now + 1.0)
    assert session_events(m.handle(cp(Cp.B), now + 1.1)) == []
    assert m.session is None


# --- pilot-derived faults: X1 re-reads CP, and a reading that is still faulty is no new fault --------------

#: A CP reading that is a pilot fault (IEC 61851-1 Table A.4): a short (E), a voltage between the bands that
#: has lasted PILOT_FAULT_AFTER_S, and -12 V that we do not drive (e.g. a stuck pilot driver).
PILOT_FAULTS = [(cp(Cp.E), "short"), (cp(None, lasting=True), "out of band, lasting"), (cp(Cp.F), "-12 V not driven")]


@pytest.mark.parametrize("reading", [r for r, _ in PILOT_FAULTS], ids=[i for _, i in PILOT_FAULTS])
def test_a_lasting_pilot_fault_switches_to_x1_once_and_does_not_oscillate(reading: PilotChanged) -> None:
    m, now = at(State.CHARGING)
    actions = m.handle(reading, now)
    assert SetPwm(cid=CID, duty_pct=DUTY_F) in actions
    assert m.state is State.FAULTED
    m.handle(cp(Cp.F), now + 0.1)  # our own -12 V while we drive F: no news about the fault
    assert m.state is State.FAULTED
    assert m.duty_pct == DUTY_F
    assert m.tick(now + HOLD_S) == [SetPwm(cid=CID, duty_pct=DUTY_X1)]
    assert m.state is State.FAULTED
    assert m.cp is None
    # The monitor re-reads CP under X1: still faulty -> the same fault, no new Error, no F again. An
    # out-of-band reading comes first fresh (not lasting yet), which is no news either.
    if reading.cp is None:
        assert m.handle(cp(None), now + 0.35) == []
    assert m.handle(reading, now + 0.4) == []
    assert m.state is State.FAULTED
    assert m.duty_pct == DUTY_X1
    assert m.next_deadline() is None
    assert m.tick(now + 100.0) == []
    assert m.duty_pct == DUTY_X1
    # The unplug is seen: the pilot fault is gone with it and the session finishes; F was served.
    actions = m.handle(cp(Cp.A), now + 101.0)
    assert session_events(actions) == [SessionEvent.SESSION_FINISHED]
    assert m.state is State.AVAILABLE
    assert m.session is None
    assert m.duty_pct == DUTY_X1


@pytest.mark.parametrize("reading", [r for r, _ in PILOT_FAULTS], ids=[i for _, i in PILOT_FAULTS])
def test_a_pilot_fault_ends_with_a_clean_reading_under_x1(reading: PilotChanged) -> None:
    m, now = at(State.CHARGING)
    m.handle(reading, now)
    m.tick(now + HOLD_S)
    actions = m.handle(cp(Cp.B), now + 0.4)  # the short is gone, the EV still there
    assert SetPwm(cid=CID, duty_pct=DUTY_F) not in actions
    assert m.state is State.FINISHING
    assert m.duty_pct == DUTY_X1
    assert not m.relay_closed


def test_a_fresh_out_of_band_reading_opens_the_relay_but_is_no_fault() -> None:
    """10.5 V (between A and B) while charging: no clean C, so the relay opens at once; the session goes
    on, and charging resumes when C is read again (issue 10: a noisy ADC must not end a session)."""
    m, now = at(State.CHARGING)
    actions = m.handle(cp(None), now)
    assert actions[0] == OpenRelay(cid=CID, under_load=True)
    assert m.state is State.SUSPENDED_EV
    assert SetPwm(cid=CID, duty_pct=DUTY_F) not in actions
    assert Error.PILOT_FAULT not in [getattr(a, "error", None) for a in actions]
    assert m.faults == frozenset()
    actions = m.handle(cp(Cp.C), now + 0.2)
    assert CloseRelay(cid=CID) in actions
    assert m.state is State.CHARGING
    assert m.session is not None
    assert not m.session.cancelled


def test_an_out_of_band_reading_that_lasts_is_a_pilot_fault() -> None:
    m, now = at(State.CHARGING)
    m.handle(cp(None), now)
    actions = m.handle(cp(None, lasting=True), now + 0.47)
    assert SetPwm(cid=CID, duty_pct=DUTY_F) in actions
    assert EmitSessionEvent(cid=CID, uuid="session-1", event=SessionEvent.ERROR, error=Error.PILOT_FAULT) in actions
    assert m.state is State.FAULTED


def test_a_pilot_fault_that_returns_after_a_clean_reading_is_a_new_fault() -> None:
    m, now = at(State.WAITING_FOR_AUTH)
    m.handle(cp(Cp.E), now)
    m.tick(now + HOLD_S)
    m.handle(cp(Cp.B), now + 0.4)
    actions = m.handle(cp(Cp.E), now + 0.5)
    assert SetPwm(cid=CID, duty_pct=DUTY_F) in actions
    assert EmitSessionEvent(cid=CID, uuid="session-1", event=SessionEvent.ERROR, error=Error.PILOT_FAULT) in actions
    assert m.next_deadline() == pytest.approx(now + 0.5 + HOLD_S)



class RawPilot:
    """A charger fed raw CP volts through its pilot monitor (Table A.4: A +12 V, B +9 V, F -12 V)."""

    def __init__(self) -> None:
        self.clock = Clock()  # no UTC given: the Unix epoch plus the monotonic time, as the charger assumed
        self.c = build([EvseConfig(cid=CID)], clock=self.clock, start=T0, session_prefix="session", energy_wh=50.0)
        self.m = self.c.evses[CID]
        self.now = T0

    def at(self) -> Instant:
        return self.clock(self.now)

    def volts(self, hi: float) -> list[object]:
        out: list[object] = []
        for _ in range(3):  # 3 samples 1/64 s apart: longer than the 30 ms debounce
            self.now += 1 / 64
            out += self.c.handle(PilotSampled(cid=CID, volts_hi=hi, volts_lo=hi), self.at())
        return out


def test_through_the_pilot_monitor_the_unplug_is_read_afresh_under_x1() -> None:
    """End to end from raw CP volts: what the ADC reads while we drive F is discarded when F ends, the
    charger's monitor starts afresh, and the unplug is seen."""
    p = RawPilot()
    c, m = p.c, p.m
    c.handle(PP_32A, p.at())
    p.volts(9.0)
    assert m.state is State.WAITING_FOR_AUTH
    raised_at = p.now = p.now + 0.01
    c.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), p.at())
    p.volts(-12.0)  # our own -12 V
    assert m.cp is Cp.F
    assert m.state is State.FAULTED
    assert c.next_deadline() == pytest.approx(raised_at + HOLD_S)
    p.now = raised_at + HOLD_S
    assert SetPwm(cid=CID, duty_pct=DUTY_X1) in c.tick(p.at())
    assert m.cp is None
    assert m.state is State.FAULTED
    finished = [a for a in p.volts(12.0) if isinstance(a, EmitSessionEvent)]
    assert [(a.event, a.energy_wh_import) for a in finished] == [(SessionEvent.SESSION_FINISHED, 50.0)]
    assert m.session is None
    assert m.state is State.FAULTED
    assert not m.relay_closed


# --- when F ends, a session waits for a fresh CP reading ---------------------------------------------------
#
# While the EVSE drives F its own -12 V hides the EV (IEC 61851-1 A.2.2: state F is the EVSE's signal, not
# an EV's), so what CP read then is no news: a session starts only on a reading taken after F ends.


def _plugged_in_during_a_lasting_fault() -> tuple[EvseMachine, float]:
    """An EV plugged in (B, read under X1) during a lasting fault: seen, but no session (EVerest: none in
    error). A second fault drives F again; both clear within its hold, so F lasts fault_hold_s more."""
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), now)
    m.tick(now + HOLD_S)
    m.handle(PP_32A, now + 0.5)
    m.handle(cp(Cp.B), now + 0.6)
    assert m.plugged
    assert m.session is None
    m.handle(FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE), now + 1.0)
    assert m.duty_pct == DUTY_F
    m.handle(FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), now + 1.1)
    m.handle(FaultCleared(cid=CID, fault=Fault.OVERTEMPERATURE), now + 1.1)
    assert m.state is State.FAULTED
    return m, now + 1.1


@pytest.mark.parametrize("own_f_read", [True, False], ids=["own -12 V read during F", "nothing read during F"])
def test_when_f_ends_a_session_waits_for_a_fresh_reading(own_f_read: bool) -> None:
    m, cleared_at = _plugged_in_during_a_lasting_fault()
    if own_f_read:
        assert m.handle(cp(Cp.F), cleared_at + 0.1) == []  # our own -12 V while we drive F
    assert m.next_deadline() == pytest.approx(cleared_at + HOLD_S)
    actions = m.tick(cleared_at + HOLD_S)
    assert outputs(actions) == [SetPwm(cid=CID, duty_pct=DUTY_X1), SetLed(cid=CID, led=Led.IDLE)]
    assert session_events(actions) == []
    assert m.session is None
    assert m.state is State.AVAILABLE
    assert m.cp is None  # not read since F: the EV is plugged in as last seen, nothing more
    actions = m.handle(cp(Cp.B), cleared_at + HOLD_S + 0.05)  # the EV, read afresh under X1
    assert session_events(actions) == [SessionEvent.SESSION_STARTED, SessionEvent.AUTH_REQUIRED]
    assert m.state is State.WAITING_FOR_AUTH


def test_an_ev_that_left_during_f_gets_no_session() -> None:
    m, cleared_at = _plugged_in_during_a_lasting_fault()
    m.handle(cp(Cp.F), cleared_at + 0.1)  # our own -12 V; the unplug during F cannot be seen
    actions = m.tick(cleared_at + HOLD_S)
    actions += m.handle(cp(Cp.A), cleared_at + HOLD_S + 0.05)  # read afresh under X1: gone
    assert session_events(actions) == []
    assert m.session is None
    assert m.state is State.AVAILABLE
    assert not m.plugged


def test_through_the_pilot_monitor_a_session_starts_on_the_ev_read_after_f() -> None:
    """End to end from raw CP volts: the ADC reads our own -12 V during F and the monitor reports it (F);
    when F ends the monitor is reset, and the session starts on the EV's B read afresh, not before."""
    p = RawPilot()
    c, m = p.c, p.m
    c.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), p.at())
    p.now += HOLD_S
    c.tick(p.at())
    c.handle(PP_32A, p.at())
    p.volts(9.0)  # plugged in under X1 during the lasting fault: no session
    assert m.plugged
    assert m.session is None
    c.handle(FaultRaised(cid=CID, fault=Fault.OVERTEMPERATURE), p.at())
    p.volts(-12.0)  # our own -12 V
    assert m.cp is Cp.F
    c.handle(FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), p.at())
    c.handle(FaultCleared(cid=CID, fault=Fault.OVERTEMPERATURE), p.at())
    deadline = c.next_deadline()
    assert deadline is not None
    p.now = deadline
    started = [a for a in c.tick(p.at()) if isinstance(a, EmitSessionEvent)]
    assert started == []
    assert m.duty_pct == DUTY_X1
    assert m.session is None
    started = [a for a in p.volts(9.0) if isinstance(a, EmitSessionEvent)]
    assert [a.event for a in started] == [SessionEvent.SESSION_STARTED, SessionEvent.AUTH_REQUIRED]
    assert m.state is State.WAITING_FOR_AUTH
