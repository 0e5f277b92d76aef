"""Table-driven tests of the pilot layer (firmware/core/pilot.py), with hypothesis properties for the
current <-> duty conversion.

Every table row cites the IEC 61851-1:2017 clause it encodes: Table A.4 (CP voltage bands), A.2.2
(diode check), Table B.2 (PP coding resistor), Tables A.7 / A.8 (duty <-> current). Time is injected:
`PilotMonitor.update` gets `now`, so debounce is tested with `now` on either side of DEBOUNCE_S.
"""

from __future__ import annotations

import itertools

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.core.pilot import (
    BAND_V,
    DEBOUNCE_S,
    HIGH_SEGMENT_MIN_A,
    HYSTERESIS_V,
    LOW_SEGMENT_MAX_A,
    NOMINAL_V,
    PP_100_OHM_SINGLE_PHASE_A,
    PILOT_FAULT_AFTER_S,
    PP_RANGES,
    Cp,
    PilotMonitor,
    PilotReading,
    classify,
    current_to_duty,
    diode_ok,
    duty_to_current,
    pp_ampacity_a,
    signals_digital_communication,
)

NAN = math.nan
INF = math.inf
#: The time base of the monitor tests (test_debounce_is_exact_for_any_time_base covers others).
T = 100.0


# --- classify(): CP high plateau -> A..F -------------------------------------------------------------

CLASSIFY_ROWS: list[tuple[float, Cp | None, Cp | None]] = [
    # (volts_hi, previous, expected)
    # nominal voltages, IEC 61851-1 Table A.4
    (12.0, None, Cp.A),  # Table A.4: A, +12 V, no EV
    (9.0, None, Cp.B),  # Table A.4: B, +9 V, EV connected
    (6.0, None, Cp.C),  # Table A.4: C, +6 V, EV requests power
    (3.0, None, Cp.D),  # Table A.4: D, +3 V, ventilation requested
    (0.0, None, Cp.E),  # Table A.4: E, 0 V, CP shorted to PE
    (-12.0, None, Cp.F),  # Table A.4: F, -12 V, EVSE not available
    # band edges: +-1 V, inclusive (Table A.4)
    (13.0, None, Cp.A),  # Table A.4: A upper edge
    (11.0, None, Cp.A),  # Table A.4: A lower edge
    (10.0, None, Cp.B),  # Table A.4: B upper edge
    (8.0, None, Cp.B),  # Table A.4: B lower edge
    (7.0, None, Cp.C),  # Table A.4: C upper edge
    (5.0, None, Cp.C),  # Table A.4: C lower edge
    (4.0, None, Cp.D),  # Table A.4: D upper edge
    (2.0, None, Cp.D),  # Table A.4: D lower edge
    (1.0, None, Cp.E),  # Table A.4: E upper edge
    (-1.0, None, Cp.E),  # Table A.4: E lower edge
    (-11.0, None, Cp.F),  # Table A.4: F upper edge
    (-13.0, None, Cp.F),  # Table A.4: F lower edge
    # between bands: no state (Table A.4 leaves these undefined; a pilot fault for the EVSE)
    (13.5, None, None),  # above A
    (10.9, None, None),  # just below A
    (10.5, None, None),  # between A and B
    (10.1, None, None),  # just above B
    (7.9, None, None),  # just below B
    (7.5, None, None),  # between B and C
    (4.5, None, None),  # between C and D
    (1.5, None, None),  # between D and E
    (-5.0, None, None),  # between E and F
    (-13.5, None, None),  # below F
    # not a number: never a state
    (NAN, None, None),
    (INF, None, None),
    (-INF, None, None),
    (NAN, Cp.B, None),  # hysteresis never turns NaN into the previous state
    (INF, Cp.A, None),
    # hysteresis (ours, not IEC): the previous state's band is widened by HYSTERESIS_V = 0.4 V
    (10.3, Cp.B, Cp.B),  # B band + 0.3 V: stays B
    (7.7, Cp.B, Cp.B),  # B band - 0.3 V: stays B
    (10.5, Cp.B, None),  # beyond 1 + 0.4 V: not B any more
    (7.5, Cp.B, None),  # beyond 1 + 0.4 V below: not B any more
    (10.3, None, None),  # without a previous state, 10.3 V is no state
    (10.7, Cp.A, Cp.A),  # A band - 0.3 V: stays A
    (10.7, Cp.B, None),  # ... but is not B's
    (7.3, Cp.C, Cp.C),  # C band + 0.3 V: stays C
    (-10.7, Cp.F, Cp.F),  # F band + 0.3 V: stays F
    (6.0, Cp.B, Cp.C),  # hysteresis never masks a real change: B -> C
    (12.0, Cp.B, Cp.A),  # B -> A
    (-12.0, Cp.C, Cp.F),  # C -> F
]


