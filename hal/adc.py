"""CP and PP voltages through a Microchip MCP3008 (10 bit) or MCP3208 (12 bit) ADC on spidev.

What it is for: the reading half of `hal.protocols.Pilot` on real hardware. `Mcp3x08` converts one
channel of the ADC; `AdcPilotInputs` turns conversions into `read_cp(cid) -> PilotSample` (the two CP
plateaus in pilot volts) and `read_pp(cid) -> float | None` (the cable's coding resistor in ohms, None
when open) for every EVSE, through the calibration of its analogue front end.

Assumption about the front end: the CP conditioning circuit presents the POSITIVE and NEGATIVE PEAK
levels of the pilot (peak detectors or sample-and-holds) on two ADC channels, scaled into 0..Vref.
One conversion per plateau is then valid whatever the phase of the 1 kHz PWM, and sampling needs no
synchronisation with the PWM edges. Each plateau is the MEDIAN of `oversample` conversions (3 by
default), which rejects a single-sample spike. With the PWM off both peaks equal the constant level.

What it must never do:

* return a made-up value: a missing device, a failed transfer or a reply without the chip's null
  bit raises `HardwareError` naming the device (/dev/spidevB.D), with the cause chained;
* import spidev at module import: it is imported by `Mcp3x08.open()`, and its absence is a one-line
  HardwareError;
* decide anything: the volts and ohms go to `firmware.core.pilot`, which classifies them.

Blocking: each conversion is one 3-byte `xfer2`, 24 clocks at 1 MHz (~25 us) plus one ioctl. SPI is
master-clocked, so a slave cannot stall it: the call is short and bounded and is made on the event loop
(a read_cp + read_pp with oversample 3 is 9 transfers, well under a millisecond).

Standard: Microchip DS21295 (MCP3004/3008) and DS21298 (MCP3204/3208), section 6.1 "Using the MCP3004/
3008 [MCP3204/3208] with microcontroller SPI ports", Figure 6-1 (3-byte transfers, SPI mode 0,0):

* MCP3008: tx [0x01, SGL<<7 | D2 D1 D0 << 4, 0x00] (start bit alone in byte 0); rx byte 1 is
  ? ? ? ? ? 0 B9 B8 (bit 2 the null bit), rx byte 2 is B7..B0: code = (rx[1] & 0x03) << 8 | rx[2].
* MCP3208: tx [0x04 | SGL<<1 | D2, D1 D0 << 6, 0x00] = [0x06 | ch >> 2, (ch & 3) << 6, 0] single-ended;
  rx byte 1 is ? ? ? 0 B11 B10 B9 B8 (bit 4 the null bit): code = (rx[1] & 0x0F) << 8 | rx[2].

Transfer function (section 4 / 5): code = 2**n * Vin / Vref, so Vin = code * Vref / 1024 (4096).
Clock: at most 1.35 MHz (MCP3008) / 1 MHz (MCP3208) at VDD = 2.7 V, 3.6 MHz / 2 MHz at 5 V; the
default 1 MHz suits both at any supply. Below ~10 kHz the sample capacitor droops (the datasheets'
minimum clock note), so slower clocks are refused. PP: IEC 61851-1:2017 Annex B, Table B.2.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol, Self

from firmware.core.errors import HardwareError
from hal.protocols import PilotSample

__all__ = [
    "DEFAULT_CP_CALIBRATION",
    "DEFAULT_PP_CALIBRATION",
    "PP_OPEN_FRACTION",
    "AdcPilotInputs",
    "CpCalibration",
    "Mcp3x08",
    "PilotChannels",
    "PpCalibration",
    "command",
    "decode",
]

log = logging.getLogger(__name__)

Chip = Literal["MCP3008", "MCP3208"]

#: Resolution of each chip in bits.
BITS: Final[dict[str, int]] = {"MCP3008": 10, "MCP3208": 12}
#: Highest clock at VDD = 5 V (DS21295 / DS21298 electrical characteristics); at 2.7 V it is
#: 1.35 MHz / 1 MHz. A slower clock is always allowed; a faster one is refused.
MAX_SPEED_5V_HZ: Final[dict[str, int]] = {"MCP3008": 3_600_000, "MCP3208": 2_000_000}
MIN_SPEED_HZ: Final = 10_000
#: Single-ended inputs CH0..CH7.
CHANNELS: Final = range(8)
SPI_MODE: Final = 0
TRANSFER_BYTES: Final = 3
#: The PP is "open" (no cable, or a cable without coding resistor) when the line is within 2 % of the
#: pull-up's supply. With the default 1 kOhm pull-up that is Rc >= 49 kOhm, 20 times the top of IEC
#: 61851-1 Table B.2's widest interpretation range (2460 Ohm, the 1.5 kOhm / 13 A cable), which reads
#: 2.35 V of 3.3 V: no valid cable is near the threshold. Above it, a 10-bit ADC no longer resolves
#: the resistance (one LSB near full scale spans several kOhm) and a slightly low supply or the
#: ADC's gain error would turn "open" into a large finite reading. Between 2460 Ohm and the threshold
#: the finite value returned is out of every range, which firmware.core.pilot.pp_ampacity_a rejects.
PP_OPEN_FRACTION: Final = 0.98


class _SpiDev(Protocol):
    """The part of py-spidev's SpiDev used here."""

    max_speed_hz: int
    mode: int

    def open(self, bus: int, device: int) -> None: ...

    def close(self) -> None: ...

    def xfer2(self, values: list[int]) -> list[int]: ...


