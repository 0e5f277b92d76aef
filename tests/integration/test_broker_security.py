"""The example broker of deploy/mosquitto/ (mosquitto.conf and acl) with a real mosquitto: TLS with a
verified broker, a password per charger, and each charger confined to its own topic tree (issue 13 §5).

The deploy files are used as they are, with only their paths rewritten to the test's directory and
the listener moved to a free loopback port; the certificates are made by openssl at test time and the
password file by `mosquitto_passwd -b`, as deploy/mosquitto/README.md tells the operator.

On denied publishes: mosquitto acknowledges a QoS 1 publish that the ACL denies (on MQTT 3.1.1 it
cannot say no; aiomqtt does not expose MQTT 5's PUBACK reason code) and drops it, so what is asserted
is that the message never arrives. A marker published afterwards by an allowed client to the same
subscriber proves that the subscriber was listening and that the broker had already dealt with the
denied message (the broker handles one connection's packets in order, and the denied publish was
acknowledged before the marker was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiomqtt
import pytest

from tests.integration.test_tls import make_pki, openssl
from tests.support.broker import Broker, running_broker
from tests.support.controller import start_controller, write_config

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
PASSWORDS = {"CP-A": "pw-of-a", "CP-B": "pw-of-b", "backend": "pw-of-backend"}
NOT_AUTHORIZED = 0x87  # MQTT 5 reason code (SUBACK): Not authorized
TIMEOUT_S = 10.0


def fleet_settings(d: Path) -> str:
    """deploy/mosquitto/mosquitto.conf with its paths in `d`; its `listener 8883` line removed (Broker
    writes the listener on a free port first, and the TLS options that follow apply to it)."""
    conf = (DEPLOY / "mosquitto.conf").read_text()
    assert re.search(r"^listener 8883$", conf, re.MULTILINE), "the deploy config must have the TLS listener"
    conf = re.sub(r"^listener 8883\n", "", conf, flags=re.MULTILINE)
    replaced = {"/etc/mosquitto/passwd": d / "passwd", "/etc/mosquitto/acl": d / "acl",
                "/etc/mosquitto/certs/": f"{d}/", "/var/lib/mosquitto/": f"{d}/"}
    for old, new in replaced.items():
        assert old in conf, f"{old} is no longer in deploy/mosquitto/mosquitto.conf: update this test"
        conf = conf.replace(old, str(new))
    # run as root (CI), mosquitto would drop to the `mosquitto` user, who cannot read the test's files
    return conf + ("user root\n" if os.geteuid() == 0 else "")


def write_passwords(d: Path) -> None:
    binary = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")
    if binary is None:
        pytest.fail("mosquitto_passwd is missing (package mosquitto): run ./tools/test")
    path = d / "passwd"
    path.write_text("")
    path.chmod(0o600)
    for user, password in PASSWORDS.items():
        subprocess.run([binary, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker from deploy/mosquitto/ for this module (the tests use it without changing it)."""
    d = tmp_path_factory.mktemp("fleet")
    make_pki(d)
    other = d / "other"  # a CA of its own, which did not sign the broker's certificate
    other.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=other-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=other)
    write_passwords(d)
    shutil.copy(DEPLOY / "acl", d / "acl")
    with running_broker(Broker(d, settings=fleet_settings(d))) as broker:
        yield broker


@contextlib.asynccontextmanager
async def client(broker: Broker, user: str, *, identifier: str | None = None,
                 protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5) -> AsyncIterator[aiomqtt.Client]:
    tls = aiomqtt.TLSParameters(ca_certs=str(broker.directory / "ca.crt"))
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=identifier or user, username=user,
                              password=PASSWORDS[user], protocol=protocol, tls_params=tls, timeout=TIMEOUT_S) as c:
        yield c