@pytest.mark.parametrize(("volts_hi", "previous", "expected"), CLASSIFY_ROWS)
def test_classify(volts_hi: float, previous: Cp | None, expected: Cp | None) -> None:
    assert classify(volts_hi, previous) is expected


@pytest.mark.parametrize(("volts_hi", "hysteresis_v", "expected"), [
    (10.3, 0.0, None),  # no hysteresis: just the Table A.4 band
    (10.3, HYSTERESIS_V, Cp.B),
    (10.8, 1.0, Cp.B),  # a wider hysteresis is honoured
])
def test_classify_hysteresis_width_is_a_parameter(volts_hi: float, hysteresis_v: float, expected: Cp | None) -> None:
    assert classify(volts_hi, Cp.B, hysteresis_v) is expected


def test_bands_do_not_overlap_even_with_hysteresis() -> None:
    """Adjacent Table A.4 nominals are >= 3 V apart, so a widened band never reaches the next band."""
    nominals = sorted(NOMINAL_V.values())
    for low, high in itertools.pairwise(nominals):
        assert high - low > 2 * BAND_V + HYSTERESIS_V


@pytest.mark.parametrize("volts_hi", [10.4, 7.6])
def test_classify_hysteresis_edge_is_inclusive_like_the_band_edges(volts_hi: float) -> None:
    assert classify(volts_hi, Cp.B) is Cp.B


# --- diode_ok(): low plateau with PWM on, IEC 61851-1 A.2.2 --------------------------------------------

@pytest.mark.parametrize(("volts_lo", "expected"), [
    (-12.0, True),  # A.2.2: nominal -12 V, diode present
    (-13.0, True),  # A.2.2: -12 V - 1 V
    (-11.0, True),  # A.2.2: -12 V + 1 V
    (-10.5, True),  # a -12 V rail sagging under load: still a diode (DIODE_LOW_MAX_V, Tinkerforge's -10 V)
    (-10.0, True),  # the edge (inclusive)
    (-9.9, False),  # above it: diode missing or shorted
    (0.0, False),  # diode shorted
    (9.0, False),  # no negative half-wave at all
    (NAN, False),  # no valid reading is not a diode
    (-INF, False),
])
def test_diode_ok(volts_lo: float, expected: bool) -> None:
    assert diode_ok(volts_lo) is expected


# --- PilotMonitor: debounce, hysteresis and diode check with time passed in ------------------------------

def volts(cp: Cp) -> float:
    return NOMINAL_V[cp]


def monitor_at(cp: Cp, now: float = T, *, pwm_on: bool = False) -> PilotMonitor:
    """A monitor whose stable (reported) state is `cp`, reached by real samples at `now` and later."""
    m = PilotMonitor()
    lo = -12.0 if pwm_on else volts(cp)
    assert m.update(volts(cp), lo, pwm_on, now) is None
    assert m.update(volts(cp), lo, pwm_on, now + 0.05) == PilotReading(cp=cp, diode_ok=True)
    return m


