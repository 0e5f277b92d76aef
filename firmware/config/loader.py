"""Reading the config file: TOML in, a checked `Config` out, or a `ConfigError` (API.md §9).

`load_config(path)` reads the file named by `--config FILE` (or `--check-config FILE`) once and
returns a `Config`; `load_config(None)` returns the built-in defaults. The loader walks the TOML
document along `schema(Config)` (schema.py, derived from the settings dataclasses), so it names no
setting itself. It checks what only the file can tell: unknown sections and keys (an error, with a
"did you mean" hint, so that a typo cannot silently fall back to a default), required keys, TOML
types, and that `ExistingFile` paths (the TLS files) exist. The values are then checked by the
dataclasses themselves, and their `InvalidField` is reported with the file and the key path.

Every error is a `ConfigError` of the form `charger.toml: evse[0].max_current_a: must be between 6
and 80, got 100`: the file as given, the dotted key path with array indexes, the problem. A TOML
syntax error keeps tomllib's line and column; a missing or unreadable file names the path.

I/O: this module reads the one config file and, for a `SecretFile` key (`mqtt.password_file`), the
first line of the file it names, and never writes. The only other contact with the file system is a
metadata check (`os.path.isfile`, `os.access`) of `ExistingFile` paths; they are not opened. Relative
paths in the file are taken relative to the directory of the config file, not the working directory.
Errors are raised, and `check_config_main` alone prints; the one thing logged is a WARNING for a
secret file that users other than its owner and the controller's group can read (like ssh's check
of a private key, but a warning: the charger keeps working, the operator is told at every start).
A secret never appears in a message: errors name the key and the file, never what it holds.

Standard: STYLE.md B6 (ConfigError with `raise ... from exc` at the boundary), mypy --strict.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Final, TypeVar

from firmware.config.rules import Invalid, InvalidField, SecretFile, type_hints
from firmware.config.schema import Key, got, schema
from firmware.config.settings import Config
from firmware.core.errors import ConfigError

__all__ = ["check_config_main", "load_config"]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

_MAX_FILE_BYTES: Final = 1 << 20  # a config file is a few kB; this guards against `--config /dev/zero`
_MAX_SECRET_BYTES: Final = 4096  # a password file holds one line


def _quoted(key: str) -> str:
    """A key as TOML writes it: bare when possible, else quoted."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    escaped = "".join(
        f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else "\\" + c if c in '"\\' else c for c in key
    )
    return f'"{escaped}"'


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _header(path: str) -> str:
    """The TOML header of an array of tables at `path`: `evse` for `evse`, `a.b` for `a[0].b`."""
    return re.sub(r"\[[0-9]+\]", "", path)


