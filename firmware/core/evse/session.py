"""The session records: the running `Session` and its phases, what the store keeps of it, and the wear counters.

A session's lifecycle is one `SessionPhase`, moved only along `PHASE_TRANSITIONS`, so the impossible
combinations of the former four flags (charging before a token, a token after the cancellation, ...)
cannot be written down. The machine (`machine.EvseMachine`) decides *when* a session moves, following
the IEC 61851-1 Annex A sequences and EVerest's SessionEvents; this module only says where it may go.

Energy is never invented: `energy_wh_import_start` is a meter reading (0.0 only on an EVSE without
a meter, where it is never published). This module must never decide a transition, do I/O or read a
clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class SessionPhase(StrEnum):
    """Where a session is in its lifecycle. The values are stored (`StoredSession`): never change them."""

    PENDING = "pending"  # the EV is connected, no token yet (WAITING_FOR_AUTH)
    AUTHORIZED = "authorized"  # a token came before the EV; connection_timeout_s runs (WAITING_FOR_EV)
    EV_CONNECTED = "ev_connected"  # token and EV, no energy transfer yet
    CHARGED = "charged"  # energy transfer started once: a later CHARGING is a resume
    CANCELLED = "cancelled"  # cancelled before any token; SessionFinished comes at unplug
    CANCELLED_AUTHORIZED = "cancelled_authorized"  # cancelled after a token, before any energy transfer
    CANCELLED_CHARGED = "cancelled_charged"  # cancelled after energy transfer: may ramp down (STOPPING)


_P = SessionPhase
#: The phases a session may start in: EV first, token first, or a token for an EV already plugged in.
INITIAL_PHASES: Final[frozenset[SessionPhase]] = frozenset({_P.PENDING, _P.AUTHORIZED, _P.EV_CONNECTED})
#: The legal moves. A cancelled session only ends (at unplug, or at once if no EV was ever seen).
PHASE_TRANSITIONS: Final[dict[SessionPhase, frozenset[SessionPhase]]] = {
    _P.PENDING: frozenset({_P.EV_CONNECTED, _P.CANCELLED}),  # token; stop, fault, disable
    _P.AUTHORIZED: frozenset({_P.EV_CONNECTED, _P.CANCELLED_AUTHORIZED}),  # plug-in; stop, timeout, fault
    _P.EV_CONNECTED: frozenset({_P.CHARGED, _P.CANCELLED_AUTHORIZED}),  # first CHARGING; stop, fault
    _P.CHARGED: frozenset({_P.CANCELLED_CHARGED}),  # stop, fault, over-current
    _P.CANCELLED: frozenset(),
    _P.CANCELLED_AUTHORIZED: frozenset(),
    _P.CANCELLED_CHARGED: frozenset(),
}
#: Where a cancellation leads from each phase that is not cancelled yet.
CANCELLATION: Final[dict[SessionPhase, SessionPhase]] = {
    _P.PENDING: _P.CANCELLED,
    _P.AUTHORIZED: _P.CANCELLED_AUTHORIZED,
    _P.EV_CONNECTED: _P.CANCELLED_AUTHORIZED,
    _P.CHARGED: _P.CANCELLED_CHARGED,
}
_AUTHORIZED: Final = frozenset({_P.AUTHORIZED, _P.EV_CONNECTED, _P.CHARGED, _P.CANCELLED_AUTHORIZED,
                                _P.CANCELLED_CHARGED})
_CANCELLED: Final = frozenset({_P.CANCELLED, _P.CANCELLED_AUTHORIZED, _P.CANCELLED_CHARGED})
_CHARGED: Final = frozenset({_P.CHARGED, _P.CANCELLED_CHARGED})


class PhaseViews:
    """What a session's phase says, as read-only views (for a running and for a stored session)."""

    __slots__ = ()
    phase: SessionPhase

    @property
    def authorized(self) -> bool:
        """A token was accepted for this session (it stays so after a cancellation)."""
        return self.phase in _AUTHORIZED

    @property
    def cancelled(self) -> bool:
        """SessionCancelled was reported; the session only waits for its end."""
        return self.phase in _CANCELLED

    @property
    def charging_started(self) -> bool:
        """Energy transfer started once in this session."""
        return self.phase in _CHARGED