def test_new_state_is_reported_only_after_debounce() -> None:
    m = PilotMonitor()
    assert m.stable is None
    assert m.update(9.0, 9.0, False, T) is None  # first sample: a candidate, not a state
    assert m.update(9.0, 9.0, False, T + 0.02) is None  # 20 ms < DEBOUNCE_S: not enough
    assert m.update(9.0, 9.0, False, T + DEBOUNCE_S) == PilotReading(cp=Cp.B, diode_ok=True)
    assert m.stable is Cp.B
    assert m.update(9.0, 9.0, False, T + 0.04) is None  # reported once, not on every sample


def test_change_of_state_is_debounced_too() -> None:
    m = monitor_at(Cp.B)
    t1 = T + 1.0
    assert m.update(6.0, 6.0, False, t1) is None
    assert m.update(6.0, 6.0, False, t1 + 0.02) is None
    assert m.stable is Cp.B
    assert m.update(6.0, 6.0, False, t1 + DEBOUNCE_S) == PilotReading(cp=Cp.C, diode_ok=True)
    assert m.stable is Cp.C


def test_glitch_back_to_the_stable_state_cancels_the_candidate() -> None:
    m = monitor_at(Cp.B)
    t1 = T + 1.0
    assert m.update(6.0, 6.0, False, t1) is None  # candidate C
    assert m.update(9.0, 9.0, False, t1 + 0.01) is None  # back to B: candidate dropped
    assert m.update(6.0, 6.0, False, t1 + 0.02) is None  # C again: debounce restarts here
    assert m.update(6.0, 6.0, False, t1 + 0.04) is None  # 40 ms after the first C, 20 ms after the restart
    assert m.stable is Cp.B
    assert m.update(6.0, 6.0, False, t1 + 0.06) == PilotReading(cp=Cp.C, diode_ok=True)


def test_away_from_the_stable_state_for_the_debounce_reports_the_latest_state() -> None:
    m = monitor_at(Cp.B)
    t1 = T + 1.0
    assert m.update(6.0, 6.0, False, t1) is None  # away from B: C
    assert m.update(3.0, 3.0, False, t1 + 0.02) is None  # still away: D
    assert m.update(3.0, 3.0, False, t1 + 0.03) == PilotReading(cp=Cp.D, diode_ok=True)  # 30 ms away


def test_noise_between_two_other_states_still_leaves_the_stable_state() -> None:
    """Stable C; the EV goes to B on a noisy front end that reads B and between-band in turn. No state
    holds for the debounce, but C is gone: the latest state is reported (the relay then opens)."""
    m = monitor_at(Cp.C)
    t1 = T + 1.0
    readings = [9.0, 10.5, 9.0, 10.5]
    results = [m.update(v, v, False, t1 + i * 0.01) for i, v in enumerate(readings)]
    assert results[:3] == [None, None, None]
    assert results[3] == PilotReading(cp=None, diode_ok=True)
    assert m.update(9.0, 9.0, False, t1 + 0.04) is None  # now away from "out of band"


def test_a_sample_back_in_the_stable_state_cancels_the_change() -> None:
    m = monitor_at(Cp.C)
    t1 = T + 1.0
    assert m.update(9.0, 9.0, False, t1) is None
    assert m.update(6.0, 6.0, False, t1 + 0.02) is None  # back in C
    assert m.update(9.0, 9.0, False, t1 + 0.04) is None
    assert m.update(9.0, 9.0, False, t1 + 0.06) is None  # B for 20 ms since the last C
    assert m.update(9.0, 9.0, False, t1 + 0.07) == PilotReading(cp=Cp.B, diode_ok=True)


def test_an_out_of_band_reading_is_reported_again_as_lasting_after_the_fault_time() -> None:
    m = monitor_at(Cp.C)
    t1 = T + 1.0
    assert m.update(10.5, 10.5, False, t1) is None
    assert m.update(10.5, 10.5, False, t1 + DEBOUNCE_S) == PilotReading(cp=None, diode_ok=True)
    assert m.update(10.5, 10.5, False, t1 + PILOT_FAULT_AFTER_S - 0.001) is None
    assert m.update(10.5, 10.5, False, t1 + PILOT_FAULT_AFTER_S) == PilotReading(cp=None, lasting=True)
    assert m.update(10.5, 10.5, False, t1 + PILOT_FAULT_AFTER_S + 0.1) is None  # once