def command(chip: Chip, channel: int) -> list[int]:
    """The 3 bytes that start a single-ended conversion of `channel` (DS21295/DS21298 Figure 6-1).

    A new list each time: py-spidev's xfer2 writes the reply into the list it is given."""
    if isinstance(channel, bool) or not isinstance(channel, int) or channel not in CHANNELS:
        raise ValueError(f"ADC channel must be 0..7, got {channel!r}")
    if chip == "MCP3008":
        return [0x01, 0x80 | channel << 4, 0x00]
    return [0x06 | channel >> 2, (channel & 0x03) << 6, 0x00]


def decode(chip: Chip, rx: list[int]) -> int | None:
    """The code in a 3-byte reply, or None when the null bit is not 0 (no conversion was clocked out:
    MISO floating or stuck high, chip absent or unpowered). The bits before the null bit are undefined
    (Hi-Z) and are masked off."""
    if chip == "MCP3008":
        null_bit, mask = 0x04, 0x03
    else:
        null_bit, mask = 0x10, 0x0F
    if rx[1] & null_bit:
        return None
    return (rx[1] & mask) << 8 | rx[2]


class Mcp3x08:
    """An MCP3008 or MCP3208 on /dev/spidev{bus}.{device}: `open()`, `read_raw`, `read_volts`, `close()`."""

    def __init__(
        self,
        *,
        bus: int = 0,
        device: int = 0,
        chip: Chip = "MCP3008",
        vref_v: float = 3.3,
        speed_hz: int = 1_000_000,
    ) -> None:
        if chip not in BITS:
            raise ValueError(f"chip must be MCP3008 or MCP3208, got {chip!r}")
        for name, value in (("bus", bus), ("device", device)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if not (math.isfinite(vref_v) and vref_v > 0):
            raise ValueError(f"vref_v must be > 0, got {vref_v!r}")
        if isinstance(speed_hz, bool) or not isinstance(speed_hz, int) or not (
            MIN_SPEED_HZ <= speed_hz <= MAX_SPEED_5V_HZ[chip]
        ):
            raise ValueError(
                f"speed_hz for the {chip} must be {MIN_SPEED_HZ}..{MAX_SPEED_5V_HZ[chip]}, got {speed_hz!r}"
            )
        self.bus = bus
        self.device = device
        self.chip: Final[Chip] = chip
        self.vref_v = vref_v
        self.speed_hz = speed_hz
        #: 1024 or 4096: code = full_scale * Vin / Vref.
        self.full_scale: Final = 1 << BITS[chip]
        self._spi: _SpiDev | None = None

    @property
    def path(self) -> str:
        return f"/dev/spidev{self.bus}.{self.device}"

    @property
    def lsb_v(self) -> float:
        return self.vref_v / self.full_scale

    def open(self) -> None:
        """Open the device, SPI mode 0, `speed_hz`. HardwareError when spidev or the device is missing."""
        if self._spi is not None:
            return
        try:
            spidev = importlib.import_module("spidev")
        except ImportError as exc:
            raise HardwareError(
                "spidev is not installed: pip install 'charger-firmware[rpi]' (or pip install spidev)"
            ) from exc
        spi: _SpiDev = spidev.SpiDev()
        try:
            spi.open(self.bus, self.device)
        except FileNotFoundError as exc:
            raise HardwareError(
                f"ADC: {self.path} not found: enable SPI (dtparam=spi=on in /boot/firmware/config.txt)"
            ) from exc
        except PermissionError as exc:
            raise HardwareError(f"ADC: {self.path}: {exc.strerror} (is the user in the spi group?)") from exc
        except OSError as exc:
            raise HardwareError(f"ADC: {self.path}: {exc.strerror}") from exc
        try:
            spi.max_speed_hz = self.speed_hz
            spi.mode = SPI_MODE
        except OSError as exc:
            spi.close()
            raise HardwareError(
                f"ADC: {self.path}: cannot set SPI mode {SPI_MODE} at {self.speed_hz} Hz: {exc.strerror}"
            ) from exc
        self._spi = spi
        log.info(
            "ADC %s on %s: mode %d, %d Hz, Vref %.3f V", self.chip, self.path, SPI_MODE, self.speed_hz, self.vref_v
        )

    def close(self) -> None:
        spi, self._spi = self._spi, None
        if spi is not None:
            try:
                spi.close()
            except OSError as exc:
                raise HardwareError(f"ADC: {self.path}: close: {exc.strerror}") from exc

    def read_raw(self, channel: int) -> int:
        """One single-ended conversion of `channel` (0..7): the code, 0..1023 (0..4095)."""
        tx = command(self.chip, channel)
        spi = self._spi
        if spi is None:
            raise RuntimeError(f"ADC {self.path} is not open")
        try:
            rx = spi.xfer2(tx)
        except OSError as exc:
            raise HardwareError(f"ADC {self.chip} on {self.path}: channel {channel}: {exc.strerror}") from exc
        if log.isEnabledFor(logging.DEBUG):
            log.debug("ADC %s ch%d tx %s rx %s", self.path, channel, bytes(command(self.chip, channel)).hex(),
                      bytes(rx).hex())
        if len(rx) != TRANSFER_BYTES:
            raise HardwareError(f"ADC {self.chip} on {self.path}: channel {channel}: {len(rx)} bytes back, not 3")
        code = decode(self.chip, rx)
        if code is None:
            raise HardwareError(
                f"ADC {self.chip} on {self.path}: channel {channel}: no null bit in the reply {bytes(rx).hex()} "
                "(MISO floating or stuck high? chip powered?)"
            )
        return code

    def read_volts(self, channel: int) -> float:
        """One conversion in volts at the ADC pin: code * Vref / 1024 (4096)."""
        return self.read_raw(channel) * self.vref_v / self.full_scale


# --- calibration of the front ends ------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CpCalibration:
    """pilot_volts = adc_volts * scale + offset_v. The usual front end maps -12..+12 V onto 0..3.3 V:
    scale = 24 / 3.3, offset_v = -12 (`DEFAULT_CP_CALIBRATION`)."""

    scale: float
    offset_v: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scale) and self.scale != 0):
            raise ValueError(f"CpCalibration.scale must be finite and non-zero, got {self.scale!r}")
        if not math.isfinite(self.offset_v):
            raise ValueError(f"CpCalibration.offset_v must be finite, got {self.offset_v!r}")

    def pilot_volts(self, adc_volts: float) -> float:
        return adc_volts * self.scale + self.offset_v


