"""The backend link over MQTT (aiomqtt): bytes, topics and the connection. It subscribes, answers each
request once (idempotency over the last 1024 ids), reconnects with backoff, republishes retained
state and replays the outbox in seq order, acknowledging each message after its PUBACK.

Contract: API.md §1, §2, §6 (the shapes themselves are `firmware.wire`'s). What this module never
does: decide anything about charging (requests are handed to the controller, which runs them on the
core and completes them through a callback), or let any payload, however malformed, raise out of the
receive loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.config import MqttSettings
from firmware.mqtt_tls import tls_context, tls_insecure, warn_if_insecure
from firmware.publish_tap import PublishListener, PublishTap
from firmware.store import OutboxRecord
from firmware.wire import (
    BadRequest,
    Request,
    Topics,
    codec_of,
    decode,
    encode,
    error_reply,
    parse_request,
    value_problem,
)

log = logging.getLogger(__name__)

#: A parsed request on its way to its reply: the codec it came in, its reply (a future), and its MQTT 5
#: Response Topic and Correlation Data.
Answer = tuple[str, "asyncio.Future[dict[str, object]]", str | None, bytes | None]

REPLY_CACHE_SIZE: Final = 1024
PENDING_PUBLISHES_WARN: Final = 5000


def _response_properties(properties: Properties | None) -> tuple[str | None, bytes | None]:
    if properties is None:
        return None, None
    topic = getattr(properties, "ResponseTopic", None)
    correlation = getattr(properties, "CorrelationData", None)
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic:
        topic = None
    return topic, correlation if isinstance(correlation, bytes) else None


def _auth_response(payload: bytes) -> object:
    """The decoded R/auth/response document; BadRequest when it cannot be one."""
    _, value = decode(payload)
    problem = value_problem(value)
    if problem:
        raise BadRequest(problem)
    return value


class ReplyCache:
    """The replies to the last 1024 request ids (API.md §2 idempotency), oldest evicted first."""

    def __init__(self, size: int = REPLY_CACHE_SIZE) -> None:
        self._size = size
        self._replies: OrderedDict[str, dict[str, object]] = OrderedDict()

    def get(self, request_id: str) -> dict[str, object] | None:
        return self._replies.get(request_id)

    def put(self, request_id: str, reply: dict[str, object]) -> None:
        self._replies[request_id] = reply
        self._replies.move_to_end(request_id)
        while len(self._replies) > self._size:
            self._replies.popitem(last=False)

    def __len__(self) -> int:
        return len(self._replies)


#: Completes a request with its reply. Called exactly once per submitted request, by the controller,
#: whatever happened to the link meanwhile; never raises.
ReplyCallback = Callable[[dict[str, object]], None]
#: Hands a request to the controller without waiting: it answers later through the callback.
RequestSubmitter = Callable[[Request, ReplyCallback], None]
AuthResponseHandler = Callable[[object], Awaitable[None]]
LinkHandler = Callable[[bool], Awaitable[None]]


@dataclass(slots=True)
class _Retained:
    topic: str
    payload: bytes


@dataclass(slots=True)
class LinkStats:
    connects: int = 0
    malformed: int = 0
    requests: int = 0
    published: int = 0


@dataclass(slots=True)
class BackendLink:
    """One MQTT connection to the backend, kept up for the life of the controller."""

    settings: MqttSettings
    charger_id: str
    codec: str
    submit: RequestSubmitter
    on_auth_response: AuthResponseHandler
    on_link: LinkHandler
    status_doc: Callable[[bool], dict[str, object]]
    outbox_pending: Callable[[], list[OutboxRecord]]
    outbox_acked: Callable[[list[int]], None]
    topics: Topics = field(init=False)
    stats: LinkStats = field(default_factory=LinkStats)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    _client: aiomqtt.Client | None = None
    _retained: dict[str, _Retained] = field(default_factory=dict)
    _outbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _replies: ReplyCache = field(default_factory=ReplyCache)
    _in_flight: dict[str, list[asyncio.Future[dict[str, object]]]] = field(default_factory=dict)
    _sends: set[asyncio.Task[bool]] = field(default_factory=set)
    tap: PublishTap = field(init=False)  # the console's watch: every document published or queued

    def __post_init__(self) -> None:
        self.topics = Topics.for_charger(self.settings.prefix, self.charger_id)
        self.tap = PublishTap(self.topics.root, self.outbox_pending)

    def listen(self, listener: PublishListener) -> Callable[[], None]:
        """Tell `listener` of every document published from now on (`PublishTap.listen`)."""
        return self.tap.listen(listener)

    # --- publishing (called from the controller) -------------------------------------------------

    def retain(self, topic: str, value: object) -> None:
        """Remember a retained document and publish it now if connected (and on every reconnect)."""
        payload = encode(self.codec, value)
        previous = self._retained.get(topic)
        if previous is not None and previous.payload == payload:
            return
        self._retained[topic] = _Retained(topic, payload)
        self.tap.published(topic, value)
        if self._client is not None and self.connected.is_set():
            task = asyncio.get_running_loop().create_task(self._publish_quietly(topic, payload, 1, True),
                                                          name=f"retain {topic}")
            self._sends.add(task)  # referenced until done (asyncio keeps only weak references)
            task.add_done_callback(self._sends.discard)

    def outbox_changed(self) -> None:
        """New durable messages are in the outbox: the sender publishes them in seq order."""
        self._outbox_wakeup.set()
        self.tap.outbox_changed()

    async def publish_now(self, topic: str, value: object, qos: int = 0) -> bool:
        """Best effort (meter samples, auth requests): False when not connected or it failed."""
        self.tap.published(topic, value)
        if self._client is None or not self.connected.is_set():
            return False
        return await self._publish_quietly(topic, encode(self.codec, value), qos, False)

    async def _publish_quietly(self, topic: str, payload: bytes, qos: int, retain: bool) -> bool:
        client = self._client
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=10)
        except aiomqtt.MqttError as exc:
            log.debug("publish to %s failed: %s", topic, exc)
            return False
        self.stats.published += 1
        return True

    # --- the connection --------------------------------------------------------------------------

    def _client_for(self) -> aiomqtt.Client:
        s = self.settings
        will = aiomqtt.Will(self.topics.status, encode(self.codec, self.status_doc(False)), qos=1, retain=True)
        client = aiomqtt.Client(
            s.host, s.port, identifier=self.charger_id, username=s.username, password=s.password,
            protocol=aiomqtt.ProtocolVersion.V5, will=will, keepalive=s.keepalive_s, tls_context=tls_context(s.tls),
            tls_insecure=tls_insecure(s.tls),
            # paho leaves Nagle's algorithm on: ~40 ms added to every QoS 1 round trip on loopback.
            socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            timeout=10,
        )
        # A group commit releases many replies at once, and a reconnect replays the outbox: hundreds of
        # publishes waiting for their PUBACK are normal here, not the warning aiomqtt logs past 10.
        client.pending_calls_threshold = PENDING_PUBLISHES_WARN
        return client

    async def run(self) -> None:
        """Connect, serve, and reconnect with capped exponential backoff and jitter, forever."""
        warn_if_insecure(self.settings)  # at every start, while the config says so
        delay = self.settings.reconnect_min_s
        reported = False
        while True:
            client = self._client_for()
            try:
                try:
                    async with client:
                        self._client = client
                        await self._on_connected(client)
                        reported, delay = False, self.settings.reconnect_min_s
                        await self._serve(client)
                except* aiomqtt.MqttError as group:  # from the connect, or from _serve's task group
                    exc = group.exceptions[0]
                    if not reported:
                        log.warning("backend broker %s:%d unreachable (%s); working offline, retrying",
                                    self.settings.host, self.settings.port, exc)
                        reported = True
                    else:
                        log.debug("broker still unreachable: %s", exc)
            finally:
                for send in list(self._sends):  # publishes on this connection die with it
                    send.cancel()
                read_disconnect_cause(client)
                was_up = self.connected.is_set()
                self._client = None
                self.connected.clear()
                task = asyncio.current_task()
                if was_up and not (task is not None and task.cancelling()):
                    log.warning("backend link lost; reconnecting")
                    await self.on_link(False)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.settings.reconnect_max_s)

    async def _on_connected(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topics.cmd, qos=1)
        await client.subscribe(self.topics.auth_response, qos=1)
        self.stats.connects += 1
        # online only once the command topics are subscribed (API.md §1)
        status = self.status_doc(True)
        await client.publish(self.topics.status, encode(self.codec, status), qos=1, retain=True)
        self.tap.published(self.topics.status, status)
        for retained in list(self._retained.values()):
            await client.publish(retained.topic, retained.payload, qos=1, retain=True)
        self.connected.set()
        log.info("backend link up: %s:%d as %s", self.settings.host, self.settings.port, self.charger_id)
        await self.on_link(True)

    async def _serve(self, client: aiomqtt.Client) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._send_outbox(client), name="mqtt-outbox")
            async for message in client.messages:
                payload = message.payload if isinstance(message.payload, bytes) else b""
                if message.topic.matches(self.topics.cmd):
                    # Submitted here, in arrival order; a request the core answers in its next step has
                    # its reply ready when its task first runs (no extra trip round the loop).
                    group.create_task(self._answer(client, *self._request(payload, message.properties)),
                                      name="mqtt-request")
                elif message.topic.matches(self.topics.auth_response):
                    await self._handle_auth_response(payload)

    async def _send_outbox(self, client: aiomqtt.Client) -> None:
        """Publish durable messages in seq order; each is acked in the store after its PUBACK."""
        while True:
            self._outbox_wakeup.clear()
            for record in self.outbox_pending():
                await client.publish(record.topic, record.payload, qos=1, timeout=math.inf)
                self.stats.published += 1
                self.outbox_acked([record.seq])
            await self._outbox_wakeup.wait()

    async def _handle_auth_response(self, payload: bytes) -> None:
        try:
            await self.on_auth_response(_auth_response(payload))
        except Exception:  # noqa: BLE001 - never let a payload stop the loop
            self.stats.malformed += 1
            log.warning("ignored a malformed R/auth/response payload (%d bytes)", len(payload))

    def _request(self, payload: bytes, properties: Properties | None) -> Answer:
        """Parse and submit one request; what `_answer` needs to reply to it."""
        self.stats.requests += 1
        codec = codec_of(payload)
        response_topic, correlation = _response_properties(properties)
        try:
            request = parse_request(payload, self.settings.max_payload_bytes, response_topic=response_topic,
                                    correlation=correlation)
        except BadRequest as exc:
            self.stats.malformed += 1
            reply = error_reply(exc.request_id, exc.op, "bad_request", str(exc))
        except Exception as exc:  # noqa: BLE001
            self.stats.malformed += 1
            reply = error_reply(None, None, "bad_request", f"unreadable request: {type(exc).__name__}")
        else:
            return codec, self._reply_for(request), response_topic, correlation
        answered: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        answered.set_result(reply)
        return codec, answered, response_topic, correlation

    async def _answer(self, client: aiomqtt.Client, codec: str, reply: asyncio.Future[dict[str, object]],
                      response_topic: str | None, correlation: bytes | None) -> None:
        await self._send_reply(client, codec, await reply, response_topic, correlation)  # cancelled: only ours

    def _reply_for(self, request: Request) -> asyncio.Future[dict[str, object]]:
        """The reply to `request`, as a future of this caller's own: from the cache, or from its one
        execution.

        The execution belongs to the controller, not to the task that waits: the link may drop (and
        cancel that task) while a request waits for the core or for a commit. The controller still
        completes it; the reply then goes to the cache, so the same id re-sent after the reconnect gets
        it without a second execution. The in-flight entry lives exactly as long as the execution."""
        mine: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        cached = self._replies.get(request.request_id)
        if cached is not None:
            mine.set_result(cached)
            return mine
        waiting = self._in_flight.get(request.request_id)
        if waiting is not None:  # a QoS 1 duplicate of one still being executed: wait for its reply
            waiting.append(mine)
        else:
            waiting = self._in_flight[request.request_id] = [mine]
            self._execute(request, waiting)
        return mine

    def _execute(self, request: Request, waiting: list[asyncio.Future[dict[str, object]]]) -> None:
        done = False

        def complete(reply: dict[str, object]) -> None:
            nonlocal done
            if done:  # pragma: no cover - a controller bug; the first reply stands
                log.error("request %s completed twice; the second reply is dropped", request.request_id)
                return
            done = True
            self._replies.put(request.request_id, reply)
            if self._in_flight.get(request.request_id) is waiting:
                del self._in_flight[request.request_id]
            for future in waiting:
                if not future.done():  # a waiter cancelled by a link drop is simply skipped
                    future.set_result(reply)

        try:
            self.submit(request, complete)
        except Exception as exc:  # noqa: BLE001 - a bug in the controller must still get exactly one reply
            log.exception("op %s could not be submitted", request.op)
            complete(error_reply(request.request_id, request.op, "internal", f"{type(exc).__name__}: {exc}"))

    async def _send_reply(self, client: aiomqtt.Client, codec: str, reply: dict[str, object],
                          response_topic: str | None, correlation: bytes | None) -> None:
        try:
            payload = encode(codec, reply)
        except (TypeError, ValueError):
            log.exception("reply could not be encoded")
            payload = encode(codec, error_reply(None, None, "internal", "reply could not be encoded"))
        try:
            await client.publish(self.topics.reply, payload, qos=1, timeout=10)
            if response_topic is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: no annotations
                if correlation is not None:
                    properties.CorrelationData = correlation
                await client.publish(response_topic, payload, qos=1, properties=properties, timeout=10)
        except aiomqtt.MqttError as exc:
            log.warning("reply could not be sent: %s", exc)


def read_disconnect_cause(client: aiomqtt.Client) -> None:
    """Tidy up after an aiomqtt (2.x) client whose connection ended:

    * it keeps an unexpected disconnection's error in a future that its `__aexit__` does not read when
      the connection is already gone; asyncio then logs "Future exception was never retrieved" at
      every broker loss. The link has reported the loss already: read the error so it is not logged;
    * a connect cancelled inside `__aenter__` leaves its housekeeping task (`_misc_loop`) running for
      ever: cancel it."""
    disconnected = getattr(client, "_disconnected", None)
    if isinstance(disconnected, asyncio.Future) and disconnected.done() and not disconnected.cancelled():
        disconnected.exception()
    _cancel_misc_task(client)
    # A connect abandoned inside its executor thread starts the task only when the thread is done:
    # look again a little later (the thread's socket connect is bounded by its timeout).
    loop = asyncio.get_running_loop()
    for delay_s in (0.05, 0.3, 1.0, 5.0, 15.0):
        loop.call_later(delay_s, _cancel_misc_task, client)


def _cancel_misc_task(client: aiomqtt.Client) -> None:
    misc = getattr(client, "_misc_task", None)
    if isinstance(misc, asyncio.Task) and not misc.done():  # the client is finished: its task is a leak
        misc.cancel()
