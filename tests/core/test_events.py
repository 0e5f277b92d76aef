"""The core's vocabulary (firmware/core/events.py): events validate themselves, SessionEvent payloads
are API.md §4's wire objects, the catalogues are complete, and the enum values are EVerest's
`evse_manager` names (seeds/everest_types_evse_manager.rst), which must never change.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable

import pytest

from firmware.core.events import (
    FAULT_ERROR,
    STATUS_LED,
    AuthorizationGranted,
    CurrentLimitChanged,
    EmitSessionEvent,
    Error,
    Event,
    Fault,
    FaultRaised,
    Led,
    MeterSampled,
    PilotChanged,
    PilotSampled,
    PpChanged,
    ReplugRequested,
    SessionCancellationReason,
    SessionEvent,
    StartSessionReason,
    Status,
    StopRequested,
)
from firmware.core.evse import State
from firmware.core.pilot import Cp
from firmware.wire import payload
from tests.core.helpers import at, cp

NAN = math.nan

# --- events validate themselves (ValueError), so a malformed event never reaches a machine --------------

#: One builder per event type, taking the cid.
EVENT_BUILDERS: list[Callable[[object], Event]] = [
    lambda cid: PilotSampled(cid=cid, volts_hi=9.0, volts_lo=-12.0),  # type: ignore[arg-type]
    lambda cid: PilotChanged(cid=cid, cp=Cp.B),  # type: ignore[arg-type]
    lambda cid: PpChanged(cid=cid, ohms=220.0),  # type: ignore[arg-type]
    lambda cid: AuthorizationGranted(cid=cid, id_token="04A2B3C4"),  # type: ignore[arg-type]
    lambda cid: StopRequested(cid=cid),  # type: ignore[arg-type]
    lambda cid: FaultRaised(cid=cid, fault=Fault.RCD_TRIPPED),  # type: ignore[arg-type]
    lambda cid: CurrentLimitChanged(cid=cid, current_a=16.0),  # type: ignore[arg-type]
    lambda cid: MeterSampled(cid=cid, energy_wh_import=1.0),  # type: ignore[arg-type]
    lambda cid: ReplugRequested(cid=cid),  # type: ignore[arg-type]
]
BUILDER_IDS = ["PilotSampled", "PilotChanged", "PpChanged", "AuthorizationGranted", "StopRequested",
               "FaultRaised", "CurrentLimitChanged", "MeterSampled", "ReplugRequested"]


@pytest.mark.parametrize("build", EVENT_BUILDERS, ids=BUILDER_IDS)
@pytest.mark.parametrize("cid", [0, -1, True, False, "1", 1.0, None])
def test_cid_must_be_a_positive_integer(build: Callable[[object], Event], cid: object) -> None:
    with pytest.raises(ValueError, match="cid"):
        build(cid)


@pytest.mark.parametrize("build", EVENT_BUILDERS, ids=BUILDER_IDS)
@pytest.mark.parametrize("cid", [1, 7, 2**31])
def test_positive_cids_are_accepted(build: Callable[[object], Event], cid: int) -> None:
    assert build(cid).cid == cid


@pytest.mark.parametrize("make", [
    lambda: PilotSampled(cid=1, volts_hi=NAN, volts_lo=-12.0),
    lambda: PilotSampled(cid=1, volts_hi=9.0, volts_lo=NAN),
    lambda: PilotSampled(cid=1, volts_hi=math.inf, volts_lo=-12.0),
    lambda: PilotSampled(cid=1, volts_hi=True, volts_lo=-12.0),  # a bool is not a voltage
    lambda: PpChanged(cid=1, ohms=-1.0),
    lambda: PpChanged(cid=1, ohms=NAN),
    lambda: CurrentLimitChanged(cid=1, current_a=-0.1),
    lambda: CurrentLimitChanged(cid=1, current_a=NAN),
    lambda: MeterSampled(cid=1, energy_wh_import=-1.0),
    lambda: MeterSampled(cid=1, energy_wh_import=1.0, energy_wh_export=-0.5),
    lambda: MeterSampled(cid=1, energy_wh_import=NAN),
    lambda: MeterSampled(cid=1, energy_wh_import=1.0, currents_a=(16.0, NAN, 16.0)),
    lambda: ReplugRequested(cid=1, duration_s=0.1),  # IEC 61851-1: F for at least 300 ms
    lambda: ReplugRequested(cid=1, duration_s=NAN),
], ids=[
    "PilotSampled volts_hi nan", "PilotSampled volts_lo nan", "PilotSampled volts_hi inf",
    "PilotSampled volts_hi bool", "PpChanged negative", "PpChanged nan", "CurrentLimitChanged negative",
    "CurrentLimitChanged nan", "MeterSampled negative import", "MeterSampled negative export",
    "MeterSampled nan import", "MeterSampled nan current", "ReplugRequested 0.1 s", "ReplugRequested nan",
])
def test_malformed_event_is_refused(make: Callable[[], Event]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each row names its own field
        make()


@pytest.mark.parametrize("make", [
    lambda: PpChanged(cid=1, ohms=None),  # open circuit
    lambda: PpChanged(cid=1, ohms=0.0),  # a short is a value; pilot.py decides it is invalid
    lambda: CurrentLimitChanged(cid=1, current_a=0.0),  # 0 pauses
    lambda: MeterSampled(cid=1, energy_wh_import=0.0, energy_wh_export=0.0, currents_a=(0.0, 0.0, 0.0)),
    lambda: ReplugRequested(cid=1, duration_s=0.3),  # the 300 ms minimum itself
    lambda: PilotSampled(cid=1, volts_hi=9, volts_lo=-12),  # ints are numbers
], ids=["PP open", "PP zero", "limit 0", "meter zero", "replug 0.3 s", "int volts"])
def test_well_formed_edge_values_are_accepted(make: Callable[[], Event]) -> None:
    make()


def test_events_are_frozen() -> None:
    event = CurrentLimitChanged(cid=1, current_a=16.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.current_a = 32.0  # type: ignore[misc]


def test_events_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        FaultRaised(1, Fault.RCD_TRIPPED)  # type: ignore[misc]


# --- payload(EmitSessionEvent): API.md §4 -----------------------------------------------------------------

PAYLOAD_ROWS: list[tuple[str, EmitSessionEvent, dict[str, object]]] = [
    ("SessionStarted, all fields",
     EmitSessionEvent(cid=2, uuid="u-1", event=SessionEvent.SESSION_STARTED, reason="Authorized",
                      energy_wh_import=1234.5, energy_wh_export=6.0, id_token="04A2B3C4", reservation_id=7),
     {"uuid": "u-1", "evse_id": 2, "event": "SessionStarted",
      "session_started": {"energy_Wh_import": 1234.5, "energy_Wh_export": 6.0, "reason": "Authorized",
                          "id_token": "04A2B3C4", "reservation_id": 7}}),
    ("SessionStarted, optional fields absent",
     EmitSessionEvent(cid=1, uuid="u-2", event=SessionEvent.SESSION_STARTED, reason="EVConnected",
                      energy_wh_import=0.0, energy_wh_export=0.0),
     {"uuid": "u-2", "evse_id": 1, "event": "SessionStarted",
      "session_started": {"energy_Wh_import": 0.0, "energy_Wh_export": 0.0, "reason": "EVConnected"}}),
    ("SessionStarted without a meter reading: no energy keys",
     EmitSessionEvent(cid=1, uuid="u-7", event=SessionEvent.SESSION_STARTED, reason="EVConnected"),
     {"uuid": "u-7", "evse_id": 1, "event": "SessionStarted", "session_started": {"reason": "EVConnected"}}),
    ("SessionCancelled without a meter reading",
     EmitSessionEvent(cid=1, uuid="u-8", event=SessionEvent.SESSION_CANCELLED, reason="PowerLoss"),
     {"uuid": "u-8", "evse_id": 1, "event": "SessionCancelled", "session_cancelled": {"reason": "PowerLoss"}}),
    ("SessionFinished without a meter reading",
     EmitSessionEvent(cid=1, uuid="u-9", event=SessionEvent.SESSION_FINISHED),
     {"uuid": "u-9", "evse_id": 1, "event": "SessionFinished", "session_finished": {}}),
    ("SessionCancelled",
     EmitSessionEvent(cid=1, uuid="u-3", event=SessionEvent.SESSION_CANCELLED, reason="EmergencyStop",
                      energy_wh_import=10.0, energy_wh_export=0.0),
     {"uuid": "u-3", "evse_id": 1, "event": "SessionCancelled",
      "session_cancelled": {"energy_Wh_import": 10.0, "energy_Wh_export": 0.0, "reason": "EmergencyStop"}}),
    ("SessionFinished",
     EmitSessionEvent(cid=1, uuid="u-4", event=SessionEvent.SESSION_FINISHED,
                      energy_wh_import=11.5, energy_wh_export=0.25),
     {"uuid": "u-4", "evse_id": 1, "event": "SessionFinished",
      "session_finished": {"energy_Wh_import": 11.5, "energy_Wh_export": 0.25}}),
    ("Error",
     EmitSessionEvent(cid=3, uuid="u-5", event=SessionEvent.ERROR, error=Error.RCD),
     {"uuid": "u-5", "evse_id": 3, "event": "Error", "error": "RCD"}),
    ("Error outside a session",
     EmitSessionEvent(cid=1, uuid="", event=SessionEvent.ERROR, error=Error.CAR_DIODE_FAULT),
     {"uuid": "", "evse_id": 1, "event": "Error", "error": "CarDiodeFault"}),
    ("plain event",
     EmitSessionEvent(cid=4, uuid="u-6", event=SessionEvent.CHARGING_STARTED),
     {"uuid": "u-6", "evse_id": 4, "event": "ChargingStarted"}),
    ("plain event outside a session",
     EmitSessionEvent(cid=1, uuid="", event=SessionEvent.ENABLED),
     {"uuid": "", "evse_id": 1, "event": "Enabled"}),
]


@pytest.mark.parametrize(("event", "expected"), [r[1:] for r in PAYLOAD_ROWS], ids=[r[0] for r in PAYLOAD_ROWS])
def test_payload(event: EmitSessionEvent, expected: dict[str, object]) -> None:
    doc = payload(event)
    assert doc == expected
    assert json.loads(json.dumps(doc)) == expected  # plain JSON types only (enums are str values)


def test_payload_has_no_timestamp_or_seq() -> None:
    """The shell adds `timestamp` and `seq` (API.md §4); the core knows neither."""
    _, event, _ = PAYLOAD_ROWS[0]
    assert not {"timestamp", "seq"} & set(payload(event))


def test_payload_of_machine_emitted_session_started() -> None:
    """What the EVSE machine emits at plug-in serialises to API.md's session_started object."""
    m, now = at(State.AVAILABLE)
    notes = [a for a in m.handle(cp(Cp.B), now + 0.01) if isinstance(a, EmitSessionEvent)]
    assert payload(notes[0]) == {
        "uuid": "session-1", "evse_id": 1, "event": "SessionStarted",
        "session_started": {"energy_Wh_import": 0.0, "energy_Wh_export": 0.0,
                            "reason": StartSessionReason.EV_CONNECTED.value},
    }


