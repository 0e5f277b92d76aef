"""The status LEDs of a Raspberry Pi charger board: one RGB LED per EVSE on GPIO pins, solid, blinking
or breathing (software PWM); the `Leds` part of `hal.gpio.GpioBoard`.

What it is for: `LED_PATTERNS` (below) gives one `LedPattern` per `firmware.core.events.Led`;
`StatusLeds.set_led` shows it. Any of an LED's three pins may be absent. Solid patterns set the pins
and need no task; blink and pulse (breathing, software PWM) run one animation task, which exists only
while some LED shows a non-solid pattern.

What it must never do:

* decide what to show: the core picks the `Led`, this module only renders its pattern;
* leave an LED lit by accident: rpi-lgpio's `PWM.stop()` (and the deletion of a PWM object) writes the
  pin LOW (RPi/GPIO/__init__.py, `PWM.stop`), which is "on" for an active-low LED: after stopping a
  PWM this module drops the object first, then writes the level;
* let an animation failure stop the others: a pin failure ends that LED's animation (logged), the
  next `set_led` retries.

The library (see `hal.gpio_pins`): software PWM (`GPIO.PWM(pin, hz)`, `start`, `ChangeDutyCycle`,
`stop`) works on any output in both RPi.GPIO and rpi-lgpio (rpi-lgpio through lgpio's `tx_pwm`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from firmware.core.errors import HardwareError
from firmware.core.events import Led
from hal.gpio_pins import EvsePins, GpioPwm, PinIo

log = logging.getLogger(__name__)

#: Software PWM frequency of the breathing LEDs (above visible flicker) and the animation step.
LED_PWM_HZ: Final = 100.0
PULSE_STEP_S: Final = 0.05
MIN_FRAME_S: Final = 0.001


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
YELLOW: Final = (True, True, False)

#: One pattern per status, and one per kind of error while Faulted. Conventions followed (no standard
#: exists; wallboxes agree broadly):
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
#: fault_rcd    red               blink    0.4 s   ours: the most urgent fault flashes fastest
#: fault_relay  red               solid            ours: a welded or stuck contactor, steady red
#: fault_overtemperature yellow   blink    1 s     ours (yellow: R+G): heat, not a wiring fault
#: fault_meter  yellow            solid            ours: charging is refused until the meter reads
#: fault_pilot  red               pulse    2 s     ours: a CP short or a broken pilot front end
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
    Led.FAULT_RCD: LedPattern(colour=RED, kind="blink", period_s=0.4),
    Led.FAULT_RELAY: LedPattern(colour=RED),
    Led.FAULT_OVERTEMPERATURE: LedPattern(colour=YELLOW, kind="blink", period_s=1.0),
    Led.FAULT_METER: LedPattern(colour=YELLOW),
    Led.FAULT_PILOT: LedPattern(colour=RED, kind="pulse", period_s=2.0),
}


@dataclass(slots=True)
class _Animation:
    pattern: LedPattern
    since: float
    lit: bool = True
    duty_pct: float = 0.0


class StatusLeds:
    """The RGB LED of every EVSE, driven through `io` (the board opens and closes the pins)."""

    def __init__(self, io: PinIo, pins: Mapping[int, EvsePins], patterns: Mapping[Led, LedPattern]) -> None:
        missing = [led.value for led in Led if led not in patterns]
        if missing:
            raise ValueError(f"led_patterns has no pattern for: {', '.join(missing)}")
        self._io = io
        self._pins = dict(pins)
        self._patterns = dict(patterns)
        self._shown: dict[int, LedPattern | None] = {}
        self._animated: dict[int, _Animation] = {}
        self._pwm: dict[int, GpioPwm] = {}
        self._animation: asyncio.Task[None] | None = None

    async def set_led(self, cid: int, led: Led) -> None:
        """Show the pattern of `led` on EVSE `cid` (a known id). Idempotent; HardwareError on a pin failure."""
        pattern = self._patterns[Led(led)]
        if self._shown.get(cid) == pattern:
            return
        if self._led_pins(cid) != (None, None, None):
            try:
                self._show(cid, pattern)
            finally:
                await self._run_animation()
        self._shown[cid] = pattern

    async def stop(self) -> list[HardwareError]:
        """End the animation and every PWM (the pins are still open); never raises (returns the errors).
        The caller writes every LED pin's level after this."""
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
        return errors

    def forget(self) -> None:
        """The pins were released: nothing is shown any more."""
        self._shown.clear()

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
                self._io.write(pin, on)
        if pattern.kind != "solid":
            self._animated[cid] = _Animation(pattern=pattern, since=self._now())

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _duty(self, pin: int, duty_pct: float) -> float:
        return 100.0 - duty_pct if pin in self._io.active_low else duty_pct

    def _start_pwm(self, pin: int) -> None:
        gpio = self._io.g()
        with self._io.library(pin, f"PWM at {LED_PWM_HZ:g} Hz"):
            pwm = gpio.PWM(pin, LED_PWM_HZ)
            pwm.start(self._duty(pin, 0.0))
        self._pwm[pin] = pwm

    def _stop_pwm(self, pin: int) -> None:
        """Stop and drop the PWM object (its deletion may write LOW: the caller writes the level after)."""
        pwm = self._pwm.pop(pin)
        with self._io.library(pin, "PWM stop"):
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
                    self._io.write(pin, lit)
                animation.lit = lit
            return half - (t % half)
        triangle = 1.0 - abs(2.0 * t / pattern.period_s - 1.0)  # 0 -> 1 -> 0 over one period
        duty_pct = round(100.0 * triangle * triangle, 1)  # squared: closer to perceived brightness
        if duty_pct != animation.duty_pct:
            for pin in lit_pins:
                with self._io.library(pin, f"PWM duty {duty_pct:g} %"):
                    self._pwm[pin].ChangeDutyCycle(self._duty(pin, duty_pct))
            animation.duty_pct = duty_pct
        return min(PULSE_STEP_S, pattern.period_s / 20)
