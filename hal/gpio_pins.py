"""The GPIO pins of a Raspberry Pi charger board: which pin does what, the board's timings, and level
access to the pins through RPi.GPIO (the parts of `hal.gpio.GpioBoard` share it).

What it is for: `EvsePins` says which GPIO (BCM numbering) does what for one EVSE, `GpioTiming` the
board's timings; `GpioLibrary` is the part of the library this package uses, `import_gpio` loads it,
and `PinIo` sets and reads exact pin levels with `active_low` applied.

What it must never do:

* import RPi.GPIO at module import (`import_gpio` is called from `GpioBoard.__aenter__`);
* return a made-up value: every library exception becomes `HardwareError` naming the pin, its role
  and what was done, chained.

The library. On a Pi 4 the API comes from RPi.GPIO; on a Pi 5 from rpi-lgpio, which provides the same
module (`RPi.GPIO`) over the kernel's gpiochip device (https://rpi-lgpio.readthedocs.io/en/latest/
differences.html). RPi.GPIO 0.7.1's edge detection uses the sysfs interface, which fails on Raspberry
Pi OS kernels 6.6 and later ("RuntimeError: Failed to add edge detection",
https://github.com/raspberrypi/linux/issues/6037): there `__aenter__` raises HardwareError naming the
RCD pin, and rpi-lgpio is the fix on a Pi 4 as well. This package keeps to what both do the same way:

* setup(): `pull_up_down` only for inputs, `initial` only for outputs (rpi-lgpio raises ValueError
  for the others);
* edge detection: see `hal.gpio_rcd` (the two debounce differently); software PWM: see `hal.gpio_leds`
  (rpi-lgpio's `PWM.stop()` writes the pin LOW);
* library errors are RuntimeError/ValueError from RPi.GPIO, but rpi-lgpio also lets lgpio's own
  `lgpio.error` through (differences.rst, "PWM on inputs": 'bad PWM micros'), so any Exception of a
  library call is converted.

GPIO calls are register writes or one ioctl (microseconds), so they run on the event loop thread.
"""

from __future__ import annotations

import asyncio
import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from typing import Final, Protocol, cast

from firmware.core.errors import HardwareError

INSTALL_HINT: Final = "pip install 'charger-firmware[rpi]' (on a Pi 5 it comes from rpi-lgpio)"
#: GPIO 0..27 are the ones on the 40-pin header.
MAX_HEADER_GPIO: Final = 27


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


# --- the library, as far as this package uses it -----------------------------------------------------


class GpioPwm(Protocol):
    """A software PWM object of the library (`GPIO.PWM(pin, hz)`)."""

    def start(self, dutycycle: float) -> None: ...

    def ChangeDutyCycle(self, dutycycle: float) -> None: ...

    def stop(self) -> None: ...


class GpioLibrary(Protocol):
    """The subset of the RPi.GPIO API that RPi.GPIO 0.7 and rpi-lgpio share and this package uses."""

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

    def PWM(self, channel: int, frequency: float) -> GpioPwm: ...


def import_gpio() -> GpioLibrary:
    """The library, imported now; HardwareError in one line when it is missing or refuses this machine."""
    try:
        module = importlib.import_module("RPi.GPIO")
    except ImportError as exc:
        raise HardwareError(f"RPi.GPIO is not installed: {INSTALL_HINT}") from exc
    except RuntimeError as exc:  # both refuse to import off a Pi: "This module can only be run on a Raspberry Pi!"
        raise HardwareError(f"RPi.GPIO cannot run on this machine: {exc}") from exc
    return cast(GpioLibrary, module)


# --- pin levels --------------------------------------------------------------------------------------


class PinIo:
    """Exact levels of our pins: `active_low` applied, library exceptions turned into HardwareError
    naming the pin and its role. `gpio` is the library while the board is open, else None."""

    def __init__(self, roles: Mapping[int, str], active_low: frozenset[int]) -> None:
        self.roles = dict(roles)
        self.active_low = active_low
        self.gpio: GpioLibrary | None = None

    @contextmanager
    def library(self, pin: int | None, action: str) -> Iterator[None]:
        """Convert any exception of the library calls inside into HardwareError naming `pin` and `action`."""
        try:
            yield
        except Exception as exc:  # RuntimeError/ValueError from RPi.GPIO, also lgpio.error from rpi-lgpio
            where = "GPIO" if pin is None else f"GPIO {pin} ({self.roles.get(pin, 'unassigned')})"
            raise HardwareError(f"{where}: {action} failed: {type(exc).__name__}: {exc}") from exc

    def g(self) -> GpioLibrary:
        """The library; HardwareError when the board is not open."""
        if self.gpio is None:
            raise HardwareError("the GPIO board is not open (use `async with board:`)")
        return self.gpio

    def level(self, pin: int, active: bool) -> int:
        """1 (HIGH) or 0 (LOW): the level that makes `pin` active or inactive."""
        return int(active) ^ int(pin in self.active_low)

    def write(self, pin: int, active: bool) -> None:
        """Drive `pin` to its active (True) or inactive level."""
        gpio = self.g()
        level = self.level(pin, active)
        with self.library(pin, f"output {'HIGH' if level else 'LOW'}"):
            gpio.output(pin, level)

    def read(self, pin: int) -> bool:
        """True when `pin` is at its active level."""
        gpio = self.g()
        with self.library(pin, "input"):
            level = gpio.input(pin)
        return bool(level) != (pin in self.active_low)

    async def wait_for(self, pin: int, active: bool, deadline: float, poll_s: float) -> bool:
        """Poll `pin` until it reads `active` (True) or the loop time passes `deadline` (False)."""
        loop = asyncio.get_running_loop()
        while True:
            if self.read(pin) == active:
                return True
            now = loop.time()
            if now >= deadline:
                return False
            await asyncio.sleep(min(poll_s, deadline - now))
