"""Relays, status LEDs, connector lock, RCD and over-temperature of a Raspberry Pi board via RPi.GPIO.

What it is for: `GpioBoard` implements the `Relays`, `Leds`, `Lock`, `Rcd` and `Temperature` Protocols
of `hal.protocols` (plus `set_three_phases` for a phase-switch contactor) on the Pi's GPIO header, with
BCM numbering. It sets exact pin levels and reads inputs; `EvsePins` says which GPIO does what for one
EVSE, `GpioTiming` the board's timings, `active_low` which pins are active at LOW.

What it must never do:

* decide anything about charging. Whether a relay may close, whether a feedback mismatch is a welded
  contactor (`firmware.core.supervision.RelayFeedback` judges that from `set_closed` and
  `feedback_closed`), whether a trip is a fault: the core decides. This module reports levels;
* leave an output in an unsafe state: at `__aenter__` every output is set up with `initial=` its safe
  level before anything else (relay and phase switch open, lock motor off, RCD test off, LEDs off);
  a lock pulse and an RCD test pulse end in `finally`; `__aexit__` drives every output safe before
  `GPIO.cleanup(<our pins>)`. After cleanup the pins float (inputs without pull), as they do while the
  Pi boots: the board's own pull resistors must hold every driver off then;
* import RPi.GPIO at module import (it is imported in `__aenter__`), or touch pins it was not given
  (`cleanup` gets our pins only);
* return a made-up value: every library exception becomes `HardwareError` naming the pin, its role
  and what was done, chained.

The library. On a Pi 4 the API comes from RPi.GPIO; on a Pi 5 from rpi-lgpio, which provides the same
module (`RPi.GPIO`) over the kernel's gpiochip device (https://rpi-lgpio.readthedocs.io/en/latest/
differences.html). RPi.GPIO 0.7.1's edge detection uses the sysfs interface, which fails on Raspberry
Pi OS kernels 6.6 and later ("RuntimeError: Failed to add edge detection",
https://github.com/raspberrypi/linux/issues/6037): there `__aenter__` raises HardwareError naming the
RCD pin, and rpi-lgpio is the fix on a Pi 4 as well. This module keeps to what both do the same way:

* setup(): `pull_up_down` only for inputs, `initial` only for outputs (rpi-lgpio raises ValueError
  for the others);
* edge detection: `add_event_detect(pin, edge, callback=..., bouncetime=ms)` once per pin. The two
  debounce differently: RPi.GPIO reports the first edge and drops edges within `bouncetime` after it;
  rpi-lgpio reports an edge only once the level was stable for `bouncetime` (differences.rst,
  "Debounce"). Neither is trusted alone: the RCD callback only wakes the loop, which re-reads the
  level `rcd_debounce_ms` later (see below);
* software PWM (`GPIO.PWM(pin, hz)`, `start`, `ChangeDutyCycle`, `stop`) works on any output in both
  (rpi-lgpio through lgpio's `tx_pwm`), used for the breathing LEDs. rpi-lgpio's `PWM.stop()` (and the
  deletion of a PWM object) writes the pin LOW (RPi/GPIO/__init__.py, `PWM.stop`), which is "on" for
  an active-low LED: after stopping a PWM this module drops the object first, then writes the level;
* library errors are RuntimeError/ValueError from RPi.GPIO, but rpi-lgpio also lets lgpio's own
  `lgpio.error` through (differences.rst, "PWM on inputs": 'bad PWM micros'), so any Exception of a
  library call is converted.

GPIO calls are register writes or one ioctl (microseconds), so they run on the event loop thread; the
edge callbacks run on the library's thread and hand over with `loop.call_soon_threadsafe`.

The RCD (trip output of a 6 mA DC residual-current monitor, IEC 62955 / IEC 62752). An edge towards
the active level schedules a re-read `rcd_debounce_ms` later; a trip counts only if the input is still
active then, so a glitch shorter than the debounce time is ignored (and an edge the library dropped
inside its own bounce window is still caught by that read). A counted trip is latched until the next
`tripped()` call and wakes every `on_trip` listener on the loop; `tripped()` also reads the level, so
a steady trip is seen by a poll even without an interrupt. `self_test()` drives the test input active
for `rcd_test_pulse_s`, expects the trip output active within `rcd_test_timeout_s` of the start of the
pulse, and inactive again within `rcd_release_timeout_s` after the test input was released; during
the test the latch and the listeners are suppressed and `tripped()` reports only a latch from before.
Assumption about the module: its trip output follows the test current (trips while the test winding
is fed, releases when it stops). Modules differ: Bender's RCMB300 series wants its test/reset input
held 5-10 s for a test and 1.5-5 s for a reset (manual D00372, §6.2: https://www.easymanua.ls/bender/
rcmb300-series/manual?p=29), the RCMB102 reads a HIGH/LOW sequence on X10 (https://manualshive.com/en/
manual/bender/rcmb102/2731522?page=7). Set the three timings from the module's manual; a module that
latches until a reset sequence needs more than this generic pulse. A board without an `rcd_test` pin
has no self-test: `self_test` returns True, and the board's configuration decides whether self-tests
run at all.

The connector lock (a motor actuator with separate lock and unlock drives and a feedback switch,
active = locked): `set_locked` pulses the lock or unlock output for `lock_pulse_s`, then polls the
feedback every 20 ms for up to `lock_confirm_s`.

LEDs: one RGB LED per EVSE (any of its three pins may be absent). `LED_PATTERNS` (below) gives one
pattern per `firmware.core.events.Led`. Solid patterns set the pins and need no task; blink and pulse
(breathing, software PWM) run one animation task, which exists only while some LED shows a non-solid
pattern.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Final, Literal, Protocol, Self, cast

from firmware.core.errors import HardwareError
from firmware.core.events import Led

log = logging.getLogger(__name__)

INSTALL_HINT: Final = "pip install 'charger-firmware[rpi]' (on a Pi 5 it comes from rpi-lgpio)"
#: GPIO 0..27 are the ones on the 40-pin header.
MAX_HEADER_GPIO: Final = 27
#: How often the lock feedback and the RCD self-test are polled.
LOCK_POLL_S: Final = 0.02
RCD_POLL_S: Final = 0.005
#: Software PWM frequency of the breathing LEDs (above visible flicker) and the animation step.
LED_PWM_HZ: Final = 100.0
PULSE_STEP_S: Final = 0.05
MIN_FRAME_S: Final = 0.001


# --- configuration ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EvsePins:
    """BCM GPIO numbers (0..27) of one EVSE; None where nothing is wired. Outputs: relay (the
    contactor), phase_switch (the L2/L3 contactor: active = three phases), lock/unlock (the lock
    motor's two drives), rcd_test, led_*. Inputs: relay_feedback (mirror contact, active = closed),
    lock_feedback (active = locked), rcd_trip (active = tripped), overtemperature (active = alarm)."""

    relay: int
    relay_feedback: int | None = None
    led_red: int | None = None
    led_green: int | None = None
    led_blue: int | None = None
    lock: int | None = None
    unlock: int | None = None
    lock_feedback: int | None = None
    rcd_trip: int | None = None
    rcd_test: int | None = None
    phase_switch: int | None = None
    overtemperature: int | None = None

    def __post_init__(self) -> None:
        seen: dict[int, str] = {}
        for f in fields(self):
            pin = getattr(self, f.name)
            if pin is None and f.name != "relay":
                continue
            if isinstance(pin, bool) or not isinstance(pin, int) or not 0 <= pin <= MAX_HEADER_GPIO:
                raise ValueError(f"{f.name} must be a BCM GPIO number 0..{MAX_HEADER_GPIO}, got {pin!r}")
            if pin in seen:
                raise ValueError(f"{f.name} and {seen[pin]} are both GPIO {pin}")
            seen[pin] = f.name
        lock = {"lock": self.lock, "unlock": self.unlock, "lock_feedback": self.lock_feedback}
        missing = [name for name, pin in lock.items() if pin is None]
        if 0 < len(missing) < len(lock):
            raise ValueError(f"lock, unlock and lock_feedback go together; missing: {', '.join(missing)}")
        if self.rcd_test is not None and self.rcd_trip is None:
            raise ValueError("rcd_test needs rcd_trip (the self-test watches the trip input)")

    def outputs(self) -> dict[int, str]:
        """Output pin -> role, in the order they are set up (the contactors first)."""
        names = ("relay", "phase_switch", "lock", "unlock", "rcd_test", "led_red", "led_green", "led_blue")
        return {pin: name for name in names if (pin := getattr(self, name)) is not None}

    def inputs(self) -> dict[int, str]:
        """Input pin -> role."""
        names = ("relay_feedback", "rcd_trip", "overtemperature", "lock_feedback")
        return {pin: name for name in names if (pin := getattr(self, name)) is not None}


@dataclass(frozen=True, slots=True, kw_only=True)
class GpioTiming:
    """Board-level timings (seconds, the debounce in ms as the libraries take it)."""

    relay_feedback_settle_s: float = 0.1  # the core's RelayFeedback grace applies; kept for the config
    lock_pulse_s: float = 0.3
    lock_confirm_s: float = 1.0
    rcd_debounce_ms: int = 10
    rcd_test_pulse_s: float = 0.05
    rcd_test_timeout_s: float = 0.3
    rcd_release_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rcd_debounce_ms":
                if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                    raise ValueError(f"rcd_debounce_ms must be an integer 1..1000, got {value!r}")
            elif (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                  or value < 0 or (value == 0 and f.name != "relay_feedback_settle_s")):
                raise ValueError(f"{f.name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LedPattern:
    """`colour` = (red, green, blue) on/off; `kind` solid, blink (on for period_s/2, off for period_s/2)
    or pulse (breathing: brightness up and down once per period_s)."""

    colour: tuple[bool, bool, bool]
    kind: Literal["solid", "blink", "pulse"] = "solid"
    period_s: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.colour, tuple) or len(self.colour) != 3 or any(c not in (0, 1) for c in self.colour):
            raise ValueError(f"colour must be (red, green, blue) of booleans, got {self.colour!r}")
        if self.kind not in ("solid", "blink", "pulse"):
            raise ValueError(f"kind must be solid, blink or pulse, got {self.kind!r}")
        p = self.period_s
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or p <= 0:
            raise ValueError(f"period_s must be a positive number of seconds, got {p!r}")


RED: Final = (True, False, False)
GREEN: Final = (False, True, False)
BLUE: Final = (False, False, True)
CYAN: Final = (False, True, True)
MAGENTA: Final = (True, False, True)
WHITE: Final = (True, True, True)

#: One pattern per status. Conventions followed (no standard exists; wallboxes agree broadly):
#:
#: ============ ================= ======== ======= ==============================================
#: Led          colour            kind     period  convention
#: ============ ================= ======== ======= ==============================================
#: idle         green             solid            Gewiss Joinon "fixed green: ready" [1]
#: reserved     magenta (R+B)     solid            Hager XEV "reservation: solid purple" [2]
#: waiting      green             blink    2 s     Hager "awaiting authorisation: slowly flashing
#:                                                 green" [2]; Gewiss "flashing green" [1]
#: charging     blue              pulse    3 s     Gewiss "fixed blue: charging" [1], breathing
#: paused       blue              blink    2 s     Gewiss "flashing blue: session on, vehicle not
#:                                                 absorbing energy" [1]
#: finishing    cyan (G+B)        blink    2 s     ours: between charging (blue) and idle (green)
#: unavailable  white             solid            Evnex "disabled: white" [3], Ionity stand-by white
#: fault        red               blink    1 s     Hager "fault: flashing red" [2], Evnex [3]
#: ============ ================= ======== ======= ==============================================
#:
#: [1] https://esmanual.top/manual/392827/Gewiss-Joinon-Wallbox-I-Con-Dlm.html?page=59
#: [2] https://manuzoid.com/manuals/7BLv6-Hager%20XEV426%20Installation%20guide (§7 HMI)
#: [3] https://docs.evnex.io/docs/led-guide-e2
LED_PATTERNS: Final[dict[Led, LedPattern]] = {
    Led.IDLE: LedPattern(colour=GREEN),
    Led.RESERVED: LedPattern(colour=MAGENTA),
    Led.WAITING: LedPattern(colour=GREEN, kind="blink", period_s=2.0),
    Led.CHARGING: LedPattern(colour=BLUE, kind="pulse", period_s=3.0),
    Led.PAUSED: LedPattern(colour=BLUE, kind="blink", period_s=2.0),
    Led.FINISHING: LedPattern(colour=CYAN, kind="blink", period_s=2.0),
    Led.UNAVAILABLE: LedPattern(colour=WHITE),
    Led.FAULT: LedPattern(colour=RED, kind="blink", period_s=1.0),
}


# --- the library, as far as this module uses it ------------------------------------------------------


class _Pwm(Protocol):
    def start(self, dutycycle: float) -> None: ...

    def ChangeDutyCycle(self, dutycycle: float) -> None: ...

    def stop(self) -> None: ...


class _Gpio(Protocol):
    """The subset of the RPi.GPIO API that RPi.GPIO 0.7 and rpi-lgpio share and this module uses."""

    BCM: int
    IN: int
    OUT: int
    HIGH: int
    LOW: int
    PUD_UP: int
    PUD_DOWN: int
    RISING: int
    FALLING: int

    def setwarnings(self, flag: bool) -> None: ...

    def setmode(self, mode: int) -> None: ...

    def setup(self, channel: int, direction: int, pull_up_down: int = ..., initial: int = ...) -> None: ...

    def output(self, channel: int, value: int) -> None: ...

    def input(self, channel: int) -> int: ...

    def add_event_detect(
        self, channel: int, edge: int, callback: Callable[[int], None] | None = ..., bouncetime: int = ...
    ) -> None: ...

    def remove_event_detect(self, channel: int) -> None: ...

    def cleanup(self, channel: list[int]) -> None: ...

    def PWM(self, channel: int, frequency: float) -> _Pwm: ...


def _import_gpio() -> _Gpio:
    try:
        module = importlib.import_module("RPi.GPIO")
    except ImportError as exc:
        raise HardwareError(f"RPi.GPIO is not installed: {INSTALL_HINT}") from exc
    except RuntimeError as exc:  # both refuse to import off a Pi: "This module can only be run on a Raspberry Pi!"
        raise HardwareError(f"RPi.GPIO cannot run on this machine: {exc}") from exc
    return cast(_Gpio, module)


@dataclass(slots=True)
class _Animation:
    pattern: LedPattern
    since: float
    lit: bool = True
    duty_pct: float = 0.0


# --- the board --------------------------------------------------------------------------------------


class GpioBoard:
    """Relays, LEDs, lock, RCD and over-temperature of every EVSE; an async context manager."""

    def __init__(
        self,
        pins: Mapping[int, EvsePins],
        *,
        timing: GpioTiming = GpioTiming(),  # noqa: B008 - frozen, hence a safe default
        active_low: frozenset[int] = frozenset(),
        led_patterns: Mapping[Led, LedPattern] = LED_PATTERNS,
    ) -> None:
        if not pins:
            raise ValueError("pins must name at least one EVSE")
        owner: dict[int, str] = {}
        for cid, evse in pins.items():
            if isinstance(cid, bool) or not isinstance(cid, int) or cid < 1:
                raise ValueError(f"EVSE ids must be positive integers, got {cid!r}")
            if not isinstance(evse, EvsePins):
                raise TypeError(f"pins[{cid}] must be an EvsePins, got {type(evse).__name__}")
            for pin, role in (evse.outputs() | evse.inputs()).items():
                if pin in owner:
                    raise ValueError(f"GPIO {pin} is both {owner[pin]} and c{cid} {role}")
                owner[pin] = f"c{cid} {role}"
        if not isinstance(timing, GpioTiming):
            raise TypeError(f"timing must be a GpioTiming, got {type(timing).__name__}")
        stray = sorted(set(active_low) - owner.keys())
        if stray:
            raise ValueError(f"active_low names GPIO that no EVSE uses: {stray}")
        missing = [led.value for led in Led if led not in led_patterns]
        if missing:
            raise ValueError(f"led_patterns has no pattern for: {', '.join(missing)}")
        self._pins = dict(pins)
        self._timing = timing
        self._active_low = frozenset(active_low)
        self._patterns = dict(led_patterns)
        self._roles = owner
        self._outputs = [pin for evse in self._pins.values() for pin in evse.outputs()]
        self._inputs = [pin for evse in self._pins.values() for pin in evse.inputs()]
        self._trip_cid = {evse.rcd_trip: cid for cid, evse in self._pins.items() if evse.rcd_trip is not None}
        self._gpio: _Gpio | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # LEDs
        self._shown: dict[int, LedPattern | None] = {}
        self._animated: dict[int, _Animation] = {}
        self._pwm: dict[int, _Pwm] = {}
        self._animation: asyncio.Task[None] | None = None
        # lock and RCD
        self._lock_busy = {cid: asyncio.Lock() for cid in self._pins}  # one lock operation at a time
        self._rcd_busy = {cid: asyncio.Lock() for cid in self._pins}  # one self-test at a time
        self._latched: set[int] = set()
        self._testing: set[int] = set()
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._listeners: list[Callable[[int], None]] = []

    # --- opening and closing -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._gpio is not None:
            raise HardwareError("the GPIO board is already open")
        gpio = _import_gpio()
        self._loop = asyncio.get_running_loop()
        self._gpio = gpio
        done: list[int] = []
        try:
            with self._library(None, "setmode(BCM)"):
                gpio.setwarnings(False)
                gpio.setmode(gpio.BCM)
            for pin in self._outputs:  # safe levels first, before anything else happens
                with self._library(pin, "setup as output"):
                    gpio.setup(pin, gpio.OUT, initial=self._level(pin, False))
                done.append(pin)
            for pin in self._inputs:
                pull = gpio.PUD_UP if pin in self._active_low else gpio.PUD_DOWN
                with self._library(pin, "setup as input"):
                    gpio.setup(pin, gpio.IN, pull_up_down=pull)
                done.append(pin)
            for pin in self._trip_cid:
                edge = gpio.FALLING if pin in self._active_low else gpio.RISING
                with self._library(pin, "add_event_detect"):
                    gpio.add_event_detect(pin, edge, callback=self._edge_from_thread,
                                          bouncetime=self._timing.rcd_debounce_ms)
        except BaseException:
            self._release(gpio, done)
            self._gpio = self._loop = None
            raise
        log.info("GPIO board open: %d EVSE(s), outputs %s, inputs %s", len(self._pins), self._outputs, self._inputs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        gpio = self._gpio
        if gpio is None:
            return
        task, self._animation = self._animation, None
        self._animated.clear()
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        errors: list[HardwareError] = []
        for pin in list(self._pwm):
            try:
                self._stop_pwm(pin)
            except HardwareError as e:
                errors.append(e)
        for pin in self._outputs:
            try:
                self._write(pin, False)
            except HardwareError as e:
                errors.append(e)
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        errors += self._release(gpio, self._outputs + self._inputs)
        self._gpio = self._loop = None
        self._shown.clear()
        self._latched.clear()
        for error in errors:
            log.error("closing the GPIO board: %s", error)
        if errors and (not exc or exc[0] is None):  # do not mask the exception that ends the block
            raise errors[0]

    def _release(self, gpio: _Gpio, pins: list[int]) -> list[HardwareError]:
        """Event detection off, then cleanup of exactly `pins`; never raises (returns the errors)."""
        errors: list[HardwareError] = []
        for pin in self._trip_cid:
            if pin in pins:
                try:
                    with self._library(pin, "remove_event_detect"):
                        gpio.remove_event_detect(pin)
                except HardwareError as e:
                    errors.append(e)
        if pins:
            try:
                with self._library(None, f"cleanup({pins})"):
                    gpio.cleanup(list(pins))
            except HardwareError as e:
                errors.append(e)
        return errors

    # --- pins ------------------------------------------------------------------------------------------

    @contextmanager
    def _library(self, pin: int | None, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:  # RuntimeError/ValueError from RPi.GPIO, also lgpio.error from rpi-lgpio
            where = "GPIO" if pin is None else f"GPIO {pin} ({self._roles.get(pin, 'unassigned')})"
            raise HardwareError(f"{where}: {action} failed: {type(exc).__name__}: {exc}") from exc

    def _g(self) -> _Gpio:
        if self._gpio is None:
            raise HardwareError("the GPIO board is not open (use `async with board:`)")
        return self._gpio

    def _level(self, pin: int, active: bool) -> int:
        """1 (HIGH) or 0 (LOW): the level that makes `pin` active or inactive."""
        return int(active) ^ int(pin in self._active_low)

    def _write(self, pin: int, active: bool) -> None:
        gpio = self._g()
        level = self._level(pin, active)
        with self._library(pin, f"output {'HIGH' if level else 'LOW'}"):
            gpio.output(pin, level)

    def _read(self, pin: int) -> bool:
        """True when `pin` is at its active level."""
        gpio = self._g()
        with self._library(pin, "input"):
            level = gpio.input(pin)
        return bool(level) != (pin in self._active_low)

    def _evse(self, cid: object) -> EvsePins:
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in self._pins:
            raise ValueError(f"unknown EVSE id {cid!r}")
        return self._pins[cid]

    async def _wait_for(self, pin: int, active: bool, deadline: float, poll_s: float) -> bool:
        """Poll `pin` until it reads `active` (True) or the loop time passes `deadline` (False)."""
        loop = asyncio.get_running_loop()
        while True:
            if self._read(pin) == active:
                return True
            now = loop.time()
            if now >= deadline:
                return False
            await asyncio.sleep(min(poll_s, deadline - now))

    # --- Relays --------------------------------------------------------------------------------------

    async def set_closed(self, cid: int, closed: bool) -> None:
        """Drive the contactor's relay (active = closed). Idempotent."""
        self._write(self._evse(cid).relay, bool(closed))
        log.debug("c%d relay %s", cid, "closed" if closed else "open")

    async def feedback_closed(self, cid: int) -> bool | None:
        """The mirror contact (active = closed); None when not wired."""
        pin = self._evse(cid).relay_feedback
        return None if pin is None else self._read(pin)

    async def set_three_phases(self, cid: int, three: bool) -> None:
        """Drive the phase-switch contactor (active = L2/L3 connected, three phases). Whether switching
        is allowed now (never under load) is the caller's business."""
        pin = self._evse(cid).phase_switch
        if pin is None:
            raise HardwareError(f"c{cid} has no phase-switch contactor (no phase_switch pin configured)")
        self._write(pin, bool(three))
        log.debug("c%d phase switch: %s", cid, "three phases" if three else "one phase")

    # --- Temperature ------------------------------------------------------------------------------------

    async def overtemperature(self, cid: int) -> bool:
        """The over-temperature input (active = alarm); False when not wired."""
        pin = self._evse(cid).overtemperature
        return False if pin is None else self._read(pin)

    # --- Lock -------------------------------------------------------------------------------------------

    async def set_locked(self, cid: int, locked: bool) -> None:
        """Pulse the lock (or unlock) drive for lock_pulse_s, then wait up to lock_confirm_s for the
        feedback. No pulse when the feedback already reads the wanted state; no-op without lock pins."""
        evse = self._evse(cid)
        if evse.lock is None or evse.unlock is None or evse.lock_feedback is None:
            return
        want = bool(locked)
        word = "locked" if want else "unlocked"
        feedback = evse.lock_feedback
        async with self._lock_busy[cid]:
            if self._read(feedback) == want:
                return
            drive = evse.lock if want else evse.unlock
            self._write(drive, True)
            try:
                await asyncio.sleep(self._timing.lock_pulse_s)
            finally:
                self._write(drive, False)
            confirm_s = self._timing.lock_confirm_s
            deadline = asyncio.get_running_loop().time() + confirm_s
            if await self._wait_for(feedback, want, deadline, LOCK_POLL_S):
                log.info("c%d connector %s", cid, word)
                return
            reads = "unlocked" if want else "locked"
            raise HardwareError(
                f"c{cid} connector lock did not confirm {word} within {confirm_s:g} s "
                f"(feedback pin {feedback} reads {reads})"
            )

    # --- Rcd --------------------------------------------------------------------------------------------

    def on_trip(self, callback: Callable[[int], None]) -> None:
        """Call `callback(cid)` on the loop when a debounced trip fires (a wake-up: read `tripped`)."""
        self._listeners.append(callback)

    async def tripped(self, cid: int) -> bool:
        """Active now, or latched by an interrupt since the last call (the latch is cleared). During a
        self-test only a latch from before the test counts. False without an rcd_trip pin."""
        pin = self._evse(cid).rcd_trip
        if pin is None:
            return False
        active = cid not in self._testing and self._read(pin)
        latched = cid in self._latched
        self._latched.discard(cid)
        return active or latched

    async def self_test(self, cid: int) -> bool:
        """Pulse the RCD's test input; True when the trip output went active within rcd_test_timeout_s
        of the pulse's start and inactive within rcd_release_timeout_s of its end. False when the trip
        input is active before the test. True without an rcd_test pin (no self-test possible)."""
        evse = self._evse(cid)
        trip, test = evse.rcd_trip, evse.rcd_test
        if trip is None or test is None:
            return True
        loop = asyncio.get_running_loop()
        async with self._rcd_busy[cid]:
            if self._read(trip):
                log.warning("c%d RCD self-test not possible: the trip input is already active", cid)
                return False
            self._testing.add(cid)
            try:
                start = loop.time()
                self._write(test, True)
                try:
                    seen = await self._trip_during_test(trip, test, start)
                finally:
                    self._write(test, False)
                if not seen:
                    log.warning("c%d RCD self-test failed: no trip within %g s", cid, self._timing.rcd_test_timeout_s)
                    return False
                release_s = self._timing.rcd_release_timeout_s
                if not await self._wait_for(trip, False, loop.time() + release_s, RCD_POLL_S):
                    log.warning("c%d RCD self-test failed: the trip did not release within %g s", cid, release_s)
                    return False
                log.info("c%d RCD self-test passed", cid)
                return True
            finally:
                self._testing.discard(cid)
                handle = self._pending.pop(cid, None)
                if handle is not None:
                    handle.cancel()

    async def _trip_during_test(self, trip: int, test: int, start: float) -> bool:
        """Hold the test input for rcd_test_pulse_s, then release it; True as soon as the trip input
        was seen active (and the pulse is over), False at rcd_test_timeout_s from `start`."""
        loop = asyncio.get_running_loop()
        pulse_end = start + self._timing.rcd_test_pulse_s
        deadline = start + self._timing.rcd_test_timeout_s
        seen = released = False
        while True:
            seen = seen or self._read(trip)
            now = loop.time()
            if not released and now >= pulse_end:
                self._write(test, False)
                released = True
            if released and (seen or now >= deadline):
                return seen
            wake = pulse_end if not released else deadline
            await asyncio.sleep(max(0.0, min(RCD_POLL_S, wake - now)))

    def _edge_from_thread(self, channel: int) -> None:
        """RPi.GPIO's callback, on the library's thread: hand over to the loop."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._edge, channel)
        except RuntimeError:  # the loop closed while the board was closing
            return

    def _edge(self, channel: int) -> None:
        cid = self._trip_cid.get(channel)
        if cid is None or cid in self._pending or self._loop is None:
            return
        delay_s = self._timing.rcd_debounce_ms / 1000.0
        self._pending[cid] = self._loop.call_later(delay_s, self._debounced, cid)

    def _debounced(self, cid: int) -> None:
        """rcd_debounce_ms after an edge: the trip counts if the input is still active."""
        self._pending.pop(cid, None)
        if self._gpio is None or cid in self._testing:
            return
        pin = self._pins[cid].rcd_trip
        if pin is None:  # only EVSEs with a trip pin get here
            return
        try:
            active = self._read(pin)
        except HardwareError:
            log.exception("c%d RCD input unreadable after an edge", cid)
            active = True  # wake the controller: its tripped() call will raise the error
        if not active:
            log.debug("c%d RCD edge shorter than %d ms ignored", cid, self._timing.rcd_debounce_ms)
            return
        if cid not in self._latched:
            log.warning("c%d RCD tripped (interrupt)", cid)
        self._latched.add(cid)
        for listener in list(self._listeners):
            try:
                listener(cid)
            except Exception:  # one broken listener must not keep the others from the wake-up
                log.exception("c%d on_trip listener %r failed", cid, listener)

    # --- Leds -------------------------------------------------------------------------------------------

    async def set_led(self, cid: int, led: Led) -> None:
        """Show the pattern of `led`. Idempotent; HardwareError on a pin failure (not safety-relevant)."""
        evse = self._evse(cid)
        pattern = self._patterns[Led(led)]
        if self._shown.get(cid) == pattern:
            return
        if (evse.led_red, evse.led_green, evse.led_blue) != (None, None, None):
            try:
                self._show(cid, pattern)
            finally:
                await self._run_animation()
        self._shown[cid] = pattern

    def _led_pins(self, cid: int) -> tuple[int | None, int | None, int | None]:
        evse = self._pins[cid]
        return evse.led_red, evse.led_green, evse.led_blue

    def _show(self, cid: int, pattern: LedPattern) -> None:
        self._shown[cid] = None  # unknown until done: a failure leaves the next set_led to retry
        self._animated.pop(cid, None)
        pins = self._led_pins(cid)
        for pin in pins:
            if pin is not None and pin in self._pwm:
                self._stop_pwm(pin)
        for pin, on in zip(pins, pattern.colour, strict=True):
            if pin is None:
                continue
            if on and pattern.kind == "pulse":
                self._start_pwm(pin)
            else:
                self._write(pin, on)
        if pattern.kind != "solid":
            self._animated[cid] = _Animation(pattern=pattern, since=self._now())

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _duty(self, pin: int, duty_pct: float) -> float:
        return 100.0 - duty_pct if pin in self._active_low else duty_pct

    def _start_pwm(self, pin: int) -> None:
        gpio = self._g()
        with self._library(pin, f"PWM at {LED_PWM_HZ:g} Hz"):
            pwm = gpio.PWM(pin, LED_PWM_HZ)
            pwm.start(self._duty(pin, 0.0))
        self._pwm[pin] = pwm

    def _stop_pwm(self, pin: int) -> None:
        """Stop and drop the PWM object (its deletion may write LOW: the caller writes the level after)."""
        pwm = self._pwm.pop(pin)
        with self._library(pin, "PWM stop"):
            pwm.stop()

    async def _run_animation(self) -> None:
        """The animation task runs exactly while some LED has a non-solid pattern."""
        task = self._animation
        if self._animated:
            if task is None or task.done():
                self._animation = asyncio.create_task(self._animate(), name="gpio-leds")
        elif task is not None:
            self._animation = None
            task.cancel()
            await asyncio.wait([task])

    async def _animate(self) -> None:
        while self._animated:
            now = self._now()
            delay_s = math.inf
            for cid, animation in list(self._animated.items()):
                try:
                    delay_s = min(delay_s, self._frame(cid, animation, now))
                except HardwareError:
                    log.exception("c%d LED animation stopped", cid)
                    self._animated.pop(cid, None)
                    self._shown[cid] = None
            if self._animated:
                await asyncio.sleep(max(delay_s, MIN_FRAME_S))

    def _frame(self, cid: int, animation: _Animation, now: float) -> float:
        """Bring one animated LED up to `now`; returns the seconds until its next change."""
        pattern = animation.pattern
        t = (now - animation.since) % pattern.period_s
        lit_pins = [pin for pin, on in zip(self._led_pins(cid), pattern.colour, strict=True) if on and pin is not None]
        if pattern.kind == "blink":
            half = pattern.period_s / 2
            lit = t < half
            if lit != animation.lit:
                for pin in lit_pins:
                    self._write(pin, lit)
                animation.lit = lit
            return half - (t % half)
        triangle = 1.0 - abs(2.0 * t / pattern.period_s - 1.0)  # 0 -> 1 -> 0 over one period
        duty_pct = round(100.0 * triangle * triangle, 1)  # squared: closer to perceived brightness
        if duty_pct != animation.duty_pct:
            for pin in lit_pins:
                with self._library(pin, f"PWM duty {duty_pct:g} %"):
                    self._pwm[pin].ChangeDutyCycle(self._duty(pin, duty_pct))
            animation.duty_pct = duty_pct
        return min(PULSE_STEP_S, pattern.period_s / 20)
