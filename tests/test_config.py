"""Tests of firmware/config/: defaults, the API.md §9 example, deploy/charger.example.toml, a table
of bad configs (each error names the file, the dotted key and the problem), `check_config_main`, and
hypothesis fuzzing (load_config raises only ConfigError, whatever the document)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from datetime import timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.config import (
    Codec,
    Config,
    EvseSettings,
    MeterModel,
    MeterSettings,
    MeterUrl,
    MqttSettings,
    check_config_main,
    load_config,
)
from firmware.core.auth import AuthSettings, OfflinePolicy
from firmware.core.errors import ConfigError
from firmware.core.evse import EvseConfig
from tests.support.program import EXAMPLE_CONFIG as EXAMPLE
from tests.support.toml import to_toml


def test_writer_round_trips() -> None:
    import tomllib

    doc = {"a": 1, "b": {"c": [1, "x\n\x7f"], "d": {"e": 1.5}}, "evse": [{"id": 1, "meter": {"m": True}}, {"id": 2}]}
    assert tomllib.loads(to_toml(doc)) == doc


# --- fixtures -------------------------------------------------------------------------------------

API_MD_EXAMPLE = """\
[charger]
id = "CP-0001"
state_dir = "/var/lib/charger-firmware"   # durable state

[mqtt]
host = "127.0.0.1"
port = 1883
prefix = "chargers"
codec = "cbor"          # or "json"

[telemetry]
meter_interval_s = 10   # meter samples on R/evse/{id}/meter

[[evse]]
id = 1                   # any positive integer, unique; need not be contiguous
connectors = ["sType2"]  # connector types of this EVSE
max_current_a = 32
phases = 3
"""

API_MD_METER = """
[evse.meter]
model = "SDM630"                 # SDM630, SDM120, SDM72D-M, ABB-B23, EM340 ... (see METERS.md)
url = "tcp://127.0.0.1:5020"     # or "rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1"
device_id = 1
poll_interval_s = 1.0
"""

METER = {"model": "SDM630", "url": "tcp://127.0.0.1:5020"}
RTU = "rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1"
BASE: dict[str, Any] = {
    "charger": {"id": "CP-0001", "state_dir": "/var/lib/charger-firmware"},
    "mqtt": {"host": "127.0.0.1", "port": 1883},
    "evse": [{"id": 1, "connectors": ["sType2"], "max_current_a": 32, "phases": 3}],
}
DELETE = object()


def write(tmp_path: Path, text: str, name: str = "charger.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _substitute(value: object, tmp: str) -> object:
    if isinstance(value, str):
        return value.replace("{tmp}", tmp)
    if isinstance(value, dict):
        return {k: _substitute(v, tmp) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, tmp) for v in value]
    return value


def patched(patches: dict[str, object], tmp: Path) -> dict[str, Any]:
    """BASE with `{"evse[0].meter.url": value, "mqtt.tls.ca_file": DELETE, ...}` applied; "{tmp}" in a
    string value is replaced by the test's tmp_path."""
    doc = copy.deepcopy(BASE)
    for dotted, value in patches.items():
        parts = dotted.split(".")
        node: Any = doc
        for part in parts[:-1]:
            name, _, index = part.partition("[")
            node = node.setdefault(name, {})
            if index:
                node = node[int(index.rstrip("]"))]
        value = _substitute(value, str(tmp))
        if value is DELETE:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = copy.deepcopy(value)
    return doc


def load_doc(tmp_path: Path, doc: dict[str, Any]) -> Config:
    return load_config(write(tmp_path, to_toml(doc)))


# --- good configs ---------------------------------------------------------------------------------


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config == Config()
    assert config.charger.id == "CP-0001"
    assert config.charger.state_dir == Path("/var/lib/charger-firmware")
    m = config.mqtt
    assert (m.host, m.port, m.prefix, m.codec) == ("127.0.0.1", 1883, "chargers", Codec.CBOR)
    assert (m.username, m.password, m.tls, m.keepalive_s) == (None, None, None, 30)
    assert (m.fallback_after_s, m.fallback_current_a, m.max_payload_bytes) == (60.0, 6.0, 65536)
    assert (m.reconnect_min_s, m.reconnect_max_s) == (0.5, 30.0)
    assert config.telemetry.meter_interval_s == 10.0
    assert config.auth.timeout_s == 5.0
    assert config.auth.offline_policy is OfflinePolicy.LOCAL_LIST_ONLY
    assert config.auth.connection_timeout_s == 60.0
    assert config.reservations.enabled is True
    assert config.sessions.resume_after_power_loss is False
    assert (config.pilot.sample_interval_s, config.pilot.debounce_s) == (0.01, 0.03)
    (evse,) = config.evses
    assert (evse.id, evse.connectors, evse.max_current_a, evse.phases) == (1, ("sType2",), 32.0, 3)
    assert (evse.socket_outlet, evse.cable_max_current_a, evse.ventilation_available) == (True, None, False)
    assert (evse.phase_switching, evse.meter_stale_after_s, evse.meter) == (False, 5.0, None)


