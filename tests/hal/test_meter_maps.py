"""Pure tests of the meter register maps, register decoding and meter URLs (no I/O). Read planning is in
test_meter_plan.py, whole samples in test_meter_sample.py.

Known vectors come from METERS.md ("Verified decoding with pymodbus"). Encoding for the round trips
uses pymodbus' own `convert_to_registers`, so the maps are checked against the library's idea of
each data type and word order, not against a second hand-written decoder.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client.mixin import ModbusClientMixin

from firmware.config import MeterUrl as ConfigMeterUrl
from hal.meter import (
    MODELS,
    NOT_AVAILABLE,
    PHASE_QUANTITIES,
    QUANTITIES,
    WORDS,
    MeterModel,
    MeterUrl,
    ModbusMeter,
    Register,
    as_meter_url,
    decode_register,
    encode_register,
    format_meter_url,
)
from hal.protocols import Meter

DT = ModbusClientMixin.DATATYPE


def reg(quantity: str = "power_total", fc: int = 4, address: int = 0, dtype: str = "float32",
        word_order: str = "big", scale: float = 1.0, optional: bool = False) -> Register:
    return Register(
        quantity=quantity, fc=fc, address=address, dtype=dtype, word_order=word_order, scale=scale,  # type: ignore[arg-type]
        optional=optional,
    )


def by_name(model: str, quantity: str) -> Register:
    return next(r for r in MODELS[model].registers if r.quantity == quantity)


# ------------------------------------------------------------------------------------------------
# Known vectors (METERS.md)


def test_eastron_float32_big_endian_vector() -> None:
    v = decode_register(by_name("SDM630", "voltage_l1"), [0x4366, 0x199A])
    assert v == pytest.approx(230.1, abs=1e-4)
    assert v == struct.unpack(">f", bytes.fromhex("4366199A"))[0]


def test_abb_uint64_energy_vector() -> None:
    r = by_name("ABB-B23", "energy_import")
    assert decode_register(r, [0, 0, 1, 57920]) == 1234.56  # kWh, exactly the decimal
    assert decode_register(r, [0, 0, 1, 57920], factor=1000) == 1_234_560.0  # Wh


def test_cg_int32_little_endian_vector() -> None:
    r = by_name("EM340", "voltage_l1")
    assert decode_register(r, [2301, 0]) == 230.1  # not 230.10000000000002
    wrong = Register(quantity=r.quantity, fc=r.fc, address=r.address, dtype=r.dtype, word_order="big", scale=r.scale)
    assert decode_register(wrong, [2301, 0]) == pytest.approx(15079833.6)  # the classic word-order bug


def test_cg_negative_power_lsw_first() -> None:
    r = by_name("EM340", "power_total")
    words = ModbusClientMixin.convert_to_registers(-12345, DT.INT32, word_order="little")
    assert words == [0xCFC7, 0xFFFF]  # low word first
    assert decode_register(r, words) == -1234.5
    assert encode_register(r, -1234.5) == words


def test_abb_signed_power_big_endian() -> None:
    r = by_name("ABB-B23", "power_total")
    words = ModbusClientMixin.convert_to_registers(-350050, DT.INT32, word_order="big")
    assert words == [0xFFFA, 0xA89E]
    assert decode_register(r, words) == -3500.5


# ------------------------------------------------------------------------------------------------
# Round trips and refusals


@given(st.sampled_from([(m, r) for m in MODELS.values() for r in m.registers if r.dtype != "float32"]),
       st.integers(min_value=0, max_value=2**31 - 2))
def test_integer_registers_round_trip(model_reg: tuple[MeterModel, Register], raw: int) -> None:
    _, r = model_reg
    bits = 16 * r.count
    raw %= (2 ** (bits - 1) - 1) if r.dtype.startswith("int") else (2**bits - 1)  # stay off the sentinels
    datatype = ModbusClientMixin.DATATYPE[r.dtype.upper()]
    words = ModbusClientMixin.convert_to_registers(raw, datatype, word_order=r.word_order)
    value = decode_register(r, words)
    assert value == pytest.approx(raw * r.scale, rel=1e-12)
    assert encode_register(r, value) == words


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_float32_round_trip(x: float) -> None:
    r = by_name("SDM630", "power_total")
    words = ModbusClientMixin.convert_to_registers(x, DT.FLOAT32, word_order="big")
    assert decode_register(r, words) == x


@pytest.mark.parametrize("words", [[0x7FC0, 0x0000], [0x7F80, 0x0000], [0xFF80, 0x0000]], ids=["nan", "inf", "-inf"])
def test_float_not_a_number_is_refused(words: list[int]) -> None:
    with pytest.raises(ValueError, match="not available"):
        decode_register(by_name("SDM630", "frequency"), words)


@pytest.mark.parametrize(("model", "quantity"), [
    ("ABB-B23", "energy_import"),  # uint64 all 0xFF
    ("ABB-B23", "voltage_l1"),  # uint32 all 0xFF
    ("ABB-B23", "frequency"),  # uint16 0xFFFF
    ("ABB-B23", "power_total"),  # int32 0x7FFFFFFF
    ("EM340", "frequency"),  # int16 0x7FFF
])
def test_not_available_patterns_are_refused(model: str, quantity: str) -> None:
    r = by_name(model, quantity)
    datatype = ModbusClientMixin.DATATYPE[r.dtype.upper()]
    words = ModbusClientMixin.convert_to_registers(NOT_AVAILABLE[r.dtype], datatype, word_order=r.word_order)
    with pytest.raises(ValueError, match="not available"):
        decode_register(r, words)


def test_abb_all_ff_energy_is_refused() -> None:
    with pytest.raises(ValueError, match="not available"):
        decode_register(by_name("ABB-B23", "energy_export"), [0xFFFF] * 4)


@pytest.mark.parametrize(("words", "match"), [
    ([], "needs 2 registers, got 0"),
    ([0x4366], "needs 2 registers, got 1"),
    ([0x4366, 0x199A, 0], "needs 2 registers, got 3"),
    ([0x4366, 0x10000], "out of range"),
    ([-1, 0], "out of range"),
])
def test_wrong_word_count_or_range_is_refused(words: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_register(by_name("SDM630", "voltage_l1"), words)


def test_encode_refuses_values_between_scale_steps() -> None:
    with pytest.raises(ValueError, match="multiple"):
        encode_register(by_name("EM340", "voltage_l1"), 230.15)


# ------------------------------------------------------------------------------------------------
# The maps


def test_all_models_present() -> None:
    assert set(MODELS) == {"SDM630", "SDM120", "SDM72D-M", "SDM72D-M-2", "ABB-B23", "EM340", "EM24"}
    assert all(m.name == name for name, m in MODELS.items())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_map_has_required_quantities(name: str) -> None:
    model = MODELS[name]
    have = model.quantities()
    assert {"power_total", "energy_import", "energy_export"} <= have <= QUANTITIES
    if name == "SDM72D-M":  # v1: power and energies only (mbmd sdm72.go)
        assert have == {"power_total", "energy_import", "energy_export"}
        return
    phases = {f"{k}_l{n}" for k in ("voltage", "current") for n in range(1, model.phases + 1)}
    assert have & set(PHASE_QUANTITIES) == phases
    assert "frequency" in have


@pytest.mark.parametrize("name", sorted(MODELS))
def test_map_has_no_overlapping_registers(name: str) -> None:
    regs = sorted(MODELS[name].registers, key=lambda r: (r.fc, r.address))
    for a, b in itertools.pairwise(regs):
        assert a.fc != b.fc or a.address + WORDS[a.dtype] <= b.address, (a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_map_uses_one_function_code_and_word_order(name: str) -> None:
    regs = MODELS[name].registers
    assert len({r.fc for r in regs}) == 1
    assert len({r.word_order for r in regs if r.count > 1}) == 1


def test_maps_match_meters_md() -> None:
    """Spot checks straight from the tables in METERS.md."""
    sdm = {r.quantity: (r.fc, r.address, r.dtype, r.word_order) for r in MODELS["SDM630"].registers}
    assert sdm["power_total"] == (4, 0x34, "float32", "big")
    assert sdm["energy_import"] == (4, 0x48, "float32", "big")
    assert sdm["energy_export"] == (4, 0x4A, "float32", "big")
    assert MODELS["SDM72D-M-2"].registers == MODELS["SDM630"].registers
    assert MODELS["SDM120"].phases == 1
    assert by_name("SDM120", "power_total").address == 0x0C
    abb = {r.quantity: (r.fc, r.address, r.dtype, r.scale) for r in MODELS["ABB-B23"].registers}
    assert abb["voltage_l1"] == (3, 0x5B00, "uint32", 0.1)
    assert abb["current_l3"] == (3, 0x5B10, "uint32", 0.01)
    assert abb["power_total"] == (3, 0x5B14, "int32", 0.01)
    assert abb["frequency"] == (3, 0x5B2C, "uint16", 0.01)
    assert abb["energy_export"] == (3, 0x5004, "uint64", 0.01)
    em340 = {r.quantity: (r.address, r.dtype, r.word_order, r.scale) for r in MODELS["EM340"].registers}
    em24 = {r.quantity: (r.address, r.dtype, r.word_order, r.scale) for r in MODELS["EM24"].registers}
    assert em340["current_l1"] == em24["current_l1"] == (0x0C, "int32", "little", 0.001)
    assert (em340["frequency"][0], em340["energy_import"][0], em340["energy_export"][0]) == (0x33, 0x34, 0x4E)
    # The EM24's total import is 0x003E; 0x0042 is the partial counter a user can reset (METERS.md §6.6).
    assert (em24["frequency"][0], em24["energy_import"][0], em24["energy_export"][0]) == (0x37, 0x3E, 0x5C)
    assert all(r.address not in (0x42, 0x43) for r in MODELS["EM24"].registers)


def test_request_limits_match_meters_md() -> None:
    """METERS.md §6.1/§6.6/§6.7: Eastron 80 registers per request, EM340 20, EM24-DIN 11. ABB states none:
    the map keeps a small conservative value."""
    limits = {name: m.max_count for name, m in MODELS.items()}
    assert limits == {"SDM630": 80, "SDM120": 80, "SDM72D-M": 80, "SDM72D-M-2": 80, "EM340": 20, "EM24": 11,
                      "ABB-B23": 8}


def test_optional_quantities_are_export_on_abb_and_em24_only() -> None:
    optional = {(name, r.quantity) for name, m in MODELS.items() for r in m.registers if r.optional}
    assert optional == {("ABB-B23", "energy_export"), ("EM24", "energy_export")}


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"phases": 2}, "phases"),
    ({"max_count": 0}, "max_count"),
    ({"max_count": 126}, "max_count"),
    ({"max_count": 1}, "more than max_count 1"),  # a float32 needs 2 registers
    ({"power_sign": 0}, "power_sign"),
    ({"max_gap": -1}, "max_gap"),
])
def test_model_validation(kwargs: dict[str, int], match: str) -> None:
    args: dict[str, object] = {"name": "X", "registers": MODELS["SDM630"].registers, "phases": 3,
                               "max_count": 80} | kwargs
    with pytest.raises(ValueError, match=match):
        MeterModel(**args)  # type: ignore[arg-type]


def test_model_needs_its_request_limit() -> None:
    with pytest.raises(TypeError, match="max_count"):
        MeterModel(name="X", registers=MODELS["SDM630"].registers, phases=3)  # type: ignore[call-arg]


@pytest.mark.parametrize("quantity", ["power_total", "energy_import"])
def test_power_and_import_are_never_optional(quantity: str) -> None:
    with pytest.raises(ValueError, match=f"{quantity} cannot be optional"):
        reg(quantity, optional=True)


@pytest.mark.parametrize(("registers", "match"), [
    ((reg("power_total", address=0), reg("energy_import", address=1), reg("energy_export", address=4)), "overlaps"),
    ((reg("power_total", address=0), reg("energy_import", address=2)), "lacks"),
    ((reg("power_total", address=0), reg("energy_import", address=2), reg("energy_export", address=4),
      reg("voltage_l1", address=6)), "do not match 3 phase"),
    ((reg("power_total", address=0), reg("power_total", fc=3, address=0), reg("energy_import", address=2),
      reg("energy_export", address=4)), "twice"),
])
def test_bad_maps_are_refused(registers: tuple[Register, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MeterModel(name="X", registers=registers, phases=3, max_count=80)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"quantity": "power_l1"}, "quantity"), ({"fc": 6}, "fc"), ({"dtype": "float64"}, "dtype"),
    ({"word_order": "middle"}, "word_order"), ({"address": -1}, "address"), ({"address": 0xFFFF}, "address"),
    ({"scale": 0.0}, "scale"), ({"scale": math.nan}, "scale"),
])
def test_bad_registers_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        reg(**kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# URLs


def test_the_config_parser_feeds_the_meter() -> None:
    """One URL parser for the project (firmware/config.py); the meter takes what it parsed."""
    tcp = ConfigMeterUrl.parse("tcp://127.0.0.1:5020")
    assert as_meter_url(tcp) == MeterUrl(scheme="tcp", host="127.0.0.1", port=5020)
    rtu = ConfigMeterUrl.parse("rtu:///dev/ttyUSB0?baud=9600&parity=N&stopbits=1")
    assert as_meter_url(rtu) == MeterUrl(scheme="rtu", path="/dev/ttyUSB0", baud=9600, parity="N", stopbits=1)


@dataclass(frozen=True)
class ConfigStyleUrl:
    """Shaped like firmware/config.py's record: the serial device is `device`, unused fields None."""

    scheme: str
    host: str | None = None
    port: int | None = None
    device: str | None = None
    baud: int | None = None
    parity: str | None = None
    stopbits: int | None = None


