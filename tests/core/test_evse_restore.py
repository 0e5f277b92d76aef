"""Restart recovery in the core: a session open at power loss or reboot ends correctly (issue 5), and
a session stored by the version before session phases (four flags) restores to the same session."""

from __future__ import annotations

from dataclasses import asdict

import cbor2
import pytest

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    CloseRelay,
    EmitSessionEvent,
    MeterSampled,
    SessionCancellationReason,
    SessionEvent,
)
from firmware.core.evse import SessionPhase, State, StoredSession
from firmware.core.pilot import Cp
from tests.core.helpers import CID, PP_32A, T0, at, cp, machine, session_events

STORED = StoredSession(uuid="u-1", id_token="04A2B3C4", reservation_id=7, phase=SessionPhase.CHARGED,
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
    out = m.restore_session(StoredSession(uuid="u-2", phase=SessionPhase.CANCELLED), T0,
                            reason=SessionCancellationReason.POWER_LOSS, resume=False)
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
    out = m.restore_session(StoredSession(uuid="u-3", phase=SessionPhase.PENDING), T0,
                            reason=SessionCancellationReason.POWER_LOSS, resume=True)
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


# --- the stored form, and sessions stored before session phases -----------------------------------

def old_record(authorized: bool, cancelled: bool, charging_started: bool) -> dict[str, object]:
    """A session as the version before session phases stored it (`asdict` of its StoredSession)."""
    return {"uuid": "u-1", "id_token": "04A2B3C4", "reservation_id": 7, "authorized": authorized,
            "cancelled": cancelled, "charging_started": charging_started, "energy_wh_import_start": 1000.0}


CANCEL = [SessionEvent.SESSION_CANCELLED]
#: What the version before session phases did with each stored record (authorized, cancelled,
#: charging_started) at restore, with and without `resume`: the SessionEvents of the restore and the
#: state it settled in, then, with a valid cable and CP C, the SessionEvents and whether the relay
#: closed. Every record ends with SessionFinished at unplug.
OLD_FORMAT: list[tuple[tuple[bool, bool, bool], bool, list[SessionEvent], State, list[SessionEvent], bool]] = [
    ((False, False, False), False, CANCEL, State.FINISHING, [], False),
    ((False, False, False), True, CANCEL, State.FINISHING, [], False),
    ((False, False, True), False, CANCEL, State.FINISHING, [], False),  # never written: charged without a token
    ((False, False, True), True, CANCEL, State.FINISHING, [], False),
    ((False, True, False), False, [], State.FINISHING, [], False),
    ((False, True, False), True, [], State.FINISHING, [], False),
    ((False, True, True), False, [], State.FINISHING, [], False),
    ((False, True, True), True, [], State.FINISHING, [], False),
    ((True, False, False), False, CANCEL, State.FINISHING, [], False),
    ((True, False, False), True, [], State.SUSPENDED_EVSE, [SessionEvent.CHARGING_STARTED], True),
    ((True, False, True), False, CANCEL, State.FINISHING, [], False),
    ((True, False, True), True, [], State.SUSPENDED_EVSE, [SessionEvent.CHARGING_RESUMED], True),
    ((True, True, False), False, [], State.FINISHING, [], False),
    ((True, True, False), True, [], State.FINISHING, [], False),
    ((True, True, True), False, [], State.FINISHING, [], False),
    ((True, True, True), True, [], State.FINISHING, [], False),
]


@pytest.mark.parametrize(("flags", "resume", "restored", "state", "on_c", "closed"), OLD_FORMAT,
                         ids=[f"{'auth' if f[0] else 'noauth'}-{'cancelled' if f[1] else 'open'}"
                              f"-{'charged' if f[2] else 'uncharged'}-{'resume' if r else 'cancel'}"
                              for f, r, *_ in OLD_FORMAT])
def test_a_session_stored_by_the_previous_version_restores_to_the_same_behaviour(
    flags: tuple[bool, bool, bool], resume: bool, restored: list[SessionEvent], state: State,
    on_c: list[SessionEvent], closed: bool,
) -> None:
    m = machine()
    out = m.restore_session(StoredSession(**old_record(*flags)), T0,  # type: ignore[arg-type]
                            reason=SessionCancellationReason.POWER_LOSS, resume=resume)
    assert session_events(out) == restored
    assert m.state is state
    assert m.session is not None
    assert m.session.uuid == "u-1"
    assert m.session.reservation_id == 7
    assert m.session.authorized is flags[0]  # as the flag said, cancelled or not
    assert m.session.cancelled is not closed
    m.handle(PP_32A, T0 + 1)
    assert session_events(m.handle(cp(Cp.C), T0 + 2)) == on_c
    assert m.relay_closed is closed
    assert session_events(m.handle(cp(Cp.A), T0 + 3)) == [SessionEvent.SESSION_FINISHED]
    assert m.state is State.AVAILABLE


@pytest.mark.parametrize(("flags", "phase"), [
    ((False, False, False), SessionPhase.PENDING),
    ((False, False, True), SessionPhase.PENDING),
    ((False, True, False), SessionPhase.CANCELLED),
    ((False, True, True), SessionPhase.CANCELLED),
    ((True, False, False), SessionPhase.AUTHORIZED),
    ((True, False, True), SessionPhase.CHARGED),
    ((True, True, False), SessionPhase.CANCELLED_AUTHORIZED),
    ((True, True, True), SessionPhase.CANCELLED_CHARGED),
])
def test_the_flags_of_the_previous_version_read_as_a_phase(flags: tuple[bool, bool, bool],
                                                           phase: SessionPhase) -> None:
    stored = StoredSession(**old_record(*flags))  # type: ignore[arg-type]
    assert stored.phase is phase
    assert stored.authorized is flags[0]
    assert stored.cancelled is flags[1]
    assert stored.charging_started is (flags[0] and flags[2])
    assert StoredSession(uuid="u-1") == StoredSession(uuid="u-1", phase=SessionPhase.PENDING)  # no flags at all


def test_the_store_gets_the_phase_form_and_reads_it_back() -> None:
    """collect_state stores `asdict(StoredSession.of(session))` as CBOR; restore_state reads it with
    `StoredSession(**record)` (firmware/persistence.py)."""
    m, _ = at(State.CHARGING)
    assert m.session is not None
    stored = StoredSession.of(m.session)
    record = asdict(stored)
    assert record == {"uuid": "session-1", "id_token": "04A2B3C4", "reservation_id": None, "phase": "charged",
                      "energy_wh_import_start": 0.0}
    decoded = cbor2.loads(cbor2.dumps(record))
    assert type(decoded["phase"]) is str
    assert StoredSession(**decoded) == stored


@pytest.mark.parametrize(("record", "error", "match"), [
    ({"uuid": "u-1", "phase": "charged", "authorized": True}, TypeError, "either a phase or the flags"),
    ({"uuid": "u-1", "phase": "charging"}, ValueError, "'charging' is not a valid SessionPhase"),
    ({"uuid": "u-1", "phase": "charged", "ev_seen": True}, TypeError, "ev_seen"),
])
def test_a_damaged_record_is_refused(record: dict[str, object], error: type[Exception], match: str) -> None:
    """persistence.restore_state logs such a record and goes on without it."""
    with pytest.raises(error, match=match):
        StoredSession(**record)  # type: ignore[arg-type]
