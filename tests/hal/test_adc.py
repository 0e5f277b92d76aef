"""Tests of hal/adc.py (MCP3008 / MCP3208 on spidev, CP and PP inputs) against the fake spidev module of
tests/fakes, which answers the chips' serial protocol bit by bit: the exact command bytes per channel,
decoding with undefined bits masked, the null-bit check, calibration round trips for CP and PP, the
median against spikes, and every failure as a HardwareError naming the device.
"""

from __future__ import annotations

import itertools
import sys
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from firmware.core.errors import HardwareError
from tests.support.fakes import fresh_fake
from hal.adc import (
    DEFAULT_CP_CALIBRATION,
    DEFAULT_PP_CALIBRATION,
    AdcPilotInputs,
    CpCalibration,
    Mcp3x08,
    PilotChannels,
    PpCalibration,
    command,
    decode,
)
from hal.protocols import PilotSample

if TYPE_CHECKING:
    from tests.fakes.spidev import FakeMcp

VREF = 3.3
#: One LSB of the MCP3008 in pilot volts through the default front end (24 V over 1024 codes).
CP_LSB_V = 24.0 / 1024


@pytest.fixture
def spidev(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The fake spidev, imported fresh (empty FAKE_BUSES) and removed from sys.modules afterwards."""
    return fresh_fake(monkeypatch, "spidev")


@pytest.fixture
def mcp(spidev: ModuleType) -> FakeMcp:
    fake: FakeMcp = spidev.FakeMcp(chip="MCP3008", vref_v=VREF)
    spidev.FAKE_BUSES[(0, 0)] = fake
    return fake


@pytest.fixture
def adc(mcp: FakeMcp) -> Mcp3x08:
    a = Mcp3x08()
    a.open()
    return a


def volts_for_code(code: int, bits: int = 10) -> float:
    """The middle of the code's bin at the ADC pin."""
    return (code + 0.5) * VREF / (1 << bits)


# --- the wire protocol ----------------------------------------------------------------------------

COMMANDS = [
    ("MCP3008", 0, [0x01, 0x80, 0x00]),
    ("MCP3008", 1, [0x01, 0x90, 0x00]),
    ("MCP3008", 2, [0x01, 0xA0, 0x00]),
    ("MCP3008", 3, [0x01, 0xB0, 0x00]),
    ("MCP3008", 4, [0x01, 0xC0, 0x00]),
    ("MCP3008", 5, [0x01, 0xD0, 0x00]),
    ("MCP3008", 6, [0x01, 0xE0, 0x00]),
    ("MCP3008", 7, [0x01, 0xF0, 0x00]),
    ("MCP3208", 0, [0x06, 0x00, 0x00]),
    ("MCP3208", 1, [0x06, 0x40, 0x00]),
    ("MCP3208", 2, [0x06, 0x80, 0x00]),
    ("MCP3208", 3, [0x06, 0xC0, 0x00]),
    ("MCP3208", 4, [0x07, 0x00, 0x00]),
    ("MCP3208", 5, [0x07, 0x40, 0x00]),
    ("MCP3208", 6, [0x07, 0x80, 0x00]),
    ("MCP3208", 7, [0x07, 0xC0, 0x00]),
]


@pytest.mark.parametrize(("chip", "channel", "tx"), COMMANDS)
def test_command_bytes_reach_the_wire(spidev: ModuleType, chip: str, channel: int, tx: list[int]) -> None:
    fake: FakeMcp = spidev.FakeMcp(chip=chip, vref_v=VREF)
    spidev.FAKE_BUSES[(0, 1)] = fake
    fake.set_volts(channel, VREF / 2)
    adc = Mcp3x08(device=1, chip=chip)  # type: ignore[arg-type]
    adc.open()
    assert command(chip, channel) == tx  # type: ignore[arg-type]
    code = adc.read_raw(channel)
    assert fake.last_tx == bytes(tx)
    assert code == adc.full_scale // 2  # the chip decoded the channel we meant
    adc.close()


def test_command_is_a_new_list_each_time() -> None:
    """py-spidev writes the reply into the list it is given."""
    first = command("MCP3008", 3)
    first[:] = [0xFF, 0xFF, 0xFF]
    assert command("MCP3008", 3) == [0x01, 0xB0, 0x00]


@pytest.mark.parametrize("channel", [-1, 8, True])
def test_command_refuses_a_bad_channel(channel: int) -> None:
    with pytest.raises(ValueError, match="0..7"):
        command("MCP3008", channel)


@pytest.mark.parametrize("code", [0, 1, 511, 512, 1022, 1023])
def test_mcp3008_codes(adc: Mcp3x08, mcp: FakeMcp, code: int) -> None:
    mcp.set_volts(5, volts_for_code(code))
    assert adc.read_raw(5) == code
    assert adc.read_volts(5) == pytest.approx(code * VREF / 1024)


@pytest.mark.parametrize("code", [0, 1, 2047, 2048, 4094, 4095])
def test_mcp3208_codes(spidev: ModuleType, code: int) -> None:
    fake: FakeMcp = spidev.FakeMcp(chip="MCP3208", vref_v=VREF)
    spidev.FAKE_BUSES[(1, 0)] = fake
    fake.set_volts(6, volts_for_code(code, bits=12))
    adc = Mcp3x08(bus=1, chip="MCP3208")
    adc.open()
    assert adc.read_raw(6) == code
    assert adc.read_volts(6) == pytest.approx(code * VREF / 4096)


def test_full_scale_and_below_zero_clamp(adc: Mcp3x08, mcp: FakeMcp) -> None:
    mcp.set_volts(0, VREF + 1.0)
    mcp.set_volts(1, -0.5)
    assert adc.read_raw(0) == 1023
    assert adc.read_raw(1) == 0


@pytest.mark.parametrize(
    ("chip", "tx", "rx"),
    [
        # MCP3008 code 0x2A5: ? ? ? ? ? 0 B9 B8 | B7..B0, undefined bits read as 1
        ("MCP3008", [0x01, 0x80, 0x00], [0xFF, 0xFA, 0xA5]),
        # more clocks: LSB first after B0 (B1..B9), then zeros
        ("MCP3008", [0x01, 0x80, 0x00, 0x00, 0x00], [0xFF, 0xFA, 0xA5, 0x4A, 0x80]),
        # the start bit anywhere: leading zeros are ignored (5-bit shift: null bit lands on bit 5 of byte 2)
        ("MCP3008", [0x00, 0x0C, 0x00, 0x00], [0xFF, 0xFF, 0xD5, 0x2A]),
        # MCP3208 code 0xA5C: ? ? ? 0 B11..B8 | B7..B0
        ("MCP3208", [0x06, 0x00, 0x00], [0xFF, 0xEA, 0x5C]),
        # no start bit at all: nothing but undefined bits
        ("MCP3008", [0x00, 0x00, 0x00], [0xFF, 0xFF, 0xFF]),
    ],
)
def test_fake_chip_is_bit_exact(spidev: ModuleType, chip: str, tx: list[int], rx: list[int]) -> None:
    """The fake itself, against the datasheet's Figure 6-1 worked by hand."""
    fake: FakeMcp = spidev.FakeMcp(chip=chip, vref_v=VREF)
    code = 0x2A5 if chip == "MCP3008" else 0xA5C
    fake.set_volts(0, volts_for_code(code, bits=10 if chip == "MCP3008" else 12))
    assert list(fake.transfer(bytes(tx), mode=0, lsb_first=False, speed_hz=1_000_000)) == rx


def test_fake_pseudo_differential(spidev: ModuleType) -> None:
    fake: FakeMcp = spidev.FakeMcp(chip="MCP3008", vref_v=VREF)
    fake.set_volts(2, volts_for_code(700))
    fake.set_volts(3, 200 * VREF / 1024)
    # SGL/DIFF = 0, D = 010: IN+ = CH2, IN- = CH3; D = 011 the other way round (clamped to 0)
    assert decode("MCP3008", list(fake.transfer(bytes([0x01, 0x20, 0x00]), mode=0, lsb_first=False,
                                                speed_hz=1_000_000))) == 500
    assert decode("MCP3008", list(fake.transfer(bytes([0x01, 0x30, 0x00]), mode=0, lsb_first=False,
                                                speed_hz=1_000_000))) == 0


def test_random_garbage_in_the_undefined_bits_is_masked(spidev: ModuleType) -> None:
    fake: FakeMcp = spidev.FakeMcp(chip="MCP3008", vref_v=VREF, seed=1234)
    spidev.FAKE_BUSES[(0, 0)] = fake
    adc = Mcp3x08()
    adc.open()
    seen_high_bits = set()
    for code, ch in zip(range(0, 1024, 37), itertools.cycle(range(8)), strict=False):
        fake.set_volts(ch, volts_for_code(code))
        assert adc.read_raw(ch) == code
    for _ in range(20):
        rx = fake.transfer(bytes([0x01, 0x80, 0x00]), mode=0, lsb_first=False, speed_hz=1_000_000)
        seen_high_bits.add(rx[1] & 0xF8)
    assert len(seen_high_bits) > 1  # the garbage really varies


def test_no_null_bit_is_a_hardware_error(adc: Mcp3x08, mcp: FakeMcp) -> None:
    mcp.max_clock_hz = 500_000  # clocked too fast for this chip: DOUT is meaningless (all ones)
    with pytest.raises(HardwareError, match=r"/dev/spidev0.0: channel 4: no null bit in the reply ffffff"):
        adc.read_raw(4)


def test_decode_masks_and_checks_the_null_bit() -> None:
    assert decode("MCP3008", [0xFF, 0xFB, 0xFF]) == 1023
    assert decode("MCP3008", [0xFF, 0xFC, 0x00]) is None
    assert decode("MCP3208", [0xFF, 0xEF, 0xFF]) == 4095
    assert decode("MCP3208", [0xFF, 0xF0, 0x00]) is None


def test_open_sets_speed_and_mode(adc: Mcp3x08, mcp: FakeMcp) -> None:
    mcp.set_volts(0, volts_for_code(300))
    assert adc.read_raw(0) == 300  # mode 1 or 2 would read garbage
    assert mcp.last_speed_hz == 1_000_000  # not the driver's 125 MHz default


# --- failures -------------------------------------------------------------------------------------


def test_missing_device_names_the_path(mcp: FakeMcp) -> None:
    adc = Mcp3x08(bus=0, device=1)
    with pytest.raises(HardwareError) as info:
        adc.open()
    assert str(info.value) == "ADC: /dev/spidev0.1 not found: enable SPI (dtparam=spi=on in /boot/firmware/config.txt)"
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_permission_denied(mcp: FakeMcp) -> None:
    mcp.open_error = PermissionError(13, "Permission denied")
    with pytest.raises(HardwareError, match=r"^ADC: /dev/spidev0.0: Permission denied \(is the user in the spi group"):
        Mcp3x08().open()


def test_transfer_error_is_a_hardware_error(adc: Mcp3x08, mcp: FakeMcp) -> None:
    mcp.fail = OSError(5, "Input/output error")
    with pytest.raises(HardwareError, match=r"^ADC MCP3008 on /dev/spidev0.0: channel 2: Input/output error$") as info:
        adc.read_raw(2)
    assert info.value.__cause__ is mcp.fail


def test_missing_spidev_module_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)  # `import spidev` raises ImportError
    with pytest.raises(HardwareError) as info:
        Mcp3x08().open()
    assert str(info.value) == "spidev is not installed: pip install 'charger-firmware[rpi]' (or pip install spidev)"
    assert isinstance(info.value.__cause__, ImportError)


