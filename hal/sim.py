"""The simulated charger board: an EV, its cable, a meter, an RFID reader and injectable faults.

What it is for: running the unchanged controller on a laptop (development, tests, demonstrations, load
tests by backend teams). `SimBoard` implements every Protocol of `hal.protocols`, and a script API
(`plug`, `token`, `fault`, `load`; API.md §8 `sim_*` ops) plays the EV and the world around it.

What it must never do:

* be random: the same script gives the same readings, always;
* read a real clock: time comes only from the injected `clock` (monotonic seconds), which the meter
  integrates piecewise-constant power over, so energy is exact and reproducible;
* decide anything about charging: it models physics only. The EV draws current only when the
  contactor is really closed, it requests power (C/D) and the PWM offers a current; whether that is
  allowed is the controller's business.

Standard: IEC 61851-1:2017 Annex A. The EV's resistors set the high plateau of the CP (Table A.4:
A +12 V, B +9 V, C +6 V, D +3 V, E 0 V); the EVSE's generator drives -12 V for F and for the low
half of the PWM, which the EV's diode lets through only when it is intact (A.2.2); the EV reads the
offered current from the duty (Table A.8, `firmware.core.pilot.duty_to_current`).

Script methods validate every argument and raise ValueError naming the field, changing nothing.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Final, Literal, Self

from firmware.core.errors import HardwareError
from firmware.core.events import DUTY_F, DUTY_X1, Led
from firmware.core.pilot import duty_to_current
from firmware.core.reservations import MAX_TOKEN_LEN
from hal.protocols import Leds, Lock, MeterSample, Pilot, PilotSample, Rcd, Relays, Temperature, TokenRead, TokenReader

log = logging.getLogger(__name__)

#: High plateau the EV's resistors give each state it can be in, IEC 61851-1 Table A.4 (nominal).
EV_LEVEL_V: Final[dict[str, float]] = {"A": 12.0, "B": 9.0, "C": 6.0, "D": 3.0, "E": 0.0}
#: The generator's negative output: state F, and the low plateau of the PWM through an intact diode.
GENERATOR_LOW_V: Final = -12.0
#: Low plateau with the EV's diode missing (A.2.2): not negative.
MISSING_DIODE_LOW_V: Final = 0.0
#: Both plateaus while a "pilot" fault is injected: between bands B and C, out of every band.
PILOT_FAULT_V: Final = 7.5
#: Default cable coding resistor: 220 Ohm = 32 A (IEC 61851-1 Table B.2).
DEFAULT_PP_OHMS: Final = 220.0
#: Default current the EV draws when allowed (a 32 A on-board charger, matching the default cable).
DEFAULT_LOAD_A: Final = 32.0
#: Largest current an EV may be offered (IEC 61851-1 Table A.8), hence the largest `load`.
MAX_LOAD_A: Final = 80.0
FREQUENCY_HZ: Final = 50.0
FAULTS: Final = frozenset({"rcd", "relay_welded", "relay_stuck_open", "meter_lost", "overtemperature", "pilot"})


class Keep(Enum):
    """The type of KEEP."""

    KEEP = "keep"


#: `plug(..., pp_ohms=KEEP)` (the default) keeps the cable the EV already has.
KEEP: Final = Keep.KEEP


@dataclass(frozen=True, slots=True, kw_only=True)
class EvState:
    """Snapshot of the simulated EV: CP state A..E, cable PP resistance (None: open), diode, load."""

    cp: str
    pp_ohms: float | None
    diode_ok: bool
    load_a: float


@dataclass(slots=True, kw_only=True)
class _Evse:
    phases: int
    t_s: float  # clock time up to which energy_wh is integrated
    ev: EvState = EvState(cp="A", pp_ohms=DEFAULT_PP_OHMS, diode_ok=True, load_a=DEFAULT_LOAD_A)
    duty_pct: float = DUTY_F  # fail-safe until the controller drives something
    relay_cmd: bool = False
    led: Led | None = None
    locked: bool = False
    faults: set[str] = field(default_factory=set)
    energy_wh: float = 0.0
    rcd_self_test_works: bool = True
    rcd_latched: bool = False  # a trip not yet reported by tripped()

    def closed(self) -> bool:
        """The contactor's real state: a welded one is closed, a stuck one open, whatever is commanded."""
        return "relay_welded" in self.faults or (self.relay_cmd and "relay_stuck_open" not in self.faults)

    def current_a(self) -> float:
        """Per-phase current: min(load, offered) while closed, in C/D and offered a current by PWM."""
        pwm_on = DUTY_F < self.duty_pct < DUTY_X1
        offered_a = duty_to_current(self.duty_pct) if pwm_on else None
        if offered_a is None or not self.closed() or self.ev.cp not in ("C", "D"):
            return 0.0
        return min(self.ev.load_a, offered_a)


