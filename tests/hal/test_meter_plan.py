"""Pure tests of read planning: which requests a poll makes (per-model limits, optional registers alone,
documented registers only), and what a poll costs on an RTU line (no I/O)."""

from __future__ import annotations

import pytest

from hal.meter import (
    MODELS,
    PHASE_QUANTITIES,
    ReadBlock,
    Register,
    plan_for,
    plan_reads,
    plan_wire_bytes,
    plan_wire_time_s,
)

def reg(quantity: str = "power_total", fc: int = 4, address: int = 0, dtype: str = "float32",
        word_order: str = "big", scale: float = 1.0, optional: bool = False) -> Register:
    return Register(
        quantity=quantity, fc=fc, address=address, dtype=dtype, word_order=word_order, scale=scale,  # type: ignore[arg-type]
        optional=optional,
    )


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
