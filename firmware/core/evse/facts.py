"""`EvseFacts`: what one EVSE's machine knows, and what it derives from those facts.

The facts are what the machine was told (the debounced CP reading, the PP cable rating, active
faults, enabled, the current limit, the meter's latest reading, the session) and the outputs as last
commanded. The derivations are pure reads of them: the offered current (limited by the PP rating on a
socket outlet, IEC 61851-1 Annex B Table B.2, never an assumed 13 A), the wanted CP duty (F, X1 or
the PWM of the offer, A.2.3), whether a reading is a pilot fault, and the SessionEvent notes of a
step, which carry the latest reading's energy and never an invented figure. It also keeps the
books the step relies on: the F hold, the soft over-current timer, and opening or cancelling a
session with its SessionEvent.

`EvseFacts` is the base of `inputs.EvseInputs` (and so of `machine.EvseMachine`) and is never used
alone. It must never settle a state, command an output, do I/O or read a clock: `now` is the shell's
monotonic time in seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import Enum

from firmware.core.events import (
    DUTY_F,
    DUTY_X1,
    Action,
    EmitSessionEvent,
    Fault,
    SessionCancellationReason,
    SessionEvent,
    StartSessionReason,
    Status,
)
from firmware.core.evse.config import EvseConfig
from firmware.core.evse.session import Counters, Session, SessionPhase
from firmware.core.evse.states import STATUS, State
from firmware.core.pilot import Cp, PilotReading, current_to_duty


class RcdTest(Enum):
    """The RCD self-test of the EV now plugged in (IEC 62955 RDC-DD / IEC 62752 test input)."""

    UNTESTED = "untested"  # to be run when an EV is plugged in (with `EvseConfig.rcd_self_test`)
    RUNNING = "running"  # RunRcdSelfTest was emitted; RcdSelfTested will tell
    PASSED = "passed"  # charging may start for this plug-in
    FAILED = "failed"  # Fault.RCD_SELF_TEST_FAILED; tested again at the next plug-in


def _is_on(duty_pct: float | None) -> bool:
    return duty_pct is not None and duty_pct not in (DUTY_X1, DUTY_F)


class EvseFacts:
    """One EVSE's facts and read-only views; `machine.EvseMachine` adds the step."""

    def __init__(self, config: EvseConfig, *, new_session_id: Callable[[], str]) -> None:
        self.config = config
        self.cid = config.cid
        self.counters = Counters()
        self._new_session_id = new_session_id
        self._state = State.AVAILABLE
        self._reading: PilotReading | None = None  # None: not known since we last drove F
        self._plugged = False
        self._pp_a: int | None = None
        self._faults: set[Fault] = set()
        self._pilot_fault = False  # latched: ends only with a clean reading taken while CP is not F
        self._fault_active = False
        self._f_until = -math.inf  # F (after a fault) is driven until then; +inf: until the fault clears
        self._enabled = True
        self._disable_reason = SessionCancellationReason.REMOTE
        self._limit_a = config.max_current_a
        self._session: Session | None = None
        self._replug_until: float | None = None
        self._ramp_deadline: float | None = None
        self._overcurrent_since: float | None = None
        self._energy_wh: tuple[float, float | None] | None = None  # (import, export) of the latest reading
        self._rcd_test = RcdTest.UNTESTED
        # Outputs as last commanded; None = unknown, so the first settle commands every output.
        self._relay: bool | None = None
        self._duty: float | None = None
        self._locked: bool | None = None
        self._led: object = None
        self._duty_changed_at = -math.inf
        self._duty_pending = False
        self.last_crash: Exception | None = None

    # --- read-only views -------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def status(self) -> Status:
        return STATUS[self._state]

    @property
    def relay_closed(self) -> bool:
        return bool(self._relay)

    @property
    def duty_pct(self) -> float:
        return DUTY_F if self._duty is None else self._duty

    @property
    def pwm_on(self) -> bool:
        return _is_on(self._duty)

    @property
    def cp(self) -> Cp | None:
        return None if self._reading is None else self._reading.cp

    @property
    def plugged(self) -> bool:
        """An EV is connected, as last seen (kept while CP is driven to F and cannot be read)."""
        return self._plugged

    @property
    def session(self) -> Session | None:
        return self._session

    @property
    def faults(self) -> frozenset[Fault]:
        return frozenset(self._faults)

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def meter_ready(self) -> bool:
        """Sessions may start: the meter has given its first reading, or the EVSE has no meter."""
        return self._energy_wh is not None or not self.config.has_meter

    @property
    def offered_a(self) -> float:
        return self._offer_a() if self.pwm_on else 0.0

    # Views for `firmware.core.why` (the console's `why`, the state document's `blocked_by`): read-only.

    @property
    def offer_limit_a(self) -> float:
        """What the EVSE would offer with PWM on: its limit, capped by its maximum and the cable's rating
        (0 on a socket outlet without a valid PP reading)."""
        return self._offer_a()

    @property
    def limit_a(self) -> float:
        """The current limit the machine was last given (`CurrentLimitChanged`; 0 pauses)."""
        return self._limit_a

    @property
    def pp_max_a(self) -> int | None:
        """The plugged cable's rating read from PP (IEC 61851-1 Table B.2); None: open, invalid or not read."""
        return self._pp_a

    @property
    def pilot_reading(self) -> PilotReading | None:
        """The CP reading the machine acts on; None: CP not read since F was last driven or ended."""
        return self._reading

    @property
    def pilot_fault(self) -> bool:
        """A pilot fault is latched (E, -12 V we do not drive, a lasting out-of-band reading) until a
        clean reading taken while CP is not F."""
        return self._pilot_fault

    @property
    def f_hold_until(self) -> float | None:
        """While the F hold after a fault runs (IEC 61851-1 Table A.6: F for at least 300 ms): when it
        ends. None when none runs (the F after the machine's own crash lasts until Fault.INTERNAL clears)."""
        return self._f_until if math.isfinite(self._f_until) else None

    @property
    def replug_until(self) -> float | None:
        """While a virtual replug drives F: when it ends."""
        return self._replug_until

    @property
    def duty_change_due(self) -> float | None:
        """A duty change waits for the 5 s interval (IEC 61851-1 A.2.3): when it may be made; else None."""
        return self._duty_changed_at + self.config.pwm_min_interval_s if self._duty_pending else None

    @property
    def rcd_test(self) -> RcdTest:
        """The RCD self-test of the EV now plugged in."""
        return self._rcd_test

    @property
    def disable_reason(self) -> SessionCancellationReason:
        """The reason given with the last SetEnabled (a disable cancels a session with it)."""
        return self._disable_reason


    # --- helpers ---------------------------------------------------------------------------------

    def _requests_power(self) -> bool:
        return self.cp in (Cp.C, Cp.D)

    def _reading_is_faulty(self) -> bool:
        """CP short (E), a voltage outside every band that has lasted (`PilotReading.lasting`), or
        -12 V while we are not driving F. A fresh out-of-band reading is no fault yet (it is no clean C
        either: the relay is open while it lasts)."""
        if self._reading is None:
            return False
        cp = self._reading.cp
        return (cp is None and self._reading.lasting) or cp is Cp.E or (cp is Cp.F and self._duty != DUTY_F)

    def _pilot_fault_now(self) -> bool:
        """A pilot fault lasts until a reading says otherwise: no reading yet (CP is re-read after F),
        our own -12 V while we drive F and a fresh out-of-band reading (not lasting yet) are no news, so
        a lasting short or a broken front end cannot oscillate F <-> X1."""
        reading = self._reading
        if reading is None or (reading.cp is Cp.F and self._duty == DUTY_F) or (
                reading.cp is None and not reading.lasting):
            return self._pilot_fault
        return self._reading_is_faulty()

    def _rcd_ready(self) -> bool:
        """Charging may start as far as the RCD is concerned: no self-test configured, or it passed."""
        return not self.config.rcd_self_test or self._rcd_test is RcdTest.PASSED

    def _reading_is_news(self) -> bool:
        """CP was read since we last drove F. While we drive F (up to the settle that ends it) a reading
        says nothing about the EV: -12 V is our own signal (state F is the EVSE's, IEC 61851-1 A.2.2) and
        A-D readings are dropped as stale; so when F ends, a plugged EV is "as last seen" until re-read."""
        return self._reading is not None and self._duty != DUTY_F

    def _hold_f(self, now: float) -> None:
        """A new fault: F for at least fault_hold_s from now (IEC 61851-1 Table A.6)."""
        self._f_until = max(self._f_until, now + self.config.fault_hold_s)

    def _cable_ok(self) -> bool:
        return not self.config.socket_outlet or self._pp_a is not None

    def _offer_a(self) -> float:
        offer = min(self._limit_a, self.config.max_current_a)
        if self.config.socket_outlet:
            offer = min(offer, self._pp_a or 0)
        elif self.config.cable_max_current_a is not None:
            offer = min(offer, self.config.cable_max_current_a)
        return offer

    def _wanted_duty(self, state: State, now: float) -> float:
        if state is State.REPLUGGING:
            return DUTY_F
        if state is State.FAULTED:  # F for its hold; a lasting fault then gets X1, so an unplug is seen
            return DUTY_F if now < self._f_until else DUTY_X1
        if state in (State.CHARGING, State.SUSPENDED_EV):
            return current_to_duty(self._offer_a())
        return DUTY_X1

    def _signalled_a(self) -> float:
        return self._offer_a() if self.pwm_on else 0.0

    def _check_overcurrent(self, current_a: float, now: float) -> None:
        """Soft over-current: above the signalled limit + tolerance for overcurrent_timeout_s."""
        signalled_a = self._signalled_a()
        limit_a = signalled_a * (1 + self.config.overcurrent_tolerance_pct / 100) + self.config.overcurrent_tolerance_a
        if self._relay and current_a > limit_a:
            if self._overcurrent_since is None:
                self._overcurrent_since = now
        else:
            self._overcurrent_since = None

    def _overcurrent_deadline(self) -> float | None:
        """When the soft over-current timer runs out, while it can still act: it cancels a running
        session, so with the relay open or the session cancelled (STOPPING) it is no deadline. The tick's
        check and `next_deadline` both use this one sum, so a tick at the reported time finds it due."""
        session = self._session
        if self._overcurrent_since is None or not self._relay or session is None or session.cancelled:
            return None
        return self._overcurrent_since + self.config.overcurrent_timeout_s

    # --- session bookkeeping ---------------------------------------------------------------------

    def _start_session(
        self,
        now: float,
        reason: StartSessionReason,
        notes: list[Action],
        id_token: str | None = None,
        reservation_id: int | None = None,
    ) -> None:
        if reason is not StartSessionReason.AUTHORIZED:
            phase = SessionPhase.PENDING
        else:
            phase = SessionPhase.EV_CONNECTED if self._plugged else SessionPhase.AUTHORIZED
        session = Session(
            uuid=self._new_session_id(),
            phase=phase,
            id_token=id_token,
            reservation_id=reservation_id,
            started_at=now,
            energy_wh_import_start=self._energy_wh[0] if self._energy_wh is not None else 0.0,
        )
        if phase is SessionPhase.AUTHORIZED:
            session.connect_deadline = now + self.config.connection_timeout_s
        self._session = session
        notes.append(
            self._energy_note(
                SessionEvent.SESSION_STARTED, reason=reason.value, id_token=id_token, reservation_id=reservation_id
            )
        )

    def _cancel(self, reason: SessionCancellationReason, notes: list[Action]) -> None:
        session = self._session
        if session is not None and not session.cancelled:
            session.cancel()
            notes.append(self._energy_note(SessionEvent.SESSION_CANCELLED, reason=reason.value))

    def _note(self, event: SessionEvent, **fields: object) -> EmitSessionEvent:
        uuid = self._session.uuid if self._session is not None else ""
        return EmitSessionEvent(cid=self.cid, uuid=uuid, event=event, **fields)  # type: ignore[arg-type]

    def _energy_note(self, event: SessionEvent, **fields: object) -> EmitSessionEvent:
        """A note with the latest reading's energy registers; without a reading, none (never 0.0)."""
        if self._energy_wh is not None:
            fields.update(energy_wh_import=self._energy_wh[0], energy_wh_export=self._energy_wh[1])
        return self._note(event, **fields)