def test_read_before_open(mcp: FakeMcp) -> None:
    with pytest.raises(RuntimeError, match="not open"):
        Mcp3x08().read_raw(0)


# --- calibration and the Pilot inputs -------------------------------------------------------------


def cp_adc_volts(pilot_v: float) -> float:
    """The default front end: -12..+12 V onto 0..3.3 V."""
    return (pilot_v + 12.0) * VREF / 24.0


@pytest.fixture
def inputs(mcp: FakeMcp) -> AdcPilotInputs:
    chans = {
        1: PilotChannels(cp_hi=0, cp_lo=1, pp=2, pp_cal=DEFAULT_PP_CALIBRATION),
        2: PilotChannels(cp_hi=3, cp_lo=4),  # tethered cable: no PP
    }
    return AdcPilotInputs(Mcp3x08(), chans)


@pytest.mark.parametrize("pilot_v", [12.0, 9.0, 6.0, 3.0, 0.0, -12.0])
async def test_cp_round_trip_within_one_lsb(inputs: AdcPilotInputs, mcp: FakeMcp, pilot_v: float) -> None:
    mcp.set_volts(0, cp_adc_volts(pilot_v))
    mcp.set_volts(1, cp_adc_volts(-12.0))
    async with inputs:
        sample = await inputs.read_cp(1)
    assert abs(sample.volts_hi - pilot_v) <= CP_LSB_V * (1 + 1e-9)
    assert abs(sample.volts_lo - -12.0) <= CP_LSB_V * (1 + 1e-9)


