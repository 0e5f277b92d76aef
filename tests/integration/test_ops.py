"""Every op of API.md §3 and §8 and every error code of §2, against the real broker.

`busy` and `internal` are not tested: neither can be produced from outside. `internal` is the reply to
a bug in an op (an exception other than the argument/unsupported errors), and `busy` is never
returned by the current controller (requests are queued to the core task, never refused); a test
would have to patch the firmware, which is not what these end-to-end tests are for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cbor2
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.backend import Backend, raw_reply, wait_event, wait_status
from tests.support.broker import Broker
from tests.support.builders import BLOCKED_TOKEN, LOCAL_LIST, LOCAL_TOKEN, STATE_KEYS, in_s, parse_time
from tests.support.codec import as_cbor, as_json, decode, envelope
from tests.support.controller import Running, charger_and_backend
from tests.support.flows import plug, plug_and_charge
from tests.support.store import stored_bytes, stored_state

pytestmark = pytest.mark.integration

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def reservation(rid: int = 1, token: str = "AA11", evse_id: int | None = 1, **kw: Any) -> dict[str, Any]:  # noqa: ANN401
    args: dict[str, Any] = {"reservation_id": rid, "id_token": token, "expiry_time": in_s(3600)}
    if evse_id is not None:
        args["evse_id"] = evse_id
    return args | kw


# --- §3 operations --------------------------------------------------------------------------------


async def test_reserve_now_result(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    accepted = await backend.ok("reserve_now", reservation(1))
    assert set(accepted) == {"status", "uuid"}
    assert accepted["status"] == "Accepted"
    assert UUID.match(accepted["uuid"]), accepted
    # not Accepted: no uuid
    assert await backend.ok("reserve_now", reservation(2, expiry_time=in_s(-60))) == {"status": "Rejected"}
    assert await backend.ok("reserve_now", reservation(3, token="BB22")) == {"status": "Occupied"}
    placed = [u for u in backend.reservation_updates() if u["reservation_status"] == "Placed"]
    assert len(placed) == 1
    assert placed[0]["uuid"] == accepted["uuid"]
    assert placed[0]["reservation_id"] == 1


async def test_cancel_reservation(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("reserve_now", reservation(7))
    assert await backend.ok("cancel_reservation", {"reservation_id": 7}) is True
    assert await backend.ok("cancel_reservation", {"reservation_id": 7}) is False
    assert await backend.ok("cancel_reservation", {"reservation_id": 8, "sender": "emsp"}) is False
    cancelled = [u for u in backend.reservation_updates() if u["reservation_status"] == "Cancelled"]
    assert [(u["reservation_id"], u["sender"]) for u in cancelled] == [(7, "")]


async def test_exists_reservation(charger: tuple[Running, Backend]) -> None:
    _, backend = charger

    async def exists(**args: Any) -> Any:  # noqa: ANN401
        return await backend.ok("exists_reservation", args)

    assert await exists(id_token="AA11") == "NotReserved"
    assert await exists(id_token="AA11", evse_id=1) == "NotReserved"
    await backend.ok("reserve_now", reservation(1, parent_id_token="GROUP1"))
    assert await exists(id_token="AA11", evse_id=1) == "ReservedForToken"
    assert await exists(id_token="aa11", evse_id=1) == "ReservedForToken"  # case-insensitive (U1)
    assert await exists(id_token="BB22", evse_id=1) == "ReservedForOtherTokenAndHasParentToken"
    assert await exists(id_token="BB22", evse_id=1, group_id_token="OTHER") == "ReservedForOtherToken"
    assert await exists(id_token="BB22", evse_id=1, group_id_token="GROUP1") == "ReservedForToken"
    assert await exists(id_token="AA11") == "NotReserved"  # without evse_id: global reservations only (U5)
    assert await backend.ok("cancel_reservation", {"reservation_id": 1}) is True
    assert (await backend.ok("reserve_now", reservation(2, token="CC33", evse_id=None)))["status"] == "Accepted"
    assert await exists(id_token="CC33") == "ReservedForToken"
    assert await exists(id_token="DD44") == "NotReserved"
    assert await exists(id_token="DD44", evse_id=1) == "NotReserved"  # not specifically reserved


async def test_list_reservations(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    assert await backend.ok("list_reservations", {}) == []
    assert await backend.ok("list_reservations") == []  # args are optional
    active = await backend.ok("reserve_now", reservation(1, sender="emsp-a", token_type="RFID"))
    start, expiry = in_s(7200), in_s(10800)
    scheduled = await backend.ok("reserve_now", reservation(2, token="BB22", start_time=start, expiry_time=expiry))
    entries = {e["reservation_id"]: e for e in await backend.ok("list_reservations", {})}
    assert set(entries) == {1, 2}
    for entry in entries.values():
        assert {"reservation_id", "id_token", "expiry_time", "uuid", "sender", "state", "placed_at"} <= set(entry)
        parse_time(entry["placed_at"])
        parse_time(entry["expiry_time"])
    one, two = entries[1], entries[2]
    assert (one["uuid"], one["sender"], one["state"], one["id_token"], one["evse_id"]) == (
        active["uuid"], "emsp-a", "Active", "AA11", 1)
    assert one["token_type"] == "RFID"
    assert (two["uuid"], two["sender"], two["state"], two["id_token"]) == (scheduled["uuid"], "", "Scheduled", "BB22")
    assert parse_time(two["start_time"]) == parse_time(start)
    assert parse_time(two["expiry_time"]) == parse_time(expiry)


async def test_authorize_with_and_without_evse(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    refused = await backend.ok("authorize", {"id_token": BLOCKED_TOKEN, "evse_id": 1})
    assert refused == {"status": "Rejected", "evse_id": 1, "reservation_id": None}
    accepted = await backend.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1, "token_type": "ISO14443"})
    assert accepted == {"status": "Accepted", "evse_id": 1, "reservation_id": None}
    started = await wait_event(backend, 1, "SessionStarted")
    assert started["session_started"]["reason"] == "Authorized"
    state = await wait_status(backend, 1, "Preparing")
    assert state["session"]["uuid"] == started["uuid"]
    assert await backend.ok("stop_session", {"evse_id": 1}) is True
    await wait_event(backend, 1, "SessionFinished")
    await wait_status(backend, 1, "Available")
    held = await backend.ok("authorize", {"id_token": LOCAL_TOKEN})
    assert held == {"status": "Accepted", "evse_id": None, "reservation_id": None}


async def test_stop_session(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    assert await backend.ok("stop_session", {"evse_id": 1}) is False  # no session
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    await backend.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1})
    assert await backend.ok("stop_session", {"evse_id": 1, "reason": "Local"}) is True
    cancelled = await wait_event(backend, 1, "SessionCancelled")
    assert cancelled["session_cancelled"]["reason"] == "Local"
    await wait_event(backend, 1, "SessionFinished")
    assert await backend.ok("stop_session", {"evse_id": 1}) is False
    await backend.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1})
    assert await backend.ok("stop_session", {"evse_id": 1}) is True
    await backend.wait_for(lambda: len([e for e in backend.events(1) if e["event"] == "SessionCancelled"]) == 2)
    assert [e for e in backend.events(1) if e["event"] == "SessionCancelled"][-1]["session_cancelled"]["reason"] \
        == "Remote"  # the default


async def test_set_max_current(charger: tuple[Running, Backend]) -> None:
    running, backend = charger

    async def set_a(current_a: float) -> Any:  # noqa: ANN401
        return await backend.ok("set_max_current", {"evse_id": 1, "current_a": current_a})

    assert await set_a(16) == "Success"
    assert running.controller.charger.commanded_limit_a(1) == 16
    assert await set_a(0) == "Success"
    assert await set_a(6) == "Success"
    assert await set_a(32.0) == "Success"
    assert await set_a(12.5) == "Success"
    for bad in (-1, 3, 5.9, 32.5, 100):
        assert await set_a(bad) == "Error_OutOfRange", bad
    assert running.controller.charger.commanded_limit_a(1) == 12.5


async def test_switch_phases_not_supported(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    for three in (True, False):
        assert await backend.ok("switch_phases", {"evse_id": 1, "three_phases": three}) == "Error_NotSupported"


async def test_set_enabled(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    assert await backend.ok("set_enabled", {"evse_id": 1, "enabled": False}) is True
    state = await wait_status(backend, 1, "Unavailable")
    assert state["enabled"] is False
    await wait_event(backend, 1, "Disabled")
    assert await backend.ok("set_enabled", {"evse_id": 1, "enabled": True}) is True
    state = await wait_status(backend, 1, "Available")
    assert state["enabled"] is True
    await wait_event(backend, 1, "Enabled")


async def test_set_enabled_stops_a_running_session(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await plug_and_charge(running, backend, local_list=LOCAL_LIST, authorize=True)
    assert await backend.ok("set_enabled", {"evse_id": 1, "enabled": False}) is True
    await wait_event(backend, 1, "SessionCancelled")
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    await backend.wait_for(lambda: (backend.state(1) or {}).get("relay_closed") is False)


async def test_unlock_connector(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await plug_and_charge(running, backend, local_list=LOCAL_LIST, authorize=True)
    assert running.sim.locked(1)
    assert await backend.ok("unlock_connector", {"evse_id": 1}) is False  # charging: refused
    assert running.sim.locked(1)
    await plug(backend, 1, "B", "SuspendedEV")  # EV pauses: relay opens
    assert await backend.ok("unlock_connector", {"evse_id": 1}) is True
    assert not running.sim.locked(1)
    cancelled = await wait_event(backend, 1, "SessionCancelled")
    assert cancelled["session_cancelled"]["reason"] == "UnlockCommand"


async def test_set_local_auth_list(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    assert await backend.ok("set_local_auth_list", LOCAL_LIST) is True
    assert await backend.ok("set_local_auth_list", {"version": 2, "full": False, "tokens": [
        {"id_token": "CHILD1", "status": "Accepted", "parent_id_token": "GROUP1", "expiry": in_s(3600)}]}) is True
    local = running.controller.charger.local_list
    assert local.version == 2
    assert len(local) == 3
    assert await backend.ok("set_local_auth_list", {"version": 3, "full": True, "tokens": []}) is True
    assert local.version == 3
    assert len(local) == 0


async def test_get_state(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("reserve_now", reservation(1))
    await wait_status(backend, 1, "Reserved")
    state = await backend.ok("get_state", {})
    assert set(state) == {"evses", "reservations", "firmware", "uptime_s"}
    assert isinstance(state["firmware"], str)
    assert state["firmware"]
    assert isinstance(state["uptime_s"], int | float)
    assert state["uptime_s"] >= 0
    assert [e["reservation_id"] for e in state["reservations"]] == [1]
    (evse,) = state["evses"]
    assert evse["evse_id"] == 1
    assert evse["status"] == "Reserved"
    assert evse["reservation"]["reservation_id"] == 1
    published = dict(backend.state(1) or {})
    published.pop("updated_at")
    assert {k: v for k, v in evse.items() if k != "updated_at"} == published
    later = await backend.ok("get_state")
    assert later["uptime_s"] >= state["uptime_s"]


async def test_get_state_evses_are_full_state_documents(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    (evse,) = (await backend.ok("get_state"))["evses"]
    assert set(evse) == STATE_KEYS


async def test_published_state_document_fields(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    state = await backend.wait_for(lambda: backend.state(1))
    assert set(state) == STATE_KEYS
    assert state["status"] == "Available"
    assert state["connectors"] == ["sType2"]
    assert state["max_current_a"] == 32
    assert state["session"] is None
    assert state["reservation"] is None
    assert state["errors"] == []
    parse_time(state["updated_at"])
    status = backend.retained[f"{backend.root}/status"]
    assert status["online"] is True
    assert status["evses"] == [1]
    assert set(status) == {"online", "firmware", "boot_id", "evses"}


# --- §8 sim ops ------------------------------------------------------------------------------------


async def test_sim_ops(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    sim = running.sim
    assert await backend.ok("set_local_auth_list", LOCAL_LIST) is True
    assert await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"}) is True
    await wait_status(backend, 1, "Preparing")
    await backend.wait_for(lambda: (backend.state(1) or {}).get("pp_max_a") == 32)
    assert (backend.state(1) or {})["cp"] == "B"
    assert await backend.ok("sim_token", {"evse_id": 1, "id_token": LOCAL_TOKEN}) is True
    await backend.wait_for(lambda: ((backend.state(1) or {}).get("session") or {}).get("id_token") == "04A2****")
    assert await backend.ok("sim_token", {"evse_id": 1, "id_token": "ANOTHER", "token_type": "ISO14443"}) is True
    assert await backend.ok("sim_load", {"evse_id": 1, "current_a": 10}) is True
    assert sim.ev(1).load_a == 10
    assert await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"}) is True
    await wait_status(backend, 1, "Charging")
    await backend.wait_for(lambda: sim.current_a(1) == 10)
    assert await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True}) is True
    state = await wait_status(backend, 1, "Faulted")
    assert state["errors"] == ["RCD"]
    assert await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": False}) is True
    await backend.wait_for(lambda: (backend.state(1) or {}).get("status") not in (None, "Faulted"))
    assert await backend.ok("sim_plug", {"evse_id": 1, "cp": "B", "pp_ohms": None, "diode_ok": False}) is True
    assert sim.ev(1).pp_ohms is None
    assert sim.ev(1).diode_ok is False
    assert await backend.ok("sim_plug", {"evse_id": 1, "cp": "A", "pp_ohms": 680, "diode_ok": True}) is True
    assert sim.ev(1).pp_ohms == 680
    assert sim.ev(1).cp == "A"


# --- §2 error codes --------------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, bytes, object, object]] = [
    # name, payload, expected reply id, expected reply op
    ("undecodable CBOR", b"\xa2\x62id\x61", None, None),
    ("CBOR break byte", b"\xff\x00\x01", None, None),
    ("invalid JSON", b'{"id": "x1", "op": "get_state",', None, None),
    ("JSON with a trailing garbage", b'{"id": "x2", "op": "get_state"} xyz', None, None),
    ("a JSON array", b'[{"id": "x3", "op": "get_state"}]', None, None),
    ("a CBOR integer", cbor2.dumps(5), None, None),
    ("a CBOR array", cbor2.dumps([{"id": "x4", "op": "get_state"}]), None, None),
    ("a JSON string", b'"hello"', None, None),
    ("empty payload", b"", None, None),
    ("id missing", as_json({"op": "get_state"}), None, "get_state"),
    ("id not a string", as_json({"id": 5, "op": "get_state"}), None, "get_state"),
    ("id a list (CBOR)", as_cbor({"id": ["x"], "op": "get_state"}), None, "get_state"),
    ("id empty", as_json({"id": "", "op": "get_state"}), None, "get_state"),
    ("id of 65 chars", as_json({"id": "x" * 65, "op": "get_state"}), None, "get_state"),
    ("id of bytes (CBOR)", as_cbor({"id": b"abc", "op": "get_state"}), None, "get_state"),
    ("op missing", as_json({"id": "no-op"}), "no-op", None),
    ("op not a string", as_json({"id": "op-int", "op": 7}), "op-int", None),
    ("op null", as_json({"id": "op-null", "op": None}), "op-null", None),
    ("op a map (CBOR)", as_cbor({"id": "op-map", "op": {"a": 1}}), "op-map", None),
    ("id and op missing", as_json({"args": {}}), None, None),
    ("oversize", as_json({"id": "big", "op": "get_state", "args": {"pad": "x" * 70_000}}), None, None),
]


@pytest.mark.parametrize(("payload", "reply_id", "reply_op"), [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
async def test_bad_request(charger: tuple[Running, Backend], payload: bytes, reply_id: object,
                           reply_op: object) -> None:
    _, backend = charger
    reply = await raw_reply(backend, payload)
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == "bad_request", reply
    assert isinstance(reply["error"]["message"], str)
    assert reply["error"]["message"]
    assert (reply["id"], reply["op"]) == (reply_id, reply_op)
    assert set(reply) == {"id", "op", "ok", "error"}


async def test_bad_request_cases_in_one_charger(charger: tuple[Running, Backend]) -> None:
    """The same payloads one after the other: exactly one reply each, and the controller goes on."""
    running, backend = charger
    before = len(backend.all_replies())
    for _, payload, _, _ in BAD_REQUESTS:
        await backend.send_raw(payload)
    await backend.wait_for(lambda: len(backend.all_replies()) - before >= len(BAD_REQUESTS))
    assert await backend.ok("get_state")
    assert len(backend.all_replies()) - before == len(BAD_REQUESTS) + 1
    assert not running.task.done()


async def test_payload_size_limit_boundary(charger: tuple[Running, Backend]) -> None:
    """A payload of exactly max_payload_bytes (65536) is decoded; one byte more is bad_request."""
    _, backend = charger

    def padded(request_id: str, size: int) -> bytes:
        head = as_json({"id": request_id, "op": "get_state", "args": {"pad": ""}})
        data = head.replace(b'"pad": ""', b'"pad": "' + b"x" * (size - len(head)) + b'"')
        assert len(data) == size
        return data

    at_limit = await raw_reply(backend, padded("at-limit", 65536))
    assert at_limit["id"] == "at-limit"
    assert at_limit["error"]["code"] == "invalid_args"  # decoded: `pad` is an unknown field of get_state
    over = await raw_reply(backend, padded("over-limit", 65537))
    assert over["error"]["code"] == "bad_request"


async def test_id_of_64_chars_is_valid(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    reply = await backend.request("get_state", request_id="y" * 64)
    assert reply["ok"] is True
    assert reply["id"] == "y" * 64


async def test_unknown_op(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    reply = await backend.request("fly_to_the_moon", {"evse_id": 1})
    assert reply["ok"] is False
    assert reply["op"] == "fly_to_the_moon"
    assert reply["error"]["code"] == "unknown_op"
    assert "fly_to_the_moon" in reply["error"]["message"]


INVALID_ARGS: list[tuple[str, str, object, str]] = [
    # name, op, args, the field the message must name
    ("args a list", "get_state", [1, 2], "args"),
    ("args a string", "set_enabled", "evse_id=1", "args"),
    ("args a number", "reserve_now", 5, "args"),
    ("args null-key map (CBOR int keys)", "get_state", {1: 2}, "args"),
    ("missing required field", "reserve_now", {"reservation_id": 1, "expiry_time": "2099-01-01T00:00:00Z"},
     "id_token"),
    ("missing evse_id", "set_enabled", {"enabled": True}, "evse_id"),
    ("wrong type bool", "set_enabled", {"evse_id": 1, "enabled": "yes"}, "enabled"),
    ("wrong type int", "cancel_reservation", {"reservation_id": "1"}, "reservation_id"),
    ("wrong type float for int", "set_enabled", {"evse_id": 1.0, "enabled": True}, "evse_id"),
    ("wrong type bool for int", "unlock_connector", {"evse_id": True}, "evse_id"),
    ("wrong type number", "set_max_current", {"evse_id": 1, "current_a": "16"}, "current_a"),
    ("NaN number", "set_max_current", {"evse_id": 1, "current_a": float("nan")}, "current_a"),
    ("wrong type str", "exists_reservation", {"id_token": 42}, "id_token"),
    ("wrong type list", "set_local_auth_list", {"version": 1, "full": True, "tokens": {}}, "tokens"),
    ("bad token entry", "set_local_auth_list", {"version": 1, "full": True,
                                                "tokens": [{"id_token": "A", "status": "Maybe"}]}, "tokens[0].status"),
    ("unknown field", "get_state", {"verbose": True}, "verbose"),
    ("unknown field in reserve_now", "reserve_now", {"reservation_id": 1, "id_token": "AA11",
                                                     "expiry_time": "2099-01-01T00:00:00Z", "evse": 1}, "evse"),
    ("bad RFC 3339", "reserve_now", {"reservation_id": 1, "id_token": "AA11", "expiry_time": "tomorrow noon"},
     "expiry_time"),
    ("RFC 3339 without zone", "reserve_now", {"reservation_id": 1, "id_token": "AA11",
                                              "expiry_time": "2099-01-01T00:00:00"}, "expiry_time"),
    ("bad start_time", "reserve_now", {"reservation_id": 1, "id_token": "AA11", "expiry_time": "2099-01-01T00:00:00Z",
                                       "start_time": 12}, "start_time"),
    ("unknown evse_id", "set_enabled", {"evse_id": 9, "enabled": False}, "evse_id"),
    ("evse_id 0", "stop_session", {"evse_id": 0}, "evse_id"),
    ("unknown evse_id in authorize", "authorize", {"id_token": "AA11", "evse_id": 2}, "evse_id"),
    ("bad enum reason", "stop_session", {"evse_id": 1, "reason": "Bored"}, "reason"),
    ("empty id_token", "authorize", {"id_token": ""}, "id_token"),
    ("sim bad cp", "sim_plug", {"evse_id": 1, "cp": "Z"}, "cp"),
    ("sim bad fault", "sim_fault", {"evse_id": 1, "fault": "fire", "active": True}, "fault"),
    ("sim load too high", "sim_load", {"evse_id": 1, "current_a": 500}, "current_a"),
]


@pytest.mark.parametrize(("op", "args", "field_name"), [case[1:] for case in INVALID_ARGS],
                         ids=[case[0] for case in INVALID_ARGS])
async def test_invalid_args(charger: tuple[Running, Backend], op: str, args: object, field_name: str) -> None:
    running, backend = charger
    before = await backend.ok("get_state")
    codec = "cbor" if isinstance(args, dict) and any(not isinstance(k, str) for k in args) else "json"
    if isinstance(args, dict) and any(isinstance(v, float) and v != v for v in args.values()):  # NaN
        codec = "cbor"
    reply = await backend.request(op, args, codec=codec)
    assert reply["ok"] is False, reply
    assert reply["error"]["code"] == "invalid_args", reply
    assert reply["op"] == op
    assert reply["error"]["message"].startswith(field_name), reply["error"]["message"]
    after = await backend.ok("get_state")
    assert settled(after) == settled(before)


def settled(state: dict[str, Any]) -> dict[str, Any]:
    """get_state without what time and measurement change by themselves (uptime, the CP reading,
    the documents' updated_at)."""
    return {k: v for k, v in state.items() if k != "uptime_s"} | {
        "evses": [{k: v for k, v in e.items() if k not in ("cp", "updated_at")} for e in state["evses"]]}


@pytest.mark.parametrize(("op", "args"), [
    ("sim_plug", {"evse_id": 1, "cp": "B"}),
    ("sim_token", {"evse_id": 1, "id_token": "AA11"}),
    ("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True}),
    ("sim_load", {"evse_id": 1, "current_a": 16}),
])
async def test_sim_ops_unsupported_on_real_hardware(broker: Broker, tmp_path: Path, op: str,
                                                    args: dict[str, Any]) -> None:
    async with charger_and_backend(broker, tmp_path, sim_ops=False) as (running, backend):
        reply = await backend.request(op, args)
        assert reply["ok"] is False, reply
        assert reply["error"]["code"] == "unsupported", reply
        assert running.sim.ev(1).cp == "A"
        assert running.sim.faults(1) == frozenset()
        assert await backend.ok("get_state")  # the other ops work


# --- codecs, response topic, idempotency, durability -------------------------------------------------


async def test_reply_in_the_request_codec(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.request("get_state", request_id="as-cbor", codec="cbor")
    await backend.request("get_state", request_id="as-json", codec="json")
    await backend.send_raw(b' \n\t{"id": "json-ws", "op": "get_state"}')
    await backend.wait_for(lambda: "json-ws" in backend.replies)
    await backend.request("no_such_op", request_id="err-cbor", codec="cbor")
    raw = {}
    for payload in backend.raw_on("reply"):
        value = decode(payload)
        raw[value["id"]] = payload
    assert raw["as-cbor"][:1] != b"{"
    assert cbor2.loads(raw["as-cbor"])["ok"] is True
    assert json.loads(raw["as-json"])["ok"] is True
    assert json.loads(raw["json-ws"])["ok"] is True
    assert cbor2.loads(raw["err-cbor"])["error"]["code"] == "unknown_op"
    # an error reply with `id: null` comes in the request's codec too
    assert (await raw_reply(backend, b'{"op": "get_state"}'))["id"] is None
    assert backend.raw_on("reply")[-1][:1] == b"{"
    assert (await raw_reply(backend, as_cbor({"op": "get_state"})))["id"] is None
    assert backend.raw_on("reply")[-1][:1] != b"{"


async def test_mqtt5_response_topic_and_correlation_data(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    response_topic = f"{backend.root}/replies-for/app-7"
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = b"\x00corr-42\xff"
    await backend.send_raw(as_json(envelope("with-props", "get_state")), properties=properties)
    await backend.wait_for(lambda: any(t == response_topic for t, *_ in backend.raw))
    (payload, props) = next((p, pr) for t, p, pr, _ in backend.raw if t == response_topic)
    assert json.loads(payload)["id"] == "with-props"
    assert json.loads(payload)["ok"] is True
    assert props is not None
    assert props.CorrelationData == b"\x00corr-42\xff"
    await backend.wait_for(lambda: "with-props" in backend.replies)  # and on R/reply as well
    # an error reply goes there too
    properties.CorrelationData = b"second"
    await backend.send_raw(b"\xa1", properties=properties)
    await backend.wait_for(lambda: len([1 for t, *_ in backend.raw if t == response_topic]) == 2)
    payload, props = [(p, pr) for t, p, pr, _ in backend.raw if t == response_topic][1]
    assert cbor2.loads(payload)["error"]["code"] == "bad_request"
    assert props.CorrelationData == b"second"


async def test_duplicate_request_id_runs_once(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    payload = as_json(envelope("dup-1", "reserve_now", reservation(5)))
    await backend.send_raw(payload)
    await backend.send_raw(payload)
    await backend.wait_for(lambda: len([r for r in backend.all_replies() if r.get("id") == "dup-1"]) == 2)
    first, second = [r for r in backend.all_replies() if r.get("id") == "dup-1"]
    assert first == second
    assert first["result"]["status"] == "Accepted"
    # once more, well after the first was answered (from the reply cache)
    await backend.send_raw(payload)
    await backend.wait_for(lambda: len([r for r in backend.all_replies() if r.get("id") == "dup-1"]) == 3)
    assert [r for r in backend.all_replies() if r.get("id") == "dup-1"][2] == first
    # a new id is a replacement: a new uuid and a second Placed
    replaced = await backend.ok("reserve_now", reservation(5))
    assert replaced["status"] == "Accepted"
    assert replaced["uuid"] != first["result"]["uuid"]
    await backend.wait_for(lambda: len(backend.reservation_updates()) >= 2)
    placed = [u for u in backend.reservation_updates() if u["reservation_status"] == "Placed"]
    assert [u["uuid"] for u in placed] == [first["result"]["uuid"], replaced["uuid"]]


async def test_duplicate_id_of_a_non_idempotent_op(charger: tuple[Running, Backend]) -> None:
    """stop_session twice under one id: one SessionCancelled and the same `true` twice."""
    _, backend = charger
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    await backend.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1})
    payload = as_cbor(envelope("stop-once", "stop_session", {"evse_id": 1}))
    await backend.send_raw(payload)
    await backend.send_raw(payload)
    await backend.wait_for(lambda: len([r for r in backend.all_replies() if r.get("id") == "stop-once"]) == 2)
    assert [r["result"] for r in backend.all_replies() if r.get("id") == "stop-once"] == [True, True]
    await wait_event(backend, 1, "SessionFinished")
    assert backend.event_names(1).count("SessionCancelled") == 1


async def test_durable_replies(charger: tuple[Running, Backend]) -> None:
    """When an ok reply of a state-changing op arrives, the change is already in state_dir."""
    running, backend = charger
    state_dir = running.config.charger.state_dir
    seen: dict[str, dict[str, Any]] = {}

    def on_message(topic: str, payload: bytes) -> None:
        if topic == f"{backend.root}/reply":
            reply = decode(payload)
            seen[reply["id"]] = stored_state(state_dir)  # at the very moment the reply arrives

    backend.hooks.append(on_message)
    await backend.ok("reserve_now", reservation(11), request_id="d-reserve")
    assert [e["reservation_id"] for e in seen["d-reserve"]["reservations"]["entries"]] == [11]
    await backend.ok("set_local_auth_list", LOCAL_LIST, request_id="d-list")
    assert {t["id_token"] for t in seen["d-list"]["local_list"]["tokens"]} == {LOCAL_TOKEN, BLOCKED_TOKEN}
    assert seen["d-list"]["local_list"]["version"] == 1
    await backend.ok("set_max_current", {"evse_id": 1, "current_a": 13}, request_id="d-limit")
    assert seen["d-limit"]["limits"] == {"1": 13}
    await backend.ok("cancel_reservation", {"reservation_id": 11}, request_id="d-cancel")
    assert seen["d-cancel"]["reservations"]["entries"] == []
    await backend.ok("set_enabled", {"evse_id": 1, "enabled": False}, request_id="d-enabled")
    assert seen["d-enabled"]["enabled"] == {"1": False}


async def test_durable_session_events_before_authorize_reply(charger: tuple[Running, Backend]) -> None:
    """authorize / stop_session: their SessionEvents are in the outbox when the reply arrives."""
    running, backend = charger
    state_dir = running.config.charger.state_dir
    journal: dict[str, bytes] = {}

    def on_message(topic: str, payload: bytes) -> None:
        if topic == f"{backend.root}/reply":
            journal[decode(payload)["id"]] = stored_bytes(state_dir)

    await backend.ok("set_local_auth_list", LOCAL_LIST)
    backend.hooks.append(on_message)
    await backend.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1}, request_id="a-auth")
    assert b"SessionStarted" in journal["a-auth"]
    await backend.ok("stop_session", {"evse_id": 1}, request_id="a-stop")
    assert b"SessionCancelled" in journal["a-stop"]


async def test_configured_cbor_codec(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, codec="cbor") as (running, backend):
        await backend.ok("set_local_auth_list", LOCAL_LIST)  # a JSON request still gets a JSON reply
        assert backend.raw_on("reply")[-1][:1] == b"{"
        await backend.ok("reserve_now", reservation(1))
        running.sim.plug(1, "B")
        await backend.ok("sim_token", {"evse_id": 1, "id_token": "AA11"})
        await wait_event(backend, 1, "SessionStarted")
        await wait_event(backend, 1, "ReservationEnd")
        for suffix in ("status", "evse/1/state", "evse/1/session", "reservation"):
            payloads = backend.raw_on(suffix)
            assert payloads, suffix
            for payload in payloads:
                assert payload[:1] != b"{", (suffix, payload[:40])
                assert isinstance(cbor2.loads(payload), dict)
        assert cbor2.loads(backend.raw_on("evse/1/state")[-1])["evse_id"] == 1
        await backend.wait_for(lambda: backend.raw_on("evse/1/meter"))
        assert isinstance(cbor2.loads(backend.raw_on("evse/1/meter")[0]), dict)


async def test_invalid_args_message_names_the_field_of_a_huge_integer(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    reply = await backend.request("set_enabled", {"evse_id": 10**40, "enabled": False}, codec="cbor")
    assert reply["error"]["code"] == "invalid_args"
    assert reply["error"]["message"].startswith("evse_id")
    reply = await backend.request("reserve_now", {"reservation_id": -(10**40), "id_token": "AA11",
                                                  "expiry_time": in_s(60)}, codec="cbor")
    assert reply["error"]["code"] == "invalid_args"
    assert reply["error"]["message"].startswith("reservation_id")


async def test_invalid_args_message_names_the_field_of_a_giant_integer(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    reply = await backend.request("set_enabled", {"evse_id": 10**5000, "enabled": False}, codec="cbor")
    assert reply["error"]["code"] == "invalid_args"
    assert reply["error"]["message"].startswith("evse_id"), reply["error"]["message"]
