"""Tests of the simulated board (hal/sim.py): Protocol conformance, CP/PP physics after IEC 61851-1
Annex A, relay feedback with injected faults, exact energy integration on an injected clock, tokens,
input validation, and a hypothesis state machine for the physical invariants.

No mocks and no real clock: `FakeClock` is advanced by hand, so every energy figure is exact.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from firmware.core.errors import HardwareError
from firmware.core.events import DUTY_F, DUTY_X1, Led
from firmware.core.pilot import Cp, classify, current_to_duty, diode_ok, duty_to_current
from hal.protocols import (
    Board,
    Leds,
    Lock,
    Meter,
    MeterSample,
    Pilot,
    PilotSample,
    Rcd,
    Relays,
    Temperature,
    TokenRead,
    TokenReader,
)
from hal.sim import FAULTS, KEEP, PILOT_FAULT_V, EvState, Keep, SimBoard

T = TypeVar("T")
V = 230.0
#: Duty for 16 A: 26.6 %, which the EV reads as 15.96 A (IEC 61851-1 Table A.8).
DUTY_16A = 26.6
PWM_50 = 50.0


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, s: float) -> None:
        assert s >= 0, "a monotonic clock does not go back"
        self.t += s


def step(coro: Coroutine[Any, Any, T]) -> T:
    """Run a sim device call without an event loop: every one but next_token completes at once."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise AssertionError("a sim device call suspended")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def board(clock: FakeClock) -> SimBoard:
    """EVSE 1 three-phase, EVSE 2 single-phase, both metered."""
    return SimBoard([1, 2], clock=clock, phases={1: 3, 2: 1}, voltage_v=V)


async def charging(board: SimBoard, cid: int = 1, duty: float = DUTY_16A, load_a: float = 32.0) -> None:
    """EV in C drawing up to `load_a`, PWM at `duty`, contactor closed."""
    board.plug(cid, "C")
    board.load(cid, load_a)
    await board.set_duty(cid, duty)
    await board.set_closed(cid, True)


# --- conformance ---------------------------------------------------------------------------------


def test_board_conforms_to_board_protocol(board: SimBoard) -> None:
    assert isinstance(board, Board)
    assert board.is_sim is True


@pytest.mark.parametrize(
    ("attr", "protocol"),
    [
        ("pilot", Pilot),
        ("relays", Relays),
        ("leds", Leds),
        ("lock", Lock),
        ("rcd", Rcd),
        ("temperature", Temperature),
        ("tokens", TokenReader),
    ],
)
def test_each_device_conforms_to_its_protocol(board: SimBoard, attr: str, protocol: type) -> None:
    assert isinstance(getattr(board, attr), protocol)


def test_meter_conforms_and_exists_only_for_metered_evses(clock: FakeClock) -> None:
    b = SimBoard([1, 2], clock=clock, meter_ids=[1])
    assert isinstance(b.meter(1), Meter)
    assert b.meter(1) is b.meter(1)
    assert b.meter(2) is None
    with pytest.raises(ValueError, match="unknown EVSE id 3"):
        b.meter(3)


async def test_async_context_manager_returns_the_board(board: SimBoard) -> None:
    async with board as b:
        assert b is board


# --- CP: IEC 61851-1 Table A.4 and A.2.2 ---------------------------------------------------------

