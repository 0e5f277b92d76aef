"""A fake of the `RPi.GPIO` module, for running the GPIO backend's tests on any machine.

What it is for: `tests/hal/test_gpio.py` puts `tests/fakes` first on sys.path, so `import RPi.GPIO`
finds this module instead of the real library. It offers the API both real providers share (RPi.GPIO
0.7.x on a Pi 4, rpi-lgpio on a Pi 5: same module name, same calls): the constants with their real
values, setmode/getmode/setwarnings, setup/output/input/cleanup, edge detection with callbacks run on
a separate thread, software PWM, RPI_INFO and VERSION. Errors are the libraries' own types and
messages (RuntimeError "The GPIO channel has not been set up as an OUTPUT", ValueError "The channel
sent is invalid on a Raspberry Pi", ...).

What it must never do: contain any logic of the charger. It models a pin and its wire only: an
output drives what was written; an input reads the wire driven from outside (`fake_drive`), or its
pull when nothing drives it (a floating input without pull reads LOW here; on a real pin it is
undefined). Edge callbacks run on one dispatcher thread, as the real libraries run them on theirs,
and `bouncetime` is honoured the RPi.GPIO way: an edge within `bouncetime` ms of the last reported
edge is not reported (rpi-lgpio instead waits for the level to be stable that long; see
https://rpi-lgpio.readthedocs.io/en/latest/differences.html#debounce). Where the two libraries
differ, the fake takes the stricter side, so code that passes here runs on both:

* setup(): `pull_up_down` other than PUD_OFF on an output, or `initial` on an input, is a ValueError
  (rpi-lgpio; RPi.GPIO ignores them);
* a PWM object's `stop()` (and its deletion) drives the pin LOW, even when not running (rpi-lgpio's
  `PWM.stop` calls `gpio_write(..., 0)`);
* add_event_detect() on a channel that already has edge detection is a RuntimeError.

Sources: RPi.GPIO 0.7 source (source/py_gpio.c, source/py_pwm.c, source/event_gpio.c) and rpi-lgpio
(RPi/GPIO/__init__.py, docs/differences.rst).

Test-side API (names start with `fake_`): `fake_reset()`, `fake_drive(pin, level)`, `fake_level(pin)`,
`fake_on_output(pin, callback)`, `fake_history(pin)`, `fake_pwm(pin)`, `fake_settle()`.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

VERSION = "0.7.1"
RPI_INFO = {
    "P1_REVISION": 3,
    "REVISION": "c03114",
    "TYPE": "Pi 4 Model B",
    "MANUFACTURER": "Sony UK",
    "PROCESSOR": "BCM2711",
    "RAM": "4G",
}
RPI_REVISION = 3

UNKNOWN = -1
BOARD = 10
BCM = 11
PUD_OFF = 20
PUD_DOWN = 21
PUD_UP = 22
OUT = 0
IN = 1
LOW = 0
HIGH = 1
RISING = 31
FALLING = 32
BOTH = 33
SERIAL = 40
SPI = 41
I2C = 42
HARD_PWM = 43

#: The SoC has GPIO 0..53 (both libraries accept that range in BCM mode).
_GPIO_COUNT = 54
#: Header pin -> BCM GPIO of the 40-pin header (Pi 1 B+ and later).
_BOARD_TO_BCM = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10, 21: 9,
    22: 25, 23: 11, 24: 8, 26: 7, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
}
_MODE_MESSAGE = "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"

Callback = Callable[[int], None]


@dataclass
class _Pin:
    direction: int | None = None  # None: not set up (high impedance)
    pull: int = PUD_OFF
    out_level: int = LOW
    wire: int | None = None  # what the outside world drives; None: nothing
    edge: int | None = None
    bouncetime_ms: int | None = None
    callbacks: list[Callback] = field(default_factory=list)
    last_event_s: float | None = None
    detected: bool = False


_lock = threading.RLock()
_pins: dict[int, _Pin] = {}
_mode: int = UNKNOWN
_warnings = True
_generation = 0
_observers: dict[int, list[Callback]] = {}
_history: dict[int, list[tuple[float, int]]] = {}
_pwms: weakref.WeakValueDictionary[int, PWM] = weakref.WeakValueDictionary()

# the dispatcher thread that runs edge callbacks
_queue: queue.SimpleQueue[tuple[list[Callback], int] | None] = queue.SimpleQueue()
_thread: threading.Thread | None = None
_idle = threading.Condition()
_pending = 0


# --- helpers ------------------------------------------------------------------------------------


def _to_gpio(channel: object) -> int:
    if _mode == UNKNOWN:
        raise RuntimeError(_MODE_MESSAGE)
    if not isinstance(channel, int):
        raise ValueError("Channel must be an integer or list/tuple of integers")  # noqa: TRY004 - the library's type
    if _mode == BCM:
        if not 0 <= channel < _GPIO_COUNT:
            raise ValueError("The channel sent is invalid on a Raspberry Pi")
        return channel
    if channel not in _BOARD_TO_BCM:
        raise ValueError("The channel sent is invalid on a Raspberry Pi")
    return _BOARD_TO_BCM[channel]


def _from_gpio(gpio: int) -> int:
    if _mode == BOARD:
        return next(chan for chan, g in _BOARD_TO_BCM.items() if g == gpio)
    return gpio


def _channels(chanlist: object) -> list[int]:
    if isinstance(chanlist, (list, tuple)):
        return [_to_gpio(c) for c in chanlist]
    return [_to_gpio(chanlist)]


def _pin(gpio: int) -> _Pin:
    return _pins.setdefault(gpio, _Pin())


def _input_level(p: _Pin) -> int:
    if p.direction == OUT:
        return p.out_level
    if p.wire is not None:
        return p.wire
    return HIGH if p.pull == PUD_UP else LOW


def _drive(gpio: int, level: int) -> list[Callback]:
    """Record an output level; returns the observers to call (outside the lock)."""
    p = _pin(gpio)
    p.out_level = level
    _history.setdefault(gpio, []).append((time.monotonic(), level))
    return list(_observers.get(gpio, ()))


def _notify(observers: Iterable[Callback], level: int) -> None:
    for observer in observers:
        observer(level)


def _dispatch() -> None:
    global _pending
    while True:
        item = _queue.get()
        if item is None:
            return
        callbacks, channel = item
        for callback in callbacks:
            try:
                callback(channel)
            except Exception:  # the real libraries print a callback's error and go on
                traceback.print_exc()
        with _idle:
            _pending -= 1
            _idle.notify_all()


def _enqueue(callbacks: list[Callback], channel: int) -> None:
    global _thread, _pending
    with _idle:
        _pending += 1
    if _thread is None:
        _thread = threading.Thread(target=_dispatch, name="fake-RPi.GPIO-events", daemon=True)
        _thread.start()
    _queue.put((callbacks, channel))


# --- the RPi.GPIO API ---------------------------------------------------------------------------


def setmode(mode: int) -> None:
    global _mode
    if mode not in (BOARD, BCM):
        raise ValueError("An invalid mode was passed to setmode()")
    if _mode != UNKNOWN and mode != _mode:
        raise ValueError("A different mode has already been set!")
    _mode = mode


def getmode() -> int | None:
    return None if _mode == UNKNOWN else _mode


def setwarnings(flag: object) -> None:
    global _warnings
    _warnings = bool(flag)


def setup(channel: object, direction: int, pull_up_down: int | None = None, initial: int | None = None) -> None:
    if direction not in (IN, OUT):
        raise ValueError("An invalid direction was passed to setup()")
    if direction == OUT and pull_up_down not in (None, PUD_OFF):
        raise ValueError("pull_up_down parameter is not valid for outputs")
    if direction == IN and initial is not None:
        raise ValueError("initial parameter is not valid for inputs")
    pull = PUD_OFF if pull_up_down is None else pull_up_down
    if pull not in (PUD_OFF, PUD_DOWN, PUD_UP):
        raise ValueError("Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN")
    for gpio in _channels(channel):
        if _warnings and gpio in (2, 3) and pull in (PUD_UP, PUD_DOWN):
            warnings.warn("A physical pull up resistor is fitted on this channel!", RuntimeWarning, stacklevel=2)
        with _lock:
            p = _pin(gpio)
            observers: list[Callback] = []
            if direction == OUT:
                p.edge, p.callbacks, p.bouncetime_ms = None, [], None
                level = p.out_level if initial is None else int(bool(initial))
                p.direction, p.pull = OUT, PUD_OFF
                observers = _drive(gpio, level)
            else:
                p.direction, p.pull = IN, pull
        _notify(observers, p.out_level)


def output(channel: object, value: object) -> None:
    gpios = _channels(channel)
    values = [value] * len(gpios) if not isinstance(value, (list, tuple)) else list(value)
    if len(values) != len(gpios):
        raise RuntimeError("Number of channels != number of values")
    for gpio, v in zip(gpios, values, strict=True):
        if not isinstance(v, int):
            raise ValueError("Value must be an integer/boolean or a list/tuple of integers/booleans")  # noqa: TRY004
        level = HIGH if v else LOW
        with _lock:
            if _pin(gpio).direction != OUT:
                raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
            observers = _drive(gpio, level)
        _notify(observers, level)


def input(channel: int) -> int:  # shadows the builtin, as the library's does
    gpio = _to_gpio(channel)
    with _lock:
        p = _pin(gpio)
        if p.direction is None:
            raise RuntimeError("You must setup() the GPIO channel first")
        return _input_level(p)


def gpio_function(channel: int) -> int:
    gpio = _to_gpio(channel)
    with _lock:
        return OUT if _pin(gpio).direction == OUT else IN


def add_event_detect(channel: int, edge: int, callback: Callback | None = None, bouncetime: int | None = None) -> None:
    if callback is not None and not callable(callback):
        raise TypeError("Parameter must be callable")
    gpio = _to_gpio(channel)
    with _lock:
        p = _pin(gpio)
        if p.direction != IN:
            raise RuntimeError("You must setup() the GPIO channel as an input first")
        if edge not in (RISING, FALLING, BOTH):
            raise ValueError("The edge must be set to RISING, FALLING or BOTH")
        if bouncetime is not None and bouncetime <= 0:
            raise ValueError("Bouncetime must be greater than 0")
        if p.edge is not None:
            raise RuntimeError("Conflicting edge detection already enabled for this GPIO channel")
        p.edge, p.bouncetime_ms, p.last_event_s, p.detected = edge, bouncetime, None, False
        p.callbacks = [] if callback is None else [callback]


def add_event_callback(channel: int, callback: Callback) -> None:
    if not callable(callback):
        raise TypeError("Parameter must be callable")
    gpio = _to_gpio(channel)
    with _lock:
        p = _pin(gpio)
        if p.edge is None:
            raise RuntimeError("Add event detection using add_event_detect first before adding a callback")
        p.callbacks.append(callback)


def remove_event_detect(channel: int) -> None:
    gpio = _to_gpio(channel)
    with _lock:
        p = _pin(gpio)
        p.edge, p.callbacks, p.bouncetime_ms = None, [], None


def event_detected(channel: int) -> bool:
    gpio = _to_gpio(channel)
    with _lock:
        p = _pin(gpio)
        detected, p.detected = p.detected, False
        return detected


def cleanup(channel: object = None) -> None:
    """Back to input without pull and without edge detection: the given channels, or all set up."""
    global _mode
    if channel is None:
        with _lock:
            gpios = [g for g, p in _pins.items() if p.direction is not None]
    else:
        gpios = _channels(channel)
    found = False
    with _lock:
        for gpio in gpios:
            p = _pin(gpio)
            if p.direction is not None:
                found = True
            p.direction, p.pull, p.edge, p.callbacks, p.bouncetime_ms = None, PUD_OFF, None, [], None
        if channel is None:
            _mode = UNKNOWN
    if not found and _warnings:
        warnings.warn(
            "No channels have been set up yet - nothing to clean up!  Try cleaning up at the end of your program "
            "instead!",
            RuntimeWarning,
            stacklevel=2,
        )


class PWM:
    """Software PWM on an output channel (both libraries: any GPIO, a thread or lgpio's timer)."""

    def __init__(self, channel: int, frequency: float) -> None:
        self._gpio, self._generation, self.running = -1, -1, False  # a failed __init__ leaves a dead object
        gpio = _to_gpio(channel)
        with _lock:
            if _pin(gpio).direction != OUT:
                raise RuntimeError("You must setup() the GPIO channel as an output first")
            if frequency <= 0.0:
                raise ValueError("frequency must be greater than 0.0")
            if gpio in _pwms:
                raise RuntimeError("A PWM object already exists for this GPIO channel")
            _pwms[gpio] = self
        self._gpio, self._generation = gpio, _generation
        self.frequency = float(frequency)
        self.dutycycle = 0.0

    def start(self, dutycycle: float) -> None:
        self.ChangeDutyCycle(dutycycle)
        self.running = True

    def ChangeDutyCycle(self, dutycycle: float) -> None:
        if not 0.0 <= dutycycle <= 100.0:
            raise ValueError("dutycycle must have a value from 0.0 to 100.0")
        self.dutycycle = float(dutycycle)

    def ChangeFrequency(self, frequency: float) -> None:
        if frequency <= 0.0:
            raise ValueError("frequency must be greater than 0.0")
        self.frequency = float(frequency)

    def stop(self) -> None:
        """Stop, and drive the pin LOW (rpi-lgpio writes 0 whether or not it was running)."""
        self.running = False
        observers: list[Callback] = []
        with _lock:
            if self._generation == _generation and _pin(self._gpio).direction == OUT:
                observers = _drive(self._gpio, LOW)
        _notify(observers, LOW)

    def __del__(self) -> None:
        self.stop()


# --- the test-side API --------------------------------------------------------------------------


def fake_reset() -> None:
    """Forget every pin, observer, history and PWM; stop the dispatcher thread; mode unset."""
    global _mode, _warnings, _generation, _thread, _pending
    if _thread is not None:
        _queue.put(None)
        _thread.join(timeout=5.0)
        _thread = None
    with _lock:
        _pins.clear()
        _observers.clear()
        _history.clear()
        _pwms.clear()
        _mode, _warnings = UNKNOWN, True
        _generation += 1
    with _idle:
        _pending = 0


def fake_drive(pin: int, level: int | None) -> None:
    """The outside world drives BCM `pin`'s wire HIGH (1), LOW (0), or lets it float (None). An input
    whose level changes reports the edge to its callbacks on the dispatcher thread."""
    if not 0 <= pin < _GPIO_COUNT:
        raise ValueError(f"no GPIO {pin}")
    if level not in (None, LOW, HIGH):
        raise ValueError(f"level must be 0, 1 or None, got {level!r}")
    with _lock:
        p = _pin(pin)
        before = _input_level(p)
        p.wire = level
        after = _input_level(p)
        if p.direction != IN or p.edge is None or before == after:
            return
        if p.edge != BOTH and p.edge != (RISING if after else FALLING):
            return
        now = time.monotonic()
        if p.bouncetime_ms is not None and p.last_event_s is not None:
            if (now - p.last_event_s) * 1000.0 <= p.bouncetime_ms:
                return
        p.last_event_s, p.detected = now, True
        callbacks = list(p.callbacks)
        channel = _from_gpio(pin)
    if callbacks:
        _enqueue(callbacks, channel)


def fake_level(pin: int) -> int | None:
    """What BCM `pin` drives as an output; None when it is not an output (high impedance)."""
    with _lock:
        p = _pins.get(pin)
        return p.out_level if p is not None and p.direction == OUT else None


def fake_on_output(pin: int, callback: Callback) -> None:
    """Call `callback(level)` after every level BCM `pin` starts to drive (setup, output, PWM stop), in
    the writer's thread: a model of what is wired to the pin (a relay and its mirror contact, ...)."""
    with _lock:
        _observers.setdefault(pin, []).append(callback)


def fake_history(pin: int) -> list[tuple[float, int]]:
    """(time.monotonic(), level) of every level BCM `pin` was driven to, oldest first."""
    with _lock:
        return list(_history.get(pin, ()))


def fake_pwm(pin: int) -> tuple[float, float] | None:
    """(frequency Hz, duty %) of the running PWM on BCM `pin`, or None."""
    with _lock:
        pwm = _pwms.get(pin)
        return (pwm.frequency, pwm.dutycycle) if pwm is not None and pwm.running else None


def fake_settle(timeout_s: float = 2.0) -> None:
    """Wait until the dispatcher thread has run every edge callback reported so far."""
    with _idle:
        if not _idle.wait_for(lambda: _pending == 0, timeout=timeout_s):
            raise TimeoutError("edge callbacks did not finish")
