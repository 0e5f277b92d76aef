"""The reservation types: the EVerest enums, a validated `Reservation`, the book's `Entry` and its outputs.

What it is for: the values the reservation book takes and returns, with their own rules. The
StrEnums carry the names and values of the EVerest `reservation` types (ReservationResult,
ReservationCheckStatus, ReservationEndReason, ReservationUpdateStatus.reservation_status) and
`evse_manager`'s ReservationStart / ReservationEnd events (see /work/shared/seeds/
everest_types_reservation.rst and everest_types_evse_manager.rst). `Reservation` is `reserve_now`'s
args (API.md §3.1) validated in `__post_init__`; `check_token` and `fits` are the token and
connector-type rules (API.md §3.1: `Unknown` is a wildcard on both sides); `Entry` adds what the
book keeps (uuid, placement time and order, V5 activation); `ReservationUpdate` and `_Outputs`
build what a book change returns (`R/reservation` updates and the EVSE session events, API.md §4).

It must never decide anything about room or the book's state (that is room.py and book.py), never
read a clock (time is passed in as an aware UTC `datetime`) and never do I/O: it is part of the
sans-I/O core (DESIGN.md principle 1, STYLE.md B1).

Standard: API.md §3.1 and §7 (U1 token matching; V5 windows); EVerest reservation types.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

from firmware.core.errors import InvalidValue
from firmware.core.events import EmitSessionEvent, SessionEvent

UNKNOWN: Final = "Unknown"
#: The id EVerest uses on an EVSE held for global reservations (G3).
GLOBAL_HOLD_ID: Final = -1
MAX_TOKEN_LEN: Final = 255


class ReservationResult(StrEnum):
    ACCEPTED = "Accepted"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"
    REJECTED = "Rejected"
    UNAVAILABLE = "Unavailable"


class ReservationCheckStatus(StrEnum):
    NOT_RESERVED = "NotReserved"
    RESERVED_FOR_TOKEN = "ReservedForToken"
    RESERVED_FOR_OTHER_TOKEN = "ReservedForOtherToken"
    RESERVED_FOR_OTHER_TOKEN_AND_HAS_PARENT_TOKEN = "ReservedForOtherTokenAndHasParentToken"


class ReservationStatus(StrEnum):
    """ReservationUpdateStatus.reservation_status."""

    PLACED = "Placed"
    EXPIRED = "Expired"
    REMOVED = "Removed"
    CANCELLED = "Cancelled"
    USED = "Used"


class ReservationEndReason(StrEnum):
    EXPIRED = "Expired"
    CANCELLED = "Cancelled"
    USED_TO_START_CHARGING = "UsedToStartCharging"
    GLOBAL_RESERVATION_REQUIREMENT_DROPPED = "GlobalReservationRequirementDropped"


def _check_utc(name: str, value: datetime) -> None:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise ValueError(f"{name} must be an aware UTC datetime, got {value!r}")


def check_token(name: str, value: object) -> str:
    """A token (id, parent, group): a string of 1..MAX_TOKEN_LEN characters, else ValueError."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TOKEN_LEN:
        raise ValueError(f"{name} must be a string of 1..{MAX_TOKEN_LEN} characters")
    return value


