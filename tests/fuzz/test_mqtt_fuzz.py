"""Fuzzing the request path of API.md §2, §3 and §8 with hypothesis.

Every generated payload goes through the real path the backend link uses (`BackendLink._request`
without the broker): `parse_request(payload, 65536)`; a `BadRequest` becomes the `bad_request` reply,
anything else is run by `Controller._execute(request, instant())` on a running in-process
controller (simulated board, two EVSEs, cbor as the configured codec). Its MQTT link points at a free
loopback port where nothing listens, so it just keeps retrying in the background.

Payloads (API.md §2: "Malformed input of any kind, any size, never stops the controller and never
changes state"):

* random bytes, also starting with `{` (JSON) and deep nesting;
* JSON / CBOR encodings of arbitrary nested values: None, bools, ints (also far beyond 64 bits and the
  float range), floats (nan, inf), text, bytes, lists, maps with non-string keys; in CBOR also tags,
  simple values, `undefined`, sets and datetimes;
* request envelopes `{"id", "op", "args"}` with a real or random `op` and, for a real op, its args
  map with one or two fields mutated (wrong type, out of range, missing, null, an extra field, args
  not a map, a bad entry in the local list), or left valid; in both codecs, sometimes truncated, with
  trailing garbage, with leading blanks or padded beyond the 65536-byte limit.

Checked for every payload:

* `parse_request` raises nothing but `BadRequest`; `_execute` raises nothing and returns a reply
  dict, or `Deferred` (an `authorize` waiting for the backend) whose reply comes later;
* the reply has `ok` (bool), the request's `id` and `op`, `result` when ok, else
  `error: {code, message}` with a documented code; a `bad_request` reply carries the id whenever
  the payload decodes to a map with a readable id (API.md §2); the reply encodes in the request's codec;
* a request that was refused (`ok: false`), that only reads (`get_state`, `list_reservations`,
  `exists_reservation`) or whose result says nothing was done (a reservation not Accepted,
  `cancel_reservation` / `stop_session` / `unlock_connector` false, a `set_max_current` /
  `switch_phases` error) leaves the controller exactly as it was: EVSE state documents, the
  reservation book, the local list, commanded limits, enabled flags, phases, held tokens, pending
  authorizations, the event `seq`, relays and the simulated EV;
* the controller keeps running.

Determinism. The controller's core task is *parked* (blocked inside its dispatch on an event) while an
example runs, so `_execute` runs alone, exactly as in production where only the core task calls it,
and before/after views are not disturbed by pilot samples or deadlines. Between examples the core is
let go for a few milliseconds (it then reacts to what valid `sim_*` ops did, expires auth requests,
...) and parked again. The controller lives on its own event loop in a background thread for the
whole module, so hypothesis drives plain synchronous tests.

Profiles: "ci" (default, 300 examples per test) and "long" (`HYPOTHESIS_PROFILE=long`, see README).

Firmware bugs this fuzzing found (a lone UTF-16 surrogate in a JSON string that was stored and then
killed the controller, `OverflowError` escaping `_execute` for huge ints and overflowing times, deep
args losing their readable id) are fixed; their regression tests are at the end of this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

import cbor2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import firmware.mqtt
from firmware.aio import instant
from firmware.app import Command, Controller
from firmware.core.events import SessionCancellationReason
from firmware.core.instant import Instant
from firmware.ops import OPS as CORE_OPS
from firmware.ops import Deferred
from firmware.sim_lane import SIM_OPS
from firmware.wire import (
    MAX_DEPTH,
    MAX_ID_LEN,
    BadRequest,
    Request,
    encode,
    error_reply,
    parse_request,
)
from hal.sim import FAULTS
from tests.support.broker import free_port
from tests.support.builders import evse
from tests.support.codec import as_cbor, decode, envelope, is_json
from tests.support.controller import Running, start_controller, write_config

T = TypeVar("T")

MAX_PAYLOAD = 65536
ERROR_CODES = frozenset({"bad_request", "unknown_op", "invalid_args", "unsupported", "busy", "internal"})
OPS = set(CORE_OPS) | SIM_OPS  # every op of API.md §3 and §8
REAL_OPS = sorted(OPS)
EVSE_IDS = [1, 4]
EVSES = evse(1, phase_switching=True) + evse(4, connectors=("cCCS2", "Unknown"), max_current_a=16, phases=1)
SETTLE_S = 0.01
READ_ONLY = frozenset({"get_state", "list_reservations", "exists_reservation"})
HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
          HealthCheck.filter_too_much]


# --- the controller, on its own loop, parked between steps ------------------------------------------

_PARK = object()  # a queue item the wrapped dispatch blocks on


class Harness:
    """A running controller (sim board, no broker) on an event loop in a background thread."""

    def __init__(self, directory: Path) -> None:
        # The link's reconnect jitter uses the global `random` from this other thread; hypothesis
        # (rightly) refuses a global random state that changes while it draws. A private one instead.
        self._global_random = firmware.mqtt.random
        firmware.mqtt.random = random.Random(0)  # type: ignore[assignment]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-controller", daemon=True)
        self.thread.start()
        self._parked = asyncio.Event()
        self._resume = asyncio.Event()
        self.waiting: list[tuple[asyncio.Future[dict[str, object]], Request]] = []
        try:
            self.running: Running = self.call(self._start(directory))
        except BaseException:
            self._stop_loop()
            raise

    @property
    def controller(self) -> Controller:
        return self.running.controller

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self, directory: Path) -> Running:
        config = write_config(directory, free_port(), charger_id="CP-FUZZ", codec="cbor", evses=EVSES)
        running = await start_controller(config)
        original = running.controller.core.dispatch

        async def dispatch(item: Any, at: Instant) -> None:  # noqa: ANN401
            if item is _PARK:
                self._parked.set()
                await self._resume.wait()
                return
            await original(item, at)

        running.controller.core.dispatch = dispatch  # type: ignore[method-assign]
        await self._park(running)
        return running

    async def _park(self, running: Running) -> None:
        self._parked, self._resume = asyncio.Event(), asyncio.Event()
        running.controller.queue.put(_PARK)  # type: ignore[arg-type]
        parked = asyncio.ensure_future(self._parked.wait())
        await asyncio.wait([parked, running.task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not parked.done():
            parked.cancel()
            self.check_alive(running)
            raise AssertionError("the core task did not come round to the park item within 10 s")

    def check_alive(self, running: Running | None = None) -> None:
        task = (running or self.running).task
        if task.done():
            exc = None if task.cancelled() else task.exception()
            raise AssertionError(f"the controller stopped: {exc!r}") from exc

    async def settle(self) -> None:
        """Let the core run for a moment (it reacts to what the example did), then park it again."""
        self.check_alive()
        self._resume.set()
        await asyncio.sleep(SETTLE_S)
        self.check_alive()
        await self._park(self.running)
        for future, request in list(self.waiting):  # authorize replies that waited for the backend
            if future.done():
                self.waiting.remove((future, request))
                check_reply(future.result(), request.request_id, request.op)
                encode(request.codec, future.result())

    def run(self, payloads: list[bytes]) -> list[str]:
        return self.call(self._run(payloads))

    async def _run(self, payloads: list[bytes]) -> list[str]:
        try:
            labels = [await drive(self, payload) for payload in payloads]
        except BaseException:
            with contextlib.suppress(Exception):
                await self.settle()
            raise
        await self.settle()
        return labels

    def close(self) -> None:
        async def shutdown() -> None:
            self._resume.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self.running.stop()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await self.loop.shutdown_default_executor()

        try:
            self.call(shutdown(), timeout=30)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        firmware.mqtt.random = self._global_random


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Any:  # noqa: ANN401
    h = Harness(tmp_path_factory.mktemp("fuzz"))
    try:
        yield h
    finally:
        h.close()


# --- what is checked for each payload --------------------------------------------------------------

def check_reply(reply: object, request_id: str | None, op: str | None) -> None:
    assert isinstance(reply, dict), f"reply is not a map: {reply!r}"
    assert isinstance(reply.get("ok"), bool), f"reply without a bool ok: {reply!r}"
    assert reply.get("id") == request_id, f"reply id {reply.get('id')!r} != request id {request_id!r}"
    assert reply.get("op") == op, f"reply op {reply.get('op')!r} != request op {op!r}"
    if reply["ok"]:
        assert "result" in reply, reply
    else:
        error = reply.get("error")
        assert isinstance(error, dict), reply
        assert error.get("code") in ERROR_CODES, f"undocumented error code: {reply!r}"
        assert isinstance(error.get("message"), str), reply
        assert error["message"], reply


def view(c: Controller) -> dict[str, object]:
    """What get_state shows and more: everything a request could change."""
    ch, sim = c.charger, c.sim
    docs: dict[int, object] = {}
    for cid in c.evse_ids:
        doc = c.state_doc(cid)
        doc.pop("updated_at", None)
        if isinstance(doc.get("session"), dict):
            doc["session"] = {k: v for k, v in doc["session"].items() if k != "started_at"}  # type: ignore[union-attr]
        docs[cid] = doc
    return {
        "evses": docs,
        "book": list(ch.book.entries),
        "local_list": ch.local_list.snapshot(),
        "limits": {cid: ch.commanded_limit_a(cid) for cid in c.evse_ids},
        "enabled": {cid: m.enabled for cid, m in ch.evses.items()},
        "phases": dict(ch.phases),
        "held": list(ch.tokens._held),  # noqa: SLF001
        "pending_auth": len(ch.tokens._pending),  # noqa: SLF001
        "authorize_waiters": len(c.core.authorize_waiters),
        "seq": c.core.seq,  # no durable message was produced
        "relays": {cid: m.relay_closed for cid, m in c.charger.evses.items()},
        "sim": {cid: (sim.ev(cid), sim.faults(cid), sim.locked(cid)) for cid in c.evse_ids},
        "sim_tokens": sim._tokens.qsize(),  # noqa: SLF001
    }


def assert_unchanged(before: dict[str, object], after: dict[str, object], what: str) -> None:
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"{what} changed state: {changed}"


def refused(op: str, result: object) -> bool:
    """An ok reply whose result says nothing was done (so nothing may have changed)."""
    if op in READ_ONLY:
        return True
    if op == "reserve_now":
        return isinstance(result, dict) and result.get("status") != "Accepted"
    if op in ("cancel_reservation", "stop_session", "unlock_connector"):
        return result is False
    if op in ("set_max_current", "switch_phases"):
        return result != "Success"
    return False


def _walk(value: object, depth: int = 0) -> Any:  # noqa: ANN401
    yield value
    if depth > 2 * MAX_DEPTH:
        return
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(k, depth + 1)
            yield from _walk(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _walk(v, depth + 1)


def has_lone_surrogate(value: object) -> bool:
    """KNOWN BUG (test_lone_surrogate_*): JSON lets a lone surrogate into a str the codecs cannot encode."""
    return any(isinstance(v, str) and any("\ud800" <= ch <= "\udfff" for ch in v) for v in _walk(value))


def readable_id(payload: bytes) -> tuple[str | None, bool]:
    """API.md §2, read independently: (the id when the payload decodes to a map with a readable id,
    whether the decoded value is nested deeper than the firmware accepts)."""
    if len(payload) > MAX_PAYLOAD:
        return None, False
    try:
        value = decode(payload)
    except Exception:  # noqa: BLE001 - undecodable (also RecursionError): no id
        return None, False
    if not isinstance(value, dict):
        return None, False
    raw = value.get("id")
    request_id = raw if isinstance(raw, str) and 1 <= len(raw) <= MAX_ID_LEN else None
    return request_id, _too_deep(value)


def _too_deep(value: object, depth: int = 0) -> bool:
    if depth > MAX_DEPTH:
        return True
    if isinstance(value, dict):
        return any(_too_deep(k, depth + 1) or _too_deep(v, depth + 1) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_too_deep(v, depth + 1) for v in value)
    return False


def parsed(payload: bytes) -> Request | BadRequest:
    """parse_request's request, or the BadRequest it raised (most fuzzed payloads are refused there)."""
    try:
        return parse_request(payload, MAX_PAYLOAD)
    except BadRequest as exc:
        return exc


