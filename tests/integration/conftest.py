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
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import cbor2
import pytest

from firmware.app import Controller
from firmware.config import Config, load_config
from firmware.store import Store
from hal.protocols import Meter
from hal.sim import SimBoard

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
                             "max_queued_messages 100000\n")
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


def write_config(directory: Path, port: int, *, charger_id: str, evses: str | None = None, **kw: Any) -> Config:  # noqa: ANN401
    settings = {"meter_interval_s": 0.5, "auth_timeout_s": 1.0, "offline_policy": "local_list_only",
                "codec": "json", "fallback_after_s": 60, "fallback_current_a": 6.0} | kw
    evse_tables = evses or '[[evse]]\nid = 1\nconnectors = ["sType2"]\nmax_current_a = 32\nphases = 3\n'
    text = (f'[charger]\nid = "{charger_id}"\nstate_dir = "{directory / "state"}"\n'
            + FAST.format(port=port, **settings) + evse_tables)
    path = directory / "charger.toml"
    path.write_text(text)
    return load_config(path)


@dataclass
class Running:
    controller: Controller
    sim: SimBoard
    config: Config
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_controller(config: Config) -> Running:
    loop = asyncio.get_running_loop()
    sim = SimBoard([e.id for e in config.evses], clock=loop.time, phases={e.id: e.phases for e in config.evses})
    meters: dict[int, Meter] = {cid: m for cid in sim_ids(config) if (m := sim.meter(cid)) is not None}
    controller = Controller(config, sim, Store(config.charger.state_dir), meters=meters, sim=sim)
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
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
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
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))

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


@contextlib.asynccontextmanager
async def backend_for(port: int, root: str) -> AsyncIterator[Backend]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"backend-{next(_ids)}-{os.getpid()}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{root}/#", qos=1)
        backend = Backend(client=client, root=root)
        pump = asyncio.get_running_loop().create_task(backend.pump())
        try:
            yield backend
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump


@contextlib.asynccontextmanager
async def charger_and_backend(broker: Broker, directory: Path, **kw: Any) -> AsyncIterator[tuple[Running, Backend]]:  # noqa: ANN401
    """A running controller and a backend subscribed to its topics, online already."""
    charger_id = f"CP-IT-{next(_ids)}-{os.getpid()}"
    config = write_config(directory, broker.port, charger_id=charger_id, **kw)
    root = f"chargers/{charger_id}/v1"
    async with backend_for(broker.port, root) as backend:
        running = await start_controller(config)
        try:
            await backend.wait_for(lambda: (backend.retained.get(f"{root}/status") or {}).get("online") is True, 10)
            yield running, backend
        finally:
            await running.stop()


@pytest.fixture
async def charger(broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[Running, Backend]]:
    async with charger_and_backend(broker, tmp_path) as pair:
        yield pair