CP_TABLE = [
    # (ev cp, diode ok, driven duty, volts_hi, volts_lo)
    ("A", True, DUTY_X1, 12.0, 12.0),
    ("B", True, DUTY_X1, 9.0, 9.0),
    ("C", True, DUTY_X1, 6.0, 6.0),
    ("D", True, DUTY_X1, 3.0, 3.0),
    ("E", True, DUTY_X1, 0.0, 0.0),
    ("A", True, PWM_50, 12.0, -12.0),
    ("B", True, PWM_50, 9.0, -12.0),
    ("C", True, PWM_50, 6.0, -12.0),
    ("D", True, PWM_50, 3.0, -12.0),
    ("E", True, PWM_50, 0.0, 0.0),
    ("A", True, DUTY_F, -12.0, -12.0),
    ("B", True, DUTY_F, -12.0, -12.0),
    ("C", True, DUTY_F, -12.0, -12.0),
    ("D", True, DUTY_F, -12.0, -12.0),
    ("E", True, DUTY_F, 0.0, 0.0),
    # diode missing: only the low plateau of the PWM changes (not negative any more)
    ("A", False, PWM_50, 12.0, -12.0),  # unplugged: the generator's own -12 V
    ("B", False, PWM_50, 9.0, 0.0),
    ("C", False, PWM_50, 6.0, 0.0),
    ("D", False, PWM_50, 3.0, 0.0),
    ("E", False, PWM_50, 0.0, 0.0),
    ("B", False, DUTY_X1, 9.0, 9.0),
    ("C", False, DUTY_X1, 6.0, 6.0),
    ("B", False, DUTY_F, -12.0, -12.0),
]


@pytest.mark.parametrize(("cp", "diode", "duty", "hi", "lo"), CP_TABLE)
async def test_cp_voltages(board: SimBoard, cp: str, diode: bool, duty: float, hi: float, lo: float) -> None:
    board.plug(1, cp, diode_ok=diode)
    await board.set_duty(1, duty)
    assert await board.read_cp(1) == PilotSample(volts_hi=hi, volts_lo=lo)


@pytest.mark.parametrize(("cp", "diode", "duty", "hi", "lo"), CP_TABLE)
def test_cp_voltages_classify_as_the_core_expects(cp: str, diode: bool, duty: float, hi: float, lo: float) -> None:
    """The sim and the core's decoder agree: the EV's state (or F) and the diode check."""
    expected = Cp.F if duty == DUTY_F and cp != "E" else Cp(cp)
    assert classify(hi) is expected
    if duty == PWM_50 and cp in "BCD":
        assert diode_ok(lo) is diode


async def test_cp_reads_f_before_anything_is_driven(board: SimBoard) -> None:
    assert board.duty_pct(1) == DUTY_F
    board.plug(1, "C")
    assert await board.read_cp(1) == PilotSample(volts_hi=-12.0, volts_lo=-12.0)


@pytest.mark.parametrize("duty", [DUTY_X1, PWM_50, DUTY_F])
async def test_pilot_fault_reads_out_of_every_band(board: SimBoard, duty: float) -> None:
    board.plug(1, "C")
    await board.set_duty(1, duty)
    before = await board.read_cp(1)
    board.fault(1, "pilot", True)
    sample = await board.read_cp(1)
    assert sample == PilotSample(volts_hi=PILOT_FAULT_V, volts_lo=PILOT_FAULT_V)
    assert classify(sample.volts_hi) is None
    board.fault(1, "pilot", False)
    assert await board.read_cp(1) == before


async def test_evses_are_independent(board: SimBoard) -> None:
    board.plug(1, "C")
    await board.set_duty(1, DUTY_X1)
    assert await board.read_cp(2) == PilotSample(volts_hi=-12.0, volts_lo=-12.0)
    assert await board.read_pp(2) is None


# --- PP ------------------------------------------------------------------------------------------


async def test_pp_unplugged_default_open_and_kept(board: SimBoard) -> None:
    assert await board.read_pp(1) is None  # unplugged
    board.plug(1, "B")
    assert await board.read_pp(1) == 220.0  # default cable, 32 A
    board.plug(1, "B", pp_ohms=680.0)
    board.plug(1, "C")  # KEEP: same cable
    assert await board.read_pp(1) == 680.0
    board.plug(1, "C", pp_ohms=None)
    assert await board.read_pp(1) is None  # open
    board.plug(1, "A", pp_ohms=100.0)
    assert await board.read_pp(1) is None  # unplugged, whatever the cable
    board.plug(1, "E", pp_ohms=KEEP)
    assert await board.read_pp(1) == 100.0
    assert board.ev(1) == EvState(cp="E", pp_ohms=100.0, diode_ok=True, load_a=32.0)