def check_bad_request(refusal: BadRequest, payload: bytes) -> None:
    """The bad_request reply the link sends for `payload`: documented, under the id API.md lets a reader
    find (independently), encodable in the payload's codec."""
    reply = error_reply(refusal.request_id, refusal.op, "bad_request", str(refusal))
    check_reply(reply, refusal.request_id, refusal.op)
    expected_id, _ = readable_id(payload)
    if not has_lone_surrogate(expected_id):
        assert refusal.request_id == expected_id, f"bad_request id {refusal.request_id!r}, readable id {expected_id!r}"
    assert refusal.op is None or isinstance(refusal.op, str)
    encode("json" if is_json(payload) else "cbor", reply)


async def drive(h: Harness, payload: bytes) -> str:
    """One payload through parse_request -> _execute, checked; returns a label for hypothesis' statistics."""
    c = h.controller
    before = view(c)
    request = parsed(payload)
    if isinstance(request, BadRequest):
        check_bad_request(request, payload)
        assert_unchanged(before, view(c), "a bad_request payload")
        return "bad_request"
    assert not has_lone_surrogate(request.args), "a lone surrogate got past parse_request"
    loop = asyncio.get_running_loop()
    reply = await c._execute(request, instant())  # noqa: SLF001
    if isinstance(reply, Deferred):
        assert request.op == "authorize", f"{request.op} returned a Deferred reply"
        future: asyncio.Future[dict[str, object]] = loop.create_future()
        # as CoreLoop.dispatch does
        c.core.authorize_waiters[reply.auth_request_id] = Command(request, future.set_result)
        h.waiting.append((future, request))
        return "authorize: waits for the backend"
    check_reply(reply, request.request_id, request.op)
    encode(request.codec, reply)  # the link answers in the request's codec
    op = request.op if request.op in OPS else "<unknown op>"
    if not reply["ok"]:
        assert_unchanged(before, view(c), f"refused {request.op} ({reply['error']})")  # type: ignore[index]
        return f"{op}: {reply['error']['code']}"  # type: ignore[index]
    if refused(request.op, reply["result"]):
        assert_unchanged(before, view(c), f"{request.op} answering {reply['result']!r}")
        return f"{op}: ok, nothing done"
    return f"{op}: ok"


