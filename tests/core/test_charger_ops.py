"""The charger's operations behind API.md §3: authorize without an EVSE, stop, enable, limits,
fallback current, phase switching and unlock, in the pure core."""

from __future__ import annotations

from datetime import timedelta

import pytest

from firmware.core.auth import AuthStatus, LocalAuthEntry, LocalAuthStatus
from firmware.core.charger import Charger, SetLocalMaxCurrentResult, SwitchPhasesResult
from firmware.core.events import (
    DUTY_X1,
    AuthDecided,
    EmitSessionEvent,
    Fault,
    FaultRaised,
    PilotChanged,
    SessionCancellationReason,
    SessionEvent,
    SetLock,
    SetPwm,
)
from firmware.core.evse import EvseConfig, State
from firmware.core.pilot import Cp
from firmware.core.reservations import Reservation
from tests.support.charger import M0, T2, UTC0, at, build, charging, plug


def charger(n: int = 2, **evse: object) -> Charger:
    """EVSEs 1..n (Type 2 sockets, `evse` config), started at M0; the local list accepts AA11."""
    c = build([EvseConfig(cid=i, connectors=T2, **evse) for i in range(1, n + 1)])  # type: ignore[arg-type]
    c.local_list.apply(1, True, [LocalAuthEntry(id_token="AA11", status=LocalAuthStatus.ACCEPTED)])
    return c


def test_authorize_without_evse_goes_to_the_ev_that_waited_longest() -> None:
    c = charger(3)
    plug(c, 2, Cp.B, at(M0 + 1))
    plug(c, 3, Cp.B, at(M0 + 2))
    cid, decision, out = c.authorize_anywhere("AA11", at(M0 + 3))
    assert cid == 2
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    assert any(isinstance(a, AuthDecided) and a.cid == 2 for a in out)
    assert c.evses[2].state is State.SUSPENDED_EV
    assert c.evses[3].state is State.WAITING_FOR_AUTH


def test_authorize_without_evse_holds_the_token_for_the_next_plug_in() -> None:
    c = charger(2)
    cid, decision, out = c.authorize_anywhere("AA11", at(M0))
    assert cid is None
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED
    assert out == []
    assert c.next_deadline() == M0 + 60.0
    out = plug(c, 2, Cp.B, at(M0 + 10))
    started = [a for a in out if isinstance(a, EmitSessionEvent) and a.event is SessionEvent.SESSION_STARTED]
    assert started[0].reason == "EVConnected"
    assert c.evses[2].state is State.SUSPENDED_EV  # already authorized
    plug(c, 1, Cp.B, at(M0 + 11))
    assert c.evses[1].state is State.WAITING_FOR_AUTH  # the token was used once


def test_a_held_token_lapses_silently() -> None:
    c = charger(1)
    c.authorize_anywhere("AA11", at(M0))
    assert c.tick(at(M0 + 60.0)) == []
    plug(c, 1, Cp.B, at(M0 + 61))
    assert c.evses[1].state is State.WAITING_FOR_AUTH


def test_authorize_without_evse_answers_no_evse_available() -> None:
    c = charger(2)
    c.reserve_now(Reservation(reservation_id=1, id_token="ZZ", evse_id=1, expiry_utc=UTC0 + timedelta(hours=1)), at(M0))
    c.handle(FaultRaised(cid=2, fault=Fault.OVERTEMPERATURE), at(M0))
    cid, decision, _ = c.authorize_anywhere("AA11", at(M0 + 1))
    assert cid is None
    assert decision is not None
    assert decision.status is AuthStatus.NO_EVSE_AVAILABLE
    _, decision, _ = c.authorize_anywhere("zz", at(M0 + 1))  # the reserved driver could use EVSE 1
    assert decision is not None
    assert decision.status is AuthStatus.ACCEPTED


def test_stop_session_is_true_only_for_a_running_session() -> None:
    c = charger(1)
    assert c.stop_session(1, SessionCancellationReason.REMOTE, at(M0)) == (False, [])
    charging(c, 1, at(M0 + 1))
    stopped, out = c.stop_session(1, SessionCancellationReason.LOCAL, at(M0 + 2))
    assert stopped
    assert SetPwm(cid=1, duty_pct=DUTY_X1) in out
    assert c.stop_session(1, SessionCancellationReason.REMOTE, at(M0 + 3)) == (False, [])


