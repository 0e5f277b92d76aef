"""The catalogue of the core: the enums that cross MQTT and the tables between them.

SessionEvent, the cancellation and start reasons, Error and Fault (with FAULT_ERROR, the Error each
Fault is reported as), Status and the LED pattern of each status. Their values are the EVerest
`evse_manager` names and API.md's strings, and must never change. `firmware.core.events` re-exports
them with the events and actions. This module does no I/O, reads no clock and imports nothing of the
project.

Standard: EVerest types/evse_manager.yaml (SessionEvent, Error, reasons; seeds/), OCPP 1.6
ChargePointStatus for Status, API.md §4.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


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
    FAULT = "fault"  # a fault without a pattern of its own (internal, an output, the lock, the F hold)
    FAULT_RCD = "fault_rcd"
    FAULT_RELAY = "fault_relay"
    FAULT_OVERTEMPERATURE = "fault_overtemperature"
    FAULT_METER = "fault_meter"
    FAULT_PILOT = "fault_pilot"


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

#: The pattern of each error while Faulted, so a technician tells them apart at a glance (the first
#: active fault in this order); a fault not listed shows Led.FAULT.
FAULT_LED: Final[dict[Fault, Led]] = {
    Fault.RCD_TRIPPED: Led.FAULT_RCD,
    Fault.RCD_SELF_TEST_FAILED: Led.FAULT_RCD,
    Fault.RELAY_WELDED: Led.FAULT_RELAY,
    Fault.RELAY_STUCK_OPEN: Led.FAULT_RELAY,
    Fault.OVERTEMPERATURE: Led.FAULT_OVERTEMPERATURE,
    Fault.METER_LOST: Led.FAULT_METER,
    Fault.PILOT_FAULT: Led.FAULT_PILOT,
}
