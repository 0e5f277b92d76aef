"""service_refusal (firmware/core/service.py): a service test runs only on a disabled EVSE with nothing
connected; every other case is refused with a sentence naming the fix."""

from __future__ import annotations

import pytest

from firmware.core.charger import Charger
from firmware.core.events import Fault, FaultRaised, PilotChanged
from firmware.core.evse import EvseConfig
from firmware.core.pilot import Cp
from firmware.core.service import TESTS, service_refusal
from tests.support.charger import M0, T2, at, build, plug


def idle(*, enabled: bool = False) -> Charger:
    """Two EVSEs, CP A measured on both; EVSE 1 disabled unless told."""
    c = build([EvseConfig(cid=1, connectors=T2), EvseConfig(cid=2, connectors=T2)])
    for cid in c.evses:
        c.handle(PilotChanged(cid=cid, cp=Cp.A), at(M0))
    if not enabled:
        c.set_enabled(1, False, at(M0))
    return c


@pytest.mark.parametrize("test", [*TESTS, None])
def test_a_disabled_evse_with_nothing_connected_may_be_tested(test: str | None) -> None:
    assert service_refusal(idle(), 1, test) is None


def test_an_enabled_evse_is_refused() -> None:
    refusal = service_refusal(idle(enabled=True), 1, "led")
    assert refusal is not None
    assert "enabled" in refusal
    assert "set_enabled 1 false" in refusal


def test_a_plugged_in_ev_is_refused_even_when_disabled() -> None:
    c = idle()
    plug(c, 1, Cp.B, at(M0 + 1))
    refusal = service_refusal(c, 1, "relay")
    assert refusal is not None
    assert "session" in refusal or "plugged" in refusal


def test_a_session_is_refused() -> None:
    c = idle(enabled=True)
    plug(c, 1, Cp.B, at(M0 + 1))
    assert c.evses[1].session is not None
    c.set_enabled(1, False, at(M0 + 2))  # the EV is still plugged in
    refusal = service_refusal(c, 1, "lock")
    assert refusal is not None
    assert "EV" in refusal


def test_cp_not_measured_is_refused() -> None:
    c = build([EvseConfig(cid=1, connectors=T2)])
    c.set_enabled(1, False, at(M0))
    refusal = service_refusal(c, 1)
    assert refusal is not None
    assert "not measured" in refusal


def test_cp_not_a_is_refused() -> None:
    c = idle()
    c.handle(PilotChanged(cid=1, cp=Cp.E), at(M0 + 1))
    assert service_refusal(c, 1) is not None


def test_the_relay_test_is_refused_during_an_rcd_trip_but_the_led_test_is_not() -> None:
    c = idle()
    c.handle(FaultRaised(cid=1, fault=Fault.RCD_TRIPPED), at(M0 + 1))
    c.tick(at(M0 + 2))  # the F hold is over: X1 while the fault lasts
    c.handle(PilotChanged(cid=1, cp=Cp.A), at(M0 + 2))  # and CP is read again: A
    refusal = service_refusal(c, 1, "relay")
    assert refusal is not None
    assert "rcd_tripped" in refusal
    assert service_refusal(c, 1, "led") is None


def test_another_evse_is_judged_on_its_own() -> None:
    c = idle()
    plug(c, 2, Cp.B, at(M0 + 1))
    assert service_refusal(c, 1, "relay") is None
    assert service_refusal(c, 2, "relay") is not None


def test_unknown_test_and_evse() -> None:
    with pytest.raises(ValueError, match="test must be one of"):
        service_refusal(idle(), 1, "kettle")
    with pytest.raises(KeyError):
        service_refusal(idle(), 9)