def test_an_out_of_band_reading_that_ends_in_time_is_never_lasting() -> None:
    m = monitor_at(Cp.C)
    t1 = T + 1.0
    m.update(10.5, 10.5, False, t1)
    assert m.update(10.5, 10.5, False, t1 + DEBOUNCE_S) == PilotReading(cp=None)
    assert m.update(9.0, 9.0, False, t1 + 0.4) is None
    assert m.update(9.0, 9.0, False, t1 + 0.43) == PilotReading(cp=Cp.B)
    for i in range(100):
        assert m.update(9.0, 9.0, False, t1 + 0.44 + i * 0.01) is None


@pytest.mark.parametrize("cp", list(Cp))
def test_first_reading_of_every_state_is_reported_after_debounce(cp: Cp) -> None:
    m = PilotMonitor()
    assert m.update(volts(cp), volts(cp), False, T) is None
    assert m.update(volts(cp), volts(cp), False, T + DEBOUNCE_S) == PilotReading(cp=cp, diode_ok=True)
    assert m.stable is cp


def test_persistent_out_of_band_reading_is_reported_as_none() -> None:
    m = PilotMonitor()
    assert m.update(10.5, 10.5, False, T) is None
    assert m.update(10.5, 10.5, False, T + DEBOUNCE_S) == PilotReading(cp=None, diode_ok=True)
    assert m.stable is None
    assert m.update(10.5, 10.5, False, T + 0.05) is None  # reported once


def test_out_of_band_after_a_stable_state_is_reported_as_none() -> None:
    m = monitor_at(Cp.C, pwm_on=True)
    t1 = T + 1.0
    assert m.update(7.5, -12.0, True, t1) is None  # beyond C's band + hysteresis, below B's band
    assert m.update(7.5, -12.0, True, t1 + 0.05) == PilotReading(cp=None, diode_ok=True)


def test_hysteresis_keeps_the_stable_state() -> None:
    m = monitor_at(Cp.B)
    for k in range(10):
        assert m.update(10.3, 10.3, False, T + 1.0 + 0.01 * k) is None
    assert m.stable is Cp.B


def test_without_a_stable_state_there_is_no_hysteresis() -> None:
    m = PilotMonitor()
    assert m.update(10.3, 10.3, False, T) is None
    assert m.update(10.3, 10.3, False, T + 0.05) == PilotReading(cp=None, diode_ok=True)


@pytest.mark.parametrize(("cp", "volts_lo", "expected"), [
    # A.2.2: with PWM on and an EV connected (B, C, D), the low plateau must be -12 V
    (Cp.B, -12.0, PilotReading(cp=Cp.B, diode_ok=True)),
    (Cp.C, -12.0, PilotReading(cp=Cp.C, diode_ok=True)),
    (Cp.D, -12.0, PilotReading(cp=Cp.D, diode_ok=True)),
    (Cp.B, 0.0, PilotReading(cp=Cp.B, diode_ok=False)),  # diode shorted
    (Cp.C, 0.0, PilotReading(cp=Cp.C, diode_ok=False)),
    (Cp.D, -9.9, PilotReading(cp=Cp.D, diode_ok=False)),  # just above DIODE_LOW_MAX_V
    (Cp.C, -10.6, PilotReading(cp=Cp.C, diode_ok=True)),  # a sagging rail is no diode fault
    # no EV diode in the circuit in A; E and F set the low plateau themselves: no diode check
    (Cp.A, 0.0, PilotReading(cp=Cp.A, diode_ok=True)),
    (Cp.E, 0.0, PilotReading(cp=Cp.E, diode_ok=True)),
    (Cp.F, -12.0, PilotReading(cp=Cp.F, diode_ok=True)),
])
def test_diode_check_with_pwm_on(cp: Cp, volts_lo: float, expected: PilotReading) -> None:
    m = PilotMonitor()
    assert m.update(volts(cp), volts_lo, True, T) is None
    assert m.update(volts(cp), volts_lo, True, T + DEBOUNCE_S) == expected


