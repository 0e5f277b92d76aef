"""Conformance of every board backend to the contracts of hal/protocols.py.

Each test states one point of a Protocol's docstring and runs, with the same assertions, against the
simulated board ("sim", `hal.sim.SimBoard`) and the Raspberry Pi board over its fake buses ("rpi",
`hal.rpi.RpiBoard`: fake RPi.GPIO, spidev with an MCP3008, python-evdev, a PWM sysfs tree). The board
is used through the Protocol attributes of `hal.protocols.Board` only; the outside world (the EV, the
contactor, the RCD, a card) is played by the backend's `World` (tests/hal/conformance_support.py).

A test that needs a failure only some worlds can inject is parametrized over those backends only
(`backends(...)`), so nothing is skipped; where the sim cannot show a contract point at all, the test
says so. A contract point the sim does not meet is marked `xfail(strict=True)` with the difference as
the reason: it is a finding, reported, not hidden (strict: the marker must go when the sim is fixed).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware.core.errors import HardwareError
from firmware.core.events import Led
from hal.protocols import Board, Leds, Lock, Pilot, PilotSample, Rcd, Relays, Temperature, TokenRead, TokenReader
from tests.hal.conformance_support import (
    ADC_FAILURE,
    CID,
    LOCK_JAM,
    PWM_FAILURE,
    READER_UNPLUG,
    UNKNOWN_CID,
    RpiWorld,
    SimWorld,
    World,
    backends,
)

LEAK_SETTLE_S = 0.5
#: read_cp's tolerance on a plateau (V), read_pp's (relative).
CP_TOL_V = 0.2
PP_TOL = 0.03
#: How long a test waits for an event that should come at once.
EVENT_TIMEOUT_S = 2.0


@pytest.fixture(params=backends())
async def world(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[World]:
    """The backend's world with its board open (`world.board`)."""
    w: SimWorld | RpiWorld = SimWorld() if request.param == "sim" else RpiWorld(monkeypatch, tmp_path)
    try:
        async with w.board:
            yield w
    finally:
        if isinstance(w, RpiWorld):
            w.close()


@pytest.fixture
def board(world: World) -> Board:
    return world.board


# --- Board ------------------------------------------------------------------------------------------


async def test_board_offers_every_protocol(board: Board) -> None:
    assert isinstance(board, Board)
    for attr, protocol in [("pilot", Pilot), ("relays", Relays), ("leds", Leds), ("lock", Lock), ("rcd", Rcd),
                           ("temperature", Temperature), ("tokens", TokenReader)]:
        assert isinstance(getattr(board, attr), protocol), attr
    assert isinstance(board.is_sim, bool)


# --- Pilot ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("duty_pct", [0.0, 100.0, 53.3])
async def test_set_duty_is_accepted_and_idempotent(world: World, board: Board, duty_pct: float) -> None:
    for _ in range(2):
        await board.pilot.set_duty(CID, duty_pct)
        assert world.driven_duty_pct(CID) == pytest.approx(duty_pct, abs=0.05)


def assert_plateaus(sample: PilotSample, hi_v: float, lo_v: float) -> None:
    assert isinstance(sample, PilotSample)
    assert sample.volts_hi == pytest.approx(hi_v, abs=CP_TOL_V), sample
    assert sample.volts_lo == pytest.approx(lo_v, abs=CP_TOL_V), sample


async def test_read_cp_state_a_with_constant_plus_12(world: World, board: Board) -> None:
    world.plug(CID, "A")
    await board.pilot.set_duty(CID, 100.0)
    assert_plateaus(await board.pilot.read_cp(CID), 12.0, 12.0)


async def test_read_cp_state_b_with_pwm(world: World, board: Board) -> None:
    world.plug(CID, "B")
    await board.pilot.set_duty(CID, 53.3)
    assert_plateaus(await board.pilot.read_cp(CID), 9.0, -12.0)


async def test_read_cp_state_f_is_constant_minus_12(world: World, board: Board) -> None:
    world.plug(CID, "B")
    await board.pilot.set_duty(CID, 0.0)
    assert_plateaus(await board.pilot.read_cp(CID), -12.0, -12.0)


async def test_read_pp_of_a_32a_cable(world: World, board: Board) -> None:
    world.plug(CID, "B", pp_ohms=220.0)
    ohms = await board.pilot.read_pp(CID)
    assert ohms is not None
    assert ohms == pytest.approx(220.0, rel=PP_TOL)


