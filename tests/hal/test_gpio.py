"""GpioBoard over the fake RPi.GPIO module (tests/fakes/RPi/GPIO.py): exact pin levels, pulls, edge
interrupts from the library's thread, LED animation, the lock's pulse and feedback, the RCD latch and
self-test, and the conversion of library errors. The world around the pins (a relay's mirror contact,
a lock motor, an RCD module) is modelled with `fake_on_output` and `fake_drive`."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from types import ModuleType

import pytest

from firmware.core.errors import HardwareError
from firmware.core.events import Led
from tests.support.fakes import fresh_fake
from hal.gpio import LED_PATTERNS, EvsePins, GpioBoard, GpioTiming, LedPattern
from hal.protocols import Leds, Lock, Rcd, Relays, Temperature

LEAK_SETTLE_S = 0.5

RELAY, FEEDBACK, RED, GREEN, BLUE = 17, 27, 5, 6, 13
LOCK, UNLOCK, LOCK_FB, TRIP, TEST, PHASES, HOT = 23, 24, 22, 25, 12, 16, 26
C1 = EvsePins(relay=RELAY, relay_feedback=FEEDBACK, led_red=RED, led_green=GREEN, led_blue=BLUE, lock=LOCK,
              unlock=UNLOCK, lock_feedback=LOCK_FB, rcd_trip=TRIP, rcd_test=TEST, phase_switch=PHASES,
              overtemperature=HOT)
C2 = EvsePins(relay=18)
#: Relay, its feedback, the RCD's trip output and the red LED are active-low on the default board.
ACTIVE_LOW = frozenset({RELAY, FEEDBACK, TRIP, RED})
FAST = GpioTiming(lock_pulse_s=0.02, lock_confirm_s=0.06, rcd_debounce_ms=5, rcd_test_pulse_s=0.01,
                  rcd_test_timeout_s=0.05, rcd_release_timeout_s=0.05)
OUTPUTS = (RELAY, PHASES, LOCK, UNLOCK, TEST, RED, GREEN, BLUE, 18)
INPUTS = (FEEDBACK, TRIP, HOT, LOCK_FB)


def level(pin: int, active: bool, active_low: frozenset[int] = ACTIVE_LOW) -> int:
    return int(active) ^ int(pin in active_low)


@pytest.fixture
def gpio(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake RPi.GPIO, imported fresh as `RPi.GPIO`."""
    module = fresh_fake(monkeypatch, "RPi.GPIO")
    module.fake_reset()
    yield module
    module.fake_reset()


@pytest.fixture
async def board(gpio: ModuleType) -> AsyncIterator[GpioBoard]:
    async with GpioBoard({1: C1, 2: C2}, timing=FAST, active_low=ACTIVE_LOW) as b:
        yield b


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.002)


def levels(gpio: ModuleType, pin: int) -> list[int]:
    return [lvl for _, lvl in gpio.fake_history(pin)]


# --- opening and closing ------------------------------------------------------------------------


@pytest.mark.parametrize("active_low", [frozenset(), frozenset(OUTPUTS + INPUTS)])
async def test_open_sets_every_output_up_at_its_safe_level_before_any_input(
    gpio: ModuleType, monkeypatch: pytest.MonkeyPatch, active_low: frozenset[int]
) -> None:
    calls: list[tuple[int, int, dict[str, int]]] = []
    real_setup = gpio.setup

    def recording_setup(channel: int, direction: int, **kwargs: int) -> None:
        calls.append((channel, direction, kwargs))
        real_setup(channel, direction, **kwargs)

    monkeypatch.setattr(gpio, "setup", recording_setup)
    async with GpioBoard({1: C1, 2: C2}, active_low=active_low):
        assert gpio.getmode() == gpio.BCM
        outputs = [(pin, kw) for pin, direction, kw in calls if direction == gpio.OUT]
        inputs = [(pin, kw) for pin, direction, kw in calls if direction == gpio.IN]
        assert calls[: len(outputs)] == [(pin, gpio.OUT, kw) for pin, kw in outputs]  # outputs first
        assert [pin for pin, _ in outputs] == [RELAY, PHASES, LOCK, UNLOCK, TEST, RED, GREEN, BLUE, 18]
        for pin, kw in outputs:
            assert kw == {"initial": level(pin, False, active_low)}, pin
            assert levels(gpio, pin) == [level(pin, False, active_low)], pin  # never anything else
        for pin, kw in inputs:
            assert kw == {"pull_up_down": gpio.PUD_UP if pin in active_low else gpio.PUD_DOWN}, pin
        assert sorted(pin for pin, _ in inputs) == sorted(INPUTS)