# --- catalogues -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", list(Fault), ids=lambda f: f.name)
def test_every_fault_has_an_api_error(fault: Fault) -> None:
    assert isinstance(FAULT_ERROR[fault], Error)


@pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
def test_every_status_has_a_led(status: Status) -> None:
    assert isinstance(STATUS_LED[status], Led)


def test_catalogues_have_no_extra_keys() -> None:
    assert set(FAULT_ERROR) == set(Fault)
    assert set(STATUS_LED) == set(Status)


# --- enum values are EVerest's evse_manager names (seeds/everest_types_evse_manager.rst) -----------------

#: `SessionEvent` enum, copied from seeds/everest_types_evse_manager.rst.
EVEREST_SESSION_EVENT = [
    "Enabled", "Disabled", "SessionStarted", "AuthRequired", "ChargingStarted", "ChargingPausedEV",
    "ChargingPausedEVSE", "ChargingResumed", "SessionFinished", "SessionCancelled", "Error", "PermanentFault",
    "ReservationStart", "ReservationEnd", "ReservationAuthtokenMismatch", "ReplugStarted", "ReplugFinished",
]
#: `SessionCancellationReason` enum, copied from seeds/everest_types_evse_manager.rst.
EVEREST_SESSION_CANCELLATION_REASON = [
    "EmergencyStop", "EVDisconnected", "HardReset", "Local", "Other", "PowerLoss", "Reboot", "Remote",
    "SoftReset", "UnlockCommand", "DeAuthorized",
]
#: `Error` enum, copied from seeds/everest_types_evse_manager.rst (API.md §4 allows additions).
EVEREST_ERROR = ["Car", "CarDiodeFault", "Relais", "RCD", "VentilationNotAvailable", "OverCurrent", "Internal",
                 "SLAC", "HLC"]


def test_session_event_values_are_everest_names() -> None:
    assert [e.value for e in SessionEvent] == EVEREST_SESSION_EVENT


def test_session_cancellation_reason_values_are_everest_names() -> None:
    assert [r.value for r in SessionCancellationReason] == EVEREST_SESSION_CANCELLATION_REASON


def test_error_values_include_every_everest_name_first() -> None:
    assert [e.value for e in Error][: len(EVEREST_ERROR)] == EVEREST_ERROR


def test_cp_values_are_the_letters() -> None:
    assert [c.value for c in Cp] == ["A", "B", "C", "D", "E", "F"]
