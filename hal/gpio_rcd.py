"""The RCD of a Raspberry Pi charger board on GPIO: the trip output of a 6 mA DC residual-current
monitor (IEC 62955 / IEC 62752) as an interrupt input, and its test input; the `Rcd` part of
`hal.gpio.GpioBoard`.

What it is for: an edge towards the active level schedules a re-read `rcd_debounce_ms` later; a trip
counts only if the input is still active then, so a glitch shorter than the debounce time is ignored
(and an edge the library dropped inside its own bounce window is still caught by that read). A counted
trip is latched until the next `tripped()` call and wakes every `on_trip` listener on the loop;
`tripped()` also reads the level, so a steady trip is seen by a poll even without an interrupt.
`self_test()` drives the test input active for `rcd_test_pulse_s`, expects the trip output active
within `rcd_test_timeout_s` of the start of the pulse, and inactive again within
`rcd_release_timeout_s` after the test input was released; during the test the latch and the
listeners are suppressed and `tripped()` reports only a latch from before.

What it must never do:

* decide whether a trip is a fault: it reports levels, the core decides;
* leave the test input active: a test pulse ends in `finally`;
* call a listener on the library's thread: the edge callbacks run there and hand over with
  `loop.call_soon_threadsafe`; one failing listener does not keep the others from the wake-up.

The library (see `hal.gpio_pins`): edge detection is `add_event_detect(pin, edge, callback=...,
bouncetime=ms)` once per pin. RPi.GPIO and rpi-lgpio debounce differently: RPi.GPIO reports the first
edge and drops edges within `bouncetime` after it; rpi-lgpio reports an edge only once the level was
stable for `bouncetime` (differences.rst, "Debounce"). Neither is trusted alone: the callback only
wakes the loop, which re-reads the level `rcd_debounce_ms` later.

Assumption about the module: its trip output follows the test current (trips while the test winding
is fed, releases when it stops). Modules differ: Bender's RCMB300 series wants its test/reset input
held 5-10 s for a test and 1.5-5 s for a reset (manual D00372, §6.2: https://www.easymanua.ls/bender/
rcmb300-series/manual?p=29), the RCMB102 reads a HIGH/LOW sequence on X10 (https://manualshive.com/en/
manual/bender/rcmb102/2731522?page=7). Set the three timings from the module's manual; a module that
latches until a reset sequence needs more than this generic pulse. A board without an `rcd_test` pin
has no self-test: `self_test` returns True, and the board's configuration decides whether self-tests
run at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Final

from firmware.core.errors import HardwareError
from hal.gpio_pins import EvsePins, GpioLibrary, GpioTiming, PinIo

log = logging.getLogger(__name__)

#: How often the trip input is polled during a self-test.
RCD_POLL_S: Final = 0.005


class RcdMonitor:
    """The RCD of every EVSE that has an `rcd_trip` pin, read through `io` (the board opens the pins)."""

    def __init__(self, io: PinIo, pins: Mapping[int, EvsePins], timing: GpioTiming) -> None:
        self._io = io
        self._pins = dict(pins)
        self._timing = timing
        self._trip_cid = {evse.rcd_trip: cid for cid, evse in self._pins.items() if evse.rcd_trip is not None}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = {cid: asyncio.Lock() for cid in self._pins}  # one self-test at a time
        self._latched: set[int] = set()
        self._testing: set[int] = set()
        self._pending: dict[int, asyncio.TimerHandle] = {}
        self._listeners: list[Callable[[int], None]] = []

    # --- opening and closing (driven by the board) -----------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """The loop the edge callbacks hand over to (None: the board is closed, edges are dropped)."""
        self._loop = loop

    def detect_edges(self, gpio: GpioLibrary) -> None:
        """Edge detection on every trip input, towards its active level."""
        for pin in self._trip_cid:
            edge = gpio.FALLING if pin in self._io.active_low else gpio.RISING
            with self._io.library(pin, "add_event_detect"):
                gpio.add_event_detect(pin, edge, callback=self._edge_from_thread,
                                      bouncetime=self._timing.rcd_debounce_ms)

    def stop_detecting(self, gpio: GpioLibrary, pins: list[int]) -> list[HardwareError]:
        """Edge detection off on the trip inputs among `pins`; never raises (returns the errors)."""
        errors: list[HardwareError] = []
        for pin in self._trip_cid:
            if pin in pins:
                try:
                    with self._io.library(pin, "remove_event_detect"):
                        gpio.remove_event_detect(pin)
                except HardwareError as e:
                    errors.append(e)
        return errors

    def cancel_pending(self) -> None:
        """Drop every debounce re-read not yet run."""
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()

    def forget(self) -> None:
        """The pins were released: no latched trip survives."""
        self._latched.clear()

    # --- Rcd -----------------------------------------------------------------------------------------

    def on_trip(self, callback: Callable[[int], None]) -> None:
        """Call `callback(cid)` on the loop when a debounced trip fires (a wake-up: read `tripped`)."""
        self._listeners.append(callback)

    async def tripped(self, cid: int) -> bool:
        """Active now, or latched by an interrupt since the last call (the latch is cleared). During a
        self-test only a latch from before the test counts. False without an rcd_trip pin."""
        pin = self._pins[cid].rcd_trip
        if pin is None:
            return False
        active = cid not in self._testing and self._io.read(pin)
        latched = cid in self._latched
        self._latched.discard(cid)
        return active or latched

    async def self_test(self, cid: int) -> bool:
        """Pulse the RCD's test input; True when the trip output went active within rcd_test_timeout_s
        of the pulse's start and inactive within rcd_release_timeout_s of its end. False when the trip
        input is active before the test. True without an rcd_test pin (no self-test possible)."""
        evse = self._pins[cid]
        trip, test = evse.rcd_trip, evse.rcd_test
        if trip is None or test is None:
            return True
        loop = asyncio.get_running_loop()
        async with self._busy[cid]:
            if self._io.read(trip):
                log.warning("c%d RCD self-test not possible: the trip input is already active", cid)
                return False
            self._testing.add(cid)
            try:
                start = loop.time()
                self._io.write(test, True)
                try:
                    seen = await self._trip_during_test(trip, test, start)
                finally:
                    self._io.write(test, False)
                if not seen:
                    log.warning("c%d RCD self-test failed: no trip within %g s", cid, self._timing.rcd_test_timeout_s)
                    return False
                release_s = self._timing.rcd_release_timeout_s
                if not await self._io.wait_for(trip, False, loop.time() + release_s, RCD_POLL_S):
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
            seen = seen or self._io.read(trip)
            now = loop.time()
            if not released and now >= pulse_end:
                self._io.write(test, False)
                released = True
            if released and (seen or now >= deadline):
                return seen
            wake = pulse_end if not released else deadline
            await asyncio.sleep(max(0.0, min(RCD_POLL_S, wake - now)))

    # --- interrupts ----------------------------------------------------------------------------------

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
        if self._io.gpio is None or cid in self._testing:
            return
        pin = self._pins[cid].rcd_trip
        if pin is None:  # only EVSEs with a trip pin get here
            return
        try:
            active = self._io.read(pin)
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
