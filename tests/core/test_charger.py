"""The charger (firmware/core/charger.py): routing by cid, the pilot layer under each EVSE machine
(PilotSampled -> PilotMonitor -> PilotChanged), and ticking only the machines that are due.

Raw CP samples are fed at nominal Table A.4 volts (IEC 61851-1): B = +9 V, C = +6 V, F = -12 V; with PWM
on, the low plateau is -12 V when the EV's diode is present (A.2.2). Samples are 1/64 s apart: that is
exact in binary floating point, so the DEBOUNCE_S comparison is not at the mercy of rounding (see
tests/core/test_pilot.py::test_debounce_is_exact_for_any_time_base).
"""

from __future__ import annotations

import pytest

from firmware.core.charger import Charger
from firmware.core.events import (
    DUTY_F,
    DUTY_X1,
    Action,
    AuthorizationGranted,
    CloseRelay,
    EmitSessionEvent,
    Error,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    Led,
    OpenRelay,
    PilotSampled,
    PpChanged,
    SessionEvent,
    SetLed,
    SetLock,
    SetPwm,
    StopRequested,
)
from firmware.core.evse import EvseConfig, EvseMachine, State
from firmware.core.pilot import DEBOUNCE_S, Cp
from tests.core.helpers import ids, session_events
from tests.support.charger import Clock, build

T0 = 100.0
STEP = 1 / 64  # 15.625 ms; two steps (31.25 ms) >= DEBOUNCE_S (30 ms) > one step
SAMPLES_TO_REPORT = 3  # the first sample, then two more steps
FAULT_HOLD_S = 0.3
CIDS = (1, 7)
at = Clock()  # these tests give no UTC: the Unix epoch plus the monotonic time, as the charger assumed

#: Nominal plateaus (volts_hi, volts_lo) per CP state, IEC 61851-1 Table A.4 / A.2.2.
PWM_OFF = {Cp.A: (12.0, 12.0), Cp.B: (9.0, 9.0), Cp.C: (6.0, 6.0), Cp.F: (-12.0, -12.0)}
PWM_ON = {Cp.A: (12.0, -12.0), Cp.B: (9.0, -12.0), Cp.C: (6.0, -12.0), Cp.F: (-12.0, -12.0)}


def charger() -> Charger:
    """EVSEs 1 and 7, started at T0; their meters have given their first reading (0 Wh)."""
    return build([EvseConfig(cid=1), EvseConfig(cid=7, max_current_a=16.0)], clock=at, start=T0,
                 session_prefix="session")


def sample(cid: int, volts_hi: float, volts_lo: float) -> PilotSampled:
    return PilotSampled(cid=cid, volts_hi=volts_hi, volts_lo=volts_lo)


class Feed:
    """Feeds one charger with time advancing by STEP per call; remembers every action."""

    def __init__(self, c: Charger, now: float = T0) -> None:
        self.c = c
        self.now = now
        self.log: list[Action] = []

    def __call__(self, event: Event) -> list[Action]:
        self.now += STEP
        actions = self.c.handle(event, at(self.now))
        self.log.extend(actions)
        return actions

    def samples(self, cid: int, plateaus: tuple[float, float], count: int = SAMPLES_TO_REPORT) -> list[Action]:
        """`count` identical samples; returns the actions of the last one, the ones before must be []."""
        for _ in range(count - 1):
            assert self(sample(cid, *plateaus)) == []
        return self(sample(cid, *plateaus))

    def tick(self, now: float) -> list[Action]:
        self.now = now
        actions = self.c.tick(at(now))
        self.log.extend(actions)
        return actions


def snapshot(c: Charger) -> list[tuple[object, ...]]:
    return [
        (cid, m.state, m.cp, m.duty_pct, m.relay_closed, m.session and m.session.uuid, m.next_deadline())
        for cid, m in c.evses.items()
    ]


def plugged_and_authorized(cid: int = 1) -> Feed:
    """EV plugged in (B, debounced from raw samples), cable 32 A, token accepted: PWM on, SUSPENDED_EV."""
    feed = Feed(charger())
    feed(PpChanged(cid=cid, ohms=220.0))
    feed.samples(cid, PWM_OFF[Cp.B])
    feed(AuthorizationGranted(cid=cid, id_token="04A2B3C4"))
    assert feed.c.evses[cid].state is State.SUSPENDED_EV
    assert feed.c.evses[cid].pwm_on
    return feed


