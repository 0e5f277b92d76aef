"""Restart recovery in the core: a session open at power loss or reboot ends correctly (issue 5)."""

from __future__ import annotations

import pytest

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    CloseRelay,
    EmitSessionEvent,
    MeterSampled,
    SessionCancellationReason,
    SessionEvent,
)
from firmware.core.evse import State, StoredSession
from firmware.core.pilot import Cp
from tests.core.helpers import CID, PP_32A, T0, at, cp, machine, session_events

STORED = StoredSession(uuid="u-1", id_token="04A2B3C4", reservation_id=7, authorized=True, charging_started=True,
                       energy_wh_import_start=1000.0)


@pytest.mark.parametrize("reason", [SessionCancellationReason.POWER_LOSS, SessionCancellationReason.REBOOT])
def test_an_open_session_is_cancelled_then_finished_at_unplug(reason: SessionCancellationReason) -> None:
    m = machine()
    m.handle(MeterSampled(cid=CID, energy_wh_import=1500.0), T0)  # the meter is read first
    out = m.restore_session(STORED, T0, reason=reason, resume=False)
    (cancelled,) = [a for a in out if isinstance(a, EmitSessionEvent)]
    assert cancelled.event is SessionEvent.SESSION_CANCELLED
    assert cancelled.reason == reason.value
    assert cancelled.uuid == "u-1"
    assert cancelled.energy_wh_import == 1500.0
    assert m.state is State.FINISHING
    assert not m.relay_closed
    # The EV is still there and asks for power: nothing restarts without a fresh authorization.
    m.handle(PP_32A, T0 + 1)
    out = m.handle(cp(Cp.C), T0 + 2)
    assert not any(isinstance(a, CloseRelay) for a in out)
    assert m.state is State.FINISHING
    m.handle(MeterSampled(cid=CID, energy_wh_import=1501.0), T0 + 3)
    out = m.handle(cp(Cp.A), T0 + 4)
    (finished,) = [a for a in out if isinstance(a, EmitSessionEvent)]
    assert finished.event is SessionEvent.SESSION_FINISHED
    assert finished.energy_wh_import == 1501.0
    assert m.session is None
    assert m.state is State.AVAILABLE


def test_a_session_cancelled_before_the_stop_is_not_cancelled_twice() -> None:
    m = machine()
    out = m.restore_session(StoredSession(uuid="u-2", cancelled=True), T0, reason=SessionCancellationReason.POWER_LOSS,
                            resume=False)
    assert session_events(out) == []
    assert session_events(m.handle(cp(Cp.A), T0 + 1)) == [SessionEvent.SESSION_FINISHED]


def test_resume_after_power_loss_continues_an_authorized_session() -> None:
    m = machine()
    m.restore_session(STORED, T0, reason=SessionCancellationReason.POWER_LOSS, resume=True)
    m.handle(PP_32A, T0 + 1)
    out = m.handle(cp(Cp.C), T0 + 2)
    assert m.relay_closed
    assert session_events(out) == [SessionEvent.CHARGING_RESUMED]
    assert m.session is not None
    assert m.session.uuid == "u-1"
    assert m.session.reservation_id == 7


def test_resume_never_authorizes_a_session_that_was_not() -> None:
    m = machine()
    out = m.restore_session(StoredSession(uuid="u-3"), T0, reason=SessionCancellationReason.POWER_LOSS, resume=True)
    assert session_events(out) == [SessionEvent.SESSION_CANCELLED]


def test_restore_is_refused_on_a_machine_that_already_runs_a_session() -> None:
    m, now = at(State.CHARGING)
    with pytest.raises(IllegalTransition):
        m.restore_session(STORED, now, reason=SessionCancellationReason.REBOOT, resume=False)
    assert m.state is State.CHARGING


def test_stored_session_round_trip() -> None:
    m, _ = at(State.CHARGING)
    assert m.session is not None
    stored = StoredSession.of(m.session)
    assert stored.uuid == "session-1"
    assert stored.authorized
    assert stored.charging_started
    assert not stored.cancelled


def test_restore_is_accepted_on_a_disabled_evse() -> None:
    """The shell restores `enabled = false` before the sessions: the open session must still end."""
    m, now = at(State.UNAVAILABLE)
    out = m.restore_session(STORED, now, reason=SessionCancellationReason.POWER_LOSS, resume=True)
    assert session_events(out) == [SessionEvent.SESSION_CANCELLED]
    assert m.state is State.UNAVAILABLE
    assert session_events(m.handle(cp(Cp.A), now + 1)) == [SessionEvent.SESSION_FINISHED]