# --- relays, LEDs, lock, RCD, temperature --------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "commanded", "feedback"),
    [
        (None, False, False),
        (None, True, True),
        ("relay_welded", False, True),
        ("relay_welded", True, True),
        ("relay_stuck_open", False, False),
        ("relay_stuck_open", True, False),
    ],
)
async def test_relay_feedback(board: SimBoard, fault: str | None, commanded: bool, feedback: bool) -> None:
    if fault is not None:
        board.fault(1, fault, True)
    await board.set_closed(1, commanded)
    assert board.relay_commanded(1) is commanded
    assert await board.feedback_closed(1) is feedback
    if fault is not None:
        board.fault(1, fault, False)
        assert await board.feedback_closed(1) is commanded


async def test_leds_lock_rcd_temperature_record_and_report(board: SimBoard) -> None:
    assert board.led(1) is None
    assert board.locked(1) is False
    await board.set_led(1, Led.CHARGING)
    await board.set_locked(1, True)
    assert (board.led(1), board.locked(1), board.led(2), board.locked(2)) == (Led.CHARGING, True, None, False)
    assert (await board.tripped(1), await board.overtemperature(1)) == (False, False)
    board.fault(1, "rcd", True)
    board.fault(1, "overtemperature", True)
    assert (await board.tripped(1), await board.overtemperature(1)) == (True, True)
    assert (await board.tripped(2), await board.overtemperature(2)) == (False, False)
    assert board.faults(1) == {"rcd", "overtemperature"}
    board.fault(1, "rcd", False)
    assert await board.tripped(1) is False


# --- current and energy --------------------------------------------------------------------------


async def test_energy_is_exact_over_an_hour(board: SimBoard, clock: FakeClock) -> None:
    assert current_to_duty(16.0) == DUTY_16A
    assert duty_to_current(DUTY_16A) == 15.96
    await charging(board)
    assert board.current_a(1) == 15.96
    clock.advance(3600.0)
    assert board.energy_wh(1) == pytest.approx(230 * 15.96 * 3, abs=1e-6)
    meter = board.meter(1)
    assert meter is not None
    sample = await meter.read()
    assert sample == MeterSample(
        energy_wh_import=pytest.approx(230 * 15.96 * 3, abs=1e-6),  # type: ignore[arg-type]
        energy_wh_export=0.0,
        power_w=pytest.approx(230 * 15.96 * 3),  # type: ignore[arg-type]
        currents_a=(15.96, 15.96, 15.96),
        voltages_v=(V, V, V),
        frequency_hz=50.0,
    )


async def test_energy_is_piecewise_exact(board: SimBoard, clock: FakeClock) -> None:
    await charging(board)
    clock.advance(1800.0)
    board.load(1, 10.0)  # integrates the first half hour at 15.96 A first
    clock.advance(1800.0)
    await board.set_closed(1, False)
    clock.advance(3600.0)  # open: nothing more
    assert board.energy_wh(1) == pytest.approx(230 * 3 * (15.96 + 10.0) / 2, abs=1e-6)


async def test_ev_draws_its_load_when_below_the_offer(board: SimBoard) -> None:
    await charging(board, load_a=10.0)
    assert board.current_a(1) == 10.0


async def test_single_phase_evse(board: SimBoard, clock: FakeClock) -> None:
    await charging(board, cid=2, load_a=10.0)
    clock.advance(3600.0)
    meter = board.meter(2)
    assert meter is not None
    sample = await meter.read()
    assert sample.currents_a == (10.0, 0.0, 0.0)
    assert sample.voltages_v == (V, 0.0, 0.0)
    assert sample.power_w == pytest.approx(2300.0)
    assert sample.energy_wh_import == pytest.approx(2300.0, abs=1e-6)
    assert board.energy_wh(1) == 0.0


async def _no_change(b: SimBoard) -> None:
    return None


async def _relay_open(b: SimBoard) -> None:
    await b.set_closed(1, False)