# --- construction ------------------------------------------------------------------------------------------

def test_duplicate_cid_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        Charger([EvseConfig(cid=1), EvseConfig(cid=2), EvseConfig(cid=1)], new_session_id=ids())


def test_empty_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Charger([], new_session_id=ids())


def test_configs_may_be_any_iterable() -> None:
    c = Charger((EvseConfig(cid=cid) for cid in (3, 1)), new_session_id=ids())
    assert list(c.evses) == [3, 1]
    assert all(isinstance(m, EvseMachine) and m.cid == cid for cid, m in c.evses.items())


def test_start_returns_the_initial_outputs_of_every_evse() -> None:
    # Without meters: an EVSE with one is Unavailable until its first reading (test_evse_meter.py).
    c = Charger([EvseConfig(cid=1, has_meter=False), EvseConfig(cid=7, max_current_a=16.0, has_meter=False)],
                new_session_id=ids())
    assert c.start(at(T0)) == [
        action
        for cid in CIDS
        for action in (
            OpenRelay(cid=cid, under_load=False),
            SetPwm(cid=cid, duty_pct=DUTY_X1),
            SetLock(cid=cid, locked=False),
            SetLed(cid=cid, led=Led.IDLE),
        )
    ]
    assert all(m.state is State.AVAILABLE for m in c.evses.values())
    assert c.start(at(T0 + 1.0)) == []  # everything was commanded already


# --- routing by cid ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("cid", "other"), [(1, 7), (7, 1)])
def test_events_go_to_the_evse_named_by_cid(cid: int, other: int) -> None:
    c = charger()
    before = snapshot(c)
    actions = c.handle(FaultRaised(cid=cid, fault=Fault.RCD_TRIPPED), at(T0 + 1.0))
    assert actions
    assert all(a.cid == cid for a in actions)
    assert c.evses[cid].state is State.FAULTED
    assert c.evses[other].state is State.AVAILABLE
    assert [row for row in snapshot(c) if row[0] == other] == [row for row in before if row[0] == other]


@pytest.mark.parametrize(("cid", "other"), [(1, 7), (7, 1)])
def test_authorization_goes_to_the_evse_named_by_cid(cid: int, other: int) -> None:
    c = charger()
    actions = c.handle(AuthorizationGranted(cid=cid, id_token="tok"), at(T0 + 1.0))
    assert session_events(actions) == [SessionEvent.SESSION_STARTED]
    assert all(a.cid == cid for a in actions)
    assert c.evses[cid].state is State.WAITING_FOR_EV
    assert c.evses[other].state is State.AVAILABLE
    assert c.evses[other].session is None


@pytest.mark.parametrize("event", [
    FaultRaised(cid=2, fault=Fault.RCD_TRIPPED),
    AuthorizationGranted(cid=2, id_token="tok"),
    sample(2, 9.0, 9.0),
    sample(8, 9.0, 9.0),
], ids=["fault", "auth", "pilot sample cid 2", "pilot sample cid 8"])
def test_unknown_cid_is_refused_and_changes_nothing(event: Event) -> None:
    c = charger()
    before = snapshot(c)
    with pytest.raises(ValueError, match="unknown EVSE"):
        c.handle(event, at(T0 + 1.0))
    assert snapshot(c) == before


def test_each_evse_has_its_own_pilot_monitor() -> None:
    """Interleaved samples of two EVSEs are debounced separately: B on EVSE 1, C on EVSE 7."""
    c = charger()
    for k in range(SAMPLES_TO_REPORT - 1):
        assert c.handle(sample(1, *PWM_OFF[Cp.B]), at(T0 + k * STEP)) == []
        assert c.handle(sample(7, *PWM_OFF[Cp.C]), at(T0 + k * STEP)) == []
    assert c.evses[1].cp is None
    assert c.evses[7].cp is None
    now = T0 + (SAMPLES_TO_REPORT - 1) * STEP
    assert all(a.cid == 1 for a in c.handle(sample(1, *PWM_OFF[Cp.B]), at(now)))
    assert c.evses[1].cp is Cp.B
    assert c.evses[7].cp is None
    assert all(a.cid == 7 for a in c.handle(sample(7, *PWM_OFF[Cp.C]), at(now)))
    assert c.evses[1].cp is Cp.B
    assert c.evses[7].cp is Cp.C