@pytest.mark.parametrize("cp", [Cp.B, Cp.C, Cp.D])
def test_no_diode_check_with_pwm_off(cp: Cp) -> None:
    """X1 (constant +12 V): the low plateau equals the high one, e.g. +9 V in B; that is fine."""
    m = PilotMonitor()
    assert m.update(volts(cp), volts(cp), False, T) is None
    assert m.update(volts(cp), volts(cp), False, T + DEBOUNCE_S) == PilotReading(cp=cp, diode_ok=True)


def test_diode_change_on_a_stable_state_is_reported() -> None:
    m = monitor_at(Cp.C, pwm_on=True)
    t1 = T + 1.0
    assert m.update(6.0, 0.0, True, t1) is None  # one bad sample is not a diode fault (debounced)
    assert m.update(6.0, 0.0, True, t1 + DEBOUNCE_S) == PilotReading(cp=Cp.C, diode_ok=False)
    assert m.stable is Cp.C
    assert m.update(6.0, 0.0, True, t1 + 0.04) is None  # reported once
    assert m.update(6.0, -12.0, True, t1 + 0.05) == PilotReading(cp=Cp.C, diode_ok=True)  # back at once
    assert m.update(6.0, -12.0, True, t1 + 0.06) is None


def test_a_single_bad_low_plateau_is_no_diode_fault() -> None:
    m = monitor_at(Cp.C, pwm_on=True)
    assert m.update(6.0, 0.0, True, T + 1.0) is None
    assert m.update(6.0, -12.0, True, T + 1.01) is None
    assert m.update(6.0, 0.0, True, T + 1.02) is None
    assert m.update(6.0, 0.0, True, T + 1.04) is None  # the failure restarted at T + 1.02


def test_pwm_switching_off_clears_a_diode_fault() -> None:
    """When the EVSE stops oscillating (X1 or F), the low plateau says nothing about the diode."""
    m = monitor_at(Cp.B, pwm_on=True)
    assert m.update(9.0, 0.0, True, T + 1.0) is None
    assert m.update(9.0, 0.0, True, T + 1.0 + DEBOUNCE_S) == PilotReading(cp=Cp.B, diode_ok=False)
    assert m.update(9.0, 9.0, False, T + 1.04) == PilotReading(cp=Cp.B, diode_ok=True)


def test_reset_reports_the_same_stable_state_again_after_debounce() -> None:
    m = monitor_at(Cp.B)
    assert m.update(9.0, 9.0, False, T + 1.0) is None  # control: nothing new without reset
    m.reset()
    t1 = T + 2.0
    assert m.update(9.0, 9.0, False, t1) is None
    assert m.update(9.0, 9.0, False, t1 + 0.02) is None
    assert m.update(9.0, 9.0, False, t1 + DEBOUNCE_S) == PilotReading(cp=Cp.B, diode_ok=True)
    assert m.stable is Cp.B


def test_reset_drops_the_hysteresis_of_the_old_state() -> None:
    m = monitor_at(Cp.B)
    m.reset()
    assert m.update(10.3, 10.3, False, T + 1.0) is None
    assert m.update(10.3, 10.3, False, T + 1.05) == PilotReading(cp=None, diode_ok=True)


def test_reset_restarts_a_running_debounce() -> None:
    m = monitor_at(Cp.B)
    t1 = T + 1.0
    assert m.update(6.0, 6.0, False, t1) is None  # candidate C since t1
    m.reset()
    assert m.update(6.0, 6.0, False, t1 + 0.035) is None  # 35 ms after the first C, but after a reset
    assert m.update(6.0, 6.0, False, t1 + 0.07) == PilotReading(cp=Cp.C, diode_ok=True)


