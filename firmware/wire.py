"""The wire format of API.md: codecs, the request/reply envelope, topics and the published documents.

What it is for: the one place that knows the API.md shapes. `mqtt.py` moves bytes; the controller and
the ops hand typed values here and get dictionaries and bytes back. What it must never do: touch a
socket, the clock or the core's state (every function is pure: time and values are passed in), or
let a malformed payload raise anything but `BadRequest`.

Standard: API.md §1 (codecs: a payload whose first non-blank byte is `{` is JSON, anything else CBOR,
RFC 8949), §2 (envelope, error codes), §3-§4 (documents), RFC 3339 times in UTC.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import cbor2

from firmware.core.charger import Charger
from firmware.core.events import FAULT_ERROR, EmitSessionEvent, SessionEvent
from firmware.core.pilot import Cp, pp_ampacity_a
from firmware.core.reservations import ReservationUpdate
from firmware.core.why import blocked_by
from hal.protocols import MeterSample

JSON: Final = "json"
CBOR: Final = "cbor"
MAX_ID_LEN: Final = 64
MAX_DEPTH: Final = 32


class BadRequest(Exception):  # noqa: N818 - it is the error code's name
    """The payload is not a request: undecodable, not a map, or no valid `id` / `op`."""

    def __init__(self, message: str, request_id: str | None = None, op: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.op = op


class InvalidArgs(Exception):  # noqa: N818
    """An argument is missing or wrong; the message names the field."""


def codec_of(data: bytes) -> str:
    """API.md §1: a payload whose first non-blank byte is `{` is JSON, anything else CBOR."""
    stripped = data.lstrip(b" \t\r\n")
    return JSON if stripped[:1] == b"{" else CBOR


def value_problem(value: object, depth: int = 0) -> str | None:
    """Why a decoded value cannot be a request (too deep, or a string that is not valid UTF-8, such
    as JSON's lone surrogates: CBOR could not even encode the reply), or None."""
    if depth > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a string is not valid UTF-8 (lone surrogate)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            problem = value_problem(key, depth + 1) or value_problem(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list | tuple):
        for item in value:
            problem = value_problem(item, depth + 1)
            if problem:
                return problem
    return None


def decode(data: bytes) -> tuple[str, object]:
    """Decode a payload with the codec it announces; raises BadRequest on anything undecodable."""
    codec = codec_of(data)
    try:
        value = json.loads(data) if codec == JSON else cbor2.loads(data)
    except RecursionError as exc:
        raise BadRequest(f"payload nested too deeply ({codec})") from exc
    except Exception as exc:  # noqa: BLE001 - decoders raise many types on garbage
        raise BadRequest(f"undecodable {codec} payload: {type(exc).__name__}") from exc
    return codec, value


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(codec: str, value: object) -> bytes:
    if codec == JSON:
        return json.dumps(value, separators=(",", ":"), default=_json_default, allow_nan=False).encode()
    return cbor2.dumps(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    request_id: str
    op: str
    args: object  # validated by the op
    codec: str
    response_topic: str | None = None
    correlation_data: bytes | None = None


def parse_request(data: bytes, max_payload_bytes: int, *, response_topic: str | None = None,
                  correlation: bytes | None = None) -> Request:
    """The request envelope of API.md §2. Raises BadRequest with whatever id/op could be read."""
    if len(data) > max_payload_bytes:
        raise BadRequest(f"payload of {len(data)} bytes exceeds {max_payload_bytes}")
    codec, value = decode(data)
    if not isinstance(value, dict):
        raise BadRequest(f"request must be a map, got {type(value).__name__}")
    raw_id, raw_op = value.get("id"), value.get("op")
    request_id = raw_id if isinstance(raw_id, str) and 1 <= len(raw_id) <= MAX_ID_LEN else None
    op = raw_op if isinstance(raw_op, str) else None
    if request_id is not None and value_problem(request_id):
        request_id = None
    if op is not None and value_problem(op):
        op = None
    if request_id is None:
        raise BadRequest(f"id must be a string of 1..{MAX_ID_LEN} characters", None, op)
    problem = value_problem(value)
    if problem:
        raise BadRequest(f"request {problem}", request_id, op)
    if op is None or not op:
        raise BadRequest("op must be a non-empty string", request_id, None)
    args = value.get("args", {})
    return Request(request_id=request_id, op=op, args=args, codec=codec, response_topic=response_topic,
                   correlation_data=correlation)


def ok_reply(request_id: str, op: str, result: object) -> dict[str, object]:
    return {"id": request_id, "op": op, "ok": True, "result": result}


def error_reply(request_id: str | None, op: str | None, code: str, message: str) -> dict[str, object]:
    return {"id": request_id, "op": op, "ok": False, "error": {"code": code, "message": message}}


@dataclass(slots=True)
class Topics:
    root: str

    @classmethod
    def for_charger(cls, prefix: str, charger_id: str) -> Topics:
        return cls(root=f"{prefix}/{charger_id}/v1")

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def cmd(self) -> str:
        return f"{self.root}/cmd"

    @property
    def reply(self) -> str:
        return f"{self.root}/reply"

    @property
    def reservation(self) -> str:
        return f"{self.root}/reservation"

    @property
    def auth_request(self) -> str:
        return f"{self.root}/auth/request"

    @property
    def auth_response(self) -> str:
        return f"{self.root}/auth/response"

    def evse(self, evse_id: int, leaf: str) -> str:
        return f"{self.root}/evse/{evse_id}/{leaf}"


def as_map(args: object) -> dict[str, Any]:
    """`args` must be a map with string keys (API.md §2: otherwise invalid_args for `args`)."""
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise InvalidArgs("args: must be a map with string keys")
    return args


def reservation_doc(entry: Any, now: datetime) -> dict[str, object]:  # noqa: ANN401
    """A reservation as `list_reservations` shows it (API.md §3)."""
    r = entry.reservation
    doc: dict[str, object] = {
        "reservation_id": r.reservation_id,
        "id_token": r.id_token,
        "expiry_time": rfc3339(r.expiry_utc),
        "uuid": entry.uuid,
        "sender": r.sender,
        "state": "Active" if entry.active else "Scheduled",  # V5: busy at start_time, it stays Scheduled
        "placed_at": rfc3339(entry.placed_utc),
        "connector_type": r.connector_type,
    }
    for key, value in (("evse_id", r.evse_id), ("parent_id_token", r.parent_id_token),
                       ("start_time", None if r.start_utc is None else rfc3339(r.start_utc)),
                       ("token_type", r.token_type)):
        if value is not None:
            doc[key] = value
    return doc


def reserve_result(status: str, reservation_uuid: str | None) -> dict[str, object]:
    """The result of `reserve_now` (API.md §3): the ReservationResult, and the uuid when one was made."""
    doc: dict[str, object] = {"status": status}
    if reservation_uuid is not None:
        doc["uuid"] = reservation_uuid
    return doc


def authorize_result(status: str, evse_id: int | None, reservation_id: int | None) -> dict[str, object]:
    """The result of `authorize` (API.md §3, §5), answered at once or when the backend decided."""
    return {"status": status, "evse_id": evse_id, "reservation_id": reservation_id}


def auth_request_doc(request_id: str, id_token: str, evse_id: int, token_type: str) -> dict[str, object]:
    """A token the charger asks the backend about, on `R/auth/request` (API.md §5)."""
    return {"id": request_id, "id_token": id_token, "evse_id": evse_id, "token_type": token_type}


def state_snapshot(evses: list[dict[str, object]], reservations: list[dict[str, object]], *, firmware: str,
                   uptime_s: float) -> dict[str, object]:
    """The result of `get_state` (API.md §3)."""
    return {"evses": evses, "reservations": reservations, "firmware": firmware, "uptime_s": uptime_s}


def rfc3339(when: datetime) -> str:
    """UTC, millisecond precision, with `Z` (API.md §1)."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def mask_token(token: str | None) -> str | None:
    """Tokens never appear whole in logs or state documents: keep the first 4 characters."""
    if token is None:
        return None
    return token[:4] + "*" * max(len(token) - 4, 0) if len(token) > 4 else "*" * len(token)


def status_doc(*, online: bool, firmware: str, boot_id: str, evse_ids: list[int]) -> dict[str, object]:
    """`R/status` (API.md §1); the will message is `{online: false}`."""
    if not online:
        return {"online": False}
    return {"online": True, "firmware": firmware, "boot_id": boot_id, "evses": evse_ids}


def evse_state_doc(charger: Charger, cid: int, *, cp: Cp, pp_ohms: float | None, meter: MeterSample | None,
                   session_started_utc: datetime | None, utc: datetime) -> dict[str, object]:
    """The EVSE state document of API.md §4: `cp` as measured, the session's energy from the meter
    (null without a reading), the active EVSE-specific reservation, tokens masked, and `blocked_by`:
    the codes of `firmware.core.why` (they depend only on the charger's last step, not on the time)."""
    evse = charger.evses[cid]
    config = evse.config
    session = evse.session
    session_doc: dict[str, object] | None = None
    if session is not None:
        energy_wh = None if meter is None else round(max(meter.energy_wh_import - session.energy_wh_import_start,
                                                         0.0), 3)
        session_doc = {"uuid": session.uuid, "id_token": mask_token(session.id_token),
                       "started_at": None if session_started_utc is None else rfc3339(session_started_utc),
                       "energy_wh": energy_wh, "reservation_id": session.reservation_id}
    entry = charger.book.specific(cid, utc)
    reservation: dict[str, object] | None = None
    if entry is not None and entry.active:
        reservation = {"reservation_id": entry.reservation.reservation_id, "sender": entry.reservation.sender,
                       "expiry_time": rfc3339(entry.reservation.expiry_utc)}
    pp_a = pp_ampacity_a(pp_ohms, config.phases) if config.socket_outlet else config.cable_max_current_a
    return {
        "evse_id": cid,
        "status": charger.status(cid).value,
        "cp": cp.value,
        "pp_max_a": pp_a,
        "relay_closed": evse.relay_closed,
        "pwm_duty_pct": evse.duty_pct,
        "offered_a": evse.offered_a,
        "max_current_a": config.max_current_a,
        "phases": charger.phases[cid],
        "connectors": list(config.connectors),
        "enabled": evse.enabled,
        "errors": sorted(FAULT_ERROR[f].value for f in evse.faults),
        "session": session_doc,
        "reservation": reservation,
        "led": charger.led(cid).value,
        "blocked_by": [b.code for b in blocked_by(charger, cid, charger.last_instant.mono)],
        "updated_at": rfc3339(utc),
    }


def meter_doc(cid: int, sample: MeterSample, *, meter_ok: bool, utc: datetime) -> dict[str, object]:
    """A meter sample (API.md §4), published on `R/evse/{id}/meter` with QoS 0."""
    return {"evse_id": cid, "timestamp": rfc3339(utc), "energy_Wh_import": sample.energy_wh_import,
            "energy_Wh_export": sample.energy_wh_export, "power_W": sample.power_w,
            "current_A": list(sample.currents_a), "voltage_V": list(sample.voltages_v),
            "frequency_Hz": sample.frequency_hz, "meter_ok": meter_ok}


def payload(item: EmitSessionEvent | ReservationUpdate) -> dict[str, object]:
    """The document of a SessionEvent (API.md §4) or a ReservationUpdateStatus (§7), without the
    `timestamp` and `seq` the controller adds when it publishes it."""
    if isinstance(item, ReservationUpdate):
        update: dict[str, object] = {"reservation_id": item.reservation_id, "sender": item.sender,
                                     "uuid": item.uuid, "reservation_status": item.status.value}
        if item.evse_id is not None:
            update["evse_id"] = item.evse_id
        if item.reason is not None:
            update["reason"] = item.reason
        return update
    doc: dict[str, object] = {"uuid": item.uuid, "evse_id": item.cid, "event": item.event.value}
    if item.event is SessionEvent.ERROR:
        if item.error is not None:
            doc["error"] = item.error.value
    elif item.event in (SessionEvent.RESERVATION_START, SessionEvent.RESERVATION_END):
        doc.update(_reservation_part(item))
    elif item.event in _SESSION_PARTS:
        doc.update(_session_part(item))
    return doc


_SESSION_PARTS: Final = (SessionEvent.SESSION_STARTED, SessionEvent.SESSION_FINISHED, SessionEvent.SESSION_CANCELLED)


def _session_part(event: EmitSessionEvent) -> dict[str, object]:
    """The session_started / _finished / _cancelled object: only the energy registers that were read
    (never 0.0 in their place)."""
    part: dict[str, object] = {}
    if event.energy_wh_import is not None:
        part["energy_Wh_import"] = event.energy_wh_import
    if event.energy_wh_export is not None:
        part["energy_Wh_export"] = event.energy_wh_export
    if event.event is SessionEvent.SESSION_FINISHED:
        return {"session_finished": part}
    part["reason"] = event.reason
    if event.event is SessionEvent.SESSION_CANCELLED:
        return {"session_cancelled": part}
    if event.id_token is not None:
        part["id_token"] = event.id_token
    if event.reservation_id is not None:
        part["reservation_id"] = event.reservation_id
    return {"session_started": part}


def _reservation_part(event: EmitSessionEvent) -> dict[str, object]:
    if event.event is SessionEvent.RESERVATION_END:
        return {"reservation_end": {"reservation_id": event.reservation_id, "reason": event.reason}}
    if event.global_hold:
        return {"reservation_start": {"reservation_id": event.reservation_id, "id_tag": "", "global": True}}
    start: dict[str, object] = {"reservation_id": event.reservation_id, "id_tag": event.id_token}
    if event.parent_id_token is not None:
        start["parent_id"] = event.parent_id_token
    return {"reservation_start": start}


def session_event_doc(event: EmitSessionEvent, *, seq: int, utc: datetime) -> dict[str, object]:
    """A SessionEvent as published (API.md §4): the event's fields, its `timestamp` (also inside its
    session_started / _finished / _cancelled object) and the charger's `seq`."""
    timestamp = rfc3339(utc)
    doc = {**payload(event), "timestamp": timestamp, "seq": seq}
    for key in ("session_started", "session_finished", "session_cancelled"):
        part = doc.get(key)
        if isinstance(part, dict):
            doc[key] = {**part, "timestamp": timestamp}
    return doc


def reservation_update_doc(update: ReservationUpdate, *, seq: int, utc: datetime) -> dict[str, object]:
    """A ReservationUpdateStatus as published on `R/reservation` (API.md §7)."""
    return {**payload(update), "timestamp": rfc3339(utc), "seq": seq}