# --- strategies: arbitrary values ------------------------------------------------------------------

BIG = [2**31, -(2**31) - 1, 2**63, 2**64, -(2**63) - 1, 2**1024, 10**400, -(10**400)]
ints = st.integers() | st.integers(min_value=-(2**1100), max_value=2**1100) | st.sampled_from(BIG)
non_str_keys = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.binary(max_size=8)
keys = non_str_keys | st.text(max_size=8)
SCALARS: dict[str, st.SearchStrategy[Any]] = {"none": st.none(), "bool": st.booleans(), "int": ints,
                                              "float": st.floats(), "str": st.text(max_size=40),
                                              "bytes": st.binary(max_size=40)}
scalars = st.one_of(*SCALARS.values())
values = st.recursive(scalars, lambda children: st.lists(children, max_size=6)
                      | st.dictionaries(keys, children, max_size=6), max_leaves=30)

TAGS = [0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 256, 258, 260, 261, 55799]
cbor_scalars = scalars | st.just(cbor2.undefined) \
    | st.builds(cbor2.CBORSimpleValue, st.integers(0, 19) | st.integers(32, 255)) \
    | st.datetimes(timezones=st.just(UTC)) | st.frozensets(st.integers() | st.text(max_size=4), max_size=4)
cbor_values = st.recursive(
    cbor_scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6)
    | st.builds(cbor2.CBORTag, st.sampled_from(TAGS) | st.integers(0, 2**64 - 1), children),
    max_leaves=30)


