"""Contracts for every device the controller drives or reads (after EVerest's interfaces/*.yaml).

Each Protocol documents its units, whether calls are idempotent, and how it fails: a backend raises
`HardwareError` (from firmware.core.errors) with the underlying exception chained; it never returns a
made-up value. Backends are async context managers (`async with board:`) so they can open and
release buses. Nothing here decides anything about charging.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol, Self, runtime_checkable

from firmware.core.events import Led


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotSample:
    """The two plateaus of the CP signal in volts (IEC 61851-1 A.2). With PWM off both are equal."""

    volts_hi: float
    volts_lo: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSample:
    """One meter reading. Energy registers in Wh (import positive), power W, current A, voltage V.

    An optional quantity the meter does not provide is None (`energy_wh_export` of an import-only
    meter: ABB's B-series answers all-0xFF, some EM24s refuse the register); a phase or value a model
    has no register for is 0.0 (L2/L3 of a 1-phase meter)."""

    energy_wh_import: float
    energy_wh_export: float | None = 0.0
    power_w: float = 0.0
    currents_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
    voltages_v: tuple[float, float, float] = (0.0, 0.0, 0.0)
    frequency_hz: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRead:
    """A card held to the reader of EVSE `cid`."""

    cid: int
    id_token: str
    token_type: str = "RFID"


@runtime_checkable
class Pilot(Protocol):
    async def read_cp(self, cid: int) -> PilotSample:
        """Sample the CP plateaus (V). Raises HardwareError if the ADC does not answer."""
        ...

    async def read_pp(self, cid: int) -> float | None:
        """PP resistance to PE in ohms; None when open. Raises HardwareError on ADC failure."""
        ...

    async def set_duty(self, cid: int, duty_pct: float) -> None:
        """Drive the CP: 100 = constant +12 V (X1), 0 = constant -12 V (F), else 1 kHz PWM at this
        duty (percent). Idempotent. Raises HardwareError if the PWM cannot be set."""
        ...


@runtime_checkable
class Relays(Protocol):
    async def set_closed(self, cid: int, closed: bool) -> None:
        """Command the contactor. Idempotent. Raises HardwareError if the driver fails."""
        ...

    async def feedback_closed(self, cid: int) -> bool | None:
        """The auxiliary (mirror) contact: True when the contactor is closed; None when not wired."""
        ...


@runtime_checkable
class Leds(Protocol):
    async def set_led(self, cid: int, led: Led) -> None:
        """Show a pattern. Idempotent; failures raise HardwareError (not safety-relevant)."""
        ...


@runtime_checkable
class Lock(Protocol):
    async def set_locked(self, cid: int, locked: bool) -> None:
        """Drive the socket's cable lock actuator and wait for its feedback switch to confirm (may take
        up to a second: the caller runs it beside the safety path). Idempotent. Raises HardwareError
        when the actuator cannot be driven or the feedback does not confirm in time."""
        ...


@runtime_checkable
class Rcd(Protocol):
    async def tripped(self, cid: int) -> bool:
        """The residual-current device's trip output (6 mA DC / 30 mA AC): True while it is active, and
        once after a trip that ended before this call (a short trip is latched, never missed between
        two polls). A trip caused by `self_test` is not reported. Raises HardwareError."""
        ...

    async def self_test(self, cid: int) -> bool:
        """Pulse the RCD's test input and wait for its trip output (IEC 62955 / IEC 62752 self-test):
        True when it tripped within the board's time and released again, False when it did not.
        May take a few hundred ms; the caller must not hold up the safety path for it. Raises
        HardwareError when the pins cannot be driven."""
        ...

    def on_trip(self, callback: Callable[[int], None]) -> None:
        """Have `callback(cid)` called on the event loop as soon as a trip fires (an interrupt), so
        the controller reads `tripped` at once instead of at its next poll."""
        ...


@runtime_checkable
class TokenReader(Protocol):
    async def next_token(self) -> TokenRead:
        """Wait for the next card. Raises HardwareError if the reader is gone."""
        ...

    async def reopen(self) -> None:
        """Open again a reader that is gone (a USB reader replugged). Raises HardwareError while it
        is still missing."""
        ...


@runtime_checkable
class Temperature(Protocol):
    async def overtemperature(self, cid: int) -> bool:
        """The EVSE's over-temperature alarm (e.g. a thermal switch at the socket). HardwareError."""
        ...


@runtime_checkable
class Meter(Protocol):
    async def read(self) -> MeterSample:
        """Read the meter. Raises HardwareError on timeout, a bad frame, or an exception response."""
        ...


@runtime_checkable
class Board(Protocol):
    """Every device of one charger board; an async context manager."""

    pilot: Pilot
    relays: Relays
    leds: Leds
    lock: Lock
    rcd: Rcd
    temperature: Temperature
    tokens: TokenReader
    is_sim: bool

    def meter(self, cid: int) -> Meter | None:
        """The EVSE's meter, or None when it has none (the shell may then attach a Modbus meter)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...
