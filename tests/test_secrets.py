"""Secrets (issue 13 §5): `[mqtt] password_file`, the broker verified unless the config says otherwise
(and a WARNING at every start when it does), and tokens masked on the console unless root asks for them
with `--show-tokens` (the peer's uid from SO_PEERCRED).

The non-root console test runs `charger-console` as uid 65534 (nobody) with `setpriv`; its socket is in a
0777 directory of its own and made 0666 for it, so that only the token rule can refuse it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from firmware.config import MqttSettings, TlsSettings, load_config
from firmware.console_ops import masked
from firmware.core.errors import ConfigError
from firmware.mqtt_tls import tls_context, tls_insecure, warn_if_insecure
from firmware.wire import mask_token
from tests.support.broker import free_port
from tests.support.builders import LOCAL_LIST, LOCAL_TOKEN, evses
from tests.support.controller import Running, start_controller, write_config

SECRET = "s3cret-Pa55word"
REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534
TIMEOUT_S = 10.0


def config_with(d: Path, mqtt: str) -> Path:
    path = d / "charger.toml"
    path.write_text(f'[charger]\nid = "CP-1"\n[mqtt]\n{mqtt}\n[[evse]]\nid = 1\n')
    return path


def secret_file(d: Path, text: str = SECRET + "\n", mode: int = 0o600, name: str = "mqtt-password") -> Path:
    path = d / name
    path.write_text(text)
    path.chmod(mode)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert SECRET not in message
    return message


# --- password_file --------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [SECRET + "\n", SECRET, SECRET + "\r\n", SECRET + "\nsecond line\n"])
def test_the_password_is_the_first_line_of_password_file(tmp_path: Path, text: str) -> None:
    secret_file(tmp_path, text)
    config = load_config(config_with(tmp_path, 'username = "CP-1"\npassword_file = "mqtt-password"'))
    assert config.mqtt.password == SECRET
    assert config.mqtt.password_file == tmp_path / "mqtt-password"  # relative to the config's directory


def test_the_password_never_shows_in_repr_or_str(tmp_path: Path) -> None:
    secret_file(tmp_path)
    config = load_config(config_with(tmp_path, 'username = "CP-1"\npassword_file = "mqtt-password"'))
    for shown in (repr(config), str(config), repr(config.mqtt), str(config.mqtt), f"{config.mqtt!r}"):
        assert SECRET not in shown
    assert "password_file" in repr(config.mqtt)  # where it came from is not a secret
    assert SECRET not in repr(MqttSettings(username="u", password=SECRET))


def test_password_and_password_file_together_are_an_error(tmp_path: Path) -> None:
    secret_file(tmp_path)
    message = load_error(config_with(tmp_path, f'username = "CP-1"\npassword = "{SECRET}"\n'
                                               'password_file = "mqtt-password"'))
    assert message.endswith("mqtt.password_file: give either password or password_file, not both")


def test_password_file_needs_a_username(tmp_path: Path) -> None:
    secret_file(tmp_path)
    message = load_error(config_with(tmp_path, 'password_file = "mqtt-password"'))
    assert message.endswith("mqtt.password_file: password_file given without username")


@pytest.mark.parametrize(("make", "problem"), [
    (lambda d: None, "file not found"),
    (lambda d: (d / "mqtt-password").mkdir(), "is a directory"),
    (lambda d: os.mkfifo(d / "mqtt-password"), "not a regular file"),  # and the load does not hang on it
    (lambda d: secret_file(d, "\nsecond\n"), "the first line of"),
    (lambda d: secret_file(d, "x" * 5000), "larger than 4096 bytes"),
    (lambda d: (d / "mqtt-password").write_bytes(b"\xff" + SECRET.encode()), "not valid UTF-8"),
])
def test_a_bad_password_file_is_a_config_error_naming_the_key(tmp_path: Path, make: object, problem: str) -> None:
    assert callable(make)
    make(tmp_path)
    message = load_error(config_with(tmp_path, 'username = "CP-1"\npassword_file = "mqtt-password"'))
    assert message.startswith(f"{tmp_path / 'charger.toml'}: mqtt.password_file: ")
    assert problem in message
    assert "mqtt-password" in message


@pytest.mark.parametrize(("mode", "group", "warned"), [
    (0o600, "ours", False),
    (0o400, "ours", False),
    (0o640, "ours", False),  # root:charger 0640: the controller's own group must read it
    (0o640, "other", True),
    (0o604, "ours", True),
    (0o644, "ours", True),
])
def test_a_password_file_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                        mode: int, group: str, warned: bool) -> None:
    path = secret_file(tmp_path, mode=mode)
    if group == "other":
        os.chown(path, -1, os.getegid() + 1 if os.getegid() != NOBODY else NOBODY - 1)
    caplog.set_level(logging.WARNING, logger="firmware.config.loader")
    config = load_config(config_with(tmp_path, 'username = "CP-1"\npassword_file = "mqtt-password"'))
    assert config.mqtt.password == SECRET  # a warning, not an error: the charger keeps working
    records = [r for r in caplog.records if r.name == "firmware.config.loader"]
    assert len(records) == int(warned)
    if warned:
        [record] = records
        assert record.levelno == logging.WARNING
        assert "mqtt.password_file" in record.getMessage()
        assert "can be read by other users" in record.getMessage()
        assert f"{mode:04o}" in record.getMessage()
        assert SECRET not in record.getMessage()


async def test_an_unreadable_password_file_is_a_config_error(tmp_path: Path) -> None:
    """As uid 65534 (root reads every file): `charger-firmware --check-config` names key and file."""
    d = Path(tempfile.mkdtemp(prefix="pwf-", dir="/tmp"))
    try:
        d.chmod(0o755)
        secret_file(d)
        path = config_with(d, 'username = "CP-1"\npassword_file = "mqtt-password"')
        path.chmod(0o644)
        code, out, err = await run_as_nobody([sys.executable, "-m", "firmware", "--check-config", str(path)],
                                             {"PYTHONPATH": str(REPO)})
        assert (code, out) == (2, "")
        assert err.strip() == f"{path}: mqtt.password_file: file is not readable: '{d / 'mqtt-password'}' " \
                              f"(permission denied for uid {NOBODY})"
    finally:
        shutil.rmtree(d)


# --- TLS: verified unless the config says otherwise -------------------------------------------------


def test_the_broker_is_verified_by_default() -> None:
    context = tls_context(TlsSettings())
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert tls_insecure(TlsSettings()) is False
    assert tls_context(None) is None


def test_insecure_turns_verification_off_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    context = tls_context(TlsSettings(insecure=True))
    assert context is not None
    assert context.verify_mode is ssl.CERT_NONE
    assert tls_insecure(TlsSettings(insecure=True)) is True
    settings = MqttSettings(host="broker.example", port=8883, tls=TlsSettings(insecure=True))
    assert warn_if_insecure(settings) is True
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert record.getMessage().startswith("[mqtt.tls] insecure = true: the broker broker.example:8883 is NOT verified")
    assert "set ca_file" in record.getMessage()
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize("settings", [MqttSettings(), MqttSettings(tls=TlsSettings())])
def test_no_warning_while_the_broker_is_verified(settings: MqttSettings, caplog: pytest.LogCaptureFixture) -> None:
    assert warn_if_insecure(settings) is False
    assert caplog.records == []


async def test_the_controller_warns_at_every_start_while_insecure(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    config = write_config(tmp_path, free_port(), charger_id="CP-INSECURE",
                          mqtt_extra="[mqtt.tls]\ninsecure = true\n")
    for _start in range(2):
        caplog.clear()
        running = await start_controller(config)
        try:
            async with asyncio.timeout(TIMEOUT_S):
                while not any(r.name == "firmware.mqtt_tls" for r in caplog.records):
                    await asyncio.sleep(0.01)
        finally:
            await running.stop()
        assert [r.levelno for r in caplog.records if r.name == "firmware.mqtt_tls"] == [logging.WARNING]


# --- tokens on the console ------------------------------------------------------------------------


def test_masked_masks_every_token_key_at_any_depth() -> None:
    doc = {"id_token": "04C0FFEE01", "evses": [{"session": {"id_token": "ABCDEFGH", "uuid": "u"}}],
           "reservation_start": {"id_tag": "TAG12345", "parent_id": "GROUP999"}, "parent_id_token": "P1234567",
           "other": "04C0FFEE01", "n": 5}
    assert masked(doc) == {"id_token": "04C0******", "evses": [{"session": {"id_token": "ABCD****", "uuid": "u"}}],
                           "reservation_start": {"id_tag": "TAG1****", "parent_id": "GROU****"},
                           "parent_id_token": "P123****", "other": "04C0FFEE01", "n": 5}
    assert masked(masked(doc)) == masked(doc)
    assert mask_token("04C0FFEE01") == "04C0******"


@pytest.fixture
def console_dir() -> Iterator[Path]:
    """A short directory in /tmp that uid 65534 can reach (sun_path is 108 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="tok-", dir="/tmp"))
    d.chmod(0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def charging(console_dir: Path) -> AsyncIterator[Running]:
    """A controller (no broker) with a session of LOCAL_TOKEN on EVSE 1; its console socket mode 0666."""
    sock = console_dir / "console.sock"
    config = write_config(console_dir, free_port(), charger_id="CP-TOKENS", evses=evses(1, 2))
    config = replace(config, console=replace(config.console, socket=sock))
    running = await start_controller(config)
    try:
        await asyncio.wait_for(running.controller.console.serving.wait(), TIMEOUT_S)
        sock.chmod(0o666)
        for op, args in (("set_local_auth_list", LOCAL_LIST), ("sim_plug", {"evse_id": 1, "cp": "B"}),
                         ("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 1})):
            reply = await call(sock, op, args)
            assert reply["ok"] is True, reply
        yield running
    finally:
        await running.stop()


async def call(sock: Path, op: str, args: dict[str, object] | None = None) -> dict[str, object]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(json.dumps({"id": "t", "op": op, "args": args or {}}).encode() + b"\n")
        reply = json.loads(await asyncio.wait_for(reader.readline(), TIMEOUT_S))
        assert isinstance(reply, dict)
        return reply
    finally:
        writer.close()
        await writer.wait_closed()


def session_token(status: object) -> object:
    assert isinstance(status, dict)
    [doc] = [d for d in status["evses"] if d["evse_id"] == 1]
    return doc["session"]["id_token"]


async def test_root_sees_whole_tokens_only_when_it_asks(charging: Running) -> None:
    sock = charging.controller.console.path
    assert session_token((await call(sock, "status"))["result"]) == mask_token(LOCAL_TOKEN)
    assert session_token((await call(sock, "status", {"show_tokens": True}))["result"]) == LOCAL_TOKEN
    assert session_token((await call(sock, "status", {"show_tokens": False}))["result"]) == mask_token(LOCAL_TOKEN)
    reply = await call(sock, "status", {"show_tokens": "yes"})
    assert reply["ok"] is False
    assert reply["error"] == {"code": "invalid_args", "message": "show_tokens: must be true or false, got 'yes'"}


async def test_api_replies_on_the_console_are_masked_too(charging: Running) -> None:
    """The backend gets whole tokens from list_reservations; the console does not, unless root asks."""
    sock = charging.controller.console.path
    reserved = await call(sock, "reserve_now", {"reservation_id": 9, "id_token": "RESERVE123", "evse_id": 2,
                                                "expiry_time": "2099-01-01T00:00:00Z"})
    assert reserved["ok"] is True, reserved
    [entry] = (await call(sock, "list_reservations"))["result"]  # type: ignore[misc]
    assert entry["id_token"] == "RESE******"
    [entry] = (await call(sock, "list_reservations", {"show_tokens": True}))["result"]  # type: ignore[misc]
    assert entry["id_token"] == "RESERVE123"


async def run_as_nobody(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.fail("setpriv is missing (package util-linux): apt-get install util-linux")
    if os.geteuid() != 0:
        pytest.fail("this test runs a process as uid 65534 and so must run as root (as CI does)")
    process = await asyncio.create_subprocess_exec(
        setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *argv, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def console_env(d: Path) -> dict[str, str]:
    """PYTHONPATH with a `charger_console` link to tools/console (what the console script imports)."""
    shim = d / "pkg"
    shim.mkdir(exist_ok=True)
    if not (shim / "charger_console").exists():
        (shim / "charger_console").symlink_to(REPO / "tools" / "console")
    return {"PYTHONPATH": os.pathsep.join([str(shim), str(REPO)])}


async def console_cli(d: Path, sock: Path, *args: str, nobody: bool) -> tuple[int, str, str]:
    argv = [sys.executable, "-m", "charger_console.cli", "--socket", str(sock), "--json", *args]
    if nobody:
        return await run_as_nobody(argv, console_env(d))
    process = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **console_env(d)},
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_charger_console_show_tokens_as_root(charging: Running, console_dir: Path) -> None:
    sock = charging.controller.console.path
    code, out, _ = await console_cli(console_dir, sock, "--show-tokens", "status", nobody=False)
    assert code == 0
    assert session_token(json.loads(out)) == LOCAL_TOKEN
    code, out, _ = await console_cli(console_dir, sock, "status", nobody=False)
    assert code == 0
    assert session_token(json.loads(out)) == mask_token(LOCAL_TOKEN)
    assert LOCAL_TOKEN not in out


async def test_charger_console_show_tokens_is_refused_to_others(charging: Running, console_dir: Path) -> None:
    sock = charging.controller.console.path
    code, out, _ = await console_cli(console_dir, sock, "status", nobody=True)
    assert code == 0  # the socket is open to uid 65534: what follows is refused for the tokens alone
    assert session_token(json.loads(out)) == mask_token(LOCAL_TOKEN)
    code, out, err = await console_cli(console_dir, sock, "--show-tokens", "status", nobody=True)
    assert code == 4
    assert LOCAL_TOKEN not in out + err
    error = json.loads(out)["error"]
    assert error["code"] == "permission_denied"
    assert error["message"] == (f"show_tokens: whole tokens are shown only to root, not to uid {NOBODY} "
                                "(run it with sudo)")
    assert "whole tokens are shown only to root" in err
