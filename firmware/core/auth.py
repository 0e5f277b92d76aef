"""Token authorization: the decision of API.md §5, and the local auth list it reads.

A token presented at EVSE *e* is decided in this order:

1. Reservations (API.md §7 U1, G2). A token (or its parent) that matches a reservation usable at *e*
   is accepted locally and consumes it: no real-time authorization of a reserved token (OCPI
   ReserveNow). No match at a specifically reserved EVSE, or at an EVSE where G2 forbids a walk-in,
   is a refusal (`ReservationAuthtokenMismatch`). Before refusing, a token whose parent is unknown
   locally is looked up through the backend when a reservation could match by parent (OCPP 2.0.1
   H03.FR.08). A token in the local list is known: the list says its parent, or that it has none
   (then it is refused at once). The list's parent counts only while the list accepts the token.
2. The local auth list: Accepted / Blocked / Expired / Invalid, with parent tokens and expiry.
3. The backend (`R/auth/request`), answered within `auth.timeout_s`.
4. No answer (offline or timeout): `auth.offline_policy`, `local_list_only` (default) or `accept_all`.

`decide()` is a pure function of what is known; it returns either a `TokenDecision` or `ASK_BACKEND`.
The charger's token desk (`firmware.core.tokens`) keeps the pending backend requests
(`PendingRequests`) with monotonic deadlines and carries decisions out. This module must never act on
a decision itself (no EVSE, no book change), read a clock or do I/O (DESIGN.md principle 1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from firmware.core.errors import InvalidValue
from firmware.core.reservations import Entry, ReservationBook, check_token


class AuthStatus(StrEnum):
    """The result of `authorize` (API.md §3)."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    RESERVED_FOR_OTHER = "ReservedForOther"
    NO_EVSE_AVAILABLE = "NoEvseAvailable"


class LocalAuthStatus(StrEnum):
    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    EXPIRED = "Expired"
    INVALID = "Invalid"


class OfflinePolicy(StrEnum):
    LOCAL_LIST_ONLY = "local_list_only"
    ACCEPT_ALL = "accept_all"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """`[auth]` of the config (API.md §5)."""

    timeout_s: float = 5.0
    offline_policy: OfflinePolicy = OfflinePolicy.LOCAL_LIST_ONLY
    connection_timeout_s: float = 60.0
    request_prefix: str = "auth"


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAuthEntry:
    id_token: str
    status: LocalAuthStatus
    parent_id_token: str | None = None
    expiry_utc: datetime | None = None

    def __post_init__(self) -> None:
        check_token("id_token", self.id_token)
        if self.parent_id_token is not None:
            check_token("parent_id_token", self.parent_id_token)
        if not isinstance(self.status, LocalAuthStatus):
            raise InvalidValue(f"status must be one of {[s.value for s in LocalAuthStatus]}")
        if self.expiry_utc is not None and self.expiry_utc.tzinfo is None:
            raise ValueError("expiry must be an aware UTC time")

    def status_at(self, now: datetime) -> LocalAuthStatus:
        if self.expiry_utc is not None and now >= self.expiry_utc and self.status is LocalAuthStatus.ACCEPTED:
            return LocalAuthStatus.EXPIRED
        return self.status


