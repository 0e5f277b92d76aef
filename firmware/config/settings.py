"""The controller's settings: frozen dataclasses, one field per config key (API.md §9).

Each setting is declared here once and nowhere else: the field gives its name (with its unit:
`_s`, `_a`, `_bytes`), its type, its default and, in its `Annotated` type, the rules its value must
follow (`rules.py`). `__post_init__` runs those rules, so a settings object built in code is checked
exactly like one read from the file, and the loader (`loader.py`) derives the file's sections, keys,
TOML types and required keys from these classes by introspection. To add a setting, add a field here
(and a line to deploy/charger.example.toml, which a test keeps complete).

Each class is one TOML table: `Config` is the whole file, a field whose type is a settings class is a
sub-table (`[mqtt.tls]`, `[evse.meter]`; optional when the type allows None), and a tuple of them is
an array of tables (`[[evse]]`). A field without a default, or marked `Required()`, must be set in the
file. `Config()` is the built-in default that `charger-firmware --sim` runs without a file.

This module never reads files, environment variables or the clock, and never converts values: what
comes from TOML is converted by the loader before a settings object is built.

Standard: STYLE.md B5 (units in names) and B6 (`@dataclass(frozen=True, slots=True, kw_only=True)`,
validation in `__post_init__` raising ValueError), mypy --strict.
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

from firmware.config.board import (
    AdcSettings,
    BoardSettings,
    PinSettings,
    PwmSettings,
    RfidSettings,
    board_fits,
    meters_fit,
)
from firmware.config.meter_url import MeterUrl
from firmware.config.rules import (
    ExistingFile,
    Invalid,
    Required,
    SecretFile,
    TomlKey,
    above_field,
    between,
    check_fields,
    each,
    needs_field,
    non_empty,
    one_of,
    only_when,
    positive,
    positive_integer,
    satisfies,
    unique,
    zero_or_between,
)
from firmware.core.auth import AuthSettings, OfflinePolicy
from firmware.core.evse import EvseConfig
from firmware.core.pilot import MAX_CURRENT_A, MIN_CURRENT_A

__all__ = [
    "DEFAULT_CHARGER_ID",
    "DEFAULT_EVSES",
    "DEFAULT_STATE_DIR",
    "AuthSection",
    "ChargerSettings",
    "Codec",
    "ConsoleSettings",
    "Config",
    "EvseSettings",
    "MeterModel",
    "MeterSettings",
    "MqttSettings",
    "PilotSettings",
    "ReservationSettings",
    "SessionSettings",
    "TelemetrySettings",
    "TlsSettings",
]

DEFAULT_CHARGER_ID: Final = "CP-0001"
DEFAULT_STATE_DIR: Final = Path("/var/lib/charger-firmware")
#: The console's socket (systemd's RuntimeDirectory=charger-firmware); under --sim: `console.sock` in state_dir.
DEFAULT_CONSOLE_SOCKET: Final = Path("/run/charger-firmware/console.sock")
SIM_CONSOLE_SOCKET: Final = "console.sock"
#: A unix socket's path must fit `sockaddr_un.sun_path` (108 bytes on Linux, with the final NUL): unix(7).
MAX_SOCKET_PATH_BYTES: Final = 107
#: The charger id becomes an MQTT topic level (API.md §1), so no '/', '+', '#' or spaces.
_CHARGER_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CHARGER_ID: Final = satisfies(
    _CHARGER_ID_RE.fullmatch, "must be 1..64 characters of A-Z a-z 0-9 _ . - (it is an MQTT topic level)"
)
_CURRENT_A: Final = between(MIN_CURRENT_A, MAX_CURRENT_A)


def _no_spaces(text: str) -> bool:
    return not any(c.isspace() for c in text)


def _no_wildcards(text: str) -> bool:
    return not any(c in text for c in "+#\0")


def _no_edge_slash(text: str) -> bool:
    return not (text.startswith("/") or text.endswith("/"))


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

    id: Annotated[str, Required(), _CHARGER_ID] = DEFAULT_CHARGER_ID  # MQTT client id and topic level
    state_dir: Path = DEFAULT_STATE_DIR  # durable state (outbox, reservations, auth list)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """`[mqtt.tls]`: present means TLS. No `ca_file` means the system CAs."""

    ca_file: Annotated[Path | None, ExistingFile()] = None
    cert_file: Annotated[  # client certificate; needs key_file
        Path | None, ExistingFile(), needs_field("key_file", "a client certificate needs key_file as well")
    ] = None
    key_file: Annotated[
        Path | None, ExistingFile(), needs_field("cert_file", "a client key needs cert_file as well")
    ] = None
    insecure: bool = False  # do not verify the broker's certificate and host name

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    """`[mqtt]`: the broker link (API.md §1, §2)."""

    host: Annotated[str, non_empty(), satisfies(_no_spaces, "must not contain spaces")] = "127.0.0.1"
    port: Annotated[int, between(1, 65535)] = 1883
    prefix: Annotated[  # topic root R = {prefix}/{charger_id}/v1
        str,
        non_empty(),
        satisfies(_no_wildcards, "must not contain MQTT wildcards '+' or '#'"),
        satisfies(_no_edge_slash, "must not start or end with '/'"),
    ] = "chargers"
    codec: Codec = Codec.CBOR
    username: Annotated[str | None, non_empty()] = None
    password: Annotated[str | None, needs_field("username", "password given without username")] = field(
        default=None, repr=False
    )
    # the password is the first line of this file (read once, at load), not in this config; a file others
    # can read is warned about. In code: where `password` came from.
    password_file: Annotated[
        Path | None, SecretFile("password"), needs_field("username", "password_file given without username")
    ] = None
    keepalive_s: Annotated[int, between(5, 3600)] = 30
    tls: TlsSettings | None = None
    # link supervision: broker unreachable this long -> fallback current
    fallback_after_s: Annotated[float, positive()] = 60.0
    # offered while the link is down that long (0: pause); 6 A keeps cars charging slowly
    fallback_current_a: Annotated[float, zero_or_between(MIN_CURRENT_A, MAX_CURRENT_A)] = 6.0
    max_payload_bytes: Annotated[int, between(1024, 1 << 20)] = 65536  # larger requests get bad_request (API.md §2)
    reconnect_min_s: Annotated[float, positive()] = 0.5  # bounded exponential backoff
    reconnect_max_s: Annotated[float, above_field("reconnect_min_s", or_equal=True)] = 30.0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class TelemetrySettings:
    """`[telemetry]`."""

    meter_interval_s: Annotated[float, positive()] = 10.0  # meter samples on R/evse/{id}/meter

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSection:
    """`[auth]` as written in the file (API.md §5); `Config.auth_settings()` gives the core's `AuthSettings`."""

    timeout_s: Annotated[float, positive()] = 5.0  # backend answer to R/auth/request
    offline_policy: OfflinePolicy = OfflinePolicy.LOCAL_LIST_ONLY
    # authorized before plug-in: wait this long for the EV
    connection_timeout_s: Annotated[float, positive()] = 60.0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationSettings:
    """`[reservations]`; switched off, `reserve_now` answers Rejected (API.md §7 V1)."""

    enabled: bool = True

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSettings:
    """`[sessions]`."""

    resume_after_power_loss: bool = False

    def __post_init__(self) -> None:
        check_fields(self)


