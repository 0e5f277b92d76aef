"""Register words to meter values and back: pure functions over a meter's register map.

What it is for: turning the 16-bit words a meter answers into numbers and a
`MeterSample`. `plan_reads` groups a map's registers into as few contiguous requests as
the meter allows (`ReadBlock`s), `decode_block` cuts one response into its registers,
`decode_register` applies the data type (IEEE-754 float32, int16/32, uint16/32/64), the
word order (high word first or low word first; bytes inside a word are always
big-endian) and the scale, and `sample_from` builds the sample in SI units (V, A, W, Hz,
Wh) with power normalised to import positive. `encode_register` is the inverse, for
simulators and tests.

What it must never do:

* perform I/O, read a clock, log, or import pymodbus (only `hal/meter_modbus.py` does,
  STYLE.md B4): everything here is a pure function of its arguments;
* return a made-up value: a wrong number of words, a word outside 0..0xFFFF, NaN or
  infinity, a meter's "not available" pattern (`NOT_AVAILABLE`), a negative energy
  counter or a missing required quantity raises ValueError naming the quantity; the
  caller turns it into HardwareError. Only a quantity the model does not have at all is
  0.0 ("not measured").

Standard: Modbus Application Protocol Specification V1.1b3 (registers are big-endian
16-bit words; at most 125 registers per FC03/FC04 request) and IEEE 754-2008 binary32
for float32. Word orders, scales, sign conventions and not-available patterns follow
/work/shared/METERS.md §6 ("Verified decoding with pymodbus" gives the test vectors;
§6.4 the ABB all-0xFF pattern; §6.7 "normalise to import positive in one place"). The
byte layout is that of pymodbus' `convert_from_registers`/`convert_to_registers`, which
tests/hal/test_meter_maps.py checks against.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Final

from hal.meter_maps import (
    ENERGY,
    MODBUS_MAX_COUNT,
    REQUIRED,
    MeterModel,
    Register,
    WordOrder,
    overlaps,
)
from hal.protocols import MeterSample

__all__ = [
    "NOT_AVAILABLE",
    "WH_PER_KWH",
    "ReadBlock",
    "decode_block",
    "decode_register",
    "encode_register",
    "plan_reads",
    "sample_from",
]

WH_PER_KWH: Final = 1000
#: Raw integers that mean "not available" rather than a reading: all-ones for unsigned
#: types and the largest positive value for signed ones (ABB EQ meters, METERS.md §6.4;
#: mbmd maps them to NaN). No meter reports these as real values (655.35 Hz, 214 MW,
#: 429 MV...), so they are refused for every model.
NOT_AVAILABLE: Final[dict[str, int]] = {
    "uint16": 0xFFFF,
    "uint32": 0xFFFF_FFFF,
    "uint64": 0xFFFF_FFFF_FFFF_FFFF,
    "int16": 0x7FFF,
    "int32": 0x7FFF_FFFF,
}
#: `struct` format of each data type, big-endian as the bytes of a Modbus word.
_STRUCT: Final[dict[str, struct.Struct]] = {
    "float32": struct.Struct(">f"),
    "int32": struct.Struct(">i"),
    "uint32": struct.Struct(">I"),
    "uint64": struct.Struct(">Q"),
    "int16": struct.Struct(">h"),
    "uint16": struct.Struct(">H"),
}


# --------------------------------------------------------------------------------------
# Batching


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadBlock:
    """One request: `count` registers from `address` with function code `fc`, holding
    `registers`."""

    fc: int
    address: int
    count: int
    registers: tuple[Register, ...]


def plan_reads(
    registers: Iterable[Register], max_count: int = 60, max_gap: int = 20
) -> tuple[ReadBlock, ...]:
    """Merge registers into as few contiguous requests as possible, per function code.

    Two neighbours share a request when at most `max_gap` unused registers lie between
    them and the request stays within `max_count` registers. Blocks come out ordered by
    (fc, address). Raises ValueError for overlapping registers or a `max_count` outside
    1..125.
    """
    if not 1 <= max_count <= MODBUS_MAX_COUNT:
        raise ValueError(f"max_count {max_count} not in 1..{MODBUS_MAX_COUNT}")
    if max_gap < 0:
        raise ValueError(f"max_gap {max_gap} is negative")
    ordered = sorted(registers, key=lambda r: (r.fc, r.address))
    overlaps(ordered)
    blocks: list[ReadBlock] = []
    members: list[Register] = []
    for reg in ordered:
        if members:
            first, end = members[0], max(r.end for r in members)
            if (
                reg.fc == first.fc
                and reg.address - end <= max_gap
                and reg.end - first.address <= max_count
            ):
                members.append(reg)
                continue
            blocks.append(_block(members))
        if reg.count > max_count:
            raise ValueError(
                f"{reg.quantity} needs {reg.count} registers,"
                f" more than max_count {max_count}"
            )
        members = [reg]
    if members:
        blocks.append(_block(members))
    return tuple(blocks)


def _block(members: list[Register]) -> ReadBlock:
    start = members[0].address
    return ReadBlock(
        fc=members[0].fc,
        address=start,
        count=max(r.end for r in members) - start,
        registers=tuple(members),
    )


# --------------------------------------------------------------------------------------
# One register


@lru_cache(maxsize=64)
def _exact(scale: float) -> Fraction:
    """The decimal a scale stands for (0.1 -> 1/10), so that 2301 x 0.1 gives 230.1, not
    230.10000000000002."""
    return Fraction(scale).limit_denominator(1_000_000)


def _words_to_bytes(words: Sequence[int], word_order: WordOrder) -> bytes:
    """The value's bytes, most significant first ("little": the low word came first)."""
    ordered = reversed(words) if word_order == "little" else words
    return b"".join(int.to_bytes(w, 2, "big") for w in ordered)