def test_reset_forgets_a_reported_diode_fault() -> None:
    m = monitor_at(Cp.C, pwm_on=True)
    assert m.update(6.0, 0.0, True, T + 1.0) is None
    assert m.update(6.0, 0.0, True, T + 1.0 + DEBOUNCE_S) == PilotReading(cp=Cp.C, diode_ok=False)
    m.reset()
    assert m.update(6.0, 0.0, True, T + 2.0) is None
    assert m.update(6.0, 0.0, True, T + 2.05) == PilotReading(cp=Cp.C, diode_ok=False)


def test_stable_is_unknown_after_reset() -> None:
    m = monitor_at(Cp.B)
    m.reset()
    assert m.stable is None


@pytest.mark.parametrize("t", [0.29, 127.99])
def test_debounce_is_exact_for_any_time_base(t: float) -> None:
    m = PilotMonitor()
    assert m.update(9.0, 9.0, False, t) is None
    assert m.update(9.0, 9.0, False, t + DEBOUNCE_S) == PilotReading(cp=Cp.B, diode_ok=True)


def test_zero_debounce_reports_at_the_first_sample() -> None:
    m = PilotMonitor(debounce_s=0.0)
    assert m.update(6.0, 6.0, False, T) == PilotReading(cp=Cp.C, diode_ok=True)


@pytest.mark.parametrize("debounce_s", [-0.001, -1.0])
def test_negative_debounce_is_refused(debounce_s: float) -> None:
    with pytest.raises(ValueError, match="debounce_s"):
        PilotMonitor(debounce_s)


def test_stable_property_follows_the_reports() -> None:
    m = PilotMonitor()
    assert m.stable is None  # unknown
    m.update(9.0, 9.0, False, T)
    assert m.stable is None  # a candidate is not stable
    m.update(9.0, 9.0, False, T + 0.05)
    assert m.stable is Cp.B
    m.update(10.5, 10.5, False, T + 1.0)
    m.update(10.5, 10.5, False, T + 1.05)
    assert m.stable is None  # out of band


# --- pp_ampacity_a(): PP coding resistor -> cable current capability, IEC 61851-1 Table B.2 ----------------

PP_ROWS: list[tuple[float | None, int, int | None]] = [
    # (ohms, phases, expected amps)
    (1500.0, 3, 13),  # Table B.2: 1.5 kOhm, 13 A
    (680.0, 3, 20),  # Table B.2: 680 Ohm, 20 A
    (220.0, 3, 32),  # Table B.2: 220 Ohm, 32 A
    (100.0, 3, 63),  # Table B.2: 100 Ohm, 63 A three-phase
    (100.0, 1, 70),  # Table B.2: 100 Ohm, 70 A single-phase
    (1500.0, 1, 13),  # the phase count matters only for 100 Ohm
    (680.0, 1, 20),
    (220.0, 1, 32),
    # interpretation ranges of Table B.2 (PP_RANGES), inclusive at both ends
    # a gap between two ranges counts as the lower class (Tinkerforge's rule, pilot.PP_RANGES)
    (1100.0, 3, 13), (2460.0, 3, 13), (1099.9, 3, 13), (2460.1, 3, None),
    (400.0, 3, 20), (936.0, 3, 20), (399.9, 3, 20), (936.1, 3, 13),
    (164.0, 3, 32), (308.0, 3, 32), (163.9, 3, 32), (308.1, 3, 20),
    (80.0, 3, 63), (140.0, 3, 63), (79.9, 3, None), (140.1, 3, 32),
    (80.0, 1, 70), (140.0, 1, 70),
    # open or invalid: never an assumed 13 A (Annex B; DESIGN.md timing table)
    (None, 3, None),  # open circuit
    (INF, 3, None),
    (NAN, 3, None),
    (0.0, 3, None),  # PP shorted
    (5000.0, 3, None),  # above every range
    (1000.0, 3, 13),  # between the 20 A and 13 A ranges: the lower class
    (350.0, 3, 20),  # between 32 A and 20 A
    (150.0, 3, 32),  # between 63 A and 32 A
    (150.0, 1, 32),  # the 70 A single-phase rating belongs to the 100 Ohm range only
]