# --- PilotSampled -> PilotMonitor -> PilotChanged ----------------------------------------------------------

def test_samples_are_debounced_into_a_session_start() -> None:
    feed = Feed(charger())
    feed(PpChanged(cid=1, ohms=220.0))
    start = feed.now + STEP
    for _ in range(SAMPLES_TO_REPORT - 1):
        assert feed(sample(1, *PWM_OFF[Cp.B])) == []  # nothing before DEBOUNCE_S
        assert feed.c.evses[1].cp is None
        assert feed.c.evses[1].state is State.AVAILABLE
    assert feed.now - start < DEBOUNCE_S
    actions = feed(sample(1, *PWM_OFF[Cp.B]))
    assert feed.now - start >= DEBOUNCE_S
    assert actions == [
        SetLed(cid=1, led=Led.WAITING),
        EmitSessionEvent(cid=1, uuid="session-1", event=SessionEvent.SESSION_STARTED, reason="EVConnected",
                         energy_wh_import=0.0, energy_wh_export=0.0),
        EmitSessionEvent(cid=1, uuid="session-1", event=SessionEvent.AUTH_REQUIRED),
    ]
    assert feed.c.evses[1].cp is Cp.B
    assert feed.c.evses[1].state is State.WAITING_FOR_AUTH
    assert feed(sample(1, *PWM_OFF[Cp.B])) == []  # a stable state is reported once


def test_authorized_ev_in_c_with_diode_charges() -> None:
    feed = plugged_and_authorized()
    actions = feed.samples(1, PWM_ON[Cp.C])
    assert CloseRelay(cid=1) in actions
    assert feed.c.evses[1].state is State.CHARGING
    assert feed.c.evses[1].relay_closed
    actions = feed.samples(1, PWM_ON[Cp.B])  # C -> B: open on the same event (Table A.6)
    assert actions[0] == OpenRelay(cid=1, under_load=False)
    assert feed.c.evses[1].state is State.SUSPENDED_EV


def test_missing_diode_never_closes_the_relay_and_faults() -> None:
    """IEC 61851-1 A.2.2: with PWM on, a low plateau of 0 V means the EV's diode is missing."""
    feed = plugged_and_authorized()
    m = feed.c.evses[1]
    for _ in range(SAMPLES_TO_REPORT - 1):
        assert feed(sample(1, 6.0, 0.0)) == []
        assert not m.relay_closed
    actions = feed(sample(1, 6.0, 0.0))
    assert EmitSessionEvent(cid=1, uuid="session-1", event=SessionEvent.ERROR, error=Error.CAR_DIODE_FAULT) in actions
    assert SetPwm(cid=1, duty_pct=DUTY_F) in actions
    assert m.state is State.FAULTED
    assert not m.relay_closed
    assert SessionEvent.SESSION_CANCELLED in session_events(actions)
    for _ in range(5):  # the EV keeps asking: still no relay
        feed(sample(1, 6.0, 0.0))
    assert not any(isinstance(a, CloseRelay) for a in feed.log)
    assert m.state is State.FAULTED
    assert not m.relay_closed


def test_diode_lost_in_a_stable_state_faults_after_the_debounce() -> None:
    """A stable B whose diode disappears: reported once the failure has lasted DEBOUNCE_S."""
    feed = plugged_and_authorized()
    for _ in range(SAMPLES_TO_REPORT - 1):
        assert feed(sample(1, 9.0, 0.0)) == []
    actions = feed(sample(1, 9.0, 0.0))
    assert EmitSessionEvent(cid=1, uuid="session-1", event=SessionEvent.ERROR, error=Error.CAR_DIODE_FAULT) in actions
    assert feed.c.evses[1].state is State.FAULTED