def fits(requested: str, connectors: Iterable[str]) -> bool:
    """A requested connector type fits an EVSE (API.md §3.1: `Unknown` is a wildcard on both sides)."""
    return requested == UNKNOWN or any(c == requested or c == UNKNOWN for c in connectors)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reservation:
    """The args of `reserve_now` (API.md §3.1), validated."""

    reservation_id: int
    id_token: str
    expiry_utc: datetime
    evse_id: int | None = None
    parent_id_token: str | None = None
    connector_type: str = UNKNOWN
    start_utc: datetime | None = None
    sender: str = ""
    token_type: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.reservation_id, bool) or not isinstance(self.reservation_id, int):
            raise InvalidValue(f"reservation_id must be an integer, got {self.reservation_id!r}")
        check_token("id_token", self.id_token)
        _check_utc("expiry_time", self.expiry_utc)
        if self.start_utc is not None:
            _check_utc("start_time", self.start_utc)
            if self.start_utc >= self.expiry_utc:
                raise ValueError("start_time must be before expiry_time")
        if self.evse_id is not None and (
            isinstance(self.evse_id, bool) or not isinstance(self.evse_id, int) or self.evse_id < 1
        ):
            raise ValueError(f"evse_id must be a positive integer, got {self.evse_id!r}")
        if self.parent_id_token is not None:
            check_token("parent_id_token", self.parent_id_token)
        if not isinstance(self.connector_type, str) or not self.connector_type:
            raise ValueError("connector_type must be a non-empty string")
        if not isinstance(self.sender, str):
            raise InvalidValue("sender must be a string")

    @property
    def key(self) -> tuple[str, int]:
        return (self.sender, self.reservation_id)

    def matches(self, id_token: str, parent_id_token: str | None) -> bool:
        """U1: the token equals, or both parent tokens are present and equal (case-insensitive)."""
        if id_token.casefold() == self.id_token.casefold():
            return True
        return (
            parent_id_token is not None
            and self.parent_id_token is not None
            and parent_id_token.casefold() == self.parent_id_token.casefold()
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """A reservation in the book, with what the book adds: uuid, placement time and order."""

    reservation: Reservation
    uuid: str
    placed_utc: datetime
    order: int  # placement order: oldest first (U1), newest removed first (U4)
    active: bool = False  # Scheduled until activated (V5)

    @property
    def key(self) -> tuple[str, int]:
        return self.reservation.key

    @property
    def window_start(self) -> datetime:
        r = self.reservation
        return self.placed_utc if r.start_utc is None else max(r.start_utc, self.placed_utc)

    def in_window(self, instant: datetime) -> bool:
        return self.window_start <= instant < self.reservation.expiry_utc


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservationUpdate:
    """ReservationUpdateStatus for `R/reservation` (the shell adds timestamp and seq)."""

    reservation_id: int
    sender: str
    uuid: str
    status: ReservationStatus
    evse_id: int | None = None
    reason: str | None = None


BookOutput = ReservationUpdate | EmitSessionEvent


@dataclass(slots=True)
class EvseLive:
    """What the book needs to know of an EVSE, kept current by the charger."""

    connectors: tuple[str, ...]
    occupied: bool = False  # an EV plugged in or a session running
    faulted: bool = False
    enabled: bool = True


@dataclass(slots=True)
class _Outputs:
    items: list[BookOutput] = field(default_factory=list)

    def update(self, entry: Entry, status: ReservationStatus, evse_id: int | None = None) -> None:
        r = entry.reservation
        self.items.append(
            ReservationUpdate(
                reservation_id=r.reservation_id,
                sender=r.sender,
                uuid=entry.uuid,
                status=status,
                evse_id=r.evse_id if evse_id is None else evse_id,
            )
        )

    def start(self, evse_id: int, entry: Entry | None) -> None:
        if entry is None:
            event = EmitSessionEvent(cid=evse_id, uuid="", event=SessionEvent.RESERVATION_START,
                                     reservation_id=GLOBAL_HOLD_ID, id_token="", global_hold=True)
        else:
            r = entry.reservation
            event = EmitSessionEvent(cid=evse_id, uuid="", event=SessionEvent.RESERVATION_START,
                                     reservation_id=r.reservation_id, id_token=r.id_token,
                                     parent_id_token=r.parent_id_token)
        self.items.append(event)

    def end(self, evse_id: int, reservation_id: int, reason: ReservationEndReason) -> None:
        self.items.append(EmitSessionEvent(cid=evse_id, uuid="", event=SessionEvent.RESERVATION_END,
                                           reservation_id=reservation_id, reason=reason.value))


def _overlap(a: Entry, b: Entry) -> bool:
    return a.window_start < b.reservation.expiry_utc and b.window_start < a.reservation.expiry_utc