@pytest.mark.parametrize(("ohms", "phases", "expected"), PP_ROWS)
def test_pp_ampacity(ohms: float | None, phases: int, expected: int | None) -> None:
    assert pp_ampacity_a(ohms, phases) == expected


@pytest.mark.parametrize(("low", "high", "nominal", "amps"), PP_RANGES)
def test_pp_ranges_are_inclusive(low: float, high: float, nominal: float, amps: int) -> None:
    single_phase = PP_100_OHM_SINGLE_PHASE_A if nominal == 100.0 else amps
    for ohms in (low, nominal, high):
        assert pp_ampacity_a(ohms) == amps
        assert pp_ampacity_a(ohms, 1) == single_phase
    below, above = math.nextafter(low, -INF), math.nextafter(high, INF)
    lower_class = [r[3] for r in PP_RANGES if r[0] > high]  # the ranges of higher resistance
    assert pp_ampacity_a(above) == (lower_class[-1] if lower_class else None)  # gap above: the lower class
    if low == min(r[0] for r in PP_RANGES):
        assert pp_ampacity_a(below) is None  # below the lowest range: a short
    else:
        assert pp_ampacity_a(below) == amps  # the gap below this range belongs to it


@pytest.mark.parametrize("phases", [0, 2, 4])
@pytest.mark.parametrize("ohms", [220.0, None])
def test_pp_refuses_an_impossible_phase_count(ohms: float | None, phases: int) -> None:
    with pytest.raises(ValueError, match="phases"):
        pp_ampacity_a(ohms, phases)


# --- current_to_duty(): what the EVSE signals, IEC 61851-1 Table A.7 ------------------------------------

DUTY_ROWS: list[tuple[float, float]] = [
    # (current_a, duty_pct); duty rounded down to 0.1 %
    (6.0, 10.0),  # Table A.7: 6 A minimum = 10 %
    (10.0, 16.6),  # 10 / 0.6 = 16.67 -> 16.6 (never more than asked)
    (16.0, 26.6),  # 26.67 -> 26.6
    (20.0, 33.3),
    (32.0, 53.3),
    (40.0, 66.6),
    (51.0, 85.0),  # Table A.7: 85 % = 51 A, top of the 0.6 A/% segment
    (51.5, 85.0),  # the 51..52.5 A gap is signalled as 51 A, never more
    (52.0, 85.0),
    (52.5, 85.0),  # (85 - 64) * 2.5 = 52.5, but Table A.8 reads 85 % as 51 A (see below)
    (52.74, 85.0),  # 85.1 % would be 52.75 A: more than asked
    (52.75, 85.1),  # first current of the 2.5 A/% segment at 0.1 % resolution
    (63.0, 89.2),  # Table A.7: 85..96 % -> I = (D - 64) * 2.5
    (70.0, 92.0),
    (80.0, 96.0),  # Table A.7: 80 A maximum = 96 %
]


@pytest.mark.parametrize(("current_a", "duty_pct"), DUTY_ROWS)
def test_current_to_duty(current_a: float, duty_pct: float) -> None:
    assert current_to_duty(current_a) == duty_pct