def jsonable(value: object) -> object:
    """bytes become hex strings (JSON has none); keys JSON cannot have become strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else k): jsonable(v) for k, v in value.items()}
    return value


def as_json(value: object) -> bytes:
    """JSON of anything hypothesis draws (bytes as hex; NaN and infinities as JSON5-style literals)."""
    return json.dumps(jsonable(value), allow_nan=True).encode()


@st.composite
def transformed(draw: st.DrawFn, payload: bytes, as_is: int = 6) -> bytes:
    how = draw(st.sampled_from(["as is"] * as_is + ["truncated", "truncated", "garbage after", "blanks before",
                                                     "oversize"]))
    if how == "truncated" and payload:
        return payload[:draw(st.integers(0, len(payload) - 1))]
    if how == "garbage after":
        return payload + draw(st.binary(min_size=1, max_size=16))
    if how == "blanks before":
        return draw(st.sampled_from([b" ", b"\n", b"\t\r\n "])) + payload
    if how == "oversize":
        return payload + b" " * (MAX_PAYLOAD + 1 - len(payload) + draw(st.integers(0, 64)))
    return payload


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Deep nesting (alone, or as the args of a request), far beyond MAX_DEPTH and the recursion limit."""
    depth = draw(st.integers(MAX_DEPTH - 2, 40_000))
    in_envelope = draw(st.booleans())
    if draw(st.booleans()):
        inner = b"[" * depth + b"]" * depth
        return b'{"id":"deep","op":"get_state","args":' + inner + b"}" if in_envelope else inner
    inner = b"\x81" * depth + b"\x01"
    prefix = b"\xa3" + b"".join(cbor2.dumps(s) for s in ("id", "deep", "op", "get_state", "args"))
    return prefix + inner if in_envelope else inner


