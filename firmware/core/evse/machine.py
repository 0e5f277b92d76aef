"""The per-EVSE state machine: session lifecycle, SessionEvents and the IEC 61851 safety reactions.

Design. The machine keeps the facts it was told (`facts.EvseFacts`) and, after every input or
`tick(now)`, *settles*: it derives the one state those facts call for, then emits the output changes
(relay, CP PWM, lock, LED) and the SessionEvents of the step. Deciding the state from the facts,
rather than from the last edge, is what makes the safety invariant hold by construction: the relay
is commanded closed only in CHARGING, and CHARGING is chosen only when CP is C (or D with
ventilation), the session is authorized, the cable is valid, PWM is on and no fault is active. The
ramp-down states (PAUSING, STOPPING) merely *keep* a closed relay, for at most the 6 s the standard
allows. Legality is declared in `states.TRANSITIONS`. The session's lifecycle is one
`session.SessionPhase`, moved only along `session.PHASE_TRANSITIONS`: PENDING (EV, no token) or
AUTHORIZED (token, no EV) -> EV_CONNECTED -> CHARGED, and from each a cancelled phase.

Timing rules, IEC 61851-1:2017 Annex A (Table A.6 sequences), as in DESIGN.md:

* C/D -> B, -> A, -> E, -> F, diode fault, any fault: the relay opens on the same event (A.3.2,
  sequences 8.1 / 10 / 13; Table A.6 "open within 100 ms").
* B -> C with PWM on and authorized: the relay closes on the same event (limit 3 s, sequence 7).
* The EVSE ends or pauses charging while the EV stays in C: PWM off (X1, state C1), wait up to 6 s
  for B, then open under load and count it (sequence 10.2, Table A.6 "6 s").
* After a fault, F for at least 300 ms (`fault_hold_s`) from the fault (one cleared within that
  time: F for `fault_hold_s` after the clear). A fault that outlasts it gets X1 while it stays
  active, as EVerest does (CX -> F >= 300 ms -> X1): relay open, status Faulted, but CP is
  measurable, so an unplug ends the session (cancelled with EmergencyStop when the fault came) with
  SessionFinished at once; the clear then needs no second F. A new fault drives F again. No session
  starts while faulted (EVerest: none in error): a plug-in during a fault starts one when it clears.
  Nor does one start on what CP read while F was driven (our own -12 V: state F is the EVSE's
  signal, A.2.2): when F ends, the EV is re-read first.
* A CP reading between the bands is no clean C: the relay opens at once (after the debounce), but
  the session goes on; it is a pilot fault only once it has lasted `pilot.PILOT_FAULT_AFTER_S`
  (`PilotChanged.lasting`), since a noisy ADC or a sagging -12 V rail reads between bands now and then.
* A pilot fault (E, a lasting out-of-band reading, -12 V we do not drive) is latched until a clean reading
  taken while CP is not F: our own -12 V during F and "not re-read yet" after F are no news, so a
  lasting short reads E again under X1 and stays one fault (no F -> X1 -> F oscillation). The
  machine's own crash (Fault.INTERNAL) keeps F until cleared.
* The duty changes at most once per 5 s; switching PWM on or off is immediate (A.2.3 / Table A.6).
* PP open or invalid on a socket outlet: no charging (Annex B, Table B.2); never an assumed 13 A.
* With `rcd_self_test`, the RCD is tested (RunRcdSelfTest) at every plug-in, before any session can charge:
  until RcdSelfTested(passed) the EVSE offers nothing (SUSPENDED_EVSE); a failure is
  Fault.RCD_SELF_TEST_FAILED (Error RCD) until a later test, at the next plug-in, passes.

Energy is never invented: every energy figure in a SessionEvent is the latest `MeterSampled`, and
an event without one carries no energy fields (not 0.0). An EVSE with a meter (`has_meter`) takes its
first reading before it offers anything, as EVerest's `initial_meter_value_timeout` does: until then
it is UNAVAILABLE (status Unavailable, like a disabled EVSE: it cannot serve a new session now, so a
backend neither sends it a token nor sees an Available EVSE that refuses one). A token is refused
(`AuthorizationGranted` is illegal there) and a plug-in waits: the first reading starts its session
with that reading's energy. A restored session does not charge before it either. If the reading does
not come, the shell raises `FaultRaised(METER_LOST)` and the EVSE ends Faulted.

What it must never do: close the relay outside CHARGING, keep it closed in a ramp-down beyond
`stop_timeout_s`, let a bug of its own escape as an exception (it ends FAULTED, fail-safe), do I/O
or read a clock: `now` is the shell's monotonic time in seconds.
"""

from __future__ import annotations

import math

