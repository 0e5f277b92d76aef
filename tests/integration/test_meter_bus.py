"""Several `hal.meter.ModbusMeter`s on one RS-485 bus: one socat pty pair, one pymodbus serial server
holding several emulated meters (different device ids), and the meters sharing one serial client.

What must hold: every meter reads its own values; reads started at the same time take turns for whole
polls (the server's request log shows each poll's requests together, never two meters' requests
interleaved); a dead meter on the bus fails within its own timeout and costs the others nothing more;
serial settings that differ on one bus are refused at construction, naming both meters; TCP meters keep
connections of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from firmware.config import MeterUrl as ConfigMeterUrl
from firmware.core.errors import HardwareError
from hal.meter import ModbusMeter
from tests.support.modbus import (FAST_S, IMPORTING, LOOPBACK, SLACK_S, RequestLog, Servers, expected_sample,
                                  meter_device)

pytestmark = pytest.mark.integration

WIRE = IMPORTING
OTHER = WIRE | {"power_total": -3500.5, "current_l1": 5.5, "energy_import": 777.5, "energy_export": 98765.5}










def rtu(path: Path, parity: str = "N") -> str:
    return f"rtu://{path}?baud=9600&parity={parity}&stopbits=1"


async def test_two_meters_on_one_bus_take_turns(
    pty_pair: tuple[Path, Path], servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    a, b = pty_pair
    log = RequestLog()
    await servers.rtu([meter_device("SDM630", WIRE, device_id=1, log=log),
                       meter_device("EM340", OTHER, device_id=2, log=log)], b)
    sdm = meters("SDM630", rtu(a), device_id=1)
    em = meters("EM340", rtu(a), device_id=2)
    rounds = 3
    for _ in range(rounds):
        # Started together: without a bus lock pymodbus would send SDM, EM, SDM, EM, ...
        got = await asyncio.gather(sdm.read(), em.read(), em.read(), sdm.read())
        sdm_sample, em_sample = expected_sample("SDM630", WIRE), expected_sample("EM340", OTHER)
        assert got == [sdm_sample, em_sample, em_sample, sdm_sample]
    polls = {1: len(sdm.plan), 2: len(em.plan)}
    assert polls == {1: 2, 2: 3}
    runs = log.runs()
    # Every run of requests to one device is made of whole polls of it, and the devices alternate.
    assert all(n % polls[dev] == 0 for dev, n in runs), runs
    assert sum(n for _, n in runs) == rounds * 2 * (polls[1] + polls[2])
    assert len(runs) >= 2 * rounds  # they did take turns
    assert sdm.connected
    assert em.connected


async def test_one_client_for_the_bus(
    pty_pair: tuple[Path, Path], servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    a, b = pty_pair
    await servers.rtu([meter_device("SDM630", WIRE, device_id=1), meter_device("EM340", OTHER, device_id=2)], b)
    sdm = meters("SDM630", rtu(a), device_id=1)
    em = meters("EM340", rtu(a), device_id=2)
    assert not em.connected
    assert await sdm.read() == expected_sample("SDM630", WIRE)
    assert em.connected  # it was sdm that opened the port
    sdm.close()  # em still on the bus: the port stays open
    assert em.connected
    assert not sdm.connected
    assert await em.read() == expected_sample("EM340", OTHER)
    assert await sdm.read() == expected_sample("SDM630", WIRE)  # joins again after close()
    sdm.close()
    em.close()
    assert not em.connected
    assert not sdm.connected


async def test_dead_meter_costs_only_its_own_timeout(
    pty_pair: tuple[Path, Path], servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    a, b = pty_pair
    await servers.rtu(meter_device("SDM630", WIRE, device_id=1), b)  # device 9 is not on the bus
    alive = meters("SDM630", rtu(a), device_id=1, timeout_s=FAST_S)
    dead = meters("EM340", rtu(a), device_id=9, timeout_s=FAST_S)
    loop = asyncio.get_running_loop()
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    t0 = loop.time()
    results = await asyncio.gather(dead.read(), alive.read(), return_exceptions=True)
    elapsed = loop.time() - t0
    stop.set()
    await tick_task
    assert isinstance(results[0], HardwareError)
    assert str(results[0]).startswith("meter EM340 at rtu://")
    assert results[1] == expected_sample("SDM630", WIRE)
    assert elapsed < FAST_S + SLACK_S + 0.5  # the dead meter's one request timed out, then the live poll
    assert ticks >= 0.5 * elapsed / 0.01  # the loop kept running all along
    assert await alive.read() == expected_sample("SDM630", WIRE)  # the bus reopened after the dead meter's failure


def test_other_serial_settings_on_one_bus_are_refused(tmp_path: Path,
                                                        meters: Callable[..., ModbusMeter]) -> None:
    path = tmp_path / "ttyRS485"
    first = meters("SDM630", rtu(path), device_id=1)
    with pytest.raises(ValueError, match=r"EM340 \(device 2\) wants 9600 8E1 .*9600 8N1 for meter SDM630 \(device 1\)"):
        meters("EM340", rtu(path, parity="E"), device_id=2)
    meters("EM340", rtu(path), device_id=2)  # the same settings are fine
    first.close()


def test_a_bus_is_forgotten_when_its_meters_are_gone(tmp_path: Path) -> None:
    path = tmp_path / "ttyRS485"
    first = ModbusMeter("SDM630", ConfigMeterUrl.parse(rtu(path)), device_id=1)  # type: ignore[arg-type]
    first.close()
    other = ModbusMeter("EM340", ConfigMeterUrl.parse(rtu(path, parity="E")), device_id=2)  # type: ignore[arg-type]
    del other  # never closed: garbage collection leaves the bus too
    ModbusMeter("SDM120", ConfigMeterUrl.parse(rtu(path, parity="O")), device_id=3).close()  # type: ignore[arg-type]


async def test_tcp_meters_keep_their_own_connections(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    port = await servers.tcp(meter_device("SDM630", WIRE, device_id=1))
    one = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=1)
    two = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=1)
    assert await one.read() == expected_sample("SDM630", WIRE)
    assert one.connected
    assert not two.connected
    assert await asyncio.gather(one.read(), two.read()) == [expected_sample("SDM630", WIRE)] * 2
    one.close()
    assert not one.connected
    assert two.connected
