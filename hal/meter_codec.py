"""Register words to meter values and back: pure functions over a meter's register map.

What it is for: turning the 16-bit words a meter answers into numbers and a
`MeterSample`. `plan_reads` groups a map's registers into as few contiguous requests as
the meter allows (`ReadBlock`s; `plan_for(model)` with the model's own limits; an
optional register always gets a request of its own), `decode_block` cuts one response
into its registers,
`decode_register` applies the data type (IEEE-754 float32, int16/32, uint16/32/64), the
word order (high word first or low word first; bytes inside a word are always
big-endian) and the scale, and `sample_from` builds the sample in SI units (V, A, W, Hz,
Wh) with power normalised to import positive and the frequency checked for plausibility
(`plausible_frequency`). `encode_register` is the inverse, for simulators and tests.
`plan_wire_bytes` and `plan_wire_time_s` give what a plan costs on an RTU line.

Absent quantities: an optional register (`Register.optional`) the meter refuses or
answers with its "not available" pattern is left out of the decoded values; the sample
then reports export energy as None (`MeterSample.energy_wh_export`, hal/protocols.py)
and any other optional quantity as 0.0 ("not measured").

Frequency: some firmwares report ten times the frequency (500 for 50.0 Hz). A reading
in 45..65 Hz is taken as it is; one in 450..650 is divided by ten; anything else is
reported as 0.0 (not measured) rather than passed on. `plausible_frequency` says which
case applied, so that the caller can log it (this module does not log).

What it must never do:

* perform I/O, read a clock, log, or import pymodbus (only `hal/meter_modbus.py` does,
  STYLE.md B4): everything here is a pure function of its arguments;
* return a made-up value: a wrong number of words, a word outside 0..0xFFFF, NaN or
  infinity, a meter's "not available" pattern (`NOT_AVAILABLE`; raised as the
  ValueError subclass `NotAvailable`), a negative energy counter or a missing required
  quantity raises ValueError naming the quantity; the caller turns it into
  HardwareError. Only a quantity the model does not have at all, an absent optional one
  and an implausible frequency are 0.0 ("not measured"), and an absent export energy is
  None.

Standard: Modbus Application Protocol Specification V1.1b3 (registers are big-endian
16-bit words; at most 125 registers per FC03/FC04 request) and IEEE 754-2008 binary32
for float32; Modbus over Serial Line V1.02 §2.5.1 (an RTU character is 11 bits) and
§2.5.1.1 (frames are separated by at least 3.5 character times; 1.75 ms above 19200
baud) for the wire cost. The mains frequency is 50 or 60 Hz (EN 50160 allows 47-52 Hz
on a 50 Hz grid; the 45..65 Hz window covers both grids). Word orders, scales, sign
conventions and not-available patterns follow /work/shared/METERS.md §6 ("Verified
decoding with pymodbus" gives the test vectors; §6.4 the ABB all-0xFF pattern; §6.7
"normalise to import positive in one place"). The byte layout is that of pymodbus'
`convert_from_registers`/`convert_to_registers`, which tests/hal/test_meter_maps.py
checks against.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Final, Literal

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
    "FREQUENCY_HZ",
    "NOT_AVAILABLE",
    "RTU_BITS_PER_CHAR",
    "RTU_REQUEST_BYTES",
    "WH_PER_KWH",
    "FrequencyVerdict",
    "NotAvailable",
    "ReadBlock",
    "decode_block",
    "decode_register",
    "encode_register",
    "plan_for",
    "plan_reads",
    "plan_wire_bytes",
    "plan_wire_time_s",
    "plausible_frequency",
    "sample_from",
]

WH_PER_KWH: Final = 1000
#: The quantities a sample can report as absent (None): export energy only.
OPTIONAL_IN_SAMPLE: Final = frozenset({"energy_export"})
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
#: Plausible mains frequency (Hz), inclusive; ten times this range is a x10 firmware.
FREQUENCY_HZ: Final = (45.0, 65.0)
FrequencyVerdict = Literal["ok", "scaled_x10", "implausible"]
#: An RTU request for FC03/FC04: address, function, start (2), count (2), CRC (2).
RTU_REQUEST_BYTES: Final = 8
#: An RTU response is address, function, byte count, 2 bytes per register, CRC (2).
RTU_RESPONSE_OVERHEAD: Final = 5
#: Bits of one RTU character: start, 8 data, parity or a second stop bit, stop (Modbus
#: over Serial Line §2.5.1). 8N1 sends 10; the spec's 11 is what the figures use.
RTU_BITS_PER_CHAR: Final = 11


class NotAvailable(ValueError):
    """A register holds the meter's "not available" pattern (or NaN): no reading."""


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
    `registers`. An `optional` block holds exactly one optional register."""

    fc: int
    address: int
    count: int
    registers: tuple[Register, ...]
    optional: bool = False


def plan_reads(
    registers: Iterable[Register], max_count: int = 60, max_gap: int = 20
) -> tuple[ReadBlock, ...]:
    """Merge registers into as few contiguous requests as possible, per function code.

    Two neighbours share a request when at most `max_gap` unused registers lie between
    them and the request stays within `max_count` registers. An optional register is
    never batched, nor read through: it gets a request of its own, so that a meter
    refusing it (exception 02) refuses nothing else. Blocks come out ordered by (fc, address). Raises
    ValueError for overlapping registers or a `max_count` outside 1..125.
    """
    if not 1 <= max_count <= MODBUS_MAX_COUNT:
        raise ValueError(f"max_count {max_count} not in 1..{MODBUS_MAX_COUNT}")
    if max_gap < 0:
        raise ValueError(f"max_gap {max_gap} is negative")
    ordered = sorted(registers, key=lambda r: (r.fc, r.address))
    overlaps(ordered)
    for reg in ordered:
        if reg.count > max_count:
            raise ValueError(
                f"{reg.quantity} needs {reg.count} registers,"
                f" more than max_count {max_count}"
            )
    blocks = [_block([r], optional=True) for r in ordered if r.optional]
    blocks += _batch(ordered, max_count, max_gap)
    return tuple(sorted(blocks, key=lambda b: (b.fc, b.address)))


def plan_for(model: MeterModel) -> tuple[ReadBlock, ...]:
    """The requests one poll of `model` makes, within the model's own limits."""
    return plan_reads(model.registers, model.max_count, model.max_gap)


