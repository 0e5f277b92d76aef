"""Hypothesis property tests of the EVSE machine over random inputs and random time steps.

The test plays the shell: before each input it ticks the machine at every deadline that falls
before the input's time, exactly as the core loop does. It checks, from what it told the machine
and what the machine commanded (never from private fields):

* the relay is never closed unless CP is C (or D with ventilation), the session is authorized, PP
  is valid (socket outlet) and no fault is active;
* every opening the standard requires (C/D -> B, A, E, F, out of band, diode, any fault) comes on
  the same input, a kept relay with PWM off (X1) never outlives 6 s, F lasts >= 300 ms (a new fault
  drives F; the relay stays open until every fault has cleared), the duty changes at most once per
  5 s, and an authorized EV in C with PWM on has its relay closed;
* a fault that lasts gets X1 once its 300 ms of F are served, so an unplug during it is seen and
  ends the session at once (EVerest: CX -> F >= 300 ms -> X1);
* every session that starts ends with exactly one SessionFinished, at unplug;
* no invented energy: every energy figure in a SessionEvent is the latest meter reading given, and
  none is given before the first; an EVSE with a meter neither starts a session nor closes its
  relay before that first reading;
* the machine never crashes into its internal fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    DUTY_F,
    DUTY_X1,
    Action,
    AuthorizationGranted,
    AuthorizationRefused,
    CloseRelay,
    CurrentLimitChanged,
    EmitSessionEvent,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    OpenRelay,
    PilotChanged,
    PpChanged,
    RcdSelfTested,
    ReplugRequested,
    SessionCancellationReason,
    SessionEvent,
    SetEnabled,
    SetPwm,
    StopRequested,
)
from firmware.core.evse import EvseConfig, EvseMachine, State
from firmware.core.pilot import Cp, pp_ampacity_a
from tests.core.helpers import CID, ids

CP_VALUES = [Cp.A, Cp.B, Cp.C, Cp.D, Cp.E, Cp.F, None]
HARDWARE_FAULTS = [f for f in Fault if f is not Fault.INTERNAL]  # INTERNAL marks a crash of the machine
OPENING_READINGS = {Cp.A, Cp.B, Cp.E, Cp.F, None}
ENERGY_EVENTS = {SessionEvent.SESSION_STARTED, SessionEvent.SESSION_CANCELLED, SessionEvent.SESSION_FINISHED}

events = st.one_of(
    st.builds(PilotChanged, cid=st.just(CID), cp=st.sampled_from(CP_VALUES),
              diode_ok=st.sampled_from([True] * 9 + [False])),
    st.builds(PilotChanged, cid=st.just(CID), cp=st.just(None), lasting=st.booleans()),
    st.builds(RcdSelfTested, cid=st.just(CID), passed=st.sampled_from([True, True, False])),
    # Plain B/C readings are what a real EV mostly produces; weight them up.
    st.builds(PilotChanged, cid=st.just(CID), cp=st.sampled_from([Cp.A, Cp.B, Cp.C, Cp.B, Cp.C])),
    st.builds(PpChanged, cid=st.just(CID), ohms=st.sampled_from([None, 220.0, 680.0, 1500.0, 100.0, 50.0, 3000.0])),
    st.builds(AuthorizationGranted, cid=st.just(CID), id_token=st.sampled_from(["tok-a", "tok-b"])),
    st.builds(AuthorizationRefused, cid=st.just(CID), id_token=st.just("tok-x"), reservation_mismatch=st.booleans()),
    st.builds(StopRequested, cid=st.just(CID), reason=st.sampled_from(list(SessionCancellationReason))),
    st.builds(SetEnabled, cid=st.just(CID), enabled=st.sampled_from([True, True, True, False])),
    st.builds(FaultRaised, cid=st.just(CID), fault=st.sampled_from(HARDWARE_FAULTS)),
    st.builds(FaultCleared, cid=st.just(CID), fault=st.sampled_from(HARDWARE_FAULTS)),
    st.builds(CurrentLimitChanged, cid=st.just(CID), current_a=st.sampled_from([0.0, 6.0, 10.0, 16.0, 32.0])),
    st.builds(MeterSampled, cid=st.just(CID), energy_wh_import=st.floats(0, 1e6),
              currents_a=st.tuples(st.floats(0, 60), st.floats(0, 60), st.floats(0, 60))),
    st.builds(ReplugRequested, cid=st.just(CID), duration_s=st.floats(0.3, 5.0)),
)
time_steps = st.one_of(st.just(0.0), st.floats(0.0005, 0.5), st.floats(0.5, 10.0), st.floats(10.0, 90.0))
configs = st.builds(
    EvseConfig,
    cid=st.just(CID),
    max_current_a=st.sampled_from([16.0, 32.0]),
    socket_outlet=st.booleans(),
    ventilation_available=st.booleans(),
    has_meter=st.booleans(),
    rcd_self_test=st.booleans(),
)


@dataclass
class Observer:
    """What the test knows: the inputs it gave and the outputs the machine commanded."""

    config: EvseConfig
    cp: Cp | None = None
    cp_fresh: bool = False  # a reading arrived since the machine last left or entered F
    pp_ok: bool = False
    faults: set[Fault] = field(default_factory=set)
    limit_a: float = 32.0
    relay: bool = False
    duty: float | None = None
    f_since: float | None = None
    x1_with_relay_since: float | None = None
    last_on_change: float = -math.inf
    started: dict[str, int] = field(default_factory=dict)
    finished: dict[str, int] = field(default_factory=dict)
    cancelled: dict[str, int] = field(default_factory=dict)
    authorized: set[str] = field(default_factory=set)
    new_fault: bool = False  # the last FaultRaised named a fault that was not active
    reading: tuple[float, float] | None = None  # (import, export) of the latest MeterSampled
    plugged: bool = False
    rcd_ok: bool = False  # an RCD self-test passed while this EV was plugged in

    def saw(self, event: Event) -> None:
        match event:
            case PilotChanged(cp=cp, diode_ok=diode_ok):
                self.cp, self.cp_fresh = cp, True
                self.diode_ok = diode_ok
                if cp is Cp.A:
                    self.plugged = self.rcd_ok = False
                elif cp in (Cp.B, Cp.C, Cp.D):
                    self.plugged = True
            case RcdSelfTested(passed=passed):
                self.rcd_ok = passed and self.plugged
                if passed:
                    self.faults.discard(Fault.RCD_SELF_TEST_FAILED)
                else:
                    self.faults.add(Fault.RCD_SELF_TEST_FAILED)
            case PpChanged(ohms=ohms):
                self.pp_ok = pp_ampacity_a(ohms) is not None
            case FaultRaised(fault=fault):
                self.new_fault = fault not in self.faults
                self.faults.add(fault)
            case FaultCleared(fault=fault):
                self.faults.discard(fault)
            case CurrentLimitChanged(current_a=current_a):
                self.limit_a = current_a
            case MeterSampled(energy_wh_import=imported, energy_wh_export=exported):
                self.reading = (imported, exported)
            case _:
                pass

    def check(self, m: EvseMachine, event: Event | None, actions: list[Action], now: float) -> None:
        for action in actions:
            self._apply(action, now, m)
        assert Fault.INTERNAL not in m.faults, f"the machine crashed: {m.last_crash!r}"
        assert self.relay == m.relay_closed
        if self.relay:
            # The safety invariant: closed only for an authorized EV in C (D with ventilation),
            # a valid cable, and no fault.
            assert self.cp in ((Cp.C, Cp.D) if self.config.ventilation_available else (Cp.C,))
            assert m.session is not None
            assert m.session.authorized
            assert self.pp_ok or not self.config.socket_outlet
            assert not self.faults
            assert self.duty != DUTY_F
            assert self.reading is not None or not self.config.has_meter, "closed before the first reading"
            assert self.rcd_ok or not self.config.rcd_self_test, "closed before the RCD self-test passed"
        if self.relay and self.duty == DUTY_X1:
            assert self.x1_with_relay_since is not None
            assert now - self.x1_with_relay_since <= 6.0 + 1e-9, "relay kept > 6 s after PWM off"
        if isinstance(event, PilotChanged) and (event.cp in OPENING_READINGS or not event.diode_ok):
            assert not self.relay, f"{event} must open the relay on the same event"
        if isinstance(event, FaultRaised):
            assert not self.relay
            assert m.state is State.FAULTED
            assert self.duty == DUTY_F or not self.new_fault, "a new fault must drive F"

        # Close on B->C: an authorized EV in C, PWM on, nothing against it -> relay closed.
        session = m.session
        if (
            self.cp is Cp.C and self.cp_fresh and session is not None and session.authorized
            and not session.cancelled and m.enabled and not self.faults and self.duty not in (None, DUTY_X1, DUTY_F)
            and (self.pp_ok or not self.config.socket_outlet) and self.limit_a >= 6
            and (self.rcd_ok or not self.config.rcd_self_test)
        ):
            assert self.relay, "authorized EV in C with PWM on, but the relay is open"

    def _apply(self, action: Action, now: float, m: EvseMachine) -> None:
        match action:
            case OpenRelay():
                self.relay, self.x1_with_relay_since = False, None
            case CloseRelay():
                assert self.duty not in (None, DUTY_X1, DUTY_F), "closed without PWM"
                self.relay = True
            case SetPwm(duty_pct=duty):
                self._pwm(duty, now)
            case EmitSessionEvent(uuid=uuid, event=kind, energy_wh_import=imported, energy_wh_export=exported):
                self._session_event(uuid, kind)
                if kind in ENERGY_EVENTS:
                    assert (imported, exported) == (self.reading or (None, None)), "energy not from a reading"
                if kind is SessionEvent.SESSION_STARTED:
                    assert self.reading is not None or not self.config.has_meter, "started before the first reading"

            case _:
                pass

    def _pwm(self, duty: float, now: float) -> None:
        if self.duty == DUTY_F and duty != DUTY_F:
            assert self.f_since is not None
            assert now - self.f_since >= 0.3 - 1e-9, "F held < 300 ms"
        if duty == DUTY_F:
            self.f_since = now
        if duty == DUTY_F or self.duty == DUTY_F:
            self.cp_fresh = False
        if duty not in (DUTY_X1, DUTY_F):
            if self.duty not in (None, DUTY_X1, DUTY_F):
                assert now - self.last_on_change >= 5.0 - 1e-9, "duty changed twice within 5 s"
            self.last_on_change = now
        if duty == DUTY_X1 and self.relay:
            self.x1_with_relay_since = now
        self.duty = duty

    def _session_event(self, uuid: str, kind: SessionEvent) -> None:
        if kind is SessionEvent.SESSION_STARTED:
            assert uuid not in self.started
            self.started[uuid] = 1
        elif kind is SessionEvent.SESSION_FINISHED:
            assert uuid in self.started, f"SessionFinished for {uuid}, which never started"
            assert uuid not in self.finished, f"second SessionFinished for {uuid}"
            self.finished[uuid] = 1
        elif kind is SessionEvent.SESSION_CANCELLED:
            assert uuid in self.started
            assert uuid not in self.cancelled
            assert uuid not in self.finished
            self.cancelled[uuid] = 1
        elif uuid:
            assert uuid in self.started, f"{kind} for a session that never started"
            assert uuid not in self.finished, f"{kind} after the session ended"


def _run_until(m: EvseMachine, obs: Observer, until: float) -> None:
    for _ in range(200):
        deadline = m.next_deadline()
        if deadline is None or deadline > until:
            return
        obs.check(m, None, m.tick(deadline), deadline)
    raise AssertionError("deadlines do not advance")


def _drive(config: EvseConfig, steps: list[tuple[float, Event]]) -> tuple[EvseMachine, Observer, float]:
    m = EvseMachine(config, new_session_id=ids())
    obs = Observer(config=config, limit_a=config.max_current_a)
    now = 0.0
    obs.check(m, None, m.tick(now), now)
    for dt, event in steps:
        _run_until(m, obs, now + dt)
        now += dt
        before = m.state
        try:
            actions = m.handle(event, now)
        except (IllegalTransition, ValueError):  # refused commands change nothing
            assert m.state is before
            continue
        obs.saw(event)
        obs.check(m, event, actions, now)
    return m, obs, now


@given(config=configs, steps=st.lists(st.tuples(time_steps, events), max_size=60))
def test_safety_and_timing_hold_for_any_input(config: EvseConfig, steps: list[tuple[float, Event]]) -> None:
    _drive(config, steps)


@given(config=configs, steps=st.lists(st.tuples(time_steps, events), max_size=40))
def test_every_session_ends_with_exactly_one_finished_at_unplug(
    config: EvseConfig, steps: list[tuple[float, Event]]
) -> None:
    m, obs, now = _drive(config, steps)
    # Walk away: clear every fault, enable, unplug, and let every deadline pass.
    for fault in HARDWARE_FAULTS:
        now += 0.01
        obs.check(m, None, m.handle(FaultCleared(cid=CID, fault=fault), now), now)
    now += 0.01
    obs.check(m, None, m.handle(SetEnabled(cid=CID, enabled=True), now), now)
    for _ in range(3):
        # While we drive F the ADC reads our own -12 V; the unplug is seen only once CP is no longer
        # driven to F (X1 after the hold, also while a pilot fault such as a short, E, lasts).
        readings = [Cp.F, Cp.A] if m.duty_pct == DUTY_F else [Cp.A]
        for reading in readings:
            now += 0.01
            event = PilotChanged(cid=CID, cp=reading)
            obs.saw(event)
            obs.check(m, event, m.handle(event, now), now)
            _run_until(m, obs, now + 100.0)
            now += 100.0
    assert m.session is None
    assert obs.finished.keys() == obs.started.keys()
    assert all(count == 1 for count in obs.finished.values())


@given(config=configs, steps=st.lists(st.tuples(time_steps, events), max_size=40),
       fault=st.sampled_from(HARDWARE_FAULTS))
def test_an_unplug_during_a_lasting_fault_ends_the_session(
    config: EvseConfig, steps: list[tuple[float, Event]], fault: Fault
) -> None:
    """Whatever came before: a new fault that stays active gets X1 after its F (relay open, Faulted),
    and the EV's unplug is then seen and ends the session at once."""
    m, obs, now = _drive(config, steps)
    if fault in obs.faults:
        now += 0.01
        event: Event = FaultCleared(cid=CID, fault=fault)
        obs.saw(event)
        obs.check(m, event, m.handle(event, now), now)
    now += 0.01
    event = FaultRaised(cid=CID, fault=fault)
    obs.saw(event)
    obs.check(m, event, m.handle(event, now), now)
    _run_until(m, obs, now + 0.3)
    now += 0.3
    assert m.duty_pct == DUTY_X1
    assert m.state is State.FAULTED
    assert not m.relay_closed
    assert m.next_deadline() is None
    had_session = m.session is not None
    now += 0.01
    event = PilotChanged(cid=CID, cp=Cp.A)
    obs.saw(event)
    actions = m.handle(event, now)
    obs.check(m, event, actions, now)
    assert m.session is None
    assert m.state is State.FAULTED
    assert not m.relay_closed
    finished = [a for a in actions if isinstance(a, EmitSessionEvent) and a.event is SessionEvent.SESSION_FINISHED]
    assert len(finished) == had_session
