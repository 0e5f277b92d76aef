"""Benchmark: memory and throughput of the request path under a flood of malformed messages.

What is run. A controller in-process (`Controller` on the simulated board with two EVSEs, the `sim_*`
ops on, a journal in a temporary `state_dir`); its MQTT link points at a free loopback port where
nothing listens, so it keeps retrying in the background. Each message takes the path of
`BackendLink._request` / `_reply_for` without the broker: `parse_request(payload, 65536)`
(a `BadRequest` becomes the `bad_request` reply); a request whose id is in the `ReplyCache` is
answered from it (idempotency, API.md §2); anything else is run by `Controller._execute(request,
loop.time(), utc_now())` and its reply stored with `ReplyCache.put(id, reply)`; every reply is
encoded with `firmware.wire.encode` in the request's codec.

The messages (deterministic: `random.Random(seed)`, generated on the fly, no hypothesis) are all
malformed or refused, so the controller's state never grows:

* random bytes (also starting with `{`), deep nesting (JSON and CBOR, up to 30 000 levels);
* JSON and CBOR encodings of random nested values (None, bools, ints far beyond 64 bits, floats with
  nan/inf, text, bytes, lists, maps with non-string keys; CBOR also tags and simple values);
* request envelopes with a real op (or a random one) whose args have one field made wrong (wrong
  type, out of range, required field missing, an unknown field, args not a map, a bad local-list
  entry), or an invalid id / op; in both codecs, sometimes truncated or padded past 65536 bytes;
  one id in ten repeats a recent id (answered from the ReplyCache).

Inputs that trigger the known firmware bugs (see tests/fuzz/test_mqtt_fuzz.py: an int beyond the
float range in a number field, a time whose UTC conversion overflows, a lone surrogate in a JSON
string) were bugs, now fixed; they are included unless `--without-fixed-bugs` is given.

Measured. RSS (VmRSS of /proc/self/status) after a 1000-message warm-up and a `gc.collect()`, at each
quarter of the run (a plateau, not a slope, is what no leak looks like: the ReplyCache fills up to
1024 replies and modules are imported lazily early on), and after the N messages (and after any
`authorize` waiting for the backend has been answered);
the `tracemalloc` allocations that grew most in between (tracemalloc is on for the whole run: it
slows the path down and its own bookkeeping is in the RSS; `--no-tracemalloc` to measure without);
messages/s on the request path alone (generation excluded) and overall. Exceptions that escaped
`parse_request` / `_submit` / `encode` are counted by type. Figures are printed, never asserted:
they depend on the machine. The exit code is 1 when an exception escaped or the controller stopped.

Usage: .venv/bin/python tools/bench/fuzz_rss.py [--messages N] [--seed S] [--without-fixed-bugs] [--no-tracemalloc]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import logging
import math
import platform
import random
import socket
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import firmware  # noqa: F401 - installed (pip install -e .)?
except ImportError:  # run from a plain checkout: the repository root is two levels up
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cbor2  # noqa: E402

from firmware.app import Controller  # noqa: E402
from firmware.config import load_config  # noqa: E402
from firmware.mqtt import ReplyCache  # noqa: E402
from firmware.ops import OPS as CORE_OPS  # noqa: E402
from firmware.sim_lane import SIM_OPS  # noqa: E402
from firmware.store import Store  # noqa: E402
from firmware.wire import (  # noqa: E402
    MAX_ID_LEN,
    BadRequest,
    Request,
    codec_of,
    encode,
    error_reply,
    parse_request,
)
from hal.protocols import Meter  # noqa: E402
from hal.sim import SimBoard  # noqa: E402

OPS = set(CORE_OPS) | SIM_OPS  # every op of API.md §3 and §8

DEFAULT_MESSAGES = 100_000
WARMUP = 1000
MAX_PAYLOAD = 65536
EVSE_IDS = (1, 4)
CONFIG = """
[charger]
id = "CP-FUZZ-RSS"
state_dir = "{state_dir}"
[mqtt]
host = "127.0.0.1"
port = {port}
codec = "cbor"
reconnect_min_s = 0.05
reconnect_max_s = 1.0
[auth]
timeout_s = 1.0
[[evse]]
id = 1
connectors = ["sType2"]
max_current_a = 32
phases = 3
phase_switching = true
[[evse]]
id = 4
connectors = ["cCCS2", "Unknown"]
max_current_a = 16
phases = 1
"""

# --- the generator -----------------------------------------------------------------------------------

#: op -> field -> (kind, required)
SPECS: dict[str, dict[str, tuple[str, bool]]] = {
    "reserve_now": {"reservation_id": ("res_id", True), "id_token": ("token", True), "expiry_time": ("time", True),
                    "evse_id": ("evse", False), "parent_id_token": ("token", False),
                    "connector_type": ("name", False), "start_time": ("time", False), "sender": ("name", False),
                    "token_type": ("name", False)},
    "cancel_reservation": {"reservation_id": ("int", True), "sender": ("name", False)},
    "exists_reservation": {"id_token": ("token", True), "evse_id": ("evse", False),
                           "group_id_token": ("token", False)},
    "list_reservations": {},
    "authorize": {"id_token": ("token", True), "evse_id": ("evse", False), "token_type": ("name", False)},
    "stop_session": {"evse_id": ("evse", True), "reason": ("reason", False)},
    "set_max_current": {"evse_id": ("evse", True), "current_a": ("current", True)},
    "switch_phases": {"evse_id": ("evse", True), "three_phases": ("bool", True)},
    "set_enabled": {"evse_id": ("evse", True), "enabled": ("bool", True)},
    "unlock_connector": {"evse_id": ("evse", True)},
    "set_local_auth_list": {"version": ("version", True), "full": ("bool", True), "tokens": ("tokens", True)},
    "get_state": {},
    "sim_plug": {"evse_id": ("evse", True), "cp": ("cp", True), "pp_ohms": ("pp_ohms", False),
                 "diode_ok": ("bool", False)},
    "sim_token": {"evse_id": ("evse", True), "id_token": ("token", True), "token_type": ("name", False)},
    "sim_fault": {"evse_id": ("evse", True), "fault": ("fault", True), "active": ("bool", True)},
    "sim_load": {"evse_id": ("evse", True), "current_a": ("current", True)},
}
TOKEN_ENTRY = {"id_token": ("token", True), "status": ("status", True), "parent_id_token": ("token", False),
               "expiry": ("time", False)}
VALID: dict[str, Callable[[random.Random], Any]] = {
    "evse": lambda r: r.choice(EVSE_IDS),
    "res_id": lambda r: r.randint(1, 50),
    "int": lambda r: r.randint(1, 50),
    "version": lambda r: r.randint(0, 1000),
    "token": lambda r: r.choice(["04A2B3C4", "AA11", "0BADCAFE"]),
    "name": lambda r: r.choice(["emsp-a", "RFID", "sType2"]),
    "time": lambda r: r.choice(["2099-01-01T00:00:00Z", "2098-06-01T12:00:00+02:00"]),
    "current": lambda r: r.choice([0, 6, 16, 32.0]),
    "bool": lambda r: r.random() < 0.5,
    "reason": lambda r: r.choice(["Remote", "Local", "EmergencyStop"]),
    "cp": lambda r: r.choice("ABCDE"),
    "fault": lambda r: r.choice(["rcd", "pilot", "meter_lost"]),
    "status": lambda r: r.choice(["Accepted", "Blocked", "Expired", "Invalid"]),
    "pp_ohms": lambda r: r.choice([None, 220, 680.0]),
    "tokens": lambda r: [{"id_token": "AA11", "status": "Accepted"}],
}
#: Values that make the field invalid (an unknown EVSE is only refused by reserve_now: `Rejected`).
INVALID: dict[str, list[Any]] = {
    "evse": [0, -1, 2, 99, 2**40, 2**70],
    "res_id": [2**31, -(2**31) - 1, 2**64],
    "version": [-1, -(2**40)],
    "token": ["x" * 256, "é" * 256],  # ("" is fine for an optional token)
    "name": ["x" * 65],
    "time": ["garbage", "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "x" * 65, "",
             "2026-01-01T00:00:00+25:00"],
    "current": [math.nan, math.inf, -math.inf, "16"],
    "reason": ["remote", "Nope", ""],
    "cp": ["F", "AB", "", "a"],
    "fault": ["fire", "RCD", ""],
    "status": ["accepted", "Unknown", ""],
    "pp_ohms": [-1, -1e-9, math.nan],
}
KNOWN_BUG_INVALID: dict[str, list[Any]] = {  # --known-bugs: OverflowError escapes _execute
    "current": [10**400, -(10**400)],
    "pp_ohms": [10**400],
    "time": ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"],
}
WRONG_TYPE: dict[str, list[Any]] = {
    "int": ["1", 1.5, True, [1], {"n": 1}, b"\x01", math.nan],
    "number": ["16", True, [16], {"a": 16}, b"\x10"],
    "str": [1, 2.5, False, ["AA11"], {"s": "AA11"}],  # (bytes would be a hex string in JSON)
    "bool": [1, 0, "true", [True], {"b": True}],
    "list": ["[]", 0, {"tokens": []}, True],
}
KIND_TYPE = {"evse": "int", "res_id": "int", "int": "int", "version": "int", "current": "number",
             "pp_ohms": "number", "bool": "bool", "tokens": "list"}
BIG_INTS = [2**31, 2**63, 2**64, -(2**63) - 1, 2**200, -(2**1000)]
TAGS = [0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 258, 260, 55799, 2**32 + 7]
TEXT = "abcXYZ019 _-:.{}[]\"\\/é€𝄞\u0000\n\t"


class Generator:
    """The deterministic mix of malformed messages."""

    def __init__(self, seed: int, *, known_bugs: bool) -> None:
        self.r = random.Random(seed)
        self.known_bugs = known_bugs
        self.counts: collections.Counter[str] = collections.Counter()
        self.recent_ids: collections.deque[str] = collections.deque(maxlen=2000)
        self.n = 0
        self.invalid = {k: v + (KNOWN_BUG_INVALID.get(k, []) if known_bugs else []) for k, v in INVALID.items()}
        self.categories: list[tuple[str, Callable[[], bytes]]] = [
            ("bytes", self.random_bytes), ("json value", lambda: self.as_json(self.value())),
            ("cbor value", lambda: self.as_cbor(self.value(cbor=True))), ("envelope", self.envelope),
            ("envelope", self.envelope), ("envelope", self.envelope), ("deep", self.deep),
        ]

    def __call__(self) -> bytes:
        self.n += 1
        if self.r.random() < 0.005:
            self.counts["oversize"] += 1
            return self.envelope(plain=True) + b" " * (MAX_PAYLOAD + self.r.randint(1, 100))
        name, make = self.r.choice(self.categories)
        self.counts[name] += 1
        payload = make()
        if name == "envelope" and self.r.random() < 0.05:
            self.counts["truncated"] += 1
            payload = payload[:self.r.randrange(max(len(payload), 1))]
        return payload

    # values
    def text(self, max_len: int = 20) -> str:
        return "".join(self.r.choice(TEXT) for _ in range(self.r.randint(0, max_len)))

    def scalar(self, cbor: bool = False) -> object:
        r = self.r
        pick = r.randrange(12 if cbor else 10)
        if pick == 0:
            return None
        if pick == 1:
            return r.random() < 0.5
        if pick == 2:
            return r.randint(-1000, 1000)
        if pick == 3:
            return r.choice(BIG_INTS)
        if pick == 4:
            return r.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, r.uniform(-1e6, 1e6)])
        if pick in (5, 6):
            return self.text()
        if pick == 7:
            return r.randbytes(r.randint(0, 16))
        if pick == 8:
            return r.choice(["id", "op", "args", "evse_id", "reservation_id", "tokens"])
        if pick == 9:
            return r.uniform(-100, 100)
        if pick == 10:
            return cbor2.CBORSimpleValue(r.choice([0, 5, 19, 32, 99, 255]))
        return cbor2.undefined

    def key(self) -> object:
        return self.r.choice([None, True, 7, -1, 2.5, b"k", "id", "op", "args", self.text(6)])

    def value(self, depth: int = 0, cbor: bool = False) -> object:
        r = self.r.random()
        if depth < 4 and r < 0.2:
            return [self.value(depth + 1, cbor) for _ in range(self.r.randint(0, 4))]
        if depth < 4 and r < 0.4:
            return {self.key(): self.value(depth + 1, cbor) for _ in range(self.r.randint(0, 4))}
        if cbor and depth < 4 and r < 0.45:
            return cbor2.CBORTag(self.r.choice(TAGS), self.value(depth + 1, cbor))
        return self.scalar(cbor)

    @staticmethod
    def jsonable(value: object) -> object:
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, list):
            return [Generator.jsonable(v) for v in value]
        if isinstance(value, dict):
            return {(k.hex() if isinstance(k, bytes) else k): Generator.jsonable(v) for k, v in value.items()}
        return value

    def as_json(self, value: object) -> bytes:
        return json.dumps(self.jsonable(value), allow_nan=True).encode()

    def as_cbor(self, value: object) -> bytes:
        return cbor2.dumps(value)

    # categories
    def random_bytes(self) -> bytes:
        data = self.r.randbytes(self.r.randint(0, 300))
        return b"{" + data if self.r.random() < 0.3 else data

    def deep(self) -> bytes:
        depth = self.r.randint(30, 30_000)
        if self.r.random() < 0.5:
            return b'{"id":"deep","op":"get_state","args":' + b"[" * depth + b"]" * depth + b"}"
        return b"\xa3" + b"".join(cbor2.dumps(s) for s in ("id", "deep", "op", "get_state", "args")) \
            + b"\x81" * depth + b"\x01"

    def request_id(self) -> object:
        r = self.r.random()
        if r < 0.1 and self.recent_ids:
            return self.r.choice(self.recent_ids)  # a repeat: answered from the ReplyCache
        if r < 0.9:
            request_id = f"m{self.n}"
            self.recent_ids.append(request_id)
            return request_id
        return self.r.choice(["", "x" * (MAX_ID_LEN + 1), 5, None, ["id"], {"id": 1}, 1.5, True])

    def mutate(self, args: dict[str, Any], spec: dict[str, tuple[str, bool]]) -> object:
        r = self.r
        required = [k for k, (_, req) in spec.items() if req]
        choices = ["extra", "not a map"] + (["wrong type", "invalid"] if spec else []) + \
            (["missing"] if required else []) + (["token entry"] if "tokens" in spec else [])
        how = r.choice(choices)
        if how == "extra":
            return args | {r.choice(["x", "evse", "Id_Token", "", "extra field"]): self.value(2)}
        if how == "not a map":
            return r.choice([None, 1, "args", [args], [], True]) if r.random() < 0.8 else {1: 2, None: "x"}
        if how == "missing":
            name = r.choice(required)
            return {k: v for k, v in args.items() if k != name}
        if how == "token entry":
            entry = {"id_token": "AA11", "status": "Accepted"}
            bad = self.mutate(entry, TOKEN_ENTRY)
            return args | {"tokens": [entry, bad]}
        name = r.choice([k for k, (kind, _) in spec.items() if how == "wrong type" or kind in self.invalid])
        kind = spec[name][0]
        if how == "wrong type":
            return args | {name: r.choice(WRONG_TYPE[KIND_TYPE.get(kind, "str")])}
        return args | {name: r.choice(self.invalid[kind])}

    def envelope(self, plain: bool = False) -> bytes:
        r = self.r
        doc: dict[object, object] = {"id": self.request_id()}
        pick = r.random()
        if pick < 0.85:
            op = r.choice(sorted(SPECS))
            spec = SPECS[op]
            args = {k: VALID[kind](r) for k, (kind, req) in spec.items() if req or r.random() < 0.5}
            doc["op"] = op
            doc["args"] = self.mutate(args, spec)
        elif pick < 0.95:
            doc["op"] = r.choice(["reserve", "GET_STATE", "", "sim_", "get_state ", self.text(10)])
            doc["args"] = self.value(1)
        else:
            doc["op"] = self.value(2)
        if r.random() < 0.02:
            doc[self.key()] = self.value(2)
        if plain or r.random() < 0.5:
            payload = self.as_json(doc)
            if self.known_bugs and r.random() < 0.01:  # a lone surrogate: only JSON carries one (known bug)
                for name in (b'"AA11"', b'"emsp-a"', b'"04A2B3C4"', b'"RFID"'):
                    payload = payload.replace(name, name[:-1] + b'\\ud800"')
            return payload
        return self.as_cbor(doc)


# --- the request path ----------------------------------------------------------------------------------

def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


class RequestPath:
    """parse_request -> ReplyCache / _execute -> encode, with the tallies."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.cache = ReplyCache()
        self.escaped: collections.Counter[str] = collections.Counter()
        self.codes: collections.Counter[str] = collections.Counter()
        self.cached = 0
        self.waiting: set[asyncio.Future[None]] = set()
        self.busy_s = 0.0

    def _finish(self, codec: str, reply: dict[str, object]) -> None:
        error = reply.get("error")
        self.codes[error.get("code", "?") if isinstance(error, dict) else "ok"] += 1
        try:
            encode(codec, reply)
        except Exception as exc:  # noqa: BLE001 - counted, not fatal
            self.escaped[f"encode: {type(exc).__name__}"] += 1

    async def handle(self, payload: bytes) -> None:
        started = time.perf_counter()
        codec = codec_of(payload)
        try:
            request = parse_request(payload, MAX_PAYLOAD)
        except BadRequest as exc:
            self._finish(codec, error_reply(exc.request_id, exc.op, "bad_request", str(exc)))
        except Exception as exc:  # noqa: BLE001 - the bug this counts
            self.escaped[f"parse_request: {type(exc).__name__}"] += 1
        else:
            cached = self.cache.get(request.request_id)
            if cached is not None:
                self.cached += 1
                self._finish(codec, cached)
            else:
                await self._execute(request)
        self.busy_s += time.perf_counter() - started

    async def _execute(self, request: Request) -> None:
        """Hand the request to the running controller as the MQTT link does (`_submit`), without
        waiting for its reply; at most MAX_OUTSTANDING are in flight at once."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def complete(reply: dict[str, object]) -> None:
            self.waiting.discard(done)
            self.cache.put(request.request_id, reply)
            self._finish(request.codec, reply)
            done.set_result(None)

        self.waiting.add(done)
        try:
            self.controller._submit(request, complete)  # noqa: SLF001 - the link's entry point
        except Exception as exc:  # noqa: BLE001 - the bug this counts
            self.escaped[f"_submit: {type(exc).__name__}"] += 1
            self.waiting.discard(done)
        if len(self.waiting) >= MAX_OUTSTANDING:
            await asyncio.wait(set(self.waiting), return_when=asyncio.FIRST_COMPLETED)


MAX_OUTSTANDING = 256


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_bench(messages: int, seed: int, *, known_bugs: bool, trace: bool) -> int:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="fuzz-rss-") as tmp:
        config_path = Path(tmp) / "charger.toml"
        config_path.write_text(CONFIG.format(state_dir=Path(tmp) / "state", port=free_port()))
        config = load_config(config_path)
        board = SimBoard([e.id for e in config.evses], clock=loop.time, phases={e.id: e.phases for e in config.evses})
        meters: dict[int, Meter] = {cid: m for cid in EVSE_IDS if (m := board.meter(cid)) is not None}
        controller = Controller(config, board, Store(config.charger.state_dir), meters=meters, sim=board)
        task = loop.create_task(controller.run(), name="controller")
        await asyncio.wait_for(controller.ready.wait(), 10)

        gen = Generator(seed, known_bugs=known_bugs)
        path = RequestPath(controller)
        if trace:
            tracemalloc.start()
        for i in range(WARMUP):
            await path.handle(gen())
            if i % 64 == 0:
                await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        gc.collect()
        rss_before = rss_bytes()
        snap_before = tracemalloc.take_snapshot() if trace else None
        traced_before = tracemalloc.get_traced_memory()[0] if trace else 0
        path.busy_s = 0.0
        counts_before = collections.Counter(gen.counts)

        checkpoints = {messages * q // 4: q * 25 for q in (1, 2, 3)}
        rss_at: list[tuple[int, int]] = []
        wall_start = time.perf_counter()
        for i in range(messages):
            await path.handle(gen())
            if i % 64 == 0:
                await asyncio.sleep(0)  # let the controller's own tasks run, as between MQTT messages
            if i + 1 in checkpoints:
                rss_at.append((checkpoints[i + 1], rss_bytes()))
        wall_s = time.perf_counter() - wall_start
        deadline = loop.time() + config.auth.timeout_s + 5
        while path.waiting and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        gc.collect()
        rss_after = rss_bytes()
        snap_after = tracemalloc.take_snapshot() if trace else None
        traced_after = tracemalloc.get_traced_memory()[0] if trace else 0
        if trace:
            tracemalloc.stop()
        alive = not task.done()
        crash = None if alive or task.cancelled() else task.exception()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

    mix = gen.counts - counts_before
    growth = rss_after - rss_before
    print(f"fuzz_rss: {messages} malformed messages (seed {seed}) after a {WARMUP}-message warm-up, "
          f"through parse_request -> ReplyCache / Controller._submit -> encode")
    print(f"  host: Python {platform.python_version()} on {platform.machine()}; controller: {len(EVSE_IDS)} EVSEs "
          f"on the simulated board, no broker; known-bug triggers "
          f"{'included' if known_bugs else 'excluded (--without-fixed-bugs)'}")
    print("  mix: " + ", ".join(f"{k} {v}" for k, v in sorted(mix.items())))
    print("  replies: " + ", ".join(f"{k} {v}" for k, v in path.codes.most_common()))
    print(f"  idempotency: {path.cached} repeated ids answered from the ReplyCache "
          f"({len(path.cache)} replies held, limit 1024); {len(path.waiting)} authorize still waiting")
    print(f"  throughput: {messages / path.busy_s:,.0f} messages/s on the request path "
          f"({path.busy_s:.2f} s), {messages / wall_s:,.0f} messages/s with generation ({wall_s:.2f} s)"
          f"{' (tracemalloc on)' if trace else ''}")
    print(f"  RSS before: {mib(rss_before)}  after: {mib(rss_after)}  growth: {growth / 2**20:+.2f} MiB "
          f"({growth / messages:+.1f} bytes/message)")
    print("  RSS during the run: " + ", ".join(f"{pct}% {mib(rss)}" for pct, rss in rss_at + [(100, rss_after)]))
    if snap_before is not None and snap_after is not None:
        print(f"  tracemalloc: traced {mib(traced_before)} -> {mib(traced_after)} "
              f"({(traced_after - traced_before) / 2**10:+.1f} KiB); top growth:")
        stats = [s for s in snap_after.compare_to(snap_before, "lineno") if s.size_diff > 0][:8]
        for stat in stats:
            frame = stat.traceback[0]
            print(f"    {stat.size_diff / 2**10:+9.1f} KiB {stat.count_diff:+6d} blocks  "
                  f"{_short(frame.filename)}:{frame.lineno}")
        if not stats:
            print("    (nothing grew)")
    escaped = sum(path.escaped.values())
    detail = f" ({', '.join(f'{k}: {v}' for k, v in path.escaped.most_common())})" if escaped else ""
    print(f"  escaped: {escaped}{detail}")
    print(f"  controller: {'still running' if alive else f'STOPPED: {crash!r}'}")
    return 0 if escaped == 0 and alive else 1


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python"):
        if marker in filename:
            return "..." + filename[filename.index(marker):]
    root = str(Path(__file__).resolve().parents[2]) + "/"
    return filename.removeprefix(root)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, metavar="N",
                        help=f"number of measured messages (default {DEFAULT_MESSAGES})")
    parser.add_argument("--seed", type=int, default=1, help="seed of the message generator (default 1)")
    parser.add_argument("--without-fixed-bugs", action="store_true",
                        help="leave out the inputs of bugs found and fixed earlier (lone surrogates, huge ints)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="measure without tracemalloc")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be >= 1")
    if set(SPECS) != set(OPS):
        parser.error(f"SPECS is out of date with firmware.app.OPS: {sorted(set(SPECS) ^ set(OPS))}")
    logging.basicConfig(level=logging.CRITICAL)  # the link's "broker unreachable" is expected here
    return asyncio.run(run_bench(args.messages, args.seed, known_bugs=not args.without_fixed_bugs,
                                 trace=not args.no_tracemalloc))


if __name__ == "__main__":
    raise SystemExit(main())
