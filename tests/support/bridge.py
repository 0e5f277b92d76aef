"""Two private mosquittos bridged like two nodes of one broker cluster: "A", where the charger connects,
and "B", where the backend connects, with the `connection` block of deploy/mosquitto/bridge-example.conf
on B (only its `address` rewritten to A's loopback port). And backend clients with a persistent session.

What it must never do: use a public broker, or change the example's bridge options other than those a
test names (`bridge_pair(..., cleansession="true")` shows what the example's choice prevents).

Standard: mosquitto.conf(5) (bridges), MQTT 3.1.1 §3.1.2.4 (clean session), MQTT 5 §3.1.2.11.2
(session expiry interval).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware.mqtt import read_disconnect_cause
from tests.support.backend import Backend, pumping
from tests.support.broker import PLAIN_SETTINGS, Broker

BRIDGE_EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "bridge-example.conf"
#: the example's remote_clientid: the bridge's session on A, and its $SYS notification topic on B
BRIDGE_CLIENT_ID = "bridge-fleet-b"
BRIDGE_STATE_TOPIC = f"$SYS/broker/connection/{BRIDGE_CLIENT_ID}/state"
SESSION_EXPIRY_S = 300


def bridge_block(remote_port: int, **options: str) -> str:
    """The example's `connection` block (to its end), to 127.0.0.1:`remote_port`; `options` replace the
    values of options the example sets (e.g. cleansession="true")."""
    text = BRIDGE_EXAMPLE.read_text()
    start = re.search(r"^connection ", text, re.MULTILINE)
    assert start is not None, f"{BRIDGE_EXAMPLE} has no `connection` line"
    block = text[start.start():]
    block, found = re.subn(r"^address .*$", f"address 127.0.0.1:{remote_port}", block, flags=re.MULTILINE)
    assert found == 1, f"{BRIDGE_EXAMPLE}: expected one `address` line"
    assert f"remote_clientid {BRIDGE_CLIENT_ID}\n" in block, "the example's remote_clientid changed: update this file"
    for option, value in options.items():
        block, found = re.subn(rf"^{option} .*$", f"{option} {value}", block, flags=re.MULTILINE)
        assert found == 1, f"{BRIDGE_EXAMPLE} does not set {option}"
    return block


def backend_side_settings(directory: Path, remote_port: int, **options: str) -> str:
    """Broker B: persistent (the backend's session and the bridge's state survive its restart, as the
    example's header asks), then the bridge block."""
    general = PLAIN_SETTINGS.replace("persistence false\n", f"persistence true\npersistence_location {directory}/\n")
    # run as root (CI), mosquitto would drop to the `mosquitto` user, who cannot write the test's directory
    user = "user root\n" if os.geteuid() == 0 else ""
    return general + user + bridge_block(remote_port, **options)


@dataclass
class BridgedPair:
    a: Broker  # the chargers' broker
    b: Broker  # the backends' broker, bridged to A


@contextlib.contextmanager
def bridged_pair(directory: Path, **options: str) -> Iterator[BridgedPair]:
    """A and B started (A first: B's bridge connects to it at once), both stopped after the block."""
    (directory / "a").mkdir()
    (directory / "b").mkdir()
    a = Broker(directory / "a")
    a.start()
    try:
        b = Broker(directory / "b", backend_side_settings(directory / "b", a.port, **options))
        b.start()
        try:
            yield BridgedPair(a, b)
        finally:
            b.stop()
    finally:
        a.stop()


@contextlib.asynccontextmanager
async def session_backend(port: int, root: str, identifier: str, *, mqtt5: bool,
                          backend: Backend | None = None) -> AsyncIterator[Backend]:
    """A backend with a persistent session on the broker at `port`, subscribed to R/#: MQTT 5 with
    clean start false and a session expiry interval, or MQTT 3.1.1 with clean session false. Pass the
    `backend` of an earlier connection to keep collecting into it."""
    if mqtt5:
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no annotations
        properties.SessionExpiryInterval = SESSION_EXPIRY_S
        client = aiomqtt.Client("127.0.0.1", port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V5,
                                clean_start=False, properties=properties)
    else:
        client = aiomqtt.Client("127.0.0.1", port, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V311,
                                clean_session=False)
    try:
        async with client:
            await client.subscribe(f"{root}/#", qos=1)
            if backend is None:
                backend = Backend(client=client, root=root)
            backend.client = client
            async with pumping(backend):
                yield backend
    finally:
        read_disconnect_cause(client)