garbage = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"{" + b),
    values.map(as_json).flatmap(transformed),
    values.map(as_cbor).flatmap(transformed),
    cbor_values.map(as_cbor).flatmap(transformed),
    st.text(max_size=60).map(lambda t: ('{"id":"' + t + '"').encode("utf-8", "surrogatepass")),
    nested(),
)


# --- strategies: request envelopes with near-valid args ---------------------------------------------

@dataclass(frozen=True)
class F:
    kind: str
    required: bool = True


SPECS: dict[str, dict[str, F]] = {
    "reserve_now": {"reservation_id": F("res_id"), "id_token": F("token"), "expiry_time": F("time"),
                    "evse_id": F("evse", False), "parent_id_token": F("token", False),
                    "connector_type": F("connector", False), "start_time": F("time", False),
                    "sender": F("sender", False), "token_type": F("token_type", False)},
    "cancel_reservation": {"reservation_id": F("int"), "sender": F("sender", False)},
    "exists_reservation": {"id_token": F("token"), "evse_id": F("evse", False), "group_id_token": F("token", False)},
    "list_reservations": {},
    "authorize": {"id_token": F("token"), "evse_id": F("evse", False), "token_type": F("token_type", False)},
    "stop_session": {"evse_id": F("evse"), "reason": F("reason", False)},
    "set_max_current": {"evse_id": F("evse"), "current_a": F("current")},
    "switch_phases": {"evse_id": F("evse"), "three_phases": F("bool")},
    "set_enabled": {"evse_id": F("evse"), "enabled": F("bool")},
    "unlock_connector": {"evse_id": F("evse")},
    "set_local_auth_list": {"version": F("version"), "full": F("bool"), "tokens": F("tokens")},
    "get_state": {},
    "sim_plug": {"evse_id": F("evse"), "cp": F("cp"), "pp_ohms": F("pp_ohms", False), "diode_ok": F("bool", False)},
    "sim_token": {"evse_id": F("evse"), "id_token": F("token"), "token_type": F("token_type", False)},
    "sim_fault": {"evse_id": F("evse"), "fault": F("fault"), "active": F("bool")},
    "sim_load": {"evse_id": F("evse"), "current_a": F("load")},
}
TOKEN_ENTRY: dict[str, F] = {"id_token": F("token"), "status": F("status"), "parent_id_token": F("token", False),
                             "expiry": F("time", False)}
assert set(SPECS) == set(OPS), f"SPECS is out of date with firmware.app.OPS: {sorted(set(OPS) ^ set(SPECS))}"

TOKENS = ["04A2B3C4", "0BADCAFE", "aa11", "AA11", "GROUP-1"]
TIMES = ["2099-01-01T00:00:00Z", "2098-06-01T12:00:00.250+02:00", "2031-03-04T05:06:07Z",
         "2020-01-01T00:00:00Z", "2097-01-01T00:00:00+00:00"]