class LocalAuthList:
    """The persisted local list (`set_local_auth_list`): tokens match case-insensitively."""

    def __init__(self) -> None:
        self.version = 0
        self._entries: dict[str, LocalAuthEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, id_token: str) -> LocalAuthEntry | None:
        return self._entries.get(id_token.casefold())

    def parent(self, id_token: str, now: datetime) -> str | None:
        """The parent a token matches reservations with (U1): the list's, while the list accepts the
        token; a Blocked, Expired or Invalid one gives none (as a backend answer that is not Accepted)."""
        entry = self.lookup(id_token)
        return entry.parent_id_token if entry is not None and entry.status_at(now) is LocalAuthStatus.ACCEPTED \
            else None

    def apply(self, version: int, full: bool, entries: Iterable[LocalAuthEntry]) -> None:
        """A full list replaces the old one; a differential one adds or overwrites its tokens."""
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"version must be a non-negative integer, got {version!r}")
        new = {} if full else dict(self._entries)
        for entry in entries:
            new[entry.id_token.casefold()] = entry
        self._entries, self.version = new, version

    def snapshot(self) -> dict[str, object]:
        return {
            "version": self.version,
            "tokens": [
                {
                    "id_token": e.id_token,
                    "status": e.status.value,
                    "parent_id_token": e.parent_id_token,
                    "expiry": None if e.expiry_utc is None else e.expiry_utc.isoformat(),
                }
                for e in self._entries.values()
            ],
        }

    def restore(self, data: Mapping[str, object]) -> None:
        tokens = data.get("tokens", [])
        if not isinstance(tokens, list):
            raise InvalidValue("tokens must be a list")
        entries = []
        for item in tokens:
            if not isinstance(item, dict):
                raise InvalidValue("a local auth list entry is not a map")
            expiry = item.get("expiry")
            entries.append(
                LocalAuthEntry(
                    id_token=item["id_token"],
                    status=LocalAuthStatus(item["status"]),
                    parent_id_token=item.get("parent_id_token"),
                    expiry_utc=None if expiry is None else datetime.fromisoformat(str(expiry)),
                )
            )
        version = data.get("version", 0)
        self.apply(version if isinstance(version, int) else -1, True, entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendAnswer:
    """The backend's `R/auth/response`: `status` as in the local list, and an optional parent."""

    status: LocalAuthStatus
    parent_id_token: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenDecision:
    status: AuthStatus
    reservation: Entry | None = None  # the reservation the token uses (consumed by the charger)
    mismatch: bool = False  # refused by a reservation: ReservationAuthtokenMismatch
    source: str = ""  # "reservation", "local_list", "backend", "offline_policy": for the log


class _AskBackend:
    def __repr__(self) -> str:
        return "ASK_BACKEND"


ASK_BACKEND: Final = _AskBackend()


def decide(
    *,
    id_token: str,
    evse_id: int,
    book: ReservationBook | None,
    local: LocalAuthList,
    now_utc: datetime,
    policy: OfflinePolicy,
    backend: BackendAnswer | None = None,
    offline: bool = False,
) -> TokenDecision | _AskBackend:
    """API.md §5 in order. `backend` is the answer once there is one; `offline` once there won't be."""
    entry = local.lookup(id_token)
    parent = local.parent(id_token, now_utc)
    if backend is not None and backend.status is LocalAuthStatus.ACCEPTED and backend.parent_id_token:
        parent = backend.parent_id_token
    if book is not None:  # 1. reservations
        match = book.match(evse_id, id_token, parent, now_utc)
        if match is not None:
            return TokenDecision(status=AuthStatus.ACCEPTED, reservation=match, source="reservation")
        if book.specific(evse_id, now_utc) is not None or not book.walk_in_allowed(evse_id, now_utc):
            if entry is None and backend is None and not offline and book.needs_parent(evse_id, now_utc):
                return ASK_BACKEND  # learn the parent before refusing (OCPP 2.0.1 H03.FR.08)
            return TokenDecision(status=AuthStatus.RESERVED_FOR_OTHER, mismatch=True, source="reservation")
    if entry is not None:  # 2. local list
        accepted = entry.status_at(now_utc) is LocalAuthStatus.ACCEPTED
        return TokenDecision(status=AuthStatus.ACCEPTED if accepted else AuthStatus.REJECTED, source="local_list")
    if backend is not None:  # 3. backend
        accepted = backend.status is LocalAuthStatus.ACCEPTED
        return TokenDecision(status=AuthStatus.ACCEPTED if accepted else AuthStatus.REJECTED, source="backend")
    if not offline:
        return ASK_BACKEND
    accepted = policy is OfflinePolicy.ACCEPT_ALL  # 4. offline policy
    return TokenDecision(status=AuthStatus.ACCEPTED if accepted else AuthStatus.REJECTED, source="offline_policy")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pending:
    request_id: str
    evse_id: int
    id_token: str
    token_type: str
    deadline: float  # monotonic


class PendingRequests:
    """Backend authorization requests in flight, each with its timeout (monotonic seconds)."""

    def __init__(self, timeout_s: float, prefix: str = "auth") -> None:
        if not timeout_s > 0:
            raise ValueError("auth timeout_s must be > 0")
        self.timeout_s = timeout_s
        self._prefix = prefix  # the shell passes one per boot, so ids never repeat across restarts
        self._pending: dict[str, Pending] = {}
        self._counter = 0

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, evse_id: int, id_token: str, token_type: str, now: float) -> Pending:
        self._counter += 1
        pending = Pending(request_id=f"{self._prefix}-{self._counter}", evse_id=evse_id, id_token=id_token,
                          token_type=token_type, deadline=now + self.timeout_s)
        self._pending[pending.request_id] = pending
        return pending

    def for_evse(self, evse_id: int) -> list[Pending]:
        """The requests in flight for EVSE `evse_id`, oldest first."""
        return [p for p in self._pending.values() if p.evse_id == evse_id]

    def pop(self, request_id: str) -> Pending | None:
        return self._pending.pop(request_id, None)

    def expired(self, now: float) -> list[Pending]:
        due = [p for p in self._pending.values() if p.deadline <= now]
        for pending in due:
            del self._pending[pending.request_id]
        return due

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)