@pytest.mark.parametrize("cp", ["A", "B"])
async def test_read_pp_open_is_none(world: World, board: Board, cp: str) -> None:
    world.plug(CID, cp, pp_ohms=None)  # A: no cable at all; B: a cable without coding resistor
    assert await board.pilot.read_pp(CID) is None


async def test_pilot_refuses_an_unknown_evse(board: Board) -> None:
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.pilot.read_cp(UNKNOWN_CID)
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.pilot.read_pp(UNKNOWN_CID)
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.pilot.set_duty(UNKNOWN_CID, 100.0)


# SimBoard cannot make its ADC or PWM fail (its "pilot" fault gives out-of-band volts, not an error).
@pytest.mark.parametrize("world", backends(ADC_FAILURE), indirect=True)
async def test_read_cp_and_read_pp_raise_hardware_error_when_the_adc_fails(world: World, board: Board) -> None:
    world.plug(CID, "B")
    world.fail(ADC_FAILURE)
    with pytest.raises(HardwareError) as cp_error:
        await board.pilot.read_cp(CID)
    with pytest.raises(HardwareError) as pp_error:
        await board.pilot.read_pp(CID)
    assert cp_error.value.__cause__ is not None  # the bus's error, chained
    assert pp_error.value.__cause__ is not None
    world.heal()
    assert (await board.pilot.read_pp(CID)) == pytest.approx(220.0, rel=PP_TOL)


@pytest.mark.parametrize("world", backends(PWM_FAILURE), indirect=True)
async def test_set_duty_raises_hardware_error_when_the_pwm_fails(world: World, board: Board) -> None:
    world.fail(PWM_FAILURE)
    with pytest.raises(HardwareError) as info:
        await board.pilot.set_duty(CID, 53.3)
    assert info.value.__cause__ is not None
    world.heal()
    await board.pilot.set_duty(CID, 53.3)  # idempotence must not skip the duty that failed
    assert world.driven_duty_pct(CID) == pytest.approx(53.3, abs=0.05)


# --- Relays -----------------------------------------------------------------------------------------


async def test_set_closed_is_idempotent_and_the_feedback_follows(board: Board) -> None:
    assert await board.relays.feedback_closed(CID) is False
    for closed in (True, True, False, False, True):
        await board.relays.set_closed(CID, closed)
        assert await board.relays.feedback_closed(CID) is closed


async def test_feedback_reports_the_contact_not_the_command(world: World, board: Board) -> None:
    await board.relays.set_closed(CID, True)
    world.weld(CID)
    await board.relays.set_closed(CID, False)
    assert await board.relays.feedback_closed(CID) is True  # welded: judging it is the core's job


async def test_relays_refuse_an_unknown_evse(board: Board) -> None:
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.relays.set_closed(UNKNOWN_CID, False)
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.relays.feedback_closed(UNKNOWN_CID)


# --- Leds -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("led", list(Led))
async def test_set_led_accepts_every_led_and_is_idempotent(world: World, board: Board, led: Led) -> None:
    for _ in range(2):
        await board.leds.set_led(CID, led)
        assert world.shows(CID, led)


async def test_set_led_changes_between_patterns(world: World, board: Board) -> None:
    for led in [*Led, Led.IDLE]:
        await board.leds.set_led(CID, led)
        assert world.shows(CID, led), led


async def test_leds_refuse_an_unknown_evse(board: Board) -> None:
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.leds.set_led(UNKNOWN_CID, Led.IDLE)


# --- Lock -------------------------------------------------------------------------------------------


async def test_set_locked_returns_once_confirmed_and_is_idempotent(world: World, board: Board) -> None:
    for locked in (True, True, False, False):
        await board.lock.set_locked(CID, locked)
        assert world.locked(CID) is locked


# SimBoard has no lock fault: its set_locked always succeeds, so only the rpi world can show this.
@pytest.mark.parametrize("world", backends(LOCK_JAM), indirect=True)
async def test_a_lock_that_does_not_confirm_raises_hardware_error(world: World, board: Board) -> None:
    world.fail(LOCK_JAM)
    with pytest.raises(HardwareError):
        await board.lock.set_locked(CID, True)
    assert world.locked(CID) is False


