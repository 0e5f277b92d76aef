"""No invented energy (issue 8, defect B): every energy figure in a SessionEvent comes from a reading.

An EVSE with a meter (`has_meter`, the default) takes its first reading before it offers charging,
as EVerest's `initial_meter_value_timeout` does: until then it is Unavailable and a plug-in waits;
the first reading starts the waiting session with that reading's energy. An EVSE without a meter
omits the energy fields. No sleeps: time is injected.
"""

from __future__ import annotations

import pytest

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    Action,
    CloseRelay,
    EmitSessionEvent,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    SessionCancellationReason,
    SessionEvent,
    Status,
    StopRequested,
)
from firmware.core.evse import EvseConfig, EvseMachine, SessionPhase, State, StoredSession
from firmware.core.pilot import Cp
from firmware.wire import payload
from tests.core.helpers import AUTH, CID, PP_32A, T0, cp, ids, session_events

READING = MeterSampled(cid=CID, energy_wh_import=1234.5, energy_wh_export=6.0)
STORED = StoredSession(uuid="u-1", id_token="04A2B3C4", phase=SessionPhase.CHARGED, energy_wh_import_start=1000.0)


def fresh(**config: object) -> EvseMachine:
    """A machine just booted: no meter reading yet (unlike tests.core.helpers.machine)."""
    m = EvseMachine(EvseConfig(cid=CID, **config), new_session_id=ids())  # type: ignore[arg-type]
    m.tick(T0)
    return m


def notes(actions: list[Action]) -> list[EmitSessionEvent]:
    return [a for a in actions if isinstance(a, EmitSessionEvent)]


def test_an_evse_with_a_meter_is_unavailable_until_its_first_reading() -> None:
    m = fresh()
    assert m.state is State.UNAVAILABLE
    assert m.status is Status.UNAVAILABLE
    assert not m.meter_ready
    m.handle(READING, T0 + 1)
    assert m.state is State.AVAILABLE
    assert m.status is Status.AVAILABLE
    assert m.meter_ready


def test_a_plug_in_before_the_first_reading_waits_and_starts_with_that_reading() -> None:
    m = fresh()
    m.handle(PP_32A, T0 + 1)
    assert session_events(m.handle(cp(Cp.B), T0 + 2)) == []
    assert m.session is None
    assert m.state is State.UNAVAILABLE
    assert m.plugged
    started, auth_required = notes(m.handle(READING, T0 + 3))
    assert started == EmitSessionEvent(cid=CID, uuid="session-1", event=SessionEvent.SESSION_STARTED,
                                       reason="EVConnected", energy_wh_import=1234.5, energy_wh_export=6.0)
    assert auth_required.event is SessionEvent.AUTH_REQUIRED
    assert m.state is State.WAITING_FOR_AUTH
    assert m.session is not None
    assert m.session.energy_wh_import_start == 1234.5


def test_a_token_before_the_first_reading_is_refused_and_changes_nothing() -> None:
    m = fresh()
    with pytest.raises(IllegalTransition):
        m.handle(AUTH, T0 + 1)
    assert m.session is None
    assert m.state is State.UNAVAILABLE
    m.handle(READING, T0 + 2)
    (started,) = notes(m.handle(AUTH, T0 + 3))
    assert started.reason == "Authorized"
    assert started.energy_wh_import == 1234.5


def test_meter_lost_before_the_first_reading_faults_then_waits_for_a_reading() -> None:
    """The shell raises MeterLost when the first reading does not come in time."""
    m = fresh()
    m.handle(FaultRaised(cid=CID, fault=Fault.METER_LOST), T0 + 5)
    assert m.state is State.FAULTED
    assert m.status is Status.FAULTED
    m.handle(FaultCleared(cid=CID, fault=Fault.METER_LOST), T0 + 10)
    assert m.state is State.UNAVAILABLE
    assert not m.meter_ready
    m.handle(READING, T0 + 11)
    assert m.state is State.AVAILABLE


def test_energy_in_events_is_the_latest_reading() -> None:
    m = fresh()
    m.handle(READING, T0 + 1)
    m.handle(PP_32A, T0 + 2)
    m.handle(cp(Cp.B), T0 + 3)
    m.handle(MeterSampled(cid=CID, energy_wh_import=1300.0, energy_wh_export=6.5), T0 + 4)
    (cancelled,) = notes(m.handle(StopRequested(cid=CID), T0 + 5))
    assert (cancelled.energy_wh_import, cancelled.energy_wh_export) == (1300.0, 6.5)


# --- an EVSE without a meter: the energy fields are omitted, never 0.0 ------------------------------------

def _without_meter_session_events() -> list[EmitSessionEvent]:
    m = fresh(has_meter=False)
    assert m.state is State.AVAILABLE
    assert m.meter_ready
    m.handle(PP_32A, T0 + 1)
    out = notes(m.handle(cp(Cp.B), T0 + 2))
    out += notes(m.handle(StopRequested(cid=CID), T0 + 3))
    out += notes(m.handle(cp(Cp.A), T0 + 4))
    return out


@pytest.mark.parametrize(("event", "key"), [
    (SessionEvent.SESSION_STARTED, "session_started"),
    (SessionEvent.SESSION_CANCELLED, "session_cancelled"),
    (SessionEvent.SESSION_FINISHED, "session_finished"),
])
def test_an_evse_without_a_meter_omits_the_energy_fields(event: SessionEvent, key: str) -> None:
    (note,) = [n for n in _without_meter_session_events() if n.event is event]
    assert note.energy_wh_import is None
    assert note.energy_wh_export is None
    body = payload(note)[key]
    assert isinstance(body, dict)
    assert "energy_Wh_import" not in body
    assert "energy_Wh_export" not in body


# --- restore after a power cut: the cancel note carries the latest real reading, or none -----------------

def test_restore_without_any_reading_omits_the_energy_then_finishes_with_a_real_one() -> None:
    m = fresh()  # the boot reading failed: the EVSE waits for its meter
    (cancelled,) = notes(m.restore_session(STORED, T0, reason=SessionCancellationReason.POWER_LOSS, resume=False))
    assert cancelled.event is SessionEvent.SESSION_CANCELLED
    assert cancelled.uuid == "u-1"
    body = payload(cancelled)["session_cancelled"]
    assert cancelled.energy_wh_import is None
    assert isinstance(body, dict)
    assert "energy_Wh_import" not in body
    m.handle(READING, T0 + 1)
    (finished,) = notes(m.handle(cp(Cp.A), T0 + 2))
    assert finished.event is SessionEvent.SESSION_FINISHED
    assert finished.energy_wh_import == 1234.5


def test_a_resumed_session_does_not_charge_before_the_first_reading() -> None:
    m = fresh()
    m.restore_session(STORED, T0, reason=SessionCancellationReason.POWER_LOSS, resume=True)
    m.handle(PP_32A, T0 + 1)
    out = m.handle(cp(Cp.C), T0 + 2)
    assert not any(isinstance(a, CloseRelay) for a in out)
    assert m.state is State.SUSPENDED_EVSE
    assert CloseRelay(cid=CID) in m.handle(READING, T0 + 3)
    assert m.state is State.CHARGING
