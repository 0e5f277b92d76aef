"""The board description: `[board]` and, per EVSE, `[evse.pins]`, `[evse.adc]`, `[evse.pwm]`, `[evse.rfid]`.

What it is for: telling the Raspberry Pi backends (`hal/gpio.py`, `hal/pwm.py`, `hal/adc.py`,
`hal/rfid.py`) where everything is wired: BCM GPIO numbers of each EVSE's contactor relay and its
mirror contact, RGB status LED, connector lock (lock/unlock outputs and feedback switch), RCD trip
input and test output, phase-switch relay and over-temperature switch; the ADC channels and the
calibration of the CP and PP front end; the PWM chip and channel of the CP generator; the USB RFID
reader. `board.kind = "sim"` (the default) needs none of it; `"rpi"` needs `pins`, `adc` and `pwm`
for every EVSE. deploy/reference-board.toml is the documented reference board.

The checks across tables are here too (`board_fits`, a rule of `Config.evses`): a GPIO used twice
(by two EVSEs, two functions, or a pin the SPI bus or the PWM overlay owns), an ADC channel or a
PWM channel used twice, an RFID device used twice, and a `[board] active_low_pins` entry that no EVSE
uses. What only the running board can tell (a PWM chip or SPI device that does not exist) is
reported by the backends when they open, in one line naming the device.

Like settings.py: declarations only; never reads files or the clock, never converts values.

Standard: BCM numbering of the Raspberry Pi 4/5 40-pin header (GPIO 0..27); SPI0 on GPIO 7-11 and
SPI1 on GPIO 16-21 (Raspberry Pi documentation, "SPI"); dtoverlay=pwm-2chan puts PWM0/PWM1 on GPIO
18/19 by default.
"""

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final

from firmware.config.rules import (
    Invalid,
    InvalidField,
    between,
    check_fields,
    each,
    needs_field,
    one_of,
    positive,
)
from hal.uid import UidFormat

__all__ = [
    "SPI_BUS_PINS",
    "AdcChip",
    "AdcSettings",
    "BoardKind",
    "BoardSettings",
    "PinSettings",
    "PwmSettings",
    "RfidSettings",
    "board_fits",
    "meters_fit",
]

#: BCM GPIO numbers on the 40-pin header.
_GPIO: Final = between(0, 27)
#: The pins each SPI bus takes (CE1, CE0, MISO, MOSI, SCLK; SPI1 with CE2..CE0): not free for GPIO.
SPI_BUS_PINS: Final[dict[int, tuple[int, ...]]] = {0: (7, 8, 9, 10, 11), 1: (16, 17, 18, 19, 20, 21)}
#: A PP reading above this fraction of the supply is an open PP (hal.adc.PP_OPEN_FRACTION).
_ADC_CHANNEL: Final = between(0, 7)


class BoardKind(StrEnum):
    SIM = "sim"  # the simulated board (also what --sim forces)
    RPI = "rpi"  # a Raspberry Pi 4/5 board: RPi.GPIO (rpi-lgpio on a Pi 5), sysfs PWM, spidev ADC, evdev


class AdcChip(StrEnum):
    MCP3008 = "MCP3008"  # 10 bits, 8 channels
    MCP3208 = "MCP3208"  # 12 bits, 8 channels