async def test_close_drives_outputs_safe_and_cleans_up_only_our_pins(gpio: ModuleType) -> None:
    gpio.setmode(gpio.BCM)
    gpio.setup(4, gpio.OUT, initial=gpio.HIGH)  # another part of the program owns GPIO 4
    gpio.setup(9, gpio.IN, pull_up_down=gpio.PUD_UP)
    async with GpioBoard({1: C1, 2: C2}, timing=FAST, active_low=ACTIVE_LOW) as b:
        await b.set_closed(1, True)
        await b.set_three_phases(1, True)
        await b.set_led(1, Led.FAULT)
        assert gpio.fake_level(RELAY) == level(RELAY, True)
    for pin in OUTPUTS:
        assert levels(gpio, pin)[-1] == level(pin, False), pin  # driven safe before the release
        assert gpio.fake_level(pin) is None, pin  # released: an input again
    for pin in OUTPUTS + INPUTS:
        with pytest.raises(RuntimeError, match="You must setup"):
            gpio.input(pin)
    assert gpio.fake_level(4) == gpio.HIGH
    assert gpio.input(9) == gpio.HIGH
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "gpio-leds"]


async def test_missing_library_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "RPi", None)
    monkeypatch.setitem(sys.modules, "RPi.GPIO", None)
    with pytest.raises(HardwareError) as info:
        async with GpioBoard({1: C1}):
            pass
    message = str(info.value)
    assert message == (
        "RPi.GPIO is not installed: pip install 'charger-firmware[rpi]' (on a Pi 5 it comes from rpi-lgpio)"
    )
    assert "\n" not in message
    assert isinstance(info.value.__cause__, ImportError)


