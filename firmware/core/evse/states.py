"""The EVSE's states, their public Status, and which transitions are legal: tables only.

`TRANSITIONS` is written out row by row: for each (state, event type) the machine accepts, the states
it may settle in. A pair that is absent raises `IllegalTransition` and changes nothing (h11's rule);
a settle outside the declared set is a bug and, like any exception inside the machine, ends in
FAULTED with fail-safe outputs (`machine.EvseMachine`). `TICK_SETTLES` and `RESTORE_SETTLES` do the
same for `tick(now)` and for a session restored at boot.

The sets are exactly what the machine's settle rules can produce: no wider, so that a reader learns
what each input may do, and no narrower, so that a legal settle never faults the EVSE. An input may
also carry what a tick would do at its time (an expired over-current timer, ramp-down, F hold or
connection timeout), because the shell hands over queued inputs before it ticks: a fact that
changes nothing settles where a tick would. The sets were derived from the rules in `machine` and
checked against every settle seen by the test suite and by long random runs (late inputs,
deadlines that fall due together, a machine's first input).

This module must never decide a transition, do I/O or read a clock. The states follow IEC
61851-1:2017 Annex A (CP states A-F, the X1 "no PWM" variants) and map onto the OCPP-style `Status`
the backend sees.
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
    RcdSelfTested,
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


def _to(*states: State) -> frozenset[State]:
    return frozenset(states)


#: (state, event type) -> the states the machine may settle in. Absent pairs are illegal. Facts from
#: sensors and settings (the first seven types) are accepted in every state; commands only where
#: they make sense.
TRANSITIONS: Final[dict[tuple[State, type[Event]], frozenset[State]]] = {
    # AVAILABLE: no session, enabled, meter read. A machine not settled yet (before its first input) is
    # AVAILABLE too, and may find its meter not read yet: UNAVAILABLE. A token while CP is re-read after
    # F, with the EV still plugged in, opens the session straight into SUSPENDED_*.
    (_S.AVAILABLE, PilotChanged): _to(_S.AVAILABLE, _S.WAITING_FOR_AUTH, _S.FAULTED, _S.UNAVAILABLE),
    (_S.AVAILABLE, PpChanged): _to(_S.AVAILABLE, _S.UNAVAILABLE),
    (_S.AVAILABLE, FaultRaised): _to(_S.FAULTED),
    (_S.AVAILABLE, FaultCleared): _to(_S.AVAILABLE, _S.UNAVAILABLE),
    (_S.AVAILABLE, MeterSampled): _to(_S.AVAILABLE),
    (_S.AVAILABLE, CurrentLimitChanged): _to(_S.AVAILABLE, _S.UNAVAILABLE),
    (_S.AVAILABLE, SetEnabled): _to(_S.AVAILABLE, _S.UNAVAILABLE),
    (_S.AVAILABLE, AuthorizationGranted): _to(_S.WAITING_FOR_EV, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE),
    (_S.AVAILABLE, AuthorizationRefused): _to(_S.AVAILABLE, _S.UNAVAILABLE),
    # WAITING_FOR_EV: a token came first (session AUTHORIZED). connection_timeout_s may run out on any
    # input (-> AVAILABLE, or FINISHING when the EV arrives with it); UNAVAILABLE when the token came
    # before the first settle and the meter has not been read.
    (_S.WAITING_FOR_EV, PilotChanged): _to(
        _S.WAITING_FOR_EV, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.FINISHING, _S.AVAILABLE,
        _S.UNAVAILABLE, _S.FAULTED,
    ),
    (_S.WAITING_FOR_EV, PpChanged): _to(_S.WAITING_FOR_EV, _S.AVAILABLE, _S.UNAVAILABLE),
    (_S.WAITING_FOR_EV, FaultRaised): _to(_S.FAULTED),
    (_S.WAITING_FOR_EV, FaultCleared): _to(_S.WAITING_FOR_EV, _S.AVAILABLE, _S.UNAVAILABLE),
    (_S.WAITING_FOR_EV, MeterSampled): _to(_S.WAITING_FOR_EV, _S.AVAILABLE),
    (_S.WAITING_FOR_EV, CurrentLimitChanged): _to(_S.WAITING_FOR_EV, _S.AVAILABLE, _S.UNAVAILABLE),
    (_S.WAITING_FOR_EV, SetEnabled): _to(_S.WAITING_FOR_EV, _S.AVAILABLE, _S.UNAVAILABLE),
    (_S.WAITING_FOR_EV, StopRequested): _to(_S.AVAILABLE, _S.UNAVAILABLE),
    # WAITING_FOR_AUTH: the EV came first (session PENDING); no deadline runs.
    (_S.WAITING_FOR_AUTH, PilotChanged): _to(_S.WAITING_FOR_AUTH, _S.AVAILABLE, _S.FAULTED),
    (_S.WAITING_FOR_AUTH, PpChanged): _to(_S.WAITING_FOR_AUTH),
    (_S.WAITING_FOR_AUTH, FaultRaised): _to(_S.FAULTED),
    (_S.WAITING_FOR_AUTH, FaultCleared): _to(_S.WAITING_FOR_AUTH),
    (_S.WAITING_FOR_AUTH, MeterSampled): _to(_S.WAITING_FOR_AUTH),
    (_S.WAITING_FOR_AUTH, CurrentLimitChanged): _to(_S.WAITING_FOR_AUTH),
    (_S.WAITING_FOR_AUTH, SetEnabled): _to(_S.WAITING_FOR_AUTH, _S.UNAVAILABLE),
    (_S.WAITING_FOR_AUTH, AuthorizationGranted): _to(_S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING),
    (_S.WAITING_FOR_AUTH, AuthorizationRefused): _to(_S.WAITING_FOR_AUTH),
    (_S.WAITING_FOR_AUTH, StopRequested): _to(_S.FINISHING),
    # SUSPENDED_EV: authorized, PWM on, EV in B (or not re-read yet after F); relay open, no deadline.
    (_S.SUSPENDED_EV, PilotChanged): _to(_S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.AVAILABLE, _S.FAULTED),
    (_S.SUSPENDED_EV, PpChanged): _to(_S.SUSPENDED_EV, _S.SUSPENDED_EVSE),
    (_S.SUSPENDED_EV, FaultRaised): _to(_S.FAULTED),
    (_S.SUSPENDED_EV, FaultCleared): _to(_S.SUSPENDED_EV),
    (_S.SUSPENDED_EV, MeterSampled): _to(_S.SUSPENDED_EV),
    (_S.SUSPENDED_EV, CurrentLimitChanged): _to(_S.SUSPENDED_EV, _S.SUSPENDED_EVSE),
    (_S.SUSPENDED_EV, SetEnabled): _to(_S.SUSPENDED_EV, _S.UNAVAILABLE),
    (_S.SUSPENDED_EV, StopRequested): _to(_S.FINISHING),
    (_S.SUSPENDED_EV, ReplugRequested): _to(_S.REPLUGGING),
    # SUSPENDED_EVSE: authorized, nothing offered (limit 0, PP invalid, D without ventilation, a restored
    # session before the meter's first reading: then an unplug ends in UNAVAILABLE).
    (_S.SUSPENDED_EVSE, PilotChanged): _to(
        _S.SUSPENDED_EVSE, _S.SUSPENDED_EV, _S.CHARGING, _S.AVAILABLE, _S.UNAVAILABLE, _S.FAULTED
    ),
    (_S.SUSPENDED_EVSE, PpChanged): _to(_S.SUSPENDED_EVSE, _S.SUSPENDED_EV, _S.CHARGING),
    (_S.SUSPENDED_EVSE, FaultRaised): _to(_S.FAULTED),
    (_S.SUSPENDED_EVSE, FaultCleared): _to(_S.SUSPENDED_EVSE),
    (_S.SUSPENDED_EVSE, MeterSampled): _to(_S.SUSPENDED_EVSE, _S.SUSPENDED_EV, _S.CHARGING),
    (_S.SUSPENDED_EVSE, CurrentLimitChanged): _to(_S.SUSPENDED_EVSE, _S.SUSPENDED_EV, _S.CHARGING),
    (_S.SUSPENDED_EVSE, SetEnabled): _to(_S.SUSPENDED_EVSE, _S.UNAVAILABLE),
    (_S.SUSPENDED_EVSE, StopRequested): _to(_S.FINISHING),
    (_S.SUSPENDED_EVSE, ReplugRequested): _to(_S.REPLUGGING),
    # CHARGING: relay closed. The over-current timer may run out on any input and cancel the session:
    # STOPPING, or FINISHING when the same input also ends the ramp-down (B, PP lost, D unventilated).
    (_S.CHARGING, PilotChanged): _to(
        _S.CHARGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING, _S.AVAILABLE, _S.FAULTED
    ),
    (_S.CHARGING, PpChanged): _to(_S.CHARGING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING),
    (_S.CHARGING, FaultRaised): _to(_S.FAULTED),
    (_S.CHARGING, FaultCleared): _to(_S.CHARGING, _S.STOPPING),
    (_S.CHARGING, MeterSampled): _to(_S.CHARGING, _S.STOPPING),
    (_S.CHARGING, CurrentLimitChanged): _to(_S.CHARGING, _S.PAUSING, _S.STOPPING),
    (_S.CHARGING, SetEnabled): _to(_S.CHARGING, _S.STOPPING),
    (_S.CHARGING, StopRequested): _to(_S.STOPPING),
    (_S.CHARGING, ReplugRequested): _to(_S.REPLUGGING),
    # PAUSING: limit 0 while charging, relay kept. On any input the ramp-down may end (SUSPENDED_EVSE)
    # and the over-current timer may cancel the session (STOPPING, or FINISHING/UNAVAILABLE after it).
    (_S.PAUSING, PilotChanged): _to(_S.PAUSING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING, _S.AVAILABLE, _S.FAULTED),
    (_S.PAUSING, PpChanged): _to(_S.PAUSING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING),
    (_S.PAUSING, FaultRaised): _to(_S.FAULTED),
    (_S.PAUSING, FaultCleared): _to(_S.PAUSING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING),
    (_S.PAUSING, MeterSampled): _to(_S.PAUSING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING),
    (_S.PAUSING, CurrentLimitChanged): _to(_S.PAUSING, _S.CHARGING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING),
    (_S.PAUSING, SetEnabled): _to(_S.PAUSING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    (_S.PAUSING, StopRequested): _to(_S.STOPPING, _S.FINISHING),
    # STOPPING: session cancelled while charging, relay kept until B or stop_timeout_s; disabled: UNAVAILABLE.
    (_S.STOPPING, PilotChanged): _to(_S.STOPPING, _S.FINISHING, _S.AVAILABLE, _S.UNAVAILABLE, _S.FAULTED),
    (_S.STOPPING, PpChanged): _to(_S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    (_S.STOPPING, FaultRaised): _to(_S.FAULTED),
    (_S.STOPPING, FaultCleared): _to(_S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    (_S.STOPPING, MeterSampled): _to(_S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    (_S.STOPPING, CurrentLimitChanged): _to(_S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    (_S.STOPPING, SetEnabled): _to(_S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    # FINISHING: session cancelled, EV still plugged in; it ends at unplug.
    (_S.FINISHING, PilotChanged): _to(_S.FINISHING, _S.AVAILABLE, _S.UNAVAILABLE, _S.FAULTED),
    (_S.FINISHING, PpChanged): _to(_S.FINISHING),
    (_S.FINISHING, FaultRaised): _to(_S.FAULTED),
    (_S.FINISHING, FaultCleared): _to(_S.FINISHING),
    (_S.FINISHING, MeterSampled): _to(_S.FINISHING),
    (_S.FINISHING, CurrentLimitChanged): _to(_S.FINISHING),
    (_S.FINISHING, SetEnabled): _to(_S.FINISHING, _S.UNAVAILABLE),
    # REPLUGGING: F for the requested time; CP readings other than E/F are stale. When it ends the session
    # (still authorized, or cancelled meanwhile) settles as after F: no CP reading, so never CHARGING.
    (_S.REPLUGGING, PilotChanged): _to(
        _S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE, _S.FAULTED
    ),
    (_S.REPLUGGING, PpChanged): _to(_S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE),
    (_S.REPLUGGING, FaultRaised): _to(_S.FAULTED),
    (_S.REPLUGGING, FaultCleared): _to(_S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE),
    (_S.REPLUGGING, MeterSampled): _to(_S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE),
    (_S.REPLUGGING, CurrentLimitChanged): _to(
        _S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE
    ),
    (_S.REPLUGGING, SetEnabled): _to(_S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE),
    (_S.REPLUGGING, StopRequested): _to(_S.REPLUGGING, _S.FINISHING, _S.UNAVAILABLE),
    # FAULTED: a fault or its F hold. When it ends (on any input, or a tick): the session, if any, was
    # cancelled (FINISHING); a plugged EV read under X1 opens one (WAITING_FOR_AUTH) when a fault that
    # outlasted its F hold clears (FaultCleared, or a clean reading ending a pilot fault). The end of an F
    # hold opens none: CP is re-read after F first (AVAILABLE until then).
    (_S.FAULTED, PilotChanged): _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.WAITING_FOR_AUTH, _S.FINISHING),
    (_S.FAULTED, PpChanged): _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.FINISHING),
    (_S.FAULTED, FaultRaised): _to(_S.FAULTED),
    (_S.FAULTED, FaultCleared): _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.WAITING_FOR_AUTH, _S.FINISHING),
    (_S.FAULTED, MeterSampled): _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.FINISHING),
    (_S.FAULTED, CurrentLimitChanged): _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.FINISHING),
    (_S.FAULTED, SetEnabled): _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.FINISHING),
    # UNAVAILABLE: disabled (no session, or a cancelled one with the EV plugged in), or no meter reading yet.
    (_S.UNAVAILABLE, PilotChanged): _to(_S.UNAVAILABLE, _S.FAULTED),
    (_S.UNAVAILABLE, PpChanged): _to(_S.UNAVAILABLE),
    (_S.UNAVAILABLE, FaultRaised): _to(_S.FAULTED),
    (_S.UNAVAILABLE, FaultCleared): _to(_S.UNAVAILABLE),
    (_S.UNAVAILABLE, MeterSampled): _to(_S.UNAVAILABLE, _S.AVAILABLE, _S.WAITING_FOR_AUTH),
    (_S.UNAVAILABLE, CurrentLimitChanged): _to(_S.UNAVAILABLE),
    (_S.UNAVAILABLE, SetEnabled): _to(_S.UNAVAILABLE, _S.AVAILABLE, _S.WAITING_FOR_AUTH, _S.FINISHING),
    # The RCD self-test's result, in every state: a failed test is a fault (like FaultRaised); a passed
    # one clears that fault (like FaultCleared) and lifts the wait for it (like a valid cable: PpChanged).
    (_S.AVAILABLE, RcdSelfTested): _to(_S.AVAILABLE, _S.FAULTED, _S.UNAVAILABLE),
    (_S.WAITING_FOR_EV, RcdSelfTested): _to(_S.AVAILABLE, _S.WAITING_FOR_EV, _S.FAULTED, _S.UNAVAILABLE),
    (_S.WAITING_FOR_AUTH, RcdSelfTested): _to(_S.WAITING_FOR_AUTH, _S.FAULTED),
    (_S.SUSPENDED_EV, RcdSelfTested): _to(_S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FAULTED),
    (_S.SUSPENDED_EVSE, RcdSelfTested): _to(_S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.CHARGING, _S.FAULTED),
    (_S.CHARGING, RcdSelfTested): _to(_S.SUSPENDED_EVSE, _S.CHARGING, _S.STOPPING, _S.FINISHING, _S.FAULTED),
    (_S.PAUSING, RcdSelfTested): _to(_S.SUSPENDED_EVSE, _S.PAUSING, _S.STOPPING, _S.FINISHING, _S.FAULTED),
    (_S.STOPPING, RcdSelfTested): _to(_S.STOPPING, _S.FINISHING, _S.FAULTED, _S.UNAVAILABLE),
    (_S.FINISHING, RcdSelfTested): _to(_S.FINISHING, _S.FAULTED),
    (_S.REPLUGGING, RcdSelfTested): _to(
        _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.REPLUGGING, _S.FAULTED, _S.UNAVAILABLE,
    ),
    (_S.FAULTED, RcdSelfTested): _to(_S.AVAILABLE, _S.WAITING_FOR_AUTH, _S.FINISHING, _S.FAULTED, _S.UNAVAILABLE),
    (_S.UNAVAILABLE, RcdSelfTested): _to(_S.FAULTED, _S.UNAVAILABLE),
}
#: tick(now) in each state -> the states it may settle in (the deadlines that may fall due there).
TICK_SETTLES: Final[dict[State, frozenset[State]]] = {
    _S.AVAILABLE: _to(_S.AVAILABLE, _S.UNAVAILABLE),
    _S.WAITING_FOR_EV: _to(_S.WAITING_FOR_EV, _S.AVAILABLE, _S.UNAVAILABLE),
    _S.WAITING_FOR_AUTH: _to(_S.WAITING_FOR_AUTH),
    _S.SUSPENDED_EV: _to(_S.SUSPENDED_EV),
    _S.SUSPENDED_EVSE: _to(_S.SUSPENDED_EVSE),
    _S.CHARGING: _to(_S.CHARGING, _S.STOPPING),
    _S.PAUSING: _to(_S.PAUSING, _S.SUSPENDED_EVSE, _S.STOPPING, _S.FINISHING),
    _S.STOPPING: _to(_S.STOPPING, _S.FINISHING, _S.UNAVAILABLE),
    _S.FINISHING: _to(_S.FINISHING),
    _S.REPLUGGING: _to(_S.REPLUGGING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE, _S.FINISHING, _S.UNAVAILABLE),
    _S.FAULTED: _to(_S.FAULTED, _S.AVAILABLE, _S.UNAVAILABLE, _S.FINISHING),
    _S.UNAVAILABLE: _to(_S.UNAVAILABLE),
}
#: restore_session is accepted in these states (at boot: waiting for the meter, or disabled) -> the
#: states it may settle in. The EV is taken to be plugged in and CP is not read yet, so never CHARGING.
RESTORE_SETTLES: Final[dict[State, frozenset[State]]] = {
    _S.AVAILABLE: _to(_S.FINISHING, _S.SUSPENDED_EV, _S.SUSPENDED_EVSE),
    _S.UNAVAILABLE: _to(_S.FINISHING, _S.UNAVAILABLE, _S.SUSPENDED_EVSE),
}
#: The event types the machine takes, and in which states each is accepted (read off TRANSITIONS).
EVENT_TYPES: Final[tuple[type[Event], ...]] = tuple(dict.fromkeys(event_type for _, event_type in TRANSITIONS))
ACCEPTED_IN: Final[dict[type[Event], frozenset[State]]] = {
    event_type: frozenset(state for state, accepted in TRANSITIONS if accepted is event_type)
    for event_type in EVENT_TYPES
}