@dataclass(frozen=True, slots=True, kw_only=True)
class BoardSettings:
    """`[board]`: the board's kind, its buses and the timing of its devices."""

    kind: BoardKind = BoardKind.SIM
    # GPIO: pins whose active level is LOW (opto-isolated relay boards, open-collector RCD outputs)
    active_low_pins: Annotated[tuple[int, ...], each(_GPIO)] = ()
    # GPIO the SPI bus and the PWM overlay own (dtoverlay=pwm-2chan: GPIO 18 and 19), never usable as pins
    reserved_pins: Annotated[tuple[int, ...], each(_GPIO)] = (18, 19)
    # a relay whose mirror contact disagrees this long is Relais (welded / stuck open); peers: Yeti 100 ms,
    # Tinkerforge 250 ms, OpenEVSE 1000 ms
    relay_feedback_timeout_s: Annotated[float, between(0.05, 2.0)] = 0.3
    lock_pulse_s: Annotated[float, between(0.05, 2.0)] = 0.3  # motor lock: how long the output is energised
    lock_confirm_s: Annotated[float, between(0.05, 5.0)] = 1.0  # then its feedback switch must confirm
    rcd_debounce_ms: Annotated[int, between(0, 100)] = 10  # the trip input's interrupt debounce
    rcd_self_test: bool = True  # test the RCD at every plug-in, where pins.rcd_test is wired
    rcd_test_pulse_ms: Annotated[int, between(10, 2000)] = 100  # the test output's pulse (Yeti: 100 ms)
    rcd_test_trip_ms: Annotated[int, between(10, 5000)] = 500  # the RCD must trip within this, from the pulse
    rcd_release_ms: Annotated[int, between(10, 5000)] = 1000  # ... and release within this after it
    # CP PWM (Linux sysfs); inverted when the +-12 V driver stage inverts its input
    pwm_root: Path = Path("/sys/class/pwm")
    pwm_inverted: bool = False
    # CP/PP ADC on SPI
    adc_chip: AdcChip = AdcChip.MCP3008
    spi_bus: Annotated[int, between(0, 6)] = 0
    spi_device: Annotated[int, between(0, 2)] = 0
    spi_speed_hz: Annotated[int, between(10_000, 3_600_000)] = 1_000_000
    adc_vref_v: Annotated[float, between(1.0, 5.5)] = 3.3
    adc_oversample: Annotated[int, one_of(1, 3, 5, 7)] = 3  # conversions per plateau (median)
    # kind = "sim": how often an EVSE without [evse.meter] reads the simulated board's meter
    sim_meter_poll_interval_s: Annotated[float, between(0.1, 60.0)] = 1.0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class PinSettings:
    """`[evse.pins]`: BCM GPIO numbers of one EVSE (the optional ones: not wired)."""

    relay: Annotated[int, _GPIO]  # contactor coil driver
    relay_feedback: Annotated[int | None, _GPIO] = None  # the contactor's mirror (auxiliary) contact
    led_red: Annotated[int | None, _GPIO] = None
    led_green: Annotated[int | None, _GPIO] = None
    led_blue: Annotated[int | None, _GPIO] = None
    lock: Annotated[int | None, _GPIO, needs_field("unlock", "a lock output needs unlock too")] = None
    unlock: Annotated[int | None, _GPIO, needs_field("lock", "an unlock output needs lock too")] = None
    lock_feedback: Annotated[int | None, _GPIO, needs_field("lock", "lock_feedback needs the lock outputs")] = None
    rcd_trip: Annotated[int | None, _GPIO] = None  # the RCD's trip output
    rcd_test: Annotated[int | None, _GPIO, needs_field("rcd_trip", "an RCD test output needs rcd_trip")] = None
    phase_switch: Annotated[int | None, _GPIO] = None  # the 1 <-> 3 phase contactor
    overtemperature: Annotated[int | None, _GPIO] = None  # a thermal switch at the socket

    def __post_init__(self) -> None:
        check_fields(self)
        if self.lock is not None and self.lock_feedback is None:
            raise InvalidField("lock", Invalid("lock outputs need lock_feedback too (a lock must be confirmed)"))

    def used(self) -> list[tuple[str, int]]:
        """(key, pin) of every wired pin, in declaration order."""
        names = ("relay", "relay_feedback", "led_red", "led_green", "led_blue", "lock", "unlock", "lock_feedback",
                 "rcd_trip", "rcd_test", "phase_switch", "overtemperature")
        return [(name, pin) for name in names if (pin := getattr(self, name)) is not None]


@dataclass(frozen=True, slots=True, kw_only=True)
class AdcSettings:
    """`[evse.adc]`: the ADC channels of CP (both plateaus, from peak detectors) and PP, and their
    calibration: pilot volts = ADC volts x cp_scale + cp_offset_v; PP ohms from a pull-up of
    pp_pullup_ohms to pp_supply_v, the PP voltage being ADC volts x pp_scale (README: calibration)."""

    cp_hi_channel: Annotated[int, _ADC_CHANNEL] = 0
    cp_lo_channel: Annotated[int, _ADC_CHANNEL] = 1
    pp_channel: Annotated[int | None, _ADC_CHANNEL] = 2  # none for a tethered cable
    cp_scale: Annotated[float, positive()] = 24.0 / 3.3  # a -12..+12 V front end onto 0..3.3 V
    cp_offset_v: Annotated[float, between(-20.0, 20.0)] = -12.0
    pp_pullup_ohms: Annotated[float, positive()] = 1000.0
    pp_supply_v: Annotated[float, between(1.0, 12.0)] = 3.3
    pp_scale: Annotated[float, positive()] = 1.0

    def __post_init__(self) -> None:
        check_fields(self)
        channels = [c for c in (self.cp_hi_channel, self.cp_lo_channel, self.pp_channel) if c is not None]
        if len(set(channels)) != len(channels):
            raise InvalidField("cp_lo_channel", Invalid(f"the CP and PP channels must differ, got {channels}"))