async def test_a_failed_open_releases_the_pins_it_set_up(gpio: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    real_setup = gpio.setup

    def busy(channel: int, direction: int, **kwargs: int) -> None:
        if channel == TRIP:
            raise RuntimeError("GPIO busy")  # rpi-lgpio: another process holds the line
        real_setup(channel, direction, **kwargs)

    monkeypatch.setattr(gpio, "setup", busy)
    busy_trip = r"^GPIO 25 \(c1 rcd_trip\): setup as input failed: RuntimeError: GPIO busy"
    with pytest.raises(HardwareError, match=busy_trip):
        async with GpioBoard({1: C1}, active_low=ACTIVE_LOW):
            pass
    for pin in (RELAY, LOCK, FEEDBACK):
        with pytest.raises(RuntimeError, match="You must setup"):
            gpio.input(pin)


async def test_a_library_error_names_the_pin(gpio: ModuleType) -> None:
    b = await GpioBoard({1: C1}, active_low=ACTIVE_LOW).__aenter__()
    gpio.cleanup([RELAY, HOT])  # someone else released two of our pins
    with pytest.raises(HardwareError) as info:
        await b.set_closed(1, False)
    assert str(info.value) == (
        "GPIO 17 (c1 relay): output HIGH failed: RuntimeError: The GPIO channel has not been set up as an OUTPUT"
    )
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(HardwareError, match=r"GPIO 26 \(c1 overtemperature\): input failed"):
        await b.overtemperature(1)
    with pytest.raises(HardwareError, match=r"^GPIO 17 \(c1 relay\): output HIGH failed"):  # at close, again
        await b.__aexit__(None, None, None)
    assert gpio.fake_level(LOCK) is None  # the rest was still driven safe and released


async def test_the_board_implements_the_protocols(board: GpioBoard) -> None:
    for protocol in (Relays, Leds, Lock, Rcd, Temperature):
        assert isinstance(board, protocol)
    with pytest.raises(ValueError, match="unknown EVSE id 3"):
        await board.set_closed(3, True)


async def test_calls_on_a_closed_board_raise(gpio: ModuleType) -> None:
    b = GpioBoard({1: C1})
    with pytest.raises(HardwareError, match="not open"):
        await b.set_closed(1, False)


# --- relays, phase switch, over-temperature ----------------------------------------------------


@pytest.mark.parametrize("active_low", [frozenset(), frozenset({RELAY, FEEDBACK})])
async def test_relay_and_its_mirror_contact(gpio: ModuleType, active_low: frozenset[int]) -> None:
    welded = False

    def contactor(lvl: int) -> None:  # the mirror contact follows the coil unless welded
        closed = welded or lvl == level(RELAY, True, active_low)
        gpio.fake_drive(FEEDBACK, level(FEEDBACK, closed, active_low))

    gpio.fake_on_output(RELAY, contactor)
    async with GpioBoard({1: C1}, active_low=active_low) as b:
        assert await b.feedback_closed(1) is False
        await b.set_closed(1, True)
        assert gpio.fake_level(RELAY) == level(RELAY, True, active_low)
        assert await b.feedback_closed(1) is True
        await b.set_closed(1, True)  # idempotent
        assert gpio.fake_level(RELAY) == level(RELAY, True, active_low)
        welded = True
        await b.set_closed(1, False)
        assert gpio.fake_level(RELAY) == level(RELAY, False, active_low)
        assert await b.feedback_closed(1) is True  # reported as read: judging it is the core's job


async def test_feedback_is_none_when_not_wired(board: GpioBoard) -> None:
    assert await board.feedback_closed(2) is None


async def test_phase_switch(board: GpioBoard, gpio: ModuleType) -> None:
    await board.set_three_phases(1, True)
    assert gpio.fake_level(PHASES) == gpio.HIGH
    await board.set_three_phases(1, False)
    assert gpio.fake_level(PHASES) == gpio.LOW
    with pytest.raises(HardwareError, match="c2 has no phase-switch contactor"):
        await board.set_three_phases(2, True)


async def test_overtemperature(board: GpioBoard, gpio: ModuleType) -> None:
    assert await board.overtemperature(1) is False  # pulled down: not wired reads inactive
    gpio.fake_drive(HOT, gpio.HIGH)
    assert await board.overtemperature(1) is True
    gpio.fake_drive(HOT, gpio.LOW)
    assert await board.overtemperature(1) is False
    assert await board.overtemperature(2) is False


# --- LEDs ---------------------------------------------------------------------------------------


def test_every_led_has_a_pattern() -> None:
    assert set(LED_PATTERNS) == set(Led)
    with pytest.raises(ValueError, match="no pattern for: fault"):
        GpioBoard({1: C1}, led_patterns={led: p for led, p in LED_PATTERNS.items() if led is not Led.FAULT})


def anim_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "gpio-leds" and not t.done()]


async def test_solid_sets_the_pins_and_needs_no_task(board: GpioBoard, gpio: ModuleType) -> None:
    await board.set_led(1, Led.IDLE)  # green
    assert (gpio.fake_level(RED), gpio.fake_level(GREEN), gpio.fake_level(BLUE)) == (gpio.HIGH, 1, 0)  # red active-low
    await board.set_led(1, Led.UNAVAILABLE)  # white
    assert (gpio.fake_level(RED), gpio.fake_level(GREEN), gpio.fake_level(BLUE)) == (gpio.LOW, 1, 1)
    assert not anim_tasks()
    await board.set_led(2, Led.FAULT)  # no LED pins: nothing to do
    assert not anim_tasks()


async def test_set_led_is_idempotent(board: GpioBoard, gpio: ModuleType) -> None:
    await board.set_led(1, Led.RESERVED)
    before = [len(gpio.fake_history(pin)) for pin in (RED, GREEN, BLUE)]
    await board.set_led(1, Led.RESERVED)
    assert [len(gpio.fake_history(pin)) for pin in (RED, GREEN, BLUE)] == before


TEST_PATTERNS = {led: LedPattern(colour=(False, True, False)) for led in Led} | {
    Led.FAULT: LedPattern(colour=(True, False, False), kind="blink", period_s=0.04),
    Led.CHARGING: LedPattern(colour=(True, False, True), kind="pulse", period_s=0.2),
}


