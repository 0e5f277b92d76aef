"""Tests of firmware/config/schema.py and rules.py: the file's schema is derived from the settings
dataclasses (each setting declared once), and the generic loader reads any settings tree the same
way. The messages for the real config are tested in test_config.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest

from firmware.config import (
    Config,
    EvseSettings,
    MeterModel,
    MeterSettings,
    MeterUrl,
    TlsSettings,
)
from firmware.config.loader import _Loader
from firmware.config.rules import (
    Invalid,
    InvalidField,
    Required,
    TomlKey,
    above_field,
    between,
    check_fields,
    each,
    non_empty,
    one_of,
    unique,
)
from firmware.config.schema import Key, schema
from firmware.core.errors import ConfigError
from tests.support.program import EXAMPLE_CONFIG as EXAMPLE



def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """Every key of the file, as `section.key` (`evse[].meter.url` inside arrays of tables)."""
    for key in schema(cls):
        path = f"{prefix}.{key.name}" if prefix else key.name
        yield path, key
        if key.cls is not None:
            yield from walk(key.cls, path + ("[]" if key.kind == "tables" else ""))


def settings_classes() -> list[type]:
    return [Config, *dict.fromkeys(key.cls for _, key in walk(Config) if key.cls is not None)]


def test_sections_and_tables_come_from_the_dataclasses() -> None:
    assert [(key.name, key.kind) for key in schema(Config)] == [
        ("charger", "table"), ("mqtt", "table"), ("telemetry", "table"), ("auth", "table"),
        ("reservations", "table"), ("sessions", "table"), ("pilot", "table"), ("board", "table"), ("console", "table"),
        ("evse", "tables"),
    ]
    tables = {path: (key.cls, key.optional) for path, key in walk(Config) if key.kind != "value"}
    assert tables["mqtt.tls"] == (TlsSettings, True)
    assert tables["evse"] == (EvseSettings, False)
    assert tables["evse[].meter"] == (MeterSettings, True)


def test_every_field_is_a_key_and_values_come_first() -> None:
    for cls in settings_classes():
        keys = schema(cls)
        assert sorted(key.field for key in keys) == sorted(f.name for f in dataclasses.fields(cls)), cls
        kinds = [key.kind == "value" for key in keys]
        assert kinds == sorted(kinds, reverse=True), cls  # as TOML writes them: values, then tables


def test_required_keys_are_derived() -> None:
    required = {path for path, key in walk(Config) if key.required}
    assert required == {"charger.id", "evse", "evse[].id", "evse[].meter.model", "evse[].meter.url",
                        "evse[].pins.relay", "evse[].rfid.device"}


def test_every_settings_class_runs_its_rules() -> None:
    for cls in settings_classes():
        assert "__post_init__" in cls.__dict__, cls
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert "__slots__" in cls.__dict__, cls


BOARD_TABLES = ("board", "evse[].pins", "evse[].adc", "evse[].pwm", "evse[].rfid")


def test_the_example_names_every_key() -> None:
    """Every key is in deploy/charger.example.toml; the board's wiring keys are in the reference board's
    file (deploy/reference-board.toml), which the example points to."""
    example = EXAMPLE.read_text(encoding="utf-8")
    board = (EXAMPLE.parent / "reference-board.toml").read_text(encoding="utf-8")
    assert "reference-board.toml" in example
    for path, key in walk(Config):
        text = board if path.startswith(BOARD_TABLES) else example
        if key.kind == "value":
            assert f"{key.name} =" in text, path
        else:
            header = path.replace("[]", "")
            assert (f"[[{header}]]" if key.kind == "tables" else f"[{header}]") in text, path


def test_a_type_without_a_reader_is_a_programming_error() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Odd:
        table: dict[str, int] = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match=r"Odd\.table: no TOML reader"):
        schema(Odd)


# --- the generic loader on a settings tree of its own ---------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Pump:
    name: str
    flow_lpm: Annotated[float, between(1, 10)] = 2.0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    low_c: float = 10.0
    high_c: Annotated[float, above_field("low_c")] = 20.0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plant:
    title: Annotated[str, Required(), non_empty()] = "plant"
    modes: Annotated[tuple[str, ...], each(one_of("eco", "boost"))] = ("eco",)
    limits: Limits = dataclasses.field(default_factory=Limits)
    backup: Limits | None = None
    pumps: Annotated[tuple[Pump, ...], TomlKey("pump"), unique("name", "pump name")] = ()

    def __post_init__(self) -> None:
        check_fields(self)


def read(data: dict[str, object]) -> Plant:
    return _Loader("plant.toml", Path("/etc")).table(Plant, data, "")


def test_generic_loader_reads_a_new_tree() -> None:
    plant = read({"title": "x", "pump": [{"name": "a"}, {"name": "b", "flow_lpm": 3}], "backup": {}})
    assert plant == Plant(title="x", pumps=(Pump(name="a"), Pump(name="b", flow_lpm=3.0)), backup=Limits())
    assert read({"title": "x"}).backup is None
    assert read({"title": "x"}).limits == Limits()


@pytest.mark.parametrize(("data", "message"), [
    ({}, "title: required key is missing"),
    ({"title": ""}, "title: must not be empty"),
    ({"title": "x", "tilte": 1}, "tilte: unknown section; did you mean 'title'? "
                                 "(known: title, modes, limits, backup, pump)"),
    ({"title": "x", "modes": ["eco", "max"]}, "modes[1]: must be 'eco' or 'boost', got 'max'"),
    ({"title": "x", "limits": {"high_c": 5}}, "limits.high_c: must be greater than low_c (10), got 5"),
    ({"title": "x", "backup": {"low": 1}}, "backup.low: unknown key; did you mean 'low_c'? (known: low_c, high_c)"),
    ({"title": "x", "pump": [{"name": "a", "flow_lpm": 11}]}, "pump[0].flow_lpm: must be between 1 and 10, got 11"),
    ({"title": "x", "pump": [{}]}, "pump[0].name: required key is missing"),
    ({"title": "x", "pump": {"name": "a"}}, "pump: must be an array of tables: write [[pump]], not [pump]"),
    ({"title": "x", "pump": [{"name": "a"}, {"name": "a"}]}, "pump[1].name: duplicate pump name a (also pump[0])"),
])
def test_generic_loader_messages(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        read(data)
    assert str(info.value) == f"plant.toml: {message}"


# --- rules in code --------------------------------------------------------------------------------


def test_rules_check_objects_built_in_code() -> None:
    url = MeterUrl.parse("tcp://h:502")
    with pytest.raises(InvalidField, match=r"^device_id: must be between 1 and 247, got 0$") as info:
        MeterSettings(model=MeterModel.SDM630, url=url, device_id=0)
    assert isinstance(info.value, ValueError)
    assert info.value.name == "device_id"
    with pytest.raises(ValueError, match=r"^evses\[1\]\.id: duplicate EVSE id 1 \(also evses\[0\]\)$"):
        Config(evses=(EvseSettings(id=1), EvseSettings(id=1)))
    with pytest.raises(ValueError, match=r"^connectors\[1\]: must not be empty$"):
        EvseSettings(id=1, connectors=("sType2", ""))
    with pytest.raises(ValueError, match=r"^high_c: must be greater than low_c \(10\), got 10$"):
        Limits(high_c=10)


def test_unset_values_are_not_checked() -> None:
    assert EvseSettings(id=1, cable_max_current_a=None).cable_max_current_a is None
    assert Plant(title="x", backup=None).backup is None
    assert Invalid("p", "[1]", "[0]").render("k") == ("k[1]", "p (also k[0])")
