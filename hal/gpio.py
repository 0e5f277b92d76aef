"""Relays, status LEDs, connector lock, RCD and over-temperature of a Raspberry Pi board via RPi.GPIO.

What it is for: `GpioBoard` implements the `Relays`, `Leds`, `Lock`, `Rcd` and `Temperature` Protocols
of `hal.protocols` (plus `set_three_phases` for a phase-switch contactor) on the Pi's GPIO header, with
BCM numbering. It sets exact pin levels and reads inputs; `EvsePins` says which GPIO does what for one
EVSE, `GpioTiming` the board's timings, `active_low` which pins are active at LOW. It composes its
parts: the pins, their timings and the library (`hal.gpio_pins`), the status LEDs and `LED_PATTERNS`
(`hal.gpio_leds`), the RCD latch and self-test (`hal.gpio_rcd`); relays, phase switch, lock and
over-temperature are here. Import the public names from this module.

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

The standard: the RPi.GPIO API as RPi.GPIO 0.7 and rpi-lgpio share it (see `hal.gpio_pins`).

The connector lock (a motor actuator with separate lock and unlock drives and a feedback switch,
active = locked): `set_locked` pulses the lock or unlock output for `lock_pulse_s`, then polls the
feedback every 20 ms for up to `lock_confirm_s`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Final, Self

from firmware.core.errors import HardwareError
from firmware.core.events import Led
from hal.gpio_leds import LED_PATTERNS, LedPattern, StatusLeds
from hal.gpio_pins import EvsePins, GpioLibrary, GpioTiming, PinIo, import_gpio
from hal.gpio_rcd import RcdMonitor

__all__ = ["LED_PATTERNS", "EvsePins", "GpioBoard", "GpioTiming", "LedPattern"]

log = logging.getLogger(__name__)

#: How often the lock feedback is polled.
LOCK_POLL_S: Final = 0.02


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
        self._pins = dict(pins)
        self._timing = timing
        self._io = PinIo(owner, frozenset(active_low))
        self._leds = StatusLeds(self._io, self._pins, led_patterns)
        self._rcd = RcdMonitor(self._io, self._pins, timing)
        self._outputs = [pin for evse in self._pins.values() for pin in evse.outputs()]
        self._inputs = [pin for evse in self._pins.values() for pin in evse.inputs()]
        self._lock_busy = {cid: asyncio.Lock() for cid in self._pins}  # one lock operation at a time

    # --- opening and closing -----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._io.gpio is not None:
            raise HardwareError("the GPIO board is already open")
        gpio = import_gpio()
        self._rcd.attach(asyncio.get_running_loop())
        self._io.gpio = gpio
        io = self._io
        done: list[int] = []
        try:
            with io.library(None, "setmode(BCM)"):
                gpio.setwarnings(False)
                gpio.setmode(gpio.BCM)
            for pin in self._outputs:  # safe levels first, before anything else happens
                with io.library(pin, "setup as output"):
                    gpio.setup(pin, gpio.OUT, initial=io.level(pin, False))
                done.append(pin)
            for pin in self._inputs:
                pull = gpio.PUD_UP if pin in io.active_low else gpio.PUD_DOWN
                with io.library(pin, "setup as input"):
                    gpio.setup(pin, gpio.IN, pull_up_down=pull)
                done.append(pin)
            self._rcd.detect_edges(gpio)
        except BaseException:
            self._release(gpio, done)
            self._io.gpio = None
            self._rcd.attach(None)
            raise
        log.info("GPIO board open: %d EVSE(s), outputs %s, inputs %s", len(self._pins), self._outputs, self._inputs)
        return self

    async def __aexit__(self, *exc: object) -> None:
        gpio = self._io.gpio
        if gpio is None:
            return
        errors = await self._leds.stop()
        for pin in self._outputs:
            try:
                self._io.write(pin, False)
            except HardwareError as e:
                errors.append(e)
        self._rcd.cancel_pending()
        errors += self._release(gpio, self._outputs + self._inputs)
        self._io.gpio = None
        self._rcd.attach(None)
        self._leds.forget()
        self._rcd.forget()
        for error in errors:
            log.error("closing the GPIO board: %s", error)
        if errors and (not exc or exc[0] is None):  # do not mask the exception that ends the block
            raise errors[0]

    def _release(self, gpio: GpioLibrary, pins: list[int]) -> list[HardwareError]:
        """Event detection off, then cleanup of exactly `pins`; never raises (returns the errors)."""
        errors = self._rcd.stop_detecting(gpio, pins)
        if pins:
            try:
                with self._io.library(None, f"cleanup({pins})"):
                    gpio.cleanup(list(pins))
            except HardwareError as e:
                errors.append(e)
        return errors

    def _evse(self, cid: object) -> EvsePins:
        if isinstance(cid, bool) or not isinstance(cid, int) or cid not in self._pins:
            raise ValueError(f"unknown EVSE id {cid!r}")
        return self._pins[cid]

    # --- Relays --------------------------------------------------------------------------------------

    async def set_closed(self, cid: int, closed: bool) -> None:
        """Drive the contactor's relay (active = closed). Idempotent."""
        self._io.write(self._evse(cid).relay, bool(closed))
        log.debug("c%d relay %s", cid, "closed" if closed else "open")

    async def feedback_closed(self, cid: int) -> bool | None:
        """The mirror contact (active = closed); None when not wired."""
        pin = self._evse(cid).relay_feedback
        return None if pin is None else self._io.read(pin)

    async def set_three_phases(self, cid: int, three: bool) -> None:
        """Drive the phase-switch contactor (active = L2/L3 connected, three phases). Whether switching
        is allowed now (never under load) is the caller's business."""
        pin = self._evse(cid).phase_switch
        if pin is None:
            raise HardwareError(f"c{cid} has no phase-switch contactor (no phase_switch pin configured)")
        self._io.write(pin, bool(three))
        log.debug("c%d phase switch: %s", cid, "three phases" if three else "one phase")

    # --- Temperature ------------------------------------------------------------------------------------

    async def overtemperature(self, cid: int) -> bool:
        """The over-temperature input (active = alarm); False when not wired."""
        pin = self._evse(cid).overtemperature
        return False if pin is None else self._io.read(pin)

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
            if self._io.read(feedback) == want:
                return
            drive = evse.lock if want else evse.unlock
            self._io.write(drive, True)
            try:
                await asyncio.sleep(self._timing.lock_pulse_s)
            finally:
                self._io.write(drive, False)
            confirm_s = self._timing.lock_confirm_s
            deadline = asyncio.get_running_loop().time() + confirm_s
            if await self._io.wait_for(feedback, want, deadline, LOCK_POLL_S):
                log.info("c%d connector %s", cid, word)
                return
            reads = "unlocked" if want else "locked"
            raise HardwareError(
                f"c{cid} connector lock did not confirm {word} within {confirm_s:g} s "
                f"(feedback pin {feedback} reads {reads})"
            )

    # --- Rcd (hal.gpio_rcd) -----------------------------------------------------------------------------

    def on_trip(self, callback: Callable[[int], None]) -> None:
        """Call `callback(cid)` on the loop when a debounced trip fires (a wake-up: read `tripped`)."""
        self._rcd.on_trip(callback)

    async def tripped(self, cid: int) -> bool:
        """Active now, or latched by an interrupt since the last call (the latch is cleared). During a
        self-test only a latch from before the test counts. False without an rcd_trip pin."""
        self._evse(cid)
        return await self._rcd.tripped(cid)

    async def self_test(self, cid: int) -> bool:
        """Pulse the RCD's test input; True when the trip output went active within rcd_test_timeout_s
        of the pulse's start and inactive within rcd_release_timeout_s of its end. False when the trip
        input is active before the test. True without an rcd_test pin (no self-test possible)."""
        self._evse(cid)
        return await self._rcd.self_test(cid)

    # --- Leds (hal.gpio_leds) ---------------------------------------------------------------------------

    async def set_led(self, cid: int, led: Led) -> None:
        """Show the pattern of `led`. Idempotent; HardwareError on a pin failure (not safety-relevant)."""
        self._evse(cid)
        await self._leds.set_led(cid, led)
