"""Builders and references for the reservation-book tests (API.md §7).

* `T0` and `uuids()`: fixed aware UTC time and a deterministic uuid factory (time is injected, never read);
* `res(...)`: a `Reservation` with test defaults;
* `norm(outputs)`: the book's outputs as plain tuples, so expected outputs read like the API
  (`upd`, `start`, `hold`, `end` build the expected ones);
* `brute_room(types, evses)`: G1 by enumeration, written from API.md §7 only (independent of
  `firmware.core.reservations.global_room`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from firmware.core.events import EmitSessionEvent, SessionEvent
from firmware.core.reservations import Reservation, ReservationBook, ReservationUpdate
from firmware.wire import payload

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
S = timedelta(seconds=1)
MIN = timedelta(minutes=1)
H = timedelta(hours=1)

UNKNOWN = "Unknown"
CCS2 = "cCCS2"
T2 = "sType2"
CT2 = "cType2"

#: API.md §7 G1 example: EVSEs CCS2 | CCS2 | CCS2+T2.
EXAMPLE = {1: [CCS2], 2: [CCS2], 3: [CCS2, T2]}
ONE = {1: [UNKNOWN]}
TWO = {1: [UNKNOWN], 2: [UNKNOWN]}
THREE = {1: [UNKNOWN], 2: [UNKNOWN], 3: [UNKNOWN]}

Norm = tuple[object, ...]


def uuids(prefix: str = "uuid") -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def new_book(layout: dict[int, list[str]], **kwargs: object) -> ReservationBook:
    return ReservationBook(layout, new_uuid=uuids(), **kwargs)  # type: ignore[arg-type]


def res(
    rid: int,
    token: str = "TOKEN-A",
    *,
    evse: int | None = None,
    conn: str = UNKNOWN,
    start: datetime | None = None,
    expiry: datetime = T0 + 4 * H,
    sender: str = "",
    parent: str | None = None,
) -> Reservation:
    return Reservation(reservation_id=rid, id_token=token, expiry_utc=expiry, evse_id=evse, connector_type=conn,
                       start_utc=start, sender=sender, parent_id_token=parent)


def norm(outputs: Iterable[object]) -> list[Norm]:
    """("update", status, sender, rid, uuid, evse_id) | ("start", evse, data) | ("end", evse, rid, reason)."""
    result: list[Norm] = []
    for item in outputs:
        if isinstance(item, ReservationUpdate):
            result.append(("update", item.status.value, item.sender, item.reservation_id, item.uuid, item.evse_id))
        elif isinstance(item, EmitSessionEvent) and item.event is SessionEvent.RESERVATION_START:
            assert item.uuid == ""  # outside a session (API.md §4)
            result.append(("start", item.cid, payload(item)["reservation_start"]))
        elif isinstance(item, EmitSessionEvent) and item.event is SessionEvent.RESERVATION_END:
            assert item.uuid == ""
            data = payload(item)["reservation_end"]
            assert isinstance(data, dict)
            result.append(("end", item.cid, data["reservation_id"], data["reason"]))
        else:  # pragma: no cover - the book emits nothing else
            raise AssertionError(f"unexpected output {item!r}")
    return result


def upd(status: str, rid: int, uuid: str, evse: int | None = None, sender: str = "") -> Norm:
    return ("update", status, sender, rid, uuid, evse)


def start(evse: int, rid: int, tag: str = "TOKEN-A", parent: str | None = None) -> Norm:
    data: dict[str, object] = {"reservation_id": rid, "id_tag": tag}
    if parent is not None:
        data["parent_id"] = parent
    return ("start", evse, data)


def hold(evse: int) -> Norm:
    """G3: an EVSE held for the global reservations (API.md §4)."""
    return ("start", evse, {"reservation_id": -1, "id_tag": "", "global": True})


def end(evse: int, rid: int, reason: str) -> Norm:
    return ("end", evse, rid, reason)


# --- G1 by enumeration --------------------------------------------------------------------------


def fits_spec(requested: str, connectors: Iterable[str]) -> bool:
    """API.md §3.1: `Unknown` is a wildcard on both sides."""
    connectors = list(connectors)
    return requested == UNKNOWN or UNKNOWN in connectors or requested in connectors


def brute_room(types: Sequence[str], evses: Sequence[Sequence[str]]) -> bool:
    """G1 over these free EVSEs, as API.md §7 words it.

    Count clause, then: for every order of arrival (every car may be the next one) and every free
    fitting EVSE the arriving car may pick, DFS; False as soon as one path leaves a car with no free
    fitting EVSE. EVSEs keep their identity (no grouping by kind, unlike the book). The DFS is
    memoised on the exact state (cars still to come, ids of the EVSEs still free) only to keep
    6 x 6 layouts fast: a state's answer does not depend on the path that reached it, so this is
    the same enumeration.
    """
    if len(types) > len(evses):
        return False
    conns = [tuple(e) for e in evses]

    @lru_cache(maxsize=None)
    def dfs(cars: tuple[str, ...], free: frozenset[int]) -> bool:
        for i, car in enumerate(cars):  # this car arrives next
            rest = cars[:i] + cars[i + 1:]
            choices = [j for j in free if fits_spec(car, conns[j])]
            if not choices:
                return False
            for j in choices:  # ... and picks this EVSE
                if not dfs(rest, free - {j}):
                    return False
        return True

    return dfs(tuple(sorted(types)), frozenset(range(len(conns))))