@pytest.mark.parametrize("current_a", [
    5.99,  # below 6 A the EVSE must not offer PWM (Table A.7)
    0.0,
    -1.0,
    80.1,  # above the 80 A of 96 %
    NAN,
    INF,
])
def test_current_to_duty_refuses_out_of_range(current_a: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        current_to_duty(current_a)


# --- duty_to_current(): what the EV reads, IEC 61851-1 Table A.8 ----------------------------------------

@pytest.mark.parametrize(("duty_pct", "current_a"), [
    (10.0, 6.0),  # Table A.8: 10 % -> 6 A
    (50.0, 30.0),  # Table A.8: 10..85 % -> I = 0.6 * D
    (85.0, 51.0),  # Table A.8: 85 % belongs to the 0.6 A/% segment
    (85.1, pytest.approx(52.75)),  # Table A.8: 85..96 % -> I = (D - 64) * 2.5
    (90.0, 65.0),
    (96.0, 80.0),
    (96.5, 80.0),  # Table A.8: 96..97 % -> 80 A
    (97.0, 80.0),
    (97.1, None),  # Table A.8: > 97 %: no charging
    (8.0, 6.0),  # Table A.8: 8..10 % -> 6 A
    (9.9, 6.0),
    (7.9, None),  # Table A.8: 7..8 %: no charging
    (5.0, None),  # Table A.8: 5 % = digital communication, not a current
    (2.0, None),  # Table A.8: < 3 %: no charging
    (0.0, None),  # state F
    (100.0, None),  # X1: constant +12 V, no PWM
    (NAN, None),
])
def test_duty_to_current(duty_pct: float, current_a: object) -> None:
    assert duty_to_current(duty_pct) == current_a


@pytest.mark.parametrize(("duty_pct", "expected"), [
    (5.0, True),  # Table A.7 / A.8: 5 % = digital communication required
    (3.0, True),  # Table A.8: 3..7 % band, inclusive
    (7.0, True),
    (2.9, False),
    (7.1, False),
    (10.0, False),  # a current, not digital communication
])
def test_signals_digital_communication(duty_pct: float, expected: bool) -> None:
    assert signals_digital_communication(duty_pct) is expected


# --- properties of the conversion ----------------------------------------------------------------------

CURRENTS = st.floats(min_value=6.0, max_value=80.0, allow_nan=False, allow_infinity=False)
#: The currents no duty at 0.1 % resolution can signal: 85 % reads as 51 A (Table A.8) and 85.1 % as
#: 52.75 A, so every request strictly between them is offered as 51 A. (pilot.py calls the gap
#: "51..52.5 A", but a request in [52.5, 52.75) is offered as 51 A as well; see test_current_to_duty.)
GAP_LOW_A = LOW_SEGMENT_MAX_A
GAP_HIGH_A = 52.75


@given(CURRENTS)
def test_signalled_current_never_exceeds_the_request(current_a: float) -> None:
    signalled_a = duty_to_current(current_to_duty(current_a))
    assert signalled_a is not None
    assert signalled_a <= current_a + 1e-9


@given(CURRENTS)
def test_resolution_loss_is_bounded_outside_the_gap(current_a: float) -> None:
    """Rounding down to 0.1 % of duty loses < 0.06 A (0.6 A/%) or < 0.25 A (2.5 A/%)."""
    signalled_a = duty_to_current(current_to_duty(current_a))
    assert signalled_a is not None
    if current_a <= GAP_LOW_A:
        assert signalled_a >= current_a - 0.06 - 1e-9
    elif signalled_a == 51.0:
        assert current_a < GAP_HIGH_A  # in the gap: 51 A, the most that does not exceed the request
    else:
        # The floor's 1e-9 tolerance (pilot.py) may round a request a few ulps below 52.75 A up to
        # 85.1 %; the "never more" property above still holds within 1e-9.
        assert current_a >= GAP_HIGH_A - 1e-9
        assert signalled_a >= current_a - 0.25 - 1e-9


@given(st.floats(min_value=GAP_LOW_A, max_value=GAP_HIGH_A - 1e-6, exclude_min=True))
def test_the_gap_is_signalled_as_51_a(current_a: float) -> None:
    assert current_to_duty(current_a) == 85.0
    assert duty_to_current(current_to_duty(current_a)) == 51.0


@given(CURRENTS, CURRENTS)
def test_current_to_duty_is_monotonic(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert current_to_duty(low) <= current_to_duty(high)


@given(CURRENTS)
def test_duty_is_on_the_0_1_pct_grid_within_10_to_96(current_a: float) -> None:
    duty = current_to_duty(current_a)
    assert 10.0 <= duty <= 96.0
    assert round(duty * 10) == pytest.approx(duty * 10, abs=1e-6)


def test_segment_constants_match_table_a7() -> None:
    assert LOW_SEGMENT_MAX_A == 85.0 * 0.6
    assert HIGH_SEGMENT_MIN_A == (85.0 - 64.0) * 2.5
