"""Argument checking for the operations of API.md §3 and §8: one small parser per op.

Each parser turns the request's `args` map into typed values or raises `InvalidArgs` naming the
field and what was wrong. Unknown fields are refused too, so a backend's typo is caught instead of
silently ignored. It must never touch state: the controller runs the op only after its args parsed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, overload

from firmware.core.auth import BackendAnswer, LocalAuthEntry, LocalAuthStatus
from firmware.core.events import SessionCancellationReason
from firmware.core.reservations import MAX_TOKEN_LEN, UNKNOWN, Reservation
from firmware.wire import InvalidArgs, as_map

#: Integers beyond this are refused before anything formats them (Python refuses to print ints of more
#: than 4300 digits, and no field of the API needs more than 64 bits).
MAX_INT = 2**63


class Fields:
    """Typed access to an args map; records which fields were read to refuse the rest."""

    def __init__(self, args: object) -> None:
        self._args: dict[str, Any] = as_map(args)
        self._seen: set[str] = set()

    @property
    def args(self) -> dict[str, Any]:
        """The whole map (for parsers that read it at once)."""
        return self._args

    def _get(self, name: str, required: bool) -> Any:  # noqa: ANN401
        self._seen.add(name)
        if name not in self._args or self._args[name] is None:
            if required:
                raise InvalidArgs(f"{name}: required")
            return None
        return self._args[name]

    # Each getter below is overloaded: a required field's value is never None (a missing or null one raises).

    def done(self) -> None:
        unknown = sorted(set(self._args) - self._seen)
        if unknown:
            raise InvalidArgs(f"{unknown[0]}: unknown field")

    @overload
    def int_(self, name: str, *, required: Literal[True] = ..., minimum: int | None = ...,
             maximum: int | None = ...) -> int: ...
    @overload
    def int_(self, name: str, *, required: bool, minimum: int | None = ...,
             maximum: int | None = ...) -> int | None: ...

    def int_(self, name: str, *, required: bool = True, minimum: int | None = None,
             maximum: int | None = None) -> int | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgs(f"{name}: must be an integer, got {type(value).__name__}")
        if abs(value) > MAX_INT:
            raise InvalidArgs(f"{name}: integer out of range")
        if minimum is not None and value < minimum:
            raise InvalidArgs(f"{name}: must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise InvalidArgs(f"{name}: must be <= {maximum}, got {value}")
        return value

    @overload
    def number(self, name: str, *, required: Literal[True] = ...) -> float: ...
    @overload
    def number(self, name: str, *, required: bool) -> float | None: ...

    def number(self, name: str, *, required: bool = True) -> float | None:
        value = self._get(name, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgs(f"{name}: must be a number, got {type(value).__name__}")
        if isinstance(value, int) and abs(value) > MAX_INT or isinstance(value, float) and not math.isfinite(value):
            raise InvalidArgs(f"{name}: must be a finite number of sensible size")
        return float(value)

    @overload
    def bool_(self, name: str, *, required: Literal[True] = ...) -> bool: ...
    @overload
    def bool_(self, name: str, *, required: bool) -> bool | None: ...

    def bool_(self, name: str, *, required: bool = True) -> bool | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise InvalidArgs(f"{name}: must be true or false, got {type(value).__name__}")
        return value

    @overload
    def str_(self, name: str, *, required: Literal[True] = ..., max_len: int = ...) -> str: ...
    @overload
    def str_(self, name: str, *, required: bool, max_len: int = ...) -> str | None: ...

    def str_(self, name: str, *, required: bool = True, max_len: int = MAX_TOKEN_LEN) -> str | None:
        value = self._get(name, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise InvalidArgs(f"{name}: must be a string, got {type(value).__name__}")
        if not value and required:
            raise InvalidArgs(f"{name}: must not be empty")
        if len(value) > max_len:
            raise InvalidArgs(f"{name}: longer than {max_len} characters")
        return value

    @overload
    def time(self, name: str, *, required: Literal[True] = ...) -> datetime: ...
    @overload
    def time(self, name: str, *, required: bool) -> datetime | None: ...

    def time(self, name: str, *, required: bool = True) -> datetime | None:
        value = self.str_(name, required=required, max_len=64)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidArgs(f"{name}: not an RFC 3339 time: {value!r}") from exc
        if parsed.tzinfo is None:
            raise InvalidArgs(f"{name}: needs a time zone (UTC, e.g. 2026-11-21T08:30:00Z)")
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise InvalidArgs(f"{name}: out of the representable range: {value!r}") from exc

    def list_(self, name: str) -> list[Any]:
        value = self._get(name, True)
        if not isinstance(value, list):
            raise InvalidArgs(f"{name}: must be a list, got {type(value).__name__}")
        return value


def parse_reservation(args: object) -> Reservation:
    f = Fields(args)
    fields: dict[str, Any] = {
        "reservation_id": f.int_("reservation_id", minimum=-(2**31), maximum=2**31 - 1),
        "id_token": f.str_("id_token"),
        "expiry_utc": f.time("expiry_time"),
        "evse_id": f.int_("evse_id", required=False, minimum=1),
        "parent_id_token": f.str_("parent_id_token", required=False),
        "connector_type": f.str_("connector_type", required=False, max_len=64) or UNKNOWN,
        "start_utc": f.time("start_time", required=False),
        "sender": f.str_("sender", required=False, max_len=64) or "",
        "token_type": f.str_("token_type", required=False, max_len=64),
    }
    f.done()
    try:
        return Reservation(**fields)
    except ValueError as exc:
        raise InvalidArgs(str(exc).replace("expiry_time", "expiry_time:", 1)) from exc


@dataclass(frozen=True, slots=True)
class LocalListUpdate:
    version: int
    full: bool
    entries: list[LocalAuthEntry]


def parse_local_list(args: object) -> LocalListUpdate:
    f = Fields(args)
    version = f.int_("version", minimum=0)
    full = f.bool_("full")
    items = f.list_("tokens")
    f.done()
    entries = []
    for i, item in enumerate(items):
        try:
            g = Fields(item)
        except InvalidArgs as exc:
            raise InvalidArgs(f"tokens[{i}]: must be a map with string keys") from exc
        try:
            token = g.str_("id_token")
            status_text = g.str_("status", max_len=16)
            parent = g.str_("parent_id_token", required=False)
            expiry = g.time("expiry", required=False)
            g.done()
            status = LocalAuthStatus(status_text)
        except InvalidArgs as exc:
            raise InvalidArgs(f"tokens[{i}].{exc}") from exc
        except ValueError as exc:
            raise InvalidArgs(f"tokens[{i}].status: must be one of Accepted, Blocked, Expired, Invalid") from exc
        entries.append(LocalAuthEntry(id_token=token, status=status, parent_id_token=parent, expiry_utc=expiry))
    return LocalListUpdate(version=version, full=full, entries=entries)


def parse_reason(value: str | None) -> SessionCancellationReason:
    if value is None:
        return SessionCancellationReason.REMOTE
    try:
        return SessionCancellationReason(value)
    except ValueError as exc:
        allowed = ", ".join(r.value for r in SessionCancellationReason)
        raise InvalidArgs(f"reason: must be one of {allowed}") from exc




def parse_auth_response(value: object) -> tuple[str, BackendAnswer]:
    """The backend's answer on `R/auth/response` (API.md §5): the request id and the decision."""
    f = Fields(value)
    request_id = f.str_("id", max_len=64)
    status = f.str_("status", max_len=16)
    parent = f.str_("parent_id_token", required=False)
    try:
        return request_id, BackendAnswer(status=LocalAuthStatus(status), parent_id_token=parent)
    except ValueError as exc:
        raise InvalidArgs("status: must be Accepted, Blocked, Expired or Invalid") from exc