def test_api_md_minimal_example(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, API_MD_EXAMPLE))
    assert config.charger.id == "CP-0001"
    assert config.charger.state_dir == Path("/var/lib/charger-firmware")
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.prefix) == ("127.0.0.1", 1883, "chargers")
    assert config.mqtt.codec == "cbor"
    assert config.telemetry.meter_interval_s == 10.0
    assert isinstance(config.telemetry.meter_interval_s, float)
    (evse,) = config.evses
    assert evse == EvseSettings(id=1, connectors=("sType2",), max_current_a=32.0, phases=3)
    assert isinstance(evse.max_current_a, float)
    # What the file leaves out has the defaults.
    assert config.auth == Config().auth
    assert config.pilot == Config().pilot


def test_api_md_meter_example(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, API_MD_EXAMPLE + API_MD_METER))
    meter = config.evses[0].meter
    assert meter == MeterSettings(
        model=MeterModel.SDM630, url=MeterUrl(scheme="tcp", host="127.0.0.1", port=5020), device_id=1
    )
    assert meter.poll_interval_s == 1.0
    assert meter.timeout_s == 1.0


def test_deploy_example_loads() -> None:
    config = load_config(EXAMPLE)
    assert [e.id for e in config.evses] == [1, 2]
    first, second = config.evses
    assert first.meter is not None
    assert first.meter.model is MeterModel.SDM630
    assert first.meter.url == MeterUrl(scheme="rtu", device="/dev/ttyUSB0", baud=9600, parity="N", stopbits=1)
    assert second.meter is None
    assert (second.socket_outlet, second.cable_max_current_a, second.phases) == (False, 16.0, 1)


