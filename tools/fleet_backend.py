"""The fleet simulator's backend side: one MQTT client per process that drives its chargers over API.md.

What it is for: what a backend (or a backend team's test harness) does with a fleet, over the
broker only: it subscribes to each charger's topic tree (`{prefix}/{id}/v1/#`, MQTT 5 no-local, so
its own commands do not come back), sends requests on `R/cmd` (QoS 1) and times each one from the
publish to its reply on `R/reply`, answers `R/auth/request` (every token Accepted), and counts what
it receives: messages, SessionEvents by name, ReservationUpdateStatus by status, status documents.

What it must never do: reach into a controller (everything goes through the broker), decode what it
only counts (state documents and meter samples are counted, not decoded), or let a malformed
message or a missing reply stop the run (a command without a reply within `timeout_s` is an error,
counted, and the caller gets None).

Standard: API.md §1 (topics), §2 (envelopes), §5 (auth request and response).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import time
from typing import Final, Self

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from firmware.wire import BadRequest, decode, encode
from tools.fleet_stats import Counters

log = logging.getLogger("fleet.backend")

COMMAND_TIMEOUT_S: Final = 30.0
SUBSCRIBE_BATCH: Final = 50  # topic filters per SUBSCRIBE packet


class FleetBackend:
    """The backend of one worker's chargers: requests with round-trip timing, auth answers, counting."""

    def __init__(self, host: str, port: int, *, prefix: str = "chargers", codec: str = "cbor",
                 counters: Counters | None = None, name: str = "") -> None:
        self.host, self.port, self.prefix, self.codec = host, port, prefix, codec
        self.counters = counters if counters is not None else Counters()
        self.online: set[str] = set()
        self.online_changed = asyncio.Event()
        self._name = name or f"fleet-backend-{os.getpid()}"
        self._ids = itertools.count(1)
        self._waiting: dict[str, tuple[asyncio.Future[dict[str, object]], str, float]] = {}
        self._client: aiomqtt.Client | None = None
        self._pump: asyncio.Task[None] | None = None
        self._exits = contextlib.AsyncExitStack()
        self._sends: set[asyncio.Task[None]] = set()

    def root(self, charger_id: str) -> str:
        return f"{self.prefix}/{charger_id}/v1"

    async def __aenter__(self) -> Self:
        client = aiomqtt.Client(self.host, self.port, identifier=self._name, protocol=aiomqtt.ProtocolVersion.V5,
                                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                                max_inflight_messages=1000, timeout=30)
        client.pending_calls_threshold = 100_000  # thousands of commands in flight are normal here
        self._client = await self._exits.enter_async_context(client)
        self._pump = asyncio.get_running_loop().create_task(self._receive(client), name="fleet-backend")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.wait([self._pump], timeout=5)
        for future, _, _ in self._waiting.values():
            future.cancel()
        for send in list(self._sends):
            send.cancel()
        with contextlib.suppress(aiomqtt.MqttError):
            await self._exits.aclose()

    @property
    def client(self) -> aiomqtt.Client:
        if self._client is None:
            raise RuntimeError("the backend is not connected")
        return self._client

    async def watch(self, charger_ids: list[str]) -> None:
        """Subscribe to the topic trees of these chargers (before they start: nothing they publish is missed)."""
        options = SubscribeOptions(qos=1, noLocal=True)
        for start in range(0, len(charger_ids), SUBSCRIBE_BATCH):
            batch = charger_ids[start:start + SUBSCRIBE_BATCH]
            await self.client.subscribe([(f"{self.root(c)}/#", options) for c in batch])

    async def request(self, charger_id: str, op: str, args: dict[str, object] | None = None, *,
                      timeout_s: float = COMMAND_TIMEOUT_S) -> object | None:
        """Send one request and wait for its reply: the result when `ok`, else None (the error counted)."""
        request_id = f"f{next(self._ids)}"
        body: dict[str, object] = {"id": request_id, "op": op}
        if args is not None:
            body["args"] = args
        future: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (future, op, time.perf_counter())
        try:
            self.counters.msgs_in += 1
            self.counters.commands += 1
            await self.client.publish(f"{self.root(charger_id)}/cmd", encode(self.codec, body), qos=1)
            async with asyncio.timeout(timeout_s):
                reply = await future
        except TimeoutError:
            self.counters.errors[f"{op}:timeout"] += 1
            return None
        except aiomqtt.MqttError:
            self.counters.errors[f"{op}:mqtt"] += 1
            return None
        finally:
            self._waiting.pop(request_id, None)
        if reply.get("ok") is not True:
            error = reply.get("error")
            code = error.get("code") if isinstance(error, dict) else "?"
            self.counters.errors[f"{op}:{code}"] += 1
            log.warning("%s %s failed: %s", charger_id, op, error)
            return None
        return reply.get("result")

    # --- receiving -------------------------------------------------------------------------------

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self.counters.msgs_out += 1
            payload = message.payload if isinstance(message.payload, bytes) else b""
            try:
                await self._dispatch(message.topic.value, payload, retained=bool(message.retain))
            except (BadRequest, ValueError, TypeError, KeyError):  # a malformed message is counted, never fatal
                self.counters.errors["malformed"] += 1

    def _decode(self, payload: bytes) -> dict[str, object]:
        value = decode(payload)[1]
        if not isinstance(value, dict):
            raise TypeError("not a map")
        return value

    async def _dispatch(self, topic: str, payload: bytes, *, retained: bool) -> None:
        parts = topic.split("/")  # prefix / id / v1 / rest...
        charger_id, rest = parts[1], parts[3:]
        if rest == ["reply"]:
            self._reply(self._decode(payload))
        elif len(rest) == 3 and rest[2] == "session":
            self.counters.events[str(self._decode(payload).get("event"))] += 1
        elif rest == ["reservation"]:
            self.counters.reservations[str(self._decode(payload).get("reservation_status"))] += 1
        elif rest == ["auth", "request"]:
            await self._answer_auth(charger_id, self._decode(payload))
        elif rest == ["status"] and payload and not retained:  # a retained one may be an earlier run's
            if self._decode(payload).get("online") is True:
                self.online.add(charger_id)
            else:
                self.online.discard(charger_id)
            self.online_changed.set()

    def _reply(self, reply: dict[str, object]) -> None:
        waiting = self._waiting.get(str(reply.get("id")))
        if waiting is None:
            return  # a duplicate (QoS 1 at least once), or one that timed out
        future, op, sent = waiting
        self.counters.round_trip(op, (time.perf_counter() - sent) * 1000)
        if not future.done():
            future.set_result(reply)

    async def _answer_auth(self, charger_id: str, request: dict[str, object]) -> None:
        response = {"id": request.get("id"), "status": "Accepted"}
        self.counters.msgs_in += 1
        self.counters.auth_answered += 1
        send = asyncio.get_running_loop().create_task(self._publish(  # never hold up the receive loop on a PUBACK
            f"{self.root(charger_id)}/auth/response", encode(self.codec, response)))
        self._sends.add(send)
        send.add_done_callback(self._sends.discard)

    async def _publish(self, topic: str, payload: bytes) -> None:
        try:
            await self.client.publish(topic, payload, qos=1)
        except aiomqtt.MqttError:
            self.counters.errors["auth_response:mqtt"] += 1