VALID: dict[str, st.SearchStrategy[Any]] = {
    "evse": st.sampled_from(EVSE_IDS),
    "res_id": st.integers(-3, 12),
    "int": st.integers(-3, 12),
    "version": st.integers(0, 2**40),
    "token": st.sampled_from(TOKENS) | st.text(min_size=1, max_size=20),
    "sender": st.sampled_from(["", "emsp-a", "emsp-b"]),
    "connector": st.sampled_from(["sType2", "cCCS2", "Unknown", "cType2"]),
    "token_type": st.sampled_from(["RFID", "APP_USER", "ISO14443", "AD_HOC_USER"]),
    "time": st.sampled_from(TIMES),
    "current": st.sampled_from([0, 6, 10, 16, 32, 16.5]) | st.floats(0, 40),
    "load": st.sampled_from([0, 6, 16, 32]) | st.floats(0, 80),
    "bool": st.booleans(),
    "reason": st.sampled_from([r.value for r in SessionCancellationReason]),
    "cp": st.sampled_from(list("ABCDE")),
    "fault": st.sampled_from(sorted(FAULTS)),
    "status": st.sampled_from(["Accepted", "Blocked", "Expired", "Invalid"]),
    "pp_ohms": st.none() | st.sampled_from([100.0, 220, 680, 1500, 0]),
}
OUT_OF_RANGE: dict[str, list[Any]] = {
    "evse": [0, -1, 2, 99, 2**40, 2**70],
    "res_id": [2**31, -(2**31) - 1, 2**64],
    "int": [2**64, -(2**70)],
    "version": [-1, -(2**40)],
    "token": ["", "x" * 256, "é" * 256],
    "sender": ["x" * 65],
    "connector": ["x" * 65],
    "token_type": ["x" * 65],
    "time": ["garbage", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "x" * 65, "",
             "2026-01-01", "2026-01-01T00:00:00+25:00", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z",
             "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"],  # the last two: known overflow bug
    "current": [-1, -0.0, 3, 5.99, 32.01, 1e9, 1e308, 10**400],  # 10**400: known overflow bug
    "load": [-1, 80.5, 1e9, 10**400],
    "reason": ["remote", "Nope", ""],
    "cp": ["F", "AB", "", "a"],
    "fault": ["fire", "RCD", ""],
    "status": ["accepted", "Unknown", ""],
    "pp_ohms": [-1, -1e-9, 10**400],
}
NOT_OF_TYPE: list[Any] = ["1", "", 1, 0, 1.5, -2.5, math.nan, math.inf, True, False, [1], [], {"k": 1}, {}, b"\x01",
                          2**70]
