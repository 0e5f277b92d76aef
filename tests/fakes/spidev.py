"""A fake of the `spidev` module (py-spidev 3.x) with Microchip MCP3008 / MCP3208 ADCs behind it.

Tests put `tests/fakes` first on sys.path, so `import spidev` finds this module, and register a chip per
(bus, device): `spidev.FAKE_BUSES[(0, 0)] = spidev.FakeMcp(chip="MCP3008", vref_v=3.3)`, then
`fake.set_volts(channel, volts)` or `fake.volts_of = lambda channel: ...` (a physics model).

`SpiDev` follows py-spidev's C module (spidev_module.c, 3.8): `SpiDev([bus, device])`, `open(bus,
device)` (an unregistered device raises `FileNotFoundError(2, 'No such file or directory')` like
open(2) of a missing /dev/spidevB.D), `close()`, `xfer2(values[, speed_hz, delay_usecs,
bits_per_word])` and `xfer(...)` (one spi_ioc_transfer each in the default build: CS is held for the
whole list), `readbytes(n)`, `writebytes(values)`, `fileno()`; the attributes `mode` (0..3, else
TypeError), `max_speed_hz`, `bits_per_word`, `lsbfirst`, `cshigh`, `threewire`, `loop`, `no_cs`.
Like the C code, `xfer`/`xfer2` write the received bytes INTO the list passed (and return it; a tuple
gives a new tuple), truncate values to 8 bits, refuse an empty list or a non-int with TypeError, and
fail with `OSError(9, 'Bad file descriptor')` when not open (as do attribute changes, which are ioctls).

`FakeMcp` answers bit by bit as the chip does (DS21295 MCP3004/3008 and DS21298 MCP3204/3208, section
5 "Serial communication" and Figures 5-1 / 6-1): with CS low it ignores DIN until the first 1 (the start
bit), then clocks in SGL/DIFF, D2, D1, D0. DOUT is undefined (Hi-Z) until then and during the sample
period; the chip drives the null bit (0) on the 6th clock after the start bit, then the result MSB
first, then (if the clocks go on) LSB first, then zeros. The undefined bits read as 1 (a pulled-up or
floating MISO), or as random bits with `seed=`. Code = floor(2**n * (V(IN+) - V(IN-)) / Vref), clamped
to 0..2**n - 1, with IN- = 0 V single-ended and the pair's other channel in pseudo-differential mode
(Table 5-2: D0 selects which of CH2k/CH2k+1 is IN+). SPI modes 1 and 2 and clocks above
`max_clock_hz` make DOUT meaningless, so they read as undefined bits too.

Faults and measurements: `fake.fail = OSError(5, "Input/output error")` makes every transfer raise it;
`fake.open_error` makes open() raise; `fake.transfers` counts transfers, `fake.last_tx` keeps the last.
This module contains no logic of the project: only the library's and the chip's behaviour.
"""

from __future__ import annotations

import errno
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from typing import Final, Literal

Chip = Literal["MCP3008", "MCP3208"]

#: Resolution per chip (bits).
BITS: Final[dict[str, int]] = {"MCP3008": 10, "MCP3208": 12}
#: Maximum clock at VDD = 2.7 V (DS21295 / DS21298, electrical characteristics): a safe default limit.
MAX_CLOCK_2V7_HZ: Final[dict[str, int]] = {"MCP3008": 1_350_000, "MCP3208": 1_000_000}
#: py-spidev's SPIDEV_MAXPATH: the longest list one transfer takes.
MAX_TRANSFER: Final = 4096
#: The clock the spidev driver reports after open when nobody set one (the Raspberry Pi's default).
DRIVER_DEFAULT_SPEED_HZ: Final = 125_000_000
#: Clocks from the start bit to the null bit (start at s, SGL s+1, D2..D0 s+2..s+4, null at s+6).
NULL_BIT_AFTER_START: Final = 6

_SPI_CPHA, _SPI_CPOL, _SPI_CS_HIGH, _SPI_LSB_FIRST, _SPI_3WIRE, _SPI_LOOP, _SPI_NO_CS = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40,
)