def test_any_url_like_object_is_accepted() -> None:
    tcp = ConfigStyleUrl("tcp", host="10.0.0.5", port=1502)
    assert as_meter_url(tcp) == MeterUrl(scheme="tcp", host="10.0.0.5", port=1502)
    rtu = ConfigStyleUrl("rtu", device="/dev/ttyAMA0", baud=9600, parity="E", stopbits=1)
    assert format_meter_url(rtu) == "rtu:///dev/ttyAMA0?baud=9600&parity=E&stopbits=1"
    want = MeterUrl(scheme="rtu", path="/dev/ttyAMA0", baud=9600, parity="E", stopbits=1)
    assert ModbusMeter("ABB-B23", rtu).url == want
    with pytest.raises(ValueError, match="meter url"):
        as_meter_url(ConfigStyleUrl("rtu", device="/dev/ttyAMA0"))
    with pytest.raises(ValueError, match="meter url"):
        as_meter_url(ConfigStyleUrl("udp", host="x", port=1))


@pytest.mark.parametrize("kwargs", [
    {"scheme": "tcp", "host": "h", "port": 502, "baud": 9600},
    {"scheme": "rtu", "path": "/dev/x", "baud": 9600, "parity": "N", "stopbits": 1, "port": 502},
    {"scheme": "rtu", "path": "dev/x", "baud": 9600, "parity": "N", "stopbits": 1},
])
def test_inconsistent_url_records_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="meter url"):
        MeterUrl(**kwargs)  # type: ignore[arg-type]


def test_meter_constructor_validates_without_io() -> None:
    url = ConfigMeterUrl.parse("tcp://127.0.0.1:5020")
    m = ModbusMeter("SDM630", url)
    assert isinstance(m, Meter)
    assert not m.connected
    assert [(b.address, b.count) for b in m.plan] == [(0, 12), (0x34, 24)]
    with pytest.raises(ValueError, match="unknown"):
        ModbusMeter("SDM999", url)
    with pytest.raises(ValueError, match="device_id"):
        ModbusMeter("SDM630", url, device_id=300)
    with pytest.raises(ValueError, match="timeout"):
        ModbusMeter("SDM630", url, timeout_s=0)
    with pytest.raises(ValueError, match="meter url"):
        ModbusMeter("SDM630", ConfigStyleUrl("udp", host="127.0.0.1", port=5020))  # type: ignore[arg-type]
