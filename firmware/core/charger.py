"""The charger: every EVSE machine of one board, the pilot layer under each, the reservation book
and token authorization above them; the one object the shell's core task steps.

* Events go to the EVSE named by their `cid`. Raw CP samples (`PilotSampled`) first pass that EVSE's
  `PilotMonitor` (debounce, hysteresis, diode check: IEC 61851-1 Table A.4 / A.2.2) and reach the
  machine as `PilotChanged`, as EVerest's IEC layer feeds its charger layer. When a machine stops
  driving F, its monitor is reset so the EV's real state is reported afresh.
* After every step the book learns each EVSE's live state (occupied, faulted, enabled), which drives
  U4 and the G3 holds; the book's outputs are returned with the machines' actions. The book sees a
  step as one change (all EVSEs at once, with a tick's expiries; a used reservation's EVSE is busy
  from its use on), so an EVSE gets hold events only when its held state changes over the step.
* A token goes to the token desk (`firmware.core.tokens`, API.md §5): a matching reservation is consumed
  and the session carries its id; a refused token gives `ReservationAuthtokenMismatch` and never
  closes a relay. Its outputs are settled here, with the rest of the step.
* The status shown is the machine's, except that an Available EVSE that the book holds shows
  Reserved (API.md §5), with the Reserved LED.

Time is injected: every call takes one `Instant` (`at`: monotonic seconds for the machines, aware UTC
for reservations and the local list); the charger keeps the last one to turn the book's UTC deadlines
into monotonic ones. It must never read a clock or do I/O (DESIGN.md principle 1); the shell's single
core task is its only caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum

from firmware.core.auth import AuthSettings, AuthStatus, BackendAnswer, LocalAuthList, TokenDecision
from firmware.core.events import (
    DUTY_F,
    Action,
    AuthorizationGranted,
    CurrentLimitChanged,
    Event,
    Led,
    PilotChanged,
    PilotSampled,
    SessionCancellationReason,
    SetEnabled,
    SetLed,
    SetLock,
    Status,
    StopRequested,
)
from firmware.core.evse import (
    TRANSITIONS,
    EvseConfig,
    EvseMachine,
    State,
    StoredSession,
)
from firmware.core.instant import Instant
from firmware.core.pilot import DEBOUNCE_S, MIN_CURRENT_A, PilotMonitor
from firmware.core.reservations import (
    Reservation,
    ReservationBook,
    ReservationCheckStatus,
    ReservationResult,
)
from firmware.core.tokens import Output, TokenDesk

__all__ = ["Charger", "Output", "SetLocalMaxCurrentResult", "SwitchPhasesResult"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class SetLocalMaxCurrentResult(StrEnum):
    SUCCESS = "Success"
    ERROR_OUT_OF_RANGE = "Error_OutOfRange"
    ERROR_HARDWARE = "Error_Hardware"


class SwitchPhasesResult(StrEnum):
    """evse_manager SwitchThreePhasesWhileChargingResult."""

    SUCCESS = "Success"
    ERROR_NOT_SUPPORTED = "Error_NotSupported"
    ERROR_NOT_CHARGING = "Error_NotCharging"
    ERROR_HARDWARE = "Error_Hardware"


class Charger:
    """All EVSEs of the board. `handle(event, at)`, `tick(at)`, `next_deadline()`, and the
    reservation and token operations of API.md §3 and §5."""

    def __init__(
        self,
        configs: Iterable[EvseConfig],
        *,
        new_session_id: Callable[[], str],
        new_reservation_uuid: Callable[[], str] | None = None,
        debounce_s: float = DEBOUNCE_S,
        reservations_enabled: bool = True,
        auth: AuthSettings = AuthSettings(),  # noqa: B008 - frozen
        online: bool = True,
    ) -> None:
        self.evses: dict[int, EvseMachine] = {}
        self._monitors: dict[int, PilotMonitor] = {}
        for config in configs:
            if config.cid in self.evses:
                raise ValueError(f"EVSE id {config.cid} is configured twice")
            self.evses[config.cid] = EvseMachine(config, new_session_id=new_session_id)
            self._monitors[config.cid] = PilotMonitor(debounce_s)
        if not self.evses:
            raise ValueError("a charger needs at least one EVSE")
        self.book = ReservationBook(
            {cid: m.config.connectors for cid, m in self.evses.items()},
            new_uuid=new_reservation_uuid or new_session_id,
            enabled=reservations_enabled,
        )
        self.tokens = TokenDesk(self.evses, self.book, auth, self._step)
        self.tokens.online = online  # then changed only by supervision's OnlineChanged (LinkUp/LinkDown)
        self._led: dict[int, Led | None] = dict.fromkeys(self.evses)
        self._at = Instant(mono=0.0, utc=_EPOCH)  # the last instant the shell gave
        self._limit_a: dict[int, float] = {cid: m.config.max_current_a for cid, m in self.evses.items()}
        self._fallback_a: float | None = None
        self._fallback_since: float | None = None
        self.phases: dict[int, int] = {cid: m.config.phases for cid, m in self.evses.items()}

    @property
    def local_list(self) -> LocalAuthList:
        return self.tokens.local_list

    @property
    def auth(self) -> AuthSettings:
        return self.tokens.settings

    @property
    def online(self) -> bool:
        """The backend is reachable (the shell clears it while the link is down: the offline policy)."""
        return self.tokens.online

    @online.setter
    def online(self, online: bool) -> None:
        self.tokens.online = online

    # --- views -----------------------------------------------------------------------------------

    def status(self, cid: int) -> Status:
        machine = self._machine(cid)
        if machine.status is Status.AVAILABLE and self.book.reserved(cid):
            return Status.RESERVED
        return machine.status

    def led(self, cid: int) -> Led:
        """The LED pattern the EVSE shows (Reserved when the book holds it)."""
        return Led.RESERVED if self.status(cid) is Status.RESERVED else self._machine(cid).wanted_led()

    @property
    def last_instant(self) -> Instant:
        """The last instant the shell gave (the time of the last step)."""
        return self._at

    @property
    def fallback_a(self) -> float | None:
        """The link supervision's fallback current in force (None: the commanded limits apply)."""
        return self._fallback_a

    @property
    def fallback_since(self) -> float | None:
        """Since when (monotonic) the fallback current applies; None while none does."""
        return self._fallback_since

    def pilot_settling(self, cid: int) -> bool:
        """A CP change of EVSE `cid` is being debounced (for the simulated board's replies)."""
        return self._monitors[self._machine(cid).cid].settling

    def needs_fast_sampling(self, cid: int) -> bool:
        """EVSE `cid`'s pilot must be sampled at the fast rate (`pilot.sample_interval_s`): its relay is
        commanded closed, its PWM is on, or its monitor is timing a change (`PilotMonitor.watching`).
        Every reaction time of DESIGN.md's timing table is about a closed relay, a running PWM (B -> C
        closes the relay) or a debounce; with none of them (no EV, or an EV waiting for a card with PWM
        off) nothing reacts to the pilot within a time limit, and the shell may sample it slowly."""
        evse = self._machine(cid)
        return evse.relay_closed or evse.pwm_on or self._monitors[evse.cid].watching

    # --- the loop API ----------------------------------------------------------------------------

    def start(self, at: Instant) -> list[Output]:
        """The outputs every EVSE wants at boot (after the shell has driven them fail-safe)."""
        self._at = at
        out: list[Output] = []
        for evse in self.evses.values():
            out.extend(evse.tick(at.mono))
        return self._settle(out, at)

    def handle(self, event: Event, at: Instant) -> list[Output]:
        evse = self._machine(event.cid)
        self._at = at
        now = at.mono
        if isinstance(event, PilotSampled):
            read_at = now if event.read_at is None else event.read_at
            reading = self._monitors[event.cid].update(event.volts_hi, event.volts_lo, evse.pwm_on, read_at)
            if reading is None:
                return []
            event = PilotChanged(cid=event.cid, cp=reading.cp, diode_ok=reading.diode_ok, lasting=reading.lasting)
        out = self.tokens.give_held(evse, list(self._step(evse, now, event)), at)
        return self._settle(out, at)  # the plug-in and a held token's use: one step for the book

    def tick(self, at: Instant) -> list[Output]:
        self._at = at
        now, when = at.mono, at.utc
        out: list[Output] = []
        for evse in self.evses.values():
            deadline = evse.next_deadline()
            if deadline is not None and deadline <= now:
                out.extend(self._step(evse, now, None))
        book_deadline = self.book.next_deadline()
        due = book_deadline is not None and book_deadline <= when
        out.extend(self.book.set_evses(self._live(), when, expire=due))  # the machines' changes too: one refresh
        out.extend(self.tokens.expire(at))
        return self._settle(out, at)

    def next_deadline(self) -> float | None:
        deadlines = [d for evse in self.evses.values() if (d := evse.next_deadline()) is not None]
        book_deadline = self.book.next_deadline()
        if book_deadline is not None:
            deadlines.append(self._at.mono_at(book_deadline))
        tokens = self.tokens.next_deadline()
        if tokens is not None:
            deadlines.append(tokens)
        return min(deadlines) if deadlines else None

    # --- tokens (API.md §5) ----------------------------------------------------------------------

    def present_token(
        self, cid: int, id_token: str, at: Instant, token_type: str = "RFID"
    ) -> tuple[TokenDecision | None, list[Output]]:
        """A token at EVSE `cid`. Returns the decision, or None while the backend is asked."""
        evse = self._machine(cid)
        self._at = at
        if (evse.state, AuthorizationGranted) not in TRANSITIONS:
            return TokenDecision(status=AuthStatus.REJECTED, source="state"), []
        decision, out = self.tokens.present(cid, id_token, at, token_type)
        return decision, out if decision is None else self._settle(out, at)

    def backend_auth_answer(self, request_id: str, answer: BackendAnswer, at: Instant) -> list[Output]:
        """The backend answered `R/auth/request`; a late or unknown answer is ignored."""
        self._at = at
        out = self.tokens.answer(request_id, answer, at)
        return [] if out is None else self._settle(out, at)

    def authorize_anywhere(
        self, id_token: str, at: Instant, token_type: str = "RFID"
    ) -> tuple[int | None, TokenDecision | None, list[Output]]:
        """`authorize` without `evse_id` (API.md §5): the EV that has waited longest gets the token;
        with none waiting the token is held for the next plug-in. Returns (evse_id, decision, outputs);
        the decision is None while the backend is asked."""
        cid = self.tokens.waiting_longest()
        if cid is not None:
            decision, out = self.present_token(cid, id_token, at, token_type)
            return cid, decision, out
        self._at = at
        return None, self.tokens.hold(id_token, token_type, at), []

    def stop_session(self, cid: int, reason: SessionCancellationReason, at: Instant) -> tuple[bool, list[Output]]:
        """`stop_session`: True when a running session was stopped."""
        evse = self._machine(cid)
        if (evse.state, StopRequested) not in TRANSITIONS or evse.session is None or evse.session.cancelled:
            return False, []
        out = self._step(evse, at.mono, StopRequested(cid=cid, reason=reason))
        self._at = at
        return True, self._settle(out, at)

    def set_enabled(self, cid: int, enabled: bool, at: Instant) -> list[Output]:
        """`set_enabled`: disabled = Unavailable; a running session is stopped first."""
        evse = self._machine(cid)
        out = self._step(evse, at.mono, SetEnabled(cid=cid, enabled=enabled))
        self._at = at
        return self._settle(out, at)

    def set_max_current(self, cid: int, current_a: float,
                        at: Instant) -> tuple[SetLocalMaxCurrentResult, list[Output]]:
        """`set_max_current`: 0 pauses, 6..max_current_a limits; anything else is out of range."""
        evse = self._machine(cid)
        if not (current_a == 0 or MIN_CURRENT_A <= current_a <= evse.config.max_current_a):
            return SetLocalMaxCurrentResult.ERROR_OUT_OF_RANGE, []
        self._limit_a[cid] = float(current_a)
        return SetLocalMaxCurrentResult.SUCCESS, self._apply_limit(cid, at)

    def set_fallback(self, current_a: float | None, at: Instant) -> list[Output]:
        """Link supervision: while the backend is unreachable every EVSE offers at most `current_a`
        (None restores the commanded limits). A fallback below 6 A pauses charging."""
        if current_a is None:
            self._fallback_since = None
        elif self._fallback_a is None:
            self._fallback_since = at.mono
        self._fallback_a = current_a
        out: list[Output] = []
        for cid in self.evses:
            out.extend(self._apply_limit(cid, at))
        return out

    def limit_a(self, cid: int) -> float:
        """The limit the EVSE currently applies (commanded, reduced by a fallback)."""
        limit = self._limit_a[cid]
        if self._fallback_a is not None:
            limit = min(limit, self._fallback_a)
        return limit if limit >= MIN_CURRENT_A else 0.0

    def commanded_limit_a(self, cid: int) -> float:
        return self._limit_a[cid]

    def switch_phases(self, cid: int, three_phases: bool) -> SwitchPhasesResult:
        evse = self._machine(cid)
        if not evse.config.phase_switching:
            return SwitchPhasesResult.ERROR_NOT_SUPPORTED
        if evse.session is None or not evse.session.authorized or evse.session.cancelled:
            return SwitchPhasesResult.ERROR_NOT_CHARGING
        self.phases[cid] = 3 if three_phases else 1
        return SwitchPhasesResult.SUCCESS

    def unlock_connector(self, cid: int, at: Instant) -> tuple[bool, list[Output]]:
        """`unlock_connector`: refused while charging; a waiting session is stopped (UnlockCommand)."""
        evse = self._machine(cid)
        if evse.relay_closed:
            return False, []
        out: list[Output] = []
        if (evse.state, StopRequested) in TRANSITIONS and evse.session is not None and not evse.session.cancelled:
            out.extend(self._step(evse, at.mono,
                                  StopRequested(cid=cid, reason=SessionCancellationReason.UNLOCK_COMMAND)))
        out.append(SetLock(cid=cid, locked=False))
        self._at = at
        return True, self._settle(out, at)

    def restore_session(self, cid: int, stored: StoredSession, at: Instant, *,
                        reason: SessionCancellationReason, resume: bool) -> list[Output]:
        """A session that was open at the last stop (see EvseMachine.restore_session)."""
        evse = self._machine(cid)
        out = list(evse.restore_session(stored, at.mono, reason=reason, resume=resume))
        self._at = at
        return self._settle(out, at)

    # --- reservations (API.md §3, §7) ------------------------------------------------------------

    def reserve_now(self, reservation: Reservation,
                    at: Instant) -> tuple[ReservationResult, str | None, list[Output]]:
        self._at = at
        result, uuid, out = self.book.reserve(reservation, at.utc)
        return result, uuid, self._settle(list(out), at)

    def cancel_reservation(self, sender: str, reservation_id: int, at: Instant) -> tuple[bool, list[Output]]:
        self._at = at
        cancelled, out = self.book.cancel(sender, reservation_id, at.utc)
        return cancelled, self._settle(list(out), at)

    def exists_reservation(self, id_token: str, evse_id: int | None, group_id_token: str | None,
                           at: Instant) -> ReservationCheckStatus:
        if evse_id is not None:
            self._machine(evse_id)
        self._at = at
        return self.book.exists(id_token, evse_id, group_id_token, at.utc)

    # --- internals -------------------------------------------------------------------------------

    def _apply_limit(self, cid: int, at: Instant) -> list[Output]:
        evse = self.evses[cid]
        out = self._step(evse, at.mono, CurrentLimitChanged(cid=cid, current_a=self.limit_a(cid)))
        self._at = at
        return self._settle(out, at)

    def _machine(self, cid: int) -> EvseMachine:
        evse = self.evses.get(cid)
        if evse is None:
            raise ValueError(f"unknown EVSE id {cid}")
        return evse

    def _step(self, evse: EvseMachine, now: float, event: Event | None) -> list[Action]:
        was_f = evse.duty_pct == DUTY_F
        actions = evse.tick(now) if event is None else evse.handle(event, now)
        if was_f and evse.duty_pct != DUTY_F:
            self._monitors[evse.cid].reset()
        return actions

    def _live(self) -> dict[int, tuple[bool, bool, bool]]:
        """What the book needs of each EVSE: (occupied, faulted, enabled)."""
        return {cid: (evse.plugged or evse.session is not None, evse.state is State.FAULTED, evse.enabled)
                for cid, evse in self.evses.items()}

    def _settle(self, actions: Iterable[Output], at: Instant) -> list[Output]:
        """Tell the book what the EVSEs are now, and show Reserved where it holds an EVSE."""
        out = list(actions)
        out.extend(self.book.set_evses(self._live(), at.utc))
        # The machines' LED commands are replaced by the shown status's LED, in the same place.
        wanted = {cid: self.led(cid) for cid in self.evses}
        settled: list[Output] = []
        for action in out:
            if not isinstance(action, SetLed):
                settled.append(action)
            elif wanted[action.cid] != self._led[action.cid]:
                self._led[action.cid] = wanted[action.cid]
                settled.append(SetLed(cid=action.cid, led=wanted[action.cid]))
        for cid, led in wanted.items():
            if led != self._led[cid]:
                self._led[cid] = led
                settled.append(SetLed(cid=cid, led=led))
        return settled