@pytest.mark.parametrize(("current_a", "result"), [
    (-1, SetLocalMaxCurrentResult.ERROR_OUT_OF_RANGE), (3, SetLocalMaxCurrentResult.ERROR_OUT_OF_RANGE),
    (5.99, SetLocalMaxCurrentResult.ERROR_OUT_OF_RANGE), (32.5, SetLocalMaxCurrentResult.ERROR_OUT_OF_RANGE),
    (0, SetLocalMaxCurrentResult.SUCCESS), (6, SetLocalMaxCurrentResult.SUCCESS),
    (32, SetLocalMaxCurrentResult.SUCCESS),
])
def test_set_max_current_ranges(current_a: float, result: SetLocalMaxCurrentResult) -> None:
    c = charger(1)
    assert c.set_max_current(1, current_a, at(M0))[0] is result
    assert c.commanded_limit_a(1) == (32.0 if result is not SetLocalMaxCurrentResult.SUCCESS else current_a)


def test_set_max_current_zero_pauses_charging() -> None:
    c = charger(1)
    charging(c, 1, at(M0))
    c.set_max_current(1, 0, at(M0 + 1))
    assert c.evses[1].state is State.PAUSING
    assert not c.evses[1].pwm_on


def test_fallback_current_applies_while_the_link_is_down_and_is_restored() -> None:
    c = charger(2)
    charging(c, 1, at(M0))
    c.set_max_current(2, 10, at(M0))
    c.set_fallback(6.0, at(M0 + 10))
    assert c.limit_a(1) == 6.0
    assert c.limit_a(2) == 6.0
    c.tick(at(M0 + 15.0))  # the 5 s duty-change rule
    assert c.evses[1].duty_pct == 10.0
    c.set_fallback(None, at(M0 + 30))
    assert c.limit_a(1) == 32.0
    assert c.limit_a(2) == 10.0
    c.set_fallback(0.0, at(M0 + 40))  # a fallback of 0 pauses
    assert c.limit_a(1) == 0.0
    assert c.evses[1].state is State.PAUSING


def test_switch_phases() -> None:
    assert charger(1).switch_phases(1, False) is SwitchPhasesResult.ERROR_NOT_SUPPORTED
    c = charger(1, phase_switching=True)
    assert c.switch_phases(1, False) is SwitchPhasesResult.ERROR_NOT_CHARGING
    charging(c, 1, at(M0))
    assert c.switch_phases(1, False) is SwitchPhasesResult.SUCCESS
    assert c.phases[1] == 1


def test_unlock_connector() -> None:
    c = charger(1)
    charging(c, 1, at(M0))
    assert c.unlock_connector(1, at(M0 + 1)) == (False, [])
    c.handle(PilotChanged(cid=1, cp=Cp.B), at(M0 + 2))
    unlocked, out = c.unlock_connector(1, at(M0 + 3))
    assert unlocked
    assert SetLock(cid=1, locked=False) in out
    cancelled = [a for a in out if isinstance(a, EmitSessionEvent) and a.event is SessionEvent.SESSION_CANCELLED]
    assert cancelled[0].reason == "UnlockCommand"


def test_set_enabled_round_trip() -> None:
    c = charger(1)
    c.set_enabled(1, False, at(M0))
    assert c.evses[1].state is State.UNAVAILABLE
    c.set_enabled(1, True, at(M0 + 1))
    assert c.evses[1].state is State.AVAILABLE


def test_unknown_evse_is_a_value_error() -> None:
    c = charger(1)
    for call in (lambda: c.stop_session(9, SessionCancellationReason.REMOTE, at(M0)), lambda: c.switch_phases(9, True),
                 lambda: c.set_max_current(9, 6, at(M0)), lambda: c.unlock_connector(9, at(M0))):
        with pytest.raises(ValueError, match="unknown EVSE id 9"):
            call()
