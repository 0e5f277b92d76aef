"""The test's side of API.md over MQTT: a backend client (aiomqtt, MQTT 5) that sends requests and
collects replies, events and documents, a synchronous subscriber, and waits on what they received."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho

from firmware.mqtt import read_disconnect_cause
from tests.support.codec import decode, encode

_ids = itertools.count(1)
_request_ids = itertools.count(1)


def new_charger_id() -> str:
    return f"CP-IT-{next(_ids)}-{os.getpid()}"


def root_of(charger_id: str, prefix: str = "chargers") -> str:
    return f"{prefix}/{charger_id}/v1"


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

    async def pump(self) -> None:
        async for message in self.client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            for hook in self.hooks:
                hook(topic, payload)
            self.raw.append((topic, payload, message.properties, bool(message.retain)))
            try:
                value = decode(payload) if payload else None
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
        self.replies.pop(request_id, None)
        await self.send_raw(encode(codec or self.codec, body))
        return await self.wait_for(lambda: self.replies.get(request_id), timeout)  # type: ignore[no-any-return]

    async def ok(self, op: str, args: Any = None, **kw: Any) -> Any:  # noqa: ANN401
        reply = await self.request(op, args, **kw)
        assert reply["ok"] is True, reply
        return reply["result"]

    def on(self, topic_suffix: str) -> list[Any]:
        """Every message on R/`topic_suffix` so far, decoded."""
        return [v for t, v in self.messages if t == f"{self.root}/{topic_suffix}"]

    def all_replies(self) -> list[Any]:
        """Every message on R/reply so far, decoded (also those with `id: null`)."""
        return self.on("reply")

    def raw_on(self, topic_suffix: str) -> list[bytes]:
        return [p for t, p, _, _ in self.raw if t == f"{self.root}/{topic_suffix}"]

    def events(self, evse_id: int | None = None) -> list[dict[str, Any]]:
        suffix = "/session"
        return [v for t, v in self.messages if t.endswith(suffix) and isinstance(v, dict)
                and (evse_id is None or t == f"{self.root}/evse/{evse_id}/session")]

    def event_names(self, evse_id: int | None = None) -> list[str]:
        return [e["event"] for e in self.events(evse_id)]

    def reservation_updates(self) -> list[dict[str, Any]]:
        return [v for v in self.on("reservation") if isinstance(v, dict)]

    def durable(self) -> list[dict[str, Any]]:
        """The durable messages (API.md §7: SessionEvents and ReservationUpdateStatus, which share
        `seq`) in the order they arrived, redeliveries included."""
        return [v for t, v in self.messages
                if (t.endswith("/session") or t == f"{self.root}/reservation") and isinstance(v, dict)]

    def state(self, evse_id: int) -> dict[str, Any] | None:
        value = self.retained.get(f"{self.root}/evse/{evse_id}/state")
        return value if isinstance(value, dict) else None

    def status(self) -> dict[str, Any]:
        """The last R/status document (empty before the first)."""
        value = self.retained.get(f"{self.root}/status")
        return value if isinstance(value, dict) else {}


@contextlib.asynccontextmanager
async def backend_for(port: int, root: str) -> AsyncIterator[Backend]:
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"backend-{next(_ids)}-{os.getpid()}",
                              protocol=aiomqtt.ProtocolVersion.V5,
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as client:
        await client.subscribe(f"{root}/#", qos=1)
        backend = Backend(client=client, root=root)
        try:
            async with pumping(backend):
                yield backend
        finally:
            read_disconnect_cause(client)


@contextlib.asynccontextmanager
async def pumping(backend: Backend) -> AsyncIterator[Backend]:
    """`backend.pump()` running in a task for the block."""
    pump = asyncio.get_running_loop().create_task(backend.pump())
    try:
        yield backend
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await pump


async def wait_online(backend: Backend, timeout: float = 5.0, *, boot_id: str | None = None,
                      not_boot_id: str | None = None) -> str:
    """Wait for R/status `online: true` (of the boot `boot_id`, or of another boot than `not_boot_id`,
    when given); returns its boot_id."""
    def online() -> str | None:
        status = backend.status()
        if status.get("online") is not True:
            return None
        boot = str(status.get("boot_id"))
        if (boot_id is not None and boot != boot_id) or (not_boot_id is not None and boot == not_boot_id):
            return None
        return boot

    return str(await backend.wait_for(online, timeout))


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
        if not connected.wait(15):  # a broker just left by many clients can be slow to answer
            raise AssertionError("sync subscriber: no CONNACK")
        self._client.subscribe(topic, qos=1)
        if not subscribed.wait(15):
            raise AssertionError("sync subscriber: no SUBACK")

    def decoded(self, topic: str) -> list[Any]:
        return [decode(p) for t, p, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