async def _x1(b: SimBoard) -> None:
    await b.set_duty(1, DUTY_X1)


async def _f(b: SimBoard) -> None:
    await b.set_duty(1, DUTY_F)


async def _digital(b: SimBoard) -> None:
    await b.set_duty(1, 5.0)  # "digital communication required": no current offered


async def _ev_b(b: SimBoard) -> None:
    b.plug(1, "B")


async def _ev_d(b: SimBoard) -> None:
    b.plug(1, "D")


async def _welded_x1(b: SimBoard) -> None:
    b.fault(1, "relay_welded", True)
    await b.set_closed(1, False)
    await b.set_duty(1, DUTY_X1)  # the EV obeys X1 even with the contactor welded


async def _welded_pwm(b: SimBoard) -> None:
    b.fault(1, "relay_welded", True)
    await b.set_closed(1, False)


async def _stuck_open(b: SimBoard) -> None:
    b.fault(1, "relay_stuck_open", True)


async def _zero_load(b: SimBoard) -> None:
    b.load(1, 0.0)


@pytest.mark.parametrize(
    ("change", "amps"),
    [
        (_no_change, 15.96),
        (_relay_open, 0.0),
        (_x1, 0.0),
        (_f, 0.0),
        (_digital, 0.0),
        (_ev_b, 0.0),
        (_ev_d, 15.96),
        (_welded_x1, 0.0),
        (_welded_pwm, 15.96),
        (_stuck_open, 0.0),
        (_zero_load, 0.0),
    ],
)
async def test_when_the_ev_draws(
    board: SimBoard, clock: FakeClock, change: Callable[[SimBoard], Coroutine[Any, Any, None]], amps: float
) -> None:
    await charging(board)
    await change(board)
    assert board.current_a(1) == amps
    clock.advance(3600.0)
    assert board.energy_wh(1) == pytest.approx(230 * 3 * amps, abs=1e-6)


async def test_meter_lost_raises_and_energy_survives(board: SimBoard, clock: FakeClock) -> None:
    meter = board.meter(1)
    assert meter is not None
    await charging(board)
    clock.advance(1800.0)
    board.fault(1, "meter_lost", True)
    with pytest.raises(HardwareError, match="not answering"):
        await meter.read()
    clock.advance(1800.0)  # the EV goes on charging; the meter goes on counting
    with pytest.raises(HardwareError):
        await meter.read()
    board.fault(1, "meter_lost", False)
    sample = await meter.read()
    assert sample.energy_wh_import == pytest.approx(230 * 15.96 * 3, abs=1e-6)
    other = board.meter(2)
    assert other is not None
    assert (await other.read()).energy_wh_import == 0.0


async def test_energy_without_a_meter_is_still_counted(clock: FakeClock) -> None:
    b = SimBoard([1], clock=clock, meter_ids=[])
    await charging(b, load_a=10.0)
    clock.advance(360.0)
    assert b.meter(1) is None
    assert b.energy_wh(1) == pytest.approx(230.0 * 10.0 * 3 / 10, abs=1e-9)


async def test_a_clock_stepping_back_neither_loses_nor_double_counts(board: SimBoard, clock: FakeClock) -> None:
    await charging(board, load_a=10.0)
    clock.advance(360.0)
    assert board.energy_wh(1) == pytest.approx(690.0, abs=1e-9)
    clock.t -= 100.0  # a misbehaving clock
    assert board.energy_wh(1) == pytest.approx(690.0, abs=1e-9)
    clock.advance(100.0 + 36.0)  # only the 36 s past the last integration count
    assert board.energy_wh(1) == pytest.approx(759.0, abs=1e-9)


# --- tokens --------------------------------------------------------------------------------------


async def test_tokens_delivered_in_order(board: SimBoard) -> None:
    board.token(1, "AA01")
    board.token(2, "BB02", "ISO14443")
    board.token(1, "CC03")
    assert await board.next_token() == TokenRead(cid=1, id_token="AA01", token_type="RFID")
    assert await board.next_token() == TokenRead(cid=2, id_token="BB02", token_type="ISO14443")
    assert await board.next_token() == TokenRead(cid=1, id_token="CC03")


