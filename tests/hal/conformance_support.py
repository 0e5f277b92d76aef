"""The outside world of each board backend, for the conformance suite (tests/hal/test_conformance.py).

What it is for: one "world" adapter per backend that plays what is around the board (an EV and its
cable, a contactor with its mirror contact, a lock motor, an RCD module, a thermal switch, a card on
the reader) and can inject the failures the backend can have. The conformance tests drive the board
through the Protocols of `hal.protocols` only, and the world through `World` only, so every test makes
the same assertions for every backend.

* `SimWorld`: `hal.sim.SimBoard` and its script API (`plug`, `fault`, `token`, ...).
* `RpiWorld`: `hal.rpi.RpiBoard` over the fakes of tests/fakes (RPi.GPIO, spidev with an MCP3008,
  python-evdev) and a temporary PWM sysfs tree with the kernel model of tests/support/sysfs_pwm.py.
  The world is physics only: the MCP3008's input volts follow from the EV's state and the duty the
  PWM channel really has in the sysfs tree, through the analogue front end the default calibrations
  describe (CP -12..+12 V onto 0..3.3 V; PP with a 1 kOhm pull-up to 3.3 V).

Each world declares in `CAN` the failures it can inject; a test that needs one is parametrized only
over the backends that have it (never skipped).

What it must never do: contain logic of the backends (no decoding, no calibration of ours beyond the
front-end physics the board's documentation gives), or read a clock other than the event loop's.

Standard: the contracts in hal/protocols.py; IEC 61851-1:2017 Annex A (CP levels: A +12 V, B +9 V,
C +6 V; -12 V for F and the low half of the PWM) and Table B.2 (PP: 220 Ohm = 32 A cable).
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from pathlib import Path
from types import ModuleType
from typing import ClassVar, Final, Protocol

import pytest

from firmware.core.events import Led
from hal.adc import DEFAULT_PP_CALIBRATION, AdcPilotInputs, Mcp3x08, PilotChannels
from hal.gpio import LED_PATTERNS, EvsePins, GpioBoard, GpioTiming
from hal.protocols import Board
from hal.pwm import PwmChannel, SysfsPwm
from hal.rfid import EvdevTokenReader, ReaderConfig
from hal.rpi import RpiBoard
from hal.sim import SimBoard
from tests.support.fakes import fresh_fake
from tests.support.sysfs_pwm import Kernel, PwmTree

#: The EVSE every test uses, and one no backend knows.
CID: Final = 1
UNKNOWN_CID: Final = 9

#: Failures a world may be able to inject (`World.CAN`).
ADC_FAILURE: Final = "adc_failure"  # the ADC stops answering
PWM_FAILURE: Final = "pwm_failure"  # the PWM driver refuses writes
LOCK_JAM: Final = "lock_jam"  # the lock's feedback never confirms
READER_UNPLUG: Final = "reader_unplug"  # the card reader vanishes (USB unplug)

#: High plateau the EV's resistors give (IEC 61851-1 Table A.4), and the generator's low level.
EV_LEVEL_V: Final = {"A": 12.0, "B": 9.0, "C": 6.0}
GENERATOR_LOW_V: Final = -12.0


class World(Protocol):
    """The outside world of one backend (module docstring). Set up before the board is opened."""

    CAN: ClassVar[frozenset[str]]
    board: Board

    def plug(self, cid: int, cp: str, pp_ohms: float | None = 220.0) -> None:
        """The EV in state `cp` (A unplugged, B, C) with a cable of `pp_ohms` (None: PP open)."""
        ...

    def driven_duty_pct(self, cid: int) -> float:
        """The CP duty the generator really outputs now, in percent."""
        ...

    def shows(self, cid: int, led: Led) -> bool:
        """True when the status LED shows `led`'s pattern."""
        ...

    def weld(self, cid: int) -> None:
        """The contactor's contacts weld: closed whatever the coil does."""
        ...

    def locked(self, cid: int) -> bool:
        """Where the lock actuator is (True: locked)."""
        ...

    async def rcd(self, cid: int, tripped: bool) -> None:
        """A residual current trips the RCD (True; the trip lasts long enough to count) or ends."""
        ...

    def break_rcd_test(self, cid: int) -> None:
        """The RCD's test input stops working: a self-test no longer trips it."""
        ...

    async def settle(self) -> None:
        """Let every signal of the world reach the board (interrupt threads, debounce times)."""
        ...

    def overheat(self, cid: int, hot: bool) -> None:
        """The thermal switch at the socket opens (hot) or closes again."""
        ...

    def present_card(self, cid: int, uid_hex: str) -> None:
        """Hold a card with this UID (hex, the card's byte order) to the reader of `cid`."""
        ...

    def fail(self, what: str) -> None:
        """Inject one of `CAN`."""
        ...

    def heal(self) -> None:
        """The injected bus failures end (a transient fault)."""
        ...

    def replug_reader(self) -> None:
        """Plug the vanished reader back in."""
        ...


