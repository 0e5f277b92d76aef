"""The controller behind a broker that is one node of a "cluster": two mosquittos bridged with the
`connection` block of deploy/mosquitto/bridge-example.conf (tests/support/bridge.py). The charger is
connected to broker A, the backend to broker B (README: "Scaling: from one broker to a cluster").

What is checked: requests sent on B reach the charger and its replies come back on B (MQTT 5 Response
Topic does not cross the 3.1.1 bridge: the reply comes on R/reply only); retained state documents are
retained on B and kept current; durable events (API.md §6) reach a backend whose persistent session
held them while it was away; and events the charger published while the bridge was down (broker B
stopped) reach the backend once B is back, because A queued them in the bridge's persistent session.
The charger had those already acknowledged by A, so it never sends them again: with `cleansession true`
on the bridge, or an MQTT 5 bridge (mosquitto 2.0 gives it no session expiry), they are lost. Those two
variants are run too, to show that the example's choices are what makes the difference.

Absence is asserted behind a barrier: a later event of the same charger, on the same path, has arrived
(the bridge and the brokers keep one client's QoS 1 messages in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support.backend import Backend, SyncSubscriber, backend_for, root_of, wait_online, wait_status
from tests.support.bridge import BridgedPair, bridged_pair, session_backend
from tests.support.codec import decode, encode
from tests.support.controller import Running, start_controller, write_config
from tests.support.polling import until

pytestmark = pytest.mark.integration

TIMEOUT_S = 10.0


@contextlib.asynccontextmanager
async def charger_on_a(pair: BridgedPair, directory: Path, name: str) -> AsyncIterator[tuple[Running, str]]:
    """The controller connected to broker A (its topic root returned), stopped after the block."""
    charger_id = f"CP-BR-{name}-{os.getpid()}"
    config = write_config(directory, pair.a.port, charger_id=charger_id)
    running = await start_controller(config)
    try:
        await asyncio.wait_for(running.controller.link.connected.wait(), TIMEOUT_S)
        yield running, root_of(charger_id)
    finally:
        await running.stop()


async def session_events_acked_by_a(running: Running, observer: SyncSubscriber, root: str) -> list[int]:
    """Plug an EV in (SessionStarted ...), then wait until broker A has routed the charger's events and
    acknowledged them: the charger's outbox is empty, it will never send them again. Their seqs."""
    seen = len(observer.decoded(f"{root}/evse/1/session"))
    running.sim.plug(1, "B")
    await until(lambda: len(observer.decoded(f"{root}/evse/1/session")) > seen, TIMEOUT_S)
    await until(lambda: not running.controller.persistence.pending(), TIMEOUT_S)
    seqs = [int(e["seq"]) for e in observer.decoded(f"{root}/evse/1/session")[seen:]]
    assert seqs, "no session event"
    return seqs


def seqs_of(backend: Backend) -> set[int]:
    return {int(m["seq"]) for m in backend.durable()}


async def fresh_retained(port: int, root: str) -> dict[str, Any]:
    """What a client that connects now gets on R/#, retained flag set: the broker's retained documents."""
    found: dict[str, Any] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"fresh-{os.getpid()}",
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe(f"{root}/#", qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):  # retained messages come right after the SUBACK
                async for message in client.messages:
                    if message.retain and isinstance(message.payload, bytes):
                        found[message.topic.value] = decode(message.payload)
                    if {f"{root}/status", f"{root}/evse/1/state"} <= found.keys():
                        break
    return found


async def test_requests_replies_and_retained_state_cross_the_bridge(tmp_path: Path) -> None:
    with bridged_pair(tmp_path) as pair:
        async with charger_on_a(pair, tmp_path, "rr") as (running, root), backend_for(pair.b.port, root) as backend:
            boot_id = await wait_online(backend, TIMEOUT_S)  # R/status crossed A -> B
            assert (await backend.ok("get_state"))["evses"][0]["evse_id"] == 1  # R/cmd B -> A, R/reply A -> B
            await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
            await wait_status(backend, 1, "Preparing", TIMEOUT_S)

            # MQTT 5 Response Topic / Correlation Data: dropped by the 3.1.1 bridge, so the charger
            # answers on R/reply only. The next request's reply is the barrier.
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: no annotations
            properties.ResponseTopic = f"{root}/reply/by-property"
            properties.CorrelationData = b"c1"
            await backend.send_raw(encode("json", {"id": "rt-1", "op": "get_state"}), properties=properties)
            await backend.wait_for(lambda: backend.replies.get("rt-1"), TIMEOUT_S)
            await backend.ok("get_state")
            assert backend.on("reply/by-property") == [], "Response Topic crossed the bridge: update README"
            assert running.controller.link.stats.requests >= 4

            retained = await fresh_retained(pair.b.port, root)
            assert retained[f"{root}/status"]["online"] is True
            assert retained[f"{root}/status"]["boot_id"] == boot_id
            # the bridge subscribed before the plug-in: B's retained copy follows A's live updates
            assert retained[f"{root}/evse/1/state"]["status"] == "Preparing"
            assert retained[f"{root}/evse/1/state"] == backend.state(1)