async def test_next_token_waits_for_a_card(board: SimBoard) -> None:
    waiter = asyncio.create_task(board.next_token(), name="token-waiter")
    await asyncio.sleep(0)
    assert not waiter.done()
    board.token(2, "DD04")
    assert await asyncio.wait_for(waiter, timeout=1.0) == TokenRead(cid=2, id_token="DD04")


def test_board_built_outside_a_loop_delivers_tokens_inside_one(clock: FakeClock) -> None:
    b = SimBoard([1], clock=clock)
    b.token(1, "EE05")
    assert asyncio.run(b.next_token()) == TokenRead(cid=1, id_token="EE05")


# --- input validation ----------------------------------------------------------------------------

NAN, INF = math.nan, math.inf

BAD_CALLS: list[tuple[str, Callable[[SimBoard], object], str]] = [
    ("plug cp Z", lambda b: b.plug(1, "Z"), "cp"),
    ("plug cp F", lambda b: b.plug(1, "F"), "cp"),  # F is driven by the EVSE, not an EV state
    ("plug cp lowercase", lambda b: b.plug(1, "c"), "cp"),
    ("plug cp int", lambda b: b.plug(1, 3), "cp"),  # type: ignore[arg-type]
    ("plug cp None", lambda b: b.plug(1, None), "cp"),  # type: ignore[arg-type]
    ("plug pp negative", lambda b: b.plug(1, "B", pp_ohms=-1), "pp_ohms"),
    ("plug pp nan", lambda b: b.plug(1, "B", pp_ohms=NAN), "pp_ohms"),
    ("plug pp inf", lambda b: b.plug(1, "B", pp_ohms=INF), "pp_ohms"),
    ("plug pp str", lambda b: b.plug(1, "B", pp_ohms="220"), "pp_ohms"),  # type: ignore[arg-type]
    ("plug pp bool", lambda b: b.plug(1, "B", pp_ohms=True), "pp_ohms"),
    ("plug diode str", lambda b: b.plug(1, "B", diode_ok="yes"), "diode_ok"),  # type: ignore[arg-type]
    ("plug diode int", lambda b: b.plug(1, "B", diode_ok=1), "diode_ok"),  # type: ignore[arg-type]
    ("load negative", lambda b: b.load(1, -1), "current_a"),
    ("load above 80", lambda b: b.load(1, 81), "current_a"),
    ("load nan", lambda b: b.load(1, NAN), "current_a"),
    ("load inf", lambda b: b.load(1, INF), "current_a"),
    ("load str", lambda b: b.load(1, "10"), "current_a"),  # type: ignore[arg-type]
    ("load bool", lambda b: b.load(1, True), "current_a"),
    ("load None", lambda b: b.load(1, None), "current_a"),  # type: ignore[arg-type]
    ("fault fire", lambda b: b.fault(1, "fire", True), "fault"),
    ("fault case", lambda b: b.fault(1, "RCD", True), "fault"),
    ("fault None", lambda b: b.fault(1, None, True), "fault"),  # type: ignore[arg-type]
    ("fault active int", lambda b: b.fault(1, "rcd", 1), "active"),  # type: ignore[arg-type]
    ("fault active str", lambda b: b.fault(1, "rcd", "true"), "active"),  # type: ignore[arg-type]
    ("token empty", lambda b: b.token(1, ""), "id_token"),
    ("token int", lambda b: b.token(1, 123), "id_token"),  # type: ignore[arg-type]
    ("token too long", lambda b: b.token(1, "x" * 256), "id_token"),
    ("token type empty", lambda b: b.token(1, "AA01", ""), "token_type"),
    ("token type None", lambda b: b.token(1, "AA01", None), "token_type"),  # type: ignore[arg-type]
    ("unknown plug", lambda b: b.plug(9, "C"), "unknown EVSE id 9"),
    ("unknown load", lambda b: b.load(9, 10), "unknown EVSE id 9"),
    ("unknown fault", lambda b: b.fault(9, "rcd", True), "unknown EVSE id 9"),
    ("unknown token", lambda b: b.token(9, "AA01"), "unknown EVSE id 9"),
    ("evse id bool", lambda b: b.plug(True, "C"), "unknown EVSE id True"),
    ("evse id str", lambda b: b.load("1", 10), "unknown EVSE id '1'"),  # type: ignore[arg-type]
    ("unknown view", lambda b: b.ev(9), "unknown EVSE id 9"),
    ("set_duty above 100", lambda b: b.set_duty(1, 100.5), "duty_pct"),
    ("set_duty negative", lambda b: b.set_duty(1, -1), "duty_pct"),
    ("set_duty nan", lambda b: b.set_duty(1, NAN), "duty_pct"),
    ("set_duty bool", lambda b: b.set_duty(1, True), "duty_pct"),
    ("set_duty unknown", lambda b: b.set_duty(9, 50), "unknown EVSE id 9"),
    ("set_closed int", lambda b: b.set_closed(1, 0), "closed"),  # type: ignore[arg-type]
    ("set_locked str", lambda b: b.set_locked(1, "yes"), "locked"),  # type: ignore[arg-type]
    ("set_led str", lambda b: b.set_led(1, "idle"), "led"),  # type: ignore[arg-type]
    ("read_cp unknown", lambda b: b.read_cp(9), "unknown EVSE id 9"),
    ("feedback unknown", lambda b: b.feedback_closed(0), "unknown EVSE id 0"),
]


