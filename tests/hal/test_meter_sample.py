"""Pure tests of decoding responses into a `MeterSample`: absent optional quantities, the frequency
plausibility check, power normalised to import positive (no I/O)."""

from __future__ import annotations

import pytest

from hal.meter import (
    MODELS,
    MeterModel,
    NotAvailable,
    Register,
    decode_block,
    encode_register,
    plan_for,
    plan_reads,
    plausible_frequency,
    sample_from,
)
from hal.protocols import MeterSample

def reg(quantity: str = "power_total", fc: int = 4, address: int = 0, dtype: str = "float32",
        word_order: str = "big", scale: float = 1.0, optional: bool = False) -> Register:
    return Register(
        quantity=quantity, fc=fc, address=address, dtype=dtype, word_order=word_order, scale=scale,  # type: ignore[arg-type]
        optional=optional,
    )


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


def test_power_sign_normalises_to_import_positive() -> None:
    flipped = MeterModel(name="X", registers=MODELS["SDM72D-M"].registers, phases=3, max_count=80, power_sign=-1)
    assert sample_from(flipped, {"power_total": 1000.0, "energy_import": 0.0, "energy_export": 0.0}).power_w == -1000.0
