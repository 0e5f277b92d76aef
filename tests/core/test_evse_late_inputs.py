"""Inputs that come after a deadline fell due but before the tick for it (the shell hands queued inputs
over first), and deadlines that fall due together. The machine settles where its rules say; before
`states.TRANSITIONS` was written out row by row these settles were outside the declared sets, so the
EVSE crashed into its internal fault (Faulted until the fault was cleared) instead."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from firmware.core.events import (
    CurrentLimitChanged,
    Event,
    Fault,
    FaultCleared,
    MeterSampled,
    PpChanged,
    SessionEvent,
    SetEnabled,
    StopRequested,
)
from firmware.core.evse import EvseMachine, State
from firmware.core.pilot import Cp
from tests.core.helpers import CID, at, cp, session_events

OVER_CURRENT = MeterSampled(cid=CID, energy_wh_import=1.0, currents_a=(40.0,))  # 32 A offered: limit 35.7 A


def charging_over_current() -> tuple[EvseMachine, float]:
    """CHARGING with the over-current timer (7 s) running since t + 1: due at t + 8."""
    m, t = at(State.CHARGING)
    m.handle(OVER_CURRENT, t + 1)
    return m, t


def pausing_over_current() -> tuple[EvseMachine, float]:
    """PAUSING whose ramp-down (6 s from t + 2) and over-current timer (from t + 1) both end at t + 8."""
    m, t = charging_over_current()
    m.handle(CurrentLimitChanged(cid=CID, current_a=0), t + 2)
    assert m.state is State.PAUSING
    return m, t


def waiting_for_ev() -> tuple[EvseMachine, float]:
    return at(State.WAITING_FOR_EV)  # connection_timeout_s (60 s) from t


def pausing() -> tuple[EvseMachine, float]:
    return at(State.PAUSING)  # ramp-down (6 s) from t


ROWS: list[tuple[str, Callable[[], tuple[EvseMachine, float]], Event | None, float, State, list[SessionEvent]]] = [
    ("EV in B after the over-current timeout", charging_over_current, cp(Cp.B), 9.0, State.FINISHING,
     [SessionEvent.ERROR, SessionEvent.SESSION_CANCELLED]),
    ("PP lost after the over-current timeout", charging_over_current, PpChanged(cid=CID, ohms=None), 9.0,
     State.FINISHING, [SessionEvent.ERROR, SessionEvent.SESSION_CANCELLED]),
    ("plug-in after the connection timeout", waiting_for_ev, cp(Cp.B), 61.0, State.FINISHING,
     [SessionEvent.SESSION_CANCELLED]),
    ("stop after the pause's ramp-down", pausing, StopRequested(cid=CID), 7.0, State.FINISHING,
     [SessionEvent.SESSION_CANCELLED]),
    ("disable after the pause's ramp-down", pausing, SetEnabled(cid=CID, enabled=False), 7.0, State.UNAVAILABLE,
     [SessionEvent.DISABLED, SessionEvent.SESSION_CANCELLED]),
    ("tick: ramp-down and over-current end together", pausing_over_current, None, 9.0, State.FINISHING,
     [SessionEvent.ERROR, SessionEvent.SESSION_CANCELLED]),
    ("no news when ramp-down and over-current end", pausing_over_current,
     FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), 9.0, State.FINISHING,
     [SessionEvent.ERROR, SessionEvent.SESSION_CANCELLED]),
]


@pytest.mark.parametrize(("setup", "event", "after_s", "state", "notes"), [r[1:] for r in ROWS],
                         ids=[r[0] for r in ROWS])
def test_a_late_input_settles_without_crashing(setup: Callable[[], tuple[EvseMachine, float]], event: Event | None,
                                               after_s: float, state: State, notes: list[SessionEvent]) -> None:
    m, t = setup()
    out = m.tick(t + after_s) if event is None else m.handle(event, t + after_s)
    assert Fault.INTERNAL not in m.faults, repr(m.last_crash)
    assert m.state is state
    assert not m.relay_closed
    assert session_events(out) == notes