TYPE_OF: dict[str, Callable[[object], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "list": lambda v: isinstance(v, list),
}
KIND_TYPE = {"evse": "int", "res_id": "int", "int": "int", "version": "int", "current": "number", "load": "number",
             "pp_ohms": "number", "bool": "bool", "tokens": "list"}


RIGHT_SCALARS = {"int": {"int"}, "number": {"int", "float"}, "str": {"str"}, "bool": {"bool"}, "list": set()}


def wrong_type(kind: str) -> st.SearchStrategy[Any]:
    type_ = KIND_TYPE.get(kind, "str")
    is_right = TYPE_OF[type_]
    return (st.sampled_from([v for v in NOT_OF_TYPE if not is_right(v)])
            | st.one_of(*(s for name, s in SCALARS.items() if name not in RIGHT_SCALARS[type_]))
            | st.dictionaries(keys, values, max_size=3)
            | (st.lists(values, max_size=3) if type_ != "list" else st.nothing()))


@st.composite
def valid_map(draw: st.DrawFn, spec: dict[str, F]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, f in spec.items():
        if f.required or draw(st.booleans()):
            out[name] = draw(token_entries() if f.kind == "tokens" else VALID[f.kind])
    return out


def token_entries() -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(valid_map(TOKEN_ENTRY), max_size=4)


@st.composite
def mutated(draw: st.DrawFn, spec: dict[str, F], args: dict[str, Any]) -> object:
    """One change that makes a valid map (most likely) invalid."""
    names = sorted(spec)
    how = draw(st.sampled_from(["wrong type", "out of range", "missing", "null", "extra", "not a map"]
                               + (["token entry"] if "tokens" in spec else [])))
    if how == "not a map" or not names and how != "extra":
        maps = st.dictionaries(non_str_keys, values, min_size=1, max_size=3)
        return draw(scalars | st.lists(values, max_size=4) | maps)
    if how == "extra":
        key = draw(st.text(max_size=12).filter(lambda k: k not in spec) | non_str_keys)
        return args | {key: draw(values)}
    if how == "token entry":
        tokens = list(args.get("tokens") or [{"id_token": "AA11", "status": "Accepted"}])
        i = draw(st.integers(0, len(tokens) - 1))
        tokens[i] = draw(mutated(TOKEN_ENTRY, dict(tokens[i])) if isinstance(tokens[i], dict) else values)
        return args | {"tokens": tokens}
    name = draw(st.sampled_from(names))
    kind = spec[name].kind
    if how == "wrong type":
        return args | {name: draw(wrong_type(kind))}
    if how == "out of range" and kind in OUT_OF_RANGE:
        return args | {name: draw(st.sampled_from(OUT_OF_RANGE[kind]))}
    if how == "null":
        return args | {name: None}
    return {k: v for k, v in args.items() if k != name}  # missing (valid if the field is optional)


@st.composite
def near_valid_args(draw: st.DrawFn, op: str) -> object:
    spec = SPECS[op]
    args: object = draw(valid_map(spec))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        if isinstance(args, dict):
            args = draw(mutated(spec, args))
    return args


def _draw_id(draw: st.DrawFn, doc: dict[Any, Any]) -> None:
    id_kind = draw(st.sampled_from(["valid"] * 16 + ["value", "missing", "empty", "too long"]))
    if id_kind == "valid":
        doc["id"] = draw(st.text(min_size=1, max_size=MAX_ID_LEN))
    elif id_kind == "value":
        doc["id"] = draw(values)
    elif id_kind == "empty":
        doc["id"] = ""
    elif id_kind == "too long":
        doc["id"] = "r" * (MAX_ID_LEN + draw(st.integers(1, 100)))


def _draw_op(draw: st.DrawFn, doc: dict[Any, Any]) -> object:
    op_kind = draw(st.sampled_from(["real"] * 20 + ["text", "text", "value", "missing"]))
    op: object = None
    if op_kind == "real":
        op = draw(st.sampled_from(REAL_OPS))
    elif op_kind == "text":
        op = draw(st.text(max_size=20))
    elif op_kind == "value":
        op = draw(values)
    if op_kind != "missing":
        doc["op"] = op
    return op


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    doc: dict[Any, Any] = {}
    _draw_id(draw, doc)
    op = _draw_op(draw, doc)
    args_kind = draw(st.sampled_from(["near valid"] * 8 + ["value", "missing"]))
    if args_kind == "near valid" and isinstance(op, str) and op in SPECS:
        doc["args"] = draw(near_valid_args(op))
    elif args_kind != "missing":
        doc["args"] = draw(values)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(keys)] = draw(values)  # an extra envelope field
    codec = draw(st.sampled_from(["json", "cbor"]))
    payload = as_json(doc) if codec == "json" else as_cbor(doc)
    quotes = [i for i, byte in enumerate(payload) if byte == ord('"')]
    if codec == "json" and quotes and draw(st.integers(0, 19)) == 0:  # a lone surrogate escape in some string
        at = draw(st.sampled_from(quotes)) + 1
        payload = payload[:at] + draw(st.sampled_from([b"\\ud800", b"\\udfff", b"\\udbff"])) + payload[at:]
    return draw(transformed(payload, as_is=20))


# --- the properties ----------------------------------------------------------------------------------

class Blob:
    """A payload with a short repr (hypothesis prints the arguments of a failing example)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        more = f" ... ({len(self.data)} bytes)" if len(self.data) > 300 else ""
        return f"Blob({self.data[:300]!r}{more})"


@settings(suppress_health_check=HEALTH)
@given(payload=garbage.map(Blob))
def test_garbage_gets_one_documented_reply_and_changes_nothing(harness: Harness, payload: Blob) -> None:
    for label in harness.run([payload.data]):
        event(label)


@settings(suppress_health_check=HEALTH)
@given(payloads=st.lists(envelopes().map(Blob), min_size=1, max_size=6))
def test_envelopes_with_near_valid_args_get_documented_replies(harness: Harness, payloads: list[Blob]) -> None:
    for label in harness.run([p.data for p in payloads]):
        event(label)


def test_the_fuzzed_controller_is_still_serving(harness: Harness) -> None:
    """After the fuzzing (whatever order the tests run in): a plain request still works."""
    labels = harness.run([as_json(envelope("after-fuzz", "get_state"))])
    assert labels == ["get_state: ok, nothing done"]
    harness.check_alive()


# --- regressions: firmware bugs this fuzzing found (now fixed) --------------------------------------

@contextlib.asynccontextmanager
async def own_controller(tmp_path: Path) -> Any:  # noqa: ANN401
    config = write_config(tmp_path, free_port(), charger_id=f"CP-FUZZ-{id(tmp_path)}", codec="cbor")
    running = await start_controller(config)
    try:
        yield running
    finally:
        with contextlib.suppress(Exception, asyncio.CancelledError):  # it may have crashed (the bug)
            await running.stop()


async def execute(running: Running, payload: bytes) -> dict[str, object]:
    request = parsed(payload)
    if isinstance(request, BadRequest):
        return error_reply(request.request_id, request.op, "bad_request", str(request))
    reply = await running.controller._execute(request, instant())  # noqa: SLF001
    assert isinstance(reply, dict)
    return reply


OVERFLOW_CASES = {
    "set_max_current current_a 10**400 (Fields.number: math.isfinite)":
        {"op": "set_max_current", "args": {"evse_id": 1, "current_a": 10**400}},
    "sim_load current_a 10**400 (Fields.number)":
        {"op": "sim_load", "args": {"evse_id": 1, "current_a": 10**400}},
    "sim_plug pp_ohms 10**400 (hal.sim._number: math.isfinite)":
        {"op": "sim_plug", "args": {"evse_id": 1, "cp": "B", "pp_ohms": 10**400}},
    "reserve_now expiry_time 9999-12-31T23:59:59-01:00 (Fields.time: astimezone)":
        {"op": "reserve_now", "args": {"reservation_id": 1, "id_token": "AA11",
                                       "expiry_time": "9999-12-31T23:59:59-01:00"}},
    "reserve_now start_time 0001-01-01T00:00:00+01:00 (Fields.time: astimezone)":
        {"op": "reserve_now", "args": {"reservation_id": 1, "id_token": "AA11", "expiry_time": "2099-01-01T00:00:00Z",
                                       "start_time": "0001-01-01T00:00:00+01:00"}},
    "set_local_auth_list tokens[0].expiry 9999-12-31T23:59:59-01:00 (Fields.time)":
        {"op": "set_local_auth_list", "args": {"version": 1, "full": True, "tokens": [
            {"id_token": "AA11", "status": "Accepted", "expiry": "9999-12-31T23:59:59-01:00"}]}},
}


@pytest.mark.parametrize("body", list(OVERFLOW_CASES.values()), ids=list(OVERFLOW_CASES))
async def test_overflowing_number_or_time_is_invalid_args(tmp_path: Path, body: dict[str, Any]) -> None:
    async with own_controller(tmp_path) as running:
        for codec, payload in (("json", as_json({"id": "ovf-j"} | body)), ("cbor", as_cbor({"id": "ovf-c"} | body))):
            reply = await execute(running, payload)
            assert reply["ok"] is False, (codec, reply)
            assert reply["error"]["code"] == "invalid_args", (codec, reply)  # type: ignore[index]


SURROGATE_CASES = {
    "reserve_now id_token": b'{"id":"s1","op":"reserve_now","args":{"reservation_id":3,"id_token":"\\ud800",'
                            b'"expiry_time":"2099-01-01T00:00:00Z"}}',
    "set_local_auth_list token": b'{"id":"s2","op":"set_local_auth_list","args":{"version":7,"full":false,'
                                 b'"tokens":[{"id_token":"\\udfff","status":"Accepted"}]}}',
}


@pytest.mark.parametrize("payload", list(SURROGATE_CASES.values()), ids=list(SURROGATE_CASES))
async def test_lone_surrogate_in_json_args_changes_nothing(tmp_path: Path, payload: bytes) -> None:
    async with own_controller(tmp_path) as running:
        c = running.controller
        before = (list(c.charger.book.entries), c.charger.local_list.snapshot(), c.core.seq)
        reply = await execute(running, payload)
        after = (list(c.charger.book.entries), c.charger.local_list.snapshot(), c.core.seq)
        assert reply["ok"] is False, reply
        assert after == before, f"refused with {reply['error']} but the state changed: {before} -> {after}"


async def test_lone_surrogate_sender_does_not_stop_the_controller(tmp_path: Path) -> None:
    async with own_controller(tmp_path) as running:
        await execute(running, b'{"id":"s3","op":"reserve_now","args":{"reservation_id":1,"id_token":"AA11",'
                               b'"evse_id":1,"sender":"\\ud800","expiry_time":"2099-01-01T00:00:00Z"}}')
        # the next state publish (a meter read publishes at least once a second) must not crash anything
        await asyncio.wait([running.task], timeout=3.0)
        assert not running.task.done(), f"the controller stopped: {running.task.exception()!r}"


@pytest.mark.parametrize("codec", ["json", "cbor"])
def test_too_deep_args_keep_the_readable_id(codec: str) -> None:
    deep: object = 1
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    body = {"id": "deep-1", "op": "get_state", "args": deep}
    with pytest.raises(BadRequest) as info:
        parse_request(as_json(body) if codec == "json" else as_cbor(body), MAX_PAYLOAD)
    assert info.value.request_id == "deep-1"