class FakeMcp:
    """An MCP3008 (10 bit) or MCP3208 (12 bit) on one chip select (module docstring)."""

    def __init__(self, *, chip: Chip = "MCP3008", vref_v: float = 3.3, seed: int | None = None) -> None:
        if chip not in BITS:
            raise ValueError(f"unknown chip {chip!r}")
        self.chip: Chip = chip
        self.bits = BITS[chip]
        self.vref_v = vref_v
        self.volts: dict[int, float] = dict.fromkeys(range(8), 0.0)
        #: When set, the voltage of a channel comes from here instead of `volts`.
        self.volts_of: Callable[[int], float] | None = None
        self.fail: OSError | None = None
        self.open_error: OSError | None = None
        self.max_clock_hz = MAX_CLOCK_2V7_HZ[chip]
        self.transfers = 0
        self.last_tx: bytes = b""
        self.last_speed_hz = 0
        self._rng = random.Random(seed) if seed is not None else None

    def set_volts(self, channel: int, volts: float) -> None:
        if not 0 <= channel < 8:
            raise ValueError(f"channel {channel} is not 0..7")
        self.volts[channel] = volts

    def _vin(self, channel: int) -> float:
        v = self.volts_of(channel) if self.volts_of is not None else self.volts[channel]
        return min(max(v, 0.0), self.vref_v)

    def code(self, sgl: int, d: int) -> int:
        """The conversion result for the configuration bits SGL/DIFF and D2..D0."""
        if sgl:
            v = self._vin(d)
        else:  # pseudo-differential: IN+ is channel d, IN- the other channel of its pair
            v = self._vin(d) - self._vin(d ^ 1)
        top = (1 << self.bits) - 1
        return min(top, max(0, math.floor((1 << self.bits) * v / self.vref_v)))

    def _undefined(self) -> int:
        return self._rng.getrandbits(1) if self._rng is not None else 1

    def _dout(self, din: Iterator[int]) -> Iterator[int]:
        """DOUT for each clock, given DIN bit by bit (one CS-low period)."""
        for bit in din:  # before the start bit: Hi-Z
            yield self._undefined()
            if bit:
                break
        else:
            return
        config = 0
        for _ in range(4):  # SGL/DIFF, D2, D1, D0: DOUT still Hi-Z
            config_bit = next(din, None)
            if config_bit is None:
                return
            config = config << 1 | config_bit
            yield self._undefined()
        code = self.code(config >> 3, config & 0x07)
        if next(din, None) is None:  # the sample period's last clock, still Hi-Z
            return
        yield self._undefined()
        msb_first = [code >> i & 1 for i in range(self.bits - 1, -1, -1)]
        for out in [0, *msb_first, *msb_first[-2::-1]]:  # null bit, MSB first, then LSB first (B0 once)
            if next(din, None) is None:
                return
            yield out
        for _ in din:
            yield 0

    def transfer(self, tx: bytes, *, mode: int, lsb_first: bool, speed_hz: int) -> bytes:
        """One transfer with CS held low: tx bytes out, the bytes read back."""
        self.transfers += 1
        self.last_tx = tx
        self.last_speed_hz = speed_hz
        order = range(8) if lsb_first else range(7, -1, -1)
        din = [byte >> i & 1 for byte in tx for i in order]
        if mode in (0, 3) and speed_hz <= self.max_clock_hz:
            dout = list(self._dout(iter(din)))
        else:  # sampled on the wrong edge or clocked too fast: nothing meaningful
            dout = []
        dout += [self._undefined() for _ in range(len(din) - len(dout))]
        rx = bytearray()
        for k in range(len(tx)):
            bits = dout[8 * k : 8 * k + 8]
            if lsb_first:
                bits.reverse()
            rx.append(int("".join(map(str, bits)), 2))
        return bytes(rx)


#: The chips on each (bus, device), i.e. which /dev/spidevB.D exist.
FAKE_BUSES: dict[tuple[int, int], FakeMcp] = {}


def _ebadf() -> OSError:
    return OSError(errno.EBADF, os.strerror(errno.EBADF))


