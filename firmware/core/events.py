"""Vocabulary of the core: enums that cross MQTT, input events and output actions.

Inputs are past-tense facts or commands named after the request; actions are imperatives. All are
frozen, slotted, keyword-only dataclasses that validate themselves (ValueError), so a malformed event
never reaches a machine. Enum values are the EVerest `evse_manager` names and API.md's strings; they
must never change. This module does no I/O and reads no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from firmware.core.pilot import Cp


class SessionEvent(StrEnum):
    """evse_manager SessionEvent (seeds/everest_types_evse_manager.rst)."""

    ENABLED = "Enabled"
    DISABLED = "Disabled"
    SESSION_STARTED = "SessionStarted"
    AUTH_REQUIRED = "AuthRequired"
    CHARGING_STARTED = "ChargingStarted"
    CHARGING_PAUSED_EV = "ChargingPausedEV"
    CHARGING_PAUSED_EVSE = "ChargingPausedEVSE"
    CHARGING_RESUMED = "ChargingResumed"
    SESSION_FINISHED = "SessionFinished"
    SESSION_CANCELLED = "SessionCancelled"
    ERROR = "Error"
    PERMANENT_FAULT = "PermanentFault"
    RESERVATION_START = "ReservationStart"
    RESERVATION_END = "ReservationEnd"
    RESERVATION_AUTHTOKEN_MISMATCH = "ReservationAuthtokenMismatch"
    REPLUG_STARTED = "ReplugStarted"
    REPLUG_FINISHED = "ReplugFinished"


class SessionCancellationReason(StrEnum):
    """evse_manager SessionCancellationReason."""

    EMERGENCY_STOP = "EmergencyStop"
    EV_DISCONNECTED = "EVDisconnected"
    HARD_RESET = "HardReset"
    LOCAL = "Local"
    OTHER = "Other"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    REMOTE = "Remote"
    SOFT_RESET = "SoftReset"
    UNLOCK_COMMAND = "UnlockCommand"
    DE_AUTHORIZED = "DeAuthorized"


class StartSessionReason(StrEnum):
    """Why a session started (EVerest StartSessionReason)."""

    EV_CONNECTED = "EVConnected"
    AUTHORIZED = "Authorized"


class Error(StrEnum):
    """evse_manager Error, plus the additions API.md §4 allows."""

    CAR = "Car"
    CAR_DIODE_FAULT = "CarDiodeFault"
    RELAIS = "Relais"
    RCD = "RCD"
    VENTILATION_NOT_AVAILABLE = "VentilationNotAvailable"
    OVER_CURRENT = "OverCurrent"
    INTERNAL = "Internal"
    SLAC = "SLAC"
    HLC = "HLC"
    METER_LOST = "MeterLost"
    OVERTEMPERATURE = "Overtemperature"
    PILOT_FAULT = "PilotFault"
    CONNECTOR_LOCK_FAILURE = "ConnectorLockFailure"  # EVerest: connector_lock/ConnectorLockFailedLock|Unlock


class Fault(StrEnum):
    """Hardware faults reported to the core (after EVerest's errors/*.yaml). Each forces FAULTED."""

    RCD_TRIPPED = "rcd_tripped"
    RELAY_WELDED = "relay_welded"
    RELAY_STUCK_OPEN = "relay_stuck_open"
    OVER_CURRENT = "over_current"
    OVERTEMPERATURE = "overtemperature"
    METER_LOST = "meter_lost"
    PILOT_FAULT = "pilot_fault"
    INTERNAL = "internal"
    RCD_SELF_TEST_FAILED = "rcd_self_test_failed"  # the RCD did not trip (or release) on its test input
    CONNECTOR_LOCK_FAILED = "connector_lock_failed"  # the lock's feedback did not confirm
    OUTPUT_FAILED = "output_failed"  # a relay, PWM or lock output could not be written (until restart)


#: Catalogue: the API error each fault is reported as.
FAULT_ERROR: Final[dict[Fault, Error]] = {
    Fault.RCD_TRIPPED: Error.RCD,
    Fault.RELAY_WELDED: Error.RELAIS,
    Fault.RELAY_STUCK_OPEN: Error.RELAIS,
    Fault.OVER_CURRENT: Error.OVER_CURRENT,
    Fault.OVERTEMPERATURE: Error.OVERTEMPERATURE,
    Fault.METER_LOST: Error.METER_LOST,
    Fault.PILOT_FAULT: Error.PILOT_FAULT,
    Fault.INTERNAL: Error.INTERNAL,
    Fault.RCD_SELF_TEST_FAILED: Error.RCD,
    Fault.CONNECTOR_LOCK_FAILED: Error.CONNECTOR_LOCK_FAILURE,
    Fault.OUTPUT_FAILED: Error.INTERNAL,
}


class Status(StrEnum):
    """The EVSE status published in the state document (API.md §4, OCPP 1.6 ChargePointStatus)."""

    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"


class Led(StrEnum):
    """Status LED patterns; the HAL maps each to colours and blinking."""

    IDLE = "idle"
    RESERVED = "reserved"
    WAITING = "waiting"
    CHARGING = "charging"
    PAUSED = "paused"
    FINISHING = "finishing"
    UNAVAILABLE = "unavailable"
    FAULT = "fault"


#: One LED pattern per status (data, not code).
STATUS_LED: Final[dict[Status, Led]] = {
    Status.AVAILABLE: Led.IDLE,
    Status.RESERVED: Led.RESERVED,
    Status.PREPARING: Led.WAITING,
    Status.CHARGING: Led.CHARGING,
    Status.SUSPENDED_EV: Led.PAUSED,
    Status.SUSPENDED_EVSE: Led.PAUSED,
    Status.FINISHING: Led.FINISHING,
    Status.UNAVAILABLE: Led.UNAVAILABLE,
    Status.FAULTED: Led.FAULT,
}

#: `SetPwm.duty_pct` sentinels, as in the state document: 100 = constant +12 V (X1), 0 = -12 V (F).
DUTY_X1: Final = 100.0
DUTY_F: Final = 0.0


def _check_cid(cid: int) -> None:
    if isinstance(cid, bool) or not isinstance(cid, int) or cid < 1:
        raise ValueError(f"cid must be a positive integer, got {cid!r}")


def _check_finite(name: str, value: float, minimum: float = -math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")


# --- Input events --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PerEvse:
    """Base of every fact about one EVSE: its `cid`, checked."""

    cid: int

    def __post_init__(self) -> None:
        _check_cid(self.cid)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(PerEvse):
    """Base of every input to an EVSE machine."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotSampled(Event):
    """Raw CP plateaus from the ADC; the charger debounces them into `PilotChanged`."""

    volts_hi: float
    volts_lo: float

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        _check_finite("volts_hi", self.volts_hi)
        _check_finite("volts_lo", self.volts_lo)


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotChanged(Event):
    """The debounced CP state changed (None: outside every band), with the diode check result.

    `lasting` is set on a second report of an out-of-band reading once it persisted for
    `pilot.PILOT_FAULT_AFTER_S`: only then is it a pilot fault."""

    cp: Cp | None
    diode_ok: bool = True
    lasting: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PpChanged(Event):
    """The PP resistance changed; None means open circuit."""

    ohms: float | None

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        if self.ohms is not None:
            _check_finite("ohms", self.ohms, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationGranted(Event):
    """A token was accepted for this EVSE (the decision was made by auth/reservations)."""

    id_token: str
    reservation_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthorizationRefused(Event):
    """A token was refused for this EVSE; `reservation_mismatch` when a reservation locked it out."""

    id_token: str
    reservation_mismatch: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRequested(Event):
    """End the running session (EVSE side) with this reason."""

    reason: SessionCancellationReason = SessionCancellationReason.REMOTE


@dataclass(frozen=True, slots=True, kw_only=True)
class SetEnabled(Event):
    """Enable or disable the EVSE; disabling stops a running session first with `reason`."""

    enabled: bool
    reason: SessionCancellationReason = SessionCancellationReason.REMOTE


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultRaised(Event):
    fault: Fault


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultCleared(Event):
    fault: Fault


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentLimitChanged(Event):
    """The EVSE's current limit: 0 pauses (SuspendedEVSE), else 6 A .. the EVSE's maximum."""

    current_a: float

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        _check_finite("current_a", self.current_a, 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSampled(Event):
    """A meter reading: energy registers and per-phase currents. `energy_wh_export` is None for a meter
    that does not count export (the SessionEvents then carry no export figure)."""

    energy_wh_import: float
    energy_wh_export: float | None = 0.0
    currents_a: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        _check_finite("energy_wh_import", self.energy_wh_import, 0.0)
        if self.energy_wh_export is not None:
            _check_finite("energy_wh_export", self.energy_wh_export, 0.0)
        for current_a in self.currents_a:
            _check_finite("currents_a", current_a)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplugRequested(Event):
    """Virtually unplug the EV: open, drive F for `duration_s`, then offer power again."""

    duration_s: float = 3.0

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        _check_finite("duration_s", self.duration_s, 0.3)


@dataclass(frozen=True, slots=True, kw_only=True)
class RcdSelfTested(Event):
    """The RCD self-test that `RunRcdSelfTest` asked for ended: `passed` when the RCD tripped on its test
    input in time and released again."""

    passed: bool


# --- Output actions ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    cid: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenRelay(Action):
    """Open the contactor. `under_load` when the EV was still drawing current."""

    under_load: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRelay(Action):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class SetPwm(Action):
    """Drive the CP: a duty in percent, or DUTY_X1 (100, constant +12 V) or DUTY_F (0, -12 V)."""

    duty_pct: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLed(Action):
    led: Led


@dataclass(frozen=True, slots=True, kw_only=True)
class SetLock(Action):
    """Drive the cable lock; the shell reports whether its feedback confirmed (`LockSensed`)."""

    locked: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRcdSelfTest(Action):
    """Run the RCD self-test beside the safety path; the shell answers with `RcdSelfTested`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestBackendAuth(Action):
    """Ask the backend about a token on `R/auth/request` (API.md §5 step 3)."""

    request_id: str
    id_token: str
    token_type: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthDecided(Action):
    """A token was decided at EVSE `cid` (answers a pending `authorize`). `status` is an AuthStatus."""

    id_token: str
    status: str
    reservation_id: int | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EmitSessionEvent(Action):
    """A SessionEvent for the backend (API.md §4). The shell adds `timestamp` and `seq`.

    Only the fields that belong to `event` are set: `reason` for SessionStarted
    (StartSessionReason) and SessionCancelled (SessionCancellationReason), `error` for Error, the
    energy registers for SessionStarted/Cancelled/Finished when a meter reading is known (None: the
    EVSE has no meter or no reading yet, and the payload omits the keys; never 0.0 in their place),
    `id_token` and `reservation_id` for SessionStarted. ReservationStart: `reservation_id`, `id_token`
    (the reserved token), `parent_id_token`, or `global_hold` (a G3 hold: no reservation of its own).
    ReservationEnd: `reservation_id` and `reason` (a ReservationEndReason value). `firmware/wire.py`
    turns it into the document; the core never builds one.
    """

    uuid: str
    event: SessionEvent
    reason: str | None = None
    error: Error | None = None
    energy_wh_import: float | None = None
    energy_wh_export: float | None = None
    id_token: str | None = None
    reservation_id: int | None = None
    parent_id_token: str | None = None
    global_hold: bool = False