def _invalid(message: str) -> ValueError:
    """The error for a refused argument, a wrong type included: the script methods' contract is
    ValueError naming the field, whatever was wrong (the sim_* ops answer invalid_args to it)."""
    return ValueError(message)


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low:g}..{high:g}, got {value!r}")
    return float(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _invalid(f"{name} must be a bool, got {value!r}")
    return value


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_LEN:
        got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__  # never echo a token
        raise ValueError(f"{name} must be a string of 1..{MAX_TOKEN_LEN} characters, got {got}")
    return value


class SimMeter:
    """The simulated meter of one EVSE (implements `hal.protocols.Meter`)."""

    def __init__(self, board: SimBoard, cid: int) -> None:
        self._board, self._cid = board, cid

    async def read(self) -> MeterSample:
        return self._board._meter_sample(self._cid)


class SimBoard:
    """Every device of a simulated board; `pilot`, `relays`, ... `tokens` are the board itself."""

    def __init__(
        self,
        evse_ids: Iterable[int],
        *,
        clock: Callable[[], float],
        phases: Mapping[int, int] | int = 3,
        voltage_v: float = 230.0,
        meter_ids: Iterable[int] | None = None,
    ) -> None:
        ids = list(evse_ids)
        if not ids or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in ids):
            raise ValueError(f"evse_ids must be a non-empty list of integers >= 1, got {ids!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"evse_ids must be unique, got {ids!r}")
        if not callable(clock):
            raise _invalid("clock must be a callable returning monotonic seconds")
        per_cid = dict(phases) if isinstance(phases, Mapping) else dict.fromkeys(ids, phases)
        if unknown := set(per_cid) - set(ids):
            raise ValueError(f"phases names unknown EVSE ids {sorted(unknown)}")
        for cid, n in per_cid.items():
            if isinstance(n, bool) or n not in (1, 3):
                raise ValueError(f"phases of EVSE {cid} must be 1 or 3, got {n!r}")
        self._voltage_v = _number("voltage_v", voltage_v, 1.0, 1000.0)
        metered = ids if meter_ids is None else list(meter_ids)
        if unknown := set(metered) - set(ids):
            raise ValueError(f"meter_ids names unknown EVSE ids {sorted(unknown)}")
        self._clock = clock
        now = self._now()
        self._evses = {cid: _Evse(phases=per_cid.get(cid, 3), t_s=now) for cid in ids}
        self._meters = {cid: SimMeter(self, cid) for cid in metered}
        # Safe outside a running loop: since Python 3.10 a Queue binds to the loop on first wait.
        self._tokens: asyncio.Queue[TokenRead] = asyncio.Queue()
        #: (clock time, EVSE, closed) of every change of a relay command: how fast the controller reacted.
        self.relay_log: list[tuple[float, int, bool]] = []
        self.rcd_self_tests = 0  # how many self-tests the controller ran
        self._trip_listeners: list[Callable[[int], None]] = []
        self.pilot: Pilot = self
        self.relays: Relays = self
        self.leds: Leds = self
        self.lock: Lock = self
        self.rcd: Rcd = self
        self.temperature: Temperature = self
        self.tokens: TokenReader = self
        self.is_sim: bool = True

    # --- plumbing ---------------------------------------------------------------------------------

    def _now(self) -> float:
        return _number("clock()", self._clock(), -math.inf, math.inf)

    def _evse(self, cid: object) -> _Evse:
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in self._evses:
            raise ValueError(f"unknown EVSE id {cid!r}")
        return self._evses[cid]

    def _integrate(self, e: _Evse) -> None:
        """Bring e.energy_wh up to clock() with the power that applied since the last call."""
        now = self._now()
        if now > e.t_s:  # a clock that stepped back integrates nothing and is not double counted
            e.energy_wh += self._voltage_v * e.current_a() * e.phases * (now - e.t_s) / 3600.0
            e.t_s = now

    def _meter_sample(self, cid: int) -> MeterSample:
        e = self._evse(cid)
        self._integrate(e)
        if "meter_lost" in e.faults:
            raise HardwareError(f"meter of EVSE {cid} not answering (simulated)")
        i, v = e.current_a(), self._voltage_v
        return MeterSample(
            energy_wh_import=e.energy_wh,
            power_w=v * i * e.phases,
            currents_a=(i, i, i) if e.phases == 3 else (i, 0.0, 0.0),
            voltages_v=(v, v, v) if e.phases == 3 else (v, 0.0, 0.0),
            frequency_hz=FREQUENCY_HZ,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def meter(self, cid: int) -> SimMeter | None:
        self._evse(cid)
        return self._meters.get(cid)

    # --- devices (hal.protocols) ------------------------------------------------------------------

    async def read_cp(self, cid: int) -> PilotSample:
        e = self._evse(cid)
        if "pilot" in e.faults:
            return PilotSample(volts_hi=PILOT_FAULT_V, volts_lo=PILOT_FAULT_V)
        if e.ev.cp == "E":  # CP shorted to PE: nothing the generator drives gets through
            return PilotSample(volts_hi=0.0, volts_lo=0.0)
        if e.duty_pct == DUTY_F:
            return PilotSample(volts_hi=GENERATOR_LOW_V, volts_lo=GENERATOR_LOW_V)
        hi = EV_LEVEL_V[e.ev.cp]
        if e.duty_pct == DUTY_X1:
            return PilotSample(volts_hi=hi, volts_lo=hi)
        lo = GENERATOR_LOW_V if e.ev.cp == "A" or e.ev.diode_ok else MISSING_DIODE_LOW_V
        return PilotSample(volts_hi=hi, volts_lo=lo)

    async def read_pp(self, cid: int) -> float | None:
        e = self._evse(cid)
        return None if e.ev.cp == "A" else e.ev.pp_ohms

    async def set_duty(self, cid: int, duty_pct: float) -> None:
        e = self._evse(cid)
        duty = _number("duty_pct", duty_pct, DUTY_F, DUTY_X1)
        self._integrate(e)
        e.duty_pct = duty

    async def set_closed(self, cid: int, closed: bool) -> None:
        e = self._evse(cid)
        cmd = _flag("closed", closed)
        self._integrate(e)
        if cmd != e.relay_cmd:
            self.relay_log.append((self._now(), cid, cmd))
        e.relay_cmd = cmd

    async def feedback_closed(self, cid: int) -> bool | None:
        return self._evse(cid).closed()

    async def set_led(self, cid: int, led: Led) -> None:
        e = self._evse(cid)
        if not isinstance(led, Led):
            raise _invalid(f"led must be a Led, got {led!r}")
        e.led = led

    async def set_locked(self, cid: int, locked: bool) -> None:
        e = self._evse(cid)
        e.locked = _flag("locked", locked)

    async def tripped(self, cid: int) -> bool:
        """Active, or tripped and released since the last call (latched, as the Rcd contract says)."""
        e = self._evse(cid)
        latched, e.rcd_latched = e.rcd_latched, False
        return latched or "rcd" in e.faults

    async def self_test(self, cid: int) -> bool:
        """The simulated RCD trips on its test input and releases, unless its self-test is made to fail
        (`rcd_self_test_fails`) or it is tripped already (a trip that never releases fails the test)."""
        e = self._evse(cid)
        self.rcd_self_tests += 1
        return e.rcd_self_test_works and "rcd" not in e.faults

    def on_trip(self, callback: Callable[[int], None]) -> None:
        self._trip_listeners.append(callback)

    async def overtemperature(self, cid: int) -> bool:
        return "overtemperature" in self._evse(cid).faults

    async def next_token(self) -> TokenRead:
        return await self._tokens.get()

    async def reopen(self) -> None:
        """The simulated reader is never gone."""

    # --- script API (tests, console, API.md §8 sim_* ops) -----------------------------------------

    def plug(
        self, cid: int, cp: str = "B", pp_ohms: float | Literal[Keep.KEEP] | None = KEEP, diode_ok: bool = True
    ) -> None:
        """Set the EV: cp A (unplugged) .. E (short); pp_ohms the cable (None: open; KEEP: unchanged)."""
        e = self._evse(cid)
        if not isinstance(cp, str) or cp not in EV_LEVEL_V:
            raise ValueError(f"cp must be one of {', '.join(EV_LEVEL_V)}, got {cp!r}")
        if pp_ohms is KEEP:
            pp = e.ev.pp_ohms
        else:
            pp = None if pp_ohms is None else _number("pp_ohms", pp_ohms, 0.0, math.inf)
        diode = _flag("diode_ok", diode_ok)
        self._integrate(e)
        e.ev = replace(e.ev, cp=cp, pp_ohms=pp, diode_ok=diode)
        log.debug("sim c%d: EV cp=%s pp_ohms=%s diode_ok=%s", cid, cp, pp, diode)

    def token(self, cid: int, id_token: str, token_type: str = "RFID") -> None:
        """Hold a card to the reader of EVSE `cid`; `next_token()` delivers reads in order."""
        self._evse(cid)
        read = TokenRead(cid=cid, id_token=_text("id_token", id_token), token_type=_text("token_type", token_type))
        self._tokens.put_nowait(read)
        log.debug("sim c%d: token %s…", cid, id_token[:2])

    def fault(self, cid: int, fault: str, active: bool) -> None:
        """Inject (active=True) or clear a hardware fault, one of FAULTS."""
        e = self._evse(cid)
        if not isinstance(fault, str) or fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(sorted(FAULTS))}, got {fault!r}")
        on = _flag("active", active)
        self._integrate(e)
        was_tripped = "rcd" in e.faults
        (e.faults.add if on else e.faults.discard)(fault)
        log.debug("sim c%d: fault %s %s", cid, fault, "on" if on else "off")
        if fault == "rcd" and on and not was_tripped:
            e.rcd_latched = True  # a trip shorter than a poll is still reported once
            for listener in self._trip_listeners:
                listener(cid)

    def rcd_self_test_fails(self, cid: int, fails: bool = True) -> None:
        """Make the RCD's self-test fail (its test input does nothing), or work again."""
        self._evse(cid).rcd_self_test_works = not _flag("fails", fails)

    def load(self, cid: int, current_a: float) -> None:
        """Set the current the EV draws per phase when allowed (it never draws more than offered)."""
        e = self._evse(cid)
        amps = _number("current_a", current_a, 0.0, MAX_LOAD_A)
        self._integrate(e)
        e.ev = replace(e.ev, load_a=amps)

    # --- read-only views --------------------------------------------------------------------------

    def ev(self, cid: int) -> EvState:
        return self._evse(cid).ev

    def relay_commanded(self, cid: int) -> bool:
        return self._evse(cid).relay_cmd

    def duty_pct(self, cid: int) -> float:
        return self._evse(cid).duty_pct

    def led(self, cid: int) -> Led | None:
        return self._evse(cid).led

    def locked(self, cid: int) -> bool:
        return self._evse(cid).locked

    def faults(self, cid: int) -> frozenset[str]:
        return frozenset(self._evse(cid).faults)

    def current_a(self, cid: int) -> float:
        """Current per present phase, in A."""
        return self._evse(cid).current_a()

    def energy_wh(self, cid: int) -> float:
        """Energy delivered so far, up to clock() (also for an EVSE without a simulated meter)."""
        e = self._evse(cid)
        self._integrate(e)
        return e.energy_wh

    def restore_energy(self, cid: int, energy_wh: float) -> None:
        """Set the simulated meter's import register after a restart (a real meter keeps its own in
        non-volatile memory). It never goes backwards: a lower value is ignored."""
        e = self._evse(cid)
        value = _number("energy_wh", energy_wh, 0.0, math.inf)
        self._integrate(e)
        e.energy_wh = max(e.energy_wh, value)
