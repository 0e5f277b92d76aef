"""Builders for core tests: a machine with deterministic session ids, driven into any state by a
recipe of real inputs (never by poking private fields)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from firmware.core.events import (
    Action,
    AuthorizationGranted,
    CurrentLimitChanged,
    EmitSessionEvent,
    Event,
    Fault,
    FaultRaised,
    MeterSampled,
    PilotChanged,
    PpChanged,
    ReplugRequested,
    SessionEvent,
    SetEnabled,
    StopRequested,
)
from firmware.core.evse import EvseConfig, EvseMachine, State
from firmware.core.pilot import Cp

CID = 1
T0 = 100.0
FIRST_READING = MeterSampled(cid=CID, energy_wh_import=0.0)


def ids() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"session-{next(counter)}"


def machine(**config: object) -> EvseMachine:
    """A booted machine whose meter has given its first reading (0 Wh), so sessions can start
    (an EVSE with a meter offers nothing before it: see tests/core/test_evse_meter.py)."""
    m = EvseMachine(EvseConfig(cid=CID, **config), new_session_id=ids())  # type: ignore[arg-type]
    m.tick(T0)
    m.handle(FIRST_READING, T0)
    return m


def cp(value: Cp | None, diode_ok: bool = True, *, lasting: bool = False) -> PilotChanged:
    return PilotChanged(cid=CID, cp=value, diode_ok=diode_ok, lasting=lasting)


PP_32A = PpChanged(cid=CID, ohms=220.0)
AUTH = AuthorizationGranted(cid=CID, id_token="04A2B3C4")

#: Inputs that bring a fresh machine (at T0) into each state; each step is 0.01 s apart.
RECIPES: dict[State, list[Event]] = {
    State.AVAILABLE: [],
    State.WAITING_FOR_EV: [AUTH],
    State.WAITING_FOR_AUTH: [PP_32A, cp(Cp.B)],
    State.SUSPENDED_EV: [PP_32A, cp(Cp.B), AUTH],
    State.SUSPENDED_EVSE: [PP_32A, cp(Cp.B), AUTH, CurrentLimitChanged(cid=CID, current_a=0)],
    State.CHARGING: [PP_32A, cp(Cp.B), AUTH, cp(Cp.C)],
    State.PAUSING: [PP_32A, cp(Cp.B), AUTH, cp(Cp.C), CurrentLimitChanged(cid=CID, current_a=0)],
    State.STOPPING: [PP_32A, cp(Cp.B), AUTH, cp(Cp.C), StopRequested(cid=CID)],
    State.FINISHING: [PP_32A, cp(Cp.B), StopRequested(cid=CID)],
    State.REPLUGGING: [PP_32A, cp(Cp.B), AUTH, ReplugRequested(cid=CID)],
    State.FAULTED: [FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED)],
    State.UNAVAILABLE: [SetEnabled(cid=CID, enabled=False)],
}
STEP_S = 0.01


def at(state: State, **config: object) -> tuple[EvseMachine, float]:
    """A machine in `state`, and the time of its last input."""
    m = machine(**config)
    now = T0
    for event in RECIPES[state]:
        now += STEP_S
        m.handle(event, now)
    assert m.state is state, f"recipe for {state} ended in {m.state}"
    return m, now


def session_events(actions: list[Action]) -> list[SessionEvent]:
    return [a.event for a in actions if isinstance(a, EmitSessionEvent)]


def outputs(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, EmitSessionEvent)]
