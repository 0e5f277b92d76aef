"""The config file's schema, derived from the settings dataclasses; reading one TOML value (API.md §9).

`schema(cls)` lists the keys of the TOML table that the settings dataclass `cls` is read from, found
by introspection (`dataclasses.fields`, `typing.get_type_hints(include_extras=True)`), so that each
setting is declared once, in settings.py, and nowhere here:

- the key is the field's name, or its `TomlKey` (`Config.evses` is `[[evse]]` in the file);
- the field's type says how a TOML value is read: `bool`, `int`, `float`, `str`, `Path` (relative to
  the config file's directory), `tuple[str, ...]`, `tuple[int, ...]`, a `StrEnum` (one of its values), or a type with a
  `parse(text)` classmethod (`MeterUrl`); `X | None` is read as X;
- a settings-class type is a sub-table (`[mqtt.tls]`, `[evse.meter]`): absent, it has its defaults,
  or is None if the type allows None; a `tuple[Settings, ...]` is an array of tables (`[[evse]]`);
- a field without a default, or marked `Required()`, must be in the file; `ExistingFile()` marks a
  path that must name a readable file.

Reading a value is strict, so that a typo cannot silently fall back to a default: a string is never
a number, a boolean is never a number, an integer is accepted where a float is expected, and the
error says what was found ("must be an integer, got string '1883'"). Ranges and formats are not
checked here but by the dataclasses (rules.py).

This module does no I/O and keeps no state beyond a per-class cache of the derived schema.

Standard: PEP 593 (`Annotated`) and PEP 604 (`X | None`) for the declarations, mypy --strict.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from datetime import date, datetime, time
from enum import StrEnum
from pathlib import Path
from typing import Final, Literal, NamedTuple

from firmware.config.rules import ExistingFile, Invalid, Required, TomlKey, type_hints

__all__ = ["Key", "got", "schema"]

#: Reads a TOML value into a field value; the path is the config file's directory (for relative paths).
_Read = Callable[[object, Path], object]


# --- TOML values --------------------------------------------------------------------------------


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


def got(value: object) -> str:
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


def _string(value: object, base: Path) -> str:
    if not isinstance(value, str):
        raise Invalid(f"must be a string, {got(value)}")
    return value


def _integer(value: object, base: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"must be an integer, {got(value)}")
    return value


def _number(value: object, base: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"must be a number, {got(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise Invalid(f"number is too large, {got(value)}") from None
    if not math.isfinite(number):
        raise Invalid(f"must be a finite number, got {number!r}")
    return number


def _boolean(value: object, base: Path) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"must be true or false, {got(value)}")
    return value


def _string_list(value: object, base: Path) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(f"must be an array of strings, {got(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise Invalid(f"must be a string, {got(item)}", sub=f"[{i}]")
    return tuple(value)


def _integer_list(value: object, base: Path) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise Invalid(f"must be an array of integers, {got(value)}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int):
            raise Invalid(f"must be an integer, {got(item)}", sub=f"[{i}]")
    return tuple(value)


def _path(value: object, base: Path) -> Path:
    text = _string(value, base)
    if not text.strip():
        raise Invalid("must be a non-empty path")
    return base / text  # an absolute `text` replaces base


def _choice(enum: type[StrEnum]) -> _Read:
    def read(value: object, base: Path) -> StrEnum:
        text = _string(value, base)
        try:
            return enum(text)
        except ValueError:
            choices = ", ".join(repr(member.value) for member in enum)
            raise Invalid(f"must be one of {choices}, got {text!r}") from None

    return read


def _parsed(parse: Callable[[str], object]) -> _Read:
    def read(value: object, base: Path) -> object:
        try:
            return parse(_string(value, base))
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    return read


_READERS: Final[dict[object, _Read]] = {
    bool: _boolean,
    int: _integer,
    float: _number,
    str: _string,
    Path: _path,
    tuple[str, ...]: _string_list,
    tuple[int, ...]: _integer_list,
}


# --- the schema, derived from the settings dataclasses --------------------------------------------


class Key(NamedTuple):
    """One key of a TOML table, derived from one field of a settings dataclass.

    (A NamedTuple rather than a frozen dataclass: the class is created at import, where a dataclass
    costs 1-3 ms and a NamedTuple a tenth of that.)
    """

    field: str  # the dataclass field
    name: str  # the key in the file
    kind: Literal["value", "table", "tables"]  # a value, a sub-table, an array of tables
    read: _Read | None = None  # for a value
    cls: type | None = None  # for a table or an array of tables: the settings class
    optional: bool = False  # a table that may be absent (the field is None then)
    required: bool = False  # the file must set it
    existing_file: bool = False  # a path that must name a readable file


def _strip_optional(tp: object) -> tuple[object, bool]:
    """`X | None` -> (X, True); anything else -> (it, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _key(owner: type, f: dataclasses.Field[object], hint: object) -> Key:
    extras: tuple[object, ...] = getattr(hint, "__metadata__", ())  # Annotated[T, *extras]
    tp, optional = _strip_optional(typing.get_args(hint)[0] if extras else hint)
    args = typing.get_args(tp)
    item = args[0] if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis else None
    kind: Literal["value", "table", "tables"] = "value"
    cls: type | None = None
    read: _Read | None = None
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and not hasattr(tp, "parse"):
        kind, cls = "table", tp
    elif isinstance(item, type) and dataclasses.is_dataclass(item):  # tuple[Settings, ...]
        kind, cls = "tables", item
    elif isinstance(tp, type) and issubclass(tp, StrEnum):
        read = _choice(tp)
    elif callable(parse := getattr(tp, "parse", None)):
        read = _parsed(parse)
    elif tp in _READERS:
        read = _READERS[tp]
    else:
        raise TypeError(f"{owner.__name__}.{f.name}: no TOML reader for the type {tp!r}")
    return Key(
        field=f.name,
        name=next((extra.name for extra in extras if isinstance(extra, TomlKey)), f.name),
        kind=kind,
        read=read,
        cls=cls,
        optional=optional,
        required=(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
        or any(isinstance(extra, Required) for extra in extras),
        existing_file=any(isinstance(extra, ExistingFile) for extra in extras),
    )


_SCHEMAS: dict[type, tuple[Key, ...]] = {}


def schema(cls: type) -> tuple[Key, ...]:
    """The keys of the TOML table that `cls` (a settings dataclass) is read from (computed once).

    Values come before sub-tables, as TOML writes them; otherwise the order is that of the fields.
    """
    keys = _SCHEMAS.get(cls)
    if keys is None:
        hints = type_hints(cls)
        found = [_key(cls, f, hints[f.name]) for f in dataclasses.fields(cls)]
        keys = _SCHEMAS[cls] = tuple(sorted(found, key=lambda key: key.kind != "value"))
    return keys