async def test_blink_toggles_every_half_period_and_stops_with_a_solid_pattern(gpio: ModuleType) -> None:
    writes: list[float] = []
    gpio.fake_on_output(RED, lambda lvl: writes.append(asyncio.get_running_loop().time()))
    async with GpioBoard({1: C1}, active_low=ACTIVE_LOW, led_patterns=TEST_PATTERNS) as b:
        start = len(writes)
        await b.set_led(1, Led.FAULT)
        assert len(anim_tasks()) == 1
        await until(lambda: len(writes) >= start + 5)
        await b.set_led(1, Led.IDLE)
        assert not anim_tasks()
        toggles = levels(gpio, RED)[1:]
        assert toggles[:5] == [gpio.LOW, gpio.HIGH, gpio.LOW, gpio.HIGH, gpio.LOW]  # on, off, ... (active-low)
        gaps = [b - a for a, b in zip(writes[start:start + 5], writes[start + 1:start + 5], strict=False)]
        assert all(gap >= 0.015 for gap in gaps), gaps  # half of 0.04 s, never faster
        assert (gpio.fake_level(RED), gpio.fake_level(GREEN), gpio.fake_level(BLUE)) == (gpio.HIGH, 1, 0)  # green


async def test_pulse_steps_the_pwm_duty_and_leaves_active_low_pins_off(gpio: ModuleType) -> None:
    async with GpioBoard({1: C1}, active_low=ACTIVE_LOW, led_patterns=TEST_PATTERNS) as b:
        await b.set_led(1, Led.CHARGING)  # red (active-low) + blue
        samples: set[tuple[float, float]] = set()  # (red, blue) duty %

        def sample() -> bool:
            samples.add((gpio.fake_pwm(RED)[1], gpio.fake_pwm(BLUE)[1]))
            return len(samples) >= 4

        await until(sample)
        assert gpio.fake_pwm(GREEN) is None
        assert gpio.fake_level(GREEN) == gpio.LOW
        for red, blue in samples:
            assert 0.0 <= blue <= 100.0
            assert red == pytest.approx(100.0 - blue)  # the same brightness, inverted for the active-low pin
        assert (100.0, 0.0) in samples  # the first step: dark
        await b.set_led(1, Led.IDLE)  # solid green: PWM stopped, red and blue off
        assert not anim_tasks()
        assert (gpio.fake_pwm(RED), gpio.fake_pwm(BLUE)) == (None, None)
        assert (gpio.fake_level(RED), gpio.fake_level(GREEN), gpio.fake_level(BLUE)) == (gpio.HIGH, 1, 0)


async def test_closing_stops_the_animation(gpio: ModuleType) -> None:
    async with GpioBoard({1: C1}, led_patterns=TEST_PATTERNS) as b:
        await b.set_led(1, Led.CHARGING)
        assert len(anim_tasks()) == 1
    assert not anim_tasks()
    assert gpio.fake_pwm(BLUE) is None


# --- connector lock -----------------------------------------------------------------------------


def lock_motor(gpio: ModuleType) -> None:
    """A motor lock: a pulse on the lock (unlock) drive moves it; the feedback reads HIGH when locked."""
    gpio.fake_on_output(LOCK, lambda lvl: lvl and gpio.fake_drive(LOCK_FB, gpio.HIGH))
    gpio.fake_on_output(UNLOCK, lambda lvl: lvl and gpio.fake_drive(LOCK_FB, gpio.LOW))


async def test_lock_and_unlock_confirmed(board: GpioBoard, gpio: ModuleType) -> None:
    lock_motor(gpio)
    await board.set_locked(1, True)
    (t_on, on), (t_off, off) = gpio.fake_history(LOCK)[1:]
    assert (on, off) == (gpio.HIGH, gpio.LOW)
    assert t_off - t_on >= FAST.lock_pulse_s * 0.9
    await board.set_locked(1, False)
    assert levels(gpio, UNLOCK) == [gpio.LOW, gpio.HIGH, gpio.LOW]
    assert gpio.input(LOCK_FB) == gpio.LOW


async def test_lock_is_idempotent(board: GpioBoard, gpio: ModuleType) -> None:
    gpio.fake_drive(LOCK_FB, gpio.HIGH)  # already locked
    await board.set_locked(1, True)
    assert levels(gpio, LOCK) == [gpio.LOW]  # only the setup: no pulse
    await board.set_locked(2, True)  # no lock pins (tethered cable): nothing