def test_cp_calibration_arithmetic() -> None:
    assert DEFAULT_CP_CALIBRATION.pilot_volts(0.0) == pytest.approx(-12.0)
    assert DEFAULT_CP_CALIBRATION.pilot_volts(3.3) == pytest.approx(12.0)
    assert DEFAULT_CP_CALIBRATION.pilot_volts(1.65) == pytest.approx(0.0)
    assert CpCalibration(scale=-2.0, offset_v=1.0).pilot_volts(1.0) == pytest.approx(-1.0)


@pytest.mark.parametrize("ohms", [1500.0, 680.0, 220.0, 100.0, 2460.0])
async def test_pp_round_trip_within_two_percent(inputs: AdcPilotInputs, mcp: FakeMcp, ohms: float) -> None:
    mcp.set_volts(2, VREF * ohms / (1000.0 + ohms))
    async with inputs:
        rc = await inputs.read_pp(1)
    assert rc is not None
    assert rc == pytest.approx(ohms, rel=0.02)


async def test_pp_open_and_short(inputs: AdcPilotInputs, mcp: FakeMcp) -> None:
    async with inputs:
        mcp.set_volts(2, VREF)  # no cable: the pull-up alone
        assert await inputs.read_pp(1) is None
        mcp.set_volts(2, 0.0)
        assert await inputs.read_pp(1) == 0.0


