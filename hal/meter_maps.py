"""Energy-meter register maps as data: where each quantity is and how it is encoded.

What it is for: describing each supported meter model as a `MeterModel`, a frozen table
of `Register`s (function code, 0-based address, data type, word order, scale to
V/A/W/Hz/kWh, and whether the quantity is `optional`) with the meter's own request
limits next to it (`max_count` registers per request, `max_gap` unused registers a
request may read through), and checking that a table is self-consistent (known
quantities, the required ones present and never optional, phase registers matching the
phase count, no two registers sharing an address, request limits within the Modbus
limit). `MODELS` holds the supported models, each citing where its numbers come from.

An `optional` register is a quantity some meters of a model do not have: ABB's
import-only B-series answers all-0xFF for export energy, and some EM24s refuse the
export register with exception 02 (METERS.md §6.4, §6.6, §6.7). The reader asks for it
in a request of its own and reports it as absent (`MeterSample.energy_wh_export is
None`) instead of losing the meter. Power and import energy are never optional: the
shell bills the one and watches the other.

What it must never do:

* talk to a meter or import pymodbus (only `hal/meter_modbus.py` does, STYLE.md B4);
* decode register contents (that is `hal/meter_codec.py`) or decide anything about
  charging;
* carry a number without a source: every address, type, word order, scale and request
  limit below is from METERS.md and is cited next to the table (issue 11 corrected the
  EM24: total import 0x003E, at most 11 registers per request; and the SDM72D-M v1
  reads documented registers only). Where no source states a number (the ABB request
  limit) the value is a conservative one and says why.

Standard: the register maps of /work/shared/METERS.md §6.1-6.7, which cross-checks
volkszaehler/mbmd (the library behind evcc's meters), evcc's meter templates,
SmartEVSE's `EMConfig[]` and openWB. Addresses are 0-based PDU addresses as sent on the
wire. Function codes and the 125-register limit per request are from the Modbus
Application Protocol Specification V1.1b3 §6.3/§6.4.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Final, Literal

__all__ = [
    "ABB_MAX_COUNT",
    "EASTRON_MAX_COUNT",
    "EM24_MAX_COUNT",
    "EM340_MAX_COUNT",
    "ENERGY",
    "MODBUS_MAX_COUNT",
    "MODELS",
    "NEVER_OPTIONAL",
    "PHASE_QUANTITIES",
    "QUANTITIES",
    "REQUIRED",
    "WORDS",
    "DType",
    "MeterModel",
    "Register",
    "WordOrder",
    "overlaps",
]

DType = Literal["float32", "int32", "uint32", "uint64", "int16", "uint16"]
WordOrder = Literal["big", "little"]

#: Registers (16-bit words) per data type.
WORDS: Final[dict[str, int]] = {
    "float32": 2,
    "int32": 2,
    "uint32": 2,
    "uint64": 4,
    "int16": 1,
    "uint16": 1,
}
PHASE_QUANTITIES: Final = tuple(
    f"{kind}_l{n}" for kind in ("voltage", "current") for n in (1, 2, 3)
)
#: Every quantity a map may contain. Energies are kWh on the wire; `MeterSample`
#: carries Wh.
QUANTITIES: Final = frozenset(
    {*PHASE_QUANTITIES, "power_total", "frequency", "energy_import", "energy_export"}
)
#: What every map must list: the shell bills energy and watches power.
REQUIRED: Final = frozenset({"power_total", "energy_import", "energy_export"})
#: What a map may never mark optional: without them the meter is useless for charging.
NEVER_OPTIONAL: Final = frozenset({"power_total", "energy_import"})
ENERGY: Final = frozenset({"energy_import", "energy_export"})
#: Modbus limit for FC03/FC04 (Application Protocol §6.3/§6.4).
MODBUS_MAX_COUNT: Final = 125


@dataclass(frozen=True, slots=True, kw_only=True)
class Register:
    """One value in a meter's map: where it is (`fc`, 0-based `address`), how it is
    encoded, and the `scale` that turns the raw number into the wire unit (V, A, W, Hz,
    kWh). `optional`: some meters of the model lack it (exception 02 or the "not
    available" pattern); it is then reported as absent, and the meter stays OK."""

    quantity: str
    fc: int
    address: int
    dtype: DType
    word_order: WordOrder
    scale: float
    optional: bool = False

    def __post_init__(self) -> None:
        if self.quantity not in QUANTITIES:
            raise ValueError(
                f"quantity: unknown {self.quantity!r};"
                f" expected one of {sorted(QUANTITIES)}"
            )
        if self.fc not in (3, 4):
            raise ValueError(f"fc: {self.fc} is not 3 (holding) or 4 (input)")
        if self.dtype not in WORDS:
            raise ValueError(
                f"dtype: unknown {self.dtype!r}; expected one of {sorted(WORDS)}"
            )
        if self.word_order not in ("big", "little"):
            raise ValueError(
                f"word_order: {self.word_order!r} is not 'big' or 'little'"
            )
        if not 0 <= self.address <= 0xFFFF - self.count + 1:
            raise ValueError(
                f"address: 0x{self.address:X} out of range for {self.dtype}"
            )
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale: {self.scale} must be finite and positive")
        if self.optional and self.quantity in NEVER_OPTIONAL:
            raise ValueError(f"{self.quantity} cannot be optional")

    @property
    def count(self) -> int:
        """Number of 16-bit registers the value occupies."""
        return WORDS[self.dtype]

    @property
    def end(self) -> int:
        """First address after the value."""
        return self.address + self.count


@dataclass(frozen=True, slots=True, kw_only=True)
class MeterModel:
    """A meter model's register map and its request limits. `max_count` is the most
    registers the meter answers in one request (the meter's own limit, always given:
    a request over it gets exception 02); `max_gap` is how many unused registers a
    batched read may read through (0: documented registers only); `power_sign` turns
    the meter's own convention into "import positive" (+1: positive power means drawing
    from the grid)."""

    name: str
    registers: tuple[Register, ...]
    phases: int
    max_count: int
    max_gap: int = 20
    power_sign: int = 1

    def __post_init__(self) -> None:
        if self.phases not in (1, 3):
            raise ValueError(f"{self.name}: phases {self.phases} is not 1 or 3")
        if not 1 <= self.max_count <= MODBUS_MAX_COUNT:
            raise ValueError(
                f"{self.name}: max_count {self.max_count} not in 1..{MODBUS_MAX_COUNT}"
            )
        if self.max_gap < 0:
            raise ValueError(f"{self.name}: max_gap {self.max_gap} is negative")
        if self.power_sign not in (1, -1):
            raise ValueError(
                f"{self.name}: power_sign {self.power_sign} is not +1 or -1"
            )
        names = [r.quantity for r in self.registers]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.name}: a quantity appears twice in {names}")
        if missing := REQUIRED - set(names):
            raise ValueError(f"{self.name}: map lacks {sorted(missing)}")
        if too_long := [r.quantity for r in self.registers if r.count > self.max_count]:
            raise ValueError(
                f"{self.name}: {too_long} need more than max_count {self.max_count}"
            )
        for kind in ("voltage", "current"):
            have = {q for q in names if q.startswith(kind)}
            if have and have != {f"{kind}_l{n}" for n in range(1, self.phases + 1)}:
                raise ValueError(
                    f"{self.name}: {kind} registers {sorted(have)}"
                    f" do not match {self.phases} phase(s)"
                )
        overlaps(self.registers)  # raises ValueError

    def quantities(self) -> frozenset[str]:
        return frozenset(r.quantity for r in self.registers)