async def test_lock_that_never_confirms(board: GpioBoard, gpio: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(HardwareError) as info:
        await board.set_locked(1, True)
    assert str(info.value) == "c1 connector lock did not confirm locked within 0.06 s (feedback pin 22 reads unlocked)"
    assert loop.time() - start >= FAST.lock_pulse_s + FAST.lock_confirm_s - 0.005
    assert levels(gpio, LOCK) == [gpio.LOW, gpio.HIGH, gpio.LOW]  # de-energised after the pulse
    gpio.fake_drive(LOCK_FB, gpio.HIGH)
    with pytest.raises(HardwareError, match="did not confirm unlocked within 0.06 s .feedback pin 22 reads locked"):
        await board.set_locked(1, False)
    assert gpio.fake_level(UNLOCK) == gpio.LOW


async def test_lock_drive_is_released_when_cancelled_mid_pulse(board: GpioBoard, gpio: ModuleType) -> None:
    task = asyncio.create_task(board.set_locked(1, True))
    await until(lambda: gpio.fake_level(LOCK) == gpio.HIGH)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gpio.fake_level(LOCK) == gpio.LOW


# --- RCD ----------------------------------------------------------------------------------------

TRIPPED, CLEAR = level(TRIP, True), level(TRIP, False)  # LOW, HIGH: an open-collector output


def listener() -> tuple[list[tuple[int, int]], asyncio.Event, Callable[[int], None]]:
    calls: list[tuple[int, int]] = []
    event = asyncio.Event()

    def on_trip(cid: int) -> None:
        calls.append((cid, threading.get_ident()))
        event.set()

    return calls, event, on_trip


async def test_an_interrupt_calls_the_listeners_on_the_loop(board: GpioBoard, gpio: ModuleType) -> None:
    calls, event, on_trip = listener()
    board.on_trip(on_trip)
    assert gpio.input(TRIP) == CLEAR  # pulled up
    assert await board.tripped(1) is False
    gpio.fake_drive(TRIP, TRIPPED)
    async with asyncio.timeout(2):
        await event.wait()
    assert calls == [(1, threading.get_ident())]  # the loop's thread, not the library's
    assert await board.tripped(1) is True
    assert await board.tripped(1) is True  # still active
    gpio.fake_drive(TRIP, CLEAR)
    assert await board.tripped(1) is False
    assert await board.tripped(2) is False  # no trip pin


async def test_a_short_trip_between_two_polls_is_reported_once(board: GpioBoard, gpio: ModuleType) -> None:
    calls, event, on_trip = listener()
    board.on_trip(on_trip)
    gpio.fake_drive(TRIP, TRIPPED)
    async with asyncio.timeout(2):
        await event.wait()
    gpio.fake_drive(TRIP, CLEAR)
    assert await board.tripped(1) is True  # latched
    assert await board.tripped(1) is False
    assert len(calls) == 1


async def test_a_glitch_shorter_than_the_debounce_is_ignored(board: GpioBoard, gpio: ModuleType) -> None:
    calls, _, on_trip = listener()
    board.on_trip(on_trip)
    gpio.fake_drive(TRIP, TRIPPED)
    gpio.fake_drive(TRIP, CLEAR)
    gpio.fake_settle()
    await asyncio.sleep(FAST.rcd_debounce_ms / 1000 * 4)
    assert calls == []
    assert await board.tripped(1) is False


def rcd_module(gpio: ModuleType, *, releases: bool = True) -> None:
    """The RCD module trips while its test input is HIGH and releases when it goes LOW (or never)."""

    def test_input(lvl: int) -> None:
        if lvl:
            gpio.fake_drive(TRIP, TRIPPED)
        elif releases:
            gpio.fake_drive(TRIP, CLEAR)

    gpio.fake_on_output(TEST, test_input)


async def test_self_test_passes_and_is_not_reported_as_a_trip(board: GpioBoard, gpio: ModuleType) -> None:
    rcd_module(gpio)
    calls, _, on_trip = listener()
    board.on_trip(on_trip)
    assert await board.self_test(1) is True
    (t_on, on), (t_off, off) = gpio.fake_history(TEST)[1:3]
    assert (on, off) == (gpio.HIGH, gpio.LOW)
    assert t_off - t_on >= FAST.rcd_test_pulse_s * 0.9
    assert gpio.fake_level(TEST) == gpio.LOW
    gpio.fake_settle()
    await asyncio.sleep(FAST.rcd_debounce_ms / 1000 * 4)  # any interrupt from the test would be due now
    assert calls == []
    assert await board.tripped(1) is False
    assert await board.self_test(2) is True  # no test pin: nothing to test, the config decides


async def test_self_test_fails_without_a_trip(board: GpioBoard, gpio: ModuleType) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await board.self_test(1) is False
    assert loop.time() - start >= FAST.rcd_test_timeout_s - 0.005
    assert gpio.fake_level(TEST) == gpio.LOW
    assert levels(gpio, TEST)[:2] == [gpio.LOW, gpio.HIGH]


async def test_self_test_fails_when_the_trip_never_releases(board: GpioBoard, gpio: ModuleType) -> None:
    rcd_module(gpio, releases=False)
    calls, _, on_trip = listener()
    board.on_trip(on_trip)
    assert await board.self_test(1) is False
    assert gpio.fake_level(TEST) == gpio.LOW
    assert calls == []
    assert await board.tripped(1) is True  # the input is active: that is a real, standing trip


async def test_self_test_refuses_while_tripped(board: GpioBoard, gpio: ModuleType) -> None:
    gpio.fake_drive(TRIP, TRIPPED)
    assert await board.self_test(1) is False
    assert levels(gpio, TEST) == [gpio.LOW]  # not pulsed


async def test_a_trip_latched_before_a_self_test_is_still_reported(board: GpioBoard, gpio: ModuleType) -> None:
    rcd_module(gpio)
    _, event, on_trip = listener()
    board.on_trip(on_trip)
    gpio.fake_drive(TRIP, TRIPPED)
    async with asyncio.timeout(2):
        await event.wait()
    gpio.fake_drive(TRIP, CLEAR)
    assert await board.self_test(1) is True
    assert await board.tripped(1) is True
    assert await board.tripped(1) is False


async def test_tripped_during_a_self_test_ignores_the_test_trip(gpio: ModuleType) -> None:
    rcd_module(gpio)
    slow = GpioTiming(rcd_debounce_ms=5, rcd_test_pulse_s=0.2, rcd_test_timeout_s=0.3, rcd_release_timeout_s=0.1)
    async with GpioBoard({1: C1}, timing=slow, active_low=ACTIVE_LOW) as b:
        test = asyncio.create_task(b.self_test(1))
        await until(lambda: gpio.fake_level(TEST) == gpio.HIGH)
        await asyncio.sleep(0.02)  # the interrupt of the test trip is due now
        assert gpio.input(TRIP) == TRIPPED
        assert not test.done()
        assert await b.tripped(1) is False
        assert await test is True


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"relay": 28}, "relay must be a BCM GPIO number 0..27, got 28"),
        ({"relay": -1}, "relay must be a BCM GPIO number"),
        ({"relay": True}, "relay must be a BCM GPIO number"),
        ({"relay": 5, "led_red": 5}, "led_red and relay are both GPIO 5"),
        ({"relay": 5, "lock": 6, "unlock": 7}, "missing: lock_feedback"),
        ({"relay": 5, "lock_feedback": 6}, "missing: lock, unlock"),
        ({"relay": 5, "rcd_test": 6}, "rcd_test needs rcd_trip"),
    ],
)
def test_evse_pins_are_validated(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EvsePins(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lock_pulse_s": 0}, "lock_pulse_s must be a positive number"),
        ({"lock_confirm_s": float("nan")}, "lock_confirm_s must be"),
        ({"rcd_debounce_ms": 0}, "rcd_debounce_ms must be an integer 1..1000"),
        ({"rcd_debounce_ms": 2.5}, "rcd_debounce_ms must be an integer"),
        ({"rcd_test_timeout_s": -1.0}, "rcd_test_timeout_s must be"),
    ],
)
def test_timing_is_validated(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GpioTiming(**kwargs)


def test_board_config_is_validated() -> None:
    with pytest.raises(ValueError, match="GPIO 17 is both c1 relay and c2 relay"):
        GpioBoard({1: C1, 2: EvsePins(relay=RELAY)})
    with pytest.raises(ValueError, match=r"active_low names GPIO that no EVSE uses: \[4\]"):
        GpioBoard({1: C1}, active_low=frozenset({RELAY, 4}))
    with pytest.raises(ValueError, match="EVSE ids must be positive integers"):
        GpioBoard({0: C1})
    with pytest.raises(ValueError, match="at least one EVSE"):
        GpioBoard({})
    with pytest.raises(ValueError, match="colour must be"):
        LedPattern(colour=(True, False))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="period_s must be"):
        LedPattern(colour=(True, False, False), kind="blink", period_s=0)


