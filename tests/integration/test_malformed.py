"""500 malformed requests against the running controller (API.md §2: "Malformed input of any kind, any
size, never stops the controller and never changes state"; "Every request gets exactly one reply").

The payloads are generated deterministically (`random.Random(1234)`): random bytes, truncated CBOR
and JSON of valid requests, valid envelopes with a wrong type in every field and in every argument,
nesting 10 000 deep, oversize payloads (70 000 bytes), and JSON/CBOR with NaN, infinities and huge
numbers.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections import Counter
from typing import Any

import cbor2
import pytest

from tests.support.backend import Backend
from tests.support.builders import LOCAL_LIST
from tests.support.codec import encode
from tests.support.controller import Running

pytestmark = pytest.mark.integration

COUNT = 500
SEED = 1234

#: Valid requests (never sent as they are): each field has a type, so that a wrong one can be chosen.
VALID: list[tuple[str, dict[str, tuple[Any, str]]]] = [
    ("reserve_now", {"reservation_id": (1, "int"), "id_token": ("AA11", "str"), "expiry_time": ("2099-01-01T00:00:00Z",
     "str"), "evse_id": (1, "int"), "parent_id_token": ("G1", "str"), "connector_type": ("sType2", "str"),
     "start_time": ("2098-01-01T00:00:00Z", "str"), "sender": ("emsp", "str"), "token_type": ("RFID", "str")}),
    ("cancel_reservation", {"reservation_id": (1, "int"), "sender": ("emsp", "str")}),
    ("exists_reservation", {"id_token": ("AA11", "str"), "evse_id": (1, "int"), "group_id_token": ("G1", "str")}),
    ("authorize", {"id_token": ("04A2B3C4", "str"), "evse_id": (1, "int"), "token_type": ("RFID", "str")}),
    ("stop_session", {"evse_id": (1, "int"), "reason": ("Remote", "str")}),
    ("set_max_current", {"evse_id": (1, "int"), "current_a": (16, "number")}),
    ("switch_phases", {"evse_id": (1, "int"), "three_phases": (True, "bool")}),
    ("set_enabled", {"evse_id": (1, "int"), "enabled": (False, "bool")}),
    ("unlock_connector", {"evse_id": (1, "int")}),
    ("set_local_auth_list", {"version": (2, "int"), "full": (True, "bool"), "tokens": ([], "list")}),
    ("sim_plug", {"evse_id": (1, "int"), "cp": ("C", "str"), "diode_ok": (True, "bool")}),
    ("sim_token", {"evse_id": (1, "int"), "id_token": ("04A2B3C4", "str"), "token_type": ("RFID", "str")}),
    ("sim_fault", {"evse_id": (1, "int"), "fault": ("rcd", "str"), "active": (True, "bool")}),
    ("sim_load", {"evse_id": (1, "int"), "current_a": (20, "number")}),
]

WRONG: dict[str, list[Any]] = {  # never None: a null optional field means "absent"
    "int": ["1", 1.5, True, [1], {"n": 1}],
    "str": [1, 2.5, False, ["AA11"], {"s": "AA11"}],
    "bool": [1, 0, "true", [True], {"b": True}],
    "number": ["16", True, [16], {"a": 16}],
    "list": ["[]", 0, {"tokens": []}, True],
}
WRONG_ENVELOPE = [5, 1.5, True, ["x"], {"x": 1}, None]


def valid_request(rng: random.Random, n: int) -> tuple[str, dict[str, Any]]:
    op, fields = rng.choice(VALID)
    return op, {"id": f"m{n}", "op": op, "args": {k: v for k, (v, _) in fields.items()}}


def random_bytes(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 2, 3, 8, 40, 300, 2000])))


def truncated(rng: random.Random, n: int) -> bytes:
    _, request = valid_request(rng, n)
    data = encode(rng.choice(["cbor", "cbor", "json"]), request)
    return data[:rng.randrange(len(data))]


def wrong_type(rng: random.Random, n: int) -> bytes:
    op, fields = rng.choice(VALID)
    request: dict[str, Any] = {"id": f"m{n}", "op": op, "args": {k: v for k, (v, _) in fields.items()}}
    where = rng.choice(["id", "op", "args"] + ["field"] * 6)
    if where == "field":
        name = rng.choice(list(fields))
        request["args"][name] = rng.choice(WRONG[fields[name][1]])
    elif where == "args":
        request["args"] = rng.choice(["x", 1, 2.5, True, ["evse_id", 1], None])
    else:
        bad = rng.choice(WRONG_ENVELOPE + (["", "x" * 65] if where == "id" else [""]))
        if bad is None and rng.random() < 0.5:
            del request[where]
        else:
            request[where] = bad
    return encode(rng.choice(["cbor", "json"]), request)


def deep(rng: random.Random, n: int) -> bytes:
    depth = 10_000
    kind = rng.randrange(5)
    if kind == 0:  # a JSON object 10 000 deep
        return b'{"a":' * depth + b"1" + b"}" * depth
    if kind == 1:  # a JSON envelope whose args are 10 000 deep
        return f'{{"id":"m{n}","op":"set_max_current","args":'.encode() + b'{"a":' * depth + b"1" + b"}" * (depth + 1)
    if kind == 2:  # CBOR arrays 10 000 deep
        return b"\x81" * depth + b"\x01"
    if kind == 3:  # CBOR maps 10 000 deep
        return b"\xa1\x61a" * depth + b"\x01"
    head = cbor2.dumps({"id": f"m{n}", "op": "set_enabled"})  # a CBOR envelope with args 10 000 deep
    return bytes([head[0] + 1]) + head[1:] + cbor2.dumps("args") + b"\x81" * depth + b"\xf5"


def oversize(rng: random.Random, n: int) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:
        data = json.dumps({"id": f"m{n}", "op": "set_enabled", "args": {"evse_id": 1, "enabled": False,
                                                                        "pad": "x" * 70_000}}).encode()
    elif kind == 1:
        data = cbor2.dumps({"id": f"m{n}", "op": "reserve_now", "args": {"pad": b"\x00" * 70_000}})
    else:
        data = bytes(rng.randrange(256) for _ in range(70_000))
    return data[:70_000]


def numbers(rng: random.Random, n: int) -> bytes:
    choices = [
        f'{{"id":"m{n}","op":"set_max_current","args":{{"evse_id":1,"current_a":NaN}}}}',
        f'{{"id":"m{n}","op":"set_max_current","args":{{"evse_id":1,"current_a":Infinity}}}}',
        f'{{"id":"m{n}","op":"set_max_current","args":{{"evse_id":1,"current_a":-Infinity}}}}',
        f'{{"id":"m{n}","op":"set_max_current","args":{{"evse_id":1,"current_a":1e999}}}}',
        f'{{"id":"m{n}","op":"set_max_current","args":{{"evse_id":1,"current_a":1e308}}}}',  # Error_OutOfRange
        f'{{"id":"m{n}","op":"sim_load","args":{{"evse_id":1,"current_a":1e308}}}}',
        f'{{"id":"m{n}","op":"set_enabled","args":{{"evse_id":1{"0" * 5000},"enabled":false}}}}',  # 5001 digits
        f'{{"id":"m{n}","op":"set_enabled","args":{{"evse_id":1{"0" * 300},"enabled":false}}}}',
        f'{{"id":"m{n}","op":"cancel_reservation","args":{{"reservation_id":-1{"0" * 4000}}}}}',
        f'{{"id":"m{n}","op":"reserve_now","args":{{"reservation_id":1e3,"id_token":"A",'
        f'"expiry_time":"2099-01-01T00:00:00Z"}}}}',
        '{"id":NaN,"op":"set_enabled","args":{"evse_id":1,"enabled":false}}',
        f'{{"id":"m{n}","op":Infinity}}',
        '{"id":1e999,"op":"get_state"}',
    ]
    text = rng.choice(choices)
    if rng.random() < 0.3:  # the same in CBOR (big integers as bignums, NaN as a float)
        cbor_choices: list[dict[str, Any]] = [
            {"id": f"m{n}", "op": "set_max_current", "args": {"evse_id": 1, "current_a": math.nan}},
            {"id": f"m{n}", "op": "set_max_current", "args": {"evse_id": 1, "current_a": -math.inf}},
            {"id": f"m{n}", "op": "set_enabled", "args": {"evse_id": 10**5000, "enabled": False}},
            {"id": f"m{n}", "op": "reserve_now", "args": {"reservation_id": 10**40, "id_token": "A",
                                                           "expiry_time": "2099-01-01T00:00:00Z"}},
            {"id": f"m{n}", "op": "sim_load", "args": {"evse_id": -(10**30), "current_a": 1}},
            {"id": math.nan, "op": "get_state"},
        ]
        return cbor2.dumps(rng.choice(cbor_choices))
    return text.encode()


def malformed_payloads() -> list[bytes]:
    rng = random.Random(SEED)
    plan = ([random_bytes] * 110 + [truncated] * 100 + [wrong_type] * 180 + [deep] * 25 + [oversize] * 15
            + [numbers] * 70)
    assert len(plan) == COUNT
    rng.shuffle(plan)
    return [make(rng, n) for n, make in enumerate(plan)]


def test_payloads_are_deterministic() -> None:
    assert malformed_payloads() == malformed_payloads()
    sizes = Counter(len(p) for p in malformed_payloads())
    assert sizes[70_000] >= 10
    assert max(sizes) == 70_000


def stable(state: dict[str, Any]) -> dict[str, Any]:
    """get_state without what time changes by itself (uptime, the documents' updated_at)."""
    return {k: v for k, v in state.items() if k != "uptime_s"} | {
        "evses": [{k: v for k, v in e.items() if k != "updated_at"} for e in state["evses"]]}


async def test_500_malformed_payloads(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    # some state that a wrongly executed request would change
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    await backend.ok("reserve_now", {"reservation_id": 1, "id_token": "AA11", "expiry_time": "2099-01-01T00:00:00Z",
                                     "evse_id": 1, "sender": "emsp"})
    await backend.wait_for(lambda: (backend.state(1) or {}).get("status") == "Reserved")
    await backend.wait_for(lambda: (backend.state(1) or {}).get("cp") == "A")  # the pilot has been read
    before = await backend.ok("get_state")
    durable_before = len([t for t, _ in backend.messages if t.endswith(("/session", "/reservation"))])
    sim_before = (running.sim.ev(1), running.sim.faults(1), running.controller.charger.commanded_limit_a(1))
    local_before = running.controller.charger.local_list.snapshot()
    replies_before = len(backend.all_replies())

    payloads = malformed_payloads()
    for payload in payloads:
        await backend.send_raw(payload)
    await backend.wait_for(lambda: len(backend.all_replies()) - replies_before >= COUNT, 30)
    await asyncio.sleep(0.2)  # a second reply to any of them would arrive by now
    replies = backend.all_replies()[replies_before:]
    assert len(replies) == COUNT  # exactly one reply each

    assert all(isinstance(r, dict) and set(r) >= {"id", "op", "ok"} for r in replies)
    ok = [r for r in replies if r["ok"] is not False]
    # the only ok:true replies are answers to well-typed huge numbers, which change nothing
    harmless = {("set_max_current", "Error_OutOfRange"), ("cancel_reservation", False)}
    assert all(r["ok"] is True and (r["op"], r["result"]) in harmless for r in ok), ok
    codes = Counter(r["error"]["code"] for r in replies if r["ok"] is False)
    assert set(codes) <= {"bad_request", "invalid_args", "unknown_op"}, codes
    assert codes["bad_request"] > 100
    assert codes["invalid_args"] > 100
    assert all(isinstance(r["error"]["message"], str) and r["error"]["message"] for r in replies if not r["ok"])
    # the requests with a readable id were answered under it
    ids = Counter(r["id"] for r in replies if r["id"] is not None)
    assert all(count == 1 for count in ids.values()), [i for i, c in ids.items() if c > 1]

    assert not running.task.done()  # the controller still runs
    after = await backend.ok("get_state")  # and answers a valid request
    assert stable(after) == stable(before)
    assert len([t for t, _ in backend.messages if t.endswith(("/session", "/reservation"))]) == durable_before
    assert (running.sim.ev(1), running.sim.faults(1), running.controller.charger.commanded_limit_a(1)) == sim_before
    assert running.controller.charger.local_list.snapshot() == local_before
    assert await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"}) is True
    await backend.wait_for(lambda: (backend.state(1) or {}).get("status") == "Preparing")