def overlaps(registers: Iterable[Register]) -> None:
    """Raise ValueError if two registers of the same function code share an address."""
    ordered = sorted(registers, key=lambda r: (r.fc, r.address))
    for a, b in pairwise(ordered):
        if a.fc == b.fc and b.address < a.end:
            raise ValueError(
                f"{b.quantity} at FC{b.fc} 0x{b.address:04X}"
                f" overlaps {a.quantity} (0x{a.address:04X}..)"
            )


def _reg(
    quantity: str,
    fc: int,
    address: int,
    dtype: DType,
    word_order: WordOrder,
    scale: float,
    *,
    optional: bool = False,
) -> Register:
    return Register(
        quantity=quantity,
        fc=fc,
        address=address,
        dtype=dtype,
        word_order=word_order,
        scale=scale,
        optional=optional,
    )


def _eastron(quantity: str, address: int) -> Register:
    """Eastron: FC04 input registers, IEEE-754 float32, high word first, already in
    V/A/W/Hz/kWh."""
    return _reg(quantity, 4, address, "float32", "big", 1.0)


#: Eastron allows at most 40 values (80 registers) per request (METERS.md §6.1, §6.7).
EASTRON_MAX_COUNT: Final = 80
#: Carlo Gavazzi EM340 (EM330/ET330/ET340): at most 20 registers per request (METERS.md
#: §6.7).
EM340_MAX_COUNT: Final = 20
#: Carlo Gavazzi EM24-DIN: at most 11 registers per request (METERS.md §6.6, citing CG's
#: "EM24-DIN PFA/PFB/X communication protocol" V4R0 §1.2.1/1.2.2; §6.7).
EM24_MAX_COUNT: Final = 11
#: ABB B23/B24: no limit is stated in METERS.md §6.4, nor in any source it cites. 8 is
#: a conservative guess, not a documented figure: it is one uint64 energy pair, and no
#: larger than the requests the production readers METERS.md cites make of these meters
#: (SmartEVSE reads three uint32 phases, 6 registers, per request; openWB one value at a
#: time). Raise it once ABB's own manual (2CMC485003M0201) has been checked.
ABB_MAX_COUNT: Final = 8

