"""The facts supervision takes and gives (see `firmware.core.supervision`): readings the shell
reports, and facts for the charger.

What it must never do: carry anything but plain, checked values (no I/O, no clock, no decisions).
The readings are deliberately not `Event`s, so one cannot be handed to the charger by mistake.
Standard: IEC 61851-1 Annex B (PP resistances); EVerest's evse_manager error model.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.events import (
    FaultCleared,
    FaultRaised,
    PerEvse,
    PpChanged,
    _check_cid,
    _check_finite,
)

__all__ = [
    "FallbackChanged",
    "FaultChange",
    "InputsSensed",
    "LinkChange",
    "LinkDown",
    "LinkUp",
    "LockSensed",
    "MeterReadFailed",
    "MeterReadSucceeded",
    "MeterRejected",
    "OnlineChanged",
    "Output",
    "OutputFailed",
    "PpSampled",
    "RelaySensed",
    "Sensed",
    "SupervisionEvent",
]


# --- Inputs ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Sensed(PerEvse):
    """Base of the per-EVSE readings the shell reports to supervision (not an `Event`: a reading
    cannot be handed to the charger by mistake)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InputsSensed(Sensed):
    """One round's RCD trip output and over-temperature alarm."""

    rcd_tripped: bool
    overtemperature: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RelaySensed(Sensed):
    """The contactor as last commanded and its mirror contact (None: not wired)."""

    commanded_closed: bool
    feedback_closed: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PpSampled(Sensed):
    """A raw PP resistance in ohms; None means open circuit."""

    ohms: float | None

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        if self.ohms is not None:
            _check_finite("ohms", self.ohms, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReadSucceeded(Sensed):
    """A meter read returned a sample: its import register (Wh) and phase voltages (V; 0.0: not
    measured), which supervision checks for plausibility before the sample may go to the charger."""

    energy_wh_import: float | None = None
    voltages_v: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterReadFailed(Sensed):
    """A meter read failed (HardwareError) or a first read did not answer in time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LockSensed(Sensed):
    """The connector lock was driven to `locked`; `confirmed` when its feedback switch agreed in time."""

    locked: bool
    confirmed: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputFailed(Sensed):
    """An output of the EVSE (`output`: "relay", "pwm" or "lock") could not be written (HardwareError)."""

    output: str


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkUp:
    """The backend (MQTT) link is connected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkDown:
    """The backend (MQTT) link is not connected (also reported at the end of boot)."""


SupervisionEvent = (
    InputsSensed | RelaySensed | PpSampled | MeterReadSucceeded | MeterReadFailed
    | LockSensed | OutputFailed | LinkUp | LinkDown
)


# --- Outputs: facts for the charger ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineChanged:
    """The backend became reachable or not: `Charger.online = online`."""

    online: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackChanged:
    """The fallback current in force (None: none): `Charger.set_fallback(current_a)`."""

    current_a: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterRejected(PerEvse):
    """A meter reading that is not plausible (`reason`): it counts as a failed read and its sample is
    not given to the charger."""

    reason: str


FaultChange = FaultRaised | FaultCleared
LinkChange = OnlineChanged | FallbackChanged
Output = FaultRaised | FaultCleared | PpChanged | OnlineChanged | FallbackChanged | MeterRejected
