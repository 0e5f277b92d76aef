"""Pure tests of the meter register maps, decoding, read planning and meter URLs (no I/O).

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
    NotAvailable,
    PHASE_QUANTITIES,
    QUANTITIES,
    WORDS,
    MeterModel,
    MeterUrl,
    ModbusMeter,
    ReadBlock,
    Register,
    as_meter_url,
    decode_block,
    decode_register,
    encode_register,
    format_meter_url,
    plan_for,
    plan_reads,
    plan_wire_bytes,
    plan_wire_time_s,
    plausible_frequency,
    sample_from,
)
from hal.protocols import Meter, MeterSample

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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_plan_respects_limits(name: str) -> None:
    model = MODELS[name]
    plan = plan_for(model)
    assert plan == plan_reads(model.registers, model.max_count, model.max_gap)
    planned = sorted((r.fc, r.address) for b in plan for r in b.registers)
    assert planned == sorted((r.fc, r.address) for r in model.registers)
    limit = {"SDM": 80, "EM3": 20, "EM2": 11}.get(name[:3], 125)  # METERS.md §6.7
    for b in plan:
        assert 1 <= b.count <= model.max_count <= limit
        assert all(b.address <= r.address and r.end <= b.address + b.count for r in b.registers)
        assert all(r.fc == b.fc for r in b.registers)
        # An optional register is alone in its request, so a refusal costs nothing else.
        assert b.optional == any(r.optional for r in b.registers)
        assert not b.optional or (len(b.registers) == 1 and b.count == b.registers[0].count)
        walls = {x for r in model.registers if r.optional for x in range(r.address, r.end)}
        assert b.optional or not walls & set(range(b.address, b.address + b.count))  # never read through one


def test_em24_plan_stays_within_11_registers() -> None:
    """The plan that asked for 18 and 28 registers, which a real EM24 refuses, is gone."""
    plan = plan_for(MODELS["EM24"])
    assert [(b.address, b.count, b.optional) for b in plan] == [
        (0x00, 6, False), (0x0C, 6, False), (0x28, 2, False), (0x37, 9, False), (0x5C, 2, True)]


def test_sdm72d_v1_reads_only_documented_registers() -> None:
    plan = plan_for(MODELS["SDM72D-M"])
    assert [(b.address, b.count) for b in plan] == [(0x34, 2), (0x48, 4)]
    documented = {a for r in MODELS["SDM72D-M"].registers for a in range(r.address, r.end)}
    assert {a for b in plan for a in range(b.address, b.address + b.count)} == documented


def test_abb_plan_reads_export_alone() -> None:
    plan = plan_for(MODELS["ABB-B23"])
    assert [(b.address, b.count, b.optional) for b in plan] == [
        (0x5000, 4, False), (0x5004, 4, True), (0x5B00, 6, False), (0x5B0C, 6, False), (0x5B14, 2, False),
        (0x5B2C, 1, False)]


def test_plan_keeps_optional_registers_apart() -> None:
    regs = [reg("energy_import", address=0), reg("energy_export", address=2, optional=True),
            reg("power_total", address=4)]
    blocks = plan_reads(regs, max_gap=20)  # without the optional one in between, one request (0, 6)
    assert [(b.address, b.count, b.optional, [r.quantity for r in b.registers]) for b in blocks] == [
        (0, 2, False, ["energy_import"]), (2, 2, True, ["energy_export"]), (4, 2, False, ["power_total"])]


def test_sdm630_reads_in_two_requests() -> None:
    m = MODELS["SDM630"]
    plan = plan_reads(m.registers, m.max_count, m.max_gap)
    assert [(b.fc, b.address, b.count) for b in plan] == [(4, 0x00, 12), (4, 0x34, 24)]


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
# plan_reads


def test_plan_merges_contiguous_and_near_registers() -> None:
    regs = [reg("voltage_l1", address=0), reg("voltage_l2", address=2), reg("voltage_l3", address=10)]
    assert plan_reads(regs) == (ReadBlock(fc=4, address=0, count=12, registers=tuple(regs)),)


def test_plan_splits_on_large_gap() -> None:
    a, b = reg("power_total", address=0), reg("energy_import", address=2 + 21)
    assert [(x.address, x.count) for x in plan_reads([a, b], max_gap=20)] == [(0, 2), (23, 2)]
    assert [(x.address, x.count) for x in plan_reads([a, b], max_gap=21)] == [(0, 25)]


def test_plan_gap_zero_merges_only_adjacent() -> None:
    regs = [reg("voltage_l1", address=0), reg("voltage_l2", address=2), reg("voltage_l3", address=5)]
    assert [(x.address, x.count) for x in plan_reads(regs, max_gap=0)] == [(0, 4), (5, 2)]


def test_plan_respects_max_count() -> None:
    regs = [reg(q, address=2 * i) for i, q in enumerate(PHASE_QUANTITIES)]  # 12 contiguous registers
    blocks = plan_reads(regs, max_count=5)
    assert [(b.address, b.count) for b in blocks] == [(0, 4), (4, 4), (8, 4)]
    assert all(b.count <= 5 for b in blocks)


def test_plan_separates_function_codes_and_sorts() -> None:
    regs = [reg("energy_import", fc=4, address=0x48), reg("power_total", fc=3, address=0x48),
            reg("energy_export", fc=4, address=0x4A)]
    blocks = plan_reads(regs)
    assert [(b.fc, b.address, b.count, len(b.registers)) for b in blocks] == [(3, 0x48, 2, 1), (4, 0x48, 4, 2)]


def test_plan_refuses_overlaps_and_bad_limits() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        plan_reads([reg("power_total", address=0), reg("energy_import", address=1)])
    with pytest.raises(ValueError, match="max_count"):
        plan_reads([reg()], max_count=0)
    with pytest.raises(ValueError, match="max_count"):
        plan_reads([reg()], max_count=126)
    with pytest.raises(ValueError, match="more than max_count"):
        plan_reads([reg(dtype="uint64")], max_count=2)
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads([reg()], max_gap=-1)


def test_plan_of_nothing_is_empty() -> None:
    assert plan_reads([]) == ()


# ------------------------------------------------------------------------------------------------
# Decoding whole blocks into a sample


def test_decode_block_and_sample_for_one_phase_meter() -> None:
    model = MODELS["SDM120"]
    values: dict[str, float] = {}
    wire = {"voltage_l1": 230.5, "current_l1": 16.25, "power_total": 3745.5, "frequency": 50.0,
            "energy_import": 1234.5, "energy_export": 0.25}
    for block in plan_reads(model.registers, model.max_count, model.max_gap):
        words = [0] * block.count
        for r in block.registers:
            words[r.address - block.address: r.end - block.address] = encode_register(r, wire[r.quantity])
        values.update(decode_block(block, words))
    assert sample_from(model, values) == MeterSample(
        energy_wh_import=1_234_500.0, energy_wh_export=250.0, power_w=3745.5,
        currents_a=(16.25, 0.0, 0.0), voltages_v=(230.5, 0.0, 0.0), frequency_hz=50.0)


def test_decode_block_names_the_bad_quantity_and_checks_length() -> None:
    import_block, export_block = plan_for(MODELS["ABB-B23"])[:2]
    with pytest.raises(NotAvailable, match=r"energy_export \(FC3 0x5004\): not available"):
        decode_block(export_block, [0xFFFF] * 4)
    with pytest.raises(NotAvailable, match=r"energy_import \(FC3 0x5000\): not available"):
        decode_block(import_block, [0xFFFF] * 4)
    with pytest.raises(ValueError, match="expected 4 registers, got 3") as info:
        decode_block(import_block, [0] * 3)
    assert not isinstance(info.value, NotAvailable)


def test_sample_without_phase_registers_reports_zeros() -> None:
    s = sample_from(MODELS["SDM72D-M"], {"power_total": -500.0, "energy_import": 10.0, "energy_export": 20.0})
    assert s == MeterSample(energy_wh_import=10.0, energy_wh_export=20.0, power_w=-500.0)


def test_sample_refuses_negative_energy_and_missing_values() -> None:
    v1 = MODELS["SDM72D-M"]
    with pytest.raises(ValueError, match="negative"):
        sample_from(v1, {"power_total": 0.0, "energy_import": -1.0, "energy_export": 0.0})
    with pytest.raises(ValueError, match="negative"):
        sample_from(v1, {"power_total": 0.0, "energy_import": 1.0, "energy_export": -0.5})
    with pytest.raises(ValueError, match=r"missing \['energy_export'\]"):  # not optional on an Eastron
        sample_from(v1, {"power_total": 0.0, "energy_import": 1.0})
    with pytest.raises(ValueError, match=r"missing \['voltage_l2'\]"):
        sample_from(MODELS["EM340"], dict.fromkeys(MODELS["EM340"].quantities() - {"voltage_l2"}, 1.0))


@pytest.mark.parametrize("model", ["ABB-B23", "EM24"])
def test_absent_optional_export_is_none(model: str) -> None:
    values = dict.fromkeys(MODELS[model].quantities() - {"energy_export"}, 50.0)
    sample = sample_from(MODELS[model], values)
    assert sample.energy_wh_export is None
    assert sample.energy_wh_import == 50.0
    with pytest.raises(ValueError, match=r"missing \['energy_import'\]"):
        sample_from(MODELS[model], dict.fromkeys(MODELS[model].quantities() - {"energy_import"}, 50.0))


def test_absent_optional_other_quantity_is_zero() -> None:
    regs = (reg("power_total", address=0), reg("energy_import", address=2), reg("energy_export", address=4),
            reg("frequency", address=6, optional=True))
    model = MeterModel(name="X", registers=regs, phases=3, max_count=80)
    sample = sample_from(model, {"power_total": 1.0, "energy_import": 2.0, "energy_export": 3.0})
    assert sample == MeterSample(energy_wh_import=2.0, energy_wh_export=3.0, power_w=1.0, frequency_hz=0.0)


@pytest.mark.parametrize(("hz", "want"), [
    (50.0, (50.0, "ok")), (45.0, (45.0, "ok")), (65.0, (65.0, "ok")), (59.95, (59.95, "ok")),
    (500.0, (50.0, "scaled_x10")), (499.5, (49.95, "scaled_x10")), (450.0, (45.0, "scaled_x10")),
    (650.0, (65.0, "scaled_x10")), (600.0, (60.0, "scaled_x10")),
    (0.0, (0.0, "implausible")), (44.99, (0.0, "implausible")), (65.01, (0.0, "implausible")),
    (449.9, (0.0, "implausible")), (650.1, (0.0, "implausible")), (5000.0, (0.0, "implausible")),
    (-50.0, (0.0, "implausible")),
])
def test_plausible_frequency(hz: float, want: tuple[float, str]) -> None:
    assert plausible_frequency(hz) == want


def test_sample_applies_the_frequency_check() -> None:
    model = MODELS["SDM120"]
    values = dict.fromkeys(model.quantities(), 1.0)
    assert sample_from(model, values | {"frequency": 500.0}).frequency_hz == 50.0
    assert sample_from(model, values | {"frequency": 49.9}).frequency_hz == 49.9
    assert sample_from(model, values | {"frequency": 5.0}).frequency_hz == 0.0


# ------------------------------------------------------------------------------------------------
# What a poll costs on an RTU line


def test_plan_wire_bytes_and_time() -> None:
    plan = plan_for(MODELS["SDM630"])  # (0x00, 12), (0x34, 24)
    assert plan_wire_bytes(plan) == (8 + 5 + 2 * 12) + (8 + 5 + 2 * 24)
    char_s = 11 / 9600
    assert plan_wire_time_s(plan) == pytest.approx((98 + 2 * 2 * 3.5) * char_s)
    assert plan_wire_time_s(plan, baud=38400) == pytest.approx(98 * 11 / 38400 + 4 * 0.00175)
    assert plan_wire_time_s(plan, bits_per_char=10) == pytest.approx((98 + 14) * 10 / 9600)
    assert plan_wire_bytes(()) == 0
    assert plan_wire_time_s(()) == 0.0
    with pytest.raises(ValueError, match="baud"):
        plan_wire_time_s(plan, baud=0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_plan_wire_bytes_counts_every_request(name: str) -> None:
    plan = plan_for(MODELS[name])
    assert plan_wire_bytes(plan) == sum(13 + 2 * b.count for b in plan)
    assert plan_wire_time_s(plan) > plan_wire_bytes(plan) * 11 / 9600


def test_power_sign_normalises_to_import_positive() -> None:
    flipped = MeterModel(name="X", registers=MODELS["SDM72D-M"].registers, phases=3, max_count=80, power_sign=-1)
    assert sample_from(flipped, {"power_total": 1000.0, "energy_import": 0.0, "energy_export": 0.0}).power_w == -1000.0


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