# --- the fake itself behaves like the library where the board relies on it ----------------------


def test_fake_raises_like_the_library(gpio: ModuleType) -> None:
    with pytest.raises(RuntimeError, match="Please set pin numbering mode"):
        gpio.setup(17, gpio.OUT)
    gpio.setmode(gpio.BCM)
    with pytest.raises(ValueError, match="A different mode has already been set!"):
        gpio.setmode(gpio.BOARD)
    with pytest.raises(ValueError, match="The channel sent is invalid on a Raspberry Pi"):
        gpio.setup(54, gpio.OUT)
    with pytest.raises(RuntimeError, match="You must setup\\(\\) the GPIO channel first"):
        gpio.input(17)
    gpio.setup(17, gpio.IN, pull_up_down=gpio.PUD_UP)
    assert gpio.input(17) == gpio.HIGH  # floating: the pull decides
    with pytest.raises(RuntimeError, match="The GPIO channel has not been set up as an OUTPUT"):
        gpio.output(17, gpio.HIGH)
    with pytest.raises(ValueError, match="pull_up_down parameter is not valid for outputs"):
        gpio.setup(18, gpio.OUT, pull_up_down=gpio.PUD_UP)
    with pytest.raises(ValueError, match="initial parameter is not valid for inputs"):
        gpio.setup(18, gpio.IN, initial=gpio.LOW)
    with pytest.raises(RuntimeError, match="You must setup\\(\\) the GPIO channel as an output first"):
        gpio.PWM(17, 100)
    assert (gpio.BCM, gpio.BOARD, gpio.OUT, gpio.IN, gpio.PUD_OFF, gpio.PUD_DOWN, gpio.PUD_UP) == (
        11, 10, 0, 1, 20, 21, 22
    )
    assert (gpio.RISING, gpio.FALLING, gpio.BOTH) == (31, 32, 33)


