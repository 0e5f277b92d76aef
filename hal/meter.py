"""Energy meters over Modbus: the former single module, now re-exporting its four parts.

What it is for: keeping `from hal.meter import ModbusMeter, MODELS, ...` working
(firmware/__main__.py, the meter tests). New code imports from the module that owns the
name:

* `hal.meter_url`: the meter URL parser and the `MeterUrl` record;
* `hal.meter_maps`: the register maps of METERS.md as frozen dataclasses;
* `hal.meter_codec`: registers to values and samples, pure (no pymodbus);
* `hal.meter_bus`: the links (one client and lock per RS-485 bus) meters share;
* `hal.meter_modbus`: `ModbusMeter`, the pymodbus client (the only pymodbus importer).

What it must never do: define anything of its own. Standard: see the four modules.
"""

from __future__ import annotations

from hal.meter_codec import (
    NOT_AVAILABLE,
    WH_PER_KWH,
    NotAvailable,
    ReadBlock,
    decode_block,
    decode_register,
    encode_register,
    plan_for,
    plan_reads,
    plan_wire_bytes,
    plan_wire_time_s,
    plausible_frequency,
    sample_from,
)
from hal.meter_maps import (
    ABB_MAX_COUNT,
    EASTRON_MAX_COUNT,
    EM24_MAX_COUNT,
    EM340_MAX_COUNT,
    ENERGY,
    MODBUS_MAX_COUNT,
    MODELS,
    NEVER_OPTIONAL,
    PHASE_QUANTITIES,
    QUANTITIES,
    REQUIRED,
    WORDS,
    DType,
    MeterModel,
    Register,
    WordOrder,
    overlaps,
)
from hal.meter_modbus import ModbusMeter
from hal.meter_url import (
    BAUD_RATES,
    MeterUrl,
    MeterUrlLike,
    as_meter_url,
    format_meter_url,
    parse_meter_url,
)

__all__ = [
    "ABB_MAX_COUNT",
    "BAUD_RATES",
    "EASTRON_MAX_COUNT",
    "EM24_MAX_COUNT",
    "EM340_MAX_COUNT",
    "ENERGY",
    "MODBUS_MAX_COUNT",
    "MODELS",
    "NEVER_OPTIONAL",
    "NOT_AVAILABLE",
    "PHASE_QUANTITIES",
    "QUANTITIES",
    "REQUIRED",
    "WH_PER_KWH",
    "WORDS",
    "DType",
    "MeterModel",
    "MeterUrl",
    "MeterUrlLike",
    "ModbusMeter",
    "NotAvailable",
    "ReadBlock",
    "Register",
    "WordOrder",
    "as_meter_url",
    "decode_block",
    "decode_register",
    "encode_register",
    "format_meter_url",
    "overlaps",
    "parse_meter_url",
    "plan_for",
    "plan_reads",
    "plan_wire_bytes",
    "plan_wire_time_s",
    "plausible_frequency",
    "sample_from",
]