def snapshot(b: SimBoard) -> list[tuple[object, ...]]:
    return [
        (
            b.ev(c), b.relay_commanded(c), b.duty_pct(c), b.led(c), b.locked(c), b.faults(c), b.current_a(c),
            b.energy_wh(c),
        )
        for c in (1, 2)
    ]


@pytest.mark.parametrize(("call", "match"), [(c, m) for _, c, m in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS])
async def test_bad_input_raises_and_changes_nothing(
    board: SimBoard, clock: FakeClock, call: Callable[[SimBoard], object], match: str
) -> None:
    await charging(board)
    board.plug(1, "C", pp_ohms=680.0, diode_ok=False)
    board.fault(1, "relay_welded", True)
    await board.set_led(1, Led.CHARGING)
    clock.advance(60.0)
    before = snapshot(board)

    async def attempt() -> None:
        result = call(board)
        if inspect.iscoroutine(result):
            await result

    with pytest.raises(ValueError, match=match):
        await attempt()
    assert snapshot(board) == before
    board.token(2, "GOOD")  # nothing was queued by the bad call
    assert await board.next_token() == TokenRead(cid=2, id_token="GOOD")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"evse_ids": []}, "evse_ids"),
        ({"evse_ids": [0]}, "evse_ids"),
        ({"evse_ids": [1, 1]}, "unique"),
        ({"evse_ids": ["1"]}, "evse_ids"),
        ({"evse_ids": [True]}, "evse_ids"),
        ({"phases": 2}, "phases"),
        ({"phases": {1: 3, 9: 1}}, "phases"),
        ({"phases": {1: True}}, "phases"),
        ({"voltage_v": NAN}, "voltage_v"),
        ({"voltage_v": 0}, "voltage_v"),
        ({"meter_ids": [9]}, "meter_ids"),
        ({"clock": 1000.0}, "clock"),
    ],
)
def test_bad_construction_is_refused(clock: FakeClock, kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"evse_ids": [1, 2], "clock": clock, **kwargs}
    with pytest.raises(ValueError, match=match):
        SimBoard(**args)