@dataclass(slots=True, kw_only=True)
class Session(PhaseViews):
    """The running session: what the backend bills from. Its phase moves only by `advance`/`cancel`."""

    uuid: str
    phase: SessionPhase
    id_token: str | None = None
    reservation_id: int | None = None
    started_at: float = 0.0
    connect_deadline: float = math.inf
    energy_wh_import_start: float = 0.0  # a reading; 0.0 only on an EVSE without a meter (never published)

    def advance(self, phase: SessionPhase) -> None:
        """Move to `phase`; a move outside `PHASE_TRANSITIONS` is a bug of the machine (ValueError)."""
        if phase not in PHASE_TRANSITIONS[self.phase]:
            raise ValueError(f"session {self.uuid}: {self.phase.name} -> {phase.name} is not a phase transition")
        self.phase = phase

    def cancel(self) -> None:
        """Move to the cancelled phase of the current one (ValueError when already cancelled)."""
        if self.phase not in CANCELLATION:
            raise ValueError(f"session {self.uuid} is already {self.phase.name}")
        self.advance(CANCELLATION[self.phase])


@dataclass(frozen=True, slots=True, init=False)
class StoredSession(PhaseViews):
    """What the store keeps of an open session, to end it correctly after a restart.

    Stored as a map of these fields (`dataclasses.asdict`, `phase` as its string value). The
    constructor also takes the form written before session phases existed, the flags `authorized`,
    `cancelled` and `charging_started` instead of `phase`, so a session stored by an earlier version
    restores to the same session (see `_legacy_phase`). A map with both forms, or an unknown key, is
    refused with TypeError; an unknown phase with ValueError.
    """

    uuid: str
    id_token: str | None
    reservation_id: int | None
    phase: SessionPhase
    energy_wh_import_start: float

    def __init__(self, *, uuid: str, id_token: str | None = None, reservation_id: int | None = None,
                 phase: SessionPhase | str | None = None, energy_wh_import_start: float = 0.0,
                 authorized: bool | None = None, cancelled: bool | None = None,
                 charging_started: bool | None = None) -> None:
        flags = (authorized, cancelled, charging_started)
        if phase is not None and flags != (None, None, None):
            raise TypeError("a stored session has either a phase or the flags of the earlier format, not both")
        object.__setattr__(self, "uuid", uuid)
        object.__setattr__(self, "id_token", id_token)
        object.__setattr__(self, "reservation_id", reservation_id)
        object.__setattr__(self, "phase", _legacy_phase(*flags) if phase is None else SessionPhase(phase))
        object.__setattr__(self, "energy_wh_import_start", energy_wh_import_start)

    @classmethod
    def of(cls, session: Session) -> StoredSession:
        return cls(uuid=session.uuid, id_token=session.id_token, reservation_id=session.reservation_id,
                   phase=session.phase, energy_wh_import_start=session.energy_wh_import_start)



def _legacy_phase(authorized: bool | None, cancelled: bool | None, charging_started: bool | None) -> SessionPhase:
    """The phase of a session stored with the former flags (all absent: a session with no token).

    The flags did not record whether the EV was seen; a restore takes it to be plugged in anyway
    (`EvseMachine.restore_session`), so a token without a cancellation reads as AUTHORIZED. Energy
    transfer without a token never happened; such a record reads as if it had no token (it is
    cancelled at restore, as before).
    """
    if not authorized:
        return _P.CANCELLED if cancelled else _P.PENDING
    if charging_started:
        return _P.CANCELLED_CHARGED if cancelled else _P.CHARGED
    return _P.CANCELLED_AUTHORIZED if cancelled else _P.AUTHORIZED


@dataclass(slots=True)
class Counters:
    """Wear counters (persisted by the store): closes of the contactor and opens under load."""

    contactor_cycles: int = 0
    openings_under_load: int = 0
