"""Supervision: what the shell's raw readings mean, decided in the core.

The shell samples RCD, over-temperature, relay feedback and PP, polls the meters and watches the backend
link; this module turns the readings into facts for the charger (`FaultRaised`/`FaultCleared`,
`PpChanged`, `OnlineChanged`, `FallbackChanged`) by the rules `firmware/app.py` applied before issue 9:

* RCD, over-temperature (`SafetyInputs`): the input is the fault, raised and cleared on change; the
  charger opens the relay at once (IEC 61851-1 Table A.6).
* Relay feedback (`RelayFeedback`): a commanded/feedback mismatch is a fault once it lasted
  `RELAY_FEEDBACK_GRACE_S` (the contactor's travel): closed while commanded open is RELAY_WELDED, open
  while commanded closed RELAY_STUCK_OPEN (EVerest's MREC17EVSEContactorFault). Welded stays while the
  feedback reads closed, whatever is commanded; stuck-open clears with the mismatch. Feedback None never
  faults.
* Outputs (`Actuators`): a lock whose feedback did not confirm is CONNECTOR_LOCK_FAILED (EVerest:
  connector_lock/ConnectorLockFailedLock|Unlock) until a later drive of the lock confirms; an output
  that could not be written (relay, PWM, lock: HardwareError) is OUTPUT_FAILED, latched until restart
  (the EVSE stays Faulted with relays open: a board that cannot drive its outputs must not charge).
* PP (`PpDebounce`, IEC 61851-1 Table B.2): a new resistance counts once stable (5 %, or open) for
  `PP_DEBOUNCE_S`, longer than CP's so an unplug reaches A first; the first reading counts at once.
* Meter (`MeterWatch`): no first reading (a failure, or none `stale_after_s` after the start: EVerest's
  initial_meter_value_timeout) is METER_LOST; later, a failure `stale_after_s` after the last good read
  is. A good read clears it.
* Backend link (`Fallback`): `after_s` after the first LinkDown, while still down, the fallback current
  applies; LinkUp lifts it.

The model is EVerest's evse_manager error handling: a named error is raised once and cleared once, and the
charger decides what it means. API as every core machine (STYLE.md B2): `handle(event, now)`, `tick(now)`,
`next_deadline()`; `Supervisor` routes by `cid`. A sensor reports what it sees, so every input is legal in
every state (no `IllegalTransition`); the TRANSITIONS tables say where each may lead. Relay feedback and PP
are judged on each sample (the shell samples them continuously): no deadlines there; the meter's first reading
and the fallback have one. The input and output facts are in `supervision_events`; the two link parts
(`MeterWatch`, `Fallback`) are in `links.py` and re-exported here.

Never: read a clock, sleep, log, do I/O, import the shell or the HAL (enforced by
tests/test_layering.py), or drive an output. `now` is the shell's `loop.time()`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, TypeVar, assert_never

from firmware.core.events import Fault, FaultRaised, PpChanged, _check_cid, _check_finite
from firmware.core.links import (
    LINK_TRANSITIONS,
    METER_TRANSITIONS,
    Fallback,
    LinkState,
    MeterState,
    MeterWatch,
    _change,
)

__all__ = [  # the links' parts are re-exported: supervision is the one way in
    "LINK_TRANSITIONS",
    "METER_TRANSITIONS",
    "PP_DEBOUNCE_S",
    "RELAY_FEEDBACK_GRACE_S",
    "Actuators",
    "Fallback",
    "LinkState",
    "MeterState",
    "MeterWatch",
    "PpDebounce",
    "RelayFeedback",
    "SafetyInputs",
    "Supervisor",
    "same_pp",
]
from firmware.core.supervision_events import (FaultChange, InputsSensed, LinkDown, LinkUp,
                                              LockSensed, MeterReadFailed, MeterReadSucceeded, Output,
                                              OutputFailed, PpSampled, RelaySensed, SupervisionEvent)

#: A feedback mismatch shorter than this is the contactor moving.
RELAY_FEEDBACK_GRACE_S: Final = 0.3
#: Longer than the CP debounce, so an unplug ends a session as unplugged (A first).
PP_DEBOUNCE_S: Final = 0.1
#: PP readings within this fraction of the reference (at least 1 Ohm) are one cable.
PP_SAME_FRACTION: Final = 0.05


_P = TypeVar("_P")


# --- RCD, over-temperature, relay feedback --------------------------------------------


class SafetyInputs:
    """RCD and over-temperature of one EVSE: each input is its fault, on change."""

    __slots__ = ("_active", "cid")

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self._active: set[Fault] = set()

    def handle(self, event: InputsSensed, now: float) -> list[FaultChange]:
        """RCD first, then over-temperature. No debounce, so `now` is unused."""
        out: list[FaultChange] = []
        for fault, active in ((Fault.RCD_TRIPPED, event.rcd_tripped),
                              (Fault.OVERTEMPERATURE, event.overtemperature)):
            if bool(active) != (fault in self._active):
                self._active ^= {fault}
                out.append(_change(self.cid, fault, bool(active)))
        return out


class RelayFeedback:
    """Welded / stuck-open detection of one contactor, judged on each `RelaySensed`."""

    __slots__ = ("_grace_s", "_mismatch_since", "_stuck_open", "_welded", "cid")

    def __init__(self, cid: int, grace_s: float = RELAY_FEEDBACK_GRACE_S) -> None:
        _check_finite("grace_s", grace_s, 0.0)
        self.cid, self._grace_s = cid, grace_s
        self._mismatch_since: float | None = None
        self._welded = self._stuck_open = False

    def handle(self, event: RelaySensed, now: float) -> list[FaultChange]:
        """RELAY_WELDED first, then RELAY_STUCK_OPEN."""
        commanded, feedback = event.commanded_closed, event.feedback_closed
        if feedback is None or feedback == commanded:
            self._mismatch_since = None
        elif self._mismatch_since is None:
            self._mismatch_since = now
        since = self._mismatch_since
        late = since is not None and now - since >= self._grace_s
        # welded stays a fault until the feedback opens (or reads None)
        welded = bool(feedback) and ((late and not commanded) or self._welded)
        stuck_open = late and feedback is False and commanded
        out: list[FaultChange] = []
        if welded != self._welded:
            out.append(_change(self.cid, Fault.RELAY_WELDED, welded))
        if stuck_open != self._stuck_open:
            out.append(_change(self.cid, Fault.RELAY_STUCK_OPEN, stuck_open))
        self._welded, self._stuck_open = welded, stuck_open
        return out


class Actuators:
    """What the shell reports about driving one EVSE's outputs: the lock's confirmation, failed writes."""

    __slots__ = ("_lock_failed", "_output_failed", "cid")

    def __init__(self, cid: int) -> None:
        self.cid = cid
        self._lock_failed = self._output_failed = False

    def handle(self, event: LockSensed | OutputFailed, now: float) -> list[FaultChange]:
        """No timing here (the lock's confirmation time is the HAL's), so `now` is unused."""
        if isinstance(event, OutputFailed):
            if self._output_failed:
                return []
            self._output_failed = True
            return [FaultRaised(cid=self.cid, fault=Fault.OUTPUT_FAILED)]
        failed = not event.confirmed
        if failed == self._lock_failed:
            return []
        self._lock_failed = failed
        return [_change(self.cid, Fault.CONNECTOR_LOCK_FAILED, failed)]


# --- Proximity pilot ------------------------------------------------------------------


def same_pp(a: float | None, b: float | None) -> bool:
    """One cable: both open, or `a` within 5 % of `b` (of at least 1 Ohm)."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= PP_SAME_FRACTION * max(abs(b), 1.0)


