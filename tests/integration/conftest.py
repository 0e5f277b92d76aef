"""Real parts for integration tests: a `mosquitto` broker on a free loopback port, the whole
controller in-process on the simulated board, and a backend client speaking API.md over aiomqtt.

If mosquitto is missing the tests fail (never skip) and say how to install it; `./tools/test`
installs it. No public broker is ever used.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import paho.mqtt.client as paho
import pytest

from firmware.app import Controller
from firmware.config import Config, load_config
from firmware.mqtt import read_disconnect_cause
from firmware.store import Store
from hal.protocols import Meter
from hal.sim import SimBoard
from tests.support.leaks import no_leaked_tasks  # noqa: F401 - autouse: fails a test that leaks tasks

MOSQUITTO_HINT = "mosquitto is not installed: run ./tools/test (it installs it) or `apt-get install mosquitto`"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str:
    path = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(MOSQUITTO_HINT)
    return path


class Broker:
    """A private mosquitto on 127.0.0.1:<free port>, anonymous, no persistence; can be restarted."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "max_queued_messages 100000\nset_tcp_nodelay true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.directory / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([mosquitto_path(), "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: see {self.directory / 'mosquitto.log'}")
            time.sleep(0.02)
        pytest.fail(f"mosquitto did not listen on port {self.port}")

    def kill(self) -> None:
        """`kill -9`: the broker dies without closing a single connection cleanly."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session; tests use distinct charger ids so their topics never meet."""
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that stop and restart it."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


_ids = itertools.count(1)
_request_ids = itertools.count(1)

FAST = """
[pilot]
sample_interval_s = 0.005
[telemetry]
meter_interval_s = {meter_interval_s}
[auth]
timeout_s = {auth_timeout_s}
offline_policy = "{offline_policy}"
connection_timeout_s = 60
[mqtt]
host = "127.0.0.1"
port = {port}
codec = "{codec}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
fallback_after_s = {fallback_after_s}
fallback_current_a = {fallback_current_a}
"""


def write_config(directory: Path, port: int, *, charger_id: str, evses: str | None = None,
                 mqtt_extra: str = "", **kw: Any) -> Config:  # noqa: ANN401
    """A config for tests; `mqtt_extra` is TOML appended to the [mqtt] table (credentials, [mqtt.tls])."""
    settings = {"meter_interval_s": 0.5, "auth_timeout_s": 1.0, "offline_policy": "local_list_only",
                "codec": "json", "fallback_after_s": 60, "fallback_current_a": 6.0} | kw
    evse_tables = evses or '[[evse]]\nid = 1\nconnectors = ["sType2"]\nmax_current_a = 32\nphases = 3\n'
    text = (f'[charger]\nid = "{charger_id}"\nstate_dir = "{directory / "state"}"\n'
            + FAST.format(port=port, **settings) + mqtt_extra + evse_tables)
    path = directory / "charger.toml"
    path.write_text(text)
    return load_config(path)


@dataclass
class Running:
    controller: Controller
    sim: SimBoard
    config: Config
    task: asyncio.Task[None]

    async def stop(self, grace_s: float = 2.0) -> None:
        """Cancel the controller and wait (`grace_s`) for it to return.

        One cancellation can be lost while the MQTT link connects (Python 3.11's asyncio.wait_for,
        used by aiomqtt, swallows it; see test_link.py::test_stops_on_one_cancel_while_connecting),
        and cancelling the controller again does not help (its TaskGroup is already aborting). So
        that such a run does not hang the suite, the controller's own tasks are then cancelled
        directly."""
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=grace_s)
        if not done:
            for task in asyncio.all_tasks():
                frame = getattr(task.get_coro(), "cr_frame", None)
                if frame is not None and frame.f_locals.get("self") is self.controller:
                    task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=5)
        assert done, "the controller did not stop"
        if not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]


async def start_controller(config: Config, *, sim_ops: bool = True, store: Store | None = None,
                           meters: dict[int, Meter] | None = None,
                           prepare: Callable[[SimBoard], None] | None = None) -> Running:
    """The controller on a simulated board; `sim_ops=False` runs it as on real hardware (`sim=None`:
    the board is still simulated, but the `sim_*` ops answer `unsupported`). `store` and `meters`
    replace the defaults (a journal in `state_dir`, the simulated meters); `prepare` sets up the
    simulated world before the controller starts."""
    loop = asyncio.get_running_loop()
    sim = SimBoard([e.id for e in config.evses], clock=loop.time, phases={e.id: e.phases for e in config.evses})
    if prepare is not None:
        prepare(sim)
    if meters is None:
        meters = {cid: m for cid in sim_ids(config) if (m := sim.meter(cid)) is not None}
    controller = Controller(config, sim, store or Store(config.charger.state_dir), meters=meters,
                            sim=sim if sim_ops else None)
    task = loop.create_task(controller.run(), name="controller")
    await asyncio.wait_for(controller.ready.wait(), 10)
    return Running(controller, sim, config, task)


def sim_ids(config: Config) -> list[int]:
    return [e.id for e in config.evses]


