"""Tests of hal/pwm.py, the CP PWM on the Linux PWM sysfs interface, against a temporary sysfs tree
(tests/support/sysfs_pwm.py) with a model of the kernel's checks behind it: the duty table and its
rounding, the order of the writes at open (never period 0 or duty > period, polarity only while
disabled), export and its timeout, missing chips and channels, failing writes, and the F level at close.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from firmware.core.errors import HardwareError
from hal.pwm import PwmChannel, SysfsPwm
from tests.support.sysfs_pwm import Kernel, PwmState, PwmTree

PERIOD_1KHZ = 1_000_000
F_LEVEL = PwmState(period_ns=PERIOD_1KHZ, duty_ns=0, enabled=True, polarity="normal")


@pytest.fixture
def tree(tmp_path: Path) -> PwmTree:
    t = PwmTree(tmp_path / "pwm")
    t.add_chip(0, npwm=2)
    return t


@pytest.fixture
def kernel(tree: PwmTree, monkeypatch: pytest.MonkeyPatch) -> Kernel:
    return Kernel(tree).install(monkeypatch)


@pytest.fixture
async def pwm(tree: PwmTree, kernel: Kernel) -> AsyncIterator[SysfsPwm]:
    async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root) as p:
        yield p


# --- open: export and the order of the writes -----------------------------------------------------


async def test_open_exports_and_configures_in_the_kernels_order(tree: PwmTree, kernel: Kernel) -> None:
    async with SysfsPwm({1: PwmChannel(chip=0, channel=1)}, root=tree.root):
        assert tree.state(0, 1) == F_LEVEL
        writes = list(kernel.writes)
    # a fresh export has period 0, and the kernel refuses every store until the period is set
    assert writes == [
        ("pwmchip0/export", "1"),
        ("pwmchip0/pwm1/period", "1000000"),
        ("pwmchip0/pwm1/duty_cycle", "0"),
        ("pwmchip0/pwm1/enable", "1"),
    ]
    assert kernel.refused == []


@pytest.mark.parametrize(
    ("period_ns", "duty_ns"),
    [(20_000_000, 15_000_000), (500_000, 500_000), (1_000_000, 1_000_000), (700_000, 1)],
    ids=["longer-period", "shorter-period-full-duty", "same-period", "shorter-period"],
)
async def test_open_takes_over_a_running_channel_without_a_refused_write(
    tree: PwmTree, kernel: Kernel, period_ns: int, duty_ns: int
) -> None:
    tree.add_channel(0, 0, period_ns=period_ns, duty_ns=duty_ns, enabled=True)
    async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root):
        assert tree.state(0, 0) == F_LEVEL
        writes = kernel.writes_to(0, 0)
    assert writes == [
        ("enable", "0"), ("duty_cycle", "0"), ("period", "1000000"), ("enable", "1"),
    ]
    assert kernel.refused == []
    assert ("pwmchip0/export", "0") not in kernel.writes


async def test_inverted_sets_polarity_while_disabled(tree: PwmTree, kernel: Kernel) -> None:
    tree.add_channel(0, 0, period_ns=PERIOD_1KHZ, duty_ns=400_000, enabled=True)
    async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root, inverted=True) as pwm:
        assert tree.state(0, 0) == PwmState(period_ns=PERIOD_1KHZ, duty_ns=0, enabled=True, polarity="inversed")
        await pwm.set_duty(1, 26.6)
        # the duty written is still the share of the period at +12 V; the polarity does the inversion
        assert tree.state(0, 0).duty_ns == 266_000
    writes = kernel.writes_to(0, 0)
    assert writes.index(("polarity", "inversed")) < writes.index(("enable", "1"))
    assert writes.index(("enable", "0")) < writes.index(("polarity", "inversed"))
    assert kernel.refused == []


async def test_normal_polarity_is_restored_and_not_rewritten_when_right(tree: PwmTree, kernel: Kernel) -> None:
    tree.add_channel(0, 0, period_ns=PERIOD_1KHZ, enabled=True, polarity="inversed")
    tree.add_channel(0, 1, period_ns=PERIOD_1KHZ, enabled=False, polarity="normal")
    chans = {1: PwmChannel(chip=0, channel=0), 2: PwmChannel(chip=0, channel=1)}
    async with SysfsPwm(chans, root=tree.root):
        assert tree.state(0, 0).polarity == tree.state(0, 1).polarity == "normal"
        assert ("polarity", "normal") in kernel.writes_to(0, 0)
        assert [a for a, _ in kernel.writes_to(0, 1)] == ["duty_cycle", "period", "enable"]


async def test_the_kernel_model_refuses_what_the_kernel_refuses(tree: PwmTree, kernel: Kernel) -> None:
    """The model is what makes the order tests meaningful: check it refuses the three bad writes."""
    tree.add_channel(0, 0)
    with pytest.raises(OSError, match="Invalid argument"):
        kernel.write(tree.path(0, 0, "enable"), "0")  # period still 0
    tree.add_channel(0, 1, period_ns=PERIOD_1KHZ, duty_ns=600_000, enabled=True)
    with pytest.raises(OSError, match="Invalid argument"):
        kernel.write(tree.path(0, 1, "period"), "500000")  # duty would exceed the period
    with pytest.raises(OSError, match="busy"):
        kernel.write(tree.path(0, 1, "polarity"), "inversed")  # while enabled
    assert len(kernel.refused) == 3
    assert tree.state(0, 1) == PwmState(period_ns=PERIOD_1KHZ, duty_ns=600_000, enabled=True, polarity="normal")


async def test_export_waits_for_udev(tree: PwmTree, monkeypatch: pytest.MonkeyPatch) -> None:
    Kernel(tree, export_delay_s=0.03).install(monkeypatch)
    async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root):
        assert tree.state(0, 0) == F_LEVEL


async def test_export_timeout_names_the_path(tree: PwmTree, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = Kernel(tree, export_delay_s=None).install(monkeypatch)
    pwm = SysfsPwm({1: PwmChannel(chip=0, channel=1)}, root=tree.root, export_timeout_s=0.05)
    with pytest.raises(HardwareError, match="not ready 0.05 s after export") as info:
        await pwm.open()
    assert f"{tree.path(0, 1)}:" in str(info.value)
    assert kernel.writes == [("pwmchip0/export", "1")]


# --- missing hardware ---------------------------------------------------------------------------


async def test_unknown_chip_lists_the_chips_there_are(tree: PwmTree) -> None:
    tree.add_chip(2)
    tree.add_chip(10)
    pwm = SysfsPwm({1: PwmChannel(chip=3, channel=0)}, root=tree.root)
    with pytest.raises(HardwareError) as info:
        await pwm.open()
    assert str(info.value) == (
        f"PWM chip pwmchip3 not found under {tree.root} (have: pwmchip0, pwmchip2, pwmchip10); "
        "enable it with dtoverlay=pwm-2chan"
    )


async def test_no_pwm_class_at_all(tmp_path: Path) -> None:
    pwm = SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tmp_path / "absent")
    with pytest.raises(HardwareError, match=r"pwmchip0 not found under .*absent \(have: none\)"):
        await pwm.open()


async def test_channel_beyond_npwm(tree: PwmTree, kernel: Kernel) -> None:
    pwm = SysfsPwm({1: PwmChannel(chip=0, channel=2)}, root=tree.root)
    with pytest.raises(HardwareError, match=r"pwmchip0: channel 2 does not exist \(npwm = 2"):
        await pwm.open()
    assert kernel.writes == []


# --- the duty ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duty_pct", "duty_ns"),
    [
        (0.0, 0),
        (100.0, PERIOD_1KHZ),
        (53.3, 533_000),
        (53.35, 533_000),
        (53.399, 533_000),
        (26.6, 266_000),
        (10.0, 100_000),
        (5.0, 50_000),
        (96.0, 960_000),
        (99.99, 999_000),
        (0.09, 0),
        (0.1, 1_000),
        (16, 160_000),
    ],
)
async def test_duty_table_rounds_down(pwm: SysfsPwm, tree: PwmTree, duty_pct: float, duty_ns: int) -> None:
    await pwm.set_duty(1, 50.0)
    await pwm.set_duty(1, duty_pct)
    assert tree.state(0, 0) == PwmState(period_ns=PERIOD_1KHZ, duty_ns=duty_ns, enabled=True, polarity="normal")


@pytest.mark.parametrize(
    ("frequency_hz", "period_ns", "duty_533_ns"),
    [(1000.0, 1_000_000, 533_000), (2000.0, 500_000, 266_500), (980.0, 1_020_408, 543_877)],
)
async def test_frequency_sets_the_period(
    tree: PwmTree, kernel: Kernel, frequency_hz: float, period_ns: int, duty_533_ns: int
) -> None:
    async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root, frequency_hz=frequency_hz) as pwm:
        assert pwm.period_ns == period_ns
        await pwm.set_duty(1, 53.3)
        assert tree.state(0, 0).period_ns == period_ns
        assert tree.state(0, 0).duty_ns == duty_533_ns
        assert duty_533_ns <= math.floor(period_ns * 0.533)  # never more than asked
        await pwm.set_duty(1, 100.0)
        assert tree.state(0, 0).duty_ns == period_ns
    assert kernel.refused == []


async def test_set_duty_is_idempotent(pwm: SysfsPwm, kernel: Kernel) -> None:
    await pwm.set_duty(1, 26.6)
    await pwm.set_duty(1, 26.6)
    await pwm.set_duty(1, 26.65)  # the same 0.1 % step: the same ns
    await pwm.set_duty(1, 0.0)
    await pwm.set_duty(1, 0.0)
    assert kernel.writes_to(0, 0)[-2:] == [("duty_cycle", "266000"), ("duty_cycle", "0")]
    assert kernel.writes_to(0, 0).count(("duty_cycle", "266000")) == 1


async def test_every_duty_keeps_the_kernels_invariant(pwm: SysfsPwm, tree: PwmTree, kernel: Kernel) -> None:
    for tenths in range(0, 1001, 7):
        await pwm.set_duty(1, tenths / 10)
        s = tree.state(0, 0)
        assert 0 <= s.duty_ns <= s.period_ns
        assert s.enabled
        assert s.duty_ns == tenths * 1000
    assert kernel.refused == []


@pytest.mark.parametrize("duty_pct", [-0.1, 100.1, math.nan, math.inf])
async def test_duty_out_of_range(pwm: SysfsPwm, tree: PwmTree, duty_pct: float) -> None:
    with pytest.raises(ValueError, match="duty_pct"):
        await pwm.set_duty(1, duty_pct)
    assert tree.state(0, 0) == F_LEVEL


async def test_unknown_cid(pwm: SysfsPwm) -> None:
    with pytest.raises(ValueError, match=r"no PWM channel configured for c2 \(have \[1\]\)"):
        await pwm.set_duty(2, 50.0)


async def test_set_duty_before_open(tree: PwmTree) -> None:
    pwm = SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root)
    with pytest.raises(RuntimeError, match="before open"):
        await pwm.set_duty(1, 50.0)


async def test_two_evses_are_independent(tree: PwmTree, kernel: Kernel) -> None:
    tree.add_chip(1, npwm=1)
    chans = {1: PwmChannel(chip=0, channel=1), 2: PwmChannel(chip=1, channel=0)}
    async with SysfsPwm(chans, root=tree.root) as pwm:
        await pwm.set_duty(1, 100.0)
        await pwm.set_duty(2, 16.0)
        assert tree.state(0, 1).duty_ns == PERIOD_1KHZ
        assert tree.state(1, 0).duty_ns == 160_000
    assert tree.state(0, 1) == tree.state(1, 0) == F_LEVEL
    assert kernel.refused == []


# --- failures and close ----------------------------------------------------------------------------


async def test_a_failing_write_raises_hardware_error_and_is_retried(tree: PwmTree) -> None:
    """No kernel model: a directory in place of the attribute fails even for root."""
    tree.add_channel(0, 0)
    async with SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root) as pwm:
        duty = tree.path(0, 0, "duty_cycle")
        duty.unlink()
        duty.mkdir()
        with pytest.raises(HardwareError) as info:
            await pwm.set_duty(1, 50.0)
        assert str(info.value) == f"PWM {duty}: Is a directory"
        assert isinstance(info.value.__cause__, OSError)
        duty.rmdir()
        duty.write_text("0\n")
        await pwm.set_duty(1, 50.0)  # not skipped as "unchanged": the failed write left it unknown
        assert tree.state(0, 0).duty_ns == 500_000


async def test_a_refused_write_raises_hardware_error(pwm: SysfsPwm, tree: PwmTree) -> None:
    # someone else shortened the period under us: the kernel refuses duty > period
    tree.path(0, 0, "period").write_text("500000\n")
    with pytest.raises(HardwareError, match=r"duty_cycle: Invalid argument$"):
        await pwm.set_duty(1, 100.0)


async def test_a_missing_attribute_is_not_created(tree: PwmTree) -> None:
    tree.add_channel(0, 0)
    tree.path(0, 0, "polarity").unlink()
    pwm = SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root, export_timeout_s=0.0)
    with pytest.raises(HardwareError, match=r"pwm0: not ready 0 s after export \(missing or not writable: polarity;"):
        await pwm.open()
    assert not tree.path(0, 0, "polarity").exists()


async def test_close_leaves_f_enabled_and_exported(tree: PwmTree, kernel: Kernel) -> None:
    pwm = SysfsPwm({1: PwmChannel(chip=0, channel=0)}, root=tree.root)
    await pwm.open()
    await pwm.set_duty(1, 100.0)
    pwm.close()
    assert tree.state(0, 0) == F_LEVEL
    assert not any(path.endswith("unexport") for path, _ in kernel.writes)
    assert kernel.writes_to(0, 0)[-1] == ("duty_cycle", "0")


async def test_close_tries_every_channel_then_raises(tree: PwmTree, kernel: Kernel) -> None:
    chans = {1: PwmChannel(chip=0, channel=0), 2: PwmChannel(chip=0, channel=1)}
    pwm = SysfsPwm(chans, root=tree.root)
    await pwm.open()
    await pwm.set_duty(1, 50.0)
    await pwm.set_duty(2, 50.0)
    duty = tree.path(0, 0, "duty_cycle")
    duty.unlink()
    with pytest.raises(HardwareError, match="No such file or directory"):
        pwm.close()
    assert tree.state(0, 1).duty_ns == 0


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("chip", "channel"), [(-1, 0), (0, -1), (True, 0)])
def test_pwm_channel_validation(chip: int, channel: int) -> None:
    with pytest.raises(ValueError, match="PwmChannel"):
        PwmChannel(chip=chip, channel=channel)


def test_constructor_validation(tree: PwmTree) -> None:
    ch = PwmChannel(chip=0, channel=0)
    with pytest.raises(ValueError, match="at least one"):
        SysfsPwm({}, root=tree.root)
    with pytest.raises(ValueError, match="c2 and c1 share pwmchip0/pwm0"):
        SysfsPwm({1: ch, 2: PwmChannel(chip=0, channel=0)}, root=tree.root)
    with pytest.raises(ValueError, match="frequency_hz"):
        SysfsPwm({1: ch}, root=tree.root, frequency_hz=0.0)
    with pytest.raises(ValueError, match="too high"):
        SysfsPwm({1: ch}, root=tree.root, frequency_hz=2e6)
    with pytest.raises(ValueError, match="export_timeout_s"):
        SysfsPwm({1: ch}, root=tree.root, export_timeout_s=-1.0)