async def test_events_wait_in_the_backends_session_while_it_is_away(tmp_path: Path) -> None:
    with bridged_pair(tmp_path) as pair:
        async with charger_on_a(pair, tmp_path, "away") as (running, root):
            observer_a, observer_b = SyncSubscriber(pair.a.port, f"{root}/#"), SyncSubscriber(pair.b.port, f"{root}/#")
            try:
                identifier = f"backend-away-{os.getpid()}"
                async with session_backend(pair.b.port, root, identifier, mqtt5=True) as backend:
                    await wait_online(backend, TIMEOUT_S)
                # away (MQTT 5: clean start false, session expiry 300 s); the events reach B meanwhile
                produced = await session_events_acked_by_a(running, observer_a, root)
                await until(lambda: len(observer_b.decoded(f"{root}/evse/1/session")) >= len(produced), TIMEOUT_S)
                async with session_backend(pair.b.port, root, identifier, mqtt5=True, backend=backend):
                    await backend.wait_for(lambda: set(produced) <= seqs_of(backend), TIMEOUT_S)
                assert [e["event"] for e in backend.events(1)][:1] == ["SessionStarted"]
            finally:
                observer_a.close()
                observer_b.close()


async def bridge_outage(pair: BridgedPair, running: Running, root: str, *,
                        mqtt5: bool = True) -> tuple[list[int], list[int], Backend]:
    """Broker B (and with it the bridge) stopped while the charger publishes session events to A, then
    restarted; one more event after that as the barrier. Returns (seqs produced during the outage, the
    barrier's seqs, the backend, whose persistent session B kept in its persistence)."""
    observer = SyncSubscriber(pair.a.port, f"{root}/#")
    try:
        identifier = f"backend-outage-{os.getpid()}"
        async with session_backend(pair.b.port, root, identifier, mqtt5=mqtt5) as backend:
            await wait_online(backend, TIMEOUT_S)
        pair.b.stop()
        during = await session_events_acked_by_a(running, observer, root)
        pair.b.start()
        async with session_backend(pair.b.port, root, identifier, mqtt5=mqtt5, backend=backend):
            # the bridge is up and subscribed on A once a live meter sample (QoS 0, never queued) arrives
            samples = len(backend.on("evse/1/meter"))
            await backend.wait_for(lambda: len(backend.on("evse/1/meter")) > samples, TIMEOUT_S)
            running.sim.plug(1, "A")  # the barrier: SessionFinished, published after the bridge is back
            await backend.wait_for(lambda: any(e["event"] == "SessionFinished" for e in backend.events(1)), TIMEOUT_S)
            barrier = [int(e["seq"]) for e in backend.events(1) if e["event"] == "SessionFinished"]
        return during, barrier, backend
    finally:
        observer.close()


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5-backend", "mqtt311-backend"])
async def test_events_published_while_the_bridge_was_down_arrive(tmp_path: Path, mqtt5: bool) -> None:
    with bridged_pair(tmp_path) as pair:
        async with charger_on_a(pair, tmp_path, "down") as (running, root):
            during, barrier, backend = await bridge_outage(pair, running, root, mqtt5=mqtt5)
    assert set(during) <= seqs_of(backend), f"lost over the bridge outage: {set(during) - seqs_of(backend)}"
    first_seen = list(dict.fromkeys(int(m["seq"]) for m in backend.durable()))
    assert first_seen == sorted(first_seen), "delivered out of order"
    assert max(during) < min(barrier)


@pytest.mark.parametrize(("option", "value"), [("cleansession", "true"), ("bridge_protocol_version", "mqttv50")])
async def test_without_a_bridge_session_those_events_are_lost(tmp_path: Path, option: str, value: str) -> None:
    with bridged_pair(tmp_path, **{option: value}) as pair:
        async with charger_on_a(pair, tmp_path, "lost") as (running, root):
            during, barrier, backend = await bridge_outage(pair, running, root)
    assert barrier, "the barrier event did not arrive"
    assert not set(during) & seqs_of(backend), (
        f"with {option} {value} the bridge kept its session on A: README's advice about it can change")