class SpiDev:
    """py-spidev's SpiDev (module docstring)."""

    def __init__(self, bus: int = -1, client: int = -1) -> None:
        self._dev: FakeMcp | None = None
        self._mode_bits = 0
        self._bits_per_word = 0
        self._max_speed_hz = 0
        self.read0 = False
        if bus >= 0:
            self.open(bus, client)

    # --- open / close -----------------------------------------------------------------------------

    def open(self, bus: int, device: int) -> None:
        dev = FAKE_BUSES.get((bus, device))
        if dev is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
        if dev.open_error is not None:
            raise dev.open_error
        self._dev = dev
        self._mode_bits = 0
        self._bits_per_word = 8
        self._max_speed_hz = DRIVER_DEFAULT_SPEED_HZ

    def close(self) -> None:
        self._dev = None
        self._mode_bits = 0
        self._bits_per_word = 0
        self._max_speed_hz = 0

    def fileno(self) -> int:
        return -1 if self._dev is None else 3

    def _need_open(self) -> FakeMcp:
        if self._dev is None:
            raise _ebadf()
        return self._dev

    # --- attributes (each change is an ioctl on the open device) ------------------------------

    def _set_mode_bits(self, value: int) -> None:
        self._need_open()
        self._mode_bits = value

    def _flag(self, flag: int, name: str, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"The {name} attribute must be boolean")
        self._set_mode_bits(self._mode_bits | flag if value else self._mode_bits & ~flag)

    @property
    def mode(self) -> int:
        return self._mode_bits & (_SPI_CPHA | _SPI_CPOL)

    @mode.setter
    def mode(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("The mode attribute must be an integer")
        if not 0 <= value <= 3:
            raise TypeError("The mode attribute must be an integerbetween 0 and 3.")
        self._set_mode_bits((self._mode_bits & ~(_SPI_CPHA | _SPI_CPOL)) | value)

    @property
    def lsbfirst(self) -> bool:
        return bool(self._mode_bits & _SPI_LSB_FIRST)

    @lsbfirst.setter
    def lsbfirst(self, value: bool) -> None:
        self._flag(_SPI_LSB_FIRST, "lsbfirst", value)

    @property
    def cshigh(self) -> bool:
        return bool(self._mode_bits & _SPI_CS_HIGH)

    @cshigh.setter
    def cshigh(self, value: bool) -> None:
        self._flag(_SPI_CS_HIGH, "cshigh", value)

    @property
    def threewire(self) -> bool:
        return bool(self._mode_bits & _SPI_3WIRE)

    @threewire.setter
    def threewire(self, value: bool) -> None:
        self._flag(_SPI_3WIRE, "3wire", value)

    @property
    def loop(self) -> bool:
        return bool(self._mode_bits & _SPI_LOOP)

    @loop.setter
    def loop(self, value: bool) -> None:
        self._flag(_SPI_LOOP, "loop", value)

    @property
    def no_cs(self) -> bool:
        return bool(self._mode_bits & _SPI_NO_CS)

    @no_cs.setter
    def no_cs(self, value: bool) -> None:
        self._flag(_SPI_NO_CS, "no_cs", value)

    @property
    def bits_per_word(self) -> int:
        return self._bits_per_word

    @bits_per_word.setter
    def bits_per_word(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("The bits_per_word attribute must be an integer")
        if not 8 <= value <= 32:
            raise TypeError("invalid bits_per_word (8 to 32)")
        if value != self._bits_per_word:
            self._need_open()
            self._bits_per_word = value

    @property
    def max_speed_hz(self) -> int:
        return self._max_speed_hz

    @max_speed_hz.setter
    def max_speed_hz(self, value: int) -> None:
        if not isinstance(value, int):
            raise TypeError("The max_speed_hz attribute must be an integer")
        if value != self._max_speed_hz:
            self._need_open()
            self._max_speed_hz = value

    # --- transfers --------------------------------------------------------------------------------

    def _transfer(self, values: Sequence[int], speed_hz: int, bits_per_word: int) -> bytes:
        if len(values) == 0:
            raise TypeError("Empty argument list.")
        if len(values) > MAX_TRANSFER:
            raise OverflowError(f"Argument list size exceeds {MAX_TRANSFER} bytes.")
        for v in values:
            if not isinstance(v, int):
                raise TypeError(f"Non-Int/Long value in arguments: {id(v):x}.")
        dev = self._need_open()
        if (bits_per_word or self._bits_per_word) != 8:
            raise NotImplementedError("the fake spidev models 8-bit words only")
        if self.no_cs or self.cshigh or self.threewire or self.loop:
            raise NotImplementedError("the fake spidev models a plain 4-wire bus with CS active low")
        if dev.fail is not None:
            raise dev.fail
        return dev.transfer(
            bytes(v & 0xFF for v in values),
            mode=self.mode,
            lsb_first=self.lsbfirst,
            speed_hz=speed_hz or self._max_speed_hz,
        )

    def xfer2(
        self, values: Sequence[int], speed_hz: int = 0, delay_usecs: int = 0, bits_per_word: int = 0
    ) -> list[int] | tuple[int, ...]:
        rx = self._transfer(values, speed_hz, bits_per_word)
        if isinstance(values, tuple):
            return tuple(rx)
        if isinstance(values, list):
            values[:] = list(rx)  # py-spidev writes the reply into the caller's list
            return values
        return list(rx)

    def xfer(
        self, values: Sequence[int], speed_hz: int = 0, delay_usecs: int = 0, bits_per_word: int = 0
    ) -> list[int] | tuple[int, ...]:
        return self.xfer2(values, speed_hz, delay_usecs, bits_per_word)

    def readbytes(self, length: int) -> list[int]:
        return list(self._transfer([0] * max(1, min(length, MAX_TRANSFER)), 0, 0))

    def writebytes(self, values: Sequence[int]) -> None:
        self._transfer(list(values), 0, 0)