# --- Eastron SDM630-Modbus v2 (METERS.md §6.1). Sources: mbmd meters/rs485/sdm.go;
# SmartEVSE EMConfig "Eastron3P" (FC4 FLOAT32 HBF_HWF, U 0x0, I 0x6, P 0x34, Eimp 0x48,
# Eexp 0x4A); evcc templates/definition/meter/eastron-sdm72v2_630.yaml (model: sdm).
# Total power is negative when exporting: import positive already (power_sign +1).
_SDM630_REGISTERS: Final = (
    _eastron("voltage_l1", 0x0000),  # 30001
    _eastron("voltage_l2", 0x0002),  # 30003
    _eastron("voltage_l3", 0x0004),  # 30005
    _eastron("current_l1", 0x0006),  # 30007
    _eastron("current_l2", 0x0008),  # 30009
    _eastron("current_l3", 0x000A),  # 30011
    _eastron("power_total", 0x0034),  # 30053, W, signed (negative = export)
    _eastron("frequency", 0x0046),  # 30071
    _eastron("energy_import", 0x0048),  # 30073, kWh
    _eastron("energy_export", 0x004A),  # 30075, kWh
)

#: Carlo Gavazzi voltage, current and total power: the same on the EM340 and the
#: EM24-DIN (METERS.md §6.5/6.6). Power is signed, import positive, unless the meter is
#: set to "easy connection" mode, where it counts every direction as import and power is
#: never negative: no sign here can undo that (the example config says so).
_CG_VIP: Final = (
    _reg("voltage_l1", 4, 0x0000, "int32", "little", 0.1),
    _reg("voltage_l2", 4, 0x0002, "int32", "little", 0.1),
    _reg("voltage_l3", 4, 0x0004, "int32", "little", 0.1),
    _reg("current_l1", 4, 0x000C, "int32", "little", 0.001),
    _reg("current_l2", 4, 0x000E, "int32", "little", 0.001),
    _reg("current_l3", 4, 0x0010, "int32", "little", 0.001),
    _reg("power_total", 4, 0x0028, "int32", "little", 0.1),
)