@dataclass(frozen=True, slots=True, kw_only=True)
class PpCalibration:
    """The PP line is pulled up through `pullup_ohms` to `supply_v`, the cable's coding resistor Rc goes
    to PE, and the ADC sees the PP voltage times 1 / `scale` (a divider): v_pp = adc_volts * scale,
    Rc = pullup_ohms * v_pp / (supply_v - v_pp); open (None) from `PP_OPEN_FRACTION` of the supply."""

    pullup_ohms: float
    supply_v: float
    scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("pullup_ohms", "supply_v", "scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"PpCalibration.{name} must be > 0, got {value!r}")

    def ohms(self, adc_volts: float) -> float | None:
        """Rc in ohms, 0.0 for a short to PE, None when open."""
        v_pp = adc_volts * self.scale
        if v_pp >= PP_OPEN_FRACTION * self.supply_v:
            return None
        if v_pp <= 0.0:
            return 0.0
        return self.pullup_ohms * v_pp / (self.supply_v - v_pp)


DEFAULT_CP_CALIBRATION: Final = CpCalibration(scale=24.0 / 3.3, offset_v=-12.0)
#: A 1 kOhm pull-up to 3.3 V straight into the ADC: 100 Ohm -> 0.30 V, 220 -> 0.60 V, 680 -> 1.34 V,
#: 1500 -> 1.98 V, 2460 -> 2.35 V, open -> 3.3 V.
DEFAULT_PP_CALIBRATION: Final = PpCalibration(pullup_ohms=1000.0, supply_v=3.3)


def _check_channel(name: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value not in CHANNELS:
        raise ValueError(f"PilotChannels.{name} must be an ADC channel 0..7, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PilotChannels:
    """The ADC channels of one EVSE: the CP's positive and negative peak, the PP (None: tethered cable,
    no PP to read), and their calibrations (`pp_cal` is required with `pp`, and only then)."""

    cp_hi: int
    cp_lo: int
    pp: int | None = None
    cp: CpCalibration = DEFAULT_CP_CALIBRATION
    pp_cal: PpCalibration | None = None

    def __post_init__(self) -> None:
        _check_channel("cp_hi", self.cp_hi)
        _check_channel("cp_lo", self.cp_lo)
        _check_channel("pp", self.pp)
        if len(set(self.used())) != len(self.used()):
            raise ValueError(f"PilotChannels: the channels must differ, got {self.used()}")
        if (self.pp is None) != (self.pp_cal is None):
            raise ValueError("PilotChannels: pp and pp_cal go together (both set, or both None for a tethered cable)")

    def used(self) -> list[int]:
        return [c for c in (self.cp_hi, self.cp_lo, self.pp) if c is not None]


class AdcPilotInputs:
    """`read_cp` and `read_pp` of `hal.protocols.Pilot` for several EVSEs on one ADC (module docstring).

    `async with AdcPilotInputs(Mcp3x08(), {1: PilotChannels(cp_hi=0, cp_lo=1, pp=2, pp_cal=...)}) as a:`
    opens the ADC; leaving closes it.
    """

    def __init__(self, adc: Mcp3x08, channels: Mapping[int, PilotChannels], *, oversample: int = 3) -> None:
        if not channels:
            raise ValueError("AdcPilotInputs needs at least one EVSE")
        owner: dict[int, int] = {}
        for cid, pc in channels.items():
            for ch in pc.used():
                if ch in owner:
                    raise ValueError(f"ADC channel {ch} is used by c{owner[ch]} and c{cid}")
                owner[ch] = cid
        if isinstance(oversample, bool) or not isinstance(oversample, int) or oversample < 1 or oversample % 2 == 0:
            raise ValueError(f"oversample must be an odd integer >= 1 (the median is one sample), got {oversample!r}")
        self.adc = adc
        self._channels: dict[int, PilotChannels] = dict(channels)
        self.oversample = oversample

    async def __aenter__(self) -> Self:
        self.adc.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.adc.close()

    def _evse(self, cid: int) -> PilotChannels:
        try:
            return self._channels[cid]
        except KeyError:
            raise ValueError(f"no ADC channels configured for c{cid} (have {sorted(self._channels)})") from None

    def _median_volts(self, channel: int) -> float:
        codes = sorted(self.adc.read_raw(channel) for _ in range(self.oversample))
        return codes[len(codes) // 2] * self.adc.lsb_v

    async def read_cp(self, cid: int) -> PilotSample:
        """The CP's high and low plateau in pilot volts. HardwareError if the ADC fails."""
        pc = self._evse(cid)
        adc_hi, adc_lo = self._median_volts(pc.cp_hi), self._median_volts(pc.cp_lo)
        sample = PilotSample(volts_hi=pc.cp.pilot_volts(adc_hi), volts_lo=pc.cp.pilot_volts(adc_lo))
        if log.isEnabledFor(logging.DEBUG):  # 100 times a second: only formatted when asked for (calibration)
            log.debug("c%d CP ADC %.3f / %.3f V -> pilot %+.2f / %+.2f V", cid, adc_hi, adc_lo, sample.volts_hi,
                      sample.volts_lo)
        return sample

    async def read_pp(self, cid: int) -> float | None:
        """Rc in ohms; None when the PP is open or the EVSE has no PP input (tethered cable)."""
        pc = self._evse(cid)
        if pc.pp is None or pc.pp_cal is None:
            return None
        return pc.pp_cal.ohms(self._median_volts(pc.pp))
