"""Plain data for a reservation: the (de)serialisation the book's snapshot and restore use (U6).

What it is for: an `Entry` to and from a map of JSON-safe values (times as ISO 8601 strings), and
the list check the restore applies to a snapshot's parts. A damaged item raises ValueError (or the
KeyError / TypeError the book turns into one); a valid item is re-validated by `Reservation`.

It must never read or write the store itself (the shell persists the plain data), never decide
what a restored reservation becomes (expiry and room are the book's, on restore), never read a
clock, never do I/O (DESIGN.md principle 1, STYLE.md B1).

Standard: API.md §7 rule U6 (reservations survive a restart); the field names follow the EVerest
`reservation` type (/work/shared/seeds/everest_types_reservation.rst) plus the book's own.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from datetime import datetime

from firmware.core.errors import InvalidValue
from firmware.core.reservations.model import UNKNOWN, Entry, Reservation


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise InvalidValue(f"expected a list in the reservation snapshot, got {type(value).__name__}")
    return value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"expected an ISO time, got {value!r}")
    return datetime.fromisoformat(value)


def _entry_to_plain(entry: Entry) -> dict[str, object]:
    r = entry.reservation
    return {
        "reservation_id": r.reservation_id,
        "id_token": r.id_token,
        "expiry_time": _iso(r.expiry_utc),
        "evse_id": r.evse_id,
        "parent_id_token": r.parent_id_token,
        "connector_type": r.connector_type,
        "start_time": _iso(r.start_utc),
        "sender": r.sender,
        "token_type": r.token_type,
        "uuid": entry.uuid,
        "placed_at": _iso(entry.placed_utc),
        "order": entry.order,
        "active": entry.active,
    }


def _entry_from_plain(item: object) -> Entry:
    if not isinstance(item, dict):
        raise InvalidValue("a reservation in the snapshot is not a map")
    expiry = _from_iso(item["expiry_time"])
    placed = _from_iso(item["placed_at"])
    if expiry is None or placed is None:
        raise ValueError("a reservation in the snapshot has no expiry_time or placed_at")
    reservation = Reservation(
        reservation_id=item["reservation_id"],
        id_token=item["id_token"],
        expiry_utc=expiry,
        evse_id=item.get("evse_id"),
        parent_id_token=item.get("parent_id_token"),
        connector_type=item.get("connector_type", UNKNOWN),
        start_utc=_from_iso(item.get("start_time")),
        sender=item.get("sender", ""),
        token_type=item.get("token_type"),
    )
    if not isinstance(item["uuid"], str) or not item["uuid"]:
        raise ValueError("a reservation in the snapshot has no uuid")
    return Entry(reservation=reservation, uuid=item["uuid"], placed_utc=placed, order=int(item["order"]),
                 active=bool(item.get("active", False)))


def _parse_snapshot(
    data: Mapping[str, object], evse_ids: Container[int]
) -> tuple[list[Entry], int, dict[int, int], set[int]]:
    """A book snapshot's entries, order counter, open starts and G3 holds (starts and holds on
    EVSEs not in `evse_ids` are dropped); ValueError when it is damaged."""
    try:
        entries = [_entry_from_plain(item) for item in _as_list(data.get("entries", []))]
        order = max([int(str(data.get("order", 0)))] + [e.order for e in entries])
        started = {int(pair[0]): int(pair[1]) for pair in _as_list(data.get("started", []))
                   if isinstance(pair, list) and int(pair[0]) in evse_ids}
        held = {int(str(x)) for x in _as_list(data.get("held", [])) if int(str(x)) in evse_ids}
    except (KeyError, TypeError, IndexError, OverflowError, AttributeError) as exc:
        raise ValueError(f"the reservation snapshot is damaged: {type(exc).__name__}: {exc}") from exc
    return entries, order, started, held