from firmware.core.errors import IllegalTransition
from firmware.core.events import (
    DUTY_F,
    FAULT_LED,
    STATUS_LED,
    Led,
    Action,
    CloseRelay,
    CurrentLimitChanged,
    EmitSessionEvent,
    Error,
    Event,
    Fault,
    OpenRelay,
    SessionCancellationReason,
    SessionEvent,
    SetLed,
    SetLock,
    SetPwm,
    StartSessionReason,
    Status,
    RunRcdSelfTest,
)
from firmware.core.evse.facts import RcdTest, _is_on
from firmware.core.evse.inputs import EvseInputs
from firmware.core.evse.session import Session, SessionPhase, StoredSession
from firmware.core.evse.states import RESTORE_SETTLES, STATUS, TICK_SETTLES, TRANSITIONS, State
from firmware.core.pilot import MIN_CURRENT_A, Cp

#: The phases a restored session may go on in when `resume` is set: authorized and not cancelled.
_RESUMABLE = frozenset({SessionPhase.EV_CONNECTED, SessionPhase.CHARGED})


class EvseMachine(EvseInputs):
    """One EVSE. `handle(event, now)`, `tick(now)` and `next_deadline()`; no callbacks or I/O."""

    # --- the API ---------------------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one input; return the actions to carry out, in order (OpenRelay first)."""
        allowed = TRANSITIONS.get((self._state, type(event)))
        if allowed is None:
            raise IllegalTransition(self._state, event)
        if event.cid != self.cid:
            raise ValueError(f"event for EVSE {event.cid} given to EVSE {self.cid}")
        if isinstance(event, CurrentLimitChanged) and not (
            event.current_a == 0 or MIN_CURRENT_A <= event.current_a <= self.config.max_current_a
        ):
            raise ValueError(
                f"current_a must be 0 or {MIN_CURRENT_A:g}..{self.config.max_current_a:g}, got {event.current_a:g}"
            )
        return self._step(event, now, allowed)

    def restore_session(self, stored: StoredSession, now: float, *, reason: SessionCancellationReason,
                        resume: bool) -> list[Action]:
        """Adopt a session that was open when the controller stopped (power loss or reboot).

        Call once at boot, before any CP reading and after trying a first meter reading: the
        cancellation carries the latest reading the machine knows, and no energy fields when the
        meter has not answered yet (nothing is invented). Accepted while the EVSE waits for that
        reading or is disabled (Unavailable). The EV is taken to be still plugged in until CP says
        otherwise. Unless `resume` (config `sessions.resume_after_power_loss`, only for a session
        that was authorized), the session is cancelled with `reason` and nothing charges without a
        fresh authorization; it ends with SessionFinished when the EV is found unplugged.
        """
        if self._session is not None or self._state not in RESTORE_SETTLES:
            raise IllegalTransition(self._state, stored)
        phase = SessionPhase.EV_CONNECTED if stored.phase is SessionPhase.AUTHORIZED else stored.phase
        self._session = Session(
            uuid=stored.uuid, phase=phase, id_token=stored.id_token, reservation_id=stored.reservation_id,
            started_at=now, energy_wh_import_start=stored.energy_wh_import_start,
        )
        self._plugged = True
        notes: list[Action] = []
        if phase not in _RESUMABLE or not resume:
            self._cancel(reason, notes)  # a session cancelled before the restart is not reported again
        return self._step_with(notes, now, RESTORE_SETTLES[self._state])

    def tick(self, now: float) -> list[Action]:
        """Let time pass: deadlines that are due take effect."""
        return self._step(None, now, TICK_SETTLES[self._state])

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` has something to do, or None."""
        deadlines = [self._f_until, self._replug_until, self._ramp_deadline]
        if self._duty_pending:
            deadlines.append(self._duty_changed_at + self.config.pwm_min_interval_s)
        deadlines.append(self._overcurrent_deadline())
        if self._session is not None and not self._session.cancelled:
            deadlines.append(self._session.connect_deadline)
        finite = [d for d in deadlines if d is not None and math.isfinite(d)]
        return min(finite) if finite else None

    # --- the step --------------------------------------------------------------------------------

    def _step(self, event: Event | None, now: float, allowed: frozenset[State]) -> list[Action]:
        return self._step_with([], now, allowed, event)

    def _step_with(self, notes: list[Action], now: float, allowed: frozenset[State],
                   event: Event | None = None) -> list[Action]:
        was_requesting = self._requests_power()
        try:
            if event is not None:
                self._apply(event, now, notes)
            actions = self._settle(now, notes, was_requesting)
            _check_settled(self._state, allowed)
        except Exception as exc:  # noqa: BLE001 - any bug in the machine must end fail-safe, never raise
            self.last_crash = exc  # for the shell's log and the console
            return self._crash()
        return actions

    def _settle(self, now: float, notes: list[Action], was_requesting: bool) -> list[Action]:
        # Faults: each new one drives F for fault_hold_s; one that outlasts it gets X1 (_wanted_duty).
        pilot_fault = self._pilot_fault_now()
        if pilot_fault and not self._pilot_fault:
            notes.append(self._note(SessionEvent.ERROR, error=Error.PILOT_FAULT))
            self._hold_f(now)
        self._pilot_fault = pilot_fault
        active = bool(self._faults) or pilot_fault
        if self._fault_active and not active and now < self._f_until:
            self._f_until = now + self.config.fault_hold_s  # cleared while F is driven: F 300 ms more
        self._fault_active = active
        if self._f_until <= now:
            self._f_until = -math.inf  # served; no longer a deadline
        faulted = active or now < self._f_until
        self._run_timers(now, faulted, notes)
        self._sync_session(now, faulted, notes)

        old, new = self._state, self._target(now, faulted)
        self._state = new
        actions = self._drive_outputs(new, now, was_requesting)
        actions.extend(notes)
        actions.extend(self._transition_notes(old, new))
        return actions

    def _run_timers(self, now: float, faulted: bool, notes: list[Action]) -> None:
        session = self._session
        if session is not None and not session.cancelled:
            if faulted:
                self._cancel(SessionCancellationReason.EMERGENCY_STOP, notes)
            elif not self._enabled:
                self._cancel(self._disable_reason, notes)
            elif now >= session.connect_deadline:
                self._cancel(SessionCancellationReason.OTHER, notes)
            elif (overcurrent_deadline := self._overcurrent_deadline()) is not None and now >= overcurrent_deadline:
                notes.append(self._note(SessionEvent.ERROR, error=Error.OVER_CURRENT))
                self._cancel(SessionCancellationReason.EMERGENCY_STOP, notes)
                self._overcurrent_since = None
        if not self._relay:
            self._overcurrent_since = None
        # A replug runs its whole duration (>= 300 ms of F), even if the session is stopped meanwhile.
        if self._replug_until is not None and (now >= self._replug_until or faulted):
            self._replug_until = None
            notes.append(self._note(SessionEvent.REPLUG_FINISHED))

    def _sync_session(self, now: float, faulted: bool, notes: list[Action]) -> None:
        session = self._session
        if session is not None:
            if self._plugged:
                if session.phase is SessionPhase.AUTHORIZED:
                    session.advance(SessionPhase.EV_CONNECTED)
                session.connect_deadline = math.inf
            elif session.phase is not SessionPhase.AUTHORIZED:  # the EV was seen and left, or cancelled
                notes.append(self._energy_note(SessionEvent.SESSION_FINISHED))
                self._session = None
        if (
            self._session is None
            and self._plugged
            and self._reading_is_news()  # when F ends, the EV is re-read before a session starts
            and self._enabled
            and self.meter_ready
            and not faulted
        ):
            self._start_session(now, StartSessionReason.EV_CONNECTED, notes)

    def _target(self, now: float, faulted: bool) -> State:
        if faulted:
            return State.FAULTED
        if self._replug_until is not None:
            return State.REPLUGGING
        session = self._session
        if session is None:
            return State.AVAILABLE if self._enabled and self.meter_ready else State.UNAVAILABLE
        if not self._plugged:
            return State.WAITING_FOR_EV
        # An EV-side or cable problem opens at once; only a healthy EV gets the 6 s ramp-down.
        hazard = (
            not self._cable_ok()
            or (self.cp is Cp.D and not self.config.ventilation_available)
            or not self.meter_ready  # a restored session: no power before the first reading
            or not self._rcd_ready()  # the RCD self-test of this plug-in has not passed (yet)
        )
        ramping = (
            bool(self._relay)
            and self._requests_power()
            and not hazard
            and (self._ramp_deadline is None or now < self._ramp_deadline)
        )
        if session.cancelled:
            if ramping:
                return State.STOPPING
            return State.FINISHING if self._enabled else State.UNAVAILABLE
        if session.phase is SessionPhase.PENDING:
            return State.WAITING_FOR_AUTH
        if hazard:
            return State.SUSPENDED_EVSE
        if self._offer_a() < MIN_CURRENT_A:
            return State.PAUSING if ramping else State.SUSPENDED_EVSE
        return State.CHARGING if self._requests_power() else State.SUSPENDED_EV

    def _drive_outputs(self, state: State, now: float, was_requesting: bool) -> list[Action]:
        cid = self.cid
        actions: list[Action] = []
        relay = state is State.CHARGING or (state in (State.PAUSING, State.STOPPING) and bool(self._relay))
        if relay and self._ramp_deadline is None and state is not State.CHARGING:
            self._ramp_deadline = now + self.config.stop_timeout_s
        elif state is State.CHARGING:
            self._ramp_deadline = None
        if self._relay is not False and not relay:
            under_load = bool(self._relay) and was_requesting and self.cp is not Cp.B
            self.counters.openings_under_load += under_load
            self._relay, self._ramp_deadline = False, None
            actions.append(OpenRelay(cid=cid, under_load=under_load))

        duty = self._wanted_duty(state, now)
        self._duty_pending = False
        if _is_on(duty) and _is_on(self._duty) and duty != self._duty:
            if now < self._duty_changed_at + self.config.pwm_min_interval_s:
                duty, self._duty_pending = self.duty_pct, True  # keep; retry at the 5 s mark
        if duty != self._duty:
            if self._duty == DUTY_F or (duty == DUTY_F and not self._reading_is_faulty()):
                # Readings from before F say nothing about the EV after it, and what we read while
                # driving F was our own -12 V: re-read. A faulty reading (E, out of band) is kept
                # into F; the pilot fault itself is latched (_pilot_fault_now) until a clean reading.
                self._reading = None
            if _is_on(duty):
                self._duty_changed_at = now
            self._duty = duty
            actions.append(SetPwm(cid=cid, duty_pct=duty))

        actions.extend(self._drive_lock(relay))
        led = self.wanted_led(state)
        if led != self._led:
            self._led = led
            actions.append(SetLed(cid=cid, led=led))
        if relay and not self._relay:
            self._relay = True
            self.counters.contactor_cycles += 1
            actions.append(CloseRelay(cid=cid))
        if self.config.rcd_self_test and self._plugged and self._rcd_test is RcdTest.UNTESTED:
            self._rcd_test = RcdTest.RUNNING  # before each session: at every plug-in
            actions.append(RunRcdSelfTest(cid=cid))
        return actions

    def wanted_led(self, state: State | None = None) -> Led:
        """The LED pattern for `state` (default: the current one): the status's, or while Faulted the
        pattern of the first active fault (catalogue.FAULT_LED; a pilot fault: FAULT_PILOT)."""
        state = self._state if state is None else state
        if state is not State.FAULTED:
            return STATUS_LED[STATUS[state]]
        led = next((FAULT_LED[f] for f in FAULT_LED if f in self._faults), None)
        if led is None and self._pilot_fault:
            led = Led.FAULT_PILOT
        return led or Led.FAULT

    def _drive_lock(self, relay: bool) -> list[Action]:
        """A socket's lock holds the cable while the relay is (or must be kept) closed or a session is
        authorized; a tethered cable has none to drive."""
        session = self._session
        locked = self.config.socket_outlet and self._plugged and (
            relay
            or Fault.RELAY_WELDED in self._faults
            or (session is not None and session.authorized and not session.cancelled)
        )
        if locked == self._locked:
            return []
        self._locked = locked
        return [SetLock(cid=self.cid, locked=locked)]

    def _transition_notes(self, old: State, new: State) -> list[Action]:
        if old is new:
            return []
        session = self._session
        if new is State.CHARGING and session is not None:
            if session.phase is SessionPhase.CHARGED:
                return [self._note(SessionEvent.CHARGING_RESUMED)]
            session.advance(SessionPhase.CHARGED)
            return [self._note(SessionEvent.CHARGING_STARTED)]
        if old is State.CHARGING and new is State.SUSPENDED_EV:
            return [self._note(SessionEvent.CHARGING_PAUSED_EV)]
        if old is State.CHARGING and new in (State.SUSPENDED_EVSE, State.PAUSING, State.REPLUGGING):
            return [self._note(SessionEvent.CHARGING_PAUSED_EVSE)]
        if new is State.WAITING_FOR_AUTH:
            return [self._note(SessionEvent.AUTH_REQUIRED)]
        return []

    def _crash(self) -> list[Action]:
        """A bug inside the machine: latch an internal fault and return fail-safe outputs."""
        self._faults.add(Fault.INTERNAL)
        self._fault_active, self._f_until = True, math.inf  # our own bug: F, nothing re-read, until cleared
        self._state = State.FAULTED
        self._relay, self._duty, self._led = False, DUTY_F, STATUS_LED[Status.FAULTED]
        self._duty_pending = False
        return [
            OpenRelay(cid=self.cid, under_load=False),
            SetPwm(cid=self.cid, duty_pct=DUTY_F),
            SetLed(cid=self.cid, led=self._led),
            EmitSessionEvent(cid=self.cid, uuid="", event=SessionEvent.ERROR, error=Error.INTERNAL),
        ]


def _check_settled(state: State, allowed: frozenset[State]) -> None:
    """A settle outside the declared states is a bug of the machine: raise, so the step ends FAULTED."""
    if state not in allowed:
        raise AssertionError(f"settled in {state} outside {sorted(s.name for s in allowed)}")
