"""`hal.meter.ModbusMeter` against real Modbus servers: pymodbus' own server over TCP (127.0.0.1,
ephemeral port) and over RTU through a `socat` pty pair, plus a raw asyncio server that answers
garbage.

The emulated meters are built from `METER_FORMATS` (tests/support/modbus.py), a second transcription
of METERS.md that does not use hal/meter.py's tables or encoder, so a wrong address, type, word order
or scale in the maps shows up as a wrong sample; and they refuse, as the real meters do, a request for
more registers than the model answers at once (limits transcribed from METERS.md as well). The values
are chosen to be exact in every format (float32 and the integer scales), so samples are compared with
`==`.

Failures must come out as `HardwareError` and nothing else, within the configured timeout, and the
meter must read again once the server is back. Every test is a few hundred milliseconds; an autouse
fixture fails any test that leaves an asyncio task behind.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.core.errors import HardwareError
from hal.meter import MODELS, ModbusMeter
from tests.support.modbus import (
    EM24_PARTIAL,
    FAST_S,
    GARBAGE_MODES,
    IMPORTING,
    SLACK_S,
    LOOPBACK,
    METER_FORMATS,
    RequestLog,
    Servers,
    encode_registers,
    expected_sample,
    garbage_server,
    meter_device,
)

pytestmark = pytest.mark.integration

EXPORTING = IMPORTING | {"power_total": -3500.5, "current_l1": 5.5, "energy_export": 98765.5}




# ------------------------------------------------------------------------------------------------
# Fixtures








# ------------------------------------------------------------------------------------------------
# Reading every model


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("wire", [IMPORTING, EXPORTING], ids=["importing", "exporting"])
async def test_tcp_reads_exact_sample(
    model: str, wire: dict[str, float], servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    port = await servers.tcp(meter_device(model, wire, device_id=3))
    async with meters(model, f"tcp://{LOOPBACK}:{port}", device_id=3) as meter:
        assert await meter.read() == expected_sample(model, wire)
        assert await meter.read() == expected_sample(model, wire)  # the connection is reused
        assert meter.connected


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_rtu_reads_exact_sample(model: str, pty_pair: tuple[Path, Path], servers: Servers,
                                      meters: Callable[..., ModbusMeter]) -> None:
    a, b = pty_pair
    await servers.rtu(meter_device(model, IMPORTING, device_id=7), b)
    async with meters(model, f"rtu://{a}?baud=9600&parity=N&stopbits=1", device_id=7) as meter:
        assert await meter.read() == expected_sample(model, IMPORTING)
        assert await meter.read() == expected_sample(model, IMPORTING)


# ------------------------------------------------------------------------------------------------
# Failures


async def elapsed(coro_fn: Callable[[], object]) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(HardwareError) as info:
        await coro_fn()  # type: ignore[misc]
    assert info.type is HardwareError
    return loop.time() - t0


async def test_nothing_listening_raises(meters: Callable[..., ModbusMeter]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=rf"meter SDM630 at tcp://127\.0\.0\.1:{port}: cannot connect"):
        await meter.read()


async def test_server_stopped_then_back(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    port = await servers.tcp(meter_device("EM340", IMPORTING))
    meter = meters("EM340", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    assert await meter.read() == expected_sample("EM340", IMPORTING)

    await servers.stop_all()
    assert await elapsed(meter.read) < FAST_S + SLACK_S
    assert not meter.connected
    assert await elapsed(meter.read) < FAST_S + SLACK_S  # still down: fails again, no hang

    await servers.tcp(meter_device("EM340", EXPORTING), port=port)  # back, same port, new values
    assert await meter.read() == expected_sample("EM340", EXPORTING)


async def test_wrong_device_id_gets_exception_response(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """pymodbus' TCP server answers an unknown device id with an exception (like a gateway)."""
    port = await servers.tcp(meter_device("SDM630", IMPORTING, device_id=1))
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=2, timeout_s=FAST_S)
    with pytest.raises(HardwareError, match="exception response"):
        await meter.read()


async def test_wrong_device_id_no_answer_times_out(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    port = await servers.tcp(meter_device("SDM630", IMPORTING, device_id=1), silent_to_others=True)
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=2, timeout_s=FAST_S)
    assert FAST_S - 0.05 < await elapsed(meter.read) < FAST_S + SLACK_S
    right = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=1, timeout_s=FAST_S)
    assert await right.read() == expected_sample("SDM630", IMPORTING)