def test_diode_fault_ends_after_the_hold_and_the_ev_is_read_afresh() -> None:
    feed = plugged_and_authorized()
    feed.samples(1, (6.0, 0.0))
    m = feed.c.evses[1]
    assert m.state is State.FAULTED
    faulted_at = feed.now
    feed.samples(1, PWM_OFF[Cp.F])  # we drive F: the ADC reads our own -12 V
    assert m.state is State.FAULTED
    assert feed.c.next_deadline() == pytest.approx(faulted_at + FAULT_HOLD_S)
    assert feed.tick(faulted_at + FAULT_HOLD_S - 1e-3) == []
    actions = feed.tick(faulted_at + FAULT_HOLD_S)
    assert SetPwm(cid=1, duty_pct=DUTY_X1) in actions
    assert m.state is State.FINISHING  # the session was cancelled; the EV is still plugged in
    feed.samples(1, PWM_OFF[Cp.C])
    assert m.cp is Cp.C


def fault_then_clear(feed: Feed, *, read_f_while_driven: bool) -> float:
    """RCD trip on EVSE 1 (CP stable at B), cleared again; returns the time the hold ends."""
    m = feed.c.evses[1]
    assert m.cp is Cp.B
    actions = feed(FaultRaised(cid=1, fault=Fault.RCD_TRIPPED))
    assert SetPwm(cid=1, duty_pct=DUTY_F) in actions
    assert m.state is State.FAULTED
    if read_f_while_driven:
        feed.samples(1, PWM_OFF[Cp.F])
        assert m.state is State.FAULTED  # -12 V while we drive F is no pilot fault
    feed(FaultCleared(cid=1, fault=Fault.RCD_TRIPPED))
    hold_until = feed.now + FAULT_HOLD_S
    assert feed.c.next_deadline() == pytest.approx(hold_until)
    assert feed.tick(hold_until - 1e-3) == []
    assert m.state is State.FAULTED
    actions = feed.tick(hold_until)
    assert SetPwm(cid=1, duty_pct=DUTY_X1) in actions
    assert m.state is not State.FAULTED
    assert m.duty_pct != DUTY_F
    assert m.cp is None  # what was read while driving F says nothing about the EV
    return hold_until


def plugged_in() -> Feed:
    feed = Feed(charger())
    feed(PpChanged(cid=1, ohms=220.0))
    feed.samples(1, PWM_OFF[Cp.B])
    assert feed.c.evses[1].state is State.WAITING_FOR_AUTH
    return feed


@pytest.mark.parametrize("read_f_while_driven", [True, False], ids=["F read while driven", "no sample during F"])
def test_after_the_fault_hold_the_ev_state_is_reported_again(read_f_while_driven: bool) -> None:
    """The charger resets the EVSE's monitor when F ends, so a reading equal to the pre-fault one
    (B here, when no sample came during F) is reported again and the machine knows its CP."""
    feed = plugged_in()
    fault_then_clear(feed, read_f_while_driven=read_f_while_driven)
    m = feed.c.evses[1]
    for _ in range(SAMPLES_TO_REPORT - 1):
        feed(sample(1, *PWM_OFF[Cp.B]))
        assert m.cp is None  # debounced again, from scratch
    feed(sample(1, *PWM_OFF[Cp.B]))
    assert m.cp is Cp.B


def test_minus_12_v_after_the_fault_hold_is_a_pilot_fault() -> None:
    """If the CP still reads -12 V once we stop driving F (e.g. stuck pilot), the monitor, reset when F
    ended, reports F again and the machine faults: -12 V we do not drive is a pilot fault."""
    feed = plugged_in()
    fault_then_clear(feed, read_f_while_driven=True)
    m = feed.c.evses[1]
    actions = feed.samples(1, PWM_OFF[Cp.F])
    assert m.cp is Cp.F
    assert m.state is State.FAULTED
    assert EmitSessionEvent(cid=1, uuid="session-1", event=SessionEvent.ERROR, error=Error.PILOT_FAULT) in actions


def test_monitor_is_not_reset_while_f_continues() -> None:
    """Only leaving F resets the monitor: while F is driven, a stable -12 V is reported once."""
    feed = plugged_in()
    feed(FaultRaised(cid=1, fault=Fault.RCD_TRIPPED))
    feed.samples(1, PWM_OFF[Cp.F])
    assert feed.c.evses[1].cp is Cp.F
    feed(FaultRaised(cid=1, fault=Fault.OVERTEMPERATURE))  # a second fault: F continues
    for _ in range(5):
        assert feed(sample(1, *PWM_OFF[Cp.F])) == []
    assert feed.c.evses[1].cp is Cp.F
    assert feed.c.evses[1].state is State.FAULTED


