"""Values the tests build requests and configs from: tokens and local lists, times, `[[evse]]` tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from firmware.wire import rfc3339
from tests.support.toml import to_toml

__all__ = ["BLOCKED_TOKEN", "LOCAL_LIST", "LOCAL_TOKEN", "STATE_KEYS", "evse", "evses", "in_s", "local_list",
           "parse_time", "rfc3339"]

LOCAL_TOKEN = "04A2B3C4"
#: The keys of an EVSE state document (API.md §4, with the optional `blocked_by`).
STATE_KEYS = frozenset({"evse_id", "status", "cp", "pp_max_a", "relay_closed", "pwm_duty_pct", "offered_a",
                        "max_current_a", "phases", "connectors", "enabled", "errors", "session", "reservation", "led",
                        "blocked_by", "updated_at"})
BLOCKED_TOKEN = "0BADCAFE"


def local_list(*tokens: str | dict[str, Any], version: int = 1, full: bool = True) -> dict[str, Any]:
    """The args of `set_local_auth_list`: each token a string (Accepted) or a whole entry."""
    entries = [{"id_token": t, "status": "Accepted"} if isinstance(t, str) else t for t in tokens]
    return {"version": version, "full": full, "tokens": entries}


LOCAL_LIST = local_list(LOCAL_TOKEN, {"id_token": BLOCKED_TOKEN, "status": "Blocked"})


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def in_s(seconds: float) -> str:
    """RFC 3339 UTC `seconds` from now."""
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))


def evse(evse_id: int, *, connectors: tuple[str, ...] = ("sType2",), max_current_a: float = 32, phases: int = 3,
         **settings: object) -> str:
    """One `[[evse]]` table in TOML; `settings` are further keys of it, a dict (`meter={...}`) a
    sub-table of it (`[evse.meter]`)."""
    table = {"id": evse_id, "connectors": list(connectors), "max_current_a": max_current_a, "phases": phases}
    return to_toml({"evse": [table | settings]})


def evses(*evse_ids: int, **settings: object) -> str:
    """`[[evse]]` tables for `evse_ids`, all alike."""
    return "".join(evse(i, **settings) for i in evse_ids)