def test_pp_open_threshold() -> None:
    cal = DEFAULT_PP_CALIBRATION
    assert cal.ohms(0.98 * 3.3) is None
    just_below = cal.ohms(0.979 * 3.3)
    assert just_below is not None
    assert just_below > 40_000  # far above the 2460 Ohm top of IEC 61851-1 Table B.2
    assert PpCalibration(pullup_ohms=330.0, supply_v=5.0, scale=2.0).ohms(1.25) == pytest.approx(330.0)


async def test_tethered_evse_has_no_pp(inputs: AdcPilotInputs, mcp: FakeMcp) -> None:
    async with inputs:
        before = mcp.transfers
        assert await inputs.read_pp(2) is None
        assert mcp.transfers == before


async def test_median_rejects_one_spike(inputs: AdcPilotInputs, mcp: FakeMcp) -> None:
    conversions: list[int] = []

    def volts_of(channel: int) -> float:
        conversions.append(channel)
        if channel == 0 and conversions.count(0) == 2:
            return cp_adc_volts(12.0)  # one spike to +12 V in the middle of B
        return cp_adc_volts(9.0 if channel == 0 else -12.0)

    mcp.volts_of = volts_of
    async with inputs:
        sample = await inputs.read_cp(1)
    assert conversions == [0, 0, 0, 1, 1, 1]
    assert abs(sample.volts_hi - 9.0) <= CP_LSB_V