def test_fake_edges_run_on_another_thread_and_honour_bouncetime(gpio: ModuleType) -> None:
    gpio.setmode(gpio.BCM)
    gpio.setup(25, gpio.IN, pull_up_down=gpio.PUD_DOWN)
    seen: list[tuple[int, int]] = []
    gpio.add_event_detect(25, gpio.RISING, callback=lambda ch: seen.append((ch, threading.get_ident())),
                          bouncetime=10_000)
    with pytest.raises(RuntimeError, match="Conflicting edge detection"):
        gpio.add_event_detect(25, gpio.RISING)
    gpio.fake_drive(25, gpio.HIGH)
    gpio.fake_drive(25, gpio.LOW)  # a falling edge: not watched
    gpio.fake_drive(25, gpio.HIGH)  # within the bounce time of the first: dropped
    gpio.fake_settle()
    assert [ch for ch, _ in seen] == [25]
    assert seen[0][1] != threading.get_ident()
    assert gpio.event_detected(25) is True
    assert gpio.event_detected(25) is False


def test_fake_pwm_stop_drives_low(gpio: ModuleType) -> None:
    gpio.setmode(gpio.BCM)
    gpio.setup(5, gpio.OUT, initial=gpio.HIGH)
    pwm = gpio.PWM(5, 100)
    pwm.start(30)
    assert gpio.fake_pwm(5) == (100.0, 30.0)
    with pytest.raises(RuntimeError, match="A PWM object already exists"):
        gpio.PWM(5, 100)
    pwm.stop()
    assert gpio.fake_pwm(5) is None
    assert gpio.fake_level(5) == gpio.LOW  # as rpi-lgpio's PWM.stop does
