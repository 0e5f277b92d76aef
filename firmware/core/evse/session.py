"""The session records: the running `Session`, what the store keeps of it, and the wear counters.

Energy is never invented: `energy_wh_import_start` is a meter reading (0.0 only on an EVSE without
a meter, where it is never published). The records are plain data; the rules that open, cancel and
end a session (IEC 61851-1 Annex A sequences, SessionEvents) live in `machine.EvseMachine`. This
module must never decide anything, do I/O or read a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True, kw_only=True)
class Session:
    """The running session: what the backend bills from."""

    uuid: str
    id_token: str | None = None
    reservation_id: int | None = None
    authorized: bool = False
    cancelled: bool = False
    ev_seen: bool = False
    charging_started: bool = False
    started_at: float = 0.0
    connect_deadline: float = math.inf
    energy_wh_import_start: float = 0.0  # a reading; 0.0 only on an EVSE without a meter (never published)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredSession:
    """What the store keeps of an open session, to end it correctly after a restart."""

    uuid: str
    id_token: str | None = None
    reservation_id: int | None = None
    authorized: bool = False
    cancelled: bool = False
    charging_started: bool = False
    energy_wh_import_start: float = 0.0

    @classmethod
    def of(cls, session: Session) -> StoredSession:
        return cls(uuid=session.uuid, id_token=session.id_token, reservation_id=session.reservation_id,
                   authorized=session.authorized, cancelled=session.cancelled,
                   charging_started=session.charging_started, energy_wh_import_start=session.energy_wh_import_start)


@dataclass(slots=True)
class Counters:
    """Wear counters (persisted by the store): closes of the contactor and opens under load."""

    contactor_cycles: int = 0
    openings_under_load: int = 0
