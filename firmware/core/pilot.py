"""Control pilot (CP) and proximity pilot (PP) decoding, and current <-> PWM duty conversion.

Pure functions and two small classes with time passed in; no I/O, no clock. Every threshold below is
a table entry citing IEC 61851-1:2017:

* CP states from the high plateau of the pilot signal, +-1 V bands (Table A.4): A +12 V, B +9 V,
  C +6 V, D +3 V, E 0 V, F -12 V. Readings between bands belong to no state.
* Diode check (A.2.2 / Table A.4 note): while the EVSE oscillates, the low plateau must be -12 V
  (+-1 V). A higher low plateau means the EV's diode is missing or shorted.
* PP: the cable's coding resistor Rc gives its current capability (Annex B, Table B.2). Outside every
  interpretation range, or open, the cable is invalid and a socket outlet must not charge.
* Duty <-> current (Tables A.7 and A.8): 10..85 % -> I = 0.6 * D; 85..96 % -> I = (D - 64) * 2.5;
  6 A minimum, 80 A maximum; 5 % asks for digital communication (ISO 15118) and signals no current.

This module never decides what the EVSE does with a reading; `evse/machine.py` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Cp(StrEnum):
    """A control-pilot state as measured (IEC 61851-1 Table A.4). Values cross MQTT as-is."""

    A = "A"  # +12 V: no EV connected
    B = "B"  # +9 V: EV connected, not requesting power
    C = "C"  # +6 V: EV requests power
    D = "D"  # +3 V: EV requests power and ventilation
    E = "E"  # 0 V: CP shorted to PE, or EVSE without supply
    F = "F"  # -12 V: EVSE not available (driven by us)


#: Nominal high-plateau voltage of each state, IEC 61851-1 Table A.4.
NOMINAL_V: Final[dict[Cp, float]] = {
    Cp.A: 12.0,
    Cp.B: 9.0,
    Cp.C: 6.0,
    Cp.D: 3.0,
    Cp.E: 0.0,
    Cp.F: -12.0,
}
#: Half-width of each band, IEC 61851-1 Table A.4 (the brief's "+-1 V").
BAND_V: Final = 1.0
#: Extra margin that keeps the current state before another is recognised (our hysteresis).
HYSTERESIS_V: Final = 0.4
#: A new CP state must be seen this long, without interruption, before it is reported. It is well
#: inside the 100 ms the EVSE has to open the contactor after C -> B (DESIGN.md timing table).
DEBOUNCE_S: Final = 0.03
#: Diode check, IEC 61851-1 A.2.2: the low plateau is -12 V +- 1 V while PWM is on and the EV's diode
#: is there; without it the low plateau follows the high one (+3..+9 V). The standard's -11 V edge is
#: the strictest reading, and a -12 V rail that sags under load crosses it with a healthy EV. We take
#: Tinkerforge's -10 V (evse-v2-bricklet iec61851.c: fault when the negative plateau > -10000 mV):
#: 2 V of room for the sag, and still 10 V from the nearest reading of a missing diode. The peers
#: range from EVerest's Yeti (-10.9 V, ControlPilot.cpp, with a symmetry check) to OpenEVSE (about
#: -9 V: m_ThreshDS = 260 ADC counts in J1772EvseController.cpp).
DIODE_LOW_MAX_V: Final = -10.0
#: An out-of-band CP reading is a pilot fault once it has lasted this long from its first sample; until
#: then the relay is open (it is no clean C) but the session goes on. 500 ms is SmartEVSE's glitch
#: filter for a CP short (main.cpp: 50 x 10 ms), twice OpenEVSE's 250 ms before any new pilot state is
#: accepted (open_evse.h DELAY_STATE_TRANSITION); EVerest's Yeti firmware never faults on an
#: out-of-band reading at all (it keeps the last state), which would hide a broken front end.
PILOT_FAULT_AFTER_S: Final = 0.5
#: Tolerance for comparing voltages and times computed in binary floating point (10.4 - 9.0 is
#: 1.4000000000000004; (0.29 + 0.03) - 0.29 is 0.02999999999999997): edges stay inclusive.
EPSILON: Final = 1e-9


def classify(volts_hi: float, previous: Cp | None = None, hysteresis_v: float = HYSTERESIS_V) -> Cp | None:
    """Classify the high-plateau voltage into A..F (IEC 61851-1 Table A.4), or None between bands.

    With `previous`, the previous state's band is widened by `hysteresis_v` on both sides, so a
    reading hovering at a band edge does not flap.
    """
    if not math.isfinite(volts_hi):
        return None
    if previous is not None and abs(volts_hi - NOMINAL_V[previous]) <= BAND_V + hysteresis_v + EPSILON:
        return previous
    for cp, nominal_v in NOMINAL_V.items():
        if abs(volts_hi - nominal_v) <= BAND_V + EPSILON:
            return cp
    return None


def nearest_cp(volts_hi: float) -> Cp:
    """The state whose nominal level is nearest (for display: what a voltage between bands is closest
    to; the machine itself treats such a reading as a pilot fault). Not finite: F."""
    if not math.isfinite(volts_hi):
        return Cp.F
    return min(NOMINAL_V, key=lambda cp: abs(volts_hi - NOMINAL_V[cp]))


def diode_ok(volts_lo: float) -> bool:
    """The diode check of IEC 61851-1 A.2.2: with PWM on, the low plateau must be about -12 V."""
    return math.isfinite(volts_lo) and volts_lo <= DIODE_LOW_MAX_V


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotReading:
    """What the pilot layer reports to the EVSE machine: a debounced CP state and the diode check.

    `cp` is None when the voltage sits outside every IEC band. Such a reading is reported twice: once
    debounced (`lasting` False: not a clean C, so the relay opens, but no fault yet: a noisy front end
    or a sagging -12 V rail reads between bands now and then) and once more, `lasting`, when it has
    persisted for `PILOT_FAULT_AFTER_S` (then it is a pilot fault). `diode_ok` is False only when PWM
    was on and the low plateau was not at about -12 V.
    """

    cp: Cp | None
    diode_ok: bool = True
    lasting: bool = False


class PilotMonitor:
    """Debounce and hysteresis for CP samples, with time passed in (IEC 61851-1 Table A.4).

    `update(volts_hi, volts_lo, pwm_on, now)` returns a `PilotReading` when the debounced state or
    the diode check changes (or an out-of-band reading has lasted `fault_after_s`), else None.

    Debounce: once the samples have been *away* from the stable state for `debounce_s` without a
    sample back in it, the latest sample's state is reported, whatever mix of states the noise gave
    in between (noise alternating B and out-of-band while C is stable leaves C: the relay opens). A
    sample back in the stable state cancels the change. A diode failure is debounced the same way, so
    one noisy sample, or one taken just before PWM started, ends no session. `reset()` forgets the
    stable state, so the next stable reading is reported even if it equals the old one (used after
    the EVSE stops driving F, when the old reading was its own -12 V).
    """

    __slots__ = ("_away_since", "_debounce_s", "_diode_bad_since", "_diode_ok", "_fault_after_s", "_known",
                 "_lasting_told", "_out_of_band_since", "_stable")

    def __init__(self, debounce_s: float = DEBOUNCE_S, fault_after_s: float | None = None) -> None:
        if debounce_s < 0:
            raise ValueError(f"debounce_s must be >= 0, got {debounce_s}")
        fault_after = PILOT_FAULT_AFTER_S if fault_after_s is None else fault_after_s
        if not fault_after >= debounce_s:
            raise ValueError(f"fault_after_s must be >= debounce_s ({debounce_s}), got {fault_after}")
        self._debounce_s = debounce_s
        self._fault_after_s = fault_after
        self._stable: Cp | None = None
        self._known = False
        self._away_since: float | None = None
        self._out_of_band_since: float | None = None
        self._lasting_told = False
        self._diode_ok = True
        self._diode_bad_since: float | None = None

    @property
    def stable(self) -> Cp | None:
        """The last reported CP state (None: unknown or out of band)."""
        return self._stable

    @property
    def settling(self) -> bool:
        """A new CP state or a diode failure is seen but not yet reported (its debounce runs)."""
        return self._away_since is not None or (self._diode_bad_since is not None and self._diode_ok)

    @property
    def watching(self) -> bool:
        """The monitor needs samples: it knows no stable state yet (at start, after `reset()`), or
        something is being timed on them: a CP change or a diode failure in its debounce, or an
        out-of-band reading not yet `lasting`. Until it is decided, the pilot must be sampled fast."""
        return not self._known or self.settling or (self._out_of_band_since is not None and not self._lasting_told)

    def reset(self) -> None:
        self._stable, self._known = None, False
        self._away_since = self._out_of_band_since = None
        self._diode_ok, self._diode_bad_since = True, None

    def update(self, volts_hi: float, volts_lo: float, pwm_on: bool, now: float) -> PilotReading | None:
        cp = classify(volts_hi, self._stable if self._known else None)
        diode = self._diode(cp, volts_lo, pwm_on, now)
        if self._known and cp == self._stable:
            self._away_since = None
        elif self._away_since is None:
            self._away_since = now
        away_since = self._away_since
        if away_since is not None and now - away_since >= self._debounce_s - EPSILON:
            self._stable, self._known, self._away_since = cp, True, None
            self._out_of_band_since, self._lasting_told = (away_since if cp is None else None), False
            self._diode_ok = diode
            return PilotReading(cp=cp, diode_ok=diode)
        since = self._out_of_band_since
        if (cp is None and since is not None and not self._lasting_told
                and now - since >= self._fault_after_s - EPSILON):
            self._lasting_told = True
            return PilotReading(cp=None, diode_ok=self._diode_ok, lasting=True)
        if self._known and cp == self._stable and diode != self._diode_ok:
            self._diode_ok = diode
            return PilotReading(cp=self._stable, diode_ok=diode)
        return None

    def _diode(self, cp: Cp | None, volts_lo: float, pwm_on: bool, now: float) -> bool:
        """The debounced diode check. It is meaningful only while oscillating and while the EV is
        connected (B, C, D); in A there is no diode in the circuit, and E/F drive the low plateau."""
        if not (pwm_on and cp in (Cp.B, Cp.C, Cp.D)) or diode_ok(volts_lo):
            self._diode_bad_since = None
        elif self._diode_bad_since is None:
            self._diode_bad_since = now
        # Still "ok" until the failure has lasted debounce_s.
        return self._diode_bad_since is None or now - self._diode_bad_since < self._debounce_s - EPSILON


# --- Proximity pilot, IEC 61851-1 Annex B Table B.2 -------------------------------------------------

#: (lowest ohms, highest ohms, nominal ohms, cable current capability in A) per coding resistor.
#: Interpretation ranges of IEC 61851-1:2017 Table B.2. The 100 Ohm cable is 63 A on three phases and
#: 70 A on one phase. A resistance in a gap between two ranges (936..1100, 308..400, 140..164 Ohm: a
#: worn contact or a tolerance stack) counts as the lower current class, the higher resistance's, as
#: Tinkerforge does (evse-v2-bricklet iec61851.c: >= 1000 Ohm 13 A, >= 330 Ohm 20 A, >= 150 Ohm 32 A)
#: instead of refusing to charge. Below 80 Ohm (a short) and above 2460 Ohm (open) stay invalid.
PP_RANGES: Final[tuple[tuple[float, float, float, int], ...]] = (
    (1100.0, 2460.0, 1500.0, 13),
    (400.0, 936.0, 680.0, 20),
    (164.0, 308.0, 220.0, 32),
    (80.0, 140.0, 100.0, 63),
)
PP_100_OHM_SINGLE_PHASE_A: Final = 70


def pp_ampacity_a(ohms: float | None, phases: int = 3) -> int | None:
    """Cable current capability from the PP resistance (IEC 61851-1 Table B.2).

    A resistance between two ranges counts as the lower class (see PP_RANGES). Returns None for an open
    (None, infinite), shorted (< 80 Ohm) or too high (> 2460 Ohm) PP: no charging on a socket outlet,
    and never an assumed 13 A.
    """
    if phases not in (1, 3):
        raise ValueError(f"phases must be 1 or 3, got {phases}")
    if ohms is None or not math.isfinite(ohms):
        return None
    for low, high, nominal, amps in PP_RANGES:  # highest resistance (lowest current) first
        if low <= ohms <= high:
            if nominal == 100.0 and phases == 1:
                return PP_100_OHM_SINGLE_PHASE_A
            return amps
        if ohms > high:  # in the gap above this range: the class above it, already passed, was lower
            return None if amps == PP_RANGES[0][3] else _lower_class_a(amps)
    return None


def _lower_class_a(amps: int) -> int:
    """The current class of the range just above (in resistance) the one rated `amps`."""
    ratings = [r[3] for r in PP_RANGES]
    return ratings[ratings.index(amps) - 1]


# --- Duty cycle <-> current, IEC 61851-1 Tables A.7 (EVSE) and A.8 (EV) ------------------------------

MIN_CURRENT_A: Final = 6.0
MAX_CURRENT_A: Final = 80.0
#: Top of the 0.6 A/% segment: 85 % -> 51 A. Table A.8 reads 85 % as 51 A, and the next duty we can
#: drive, 85.1 %, is (85.1 - 64) * 2.5 = 52.75 A: a request from 51 A up to 52.75 A is offered 51 A.
LOW_SEGMENT_MAX_A: Final = 51.0
HIGH_SEGMENT_MIN_A: Final = 52.5
#: 5 % (Table A.7): "digital communication required"; not a current.
DIGITAL_COMMUNICATION_DUTY_PCT: Final = 5.0
#: Duty resolution we drive; rounding is always down so we never offer more than allowed.
DUTY_RESOLUTION_PCT: Final = 0.1


def current_to_duty(current_a: float) -> float:
    """The PWM duty (percent) that offers at most `current_a` (IEC 61851-1 Table A.7).

    Raises ValueError below 6 A or above 80 A: below 6 A the EVSE must not offer PWM at all (pause).
    A request in the 51..52.75 A gap is offered as 51 A (85 %), the largest current that does not
    exceed it. The duty is rounded down to 0.1 %, so the signalled current never exceeds the request.
    """
    if not math.isfinite(current_a) or current_a < MIN_CURRENT_A or current_a > MAX_CURRENT_A:
        raise ValueError(f"current {current_a} A is outside {MIN_CURRENT_A:g}..{MAX_CURRENT_A:g} A")
    if current_a < HIGH_SEGMENT_MIN_A:
        duty = min(current_a, LOW_SEGMENT_MAX_A) / 0.6
    else:
        duty = current_a / 2.5 + 64.0
    steps = math.floor(duty / DUTY_RESOLUTION_PCT + 1e-9)
    return round(steps * DUTY_RESOLUTION_PCT, 1)


def duty_to_current(duty_pct: float) -> float | None:
    """The current (A) an EV may draw at `duty_pct` (IEC 61851-1 Table A.8), or None for no charging.

    None covers < 3 %, 7..8 %, > 97 % and the 3..7 % digital-communication band (see
    `signals_digital_communication`); 8..10 % means 6 A and 96..97 % means 80 A.
    """
    if not math.isfinite(duty_pct) or duty_pct < 8.0 or duty_pct > 97.0:
        return None
    if duty_pct < 10.0:
        return MIN_CURRENT_A
    if duty_pct <= 85.0:
        return round(duty_pct * 0.6, 6)
    if duty_pct <= 96.0:
        return round((duty_pct - 64.0) * 2.5, 6)
    return MAX_CURRENT_A


def signals_digital_communication(duty_pct: float) -> bool:
    """True in the 3..7 % band, i.e. the 5 % "digital communication required" (Table A.8)."""
    return 3.0 <= duty_pct <= 7.0
