"""Vocabulary of the core: input events and output actions, and (from `catalogue`) the enums that cross MQTT.

Inputs are past-tense facts or commands named after the request; actions are imperatives. All are
frozen, slotted, keyword-only dataclasses that validate themselves (ValueError), so a malformed event
never reaches a machine. Enum values are the EVerest `evse_manager` names and API.md's strings; they
must never change. This module does no I/O and reads no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from firmware.core.catalogue import (  # re-exported: events is the core's one vocabulary
    FAULT_ERROR as FAULT_ERROR,
    FAULT_LED as FAULT_LED,
    STATUS_LED as STATUS_LED,
    Error as Error,
    Fault as Fault,
    Led as Led,
    SessionCancellationReason as SessionCancellationReason,
    SessionEvent as SessionEvent,
    StartSessionReason as StartSessionReason,
    Status as Status,
)
from firmware.core.pilot import Cp


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
    """Raw CP plateaus from the ADC; the charger debounces them into `PilotChanged`.

    `read_at` is the monotonic time (the shell's loop clock, as every `Instant.mono`) the plateaus were
    read: the debounce's clock, so that it measures how long the wire held a state, not when the core
    task got round to each sample. None: the time of the step that handles it."""

    volts_hi: float
    volts_lo: float
    read_at: float | None = None

    def __post_init__(self) -> None:
        _check_cid(self.cid)
        _check_finite("volts_hi", self.volts_hi)
        _check_finite("volts_lo", self.volts_lo)
        if self.read_at is not None:
            _check_finite("read_at", self.read_at)


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