def test_phases_mapping_defaults_missing_evses_to_three(clock: FakeClock) -> None:
    b = SimBoard([1, 2], clock=clock, phases={2: 1})
    step(b.set_duty(1, DUTY_16A))
    step(b.set_duty(2, DUTY_16A))
    for c in (1, 2):
        b.plug(c, "C")
        step(b.set_closed(c, True))
    m1, m2 = b.meter(1), b.meter(2)
    assert m1 is not None
    assert m2 is not None
    assert step(m1.read()).currents_a == (15.96,) * 3
    assert step(m2.read()).currents_a == (15.96, 0.0, 0.0)


# --- hypothesis: physical invariants under any script -------------------------------------------

DUTIES = st.one_of(
    st.sampled_from([DUTY_F, DUTY_X1, 5.0, 8.0, 10.0, DUTY_16A, 53.3, 85.0, 96.0, 97.0, 99.9]),
    st.floats(min_value=0.0, max_value=100.0),
)


class SimPhysics(RuleBasedStateMachine):
    """Any sequence of script ops, device commands and clock steps keeps the physics sound: energy
    never decreases and grows exactly by V x I x phases x dt, and the current is what the EV may draw."""

    @initialize()
    def setup(self) -> None:
        self.clock = FakeClock(5.0)
        self.board = SimBoard([1, 2], clock=self.clock, phases={1: 3, 2: 1}, voltage_v=V)
        self.energy = {1: 0.0, 2: 0.0}

    @rule(cid=st.sampled_from([1, 2]), cp=st.sampled_from("ABCDE"),
          pp=st.sampled_from([KEEP, None, 0.0, 100.0, 220.0, 1500.0]), diode=st.booleans())
    def plug(self, cid: int, cp: str, pp: float | Keep | None, diode: bool) -> None:
        self.board.plug(cid, cp, pp_ohms=pp, diode_ok=diode)

    @rule(cid=st.sampled_from([1, 2]), amps=st.floats(min_value=0.0, max_value=80.0))
    def load(self, cid: int, amps: float) -> None:
        self.board.load(cid, amps)

    @rule(cid=st.sampled_from([1, 2]), fault=st.sampled_from(sorted(FAULTS)), active=st.booleans())
    def fault(self, cid: int, fault: str, active: bool) -> None:
        self.board.fault(cid, fault, active)

    @rule(cid=st.sampled_from([1, 2]), duty=DUTIES)
    def set_duty(self, cid: int, duty: float) -> None:
        step(self.board.set_duty(cid, duty))

    @rule(cid=st.sampled_from([1, 2]), closed=st.booleans())
    def set_closed(self, cid: int, closed: bool) -> None:
        step(self.board.set_closed(cid, closed))

    @rule(dt=st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=7200.0)))
    def advance(self, dt: float) -> None:
        before = {c: self.board.energy_wh(c) for c in (1, 2)}
        power = {c: V * self.board.current_a(c) * (3 if c == 1 else 1) for c in (1, 2)}
        t0 = self.clock.t
        self.clock.advance(dt)
        for c in (1, 2):
            expected = before[c] + power[c] * (self.clock.t - t0) / 3600.0
            assert self.board.energy_wh(c) == pytest.approx(expected, rel=1e-9, abs=1e-9)

    @invariant()
    def energy_never_decreases(self) -> None:
        for c in (1, 2):
            now = self.board.energy_wh(c)
            assert now >= self.energy[c]
            self.energy[c] = now

    @invariant()
    def current_is_what_the_ev_may_draw(self) -> None:
        for c in (1, 2):
            ev, faults, duty = self.board.ev(c), self.board.faults(c), self.board.duty_pct(c)
            amps = self.board.current_a(c)
            assert 0.0 <= amps <= min(ev.load_a, 80.0)
            closed = "relay_welded" in faults or (self.board.relay_commanded(c) and "relay_stuck_open" not in faults)
            assert step(self.board.feedback_closed(c)) is closed
            offered = duty_to_current(duty) if 0.0 < duty < 100.0 else None
            if not closed or ev.cp not in "CD" or offered is None:
                assert amps == 0.0
            else:
                assert amps == min(ev.load_a, offered)


TestSimPhysics = SimPhysics.TestCase
