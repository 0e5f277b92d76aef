"""The controller's configuration: one TOML file read once into frozen dataclasses (API.md §9).

`load_config(path)` reads the file named by `--config FILE` (or `--check-config FILE`) and returns a
`Config`; `load_config(None)` returns the built-in defaults, which are what `charger-firmware --sim`
runs without a file (one EVSE, a broker on 127.0.0.1:1883). The result is immutable and the file is
never read again: a change takes a restart.

Every key is optional and has the default of its dataclass field, except `charger.id`, `evse[i].id`,
`evse[i].meter.model` and `evse[i].meter.url`, and at least one `[[evse]]`. Checking is strict, so
that a typo cannot silently fall back to a default: unknown sections and keys are errors (with a
"did you mean" hint); types are exact (a string is never a number, a boolean is never a number, an
integer is accepted where a float is expected); every number has a range.

Errors are `ConfigError`, and the message names the file, the dotted key path (with the index of an
array element) and the problem, e.g. `charger.toml: evse[0].max_current_a: must be between 6 and 80,
got 100`. A TOML syntax error keeps tomllib's line and column; a missing or unreadable file names the
path.

Validation lives in two places. The loader checks what only the file can tell: unknown keys,
required keys, TOML types, duplicate EVSE ids and that the TLS files exist. Each dataclass checks its
own values in `__post_init__` (ranges, formats, keys that depend on each other) and raises
`ValueError` naming the field, so a settings object built in code is checked the same way.

I/O: this module reads the one config file and nothing else. The only other contact with the file
system is a metadata check (`os.path.isfile`, `os.access`) that the TLS files named in `[mqtt.tls]`
exist and are readable; they are not opened here. Relative paths in the file (`charger.state_dir`,
the TLS files) are taken relative to the directory of the config file, not the working directory.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, TypeVar

from firmware.config.meter_url import BAUD_RATES, MeterUrl
from firmware.core.auth import AuthSettings, OfflinePolicy
from firmware.core.errors import ConfigError
from firmware.core.evse import EvseConfig
from firmware.core.pilot import MAX_CURRENT_A, MIN_CURRENT_A

__all__ = [
    "BAUD_RATES",
    "AuthSection",
    "ChargerSettings",
    "Codec",
    "Config",
    "EvseSettings",
    "MeterModel",
    "MeterSettings",
    "MeterUrl",
    "MqttSettings",
    "PilotSettings",
    "ReservationSettings",
    "SessionSettings",
    "TelemetrySettings",
    "TlsSettings",
    "check_config_main",
    "load_config",
]

_T = TypeVar("_T")

DEFAULT_CHARGER_ID: Final = "CP-0001"
DEFAULT_STATE_DIR: Final = Path("/var/lib/charger-firmware")
#: The charger id becomes an MQTT topic level (API.md §1), so no '/', '+', '#' or spaces.
_CHARGER_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_FILE_BYTES: Final = 1 << 20  # a config file is a few kB; this guards against `--config /dev/zero`
_SECTIONS: Final = ("charger", "mqtt", "telemetry", "auth", "reservations", "sessions", "pilot")


class _InvalidField(ValueError):
    """A value that its dataclass rejects; `key` is the field (possibly with an index)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _num(value: float) -> str:
    """A number as written in the file: 100 rather than 100.0."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _between(key: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:  # also rejects NaN
        raise _InvalidField(key, f"must be between {_num(lo)} and {_num(hi)}, got {_num(value)}")


def _positive(key: str, value: float) -> None:
    if not value > 0:  # also rejects NaN
        raise _InvalidField(key, f"must be > 0, got {_num(value)}")


def _non_empty(key: str, value: str) -> None:
    if not value:
        raise _InvalidField(key, "must not be empty")


# --- the settings --------------------------------------------------------------------------------


class Codec(StrEnum):
    """Payload codec of published events and state (`mqtt.codec`, API.md §1)."""

    CBOR = "cbor"
    JSON = "json"


class MeterModel(StrEnum):
    """Meter models with a register map in METERS.md."""

    SDM630 = "SDM630"
    SDM120 = "SDM120"
    SDM72D_M = "SDM72D-M"  # v1: no voltage/current registers (METERS.md 6.3)
    SDM72D_M_2 = "SDM72D-M-2"  # v2: the SDM630 map
    ABB_B23 = "ABB-B23"
    EM340 = "EM340"
    EM24 = "EM24"  # EM24-DIN RS-485 map (METERS.md 6.6)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargerSettings:
    """`[charger]`."""

    id: str = DEFAULT_CHARGER_ID  # MQTT client id and topic level
    state_dir: Path = DEFAULT_STATE_DIR  # durable state (outbox, reservations, auth list)

    def __post_init__(self) -> None:
        if not _CHARGER_ID_RE.fullmatch(self.id):
            raise _InvalidField(
                "id", f"must be 1..64 characters of A-Z a-z 0-9 _ . - (it is an MQTT topic level), got {self.id!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """`[mqtt.tls]`: present means TLS. No `ca_file` means the system CAs."""

    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate; needs key_file
    key_file: Path | None = None
    insecure: bool = False  # do not verify the broker's certificate and host name

    def __post_init__(self) -> None:
        if self.cert_file is not None and self.key_file is None:
            raise _InvalidField("cert_file", "a client certificate needs key_file as well")
        if self.key_file is not None and self.cert_file is None:
            raise _InvalidField("key_file", "a client key needs cert_file as well")


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """`[mqtt]`: the broker link (API.md §1, §2)."""

    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "chargers"  # topic root R = {prefix}/{charger_id}/v1
    codec: Codec = Codec.CBOR
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive_s: int = 30
    tls: TlsSettings | None = None
    fallback_after_s: float = 60.0  # link supervision: broker unreachable this long -> fallback current
    fallback_current_a: float = 6.0  # offered while the link is down that long (0: pause); 6 A keeps cars charging slowly
    max_payload_bytes: int = 65536  # larger requests get bad_request (API.md §2)
    reconnect_min_s: float = 0.5  # bounded exponential backoff
    reconnect_max_s: float = 30.0

    def __post_init__(self) -> None:
        _non_empty("host", self.host)
        if any(c.isspace() for c in self.host):
            raise _InvalidField("host", f"must not contain spaces, got {self.host!r}")
        _between("port", self.port, 1, 65535)
        _non_empty("prefix", self.prefix)
        if any(c in self.prefix for c in "+#\0"):
            raise _InvalidField("prefix", f"must not contain MQTT wildcards '+' or '#', got {self.prefix!r}")
        if self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise _InvalidField("prefix", f"must not start or end with '/', got {self.prefix!r}")
        if self.username is not None:
            _non_empty("username", self.username)
        if self.password is not None and self.username is None:
            raise _InvalidField("password", "password given without username")
        _between("keepalive_s", self.keepalive_s, 5, 3600)
        _positive("fallback_after_s", self.fallback_after_s)
        if self.fallback_current_a != 0:
            if not MIN_CURRENT_A <= self.fallback_current_a <= MAX_CURRENT_A:
                raise _InvalidField(
                    "fallback_current_a",
                    f"must be 0 or between {_num(MIN_CURRENT_A)} and {_num(MAX_CURRENT_A)},"
                    f" got {_num(self.fallback_current_a)}",
                )
        _between("max_payload_bytes", self.max_payload_bytes, 1024, 1 << 20)
        _positive("reconnect_min_s", self.reconnect_min_s)
        if not self.reconnect_max_s >= self.reconnect_min_s:
            raise _InvalidField(
                "reconnect_max_s",
                f"must be >= reconnect_min_s ({_num(self.reconnect_min_s)}), got {_num(self.reconnect_max_s)}",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySettings:
    """`[telemetry]`."""

    meter_interval_s: float = 10.0  # meter samples on R/evse/{id}/meter

    def __post_init__(self) -> None:
        _positive("meter_interval_s", self.meter_interval_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSection:
    """`[auth]` as written in the file (API.md §5); `Config.auth_settings()` gives the core's `AuthSettings`."""

    timeout_s: float = 5.0  # backend answer to R/auth/request
    offline_policy: OfflinePolicy = OfflinePolicy.LOCAL_LIST_ONLY
    connection_timeout_s: float = 60.0  # authorized before plug-in: wait this long for the EV

    def __post_init__(self) -> None:
        _positive("timeout_s", self.timeout_s)
        _positive("connection_timeout_s", self.connection_timeout_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationSettings:
    """`[reservations]`; switched off, `reserve_now` answers Rejected (API.md §7 V1)."""

    enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """`[sessions]`."""

    resume_after_power_loss: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotSettings:
    """`[pilot]`: CP/PP sampling."""

    sample_interval_s: float = 0.01  # how often CP and PP are sampled
    debounce_s: float = 0.03  # a CP state must hold this long to count

    def __post_init__(self) -> None:
        _between("sample_interval_s", self.sample_interval_s, 0.001, 0.05)
        _between("debounce_s", self.debounce_s, 0.0, 0.05)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSettings:
    """`[evse.meter]`: the EVSE's Modbus energy meter (METERS.md)."""

    model: MeterModel
    url: MeterUrl
    device_id: int = 1  # Modbus unit id
    poll_interval_s: float = 1.0
    timeout_s: float = 1.0  # per request

    def __post_init__(self) -> None:
        _between("device_id", self.device_id, 1, 247)
        _positive("poll_interval_s", self.poll_interval_s)
        _positive("timeout_s", self.timeout_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvseSettings:
    """One `[[evse]]`. Without `meter`, `--sim` gives the EVSE a simulated meter (API.md §9)."""

    id: int  # any positive integer, unique; need not be contiguous
    connectors: tuple[str, ...] = ("Unknown",)  # connector types; "Unknown" fits every request
    max_current_a: float = 32.0
    phases: int = 3
    socket_outlet: bool = True  # False: tethered cable (PP not used)
    cable_max_current_a: float | None = None  # tethered cable rating; only with socket_outlet = false
    ventilation_available: bool = False  # allows charging in CP state D
    phase_switching: bool = False  # the hardware can switch 1 <-> 3 phases
    meter_stale_after_s: float = 5.0  # a meter silent this long is lost (MeterLost)
    meter: MeterSettings | None = None

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not self.id >= 1:
            raise _InvalidField("id", f"must be a positive integer, got {self.id!r}")
        if not self.connectors:
            raise _InvalidField("connectors", "must list at least one connector type")
        for i, connector in enumerate(self.connectors):
            _non_empty(f"connectors[{i}]", connector)
        _between("max_current_a", self.max_current_a, MIN_CURRENT_A, MAX_CURRENT_A)
        if self.phases not in (1, 3):
            raise _InvalidField("phases", f"must be 1 or 3, got {self.phases!r}")
        if self.cable_max_current_a is not None:
            if self.socket_outlet:
                raise _InvalidField(
                    "cable_max_current_a", "only allowed with socket_outlet = false (a socket reads the cable's PP)"
                )
            _between("cable_max_current_a", self.cable_max_current_a, MIN_CURRENT_A, MAX_CURRENT_A)
        if self.phase_switching and self.phases != 3:
            raise _InvalidField("phase_switching", "needs phases = 3")
        _positive("meter_stale_after_s", self.meter_stale_after_s)
        if self.meter is not None and not self.meter_stale_after_s > self.meter.poll_interval_s:
            raise _InvalidField(
                "meter_stale_after_s",
                f"must be greater than meter.poll_interval_s ({_num(self.meter.poll_interval_s)}),"
                f" got {_num(self.meter_stale_after_s)}",
            )

    def core_config(self, connection_timeout_s: float) -> EvseConfig:
        """The core's `EvseConfig` for this EVSE; `connection_timeout_s` comes from `[auth]`."""
        return EvseConfig(
            cid=self.id,
            connectors=self.connectors,
            max_current_a=self.max_current_a,
            phases=self.phases,
            socket_outlet=self.socket_outlet,
            cable_max_current_a=self.cable_max_current_a,
            ventilation_available=self.ventilation_available,
            phase_switching=self.phase_switching,
            connection_timeout_s=connection_timeout_s,
        )


#: The EVSE of the no-file case (`charger-firmware --sim` without `--config`).
DEFAULT_EVSES: Final = (EvseSettings(id=1, connectors=("sType2",), max_current_a=32.0, phases=3),)


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole configuration; `Config()` is the built-in default."""

    charger: ChargerSettings = field(default_factory=ChargerSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    auth: AuthSection = field(default_factory=AuthSection)
    reservations: ReservationSettings = field(default_factory=ReservationSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    pilot: PilotSettings = field(default_factory=PilotSettings)
    evses: tuple[EvseSettings, ...] = DEFAULT_EVSES

    def __post_init__(self) -> None:
        if not self.evses:
            raise _InvalidField("evses", "at least one EVSE is required")
        seen: set[int] = set()
        for i, evse in enumerate(self.evses):
            if evse.id in seen:
                raise _InvalidField(f"evses[{i}].id", f"duplicate EVSE id {evse.id}")
            seen.add(evse.id)

    def auth_settings(self) -> AuthSettings:
        """The core's `AuthSettings` (firmware.core.auth) from `[auth]`."""
        return AuthSettings(
            timeout_s=self.auth.timeout_s,
            offline_policy=self.auth.offline_policy,
            connection_timeout_s=self.auth.connection_timeout_s,
        )

    def evse_configs(self) -> tuple[EvseConfig, ...]:
        """The core's `EvseConfig` of every EVSE, in file order."""
        return tuple(evse.core_config(self.auth.connection_timeout_s) for evse in self.evses)


# --- the loader -----------------------------------------------------------------------------------


class _Problem(Exception):
    """A converter rejected a value; `sub` extends the key path (an array index)."""

    def __init__(self, problem: str, sub: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.sub = sub


_Conv = Callable[[object], Any]


def _toml_type(value: object) -> str:
    match value:
        case bool():
            return "boolean"
        case int():
            return "integer"
        case float():
            return "float"
        case str():
            return "string"
        case dict():
            return "table"
        case list():
            return "array"
        case datetime():
            return "datetime"
        case date():
            return "date"
        case time():
            return "time"
        case _:
            return type(value).__name__


def _got(value: object) -> str:
    """`got integer 5`, `got boolean true`, `got table`: the TOML type and, for scalars, the value."""
    kind = _toml_type(value)
    match value:
        case bool():
            shown = "true" if value else "false"
        case int() | float() | str():
            shown = repr(value)
        case datetime() | date() | time():
            shown = value.isoformat()
        case _:
            return f"got {kind}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"got {kind} {shown}"


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"must be a string, {_got(value)}")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"must be an integer, {_got(value)}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"must be a number, {_got(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _Problem(f"number is too large, {_got(value)}") from None
    if not math.isfinite(number):
        raise _Problem(f"must be a finite number, got {number!r}")
    return number


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"must be true or false, {_got(value)}")
    return value


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Problem(f"must be an array of strings, {_got(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _Problem(f"must be a string, {_got(item)}", sub=f"[{i}]")
    return tuple(value)


def _choice(enum: type[StrEnum]) -> _Conv:
    def convert(value: object) -> StrEnum:
        text = _string(value)
        try:
            return enum(text)
        except ValueError:
            choices = ", ".join(repr(member.value) for member in enum)
            raise _Problem(f"must be one of {choices}, got {text!r}") from None

    return convert


def _meter_url(value: object) -> MeterUrl:
    try:
        return MeterUrl.parse(_string(value))
    except ValueError as exc:
        raise _Problem(str(exc)) from None


def _key(key: str) -> str:
    """A key as TOML writes it: bare when possible, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c for c in key
    )
    return f'"{escaped}"'


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


class _Loader:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    def table(self, data: Mapping[str, object], prefix: str, name: str) -> dict[str, object]:
        value = data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(_join(prefix, name), f"must be a table, {_got(value)}")
        return value

    def read(
        self,
        data: Mapping[str, object],
        prefix: str,
        schema: Mapping[str, _Conv],
        *,
        required: Collection[str] = (),
        tables: Collection[str] = (),
        what: str = "key",
    ) -> dict[str, Any]:
        """The converted values of the keys present in `data`; unknown keys are errors."""
        known = [*schema, *tables]
        for key in data:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                problem = f"unknown {what}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                raise self.error(_join(prefix, _key(key)), f"{problem} (known: {', '.join(known)})")
        for key in required:
            if key not in data:
                raise self.error(_join(prefix, key), f"required {what} is missing")
        out: dict[str, Any] = {}
        for key, convert in schema.items():
            if key in data:
                try:
                    out[key] = convert(data[key])
                except _Problem as exc:
                    raise self.error(_join(prefix, key) + exc.sub, exc.problem) from exc
        return out

    def build(self, cls: Callable[..., _T], prefix: str, kwargs: Mapping[str, Any]) -> _T:
        try:
            return cls(**kwargs)
        except _InvalidField as exc:
            raise self.error(_join(prefix, exc.key), exc.problem) from exc

    def path(self, value: object) -> Path:
        text = _string(value)
        if not text.strip():
            raise _Problem("must be a non-empty path")
        return self.base_dir / text  # an absolute `text` replaces base_dir

    def existing_file(self, key: str, path: Path) -> None:
        if not os.path.isfile(path):
            problem = "is a directory, not a file" if os.path.isdir(path) else "file not found"
            raise self.error(key, f"{problem}: '{path}'")
        if not os.access(path, os.R_OK):
            raise self.error(key, f"file is not readable: '{path}'")

    # --- sections ---

    def config(self, data: Mapping[str, object]) -> Config:
        self.read(data, "", {}, tables=(*_SECTIONS, "evse"), what="section")
        return Config(
            charger=self.section(data, "charger", ChargerSettings, {"id": _string, "state_dir": self.path},
                                 required=("id",)),
            mqtt=self.mqtt(self.table(data, "", "mqtt")),
            telemetry=self.section(data, "telemetry", TelemetrySettings, {"meter_interval_s": _number}),
            auth=self.section(
                data,
                "auth",
                AuthSection,
                {"timeout_s": _number, "offline_policy": _choice(OfflinePolicy), "connection_timeout_s": _number},
            ),
            reservations=self.section(data, "reservations", ReservationSettings, {"enabled": _boolean}),
            sessions=self.section(data, "sessions", SessionSettings, {"resume_after_power_loss": _boolean}),
            pilot=self.section(data, "pilot", PilotSettings, {"sample_interval_s": _number, "debounce_s": _number}),
            evses=self.evses(data.get("evse")),
        )

    def section(
        self,
        data: Mapping[str, object],
        name: str,
        cls: Callable[..., _T],
        schema: Mapping[str, _Conv],
        *,
        required: Collection[str] = (),
    ) -> _T:
        return self.build(cls, name, self.read(self.table(data, "", name), name, schema, required=required))

    def mqtt(self, data: Mapping[str, object]) -> MqttSettings:
        schema: dict[str, _Conv] = {
            "host": _string,
            "port": _integer,
            "prefix": _string,
            "codec": _choice(Codec),
            "username": _string,
            "password": _string,
            "keepalive_s": _integer,
            "fallback_after_s": _number,
            "fallback_current_a": _number,
            "max_payload_bytes": _integer,
            "reconnect_min_s": _number,
            "reconnect_max_s": _number,
        }
        kwargs = self.read(data, "mqtt", schema, tables=("tls",))
        if "tls" in data:
            tls_data = self.table(data, "mqtt", "tls")
            files = ("ca_file", "cert_file", "key_file")
            tls = self.read(tls_data, "mqtt.tls", {**{name: self.path for name in files}, "insecure": _boolean})
            settings = self.build(TlsSettings, "mqtt.tls", tls)
            for name in files:
                if name in tls:
                    self.existing_file(f"mqtt.tls.{name}", tls[name])
            kwargs["tls"] = settings
        return self.build(MqttSettings, "mqtt", kwargs)

    def evses(self, value: object) -> tuple[EvseSettings, ...]:
        if value is None:
            raise self.error("evse", "at least one [[evse]] table is required")
        if isinstance(value, dict):
            raise self.error("evse", "must be an array of tables: write [[evse]], not [evse]")
        if not isinstance(value, list):
            raise self.error("evse", f"must be an array of tables ([[evse]]), {_got(value)}")
        if not value:
            raise self.error("evse", "at least one [[evse]] table is required")
        schema: dict[str, _Conv] = {
            "id": _integer,
            "connectors": _string_list,
            "max_current_a": _number,
            "phases": _integer,
            "socket_outlet": _boolean,
            "cable_max_current_a": _number,
            "ventilation_available": _boolean,
            "phase_switching": _boolean,
            "meter_stale_after_s": _number,
        }
        meter_schema: dict[str, _Conv] = {
            "model": _choice(MeterModel),
            "url": _meter_url,
            "device_id": _integer,
            "poll_interval_s": _number,
            "timeout_s": _number,
        }
        evses: list[EvseSettings] = []
        first_index: dict[int, int] = {}
        for i, item in enumerate(value):
            prefix = f"evse[{i}]"
            if not isinstance(item, dict):
                raise self.error(prefix, f"must be a table ([[evse]]), {_got(item)}")
            kwargs = self.read(item, prefix, schema, required=("id",), tables=("meter",))
            if "meter" in item:
                meter = self.read(self.table(item, prefix, "meter"), f"{prefix}.meter", meter_schema,
                                  required=("model", "url"))
                kwargs["meter"] = self.build(MeterSettings, f"{prefix}.meter", meter)
            evse = self.build(EvseSettings, prefix, kwargs)
            if evse.id in first_index:
                raise self.error(f"{prefix}.id", f"duplicate EVSE id {evse.id} (also evse[{first_index[evse.id]}])")
            first_index[evse.id] = i
            evses.append(evse)
        return tuple(evses)


def _read_toml(source: str) -> dict[str, Any]:
    try:
        with open(source, "rb") as fh:
            raw = fh.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(f"{source}: config file not found") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{source}: is a directory, not a config file") from exc
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read config file: {exc.strerror or exc}") from exc
    if len(raw) > _MAX_FILE_BYTES:
        raise ConfigError(f"{source}: config file is larger than {_MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not valid UTF-8 (byte {exc.start})") from exc
    text = text.removeprefix("\ufeff")  # a byte-order mark from some editors
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from exc
    except ValueError as exc:  # tomllib lets a few errors through, e.g. an integer of > 4300 digits
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(f"{source}: invalid TOML: arrays or tables nested too deeply") from exc


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and check the config file; `None` gives the built-in defaults. Raises `ConfigError`."""
    if path is None:
        return Config()
    source = os.fspath(path)
    data = _read_toml(source)
    return _Loader(source, Path(os.path.abspath(source)).parent).config(data)


def check_config_main(path: str | os.PathLike[str] | None) -> int:
    """`charger-firmware --check-config FILE`: 0 and a summary on stdout, or 2 and the error on stderr."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    host = config.mqtt.host
    broker = f"[{host}]:{config.mqtt.port}" if ":" in host else f"{host}:{config.mqtt.port}"
    shown = "(built-in defaults)" if path is None else os.fspath(path)
    print(f"OK: {shown}: {len(config.evses)} EVSE(s), broker {broker}")
    return 0