class PpDebounce:
    """PP debounce of one EVSE, judged on each `PpSampled`."""

    __slots__ = ("_candidate", "_debounce_s", "_known", "_ohms", "cid")

    def __init__(self, cid: int, debounce_s: float = PP_DEBOUNCE_S) -> None:
        _check_finite("debounce_s", debounce_s, 0.0)
        self.cid, self._debounce_s = cid, debounce_s
        self._known = False
        self._ohms: float | None = None
        self._candidate: tuple[float | None, float] | None = None  # (first, since)

    @property
    def ohms(self) -> float | None:
        """The last reported resistance (None: open, or nothing reported yet)."""
        return self._ohms

    @property
    def settling(self) -> bool:
        """A reading that differs from the reported one is being debounced."""
        return self._candidate is not None

    def handle(self, event: PpSampled, now: float) -> list[PpChanged]:
        ohms, candidate = event.ohms, self._candidate
        if self._known and same_pp(ohms, self._ohms):
            candidate = None
        elif candidate is None or not same_pp(ohms, candidate[0]):
            candidate = (ohms, now)
        self._candidate = candidate
        if candidate is None:
            return []
        if now - candidate[1] >= self._debounce_s or not self._known:
            self._candidate, self._ohms, self._known = None, ohms, True
            return [PpChanged(cid=self.cid, ohms=ohms)]
        return []