MODELS: Final[dict[str, MeterModel]] = {
    "SDM630": MeterModel(
        name="SDM630",
        registers=_SDM630_REGISTERS,
        phases=3,
        max_count=EASTRON_MAX_COUNT,
    ),
    # Eastron SDM120-Modbus, 1-phase (METERS.md §6.2). Sources: mbmd
    # meters/rs485/sdm120.go; SmartEVSE "Eastron1P" (0x0/0x6/0x0C/0x48/0x4A). Serial
    # default 2400 baud (Eastron SDM120 manual V2.6).
    "SDM120": MeterModel(
        name="SDM120",
        registers=(
            _eastron("voltage_l1", 0x0000),
            _eastron("current_l1", 0x0006),
            _eastron(
                "power_total", 0x000C
            ),  # "active power"; the meter's only power value
            _eastron("frequency", 0x0046),
            _eastron("energy_import", 0x0048),
            _eastron("energy_export", 0x004A),
        ),
        phases=1,
        max_count=EASTRON_MAX_COUNT,
    ),
    # Eastron SDM72D-M, first generation (METERS.md §6.3). Source: mbmd
    # meters/rs485/sdm72.go ("This device does not provide voltage data"): power and
    # energies only, so V, I and f read as 0.0. Its registers between 0x0036 and 0x0047
    # are not documented, so it never reads through a gap (max_gap 0): two requests,
    # 0x0034 x2 and 0x0048 x4.
    "SDM72D-M": MeterModel(
        name="SDM72D-M",
        registers=(
            _eastron("power_total", 0x0034),
            _eastron("energy_import", 0x0048),
            _eastron("energy_export", 0x004A),
        ),
        phases=3,
        max_count=EASTRON_MAX_COUNT,
        max_gap=0,
    ),
    # Eastron SDM72D-M-2 / SDM72DM-V2 (METERS.md §6.3): the SDM630 map. Sources: mbmd
    # meters/rs485/sdm72v2.go (cites Eastron sdm72dm-v2.pdf); evcc groups it with the
    # SDM630.
    "SDM72D-M-2": MeterModel(
        name="SDM72D-M-2",
        registers=_SDM630_REGISTERS,
        phases=3,
        max_count=EASTRON_MAX_COUNT,
    ),
    # ABB B23/B24 (also A43/A44), "EQ meters" (METERS.md §6.4). FC03 holding registers,
    # integers, high word first. Sources: mbmd meters/rs485/abb.go (cites the ABB
    # B-series manual); SmartEVSE "ABB" (FC3 INT32 BE 0x5B00 /10, 0x5B0C /100, 0x5B14
    # /100, 0x5000 /100, 0x5004 /100); openWB's B23 script (0x5B14 int32 /100). Energies
    # are read as the full uint64 (SmartEVSE skips the high 4 bytes). Not-available =
    # all 0xFF: the import-only B-series answers it for export energy, so export is
    # optional (METERS.md §6.4, §6.7). Request limit: see ABB_MAX_COUNT.
    "ABB-B23": MeterModel(
        name="ABB-B23",
        registers=(
            _reg("voltage_l1", 3, 0x5B00, "uint32", "big", 0.1),
            _reg("voltage_l2", 3, 0x5B02, "uint32", "big", 0.1),
            _reg("voltage_l3", 3, 0x5B04, "uint32", "big", 0.1),
            _reg("current_l1", 3, 0x5B0C, "uint32", "big", 0.01),
            _reg("current_l2", 3, 0x5B0E, "uint32", "big", 0.01),
            _reg("current_l3", 3, 0x5B10, "uint32", "big", 0.01),
            _reg("power_total", 3, 0x5B14, "int32", "big", 0.01),
            _reg("frequency", 3, 0x5B2C, "uint16", "big", 0.01),
            _reg("energy_import", 3, 0x5000, "uint64", "big", 0.01),
            _reg("energy_export", 3, 0x5004, "uint64", "big", 0.01, optional=True),
        ),
        phases=3,
        max_count=ABB_MAX_COUNT,
    ),
    # Carlo Gavazzi EM340 (also EM330, ET330/ET340, EM24 Ethernet/EM24_E1) (METERS.md
    # §6.5). FC04, INT32 with the low word first. Sources: mbmd
    # meters/rs485/carlogavazzi-ex3x0.go (cites EM330_EM340_ET330_ET340_CP.pdf);
    # SmartEVSE "C.Gavazzi" (FC4 INT32 HBF_LWF, U 0x0 /10, I 0xC /1000, P 0x28 /10, Eimp
    # 0x34 /10, Eexp 0x4E /10); evcc cg-emt3xx.yaml (model: cgex3x0). f scale: mbmd
    # only. At most 20 registers per request (METERS.md §6.7).
    "EM340": MeterModel(
        name="EM340",
        registers=(
            *_CG_VIP,
            _reg("frequency", 4, 0x0033, "int16", "little", 0.1),
            _reg("energy_import", 4, 0x0034, "int32", "little", 0.1),
            _reg("energy_export", 4, 0x004E, "int32", "little", 0.1),
        ),
        phases=3,
        max_count=EM340_MAX_COUNT,
    ),
    # Carlo Gavazzi EM24-DIN, RS-485 "AV..." models (METERS.md §6.6): the EM340 layout
    # for V, I and P, but f, import and export elsewhere. Sources: Carlo Gavazzi's
    # "EM24-DIN PFA/PFB/X communication protocol" V4R0, Table 2.3-1 (kWh (+) TOT at
    # 0x003E; 0x0042 is kWh (+) PAR, the partial counter a user can reset, which mbmd's
    # map reads by mistake: never the total) and §1.2.1/1.2.2 (at most 11 registers per
    # request); Victron's ac_sensor_updater (0x003E); mbmd
    # meters/rs485/carlogavazzi-em24.go and carlogavazzi-ex.go; evcc cg-em24.yaml
    # (model: cgem24). The export total exists only on models and settings that count
    # both directions (evcc issue 31143 / PR 31736); others answer exception 02, so it
    # is optional. The EM24 *Ethernet* (EM24_E1) uses "EM340".
    "EM24": MeterModel(
        name="EM24",
        registers=(
            *_CG_VIP,
            _reg("frequency", 4, 0x0037, "int16", "little", 0.1),
            _reg("energy_import", 4, 0x003E, "int32", "little", 0.1),
            _reg("energy_export", 4, 0x005C, "int32", "little", 0.1, optional=True),
        ),
        phases=3,
        max_count=EM24_MAX_COUNT,
    ),
}
