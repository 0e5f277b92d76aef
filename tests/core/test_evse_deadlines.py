"""Every deadline the EVSE machine reports is one that a tick at that time clears.

The shell's core loop sleeps until `next_deadline()` and then ticks (STYLE.md B8). A deadline that
the tick at it leaves in place wakes the loop again at once, and again, until some other timer or
input moves the machine on: the loop spins. So the invariant is: after `tick(d)` with
`d = next_deadline()`, `next_deadline()` is None or strictly later than d.

It is checked as a hypothesis property (random inputs from every state, at random base times, since
float rounding depends on the magnitude of `now`), and as regression cases for the two ways the soft
over-current timer broke it: it stayed a deadline once the session was cancelled (STOPPING), although
the tick ignores it then; and its deadline (`since + timeout`) and its check (`now - since >= timeout`)
disagreed by one rounding. No sleeps: time is injected.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    CurrentLimitChanged,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    SetEnabled,
    StopRequested,
)
from firmware.core.evse import EvseConfig, EvseMachine, State
from firmware.core.pilot import Cp
from tests.core.helpers import CID, FIRST_READING, RECIPES, STEP_S, at, cp, ids
from tests.core.test_evse_properties import configs, events, time_steps

OVER_CURRENT = MeterSampled(cid=CID, energy_wh_import=1.0, currents_a=(40.0,))  # 32 A offered: limit 35.7 A
OVERCURRENT_TIMEOUT_S = 7.0  # EvseConfig default
STOP_TIMEOUT_S = 6.0  # EvseConfig default


def tick_at_deadline(m: EvseMachine) -> float | None:
    """Do what the core loop does at the next deadline, and check that the tick cleared it."""
    deadline = m.next_deadline()
    if deadline is None:
        return None
    m.tick(deadline)
    assert Fault.INTERNAL not in m.faults, repr(m.last_crash)
    after = m.next_deadline()
    assert after is None or after > deadline, f"tick({deadline!r}) in {m.state} left the deadline {after!r}"
    return deadline


def run_until(m: EvseMachine, until: float) -> None:
    """Tick at every deadline up to `until`, as the core loop does."""
    for _ in range(100):
        deadline = m.next_deadline()
        if deadline is None or deadline > until:
            return
        tick_at_deadline(m)
    raise AssertionError(f"more than 100 deadlines before {until!r}")


# --- regression cases ---------------------------------------------------------------------------------


def test_the_overcurrent_timer_is_no_deadline_once_a_stop_cancelled_the_session() -> None:
    """Over-current since t + 1 (due t + 8); a stop at t + 5 ramps down until t + 11 (STOPPING). The
    timer cannot act on a cancelled session, so t + 8 must not be reported: t + 11 is the deadline."""
    m, t = at(State.CHARGING)
    m.handle(OVER_CURRENT, t + 1)
    m.handle(StopRequested(cid=CID), t + 5)
    assert m.state is State.STOPPING
    assert m.relay_closed
    assert tick_at_deadline(m) == t + 5 + STOP_TIMEOUT_S
    assert m.state is State.FINISHING
    assert not m.relay_closed


def test_the_overcurrent_timer_is_no_deadline_once_a_disable_cancelled_the_session() -> None:
    m, t = at(State.CHARGING)
    m.handle(OVER_CURRENT, t + 1)
    m.handle(SetEnabled(cid=CID, enabled=False), t + 5)
    assert m.state is State.STOPPING
    assert tick_at_deadline(m) == t + 5 + STOP_TIMEOUT_S
    assert m.state is State.UNAVAILABLE
    assert m.next_deadline() is None


def test_the_overcurrent_deadline_and_its_check_agree_despite_float_rounding() -> None:
    """Since 121.2 the timer is due at 121.2 + 7.0 == 128.2, but 128.2 - 121.2 == 6.99999999999999 < 7."""
    since = 121.2
    assert (since + OVERCURRENT_TIMEOUT_S) - since < OVERCURRENT_TIMEOUT_S  # the rounding this case is about
    m, t = at(State.CHARGING)
    assert t < since
    m.handle(OVER_CURRENT, since)
    actions = m.tick(since + OVERCURRENT_TIMEOUT_S - 1e-3)
    assert actions == []
    assert m.state is State.CHARGING
    assert m.next_deadline() == since + OVERCURRENT_TIMEOUT_S
    assert tick_at_deadline(m) == since + OVERCURRENT_TIMEOUT_S
    assert m.state is State.STOPPING
    assert m.relay_closed  # the usual ramp-down: X1, relay kept until B or 6 s


def test_the_overcurrent_timeout_still_stops_the_session_at_its_deadline() -> None:
    m, t = at(State.CHARGING)
    m.handle(OVER_CURRENT, t + 1)
    deadline = m.next_deadline()
    assert deadline == t + 1 + OVERCURRENT_TIMEOUT_S
    m.tick(deadline)
    assert m.state is State.STOPPING
    assert m.session is not None
    assert m.session.cancelled
    run_until(m, deadline + STOP_TIMEOUT_S)
    assert m.state is State.FINISHING


# --- the property -------------------------------------------------------------------------------------

#: The shell's monotonic clock. A sum like `since + timeout` is exact unless it crosses a power of two,
#: where it may round down: times a few seconds below one make up half the draws.
below_powers_of_two = st.builds(lambda k, x: 2.0**k - x, st.integers(3, 23), st.floats(0.0, 10.0))
base_times = st.one_of(st.just(100.0), st.floats(0.0, 1e7), below_powers_of_two, below_powers_of_two)
#: What a charging EVSE's timers (over-current 7 s, ramp-down 6 s, duty change 5 s, F hold) depend on:
#: current above and within the limit, the stops and limits that start a ramp-down, the EV's answers.
charging_events = st.one_of(
    st.builds(MeterSampled, cid=st.just(CID), energy_wh_import=st.just(1.0),
              currents_a=st.tuples(st.floats(0.0, 60.0))),
    st.sampled_from([
        StopRequested(cid=CID), SetEnabled(cid=CID, enabled=False), SetEnabled(cid=CID, enabled=True),
        CurrentLimitChanged(cid=CID, current_a=0.0), CurrentLimitChanged(cid=CID, current_a=16.0),
        cp(Cp.B), cp(Cp.C), FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED),
        FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED),
    ]),
)


def _machine_in(start: State, config: EvseConfig, base: float) -> tuple[EvseMachine, float]:
    """A machine driven by the recipe for `start` from `base` (with other configs the recipe may end
    elsewhere: any state it reaches is as good a start as another)."""
    m = EvseMachine(config, new_session_id=ids())
    m.tick(base)
    m.handle(FIRST_READING, base)
    now = base
    for event in RECIPES[start]:
        now += STEP_S
        run_until(m, now)
        try:
            m.handle(event, now)
        except (IllegalTransition, ValueError):
            pass
    return m, now


def _drive(m: EvseMachine, now: float, steps: list[tuple[float, Event]]) -> None:
    """Play the shell: tick at every deadline before each input, then let every timer run out."""
    for dt, event in steps:
        run_until(m, now + dt)
        now += dt
        try:
            m.handle(event, now)
        except (IllegalTransition, ValueError):  # refused commands change nothing
            continue
        assert Fault.INTERNAL not in m.faults, repr(m.last_crash)
    for _ in range(50):
        if tick_at_deadline(m) is None:
            return
    raise AssertionError("more than 50 deadlines after the last input")


@given(start=st.sampled_from(list(State)), config=configs, base=base_times,
       steps=st.lists(st.tuples(time_steps, events), max_size=40))
def test_a_tick_at_the_reported_deadline_always_clears_it(
    start: State, config: EvseConfig, base: float, steps: list[tuple[float, Event]]
) -> None:
    """Any inputs from any state."""
    m, now = _machine_in(start, config, base)
    _drive(m, now, steps)


@given(base=base_times, steps=st.lists(st.tuples(st.floats(0.0, 10.0), charging_events), min_size=1, max_size=20))
def test_a_tick_at_the_reported_deadline_always_clears_it_while_charging(
    base: float, steps: list[tuple[float, Event]]
) -> None:
    """From CHARGING, the inputs its timers depend on."""
    m, now = _machine_in(State.CHARGING, EvseConfig(cid=CID), base)
    assert m.state is State.CHARGING
    _drive(m, now, steps)