async def next_message(c: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(TIMEOUT_S):
        return await anext(aiter(c.messages))


def reason_codes(granted: object) -> list[int]:
    assert isinstance(granted, list | tuple)
    return [int(getattr(code, "value", code)) for code in granted]


def charger_mqtt(d: Path, user: str, ca: Path) -> str:
    secret = d / f"{user}.password"
    secret.write_text(PASSWORDS[user] + "\n")
    secret.chmod(0o600)
    return f'username = "{user}"\npassword_file = "{secret}"\n[mqtt.tls]\nca_file = "{ca}"\n'


async def test_the_controller_connects_with_tls_and_goes_online(fleet: Broker, tmp_path: Path) -> None:
    """The controller (TLS, its password from password_file) is online; the backend role reads it."""
    async with client(fleet, "backend") as backend:
        await backend.subscribe("chargers/CP-A/v1/status", qos=1)
        config = write_config(tmp_path, fleet.port, charger_id="CP-A",
                              mqtt_extra=charger_mqtt(tmp_path, "CP-A", fleet.directory / "ca.crt"))
        assert config.mqtt.password == PASSWORDS["CP-A"]
        running = await start_controller(config)
        try:
            await asyncio.wait_for(running.controller.link.connected.wait(), TIMEOUT_S)
            while True:  # a retained {online: false} of an earlier run may come first
                message = await next_message(backend)
                if isinstance(message.payload, bytes) and b'"online":true' in message.payload.replace(b" ", b""):
                    break
        finally:
            await running.stop()


async def test_a_broker_not_signed_by_the_configured_ca_is_refused(fleet: Broker, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, fleet.port, charger_id="CP-A",
                          mqtt_extra=charger_mqtt(tmp_path, "CP-A", fleet.directory / "other" / "ca.crt"))
    running = await start_controller(config)
    try:
        async with asyncio.timeout(TIMEOUT_S):
            while not any("unreachable" in r.getMessage() for r in caplog.records):
                await asyncio.sleep(0.02)
        [record] = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert "certificate verify failed" in record.getMessage()  # the log says why
        assert running.controller.link.stats.connects == 0
        assert not running.controller.link.connected.is_set()
    finally:
        await running.stop()


@pytest.mark.parametrize("protocol", [aiomqtt.ProtocolVersion.V311, aiomqtt.ProtocolVersion.V5])
async def test_charger_a_cannot_command_charger_b(fleet: Broker, protocol: aiomqtt.ProtocolVersion) -> None:
    """A publishes to B's cmd, also connected with B's client id: B gets only the backend's marker."""
    async with client(fleet, "CP-B") as b, client(fleet, "backend") as backend:
        await b.subscribe("chargers/CP-B/v1/cmd", qos=1)
        for identifier in ("CP-A", "CP-B"):  # the client id is replaced by the username (CP-A)
            async with client(fleet, "CP-A", identifier=identifier, protocol=protocol) as a:
                await a.publish("chargers/CP-B/v1/cmd", b'{"id":"evil","op":"stop_session"}', qos=1)
        await backend.publish("chargers/CP-B/v1/cmd", b'{"id":"marker","op":"get_state"}', qos=1)
        message = await next_message(b)
        assert message.payload == b'{"id":"marker","op":"get_state"}'


async def test_charger_a_cannot_read_charger_b(fleet: Broker) -> None:
    """Nothing of B reaches A: neither B's retained state nor a command the backend sends B.

    mosquitto 2.0 checks `read` when it delivers, not when it subscribes: the SUBACK may grant the
    subscription (2.0.11 does) or refuse it with 0x87 (MQTT 5 Not authorized); either way no message
    of B is delivered to A, which is what counts."""
    async with client(fleet, "CP-B") as b:
        await b.publish("chargers/CP-B/v1/evse/1/state", b'{"evse_id":1}', qos=1, retain=True)
    async with client(fleet, "CP-A") as a, client(fleet, "backend") as backend:
        for topic in ("chargers/CP-B/v1/evse/1/state", "chargers/CP-B/v1/#", "chargers/+/v1/cmd", "#"):
            assert reason_codes(await a.subscribe(topic, qos=1))[0] in {1, NOT_AUTHORIZED}
        await backend.publish("chargers/CP-B/v1/cmd", b'{"id":"for-b","op":"get_state"}', qos=1)
        await backend.publish("chargers/CP-A/v1/cmd", b'{"id":"marker","op":"get_state"}', qos=1)
        message = await next_message(a)  # the first message A gets is its own command, nothing of B
        assert (str(message.topic), message.payload) == ("chargers/CP-A/v1/cmd", b'{"id":"marker","op":"get_state"}')


async def test_a_charger_may_not_write_its_own_commands(fleet: Broker) -> None:
    """The direction counts: a charger reads its cmd and auth/response, it never writes them."""
    async with client(fleet, "CP-A") as a, client(fleet, "backend") as backend:
        await a.subscribe("chargers/CP-A/v1/cmd", qos=1)
        await a.publish("chargers/CP-A/v1/cmd", b'{"id":"self","op":"get_state"}', qos=1)
        await backend.publish("chargers/CP-A/v1/cmd", b'{"id":"marker","op":"get_state"}', qos=1)
        message = await next_message(a)
        assert message.payload == b'{"id":"marker","op":"get_state"}'


async def test_the_backend_commands_and_reads_every_charger(fleet: Broker) -> None:
    async with client(fleet, "CP-B") as b:
        await b.publish("chargers/CP-B/v1/evse/1/state", b'{"evse_id":1,"from":"B"}', qos=1, retain=True)
        await b.subscribe("chargers/CP-B/v1/cmd", qos=1)
        await b.subscribe("chargers/CP-B/v1/auth/response", qos=1)
        async with client(fleet, "backend") as backend:
            granted = await backend.subscribe("chargers/+/v1/evse/+/state", qos=1)
            assert reason_codes(granted) == [1]
            state = await next_message(backend)
            while str(state.topic) != "chargers/CP-B/v1/evse/1/state":  # another charger's retained state
                state = await next_message(backend)
            assert state.payload == b'{"evse_id":1,"from":"B"}'
            await backend.publish("chargers/CP-B/v1/cmd", b'{"id":"1","op":"get_state"}', qos=1)
            await backend.publish("chargers/CP-B/v1/auth/response", b'{"id":"2","status":"Accepted"}', qos=1)
        first, second = await next_message(b), await next_message(b)
        assert [str(first.topic), str(second.topic)] == ["chargers/CP-B/v1/cmd", "chargers/CP-B/v1/auth/response"]