# --- the simulated board --------------------------------------------------------------------------


class SimWorld:
    """The world of `SimBoard`: its script API. It can inject none of the failures of `World.CAN`:
    the sim has no ADC/PWM error, no lock that fails to confirm and a reader that is never gone."""

    CAN: ClassVar[frozenset[str]] = frozenset()

    def __init__(self) -> None:
        self.sim = SimBoard([CID], clock=lambda: 0.0)
        self.board: Board = self.sim

    def plug(self, cid: int, cp: str, pp_ohms: float | None = 220.0) -> None:
        self.sim.plug(cid, cp, pp_ohms=pp_ohms)

    def driven_duty_pct(self, cid: int) -> float:
        return self.sim.duty_pct(cid)

    def shows(self, cid: int, led: Led) -> bool:
        return self.sim.led(cid) is led

    def weld(self, cid: int) -> None:
        self.sim.fault(cid, "relay_welded", True)

    def locked(self, cid: int) -> bool:
        return self.sim.locked(cid)

    async def rcd(self, cid: int, tripped: bool) -> None:
        self.sim.fault(cid, "rcd", tripped)

    def break_rcd_test(self, cid: int) -> None:
        self.sim.rcd_self_test_fails(cid)

    async def settle(self) -> None:
        """The sim has no threads and no debounce."""

    def overheat(self, cid: int, hot: bool) -> None:
        self.sim.fault(cid, "overtemperature", hot)

    def present_card(self, cid: int, uid_hex: str) -> None:
        self.sim.token(cid, uid_hex)

    def fail(self, what: str) -> None:
        raise AssertionError(f"the sim cannot inject {what}")  # parametrization keeps tests from here

    def heal(self) -> None:
        """Nothing was injected."""

    def replug_reader(self) -> None:
        raise AssertionError("the sim's reader is never gone")


# --- the Raspberry Pi board over its fakes ----------------------------------------------------------


RELAY, FEEDBACK, RED, GREEN, BLUE = 17, 27, 5, 6, 13
LOCK, UNLOCK, LOCK_FB, TRIP, TEST, HOT = 23, 24, 22, 25, 12, 26
PINS: Final = EvsePins(relay=RELAY, relay_feedback=FEEDBACK, led_red=RED, led_green=GREEN, led_blue=BLUE,
                       lock=LOCK, unlock=UNLOCK, lock_feedback=LOCK_FB, rcd_trip=TRIP, rcd_test=TEST,
                       overtemperature=HOT)
#: As on the reference board: relay driver, mirror contact, the RCD's open-collector output and the red
#: LED are active-low.
ACTIVE_LOW: Final = frozenset({RELAY, FEEDBACK, TRIP, RED})
#: Short board timings so that the suite stays fast (a real board uses the defaults).
TIMING: Final = GpioTiming(lock_pulse_s=0.02, lock_confirm_s=0.06, rcd_debounce_ms=5, rcd_test_pulse_s=0.01,
                           rcd_test_timeout_s=0.05, rcd_release_timeout_s=0.05)
#: ADC channels: CP positive peak, CP negative peak, PP.
CP_HI, CP_LO, PP = 0, 1, 2
VREF_V: Final = 3.3
PP_PULLUP_OHMS: Final = DEFAULT_PP_CALIBRATION.pullup_ohms
PP_SUPPLY_V: Final = DEFAULT_PP_CALIBRATION.supply_v
READER: Final = "/dev/input/by-id/usb-Sycreader_RFID_Technology_Co.__Ltd_SYC_ID_IC_USB_Reader-event-kbd"


def fresh_module(monkeypatch: pytest.MonkeyPatch, name: str, *also: str) -> ModuleType:
    """Import the fake `name` from tests/fakes, fresh (`also`: its submodules, which fresh_fake knows)."""
    return fresh_fake(monkeypatch, name)


def level(pin: int, active: bool) -> int:
    """The wire level (1 HIGH, 0 LOW) that means `active` on `pin`."""
    return int(active) ^ int(pin in ACTIVE_LOW)


