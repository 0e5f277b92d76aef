"""The session lifecycle: one SessionPhase, moved only along the legal transitions, as the machine
drives it (firmware/core/evse/session.py). The expectations are written out here, not read off the
module's tables."""

from __future__ import annotations

import pytest

from firmware.core.events import CurrentLimitChanged, Event, StopRequested
from firmware.core.evse import PHASE_TRANSITIONS, Session, SessionPhase, State
from firmware.core.pilot import Cp
from tests.core.helpers import AUTH, CID, PP_32A, at, cp, machine

P = SessionPhase
#: Every legal move, and (authorized, cancelled) as charger.py reads them in each phase.
MOVES = {
    (P.PENDING, P.EV_CONNECTED), (P.PENDING, P.CANCELLED),
    (P.AUTHORIZED, P.EV_CONNECTED), (P.AUTHORIZED, P.CANCELLED_AUTHORIZED),
    (P.EV_CONNECTED, P.CHARGED), (P.EV_CONNECTED, P.CANCELLED_AUTHORIZED),
    (P.CHARGED, P.CANCELLED_CHARGED),
}
VIEWS = {
    P.PENDING: (False, False),
    P.AUTHORIZED: (True, False),
    P.EV_CONNECTED: (True, False),
    P.CHARGED: (True, False),
    P.CANCELLED: (False, True),
    P.CANCELLED_AUTHORIZED: (True, True),
    P.CANCELLED_CHARGED: (True, True),
}


@pytest.mark.parametrize("new", list(P), ids=lambda p: p.name)
@pytest.mark.parametrize("old", list(P), ids=lambda p: p.name)
def test_a_session_moves_only_along_the_legal_transitions(old: SessionPhase, new: SessionPhase) -> None:
    session = Session(uuid="u-1", phase=old)
    if (old, new) in MOVES:
        session.advance(new)
        assert session.phase is new
    else:
        with pytest.raises(ValueError, match="is not a phase transition"):
            session.advance(new)
        assert session.phase is old


def test_the_module_declares_the_same_moves() -> None:
    assert {(old, new) for old, targets in PHASE_TRANSITIONS.items() for new in targets} == MOVES


@pytest.mark.parametrize(("phase", "cancelled"), [
    (P.PENDING, P.CANCELLED),
    (P.AUTHORIZED, P.CANCELLED_AUTHORIZED),
    (P.EV_CONNECTED, P.CANCELLED_AUTHORIZED),
    (P.CHARGED, P.CANCELLED_CHARGED),
])
def test_cancel_keeps_whether_a_token_and_energy_came(phase: SessionPhase, cancelled: SessionPhase) -> None:
    session = Session(uuid="u-1", phase=phase)
    session.cancel()
    assert session.phase is cancelled


@pytest.mark.parametrize("phase", [P.CANCELLED, P.CANCELLED_AUTHORIZED, P.CANCELLED_CHARGED], ids=lambda p: p.name)
def test_a_cancelled_session_is_not_cancelled_again(phase: SessionPhase) -> None:
    session = Session(uuid="u-1", phase=phase)
    with pytest.raises(ValueError, match="already"):
        session.cancel()
    assert session.phase is phase


@pytest.mark.parametrize("phase", list(P), ids=lambda p: p.name)
def test_the_views_charger_py_reads(phase: SessionPhase) -> None:
    session = Session(uuid="u-1", phase=phase)
    assert (session.authorized, session.cancelled) == VIEWS[phase]


#: What the machine does to the session phase: a recipe of inputs from a fresh machine, each 0.01 s
#: apart, and the phase after each input (None: no session).
FLOWS: list[tuple[str, list[Event], list[SessionPhase | None]]] = [
    ("EV first, then token, charge, stop", [PP_32A, cp(Cp.B), AUTH, cp(Cp.C), StopRequested(cid=CID), cp(Cp.B),
                                            cp(Cp.A)],
     [None, P.PENDING, P.EV_CONNECTED, P.CHARGED, P.CANCELLED_CHARGED, P.CANCELLED_CHARGED, None]),
    ("token first, then EV", [AUTH, PP_32A, cp(Cp.B), cp(Cp.C), cp(Cp.B), cp(Cp.A)],
     [P.AUTHORIZED, P.AUTHORIZED, P.EV_CONNECTED, P.CHARGED, P.CHARGED, None]),
    ("stop before the token", [cp(Cp.B), StopRequested(cid=CID), cp(Cp.A)], [P.PENDING, P.CANCELLED, None]),
    ("stop before the EV", [AUTH, StopRequested(cid=CID)], [P.AUTHORIZED, None]),
    ("stop before any energy", [PP_32A, cp(Cp.B), AUTH, CurrentLimitChanged(cid=CID, current_a=0),
                                StopRequested(cid=CID)],
     [None, P.PENDING, P.EV_CONNECTED, P.EV_CONNECTED, P.CANCELLED_AUTHORIZED]),
]


@pytest.mark.parametrize(("inputs", "phases"), [f[1:] for f in FLOWS], ids=[f[0] for f in FLOWS])
def test_the_machine_moves_the_phase(inputs: list[Event], phases: list[SessionPhase | None]) -> None:
    m = machine()
    seen: list[SessionPhase | None] = []
    for i, event in enumerate(inputs, start=1):
        m.handle(event, 100.0 + i / 100)
        seen.append(None if m.session is None else m.session.phase)
    assert seen == phases


def test_a_session_stopped_while_charging_still_reads_as_authorized() -> None:
    """STOPPING keeps the relay closed for the ramp-down: the session it serves had a token."""
    m, _ = at(State.STOPPING)
    assert m.relay_closed
    assert m.session is not None
    assert m.session.phase is P.CANCELLED_CHARGED
    assert m.session.authorized