class _Loader:
    def __init__(self, source: str, base_dir: Path) -> None:
        self.source = source
        self.base_dir = base_dir

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {problem}")

    def table(self, cls: type[_T], data: Mapping[str, object], prefix: str) -> _T:
        """The settings object `cls` from the TOML table `data` found at `prefix` ("" for the file)."""
        keys = schema(cls)
        self.reject_unknown(data, prefix, keys)
        kwargs: dict[str, object] = {}
        for key in keys:
            path = _join(prefix, key.name)
            if key.name in data:
                kwargs[key.field] = self.read(key, data[key.name], path)
            elif key.required:
                what = "section" if key.kind == "table" and not prefix else "key"
                problem = f"at least one [[{_header(path)}]] table is required" if key.kind == "tables" else None
                raise self.error(path, problem or f"required {what} is missing")
            elif key.kind == "table" and not key.optional:
                kwargs[key.field] = self.read(key, {}, path)
        try:
            settings = cls(**kwargs)
        except InvalidField as exc:
            name = next(key.name for key in keys if key.field == exc.name)
            raise self.error(*exc.invalid.render(_join(prefix, name))) from exc
        settings = self.read_secrets(settings, keys, prefix)
        for key in keys:
            if key.existing_file and (file := getattr(settings, key.field)) is not None:
                self.existing_file(_join(prefix, key.name), file)
        return settings

    def reject_unknown(self, data: Mapping[str, object], prefix: str, keys: tuple[Key, ...]) -> None:
        known = [key.name for key in keys]
        what = "key" if prefix else "section"
        for name in data:
            if name not in known:
                import difflib  # only for a typo: ~1.5 ms at every start otherwise

                hint = difflib.get_close_matches(name, known, n=1)
                problem = f"unknown {what}" + (f"; did you mean {hint[0]!r}?" if hint else "")
                raise self.error(_join(prefix, _quoted(name)), f"{problem} (known: {', '.join(known)})")

    def read(self, key: Key, value: object, path: str) -> object:
        """The field value of `key` from its TOML value `value`."""
        if key.kind == "value":
            assert key.read is not None
            try:
                return key.read(value, self.base_dir)
            except Invalid as exc:
                raise self.error(*exc.render(path)) from exc
        assert key.cls is not None
        if key.kind == "table":
            if not isinstance(value, dict):
                raise self.error(path, f"must be a table, {got(value)}")
            return self.table(key.cls, value, path)
        return self.tables(key, value, path)

    def tables(self, key: Key, value: object, path: str) -> tuple[object, ...]:
        """An array of tables (`[[evse]]`)."""
        assert key.cls is not None
        header = _header(path)
        if isinstance(value, dict):
            raise self.error(path, f"must be an array of tables: write [[{header}]], not [{header}]")
        if not isinstance(value, list):
            raise self.error(path, f"must be an array of tables ([[{header}]]), {got(value)}")
        if not value and key.required:
            raise self.error(path, f"at least one [[{header}]] table is required")
        items: list[object] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.error(f"{path}[{i}]", f"must be a table ([[{header}]]), {got(item)}")
            items.append(self.table(key.cls, item, f"{path}[{i}]"))
        return tuple(items)

    def read_secrets(self, settings: _T, keys: tuple[Key, ...], prefix: str) -> _T:
        """`settings` with the first line of each `SecretFile` key's file in the field that key names."""
        names = {key.field: key.name for key in keys}
        for field, into in _secret_fields(type(settings)):
            file = getattr(settings, field)
            if not isinstance(file, Path):
                continue
            path = _join(prefix, names[field])
            if getattr(settings, into) is not None:
                raise self.error(path, f"give either {names[into]} or {names[field]}, not both")
            settings = dataclasses.replace(settings, **{into: self.secret(path, file)})  # type: ignore[type-var]
        return settings

    def secret(self, key: str, path: Path) -> str:
        """The first line of the secret file `path` (its line end stripped); never shown in a message."""
        try:
            with open(path, "rb", opener=_nonblocking) as fh:  # a FIFO must not hang the start
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise self.error(key, f"not a regular file: '{path}'")
                raw = fh.read(_MAX_SECRET_BYTES + 1)
        except FileNotFoundError as exc:
            raise self.error(key, f"file not found: '{path}'") from exc
        except IsADirectoryError as exc:
            raise self.error(key, f"is a directory, not a file: '{path}'") from exc
        except PermissionError as exc:
            raise self.error(key, f"file is not readable: '{path}' (permission denied for uid {os.geteuid()})") from exc
        except OSError as exc:
            raise self.error(key, f"cannot read '{path}': {exc.strerror or type(exc).__name__}") from exc
        if len(raw) > _MAX_SECRET_BYTES:
            raise self.error(key, f"'{path}' is larger than {_MAX_SECRET_BYTES} bytes: is it the right file?")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(key, f"'{path}' is not valid UTF-8") from None  # the error would show bytes of it
        line = text.split("\n", 1)[0].removesuffix("\r")
        if not line:
            raise self.error(key, f"the first line of '{path}' is empty (it must hold the secret)")
        if _others_can_read(st):
            log.warning("%s: %s: '%s' can be read by other users (mode %04o, owner uid %d, group gid %d): "
                        "chmod 0600 it, or 0640 with the controller's own group", self.source, key, path,
                        stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        return line

    def existing_file(self, key: str, path: Path) -> None:
        if not os.path.isfile(path):
            problem = "is a directory, not a file" if os.path.isdir(path) else "file not found"
            raise self.error(key, f"{problem}: '{path}'")
        if not os.access(path, os.R_OK):
            raise self.error(key, f"file is not readable: '{path}'")


def _nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NONBLOCK)


def _secret_fields(cls: type) -> list[tuple[str, str]]:
    """(field, the field it fills) for each `SecretFile` field of the settings class `cls`."""
    found: list[tuple[str, str]] = []
    for name, hint in type_hints(cls).items():
        for extra in getattr(hint, "__metadata__", ()):
            if isinstance(extra, SecretFile):
                found.append((name, extra.into))
    return found


def _others_can_read(st: os.stat_result) -> bool:
    """Readable by all users, or by a group that is not the controller's own (which must read it)."""
    mode = stat.S_IMODE(st.st_mode)
    return bool(mode & stat.S_IROTH) or bool(mode & stat.S_IRGRP and st.st_gid != os.getegid())


def _read_toml(source: str) -> dict[str, object]:
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
    return _Loader(source, Path(os.path.abspath(source)).parent).table(Config, data, "")


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
