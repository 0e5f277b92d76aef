"""The controller's configuration: one TOML file read once into frozen dataclasses (API.md §9).

`load_config(path)` reads the file named by `--config FILE` (or `--check-config FILE`) and returns a
`Config`; `load_config(None)` returns the built-in defaults, which are what `charger-firmware --sim`
runs without a file (one EVSE, a broker on 127.0.0.1:1883). The result is immutable and the file is
never read again: a change takes a restart. Errors are `ConfigError` naming the file, the dotted key
path and the problem, e.g. `charger.toml: evse[0].max_current_a: must be between 6 and 80, got 100`.

The package:
  settings.py   the settings dataclasses: each key declared once (type, default, rules)
  rules.py      the validation rules attached to fields, run by each dataclass's `__post_init__`
  schema.py     the file's keys, types and tables, derived from the dataclasses by introspection
  loader.py     TOML reading along that schema, ConfigError messages, `--check-config`
  board.py      `[board]` and the per-EVSE wiring (`[evse.pins]`, `.adc`, `.pwm`, `.rfid`), checked across EVSEs
  meter_url.py  `MeterUrl` and its parser (to be replaced by the shared one in hal/meter_url.py)

This package re-exports the public names, so `from firmware.config import Config, load_config` is
the way in. It must never be imported by `firmware/core` (shell -> core only), never read anything
but the one config file, and keep no state but per-class caches of what it derives from the classes.

Standard: STYLE.md B1 (shell), B6 (frozen dataclasses validated in `__post_init__`, ConfigError).
"""

from firmware.config.board import AdcChip, AdcSettings, BoardKind, BoardSettings, PinSettings, PwmSettings, RfidSettings
from firmware.config.loader import check_config_main, load_config
from firmware.config.meter_url import BAUD_RATES, MeterUrl
from firmware.config.settings import (
    DEFAULT_CHARGER_ID,
    DEFAULT_EVSES,
    DEFAULT_STATE_DIR,
    AuthSection,
    ChargerSettings,
    Codec,
    Config,
    EvseSettings,
    MeterModel,
    MeterSettings,
    MqttSettings,
    PilotSettings,
    ReservationSettings,
    SessionSettings,
    TelemetrySettings,
    TlsSettings,
)

__all__ = [
    "BAUD_RATES",
    "AdcChip",
    "AdcSettings",
    "BoardKind",
    "BoardSettings",
    "PinSettings",
    "PwmSettings",
    "RfidSettings",
    "DEFAULT_CHARGER_ID",
    "DEFAULT_EVSES",
    "DEFAULT_STATE_DIR",
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
