"""The reservations of one charger (API.md §7): the book, its types, the G1 room check, its snapshot.

What it is for: `from firmware.core.reservations import ...` is the way in for the charger, auth,
args, the shell's core loop, the tests and tools/bench/reservations.py; this package re-exports
every public name its modules define, and the private helpers the tests and the bench use.

The package:
  model.py     the EVerest StrEnums, `Reservation` (validated reserve_now args), `Entry`,
               `ReservationUpdate` and the other outputs, token checks, `fits`
  room.py      G1: `global_room` (bipartite matching, `_max_matching`) and the free-EVSE and G1
               questions over instants and windows that the book asks; `judge` (V3, V4)
  book.py      `ReservationBook`: V1-V6, G2/G3 holds, U1-U6 (reserve, cancel, use, expire, restore)
  snapshot.py  an `Entry` to and from plain data for the book's snapshot (U6)

It must never read a clock, do I/O or import the shell or hal: it is part of the sans-I/O core
(DESIGN.md principle 1, STYLE.md B1; tests/test_layering.py checks every module of it).

Standard: API.md §7 rules V1-V6, G1-G3, U1-U6; the EVerest `reservation` and `evse_manager` types
(/work/shared/seeds/everest_types_reservation.rst, everest_types_evse_manager.rst,
everest_interfaces_reservation.rst).
"""

from firmware.core.reservations.book import ReservationBook
from firmware.core.reservations.model import (
    GLOBAL_HOLD_ID,
    MAX_TOKEN_LEN,
    UNKNOWN,
    BookOutput,
    Entry,
    EvseLive,
    Reservation,
    ReservationCheckStatus,
    ReservationEndReason,
    ReservationResult,
    ReservationStatus,
    ReservationUpdate,
    check_token,
    fits,
)
from firmware.core.reservations.model import _check_utc as _check_utc
from firmware.core.reservations.model import _Outputs as _Outputs
from firmware.core.reservations.model import _overlap as _overlap
from firmware.core.reservations.room import _max_matching as _max_matching
from firmware.core.reservations.room import (
    free_evses,
    g1_at,
    g1_over_window,
    global_room,
    judge,
)
from firmware.core.reservations.snapshot import _as_list as _as_list
from firmware.core.reservations.snapshot import _entry_from_plain as _entry_from_plain
from firmware.core.reservations.snapshot import _entry_to_plain as _entry_to_plain
from firmware.core.reservations.snapshot import _from_iso as _from_iso
from firmware.core.reservations.snapshot import _iso as _iso
from firmware.core.reservations.snapshot import _parse_snapshot as _parse_snapshot

__all__ = [
    "GLOBAL_HOLD_ID",
    "MAX_TOKEN_LEN",
    "UNKNOWN",
    "BookOutput",
    "Entry",
    "EvseLive",
    "Reservation",
    "ReservationBook",
    "ReservationCheckStatus",
    "ReservationEndReason",
    "ReservationResult",
    "ReservationStatus",
    "ReservationUpdate",
    "check_token",
    "fits",
    "free_evses",
    "g1_at",
    "g1_over_window",
    "global_room",
    "judge",
]
