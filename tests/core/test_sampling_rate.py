"""`Charger.needs_fast_sampling`: when the pilot must be sampled at the fast rate.

Every reaction time of DESIGN.md's timing table is about a closed relay or a running PWM, or it is a
debounce being timed. So the pilot is sampled fast exactly when an EVSE's relay is (commanded) closed,
its PWM is on, or a CP change, a diode failure or an out-of-band reading is being timed; otherwise
(an idle EVSE: no EV, or an EV waiting for a card with PWM off) the shell may sample slowly. A real
`Charger` is brought into each condition by real inputs.
"""

from __future__ import annotations

from firmware.core.auth import LocalAuthEntry, LocalAuthStatus
from firmware.core.charger import Charger
from firmware.core.events import Fault, FaultRaised, PilotSampled, PpChanged
from firmware.core.evse import EvseConfig
from firmware.core.pilot import DEBOUNCE_S, PILOT_FAULT_AFTER_S, Cp, PilotMonitor
from tests.support.charger import M0, PP_32A_OHMS, T2, at, build

CID = 1
TOKEN = "AA11"


def charger() -> Charger:
    c = build([EvseConfig(cid=CID, connectors=T2)])
    c.local_list.apply(1, True, [LocalAuthEntry(id_token=TOKEN, status=LocalAuthStatus.ACCEPTED)])
    return c


def sample(c: Charger, volts_hi: float, dt: float, volts_lo: float = -12.0) -> None:
    c.handle(PilotSampled(cid=CID, volts_hi=volts_hi, volts_lo=volts_lo), at(M0 + dt))


def test_an_idle_evse_is_sampled_slowly() -> None:
    c = charger()
    sample(c, 12.0, 0.0)
    sample(c, 12.0, DEBOUNCE_S)
    assert c.evses[CID].cp is Cp.A
    assert not c.needs_fast_sampling(CID)


def test_a_cp_change_being_debounced_is_sampled_fast_until_it_is_reported() -> None:
    c = charger()
    sample(c, 12.0, 0.0)
    sample(c, 12.0, DEBOUNCE_S)
    sample(c, 9.0, 1.0)  # the EV plugs in: B seen once, the debounce runs
    assert c.needs_fast_sampling(CID)
    sample(c, 9.0, 1.0 + DEBOUNCE_S)
    assert c.evses[CID].cp is Cp.B
    assert not c.needs_fast_sampling(CID)  # waiting for a card, PWM off: nothing is timed


def test_an_out_of_band_reading_is_sampled_fast_until_it_is_a_fault() -> None:
    c = charger()
    sample(c, 12.0, 0.0)
    sample(c, 12.0, DEBOUNCE_S)
    sample(c, 7.5, 1.0)  # between B and C
    sample(c, 7.5, 1.0 + DEBOUNCE_S)
    assert c.evses[CID].cp is None
    assert c.needs_fast_sampling(CID)  # PILOT_FAULT_AFTER_S is being timed
    sample(c, 7.5, 1.0 + PILOT_FAULT_AFTER_S)
    assert not c.needs_fast_sampling(CID)  # told: a pilot fault, relay open, PWM off


def test_pwm_on_and_a_closed_relay_are_sampled_fast() -> None:
    c = charger()
    c.handle(PpChanged(cid=CID, ohms=PP_32A_OHMS), at(M0))
    sample(c, 9.0, 0.0)
    sample(c, 9.0, DEBOUNCE_S)
    assert c.evses[CID].cp is Cp.B
    assert not c.needs_fast_sampling(CID)
    c.present_token(CID, TOKEN, at(M0 + 0.5))
    assert c.evses[CID].pwm_on
    assert c.needs_fast_sampling(CID)  # the EV may ask for power at any time: B -> C closes the relay
    sample(c, 6.0, 1.0)
    sample(c, 6.0, 1.0 + DEBOUNCE_S)
    assert c.evses[CID].relay_closed
    assert c.needs_fast_sampling(CID)
    c.handle(FaultRaised(cid=CID, fault=Fault.RCD_TRIPPED), at(M0 + 2.0))
    assert not c.evses[CID].relay_closed
    assert not c.evses[CID].pwm_on
    assert not c.needs_fast_sampling(CID)


def test_a_diode_failure_being_debounced_keeps_the_monitor_watching() -> None:
    monitor = PilotMonitor()
    monitor.update(9.0, -12.0, True, 0.0)
    monitor.update(9.0, -12.0, True, DEBOUNCE_S)
    assert not monitor.watching
    monitor.update(9.0, 9.0, True, 1.0)  # the low plateau follows the high one: no diode
    assert monitor.watching
    reading = monitor.update(9.0, 9.0, True, 1.0 + DEBOUNCE_S)
    assert reading is not None
    assert not reading.diode_ok
    assert not monitor.watching


def test_the_debounce_runs_on_the_times_the_samples_were_read() -> None:
    """A sample the core handles late (its loop was busy) still counts from when it was read: the wire
    held its new state for the debounce between two reads, so the change is reported on the second."""
    c = charger()
    for read_at in (0.0, DEBOUNCE_S):
        c.handle(PilotSampled(cid=CID, volts_hi=12.0, volts_lo=-12.0, read_at=M0 + read_at), at(M0 + read_at))
    assert c.evses[CID].cp is Cp.A
    c.handle(PilotSampled(cid=CID, volts_hi=9.0, volts_lo=-12.0, read_at=M0 + 1.0), at(M0 + 1.004))  # 4 ms late
    c.handle(PilotSampled(cid=CID, volts_hi=9.0, volts_lo=-12.0, read_at=M0 + 1.0 + DEBOUNCE_S),
             at(M0 + 1.0 + DEBOUNCE_S + 0.0002))
    assert c.evses[CID].cp is Cp.B


def test_a_monitor_that_knows_no_state_wants_samples() -> None:
    """At start and after `reset()` (the EVSE stops driving F) the next reading must reach the monitor,
    even one equal to the last: it is watched until it knows the state again."""
    monitor = PilotMonitor()
    assert monitor.watching
    monitor.update(12.0, -12.0, False, 0.0)
    monitor.update(12.0, -12.0, False, DEBOUNCE_S)
    assert not monitor.watching
    monitor.reset()
    assert monitor.watching