async def test_lock_refuses_an_unknown_evse(board: Board) -> None:
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.lock.set_locked(UNKNOWN_CID, True)


# --- Rcd --------------------------------------------------------------------------------------------


async def test_tripped_is_false_normally_and_true_while_tripped(world: World, board: Board) -> None:
    assert await board.rcd.tripped(CID) is False
    await world.rcd(CID, True)
    assert await board.rcd.tripped(CID) is True
    assert await board.rcd.tripped(CID) is True  # still active
    await world.rcd(CID, False)
    await world.settle()
    assert await board.rcd.tripped(CID) is False


async def test_a_short_trip_between_two_polls_is_reported_once(world: World, board: Board) -> None:
    assert await board.rcd.tripped(CID) is False
    await world.rcd(CID, True)
    await world.rcd(CID, False)
    await world.settle()
    assert await board.rcd.tripped(CID) is True  # latched
    assert await board.rcd.tripped(CID) is False  # once


async def test_on_trip_listener_is_called_on_the_loop(world: World, board: Board) -> None:
    calls: list[tuple[int, int]] = []
    event = asyncio.Event()

    def on_trip(cid: int) -> None:
        calls.append((cid, threading.get_ident()))
        event.set()

    board.rcd.on_trip(on_trip)
    await world.rcd(CID, True)
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        await event.wait()
    assert calls == [(CID, threading.get_ident())]  # the loop's thread
    assert await board.rcd.tripped(CID) is True


async def test_self_test_passes_on_a_healthy_rcd_and_is_not_reported_as_a_trip(world: World, board: Board) -> None:
    calls: list[int] = []
    board.rcd.on_trip(calls.append)
    assert await board.rcd.self_test(CID) is True
    await world.settle()  # an interrupt from the test would be due now
    assert calls == []
    assert await board.rcd.tripped(CID) is False


async def test_self_test_fails_when_the_rcd_does_not_trip(world: World, board: Board) -> None:
    world.break_rcd_test(CID)
    assert await board.rcd.self_test(CID) is False


async def test_self_test_fails_while_the_rcd_is_tripped(world: World, board: Board) -> None:
    await world.rcd(CID, True)
    assert await board.rcd.self_test(CID) is False  # it cannot release: not a pass
    assert await board.rcd.tripped(CID) is True


async def test_rcd_refuses_an_unknown_evse(board: Board) -> None:
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.rcd.tripped(UNKNOWN_CID)
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.rcd.self_test(UNKNOWN_CID)


# --- Temperature ------------------------------------------------------------------------------------


async def test_overtemperature_follows_the_alarm(world: World, board: Board) -> None:
    assert await board.temperature.overtemperature(CID) is False
    world.overheat(CID, True)
    assert await board.temperature.overtemperature(CID) is True
    world.overheat(CID, False)
    assert await board.temperature.overtemperature(CID) is False


async def test_temperature_refuses_an_unknown_evse(board: Board) -> None:
    with pytest.raises(ValueError, match=str(UNKNOWN_CID)):
        await board.temperature.overtemperature(UNKNOWN_CID)


# --- TokenReader ------------------------------------------------------------------------------------


async def test_a_card_is_a_token_read(world: World, board: Board) -> None:
    world.present_card(CID, "1A2B3C4D")
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        read = await board.tokens.next_token()
    assert read == TokenRead(cid=CID, id_token="1A2B3C4D", token_type="RFID")


async def test_next_token_waits_for_a_card(board: Board) -> None:
    task = asyncio.create_task(board.tokens.next_token())
    await asyncio.sleep(0.01)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# SimBoard's reader is never gone (its reopen() is a no-op), so only the rpi world can unplug one.
@pytest.mark.parametrize("world", backends(READER_UNPLUG), indirect=True)
async def test_a_reader_that_is_gone_raises_until_reopened(world: World, board: Board) -> None:
    world.fail(READER_UNPLUG)
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        with pytest.raises(HardwareError):
            await board.tokens.next_token()
    with pytest.raises(HardwareError):
        await board.tokens.reopen()  # still missing
    world.replug_reader()
    await board.tokens.reopen()
    world.present_card(CID, "1A2B3C4D")
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        read = await board.tokens.next_token()
    assert read == TokenRead(cid=CID, id_token="1A2B3C4D", token_type="RFID")
