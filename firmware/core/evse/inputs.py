"""`EvseInputs`: how each accepted input changes what one EVSE's machine knows, one handler per event type.

A handler records the fact or command (the CP reading, the PP rating, a fault, a token, a stop ...)
and the SessionEvent notes that belong to the input itself (Error for a diode fault or for D
without ventilation, IEC 61851-1 Annex A.2.2 and Table A.6; ReservationAuthtokenMismatch;
ReplugStarted). Which state follows is decided afterwards, from all the facts, by the settle of
`machine.EvseMachine`, the only subclass. Legality is checked before a handler runs
(`states.TRANSITIONS`).

It must never settle a state, command an output, do I/O or read a clock: `now` is the shell's
monotonic time in seconds.
"""

from __future__ import annotations

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    DUTY_F,
    FAULT_ERROR,
    Action,
    AuthorizationGranted,
    AuthorizationRefused,
    CurrentLimitChanged,
    Error,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    PilotChanged,
    PpChanged,
    RcdSelfTested,
    ReplugRequested,
    SessionEvent,
    SetEnabled,
    StartSessionReason,
    StopRequested,
)
from firmware.core.evse.facts import EvseFacts, RcdTest
from firmware.core.evse.session import SessionPhase
from firmware.core.pilot import Cp, PilotReading, pp_ampacity_a


class EvseInputs(EvseFacts):
    """The input handlers of `machine.EvseMachine`; never used alone."""

    def _apply(self, event: Event, now: float, notes: list[Action]) -> None:
        match event:
            case PilotChanged():
                self._on_pilot(event, now, notes)
            case PpChanged() | FaultCleared() | CurrentLimitChanged():
                self._on_setting(event)
            case AuthorizationGranted():
                self._on_authorization(event, now, notes)
            case AuthorizationRefused():
                self._on_refusal(event, notes)
            case StopRequested(reason=reason):
                self._cancel(reason, notes)
            case SetEnabled():
                self._on_enabled(event, notes)
            case FaultRaised():
                self._on_fault(event, now, notes)
            case MeterSampled():
                self._on_meter(event, now)
            case ReplugRequested():
                self._on_replug(event, now, notes)
            case RcdSelfTested(passed=passed):
                self._on_rcd_tested(passed, now, notes)
            case _:  # pragma: no cover - TRANSITIONS admits only the types above
                raise IllegalTransition(self._state, event)

    def _on_setting(self, event: PpChanged | FaultCleared | CurrentLimitChanged) -> None:
        """A fact that is only recorded: the cable's rating, a fault gone, the current limit."""
        match event:
            case PpChanged(ohms=ohms):
                self._pp_a = pp_ampacity_a(ohms, self.config.phases)
            case FaultCleared(fault=fault):
                self._faults.discard(fault)
            case CurrentLimitChanged(current_a=current_a):
                self._limit_a = current_a

    def _on_pilot(self, event: PilotChanged, now: float, notes: list[Action]) -> None:
        cp = event.cp
        if self._duty == DUTY_F and cp in (Cp.A, Cp.B, Cp.C, Cp.D):
            return  # stale: while we drive -12 V the EV's diode hides its state (A.2.2)
        previous = self.cp
        self._reading = PilotReading(cp=cp, diode_ok=event.diode_ok, lasting=event.lasting)
        if cp is Cp.A:
            self._plugged = False
            if self._rcd_test is not RcdTest.RUNNING:
                self._rcd_test = RcdTest.UNTESTED  # the next plug-in is tested again
        elif cp in (Cp.B, Cp.C, Cp.D):
            self._plugged = True
        if not event.diode_ok:  # one-shot: F for fault_hold_s, session ends (A.2.2)
            notes.append(self._note(SessionEvent.ERROR, error=Error.CAR_DIODE_FAULT))
            self._hold_f(now)
        if cp is Cp.D and previous is not Cp.D and not self.config.ventilation_available:
            notes.append(self._note(SessionEvent.ERROR, error=Error.VENTILATION_NOT_AVAILABLE))

    def _on_authorization(self, event: AuthorizationGranted, now: float, notes: list[Action]) -> None:
        session = self._session
        if session is None:  # the phase follows from whether the EV is plugged in (_start_session)
            self._start_session(now, StartSessionReason.AUTHORIZED, notes, event.id_token, event.reservation_id)
        else:  # WAITING_FOR_AUTH: the EV is there
            session.id_token = event.id_token
            session.reservation_id = event.reservation_id
            session.advance(SessionPhase.EV_CONNECTED)

    def _on_refusal(self, event: AuthorizationRefused, notes: list[Action]) -> None:
        if event.reservation_mismatch:
            notes.append(self._note(SessionEvent.RESERVATION_AUTHTOKEN_MISMATCH))

    def _on_enabled(self, event: SetEnabled, notes: list[Action]) -> None:
        if event.enabled != self._enabled:
            self._enabled, self._disable_reason = event.enabled, event.reason
            notes.append(self._note(SessionEvent.ENABLED if event.enabled else SessionEvent.DISABLED))

    def _on_fault(self, event: FaultRaised, now: float, notes: list[Action]) -> None:
        self._raise(event.fault, now, notes)

    def _raise(self, fault: Fault, now: float, notes: list[Action]) -> None:
        if fault not in self._faults:
            self._faults.add(fault)
            notes.append(self._note(SessionEvent.ERROR, error=FAULT_ERROR[fault]))
            self._hold_f(now)

    def _on_rcd_tested(self, passed: bool, now: float, notes: list[Action]) -> None:
        """A result counts for the EV now plugged in; with none plugged in, the next plug-in is tested
        again. A failure is a fault until a later test passes (EVerest: ac_rcd/Selftest)."""
        if passed:
            self._faults.discard(Fault.RCD_SELF_TEST_FAILED)
            self._rcd_test = RcdTest.PASSED if self._plugged else RcdTest.UNTESTED
        else:
            self._raise(Fault.RCD_SELF_TEST_FAILED, now, notes)
            self._rcd_test = RcdTest.FAILED if self._plugged else RcdTest.UNTESTED

    def _on_meter(self, event: MeterSampled, now: float) -> None:
        self._energy_wh = (event.energy_wh_import, event.energy_wh_export)
        self._check_overcurrent(max(event.currents_a, default=0.0), now)

    def _on_replug(self, event: ReplugRequested, now: float, notes: list[Action]) -> None:
        self._replug_until = now + event.duration_s
        notes.append(self._note(SessionEvent.REPLUG_STARTED))
