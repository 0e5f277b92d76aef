"""Why an EVSE does not charge: every condition that now keeps it from charging, in words.

What it is for: the console's `why EVSE` and the `blocked_by` codes of the EVSE state document
(API.md §4) both come from `blocked_by(charger, cid, now_mono)`, one function of the core's state.
Each condition is read off the facts the machines act on (the EVSE machine's facts, the charger's
limits and fallback, the token desk, the reservation book), never guessed from the status, so the
answer is the machine's own reason:

* an EVSE that is charging, or could charge now, gives `[]` (the settle chose CHARGING from the same
  facts: `machine.EvseMachine._target`);
* every condition is listed, most fundamental first: disabled; faults and the EVSE's readiness (F hold,
  meter's first reading, RCD self-test); the cable and the EV; authorization; limits;
* the codes are stable (snake_case, see `CODES`) and depend only on the state of the last step;
  `now_mono` only sets the numbers in the messages (seconds left), so the codes published in the
  state document change only with a step.

Standards quoted in the messages: IEC 61851-1:2017 Annex A (Table A.4 CP states, Table A.6 timing:
F for at least 300 ms, one duty change per 5 s; A.2.3: 6 A minimum) and Annex B Table B.2 (PP),
API.md §5 (tokens) and §7 (reservations, G2/G3).

It must never change the charger (only read-only views are used), read a clock or do I/O: it is part
of the sans-I/O core (DESIGN.md principle 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from firmware.core.charger import Charger
from firmware.core.events import DUTY_F, Fault
from firmware.core.evse import EvseMachine
from firmware.core.evse.facts import RcdTest
from firmware.core.pilot import MIN_CURRENT_A, PILOT_FAULT_AFTER_S, Cp, current_to_duty

__all__ = ["CODES", "Blocker", "blocked_by"]

#: Every code `blocked_by` may give, in the order they are listed (most fundamental first).
CODES: Final[tuple[str, ...]] = (
    "disabled",
    "rcd_tripped",
    "relay_fault",
    "faulted",
    "overtemperature",
    "meter_lost",
    "pilot_fault",
    "rcd_self_test",
    "lock_failed",
    "output_failed",
    "fault_hold",
    "meter_first_reading",
    "replugging",
    "no_ev",
    "pp_invalid",
    "cp_not_read",
    "cp_out_of_band",
    "ventilation_unavailable",
    "session_finished",
    "ev_not_requesting",
    "not_authorized",
    "reserved_for_other",
    "current_limit_zero",
    "fallback_zero",
    "pwm_holdoff",
)

#: The code and the words of each hardware fault.
_FAULTS: Final[dict[Fault, tuple[str, str]]] = {
    Fault.RCD_TRIPPED: ("rcd_tripped", "the RCD has tripped (residual current detected): no charging until reset"),
    Fault.RELAY_WELDED: ("relay_fault", "the contactor is welded: its feedback reads closed while commanded open"),
    Fault.RELAY_STUCK_OPEN: ("relay_fault", "the contactor does not close: its feedback reads open while commanded "
                                            "closed"),
    Fault.OVER_CURRENT: ("faulted", "faulted: over-current reported by the hardware"),
    Fault.OVERTEMPERATURE: ("overtemperature", "over-temperature: the temperature input is active"),
    Fault.METER_LOST: ("meter_lost", "the energy meter is lost: no valid reading within its stale time"),
    Fault.PILOT_FAULT: ("pilot_fault", "pilot fault reported by the hardware"),
    Fault.INTERNAL: ("faulted", "faulted: an internal error of the EVSE machine; CP stays at F until it is "
                                "cleared"),
    Fault.RCD_SELF_TEST_FAILED: ("rcd_self_test", "the RCD self-test failed (the RCD did not trip or release "
                                                  "on its test input); unplug and plug in to test again"),
    Fault.CONNECTOR_LOCK_FAILED: ("lock_failed", "the connector lock failed: its feedback did not confirm"),
    Fault.OUTPUT_FAILED: ("output_failed", "an output (relay, PWM or lock) could not be written: Faulted until "
                                           "the controller restarts"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Blocker:
    """One condition that keeps an EVSE from charging: a stable `code` (one of `CODES`) and a sentence."""

    code: str
    message: str

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"unknown blocker code {self.code!r}")
        if not self.message:
            raise ValueError("a blocker needs a message")


class _Found:
    """The blockers found so far: one per code (a second condition with the same code joins its message)."""

    def __init__(self) -> None:
        self._messages: dict[str, list[str]] = {}

    def add(self, code: str, message: str) -> None:
        self._messages.setdefault(code, []).append(message)

    def has(self, code: str) -> bool:
        return code in self._messages

    def blockers(self) -> list[Blocker]:
        return [Blocker(code=code, message="; ".join(self._messages[code])) for code in CODES
                if code in self._messages]


def blocked_by(charger: Charger, cid: int, now_mono: float) -> list[Blocker]:
    """Every condition that now keeps EVSE `cid` from charging (`[]`: it is charging, or could).

    `now_mono` (the shell's monotonic time) only sets the seconds left in the messages; the codes are
    those of the charger's last step. Raises ValueError for an unknown EVSE.
    """
    evse = charger.evses.get(cid)
    if evse is None:
        raise ValueError(f"unknown EVSE id {cid}")
    found = _Found()
    if not evse.enabled:
        found.add("disabled", f"the EVSE is disabled (set_enabled false, reason {evse.disable_reason.value}): "
                              "enable it to charge")
    _faults(evse, now_mono, found)
    _readiness(evse, found)
    _cable_and_ev(evse, now_mono, found)
    _authorization(charger, evse, now_mono, found)
    _limits(charger, evse, now_mono, found)
    return found.blockers()


# --- the groups, in order ------------------------------------------------------------------------


def _faults(evse: EvseMachine, now: float, found: _Found) -> None:
    for fault in Fault:  # the catalogue's order
        if fault in evse.faults:
            code, message = _FAULTS[fault]
            if fault is Fault.INTERNAL and evse.last_crash is not None:
                message += f" ({type(evse.last_crash).__name__}: {evse.last_crash})"
            found.add(code, message)
    if evse.pilot_fault:
        found.add("pilot_fault", _pilot_fault_words(evse))
    hold_until = evse.f_hold_until
    if hold_until is not None and not evse.faults and not evse.pilot_fault:
        found.add("fault_hold", f"CP is held at F (-12 V) for {_seconds(hold_until - now)} more after a fault "
                                f"(IEC 61851-1 Table A.6: F for at least {evse.config.fault_hold_s * 1000:.0f} ms)")


def _pilot_fault_words(evse: EvseMachine) -> str:
    reading = evse.pilot_reading
    if reading is not None and reading.cp is Cp.E:
        return "pilot fault: CP reads 0 V (state E: CP shorted to PE, or no supply)"
    if reading is not None and reading.cp is Cp.F:
        return "pilot fault: CP reads -12 V that the EVSE does not drive"
    if reading is not None and reading.lasting:
        return f"pilot fault: CP has read outside every band for more than {PILOT_FAULT_AFTER_S:g} s " \
               "(IEC 61851-1 Table A.4)"
    return "pilot fault: latched until a clean CP reading taken while CP is not F"


def _readiness(evse: EvseMachine, found: _Found) -> None:
    if not evse.meter_ready:
        found.add("meter_first_reading", "waiting for the meter's first reading: no session starts, and a "
                                         "restored one does not charge, before it")
    if evse.config.rcd_self_test and evse.plugged and evse.rcd_test is not RcdTest.PASSED:
        if evse.rcd_test is RcdTest.FAILED:
            found.add("rcd_self_test", "the RCD self-test of this plug-in failed; unplug and plug in to test again")
        elif not found.has("rcd_self_test"):
            found.add("rcd_self_test", "the RCD self-test of this plug-in has not passed yet (it runs at every "
                                       "plug-in; waiting for its result)")


def _cable_and_ev(evse: EvseMachine, now: float, found: _Found) -> None:
    replug_until = evse.replug_until
    if replug_until is not None:
        found.add("replugging", f"a virtual replug drives CP to F for {_seconds(replug_until - now)} more")
    session = evse.session
    if not evse.plugged:
        words = "nothing is plugged in (CP reads A)"
        if session is not None and session.authorized and not session.cancelled:
            words += f"; the token's authorization lapses in {_seconds(session.connect_deadline - now)}"
        found.add("no_ev", words)
        return
    if evse.config.socket_outlet and evse.pp_max_a is None:
        found.add("pp_invalid", "the cable's PP resistance is open or outside IEC 61851-1 Table B.2: its rating "
                                "is unknown, so nothing is offered (never an assumed 13 A)")
    _cp(evse, found)
    if session is not None and session.cancelled:
        found.add("session_finished", f"the session {session.uuid} has ended: unplug the EV to start a new one")


def _cp(evse: EvseMachine, found: _Found) -> None:
    """What the EV's CP says, when no fault or replug explains it already."""
    reading = evse.pilot_reading
    driving_f = evse.duty_pct == DUTY_F
    if reading is None:
        if not driving_f:
            found.add("cp_not_read", "CP has not been read since F ended: waiting for a fresh reading of the EV")
        return
    cp = reading.cp
    if cp is None and not evse.pilot_fault:
        found.add("cp_out_of_band", "CP reads outside every band (IEC 61851-1 Table A.4): no clean state C, so "
                                    f"the relay stays open; a pilot fault if it lasts {PILOT_FAULT_AFTER_S:g} s")
    elif cp is Cp.D and not evse.config.ventilation_available:
        found.add("ventilation_unavailable", "the EV asks for ventilation (state D), which this EVSE does not have")
    elif cp is Cp.B and evse.pwm_on:
        found.add("ev_not_requesting", f"the EV is in state B: connected but not asking for power, although "
                                       f"{evse.offered_a:g} A is offered (PWM {evse.duty_pct:g} %)")


def _authorization(charger: Charger, evse: EvseMachine, now: float, found: _Found) -> None:
    session = evse.session
    if session is not None and (session.authorized or session.cancelled):
        return  # authorized, or ended (session_finished says what to do)
    last = charger.last_instant
    held = [h for h in charger.tokens.held if h.deadline > last.mono]
    if session is None and held:
        return  # the next EV that plugs in gets the held token
    pending = charger.tokens.pending(evse.cid)
    if pending:
        words = (f"a token is being checked with the backend (request {pending[0].request_id}, answer due in "
                 f"{_seconds(pending[0].deadline - now)})")
    else:
        words = "no token yet: present one (RFID or authorize)"
        if not charger.online:
            words += (f"; the backend is offline, so the offline policy {charger.auth.offline_policy.value} "
                      "decides")
    found.add("not_authorized", words)
    book, utc = charger.book, last.utc
    entry = book.specific(evse.cid, utc)
    if entry is not None:
        reservation = entry.reservation
        found.add("reserved_for_other", f"reserved for another token until {_utc(reservation.expiry_utc, utc)} "
                                        f"(reservation {reservation.reservation_id}): only its token (or its "
                                        "parent token) may start here")
    elif not book.walk_in_allowed(evse.cid, utc):
        found.add("reserved_for_other", "held for a global reservation (API.md §7 G2/G3): only a token with a "
                                        "matching reservation may start here")


def _limits(charger: Charger, evse: EvseMachine, now: float, found: _Found) -> None:
    cid = evse.cid
    if evse.limit_a < MIN_CURRENT_A:
        fallback_a, since = charger.fallback_a, charger.fallback_since
        fallback = fallback_a is not None and fallback_a < MIN_CURRENT_A
        commanded_a = charger.commanded_limit_a(cid)
        if commanded_a < MIN_CURRENT_A or not fallback:  # the EVSE's own limit (the charger's, as commanded)
            found.add("current_limit_zero", f"the current limit is {min(commanded_a, evse.limit_a):g} A "
                                            f"(set_max_current): charging is paused (less than {MIN_CURRENT_A:g} "
                                            "A cannot be offered, IEC 61851-1 A.2.3)")
        if fallback:
            words = f"the fallback current is {fallback_a:g} A because the backend is unreachable"
            if since is not None:
                words += f" (the offline fallback has applied for {_seconds(now - since)})"
            found.add("fallback_zero", words)
    elif evse.offer_limit_a < MIN_CURRENT_A and (evse.pp_max_a is not None or not evse.config.socket_outlet):
        found.add("current_limit_zero", f"the EVSE can offer only {evse.offer_limit_a:g} A (the cable's rating), "
                                        f"less than the {MIN_CURRENT_A:g} A minimum (IEC 61851-1 A.2.3)")
    due = evse.duty_change_due
    if due is not None and not evse.relay_closed and evse.offer_limit_a >= MIN_CURRENT_A:
        target_a = evse.offer_limit_a
        found.add("pwm_holdoff", f"the PWM duty change to {current_to_duty(target_a):g} % ({target_a:g} A) waits "
                                 f"{_seconds(due - now)} more (IEC 61851-1: one change per "
                                 f"{evse.config.pwm_min_interval_s:g} s); the EV still sees {evse.duty_pct:g} %")


# --- words ---------------------------------------------------------------------------------------


def _seconds(seconds: float) -> str:
    return f"{max(seconds, 0.0):.1f} s"


def _utc(when: datetime, now: datetime) -> str:
    """`14:05 UTC`, with the date when it is not today's."""
    if when.date() == now.date():
        return f"{when:%H:%M} UTC"
    return f"{when:%Y-%m-%d %H:%M} UTC"
