"""The RCD self-test before each session (issue 10): RunRcdSelfTest at every plug-in, no charging until it
passes, a failure is Fault.RCD_SELF_TEST_FAILED (Error RCD) until a later test passes.

Pure core, injected time: the shell's part (running the test beside the safety path) is tested in
tests/shell and in the hardware-in-the-loop run.
"""

from __future__ import annotations

from firmware.core.events import (
    CloseRelay,
    EmitSessionEvent,
    Error,
    Fault,
    RcdSelfTested,
    SessionEvent,
    SetPwm,
    RunRcdSelfTest,
)
from firmware.core.evse import State
from firmware.core.pilot import Cp
from tests.core.helpers import AUTH, CID, PP_32A, T0, cp, machine

PASSED = RcdSelfTested(cid=CID, passed=True)
FAILED = RcdSelfTested(cid=CID, passed=False)


def _tests(actions: list[object]) -> int:
    return sum(isinstance(a, RunRcdSelfTest) for a in actions)


def test_without_the_option_no_self_test_is_asked_for() -> None:
    m = machine()
    actions = m.handle(PP_32A, T0) + m.handle(cp(Cp.B), T0 + 0.1) + m.handle(AUTH, T0 + 0.2)
    actions += m.handle(cp(Cp.C), T0 + 0.3)
    assert _tests(actions) == 0
    assert m.state is State.CHARGING


def test_a_plug_in_asks_for_one_self_test_and_nothing_charges_before_it_passes() -> None:
    m = machine(rcd_self_test=True)
    m.handle(PP_32A, T0)
    assert _tests(m.handle(cp(Cp.B), T0 + 0.1)) == 1
    actions = m.handle(AUTH, T0 + 0.2) + m.handle(cp(Cp.C), T0 + 0.3)
    assert _tests(actions) == 0  # one per plug-in
    assert m.state is State.SUSPENDED_EVSE  # waits for the test: no PWM offered, relay open
    assert not m.pwm_on
    assert not m.relay_closed
    actions = m.handle(PASSED, T0 + 0.35)
    assert m.state is State.CHARGING
    assert CloseRelay(cid=CID) in actions
    assert m.pwm_on


def test_a_token_first_then_the_plug_in_is_tested_too() -> None:
    m = machine(rcd_self_test=True)
    m.handle(PP_32A, T0)
    assert _tests(m.handle(AUTH, T0 + 0.1)) == 0  # no EV: nothing to test for yet
    assert _tests(m.handle(cp(Cp.B), T0 + 0.2)) == 1
    m.handle(PASSED, T0 + 0.25)
    assert m.state is State.SUSPENDED_EV
    m.handle(cp(Cp.C), T0 + 0.3)
    assert m.relay_closed


def test_a_failed_self_test_is_an_rcd_fault_and_ends_the_session() -> None:
    m = machine(rcd_self_test=True)
    m.handle(PP_32A, T0)
    m.handle(cp(Cp.B), T0 + 0.1)
    m.handle(AUTH, T0 + 0.2)
    actions = m.handle(FAILED, T0 + 0.3)
    assert m.state is State.FAULTED
    assert Fault.RCD_SELF_TEST_FAILED in m.faults
    assert SetPwm(cid=CID, duty_pct=0.0) in actions
    errors = [a.error for a in actions if isinstance(a, EmitSessionEvent) and a.event is SessionEvent.ERROR]
    assert errors == [Error.RCD]
    assert m.session is not None
    assert m.session.cancelled
    m.tick(T0 + 1.0)  # F served; X1 while the fault lasts
    assert _tests(m.handle(cp(Cp.B), T0 + 1.1)) == 0  # no new test for the same plug-in
    assert m.state is State.FAULTED


def test_the_next_plug_in_tests_again_and_a_pass_clears_the_fault() -> None:
    m = machine(rcd_self_test=True)
    m.handle(PP_32A, T0)
    m.handle(cp(Cp.B), T0 + 0.1)
    m.handle(FAILED, T0 + 0.2)
    m.tick(T0 + 1.0)
    m.handle(cp(Cp.A), T0 + 2.0)  # unplugged: the fault stays
    assert Fault.RCD_SELF_TEST_FAILED in m.faults
    assert _tests(m.handle(cp(Cp.B), T0 + 3.0)) == 1  # plugged in again: tested again
    m.handle(PASSED, T0 + 3.1)
    assert m.faults == frozenset()
    assert m.state is State.WAITING_FOR_AUTH
    m.handle(AUTH, T0 + 3.2)
    m.handle(cp(Cp.C), T0 + 3.3)
    assert m.state is State.CHARGING


def test_every_plug_in_is_tested_a_pass_does_not_carry_over() -> None:
    m = machine(rcd_self_test=True)
    m.handle(PP_32A, T0)
    m.handle(cp(Cp.B), T0 + 0.1)
    m.handle(PASSED, T0 + 0.2)
    m.handle(cp(Cp.A), T0 + 1.0)
    assert _tests(m.handle(cp(Cp.B), T0 + 2.0)) == 1
    m.handle(AUTH, T0 + 2.1)
    m.handle(cp(Cp.C), T0 + 2.2)
    assert not m.relay_closed  # this plug-in's test has not answered yet


def test_a_result_that_arrives_after_the_unplug_does_not_count_for_the_next_ev() -> None:
    m = machine(rcd_self_test=True)
    m.handle(PP_32A, T0)
    m.handle(cp(Cp.B), T0 + 0.1)  # RunRcdSelfTest running
    m.handle(cp(Cp.A), T0 + 0.2)
    m.handle(PASSED, T0 + 0.3)  # for an EV that left
    assert _tests(m.handle(cp(Cp.B), T0 + 1.0)) == 1  # the next one is tested itself
    m.handle(AUTH, T0 + 1.1)
    m.handle(cp(Cp.C), T0 + 1.2)
    assert not m.relay_closed