def _bytes_to_words(data: bytes, word_order: WordOrder) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    return words[::-1] if word_order == "little" else words


def decode_register(reg: Register, words: Sequence[int], *, factor: int = 1) -> float:
    """Decode one value from its registers and apply `reg.scale` (times `factor`, e.g.
    1000 for kWh -> Wh).

    Raises ValueError for a wrong number of words, a word outside 0..0xFFFF,
    NaN/infinity, or a "not available" pattern (`NOT_AVAILABLE`).
    """
    if len(words) != reg.count:
        raise ValueError(f"{reg.dtype} needs {reg.count} registers, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"register value out of range in {list(words)}")
    (raw,) = _STRUCT[reg.dtype].unpack(_words_to_bytes(words, reg.word_order))
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise ValueError(f"not available ({raw})")
        return raw * float(_exact(reg.scale) * factor)
    if isinstance(raw, int):
        if raw == NOT_AVAILABLE.get(reg.dtype):
            raise ValueError(f"not available (0x{raw:X})")
        return float(raw * _exact(reg.scale) * factor)
    raise ValueError(
        f"{reg.dtype} decoded to {raw!r}"
    )  # cannot happen: struct gives int/float


def encode_register(reg: Register, value: float) -> list[int]:
    """The registers a meter sends for `value` (in the wire unit): the inverse of
    `decode_register`.

    For simulators and tests. Raises ValueError if the value is not a whole number of
    `scale` steps, and `struct.error`/OverflowError if it does not fit the data type.
    """
    fmt = _STRUCT[reg.dtype]
    if reg.dtype == "float32":
        return _bytes_to_words(fmt.pack(value / reg.scale), reg.word_order)
    steps = Fraction(repr(value)) / _exact(reg.scale)
    if steps.denominator != 1:
        raise ValueError(f"{value} is not a multiple of {reg.scale}")
    return _bytes_to_words(fmt.pack(int(steps)), reg.word_order)


# --------------------------------------------------------------------------------------
# A whole response, a whole sample


def decode_block(block: ReadBlock, words: Sequence[int]) -> dict[str, float]:
    """Decode every register of a block's response; energies come out in Wh. ValueError
    names the quantity."""
    if len(words) != block.count:
        raise ValueError(
            f"FC{block.fc} 0x{block.address:04X}:"
            f" expected {block.count} registers, got {len(words)}"
        )
    out: dict[str, float] = {}
    for reg in block.registers:
        offset = reg.address - block.address
        factor = WH_PER_KWH if reg.quantity in ENERGY else 1
        try:
            out[reg.quantity] = decode_register(
                reg, words[offset : offset + reg.count], factor=factor
            )
        except ValueError as exc:
            raise ValueError(
                f"{reg.quantity} (FC{reg.fc} 0x{reg.address:04X}): {exc}"
            ) from exc
    return out


def sample_from(model: MeterModel, values: Mapping[str, float]) -> MeterSample:
    """Build the `MeterSample` from decoded values (wire units, energies already in Wh).

    Quantities the model lacks are 0.0 (1-phase meters: L2/L3; SDM72D-M v1: V, I, f).
    Power is normalised to import positive here and only here. Raises ValueError for a
    negative energy counter or a missing required quantity.
    """
    if missing := REQUIRED - values.keys():
        raise ValueError(f"missing {sorted(missing)}")
    for q in ENERGY:
        if values[q] < 0:
            raise ValueError(f"{q} is negative ({values[q]})")

    def phases(kind: str) -> tuple[float, float, float]:
        return (
            values.get(f"{kind}_l1", 0.0),
            values.get(f"{kind}_l2", 0.0),
            values.get(f"{kind}_l3", 0.0),
        )

    return MeterSample(
        energy_wh_import=values["energy_import"],
        energy_wh_export=values["energy_export"],
        power_w=model.power_sign * values["power_total"],
        currents_a=phases("current"),
        voltages_v=phases("voltage"),
        frequency_hz=values.get("frequency", 0.0),
    )
