"""A tiny TOML writer (tables as [headers], arrays of tables as [[headers]], the rest inline), for
config files written by tests; tests/test_config.py checks that it round-trips."""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any


def _toml_str(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _inline(value: object) -> str:
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float():
            return repr(value)  # inf, -inf, nan, 1e+16 are TOML too
        case str():
            return _toml_str(value)
        case datetime() | date() | time():
            return value.isoformat()
        case list():
            return "[" + ", ".join(_inline(v) for v in value) + "]"
        case dict():
            return "{" + ", ".join(f"{_toml_str(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def _is_table_array(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []

    def emit(path: list[str], table: dict[str, Any]) -> None:
        for key, value in table.items():
            if not isinstance(value, dict) and not _is_table_array(value):
                lines.append(f"{_toml_str(key)} = {_inline(value)}")
        for key, value in table.items():
            dotted = ".".join(_toml_str(k) for k in [*path, key])
            if isinstance(value, dict):
                lines.append(f"[{dotted}]")
                emit([*path, key], value)
            elif _is_table_array(value):
                for item in value:
                    lines.append(f"[[{dotted}]]")
                    emit([*path, key], item)

    emit([], doc)
    return "\n".join(lines) + "\n"