@dataclass(frozen=True, slots=True, kw_only=True)
class PwmSettings:
    """`[evse.pwm]`: the CP generator's hardware PWM, /sys/class/pwm/pwmchip{chip}/pwm{channel}."""

    chip: Annotated[int, between(0, 63)] = 0
    channel: Annotated[int, between(0, 15)] = 0

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class RfidSettings:
    """`[evse.rfid]`: a USB RFID reader that types the card's UID (hal/rfid.py)."""

    device: Path  # a stable path: /dev/input/by-id/usb-...-event-kbd
    uid_format: UidFormat = UidFormat.DECIMAL  # what the reader types; tokens are always the UID in hex
    uid_bytes: Annotated[int, one_of(4, 5, 7, 10)] = 4
    key_timeout_s: Annotated[float, between(0.01, 2.0)] = 0.2
    repeat_s: Annotated[float, between(0.0, 60.0)] = 2.0  # the same card again within this is one read

    def __post_init__(self) -> None:
        check_fields(self)


def _first_use(seen: dict[object, str], key: object, where: str, what: str) -> None:
    """Record `key` as used at `where` (a sub-path like "[1].pins.lock"), or raise if it was already."""
    if key in seen:
        raise Invalid(f"{what} is used twice", where, seen[key])
    seen[key] = where


def board_fits(value: object, owner: object) -> None:
    """A rule of `Config.evses`: every EVSE is described for the board's kind, and no GPIO, ADC channel,
    PWM channel or RFID device is used twice (`owner` is the Config, for its `[board]`)."""
    board: BoardSettings = getattr(owner, "board")  # noqa: B009 - a rule sees its owner as an object
    evses = tuple(value) if isinstance(value, tuple) else ()
    reserved = {*SPI_BUS_PINS.get(board.spi_bus, ()), *board.reserved_pins}
    pins: dict[object, str] = {}
    others: dict[object, str] = {}  # ADC channels, PWM channels and RFID devices, keyed by kind
    for i, evse in enumerate(evses):
        if board.kind is BoardKind.RPI:
            for table in ("pins", "adc", "pwm"):
                if getattr(evse, table) is None:
                    raise Invalid(f'[evse.{table}] is required with board.kind = "rpi"', f"[{i}].{table}")
        for name, pin in evse.pins.used() if evse.pins is not None else ():
            if pin in reserved:
                raise Invalid(f"GPIO {pin} belongs to SPI{board.spi_bus} or the PWM overlay (board.reserved_pins)",
                              f"[{i}].pins.{name}")
            _first_use(pins, pin, f"[{i}].pins.{name}", f"GPIO {pin}")
        for key, where, what in _devices(i, evse):
            _first_use(others, key, where, what)
    if board.kind is BoardKind.RPI:
        for pin in board.active_low_pins:
            if pin not in pins:
                raise Invalid(f"board.active_low_pins names GPIO {pin}, which no EVSE uses")


def _devices(i: int, evse: object) -> list[tuple[object, str, str]]:
    """(key, sub-path, name) of every ADC channel, PWM channel and RFID reader of the `i`th EVSE."""
    found: list[tuple[object, str, str]] = []
    adc: AdcSettings | None = getattr(evse, "adc", None)
    if adc is not None:
        for name in ("cp_hi_channel", "cp_lo_channel", "pp_channel"):
            if (channel := getattr(adc, name)) is not None:
                found.append((("adc", channel), f"[{i}].adc.{name}", f"ADC channel {channel}"))
    pwm: PwmSettings | None = getattr(evse, "pwm", None)
    if pwm is not None:
        found.append((("pwm", pwm.chip, pwm.channel), f"[{i}].pwm.channel",
                      f"PWM chip {pwm.chip} channel {pwm.channel}"))
    rfid: RfidSettings | None = getattr(evse, "rfid", None)
    if rfid is not None:
        found.append((("rfid", rfid.device), f"[{i}].rfid.device", f"RFID reader {rfid.device}"))
    return found


def meters_fit(value: object, owner: object) -> None:
    """A rule of `Config.evses`: meters that share an RS-485 bus (one serial device) agree on its
    settings and have different device ids; no two EVSEs read the same meter (same address and id)."""
    buses: dict[str | None, tuple[str, str]] = {}  # device -> (settings, where first seen)
    seen: dict[object, str] = {}
    for i, evse in enumerate(tuple(value) if isinstance(value, tuple) else ()):
        meter = evse.meter
        if meter is None:
            continue
        url = meter.url
        where = f"[{i}].meter"
        if url.scheme == "rtu":
            settings = f"baud={url.baud}&parity={url.parity}&stopbits={url.stopbits}"
            first = buses.setdefault(url.device, (settings, where))
            if first[0] != settings:
                raise Invalid(f"RS-485 bus {url.device} is set to {settings} here but {first[0]}", f"{where}.url",
                              f"{first[1]}.url")
            key = (url.device, meter.device_id)
        else:
            key = (f"{url.host}:{url.port}", meter.device_id)
        _first_use(seen, key, f"{where}.device_id", f"meter {key[0]} device_id {meter.device_id}")