async def test_missing_registers_give_exception_response(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """An ABB map read from an Eastron: FC03 0x5000 is not there -> ILLEGAL ADDRESS (code 2)."""
    port = await servers.tcp(meter_device("SDM630", IMPORTING))
    meter = meters("ABB-B23", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=r"meter ABB-B23 at .*: FC03 0x5000 count 4: exception response .*code 2"):
        await meter.read()


async def test_map_reading_past_the_end_gives_exception_response(
    servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    """An EM340 map read from an SDM120: the export register 0x4E is past the SDM120's last register, and
    export is not optional on an EM340."""
    port = await servers.tcp(meter_device("SDM120", IMPORTING))
    meter = meters("EM340", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=r"FC04 0x004E count 2: exception response .*code 2"):
        await meter.read()


# ------------------------------------------------------------------------------------------------
# Request limits and documented registers: what a real meter refuses


@pytest.mark.parametrize(("model", "change", "refused"), [
    ("EM24", {"max_count": 60}, "count 18"),  # the plan before issue 11: 18 and 28 registers
    ("EM340", {"max_count": 60, "max_gap": 30}, "FC04 0x0000 count 54"),  # V to import at once: over 20
    ("SDM72D-M", {"max_gap": 20}, "FC04 0x0034 count 24"),  # through the v1's undocumented registers
])
async def test_server_refuses_what_the_real_meter_refuses(
    model: str, change: dict[str, int], refused: str, servers: Servers, meters: Callable[..., ModbusMeter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The emulation is strict enough to fail a plan that breaks the meter's rules (so the tests above,
    which pass, show the maps keep them)."""
    port = await servers.tcp(meter_device(model, IMPORTING))
    monkeypatch.setitem(MODELS, model, dataclasses.replace(MODELS[model], **change))
    meter = meters(model, f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=rf"{refused}: exception response .*code 2"):
        await meter.read()


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_every_request_within_the_meters_limit(
    model: str, servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    log = RequestLog()
    port = await servers.tcp(meter_device(model, IMPORTING, log=log))
    meter = meters(model, f"tcp://{LOOPBACK}:{port}")
    await meter.read()
    assert [(r.address, r.count) for r in log.requests] == [(b.address, b.count) for b in meter.plan]
    assert max(r.count for r in log.requests) <= METER_FORMATS[model].max_count


# ------------------------------------------------------------------------------------------------
# The EM24's counters, optional quantities


async def test_em24_bills_the_total_not_the_partial_counter(
    servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    """0x0042 is the partial counter a user can reset; the total is 0x003E (METERS.md §6.6)."""
    address, datatype, scale = EM24_PARTIAL
    partial = encode_registers(17.5, datatype, scale, "little")
    port = await servers.tcp(meter_device("EM24", IMPORTING, overrides={address: partial[0], address + 1: partial[1]}))
    meter = meters("EM24", f"tcp://{LOOPBACK}:{port}")
    sample = await meter.read()
    assert sample.energy_wh_import == 1_234_500.0  # IMPORTING's 1234.5 kWh total, not 17.5
    assert sample == expected_sample("EM24", IMPORTING)


async def test_abb_import_only_meter_reports_export_absent(
    servers: Servers, meters: Callable[..., ModbusMeter], caplog: pytest.LogCaptureFixture
) -> None:
    """An import-only B-series answers all-0xFF ("not available") for export: the meter stays OK."""
    port = await servers.tcp(meter_device("ABB-B23", IMPORTING, overrides={0x5004 + i: 0xFFFF for i in range(4)}))
    meter = meters("ABB-B23", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with caplog.at_level(logging.INFO, logger="hal.meter_modbus"):
        assert await meter.read() == expected_sample("ABB-B23", IMPORTING, export=False)
        assert await meter.read() == expected_sample("ABB-B23", IMPORTING, export=False)
    assert meter.connected
    notes = [r for r in caplog.records if "energy_export" in r.getMessage() and r.levelno == logging.INFO]
    assert len(notes) == 1  # said once, not every poll


async def test_abb_import_not_available_still_fails(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """ABB reports "not available" as all-0xFF; a required value must not become 1.8e17 Wh."""
    port = await servers.tcp(meter_device("ABB-B23", IMPORTING, overrides={0x5000 + i: 0xFFFF for i in range(4)}))
    meter = meters("ABB-B23", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=r"energy_import .*not available"):
        await meter.read()


async def test_em24_refusing_export_reports_it_absent(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """Some EM24s answer exception 02 for the export counter: import, power, current and voltage still
    come through."""
    port = await servers.tcp(meter_device("EM24", EXPORTING, device_id=4, refuse={0x5C, 0x5D}))
    meter = meters("EM24", f"tcp://{LOOPBACK}:{port}", device_id=4, timeout_s=FAST_S)
    assert await meter.read() == expected_sample("EM24", EXPORTING, export=False)
    assert await meter.read() == expected_sample("EM24", EXPORTING, export=False)
    assert meter.connected


async def test_em24_refusing_export_over_rtu(pty_pair: tuple[Path, Path], servers: Servers,
                                            meters: Callable[..., ModbusMeter]) -> None:
    a, b = pty_pair
    await servers.rtu(meter_device("EM24", EXPORTING, device_id=4, refuse={0x5C, 0x5D}), b)
    meter = meters("EM24", f"rtu://{a}?baud=9600&parity=N&stopbits=1", device_id=4, timeout_s=FAST_S)
    assert await meter.read() == expected_sample("EM24", EXPORTING, export=False)
    assert await meter.read() == expected_sample("EM24", EXPORTING, export=False)


async def test_em24_refusing_a_required_register_fails(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    port = await servers.tcp(meter_device("EM24", IMPORTING, refuse={0x3E}))
    meter = meters("EM24", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=r"FC04 0x0037 count 9: exception response .*code 2"):
        await meter.read()


# ------------------------------------------------------------------------------------------------
# Frequency plausibility


async def test_frequency_reported_x10_is_divided(
    servers: Servers, meters: Callable[..., ModbusMeter], caplog: pytest.LogCaptureFixture
) -> None:
    port = await servers.tcp(meter_device("SDM630", IMPORTING | {"frequency": 500.0}))
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}")
    with caplog.at_level(logging.WARNING, logger="hal.meter_modbus"):
        assert await meter.read() == expected_sample("SDM630", IMPORTING | {"frequency": 50.0})
        assert (await meter.read()).frequency_hz == 50.0
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per meter
    assert "ten times" in warnings[0].getMessage()


@pytest.mark.parametrize("hz", [5.0, 120.0, 5000.0])
async def test_nonsense_frequency_is_not_measured(
    hz: float, servers: Servers, meters: Callable[..., ModbusMeter], caplog: pytest.LogCaptureFixture
) -> None:
    port = await servers.tcp(meter_device("SDM630", IMPORTING | {"frequency": hz}))
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}")
    with caplog.at_level(logging.WARNING, logger="hal.meter_modbus"):
        assert await meter.read() == expected_sample("SDM630", IMPORTING | {"frequency": 0.0})
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


async def test_rtu_silent_bus_then_device_appears(pty_pair: tuple[Path, Path], servers: Servers,
                                                   meters: Callable[..., ModbusMeter]) -> None:
    a, b = pty_pair
    meter = meters("SDM120", f"rtu://{a}?baud=9600&parity=N&stopbits=1", device_id=5, timeout_s=FAST_S)
    assert await elapsed(meter.read) < FAST_S + SLACK_S  # nobody on the bus: timeout

    await servers.rtu(meter_device("SDM120", IMPORTING, device_id=9), b)  # another id answers nothing
    assert await elapsed(meter.read) < FAST_S + SLACK_S

    await servers.stop_all()
    await servers.rtu(meter_device("SDM120", IMPORTING, device_id=5), b)
    assert await meter.read() == expected_sample("SDM120", IMPORTING)


async def test_rtu_missing_device_path_raises(tmp_path: Path, meters: Callable[..., ModbusMeter]) -> None:
    meter = meters("SDM120", f"rtu://{tmp_path}/ttyNONE?baud=2400&parity=N&stopbits=1", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match="cannot connect"):
        await meter.read()


@pytest.mark.parametrize("mode", GARBAGE_MODES)
async def test_garbage_frames_raise_hardware_error_only(mode: str, meters: Callable[..., ModbusMeter]) -> None:
    async with garbage_server(mode) as port:
        meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
        for _ in range(3):  # and again on the fresh connection after each failure
            assert await elapsed(meter.read) < FAST_S + SLACK_S
        assert not meter.connected


async def test_random_garbage_many_seeds(meters: Callable[..., ModbusMeter]) -> None:
    for seed in range(8):
        async with garbage_server("random_pdu" if seed % 2 else "random", seed) as port:
            meter = meters("EM340", f"tcp://{LOOPBACK}:{port}", timeout_s=0.15)
            assert await elapsed(meter.read) < 0.15 + SLACK_S
            meter.close()


async def test_recovers_after_garbage(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    async with garbage_server("random", seed=1) as port:
        meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
        await elapsed(meter.read)
    await servers.tcp(meter_device("SDM630", IMPORTING), port=port)
    assert await meter.read() == expected_sample("SDM630", IMPORTING)


async def test_cancelled_read_leaves_meter_usable(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    async with garbage_server("silent") as port:
        meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=5.0)
        task = asyncio.create_task(meter.read())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not meter.connected
    await servers.tcp(meter_device("SDM630", IMPORTING), port=port)
    assert await meter.read() == expected_sample("SDM630", IMPORTING)
