"""The status LED shows one pattern per status and, while Faulted, one per kind of error (issue 10:
"patterns ... one per status and error"), so a technician tells an RCD trip from a welded contactor at a
glance. Pure core; the patterns' colours are hal/gpio_leds.py's LED_PATTERNS."""

from __future__ import annotations

import pytest

from firmware.core.events import FAULT_LED, STATUS_LED, Fault, FaultCleared, FaultRaised, Led, SetLed
from firmware.core.evse import State
from firmware.core.pilot import Cp
from tests.core.helpers import CID, at, cp


@pytest.mark.parametrize("fault", list(FAULT_LED))
def test_each_error_has_its_own_pattern_while_faulted(fault: Fault) -> None:
    m, now = at(State.CHARGING)
    actions = m.handle(FaultRaised(cid=CID, fault=fault), now + 0.01)
    assert SetLed(cid=CID, led=FAULT_LED[fault]) in actions
    assert m.wanted_led() is FAULT_LED[fault]


def test_a_fault_without_a_pattern_of_its_own_shows_the_plain_fault_pattern() -> None:
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.OUTPUT_FAILED), now + 0.01)
    assert m.wanted_led() is Led.FAULT


def test_with_two_faults_the_first_in_the_table_wins_and_the_other_shows_when_it_clears() -> None:
    m, now = at(State.AVAILABLE)
    m.handle(FaultRaised(cid=CID, fault=Fault.METER_LOST), now + 0.01)
    assert m.wanted_led() is Led.FAULT_METER
    m.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), now + 0.02)
    assert m.wanted_led() is Led.FAULT_RCD  # the RCD comes first in FAULT_LED

    actions = m.handle(FaultCleared(cid=CID, fault=Fault.RCD_TRIPPED), now + 0.03)
    assert SetLed(cid=CID, led=Led.FAULT_METER) in actions


def test_a_pilot_fault_shows_the_pilot_pattern() -> None:
    m, now = at(State.CHARGING)
    m.handle(cp(Cp.E), now + 0.01)
    assert m.wanted_led() is Led.FAULT_PILOT


def test_every_status_and_every_error_pattern_is_a_distinct_led_value() -> None:
    errors = set(FAULT_LED.values()) | {Led.FAULT}
    assert set(STATUS_LED.values()) | errors == set(Led)
    assert len({Led.FAULT_RCD, Led.FAULT_RELAY, Led.FAULT_OVERTEMPERATURE, Led.FAULT_METER, Led.FAULT_PILOT}) == 5