def _batch(
    ordered: list[Register], max_count: int, max_gap: int
) -> list[ReadBlock]:
    """Greedy left-to-right merge of the required registers sorted by (fc, address); an
    optional register is a wall no request reads through."""
    blocks: list[ReadBlock] = []
    members: list[Register] = []
    for reg in ordered:
        if reg.optional:
            if members:
                blocks.append(_block(members))
            members = []
            continue
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
        members = [reg]
    if members:
        blocks.append(_block(members))
    return blocks


def _block(members: list[Register], *, optional: bool = False) -> ReadBlock:
    start = members[0].address
    return ReadBlock(
        fc=members[0].fc,
        address=start,
        count=max(r.end for r in members) - start,
        registers=tuple(members),
        optional=optional,
    )


def plan_wire_bytes(plan: Iterable[ReadBlock]) -> int:
    """Bytes on an RTU line for one poll: per request 8 bytes out and 5 + 2 x count back
    (exception responses are shorter; this is the successful poll)."""
    return sum(RTU_REQUEST_BYTES + RTU_RESPONSE_OVERHEAD + 2 * b.count for b in plan)


def plan_wire_time_s(
    plan: Iterable[ReadBlock], baud: int = 9600, bits_per_char: int = RTU_BITS_PER_CHAR
) -> float:
    """Lower bound of one poll on an RTU line: every byte at `bits_per_char` bits, plus
    the silent interval before each frame (3.5 characters; 1.75 ms above 19200 baud),
    two frames per request. The meter's own turnaround time comes on top."""
    if baud <= 0 or bits_per_char <= 0:
        raise ValueError(f"baud {baud} and bits_per_char {bits_per_char} must be > 0")
    blocks = tuple(plan)
    char_s = bits_per_char / baud
    gap_s = 3.5 * char_s if baud <= 19200 else 0.00175
    return plan_wire_bytes(blocks) * char_s + 2 * len(blocks) * gap_s


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
    NaN/infinity, or a "not available" pattern (`NOT_AVAILABLE`); the last two as
    `NotAvailable`.
    """
    if len(words) != reg.count:
        raise ValueError(f"{reg.dtype} needs {reg.count} registers, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"register value out of range in {list(words)}")
    (raw,) = _STRUCT[reg.dtype].unpack(_words_to_bytes(words, reg.word_order))
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise NotAvailable(f"not available ({raw})")
        return raw * float(_exact(reg.scale) * factor)
    if isinstance(raw, int):
        if raw == NOT_AVAILABLE.get(reg.dtype):
            raise NotAvailable(f"not available (0x{raw:X})")
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
    (`NotAvailable` for a "not available" value) names the quantity."""
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
            kind = NotAvailable if isinstance(exc, NotAvailable) else ValueError
            raise kind(f"{reg.quantity} (FC{reg.fc} 0x{reg.address:04X}): {exc}") from exc
    return out


def plausible_frequency(hz: float) -> tuple[float, FrequencyVerdict]:
    """The frequency to report for a reading of `hz`, and which rule applied: 45..65 Hz
    as it is ("ok"); 450..650 divided by ten ("scaled_x10": a firmware reporting x10);
    anything else 0.0, not measured ("implausible")."""
    low, high = FREQUENCY_HZ
    if low <= hz <= high:
        return hz, "ok"
    if 10 * low <= hz <= 10 * high:
        return float(Fraction(repr(hz)) / 10), "scaled_x10"
    return 0.0, "implausible"


def sample_from(model: MeterModel, values: Mapping[str, float]) -> MeterSample:
    """Build the `MeterSample` from decoded values (wire units, energies already in Wh).

    Quantities the model lacks are 0.0 (1-phase meters: L2/L3; SDM72D-M v1: V, I, f),
    and so are absent optional ones, except export energy, which is then None. Power is
    normalised to import positive here and only here; the frequency goes through
    `plausible_frequency`. Raises ValueError for a negative energy counter or a missing
    quantity that is not optional.
    """
    needed = REQUIRED - OPTIONAL_IN_SAMPLE | {
        r.quantity for r in model.registers if not r.optional
    }
    if missing := needed - values.keys():
        raise ValueError(f"missing {sorted(missing)}")
    for q in ENERGY & values.keys():
        if values[q] < 0:
            raise ValueError(f"{q} is negative ({values[q]})")

    def phases(kind: str) -> tuple[float, float, float]:
        return (
            values.get(f"{kind}_l1", 0.0),
            values.get(f"{kind}_l2", 0.0),
            values.get(f"{kind}_l3", 0.0),
        )

    hz = values.get("frequency")
    return MeterSample(
        energy_wh_import=values["energy_import"],
        energy_wh_export=values.get("energy_export"),
        power_w=model.power_sign * values["power_total"],
        currents_a=phases("current"),
        voltages_v=phases("voltage"),
        frequency_hz=0.0 if hz is None else plausible_frequency(hz)[0],
    )