async def test_read_cp_counts_and_type(inputs: AdcPilotInputs, mcp: FakeMcp) -> None:
    async with inputs:
        sample = await inputs.read_cp(2)
        await inputs.read_pp(1)
    assert isinstance(sample, PilotSample)
    assert mcp.transfers == 9  # 3 + 3 for the CP, 3 for the PP
    with pytest.raises(RuntimeError, match="not open"):
        await inputs.read_cp(1)  # closed on leaving


async def test_unknown_cid(inputs: AdcPilotInputs) -> None:
    with pytest.raises(ValueError, match=r"no ADC channels configured for c3 \(have \[1, 2\]\)"):
        await inputs.read_cp(3)
    with pytest.raises(ValueError, match="c3"):
        await inputs.read_pp(3)


# --- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cp_hi": 0, "cp_lo": 0}, "must differ"),
        ({"cp_hi": 0, "cp_lo": 1, "pp": 1, "pp_cal": DEFAULT_PP_CALIBRATION}, "must differ"),
        ({"cp_hi": 8, "cp_lo": 1}, "cp_hi must be an ADC channel 0..7"),
        ({"cp_hi": 0, "cp_lo": -1}, "cp_lo"),
        ({"cp_hi": 0, "cp_lo": 1, "pp": 2}, "pp and pp_cal go together"),
        ({"cp_hi": 0, "cp_lo": 1, "pp_cal": DEFAULT_PP_CALIBRATION}, "pp and pp_cal go together"),
    ],
)
def test_pilot_channels_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PilotChannels(**kwargs)  # type: ignore[arg-type]


def test_calibration_validation() -> None:
    with pytest.raises(ValueError, match="scale"):
        CpCalibration(scale=0.0, offset_v=-12.0)
    with pytest.raises(ValueError, match="offset_v"):
        CpCalibration(scale=1.0, offset_v=float("nan"))
    with pytest.raises(ValueError, match="pullup_ohms"):
        PpCalibration(pullup_ohms=0.0, supply_v=3.3)
    with pytest.raises(ValueError, match="supply_v"):
        PpCalibration(pullup_ohms=1000.0, supply_v=-1.0)


def test_inputs_validation() -> None:
    adc = Mcp3x08()
    with pytest.raises(ValueError, match="at least one"):
        AdcPilotInputs(adc, {})
    with pytest.raises(ValueError, match="ADC channel 1 is used by c1 and c2"):
        AdcPilotInputs(adc, {1: PilotChannels(cp_hi=0, cp_lo=1), 2: PilotChannels(cp_hi=1, cp_lo=2)})
    for oversample in (0, 2, -1):
        with pytest.raises(ValueError, match="odd"):
            AdcPilotInputs(adc, {1: PilotChannels(cp_hi=0, cp_lo=1)}, oversample=oversample)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"chip": "MCP3004"}, "MCP3008 or MCP3208"),
        ({"bus": -1}, "bus"),
        ({"vref_v": 0.0}, "vref_v"),
        ({"speed_hz": 5_000}, "speed_hz"),
        ({"speed_hz": 3_700_000}, "speed_hz"),
        ({"chip": "MCP3208", "speed_hz": 3_000_000}, "speed_hz for the MCP3208"),
    ],
)
def test_adc_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Mcp3x08(**kwargs)  # type: ignore[arg-type]