def test_deploy_example_mentions_every_key() -> None:
    """The example is complete: every key of every section appears (set or commented out)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    for cls in (MqttSettings, EvseSettings, MeterSettings):
        for f in dataclasses.fields(cls):
            assert f"{f.name} =" in text or f.name in ("tls", "meter", "pins", "adc", "pwm", "rfid"), f.name
    for section in ("[charger]", "[mqtt]", "[mqtt.tls]", "[telemetry]", "[auth]", "[reservations]",
                    "[sessions]", "[pilot]", "[[evse]]", "[evse.meter]", "ca_file", "cert_file", "key_file",
                    "insecure", "offline_policy", "resume_after_power_loss", "sample_interval_s", "debounce_s"):
        assert section in text, section


def test_everything_set(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x")
    doc = patched({
        "mqtt.host": "::1",
        "mqtt.codec": "json",
        "mqtt.username": "u",
        "mqtt.password": "hunter2",
        "mqtt.keepalive_s": 3600,
        "mqtt.fallback_current_a": 6,
        "mqtt.max_payload_bytes": 1024,
        "mqtt.reconnect_min_s": 1,
        "mqtt.reconnect_max_s": 1,
        "mqtt.tls": {"ca_file": "ca.pem", "cert_file": "{tmp}/client.pem", "key_file": "client.key", "insecure": True},
        "charger.state_dir": "state",  # relative: to the config file's directory
        "auth": {"timeout_s": 0.5, "offline_policy": "accept_all", "connection_timeout_s": 120},
        "reservations": {"enabled": False},
        "sessions": {"resume_after_power_loss": True},
        "pilot": {"sample_interval_s": 0.05, "debounce_s": 0},
        "evse[0].meter": {"model": "EM24", "url": "tcp://[fe80::1]:502", "device_id": 247, "poll_interval_s": 2,
                          "timeout_s": 0.25},
        "evse[0].meter_stale_after_s": 2.5,
        "evse[0].phase_switching": True,
    }, tmp_path)
    doc["evse"].append({"id": 7, "socket_outlet": False, "cable_max_current_a": 20, "phases": 1,
                        "ventilation_available": True})
    config = load_doc(tmp_path, doc)
    tls = config.mqtt.tls
    assert tls is not None
    assert (tls.ca_file, tls.cert_file, tls.key_file, tls.insecure) == (
        tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key", True)
    assert config.charger.state_dir == tmp_path / "state"
    assert config.mqtt.codec is Codec.JSON
    assert config.mqtt.password == "hunter2"
    assert "hunter2" not in repr(config)
    assert config.auth.offline_policy is OfflinePolicy.ACCEPT_ALL
    assert config.evses[0].meter is not None
    assert config.evses[0].meter.url.host == "fe80::1"
    assert str(config.evses[0].meter.url) == "tcp://[fe80::1]:502"
    assert config.evses[1].id == 7
    assert config.evses[1].connectors == ("Unknown",)
    assert check_config_main(write(tmp_path, to_toml(doc), "again.toml")) == 0


def test_core_config_and_auth_settings(tmp_path: Path) -> None:
    config = load_config(EXAMPLE)
    second = config.evses[1]
    assert second.core_config(42.0) == EvseConfig(
        cid=2, connectors=("cType2",), max_current_a=16.0, phases=1, socket_outlet=False, cable_max_current_a=16.0,
        ventilation_available=False, connection_timeout_s=42.0,
    )
    assert config.evse_configs() == tuple(e.core_config(60.0) for e in config.evses)
    doc = patched({"auth": {"timeout_s": 2, "offline_policy": "accept_all", "connection_timeout_s": 30}}, tmp_path)
    assert load_doc(tmp_path, doc).auth_settings() == AuthSettings(
        timeout_s=2.0, offline_policy=OfflinePolicy.ACCEPT_ALL, connection_timeout_s=30.0
    )
    assert Config().auth_settings() == AuthSettings()


def test_settings_are_frozen_and_validate_in_code() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mqtt.port = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="max_current_a: must be between 6 and 80, got 100"):
        EvseSettings(id=1, max_current_a=100)
    with pytest.raises(ValueError, match="port"):
        MqttSettings(port=0)
    with pytest.raises(ValueError, match="duplicate EVSE id 1"):
        Config(evses=(EvseSettings(id=1), EvseSettings(id=1)))
    with pytest.raises(ValueError, match="at least one"):
        Config(evses=())


@pytest.mark.parametrize(("text", "expected"), [
    ("tcp://meter.local:502", MeterUrl(scheme="tcp", host="meter.local", port=502)),
    ("TCP://10.0.0.2:1", MeterUrl(scheme="tcp", host="10.0.0.2", port=1)),
    ("tcp://[::1]:65535", MeterUrl(scheme="tcp", host="::1", port=65535)),
    ("rtu:///dev/ttyAMA0?parity=e&stopbits=2&baud=115200",
     MeterUrl(scheme="rtu", device="/dev/ttyAMA0", baud=115200, parity="E", stopbits=2)),
    ("rtu:///dev/serial/by-id/usb-FTDI%20x?baud=1200&parity=O&stopbits=1",
     MeterUrl(scheme="rtu", device="/dev/serial/by-id/usb-FTDI x", baud=1200, parity="O", stopbits=1)),
])
def test_meter_url_parse(text: str, expected: MeterUrl) -> None:
    url = MeterUrl.parse(text)
    assert url == expected
    assert MeterUrl.parse(str(url)) == url


# --- bad configs ----------------------------------------------------------------------------------

BAD: list[tuple[str, dict[str, object], str, str]] = [
    # unknown sections and keys
    ("unknown-section", {"bogus": {"x": 1}}, "bogus", "unknown section"),
    ("unknown-top-level-key", {"debug": True}, "debug", "unknown section"),
    ("section-typo", {"telemetri": {"meter_interval_s": 1}}, "telemetri", "did you mean 'telemetry'"),
    ("unknown-charger-key", {"charger.name": "x"}, "charger.name", "unknown key"),
    ("mqtt-key-typo", {"mqtt.hots": "x"}, "mqtt.hots", "did you mean 'host'"),
    ("evse-key-typo", {"evse[0].max_curent_a": 16}, "evse[0].max_curent_a", "did you mean 'max_current_a'"),
    ("unknown-meter-key", {"evse[0].meter": {**METER, "baudrate": 9600}}, "evse[0].meter.baudrate", "unknown key"),
    ("unknown-tls-key", {"mqtt.tls": {"cafile": "x"}}, "mqtt.tls.cafile", "did you mean 'ca_file'"),
    ("unknown-telemetry-key", {"telemetry.interval_s": 1}, "telemetry.interval_s", "unknown key"),
    ("unknown-auth-key", {"auth.policy": "accept_all"}, "auth.policy", "unknown key"),
    ("unknown-reservations-key", {"reservations.enable": True}, "reservations.enable", "did you mean 'enabled'"),
    ("unknown-sessions-key", {"sessions.resume": True}, "sessions.resume", "unknown key"),
    ("unknown-pilot-key", {"pilot.debounce": 0.01}, "pilot.debounce", "did you mean 'debounce_s'"),
    ("quoted-unknown-key", {"mqtt.a b": 1}, 'mqtt."a b"', "unknown key"),
    # required keys and structure
    ("no-charger-id", {"charger.id": DELETE}, "charger.id", "required key is missing"),
    ("no-charger-section", {"charger": DELETE}, "charger.id", "required key is missing"),
    ("no-evse-id", {"evse[0].id": DELETE}, "evse[0].id", "required key is missing"),
    ("no-evse", {"evse": DELETE}, "evse", "at least one [[evse]]"),
    ("empty-evse-array", {"evse": []}, "evse", "at least one [[evse]]"),
    ("evse-single-table", {"evse": {"id": 1}}, "evse", "write [[evse]], not [evse]"),
    ("evse-not-tables", {"evse": [1]}, "evse[0]", "must be a table ([[evse]]), got integer 1"),
    ("evse-scalar", {"evse": 1}, "evse", "must be an array of tables"),
    ("section-not-table", {"mqtt": 5}, "mqtt", "must be a table, got integer 5"),
    ("pilot-not-table", {"pilot": [1]}, "pilot", "must be a table, got array"),
    ("meter-not-table", {"evse[0].meter": "SDM630"}, "evse[0].meter", "must be a table, got string"),
    ("meter-no-model", {"evse[0].meter": {"url": "tcp://h:1"}}, "evse[0].meter.model", "required key is missing"),
    ("meter-no-url", {"evse[0].meter": {"model": "SDM630"}}, "evse[0].meter.url", "required key is missing"),
    ("duplicate-evse-ids", {"evse": [{"id": 1}, {"id": 2}, {"id": 1}]}, "evse[2].id",
     "duplicate EVSE id 1 (also evse[0])"),
    # [charger]
    ("id-with-space", {"charger.id": "CP 1"}, "charger.id", "1..64 characters"),
    ("id-with-slash", {"charger.id": "a/b"}, "charger.id", "MQTT topic level"),
    ("id-with-plus", {"charger.id": "a+b"}, "charger.id", "1..64 characters"),
    ("id-with-hash", {"charger.id": "a#"}, "charger.id", "1..64 characters"),
    ("id-non-ascii", {"charger.id": "Säule"}, "charger.id", "1..64 characters"),
    ("id-too-long", {"charger.id": "x" * 65}, "charger.id", "1..64 characters"),
    ("id-empty", {"charger.id": ""}, "charger.id", "1..64 characters"),
    ("id-int", {"charger.id": 1}, "charger.id", "must be a string, got integer 1"),
    ("state-dir-empty", {"charger.state_dir": ""}, "charger.state_dir", "non-empty path"),
    ("state-dir-int", {"charger.state_dir": 5}, "charger.state_dir", "must be a string"),
    # [mqtt]
    ("port-zero", {"mqtt.port": 0}, "mqtt.port", "must be between 1 and 65535, got 0"),
    ("port-too-big", {"mqtt.port": 65536}, "mqtt.port", "must be between 1 and 65535, got 65536"),
    ("port-string", {"mqtt.port": "1883"}, "mqtt.port", "must be an integer, got string '1883'"),
    ("port-bool", {"mqtt.port": True}, "mqtt.port", "must be an integer, got boolean true"),
    ("port-float", {"mqtt.port": 1883.0}, "mqtt.port", "must be an integer, got float 1883.0"),
    ("host-int", {"mqtt.host": 127}, "mqtt.host", "must be a string, got integer 127"),
    ("host-empty", {"mqtt.host": ""}, "mqtt.host", "must not be empty"),
    ("host-space", {"mqtt.host": "my broker"}, "mqtt.host", "must not contain spaces"),
    ("prefix-hash", {"mqtt.prefix": "chargers/#"}, "mqtt.prefix", "wildcards"),
    ("prefix-plus", {"mqtt.prefix": "a/+/b"}, "mqtt.prefix", "wildcards"),
    ("prefix-leading-slash", {"mqtt.prefix": "/chargers"}, "mqtt.prefix", "must not start or end with '/'"),
    ("prefix-trailing-slash", {"mqtt.prefix": "chargers/"}, "mqtt.prefix", "must not start or end with '/'"),
    ("prefix-empty", {"mqtt.prefix": ""}, "mqtt.prefix", "must not be empty"),
    ("codec-unknown", {"mqtt.codec": "xml"}, "mqtt.codec", "must be one of 'cbor', 'json', got 'xml'"),
    ("codec-int", {"mqtt.codec": 1}, "mqtt.codec", "must be a string"),
    ("username-empty", {"mqtt.username": ""}, "mqtt.username", "must not be empty"),
    ("username-int", {"mqtt.username": 7}, "mqtt.username", "must be a string, got integer 7"),
    ("password-without-username", {"mqtt.password": "x"}, "mqtt.password", "without username"),
    ("keepalive-low", {"mqtt.keepalive_s": 4}, "mqtt.keepalive_s", "between 5 and 3600, got 4"),
    ("keepalive-high", {"mqtt.keepalive_s": 3601}, "mqtt.keepalive_s", "between 5 and 3600"),
    ("keepalive-float", {"mqtt.keepalive_s": 30.5}, "mqtt.keepalive_s", "must be an integer"),
    ("fallback-after-zero", {"mqtt.fallback_after_s": 0}, "mqtt.fallback_after_s", "must be > 0, got 0"),
    ("fallback-after-inf", {"mqtt.fallback_after_s": math.inf}, "mqtt.fallback_after_s", "finite"),
    ("fallback-after-nan", {"mqtt.fallback_after_s": math.nan}, "mqtt.fallback_after_s", "finite"),
    ("fallback-current-3", {"mqtt.fallback_current_a": 3}, "mqtt.fallback_current_a",
     "must be 0 or between 6 and 80, got 3"),
    ("fallback-current-81", {"mqtt.fallback_current_a": 81}, "mqtt.fallback_current_a", "between 6 and 80"),
    ("fallback-current-negative", {"mqtt.fallback_current_a": -1}, "mqtt.fallback_current_a", "must be 0 or"),
    ("payload-small", {"mqtt.max_payload_bytes": 1023}, "mqtt.max_payload_bytes", "between 1024 and 1048576"),
    ("payload-big", {"mqtt.max_payload_bytes": 1048577}, "mqtt.max_payload_bytes", "got 1048577"),
    ("reconnect-min-zero", {"mqtt.reconnect_min_s": 0}, "mqtt.reconnect_min_s", "must be > 0"),
    ("reconnect-max-below-min", {"mqtt.reconnect_min_s": 2, "mqtt.reconnect_max_s": 1}, "mqtt.reconnect_max_s",
     "must be >= reconnect_min_s (2), got 1"),
    ("reconnect-string", {"mqtt.reconnect_max_s": "30"}, "mqtt.reconnect_max_s", "must be a number, got string"),
    # [mqtt.tls]
    ("tls-not-table", {"mqtt.tls": "on"}, "mqtt.tls", "must be a table, got string 'on'"),
    ("tls-cert-without-key", {"mqtt.tls": {"cert_file": "{tmp}/charger.toml"}}, "mqtt.tls.cert_file",
     "needs key_file"),
    ("tls-key-without-cert", {"mqtt.tls": {"key_file": "{tmp}/charger.toml"}}, "mqtt.tls.key_file",
     "needs cert_file"),
    ("tls-ca-missing", {"mqtt.tls": {"ca_file": "{tmp}/nope/ca.pem"}}, "mqtt.tls.ca_file",
     "file not found: '{tmp}/nope/ca.pem'"),
    ("tls-ca-missing-relative", {"mqtt.tls": {"ca_file": "ca.pem"}}, "mqtt.tls.ca_file",
     "file not found: '{tmp}/ca.pem'"),
    ("tls-key-missing", {"mqtt.tls": {"cert_file": "{tmp}/charger.toml", "key_file": "{tmp}/k.pem"}},
     "mqtt.tls.key_file", "file not found: '{tmp}/k.pem'"),
    ("tls-ca-directory", {"mqtt.tls": {"ca_file": "{tmp}"}}, "mqtt.tls.ca_file", "is a directory"),
    ("tls-ca-int", {"mqtt.tls": {"ca_file": 1}}, "mqtt.tls.ca_file", "must be a string"),
    ("tls-insecure-string", {"mqtt.tls": {"insecure": "yes"}}, "mqtt.tls.insecure",
     "must be true or false, got string 'yes'"),
    # [telemetry], [auth], [reservations], [sessions], [pilot]
    ("meter-interval-zero", {"telemetry": {"meter_interval_s": 0}}, "telemetry.meter_interval_s", "must be > 0"),
    ("meter-interval-string", {"telemetry": {"meter_interval_s": "10"}}, "telemetry.meter_interval_s",
     "must be a number, got string '10'"),
    ("meter-interval-bool", {"telemetry": {"meter_interval_s": True}}, "telemetry.meter_interval_s",
     "must be a number, got boolean true"),
    ("auth-timeout-negative", {"auth": {"timeout_s": -1}}, "auth.timeout_s", "must be > 0, got -1"),
    ("auth-policy-unknown", {"auth": {"offline_policy": "deny"}}, "auth.offline_policy",
     "must be one of 'local_list_only', 'accept_all', got 'deny'"),
    ("auth-connection-timeout-bool", {"auth": {"connection_timeout_s": False}}, "auth.connection_timeout_s",
     "got boolean false"),
    ("reservations-enabled-int", {"reservations": {"enabled": 1}}, "reservations.enabled",
     "must be true or false, got integer 1"),
    ("sessions-resume-string", {"sessions": {"resume_after_power_loss": "false"}},
     "sessions.resume_after_power_loss", "must be true or false"),
    ("pilot-sample-slow", {"pilot": {"sample_interval_s": 0.1}}, "pilot.sample_interval_s",
     "must be between 0.001 and 0.05, got 0.1"),
    ("pilot-sample-fast", {"pilot": {"sample_interval_s": 0.0005}}, "pilot.sample_interval_s", "got 0.0005"),
    ("pilot-debounce-high", {"pilot": {"debounce_s": 0.06}}, "pilot.debounce_s", "between 0 and 0.05"),
    ("pilot-debounce-negative", {"pilot": {"debounce_s": -0.01}}, "pilot.debounce_s", "got -0.01"),
    ("pilot-idle-faster-than-fast", {"pilot": {"sample_interval_s": 0.02, "idle_sample_interval_s": 0.01}},
     "pilot.idle_sample_interval_s", "must be >= sample_interval_s (0.02), got 0.01"),
    ("pilot-idle-too-slow", {"pilot": {"idle_sample_interval_s": 2}}, "pilot.idle_sample_interval_s",
     "between 0.001 and 1, got 2"),
    # [[evse]]
    ("evse-id-zero", {"evse[0].id": 0}, "evse[0].id", "must be a positive integer, got 0"),
    ("evse-id-negative", {"evse[0].id": -3}, "evse[0].id", "must be a positive integer"),
    ("evse-id-bool", {"evse[0].id": True}, "evse[0].id", "must be an integer, got boolean true"),
    ("evse-id-string", {"evse[0].id": "1"}, "evse[0].id", "must be an integer, got string '1'"),
    ("evse-id-float", {"evse[0].id": 1.0}, "evse[0].id", "must be an integer, got float 1.0"),
    ("connectors-empty", {"evse[0].connectors": []}, "evse[0].connectors", "at least one connector"),
    ("connectors-string", {"evse[0].connectors": "sType2"}, "evse[0].connectors", "must be an array of strings"),
    ("connectors-int-item", {"evse[0].connectors": ["sType2", 2]}, "evse[0].connectors[1]",
     "must be a string, got integer 2"),
    ("connectors-empty-item", {"evse[0].connectors": ["sType2", ""]}, "evse[0].connectors[1]", "must not be empty"),
    ("max-current-high", {"evse[0].max_current_a": 100}, "evse[0].max_current_a",
     "must be between 6 and 80, got 100"),
    ("max-current-low", {"evse[0].max_current_a": 5.9}, "evse[0].max_current_a", "got 5.9"),
    ("max-current-string", {"evse[0].max_current_a": "32"}, "evse[0].max_current_a", "must be a number"),
    ("max-current-bool", {"evse[0].max_current_a": True}, "evse[0].max_current_a", "got boolean true"),
    ("phases-two", {"evse[0].phases": 2}, "evse[0].phases", "must be 1 or 3, got 2"),
    ("phases-float", {"evse[0].phases": 3.0}, "evse[0].phases", "must be an integer"),
    ("socket-outlet-string", {"evse[0].socket_outlet": "yes"}, "evse[0].socket_outlet", "must be true or false"),
    ("cable-with-socket", {"evse[0].cable_max_current_a": 16}, "evse[0].cable_max_current_a",
     "only allowed with socket_outlet = false"),
    ("cable-out-of-range", {"evse[0].socket_outlet": False, "evse[0].cable_max_current_a": 100},
     "evse[0].cable_max_current_a", "between 6 and 80, got 100"),
    ("ventilation-int", {"evse[0].ventilation_available": 0}, "evse[0].ventilation_available", "got integer 0"),
    ("phase-switching-single-phase", {"evse[0].phases": 1, "evse[0].phase_switching": True},
     "evse[0].phase_switching", "needs phases = 3"),
    ("stale-zero", {"evse[0].meter_stale_after_s": 0}, "evse[0].meter_stale_after_s", "must be > 0"),
    ("stale-below-poll", {"evse[0].meter": METER, "evse[0].meter_stale_after_s": 0.5},
     "evse[0].meter_stale_after_s", "greater than meter.poll_interval_s (1), got 0.5"),
    ("second-evse-range", {"evse": [{"id": 1}, {"id": 2, "max_current_a": 81}]}, "evse[1].max_current_a",
     "got 81"),
    # [evse.meter]
    ("meter-model-unknown", {"evse[0].meter": {**METER, "model": "SDM999"}}, "evse[0].meter.model",
     "must be one of 'SDM630'"),
    ("meter-model-int", {"evse[0].meter": {**METER, "model": 630}}, "evse[0].meter.model", "must be a string"),
    ("meter-device-id-zero", {"evse[0].meter": {**METER, "device_id": 0}}, "evse[0].meter.device_id",
     "between 1 and 247, got 0"),
    ("meter-device-id-248", {"evse[0].meter": {**METER, "device_id": 248}}, "evse[0].meter.device_id", "got 248"),
    ("meter-device-id-string", {"evse[0].meter": {**METER, "device_id": "1"}}, "evse[0].meter.device_id",
     "must be an integer, got string '1'"),
    ("meter-poll-zero", {"evse[0].meter": {**METER, "poll_interval_s": 0}}, "evse[0].meter.poll_interval_s",
     "must be > 0"),
    ("meter-timeout-negative", {"evse[0].meter": {**METER, "timeout_s": -1}}, "evse[0].meter.timeout_s",
     "must be > 0"),
    ("url-int", {"evse[0].meter": {**METER, "url": 502}}, "evse[0].meter.url", "must be a string, got integer"),
    ("url-no-scheme", {"evse[0].meter": {**METER, "url": "127.0.0.1:502"}}, "evse[0].meter.url",
     "must be tcp://HOST:PORT or rtu://"),
    ("url-http", {"evse[0].meter": {**METER, "url": "http://h:80"}}, "evse[0].meter.url", "unknown scheme 'http'"),
    ("url-tcp-no-port", {"evse[0].meter": {**METER, "url": "tcp://127.0.0.1"}}, "evse[0].meter.url",
     "needs a port"),
    ("url-tcp-empty-port", {"evse[0].meter": {**METER, "url": "tcp://h:"}}, "evse[0].meter.url", "needs a port"),
    ("url-tcp-no-host", {"evse[0].meter": {**METER, "url": "tcp://:502"}}, "evse[0].meter.url", "needs a host"),
    ("url-tcp-port-zero", {"evse[0].meter": {**METER, "url": "tcp://h:0"}}, "evse[0].meter.url",
     "port must be between 1 and 65535, got '0'"),
    ("url-tcp-port-big", {"evse[0].meter": {**METER, "url": "tcp://h:65536"}}, "evse[0].meter.url",
     "port must be between 1 and 65535"),
    ("url-tcp-port-name", {"evse[0].meter": {**METER, "url": "tcp://h:modbus"}}, "evse[0].meter.url",
     "port must be between 1 and 65535"),
    ("url-tcp-path", {"evse[0].meter": {**METER, "url": "tcp://h:502/x"}}, "evse[0].meter.url",
     "exactly tcp://HOST:PORT"),
    ("url-tcp-user", {"evse[0].meter": {**METER, "url": "tcp://u@h:502"}}, "evse[0].meter.url",
     "exactly tcp://HOST:PORT"),
    ("url-tcp-bare-ipv6", {"evse[0].meter": {**METER, "url": "tcp://::1:502"}}, "evse[0].meter.url",
     "must be in brackets"),
    ("url-tcp-bad-ipv6", {"evse[0].meter": {**METER, "url": "tcp://[zz]:502"}}, "evse[0].meter.url",
     "not an IPv6 address"),
    ("url-tcp-bad-host", {"evse[0].meter": {**METER, "url": "tcp://h%20x:502"}}, "evse[0].meter.url",
     "not a host name"),
    ("url-space", {"evse[0].meter": {**METER, "url": "tcp://h :502"}}, "evse[0].meter.url", "spaces"),
    ("url-rtu-host", {"evse[0].meter": {**METER, "url": "rtu://dev/ttyUSB0?baud=9600&parity=N&stopbits=1"}},
     "evse[0].meter.url", "empty host and an absolute device path"),
    ("url-rtu-no-device", {"evse[0].meter": {**METER, "url": "rtu:///?baud=9600&parity=N&stopbits=1"}},
     "evse[0].meter.url", "needs a device path"),
    ("url-rtu-no-params", {"evse[0].meter": {**METER, "url": "rtu:///dev/ttyUSB0"}}, "evse[0].meter.url",
     "missing baud, parity, stopbits"),
    ("url-rtu-no-parity", {"evse[0].meter": {**METER, "url": "rtu:///dev/ttyUSB0?baud=9600&stopbits=1"}},
     "evse[0].meter.url", "missing parity"),
    ("url-rtu-bad-baud", {"evse[0].meter": {**METER, "url": "rtu:///dev/ttyUSB0?baud=9601&parity=N&stopbits=1"}},
     "evse[0].meter.url", "baud must be one of 1200, 2400"),
    ("url-rtu-baud-600", {"evse[0].meter": {**METER, "url": "rtu:///dev/ttyUSB0?baud=600&parity=N&stopbits=1"}},
     "evse[0].meter.url", "got '600'"),
    ("url-rtu-bad-parity", {"evse[0].meter": {**METER, "url": "rtu:///dev/ttyUSB0?baud=9600&parity=X&stopbits=1"}},
     "evse[0].meter.url", "parity must be N, E or O, got 'X'"),
    ("url-rtu-bad-stopbits", {"evse[0].meter": {**METER, "url": RTU.replace("stopbits=1", "stopbits=3")}},
     "evse[0].meter.url", "stopbits must be 1 or 2, got '3'"),
    ("url-rtu-unknown-param", {"evse[0].meter": {**METER, "url": RTU + "&bytesize=8"}}, "evse[0].meter.url",
     "unknown parameter 'bytesize'"),
    ("url-rtu-duplicate-param", {"evse[0].meter": {**METER, "url": RTU + "&baud=19200"}}, "evse[0].meter.url",
     "'baud' is given twice"),
    ("url-rtu-param-without-value", {"evse[0].meter": {**METER, "url": RTU + "&parity"}}, "evse[0].meter.url",
     "needs a value"),
    ("url-second-evse", {"evse": [{"id": 1}, {"id": 2, "meter": {**METER, "url": "tcp://h:99999"}}]},
     "evse[1].meter.url", "port must be between 1 and 65535"),
]


@pytest.mark.parametrize(("patches", "key", "fragment"), [row[1:] for row in BAD], ids=[row[0] for row in BAD])
def test_bad_config(tmp_path: Path, patches: dict[str, object], key: str, fragment: str) -> None:
    path = write(tmp_path, to_toml(patched(patches, tmp_path)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert fragment.replace("{tmp}", str(tmp_path)) in message, message


def test_bad_table_is_large_and_unique() -> None:
    assert len(BAD) >= 30
    assert len({row[0] for row in BAD}) == len(BAD)


def test_message_format_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, to_toml(patched({"evse[0].max_current_a": 100}, tmp_path)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("charger.toml")
    assert str(info.value) == "charger.toml: evse[0].max_current_a: must be between 6 and 80, got 100"


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[charger]\nid = "CP-1"\n[mqtt\nport = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: TOML syntax error: ")
    assert "line 3" in message
    assert "column" in message


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, API_MD_EXAMPLE + "max_current_a = 16\n")
    with pytest.raises(ConfigError, match=r"TOML syntax error: Cannot overwrite a value \(at line 19, column 19\)$"):
        load_config(path)


@pytest.mark.parametrize(("content", "fragment"), [
    (b"\xff\xfe[charger]", "not valid UTF-8"),
    (b"x = " + b"[" * 5000 + b"]" * 5000, "charger.toml: "),
    (b"x = 1" + b"0" * 5000, "charger.toml: "),
    (b"#" * (1 << 20) + b"\n", "larger than"),
])
def test_unparseable_bytes(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "charger.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert fragment in str(info.value)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "charger.toml"
    path.write_bytes(b"\xef\xbb\xbf" + API_MD_EXAMPLE.encode())
    assert load_config(path).charger.id == "CP-0001"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{path}: config file not found$"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: is a directory"):
        load_config(tmp_path)


def test_str_path_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, API_MD_EXAMPLE)
    assert load_config(str(path)) == load_config(path)


# --- check_config_main ----------------------------------------------------------------------------


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(EXAMPLE) == 0
    out, err = capsys.readouterr()
    assert out == f"OK: {EXAMPLE}: 2 EVSE(s), broker 127.0.0.1:1883\n"
    assert err == ""


def test_check_config_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(None) == 0
    assert capsys.readouterr().out.startswith("OK: (built-in defaults): 1 EVSE(s), broker 127.0.0.1:1883")


def test_check_config_ipv6_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, to_toml(patched({"mqtt.host": "::1", "mqtt.port": 8883}, tmp_path)))
    assert check_config_main(str(path)) == 0
    assert capsys.readouterr().out == f"OK: {path}: 1 EVSE(s), broker [::1]:8883\n"


@pytest.mark.parametrize("make", [
    lambda tmp: write(tmp, to_toml(patched({"evse[0].max_current_a": 100}, tmp))),
    lambda tmp: write(tmp, "[charger\n"),
    lambda tmp: tmp / "missing.toml",
    lambda tmp: tmp,
])
def test_check_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            make: Callable[[Path], Path]) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert check_config_main(path) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{info.value}\n"
    assert err.startswith(f"{path}: ")
    assert "Traceback" not in err


# --- fuzzing --------------------------------------------------------------------------------------

KNOWN_KEYS = sorted({
    "charger", "mqtt", "tls", "telemetry", "auth", "reservations", "sessions", "pilot", "evse", "meter",
    *(f.name for cls in (MqttSettings, EvseSettings, MeterSettings) for f in dataclasses.fields(cls)),
    "id", "state_dir", "ca_file", "cert_file", "key_file", "insecure", "meter_interval_s", "timeout_s",
    "offline_policy", "connection_timeout_s", "enabled", "resume_after_power_loss", "sample_interval_s",
    "debounce_s", "max_curent_a",
})
STRINGS = [
    "", "cbor", "json", "SDM630", "EM24", "ABB-B23", "local_list_only", "accept_all", "CP-0001", "a/b", "#",
    "chargers/", "/tmp", "charger.toml", ".", "sType2", "tcp://127.0.0.1:502", "tcp://[::1]:1", "tcp://[::1",
    "tcp://h:99999999999", RTU, "rtu:///dev/x?baud=1&parity=Q", "rtu:///%00?baud=9600&parity=N&stopbits=1",
    "rtu://", "tcp://", "://", "\x00", "é",
]
keys = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(max_size=8))
scalars = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-5, max_value=300),
    st.floats(),
    st.floats(min_value=0, max_value=100),
    st.text(max_size=12),
    st.sampled_from(STRINGS),
    st.datetimes(timezones=st.none() | st.just(timezone.utc)),
    st.dates(),
    st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3),
                      max_leaves=8)
FUZZ_BASE = patched({"evse[0].meter": {**METER, "url": RTU}, "mqtt.tls": {"insecure": True}}, Path("/"))


def _tables(node: object) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_tables(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_tables(value))
    return found


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with a few random edits: a key set to a random value, or a key removed."""
    doc = copy.deepcopy(FUZZ_BASE)
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        tables = _tables(doc)
        target = tables[draw(st.integers(min_value=0, max_value=len(tables) - 1))]
        if target and draw(st.booleans()):
            del target[draw(st.sampled_from(sorted(target)))]
        else:
            target[draw(keys)] = draw(values)
    return doc


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "charger.toml"