# --- tick / next_deadline ----------------------------------------------------------------------------------

def test_next_deadline_is_none_when_nothing_is_due() -> None:
    c = charger()
    assert c.next_deadline() is None
    assert c.tick(at(T0 + 1000.0)) == []


def test_next_deadline_is_the_earliest_over_the_evses() -> None:
    c = charger()
    c.handle(AuthorizationGranted(cid=1, id_token="tok"), at(T0 + 1.0))  # waits 60 s for the EV
    assert c.next_deadline() == pytest.approx(T0 + 61.0) == c.evses[1].next_deadline()
    c.handle(FaultRaised(cid=7, fault=Fault.RCD_TRIPPED), at(T0 + 2.0))  # F for 0.3 s, then X1 while it lasts
    assert c.evses[7].next_deadline() == pytest.approx(T0 + 2.0 + FAULT_HOLD_S)
    assert c.next_deadline() == pytest.approx(T0 + 2.0 + FAULT_HOLD_S)
    assert c.tick(at(T0 + 2.0 + FAULT_HOLD_S)) != []
    assert c.evses[7].state is State.FAULTED
    assert c.evses[7].duty_pct == DUTY_X1
    c.handle(FaultCleared(cid=7, fault=Fault.RCD_TRIPPED), at(T0 + 3.0))  # F was served: no more F
    assert c.evses[7].state is State.AVAILABLE
    assert c.next_deadline() == pytest.approx(T0 + 61.0)


def test_tick_runs_only_the_machines_that_are_due(monkeypatch: pytest.MonkeyPatch) -> None:
    c = charger()
    c.handle(AuthorizationGranted(cid=1, id_token="tok"), at(T0 + 1.0))  # EVSE 1: due at T0 + 61
    c.handle(FaultRaised(cid=7, fault=Fault.RCD_TRIPPED), at(T0 + 2.0))  # EVSE 7: F -> X1 due at T0 + 2.3
    ticked: list[int] = []
    for cid, m in c.evses.items():
        # A recording pass-through (the machine still runs), to see which machines are ticked.
        monkeypatch.setattr(m, "tick", lambda now, m=m, cid=cid: (ticked.append(cid), EvseMachine.tick(m, now))[1])

    assert c.tick(at(T0 + 2.0 + FAULT_HOLD_S - 1e-3)) == []
    assert ticked == []
    actions = c.tick(at(T0 + 2.0 + FAULT_HOLD_S))
    assert ticked == [7]
    assert actions
    assert all(a.cid == 7 for a in actions)
    assert c.evses[1].state is State.WAITING_FOR_EV

    ticked.clear()
    actions = c.tick(at(T0 + 61.0))  # the connection timeout of EVSE 1 (API.md §5)
    assert ticked == [1]
    assert session_events(actions) == [SessionEvent.SESSION_CANCELLED, SessionEvent.SESSION_FINISHED]
    assert c.evses[1].state is State.AVAILABLE
    assert c.next_deadline() is None


def test_tick_leaving_f_resets_the_monitor_like_handle() -> None:
    """The reset after F also happens when F ends by `tick` on a machine that was never sampled in F."""
    feed = plugged_in()
    feed(StopRequested(cid=1))  # FINISHING, CP B stable
    feed(FaultRaised(cid=1, fault=Fault.OVERTEMPERATURE))
    feed(FaultCleared(cid=1, fault=Fault.OVERTEMPERATURE))
    m = feed.c.evses[1]
    feed.tick(feed.now + FAULT_HOLD_S)
    assert m.state is State.FINISHING
    assert m.cp is None
    feed.samples(1, PWM_OFF[Cp.B])
    assert m.cp is Cp.B


def test_one_stale_x1_sample_right_after_pwm_on_is_no_diode_fault() -> None:
    feed = plugged_in()
    feed(AuthorizationGranted(cid=1, id_token="04A2B3C4"))  # PWM on: B2
    feed(sample(1, *PWM_OFF[Cp.B]))  # sampled before the PWM started, processed after
    feed.samples(1, PWM_ON[Cp.B])  # from here on the EV's diode is plainly there
    assert feed.c.evses[1].state is State.SUSPENDED_EV
    assert Error.CAR_DIODE_FAULT not in [a.error for a in feed.log if isinstance(a, EmitSessionEvent)]
