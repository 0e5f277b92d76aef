"""Transport security against a real mosquitto: TLS with a client certificate, and username/password
(API.md §1, the `[mqtt]` and `[mqtt.tls]` config). Certificates are made by `openssl` for the test."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.broker import Broker, running_broker
from tests.support.controller import start_controller, write_config

pytestmark = pytest.mark.integration


def openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("openssl is not installed: run ./tools/test (it installs it) or `apt-get install openssl`")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d: Path) -> None:
    """A CA, a broker certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=d)


def password_file(d: Path, user: str, password: str) -> Path:
    path = d / "passwd"
    path.write_text("")
    binary = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/bin:/usr/sbin")
    if binary is None:
        pytest.fail("mosquitto_passwd is missing (package mosquitto): run ./tools/test")
    subprocess.run([binary, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)
    path.chmod(0o600)
    return path


def secure_broker(d: Path) -> Broker:
    make_pki(d)
    passwd = password_file(d, "charger", "s3cret")
    return Broker(d, settings=(
        f"allow_anonymous false\npassword_file {passwd}\npersistence false\n"
        f"cafile {d / 'ca.crt'}\ncertfile {d / 'server.crt'}\nkeyfile {d / 'server.key'}\n"
        "require_certificate true\nset_tcp_nodelay true\n"
        # run as root (CI), mosquitto would drop to the `mosquitto` user, who cannot read the test's files
        + ("user root\n" if os.geteuid() == 0 else "")))


def tls_evses(d: Path, password: str) -> dict[str, str]:
    return {"mqtt_extra": f'username = "charger"\npassword = "{password}"\n'
                          f'[mqtt.tls]\nca_file = "{d / "ca.crt"}"\ncert_file = "{d / "client.crt"}"\n'
                          f'key_file = "{d / "client.key"}"\n'}


async def test_tls_with_client_certificate_and_password(tmp_path: Path) -> None:
    with running_broker(secure_broker(tmp_path)) as broker:
        config = write_config(tmp_path, broker.port, charger_id=f"TLS-{os.getpid()}",
                              mqtt_extra=tls_evses(tmp_path, "s3cret")["mqtt_extra"])
        assert config.mqtt.tls is not None
        assert config.mqtt.username == "charger"
        running = await start_controller(config)
        try:
            await asyncio.wait_for(running.controller.link.connected.wait(), 10)
            assert running.controller.link.stats.connects == 1
        finally:
            await running.stop()


async def test_a_wrong_password_keeps_the_charger_offline(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with running_broker(secure_broker(tmp_path)) as broker:
        config = write_config(tmp_path, broker.port, charger_id=f"TLS-BAD-{os.getpid()}",
                              mqtt_extra=tls_evses(tmp_path, "wrong")["mqtt_extra"])
        running = await start_controller(config)
        try:
            await asyncio.sleep(1.5)
            assert not running.controller.link.connected.is_set()
            assert not running.task.done()  # it keeps working offline
            assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1
        finally:
            await running.stop()
