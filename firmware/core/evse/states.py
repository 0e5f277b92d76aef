"""The EVSE's states, their public Status, and which transitions are legal.

`TRANSITIONS` declares, for each (state, event type) the machine accepts, the states it may settle
in. A pair that is absent raises `IllegalTransition` and changes nothing (h11's rule); a settle
outside the declared set is a bug and, like any exception inside the machine, ends in FAULTED with
fail-safe outputs (`machine.EvseMachine`).

This module holds tables only: it must never decide a transition, do I/O or read a clock. The states
follow IEC 61851-1:2017 Annex A (CP states A-F, the X1 "no PWM" variants) and map onto the OCPP-style
`Status` the backend sees.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from firmware.core.events import (
    AuthorizationGranted,
    AuthorizationRefused,
    CurrentLimitChanged,
    Event,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    PilotChanged,
    PpChanged,
    ReplugRequested,
    SetEnabled,
    Status,
    StopRequested,
)


class State(Enum):
    AVAILABLE = "available"  # no EV, no session
    WAITING_FOR_EV = "waiting_for_ev"  # authorized before plug-in; waits connection_timeout_s
    WAITING_FOR_AUTH = "waiting_for_auth"  # EV plugged in, no token yet (B1/C1)
    SUSPENDED_EV = "suspended_ev"  # PWM offered, EV in B2
    SUSPENDED_EVSE = "suspended_evse"  # authorized, nothing offered (limit 0, PP invalid, D without ventilation)
    CHARGING = "charging"  # C2/D2, relay closed
    PAUSING = "pausing"  # limit went to 0 while charging: X1, relay kept <= 6 s until B
    STOPPING = "stopping"  # session ended while charging: X1, relay kept <= 6 s until B
    FINISHING = "finishing"  # session ended, EV still plugged in
    REPLUGGING = "replugging"  # virtual unplug: F for the requested time
    FAULTED = "faulted"  # a fault is active (F, then X1 after fault_hold_s), or the F hold after one
    UNAVAILABLE = "unavailable"  # disabled, or waiting for the meter's first reading


STATUS: Final[dict[State, Status]] = {
    State.AVAILABLE: Status.AVAILABLE,
    State.WAITING_FOR_EV: Status.PREPARING,
    State.WAITING_FOR_AUTH: Status.PREPARING,
    State.SUSPENDED_EV: Status.SUSPENDED_EV,
    State.SUSPENDED_EVSE: Status.SUSPENDED_EVSE,
    State.CHARGING: Status.CHARGING,
    State.PAUSING: Status.SUSPENDED_EVSE,
    State.STOPPING: Status.FINISHING,
    State.FINISHING: Status.FINISHING,
    State.REPLUGGING: Status.SUSPENDED_EVSE,
    State.FAULTED: Status.FAULTED,
    State.UNAVAILABLE: Status.UNAVAILABLE,
}

_S = State
#: Where each state may settle next (itself always included below).
_EDGES: Final[dict[State, frozenset[State]]] = {
    # AVAILABLE -> SUSPENDED_*: a token while CP is being re-read after F, with the EV still plugged.
    _S.AVAILABLE: frozenset(
        {_S.WAITING_FOR_EV, _S.WAITING_FOR_AUTH, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FAULTED, _S.UNAVAILABLE}
    ),
    _S.WAITING_FOR_EV: frozenset(
        {_S.AVAILABLE, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.FAULTED, _S.UNAVAILABLE}
    ),
    _S.WAITING_FOR_AUTH: frozenset(
        {_S.AVAILABLE, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.FINISHING, _S.FAULTED, _S.UNAVAILABLE}
    ),
    _S.SUSPENDED_EV: frozenset(
        {_S.AVAILABLE, _S.CHARGING, _S.SUSPENDED_EVSE, _S.FINISHING, _S.REPLUGGING, _S.FAULTED, _S.UNAVAILABLE}
    ),
    _S.SUSPENDED_EVSE: frozenset(
        {_S.AVAILABLE, _S.CHARGING, _S.SUSPENDED_EV, _S.FINISHING, _S.REPLUGGING, _S.FAULTED, _S.UNAVAILABLE}
    ),
    _S.CHARGING: frozenset(
        {_S.AVAILABLE, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.PAUSING, _S.STOPPING, _S.REPLUGGING, _S.FAULTED}
    ),
    _S.PAUSING: frozenset(
        {_S.AVAILABLE, _S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.STOPPING, _S.REPLUGGING, _S.FAULTED}
    ),
    _S.STOPPING: frozenset({_S.AVAILABLE, _S.FINISHING, _S.UNAVAILABLE, _S.FAULTED}),
    _S.FINISHING: frozenset({_S.AVAILABLE, _S.FAULTED, _S.UNAVAILABLE}),
    _S.REPLUGGING: frozenset(
        {_S.AVAILABLE, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.FINISHING, _S.FAULTED, _S.UNAVAILABLE}
    ),
    _S.FAULTED: frozenset({_S.AVAILABLE, _S.WAITING_FOR_AUTH, _S.FINISHING, _S.UNAVAILABLE}),
    _S.UNAVAILABLE: frozenset({_S.AVAILABLE, _S.WAITING_FOR_AUTH, _S.FINISHING, _S.FAULTED}),
}
_ALL = frozenset(State)
_SESSION_RUNNING = frozenset(
    {_S.WAITING_FOR_EV, _S.WAITING_FOR_AUTH, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.PAUSING, _S.REPLUGGING}
)
#: In which states each event type is accepted. Facts from sensors and settings are always accepted;
#: commands only where they make sense.
ACCEPTED_IN: Final[dict[type[Event], frozenset[State]]] = {
    PilotChanged: _ALL,
    PpChanged: _ALL,
    FaultRaised: _ALL,
    FaultCleared: _ALL,
    MeterSampled: _ALL,
    CurrentLimitChanged: _ALL,
    SetEnabled: _ALL,
    AuthorizationGranted: frozenset({_S.AVAILABLE, _S.WAITING_FOR_AUTH}),
    AuthorizationRefused: frozenset({_S.AVAILABLE, _S.WAITING_FOR_AUTH}),
    StopRequested: _SESSION_RUNNING,
    ReplugRequested: frozenset({_S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING}),
}
#: (state, event type) -> the states the machine may settle in. Absent pairs are illegal.
TRANSITIONS: Final[dict[tuple[State, type[Event]], frozenset[State]]] = {
    (state, event_type): _EDGES[state] | {state}
    for event_type, states in ACCEPTED_IN.items()
    for state in states
}
EVENT_TYPES: Final[tuple[type[Event], ...]] = tuple(ACCEPTED_IN)