class FailingKernel(Kernel):
    """The kernel model of tests/support/sysfs_pwm.py, with a driver that can start refusing writes."""

    def __init__(self, tree: PwmTree) -> None:
        super().__init__(tree)
        self.error: OSError | None = None

    def write(self, path: Path, value: str) -> None:
        if self.error is not None:
            raise self.error
        super().write(path, value)


class RpiWorld:
    """The world of `RpiBoard` over the fake buses (module docstring)."""

    CAN: ClassVar[frozenset[str]] = frozenset({ADC_FAILURE, PWM_FAILURE, LOCK_JAM, READER_UNPLUG})

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.gpio = fresh_module(monkeypatch, "RPi.GPIO", "RPi")
        self.gpio.fake_reset()
        self.spidev = fresh_module(monkeypatch, "spidev")
        self.evdev = fresh_module(monkeypatch, "evdev", "evdev.ecodes")
        self.tree = PwmTree(tmp_path / "pwm")
        self.tree.add_chip(0, npwm=2)
        self.kernel = FailingKernel(self.tree)
        self.kernel.install(monkeypatch)
        self.mcp = self.spidev.FakeMcp(chip="MCP3008", vref_v=VREF_V)
        self.spidev.FAKE_BUSES[(0, 0)] = self.mcp
        self.mcp.volts_of = self._adc_volts
        self.readers: list[object] = []
        self.reader = self._plug_reader()
        # the EV and the devices around the pins
        self.cp = "A"
        self.pp_ohms: float | None = 220.0
        self.welded = False
        self.lock_position = False
        self.lock_jammed = False
        self.trip_active = False
        self.test_input = False
        self.rcd_test_works = True
        self.gpio.fake_on_output(RELAY, self._contactor)
        self.gpio.fake_on_output(LOCK, lambda lvl: self._lock_motor(lvl, True))
        self.gpio.fake_on_output(UNLOCK, lambda lvl: self._lock_motor(lvl, False))
        self.gpio.fake_on_output(TEST, self._rcd_test_input)
        self._drive_trip()
        self.board: Board = RpiBoard(
            gpio=GpioBoard({CID: PINS}, timing=TIMING, active_low=ACTIVE_LOW),
            inputs=AdcPilotInputs(
                Mcp3x08(bus=0, device=0, chip="MCP3008", vref_v=VREF_V),
                {CID: PilotChannels(cp_hi=CP_HI, cp_lo=CP_LO, pp=PP, pp_cal=DEFAULT_PP_CALIBRATION)},
            ),
            pwm=SysfsPwm({CID: PwmChannel(chip=0, channel=0)}, root=self.tree.root),
            readers=EvdevTokenReader([ReaderConfig(cid=CID, device=Path(READER))]),
        )

    def close(self) -> None:
        """After the board is closed: release the fakes' pipes and threads."""
        for fake in self.readers:
            for handle in list(fake.handles):  # type: ignore[attr-defined]
                handle.close()
            fake.close()  # type: ignore[attr-defined]
        self.evdev.FAKE_DEVICES.clear()
        self.spidev.FAKE_BUSES.clear()
        self.gpio.fake_reset()
        self.kernel.cancel()

    # --- physics ------------------------------------------------------------------------------------

    def _adc_volts(self, channel: int) -> float:
        if channel == PP:
            if self.cp == "A" or self.pp_ohms is None:  # no cable, or no coding resistor: pulled up
                return PP_SUPPLY_V
            return PP_SUPPLY_V * self.pp_ohms / (PP_PULLUP_OHMS + self.pp_ohms)
        duty = self.driven_duty_pct(CID)
        if duty <= 0.0:  # F: the generator holds -12 V
            hi = lo = GENERATOR_LOW_V
        elif duty >= 100.0:  # constant +12 V through the EV's resistors
            hi = lo = EV_LEVEL_V[self.cp]
        else:  # the EV's diode lets the -12 V half through
            hi, lo = EV_LEVEL_V[self.cp], GENERATOR_LOW_V
        pilot_v = hi if channel == CP_HI else lo
        return (pilot_v + 12.0) * VREF_V / 24.0  # the front end: -12..+12 V onto 0..Vref

    def _contactor(self, lvl: int) -> None:
        closed = self.welded or lvl == level(RELAY, True)
        self.gpio.fake_drive(FEEDBACK, level(FEEDBACK, closed))

    def _lock_motor(self, lvl: int, towards_locked: bool) -> None:
        if lvl == level(LOCK, True) and not self.lock_jammed:
            self.lock_position = towards_locked
            self.gpio.fake_drive(LOCK_FB, level(LOCK_FB, towards_locked))

    def _rcd_test_input(self, lvl: int) -> None:
        self.test_input = lvl == level(TEST, True)
        self._drive_trip()

    def _drive_trip(self) -> None:
        active = self.trip_active or (self.test_input and self.rcd_test_works)
        self.gpio.fake_drive(TRIP, level(TRIP, active))

    def _plug_reader(self) -> object:
        fake = self.evdev.FakeDevice(name="Sycreader RFID Technology Co., Ltd SYC ID&IC USB Reader")
        self.readers.append(fake)
        self.evdev.FAKE_DEVICES[READER] = fake
        return fake

    # --- World ---------------------------------------------------------------------------------------

    def plug(self, cid: int, cp: str, pp_ohms: float | None = 220.0) -> None:
        assert cid == CID
        self.cp, self.pp_ohms = cp, pp_ohms

    def driven_duty_pct(self, cid: int) -> float:
        assert cid == CID
        state = self.tree.state(0, 0)
        assert state.enabled
        return 100.0 * state.duty_ns / state.period_ns

    def shows(self, cid: int, led: Led) -> bool:
        assert cid == CID
        pattern = LED_PATTERNS[led]
        for pin, on in zip((RED, GREEN, BLUE), pattern.colour, strict=True):
            if on and pattern.kind == "pulse":
                if self.gpio.fake_pwm(pin) is None:
                    return False
            elif self.gpio.fake_level(pin) != level(pin, on):
                return False
        return True

    def weld(self, cid: int) -> None:
        assert cid == CID
        self.welded = True
        self.gpio.fake_drive(FEEDBACK, level(FEEDBACK, True))

    def locked(self, cid: int) -> bool:
        assert cid == CID
        return self.lock_position

    async def rcd(self, cid: int, tripped: bool) -> None:
        assert cid == CID
        self.trip_active = tripped
        self._drive_trip()
        if tripped:  # a real trip lasts longer than the board's debounce
            await self.settle()

    def break_rcd_test(self, cid: int) -> None:
        assert cid == CID
        self.rcd_test_works = False

    async def settle(self) -> None:
        self.gpio.fake_settle()  # the library's thread has handed every edge to the loop
        await asyncio.sleep(4 * TIMING.rcd_debounce_ms / 1000)  # and the board's debounce is over

    def overheat(self, cid: int, hot: bool) -> None:
        assert cid == CID
        self.gpio.fake_drive(HOT, level(HOT, hot))

    def present_card(self, cid: int, uid_hex: str) -> None:
        """The reader types the UID as a 10-digit decimal number and Enter, as a USB keyboard does."""
        assert cid == CID
        ecodes = self.evdev.ecodes
        typed = f"{int(uid_hex, 16):010d}"
        records: list[bytes] = []
        t_us = 1_700_000_000_000_000
        for key in [getattr(ecodes, f"KEY_{c}") for c in typed] + [ecodes.KEY_ENTER]:
            for value in (1, 0):  # down, up: one HID report each, 8 ms apart
                sec, usec = divmod(t_us, 1_000_000)
                records.append(struct.pack(self.evdev.EVENT_FORMAT, sec, usec, ecodes.EV_KEY, key, value))
                records.append(struct.pack(self.evdev.EVENT_FORMAT, sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0))
                t_us += 8_000
        self.reader.feed(b"".join(records))  # type: ignore[attr-defined]

    def fail(self, what: str) -> None:
        eio = OSError(errno.EIO, os.strerror(errno.EIO))
        if what == ADC_FAILURE:
            self.mcp.fail = eio
        elif what == PWM_FAILURE:
            self.kernel.error = eio
        elif what == LOCK_JAM:
            self.lock_jammed = True
        elif what == READER_UNPLUG:
            self.reader.unplug()  # type: ignore[attr-defined]
        else:
            raise AssertionError(f"unknown failure {what}")

    def heal(self) -> None:
        self.mcp.fail = None
        self.kernel.error = None

    def replug_reader(self) -> None:
        self.reader = self._plug_reader()


WORLDS: Final[dict[str, type[SimWorld] | type[RpiWorld]]] = {"sim": SimWorld, "rpi": RpiWorld}


def backends(*needs: str) -> list[str]:
    """The backends whose world can inject every failure in `needs`."""
    return [name for name, world in WORLDS.items() if set(needs) <= world.CAN]