@dataclass
class Backend:
    """The test's side of API.md: sends requests, collects replies, events and documents."""

    client: aiomqtt.Client
    root: str
    codec: str = "json"
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: list[tuple[str, Any]] = field(default_factory=list)
    retained: dict[str, Any] = field(default_factory=dict)
    #: every message as received: (topic, payload bytes, MQTT 5 properties or None, retain flag)
    raw: list[tuple[str, bytes, Any, bool]] = field(default_factory=list)
    #: called synchronously with (topic, payload) as each message arrives, before anything else
    hooks: list[Callable[[str, bytes], None]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=lambda: _request_ids)  # unique across backends: a charger
    # answers a reused id from its reply cache (API.md §2), also to a second backend
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @staticmethod
    def decode(payload: bytes) -> Any:  # noqa: ANN401
        if payload.lstrip()[:1] == b"{":
            return json.loads(payload)
        return cbor2.loads(payload)

    async def pump(self) -> None:
        async for message in self.client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            for hook in self.hooks:
                hook(topic, payload)
            self.raw.append((topic, payload, message.properties, bool(message.retain)))
            try:
                value = self.decode(payload) if payload else None
            except Exception:  # noqa: BLE001
                value = payload
            self.messages.append((topic, value))
            if message.retain or topic.endswith(("/state", "/status")):
                self.retained[topic] = value
            if topic == f"{self.root}/reply" and isinstance(value, dict) and isinstance(value.get("id"), str):
                self.replies[value["id"]] = value
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ANN401
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"condition not met within {timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.05)):  # not wait_for: 3.11's can lose a cancel
                    await self._changed.wait()

    async def send_raw(self, payload: bytes, **kw: Any) -> None:  # noqa: ANN401
        await self.client.publish(f"{self.root}/cmd", payload, qos=1, **kw)

    async def request(self, op: str, args: Any = None, *, request_id: str | None = None,  # noqa: ANN401
                      codec: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        request_id = request_id or f"r{next(self._ids)}"
        body: dict[str, Any] = {"id": request_id, "op": op}
        if args is not None:
            body["args"] = args
        payload = json.dumps(body).encode() if (codec or self.codec) == "json" else cbor2.dumps(body)
        self.replies.pop(request_id, None)
        await self.send_raw(payload)
        return await self.wait_for(lambda: self.replies.get(request_id), timeout)  # type: ignore[no-any-return]

    async def ok(self, op: str, args: Any = None, **kw: Any) -> Any:  # noqa: ANN401
        reply = await self.request(op, args, **kw)
        assert reply["ok"] is True, reply
        return reply["result"]

    def all_replies(self) -> list[Any]:
        """Every message on R/reply so far, decoded (also those with `id: null`)."""
        return [v for t, v in self.messages if t == f"{self.root}/reply"]

    def raw_on(self, topic_suffix: str) -> list[bytes]:
        return [p for t, p, _, _ in self.raw if t == f"{self.root}/{topic_suffix}"]

    def events(self, evse_id: int | None = None) -> list[dict[str, Any]]:
        suffix = "/session"
        return [v for t, v in self.messages if t.endswith(suffix) and isinstance(v, dict)
                and (evse_id is None or t == f"{self.root}/evse/{evse_id}/session")]

    def event_names(self, evse_id: int | None = None) -> list[str]:
        return [e["event"] for e in self.events(evse_id)]

    def reservation_updates(self) -> list[dict[str, Any]]:
        return [v for t, v in self.messages if t == f"{self.root}/reservation" and isinstance(v, dict)]

    def state(self, evse_id: int) -> dict[str, Any] | None:
        value = self.retained.get(f"{self.root}/evse/{evse_id}/state")
        return value if isinstance(value, dict) else None


def new_charger_id() -> str:
    return f"CP-IT-{next(_ids)}-{os.getpid()}"


def root_of(charger_id: str, prefix: str = "chargers") -> str:
    return f"{prefix}/{charger_id}/v1"


@contextlib.asynccontextmanager
async def backend_for(port: int, root: str) -> AsyncIterator[Backend]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"backend-{next(_ids)}-{os.getpid()}",
                              protocol=aiomqtt.ProtocolVersion.V5,
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as client:
        await client.subscribe(f"{root}/#", qos=1)
        backend = Backend(client=client, root=root)
        pump = asyncio.get_running_loop().create_task(backend.pump())
        try:
            yield backend
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump
            read_disconnect_cause(client)


@contextlib.asynccontextmanager
async def charger_and_backend(broker: Broker, directory: Path, *, sim_ops: bool = True, store: Store | None = None,
                              **kw: Any) -> AsyncIterator[tuple[Running, Backend]]:  # noqa: ANN401
    """A running controller and a backend subscribed to its topics, online already."""
    charger_id = new_charger_id()
    config = write_config(directory, broker.port, charger_id=charger_id, **kw)
    root = root_of(charger_id)
    async with backend_for(broker.port, root) as backend:
        running = await start_controller(config, sim_ops=sim_ops, store=store)
        try:
            await backend.wait_for(lambda: (backend.retained.get(f"{root}/status") or {}).get("online") is True, 10)
            await asyncio.wait_for(running.controller.link.connected.wait(), 5)  # its connect sequence is over
            yield running, backend
        finally:
            await running.stop()


@pytest.fixture
async def charger(broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[Running, Backend]]:
    async with charger_and_backend(broker, tmp_path) as pair:
        yield pair


# --- helpers for the API tests (test_ops, test_flows, test_link, test_malformed) ------------------

LOCAL_TOKEN = "04A2B3C4"
BLOCKED_TOKEN = "0BADCAFE"
LOCAL_LIST = {"version": 1, "full": True, "tokens": [{"id_token": LOCAL_TOKEN, "status": "Accepted"},
                                                     {"id_token": BLOCKED_TOKEN, "status": "Blocked"}]}


def stored_state(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What the controller has made durable in `state_dir`, read as the next boot would read it."""
    store = Store(state_dir)
    if hasattr(store, "load"):  # the journal store: load() -> (state, pending messages)
        return dict(store.load()[0])
    return dict(store.load_state())  # the snapshot store


def stored_bytes(state_dir: str | os.PathLike[str]) -> bytes:
    """Everything written to `state_dir` (to look for a message that must be durable): the payloads of
    the pending messages as the next boot reads them, then the files as they are. The files matter for a
    message acknowledged meanwhile: payloads are raw BLOBs in state.db's WAL, and a deleted row's bytes
    stay in the WAL frames written before, until a checkpoint lets SQLite reuse the WAL."""
    reader = Store(state_dir)
    try:
        pending = b"".join(r.payload for r in reader.load()[1])
    finally:
        reader.close()
    return pending + b"".join(p.read_bytes() for p in sorted(Path(state_dir).iterdir()) if p.is_file())


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def in_s(seconds: float) -> str:
    """RFC 3339 UTC `seconds` from now."""
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))


def body(request_id: Any, op: Any, args: Any = None, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    doc: dict[str, Any] = {"id": request_id, "op": op}
    if args is not None:
        doc["args"] = args
    return doc | extra


def as_json(value: Any) -> bytes:  # noqa: ANN401
    return json.dumps(value).encode()


def as_cbor(value: Any) -> bytes:  # noqa: ANN401
    return cbor2.dumps(value)


async def raw_reply(backend: Backend, payload: bytes, timeout: float = 5.0, **kw: Any) -> Any:  # noqa: ANN401
    """Send a raw payload on R/cmd and return the next message on R/reply (for replies whose id may be
    null: only use while no other request is outstanding)."""
    before = len(backend.all_replies())
    await backend.send_raw(payload, **kw)
    await backend.wait_for(lambda: len(backend.all_replies()) > before, timeout)
    return backend.all_replies()[before]


async def wait_status(backend: Backend, evse_id: int, status: str, timeout: float = 5.0) -> dict[str, Any]:
    await backend.wait_for(lambda: (backend.state(evse_id) or {}).get("status") == status, timeout)
    state = backend.state(evse_id)
    assert state is not None
    return state


async def wait_event(backend: Backend, evse_id: int | None, name: str, timeout: float = 5.0,
                     after: int = 0) -> dict[str, Any]:
    """The first SessionEvent `name` (on EVSE `evse_id`, or any) among the events from index `after` on."""
    def find() -> dict[str, Any] | None:
        return next((e for e in backend.events(evse_id)[after:] if e.get("event") == name), None)
    return await backend.wait_for(find, timeout)  # type: ignore[no-any-return]


async def wait_update(backend: Backend, status: str, reservation_id: int | None = None,
                      timeout: float = 5.0) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((u for u in backend.reservation_updates() if u.get("reservation_status") == status
                     and (reservation_id is None or u.get("reservation_id") == reservation_id)), None)
    return await backend.wait_for(find, timeout)  # type: ignore[no-any-return]


class SlowStore(Store):
    """A store whose every durable commit takes `fsync_s` longer (a worn SD card: 10 ms to several hundred
    ms), spent in the writing thread inside the transaction, as a slow fsync would be."""

    def __init__(self, state_dir: str | os.PathLike[str], fsync_s: float) -> None:
        super().__init__(state_dir)
        self.fsync_s = fsync_s

    def durable_write_delay(self) -> None:
        time.sleep(self.fsync_s)


class SyncSubscriber:
    """A paho client on its own thread, connected and subscribed *synchronously*: nothing else on the
    event loop (the controller) runs before it listens. For tests that must not miss a message that
    the controller publishes right after it (re)connects."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        connected, subscribed = threading.Event(), threading.Event()
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"sync-{next(_ids)}-{os.getpid()}",
                                   protocol=paho.MQTTv5)
        self._client.on_connect = lambda *_: connected.set()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload), bool(m.retain)))
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not connected.wait(5):
            raise AssertionError("sync subscriber: no CONNACK")
        self._client.subscribe(topic, qos=1)
        if not subscribed.wait(5):
            raise AssertionError("sync subscriber: no SUBACK")

    def decoded(self, topic: str) -> list[Any]:
        return [Backend.decode(p) for t, p, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