def _socket_path_fits(value: object, owner: object) -> None:
    """A rule: a unix socket's path fits `sun_path`."""
    size = len(str(value).encode())
    if size > MAX_SOCKET_PATH_BYTES:
        raise Invalid(f"must be at most {MAX_SOCKET_PATH_BYTES} bytes long (a unix socket path, unix(7)), "
                      f"got {size} bytes")


_GROUP_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleSettings:
    """`[console]`: the field console's unix socket (mode 0660; never TCP)."""

    # default: /run/charger-firmware/console.sock; under --sim: console.sock in charger.state_dir
    socket: Annotated[Path | None, _socket_path_fits] = None
    # the socket file's group (its members may use the console); default: the controller's own group
    group: Annotated[str | None, satisfies(_GROUP_RE.fullmatch, "must be a group name")] = None

    def __post_init__(self) -> None:
        check_fields(self)

    def socket_path(self, *, sim: bool, state_dir: Path) -> Path:
        """The socket's path: `socket` when set; else in `state_dir` under --sim, else the system default."""
        if self.socket is not None:
            return self.socket
        return state_dir / SIM_CONSOLE_SOCKET if sim else DEFAULT_CONSOLE_SOCKET


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotSettings:
    """`[pilot]`: CP/PP sampling."""

    sample_interval_s: Annotated[float, between(0.001, 0.05)] = 0.01  # CP/PP sampling while anything is timed
    debounce_s: Annotated[float, between(0.0, 0.05)] = 0.03  # a CP state must hold this long to count
    #: CP/PP and the inputs while no EVSE's relay is closed, no PWM runs and nothing is being debounced
    #: (`Charger.needs_fast_sampling`): then nothing reacts to the pilot within a time limit.
    idle_sample_interval_s: Annotated[float, between(0.001, 1.0), above_field("sample_interval_s", or_equal=True)] = 0.1

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterSettings:
    """`[evse.meter]`: the EVSE's Modbus energy meter (METERS.md)."""

    model: MeterModel
    url: MeterUrl
    device_id: Annotated[int, between(1, 247)] = 1  # Modbus unit id
    poll_interval_s: Annotated[float, positive()] = 1.0
    timeout_s: Annotated[float, positive()] = 1.0  # per request

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvseSettings:
    """One `[[evse]]`. Without `meter`, `--sim` gives the EVSE a simulated meter (API.md §9)."""

    id: Annotated[int, positive_integer()]  # any positive integer, unique; need not be contiguous
    connectors: Annotated[  # connector types; "Unknown" fits every request
        tuple[str, ...], non_empty("must list at least one connector type"), each(non_empty())
    ] = ("Unknown",)
    max_current_a: Annotated[float, _CURRENT_A] = 32.0
    phases: Annotated[int, one_of(1, 3)] = 3
    socket_outlet: bool = True  # False: tethered cable (PP not used)
    cable_max_current_a: Annotated[  # tethered cable rating; only with socket_outlet = false
        float | None,
        only_when("socket_outlet", False, "only allowed with socket_outlet = false (a socket reads the cable's PP)"),
        _CURRENT_A,
    ] = None
    ventilation_available: bool = False  # allows charging in CP state D
    # the hardware can switch 1 <-> 3 phases
    phase_switching: Annotated[bool, only_when("phases", 3, "needs phases = 3")] = False
    # a meter silent this long is lost (MeterLost)
    meter_stale_after_s: Annotated[float, positive(), above_field("meter.poll_interval_s")] = 5.0
    meter: MeterSettings | None = None
    # the board's wiring of this EVSE (firmware/config/board.py); required with board.kind = "rpi"
    pins: PinSettings | None = None
    adc: AdcSettings | None = None
    pwm: PwmSettings | None = None
    rfid: RfidSettings | None = None

    def __post_init__(self) -> None:
        check_fields(self)

    def core_config(self, connection_timeout_s: float, *, rcd_self_test: bool = False) -> EvseConfig:
        """The core's `EvseConfig` for this EVSE; `connection_timeout_s` comes from `[auth]`, and
        `rcd_self_test` from `[board]` (where this EVSE has an RCD test output)."""
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
            rcd_self_test=rcd_self_test,
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
    board: BoardSettings = field(default_factory=BoardSettings)
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    evses: Annotated[
        tuple[EvseSettings, ...],
        TomlKey("evse"),
        Required(),
        non_empty("at least one EVSE is required"),
        unique("id", "EVSE id"),
        board_fits,
        meters_fit,
    ] = DEFAULT_EVSES

    def __post_init__(self) -> None:
        check_fields(self)

    def auth_settings(self) -> AuthSettings:
        """The core's `AuthSettings` (firmware.core.auth) from `[auth]`."""
        return AuthSettings(
            timeout_s=self.auth.timeout_s,
            offline_policy=self.auth.offline_policy,
            connection_timeout_s=self.auth.connection_timeout_s,
        )

    def evse_configs(self) -> tuple[EvseConfig, ...]:
        """The core's `EvseConfig` of every EVSE, in file order."""
        return tuple(evse.core_config(self.auth.connection_timeout_s, rcd_self_test=self.rcd_self_test(evse))
                     for evse in self.evses)

    def rcd_self_test(self, evse: EvseSettings) -> bool:
        """The RCD of `evse` is tested at every plug-in: `[board] rcd_self_test` and a test output wired."""
        return self.board.rcd_self_test and evse.pins is not None and evse.pins.rcd_test is not None