def _loaded(path: Path) -> Config | ConfigError:
    """load_config's config, or the ConfigError it raised (any other exception goes on: that is the bug
    the fuzzing looks for)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        return exc


def _load_only_config_error(path: Path) -> None:
    config = _loaded(path)
    if isinstance(config, ConfigError):
        assert str(config).startswith(f"{path}: ")
    else:
        assert isinstance(config, Config)
        assert config.evses
        assert len({e.id for e in config.evses}) == len(config.evses)


def test_fuzz_base_is_valid(fuzz_file: Path) -> None:
    fuzz_file.write_text(to_toml(FUZZ_BASE), encoding="utf-8")
    assert load_config(fuzz_file).mqtt.tls is not None


@given(doc=documents())
def test_fuzz_documents(fuzz_file: Path, doc: dict[str, Any]) -> None:
    fuzz_file.write_text(to_toml(doc), encoding="utf-8")
    _load_only_config_error(fuzz_file)


@given(data=st.binary(max_size=300))
def test_fuzz_bytes(fuzz_file: Path, data: bytes) -> None:
    fuzz_file.write_bytes(data)
    _load_only_config_error(fuzz_file)


@given(position=st.integers(min_value=0), cut=st.integers(min_value=0, max_value=20), insert=st.text(max_size=10))
def test_fuzz_example_edits(fuzz_file: Path, position: int, cut: int, insert: str) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    position %= len(text) + 1
    fuzz_file.write_text(text[:position] + insert + text[position + cut:], encoding="utf-8")
    _load_only_config_error(fuzz_file)
