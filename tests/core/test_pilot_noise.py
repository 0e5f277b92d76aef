"""Property tests: CP readings with noise around every band edge (issue 10, pilot robustness).

A real front end reads the plateaus with noise, and its -12 V rail sags under load. Whatever the noise,
the pilot layer (`PilotMonitor`) must:

* never report a state that no sample showed (a C is reported only after C was read);
* keep a signal that stays inside its band (with hysteresis) as that state, without reports;
* near an edge, report only the two sides of that edge (the state, or between-band);
* report an out-of-band reading as lasting (a pilot fault) only once it has been the stable reading
  for `PILOT_FAULT_AFTER_S` (from its first sample), never for short excursions;
* not fail the diode check on a -12 V rail that sags to -10 V.

Time is injected: samples every 10 ms, as `pilot.sample_interval_s` takes them.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from firmware.core.pilot import (
    BAND_V,
    DEBOUNCE_S,
    DIODE_LOW_MAX_V,
    EPSILON,
    HYSTERESIS_V,
    NOMINAL_V,
    PILOT_FAULT_AFTER_S,
    Cp,
    PilotMonitor,
    PilotReading,
    classify,
)

STEP_S = 0.01
T0 = 50.0
#: Every band edge of Table A.4: (state, edge volts).
EDGES = [(cp, NOMINAL_V[cp] + sign * BAND_V) for cp in Cp for sign in (-1, 1)]


def settle(m: PilotMonitor, volts: float, t: float) -> float:
    """Feed a clean level until it is reported; the time after."""
    for _ in range(10):
        m.update(volts, -12.0, False, t)
        t += STEP_S
    return t


def run(m: PilotMonitor, samples: list[float], t: float) -> list[tuple[float, PilotReading]]:
    reports: list[tuple[float, PilotReading]] = []
    for i, volts in enumerate(samples):
        now = t + i * STEP_S
        reading = m.update(volts, -12.0, False, now)
        if reading is not None:
            reports.append((now, reading))
    return reports


@settings(max_examples=60, deadline=None)
@given(edge=st.sampled_from(EDGES), noise=st.lists(st.floats(-0.6, 0.6), min_size=1, max_size=200))
def test_noise_around_an_edge_reports_only_the_two_sides_of_it(edge: tuple[Cp, float], noise: list[float]) -> None:
    cp, edge_v = edge
    m = PilotMonitor()
    t = settle(m, NOMINAL_V[cp], T0)
    samples = [edge_v + n for n in noise]
    seen = {classify(v) for v in samples} | {classify(v, cp) for v in samples}
    reports = run(m, samples, t)
    for _, reading in reports:
        assert reading.cp in seen, "a state no sample showed"


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from([Cp.A, Cp.B, Cp.C, Cp.D]),
       noise=st.lists(st.floats(-(BAND_V + HYSTERESIS_V) + 0.01, BAND_V + HYSTERESIS_V - 0.01), max_size=300))
def test_a_signal_inside_its_band_and_hysteresis_is_never_reported_as_anything_else(
        state: Cp, noise: list[float]) -> None:
    m = PilotMonitor()
    t = settle(m, NOMINAL_V[state], T0)
    assert run(m, [NOMINAL_V[state] + n for n in noise], t) == []
    assert m.stable is state


LASTING = [True] * 3 + [True, False] * 40  # out of band for 30 ms, then half the samples: a broken front end


@settings(max_examples=80, deadline=None)
@given(edge=st.sampled_from(EDGES), pattern=st.lists(st.booleans(), min_size=1, max_size=300))
@example(edge=(Cp.C, 7.0), pattern=LASTING)
@example(edge=(Cp.B, 10.0), pattern=[True] * 49 + [False] * 3 + [True] * 60)
def test_a_lasting_fault_needs_an_out_of_band_reading_for_the_whole_fault_time(
        edge: tuple[Cp, float], pattern: list[bool]) -> None:
    """Samples alternate between a clean level of the state and a level just outside its band (in a gap
    or in the next band), in any pattern. A lasting report comes only when out-of-band has been the
    stable reading for PILOT_FAULT_AFTER_S from the first out-of-band sample of that stretch."""
    cp, edge_v = edge
    outside = edge_v + (0.5 if edge_v > NOMINAL_V[cp] else -0.5)
    m = PilotMonitor()
    t = settle(m, NOMINAL_V[cp], T0)
    samples = [outside if out else NOMINAL_V[cp] for out in pattern]
    reports = run(m, samples, t)
    for i, (when, reading) in enumerate(reports):
        if reading.lasting:
            assert i > 0
            previous_when, previous = reports[i - 1]
            assert previous.cp is None
            assert not previous.lasting
            # the None report came DEBOUNCE_S after the stretch's first sample
            assert when - (previous_when - DEBOUNCE_S) >= PILOT_FAULT_AFTER_S - EPSILON


def test_a_broken_front_end_reading_out_of_band_half_the_time_is_a_lasting_fault() -> None:
    m = PilotMonitor()
    t = settle(m, 6.0, T0)
    reports = run(m, [7.5 if out else 6.0 for out in LASTING], t)
    assert [r for _, r in reports] == [PilotReading(cp=None), PilotReading(cp=None, lasting=True)]


@settings(max_examples=60, deadline=None)
@given(state=st.sampled_from([Cp.A, Cp.B, Cp.C, Cp.D]), spikes=st.lists(st.booleans(), min_size=1, max_size=300))
def test_single_sample_spikes_out_of_band_are_never_reported(state: Cp, spikes: list[bool]) -> None:
    """A spike is one sample: between two spikes there is always a clean sample (the debounce is 3)."""
    samples: list[float] = []
    for spike in spikes:
        samples += [NOMINAL_V[state] + 1.7, NOMINAL_V[state]] if spike else [NOMINAL_V[state]]
    m = PilotMonitor()
    t = settle(m, NOMINAL_V[state], T0)
    assert run(m, samples, t) == []


@settings(max_examples=60, deadline=None)
@given(sag=st.lists(st.floats(-13.0, DIODE_LOW_MAX_V), min_size=1, max_size=200))
def test_a_sagging_negative_rail_is_no_diode_fault(sag: list[float]) -> None:
    m = PilotMonitor()
    t = T0
    for _ in range(10):
        m.update(6.0, -12.0, True, t)
        t += STEP_S
    for i, low in enumerate(sag):
        reading = m.update(6.0, low, True, t + i * STEP_S)
        assert reading is None or reading.diode_ok