# --- All of it ------------------------------------------------------------------------


class Supervisor:
    """Every EVSE's parts and the link fallback behind one handle/tick/next_deadline.

    Create it at boot where the first meter readings are attempted (`now`): each
    first-reading deadline runs from there. `meter_stale_after_s` has an entry for
    each EVSE with a meter.
    """

    def __init__(self, cids: Iterable[int], *,
                 meter_stale_after_s: Mapping[int, float], fallback_after_s: float,
                 fallback_current_a: float, now: float,
                 relay_feedback_grace_s: float = RELAY_FEEDBACK_GRACE_S) -> None:
        ids = list(cids)
        for cid in ids:
            _check_cid(cid)
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"EVSE ids must be unique, at least one: {ids}")
        if unknown := sorted(set(meter_stale_after_s) - set(ids)):
            raise ValueError(f"meters for unknown EVSEs: {unknown}")
        self.inputs = {cid: SafetyInputs(cid) for cid in ids}
        self.relays = {cid: RelayFeedback(cid, relay_feedback_grace_s) for cid in ids}
        self.actuators = {cid: Actuators(cid) for cid in ids}
        self.pp = {cid: PpDebounce(cid) for cid in ids}
        self.meters = {cid: MeterWatch(cid, meter_stale_after_s[cid], now)
                       for cid in ids if cid in meter_stale_after_s}
        self.fallback = Fallback(fallback_after_s, fallback_current_a)

    @property
    def online(self) -> bool:
        return self.fallback.online

    def handle(self, event: SupervisionEvent, now: float) -> list[Output]:
        match event:
            case InputsSensed():
                return list(_part(self.inputs, event.cid).handle(event, now))
            case RelaySensed():
                return list(_part(self.relays, event.cid).handle(event, now))
            case PpSampled():
                return list(_part(self.pp, event.cid).handle(event, now))
            case LockSensed() | OutputFailed():
                return list(_part(self.actuators, event.cid).handle(event, now))
            case MeterReadSucceeded() | MeterReadFailed():
                meter = _part(self.meters, event.cid, " with a meter")
                return list(meter.handle(event, now))
            case LinkUp() | LinkDown():
                return list(self.fallback.handle(event, now))
            case _:
                assert_never(event)

    def tick(self, now: float) -> list[Output]:
        """Meters in EVSE order, then the link."""
        out: list[Output] = []
        for meter in self.meters.values():
            out.extend(meter.tick(now))
        out.extend(self.fallback.tick(now))
        return out

    def next_deadline(self) -> float | None:
        parts: list[MeterWatch | Fallback] = [*self.meters.values(), self.fallback]
        return min((d for p in parts if (d := p.next_deadline()) is not None),
                   default=None)


def _part(parts: dict[int, _P], cid: int, kind: str = "") -> _P:
    part = parts.get(cid)
    if part is None:
        raise ValueError(f"no EVSE {cid}{kind} is supervised")
    return part
