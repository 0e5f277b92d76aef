"""Outages with real parts (issue 5): the broker stopped while sessions happen, and a Modbus meter
that stops answering or answers garbage."""

from __future__ import annotations

import asyncio
import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from firmware.core.auth import LocalAuthEntry, LocalAuthStatus
from hal.meter import ModbusMeter
from tests.support.backend import Backend, wait_online
from tests.support.bridge import session_backend
from tests.support.broker import Broker, running_broker
from tests.support.builders import evse, local_list
from tests.support.controller import Running, start_controller, write_config
from tests.support.flows import plug_and_charge
from tests.support.modbus import Servers, garbage_server, meter_device
from tests.support.polling import until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = float(os.environ.get("CHARGER_OUTAGE_S", "3"))


def persistent_backend(port: int, root: str, backend: Backend | None = None) -> AbstractAsyncContextManager[Backend]:
    """A backend with a persistent session (MQTT 3.1.1, clean_session false), as a real backend should
    have: the broker keeps its subscription and queues what arrives while it is away."""
    return session_backend(port, root, f"outage-backend-{os.getpid()}", mqtt5=False, backend=backend)


async def test_broker_down_while_sessions_happen(tmp_path: Path) -> None:
    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text().replace("persistence false", f"persistence true\n"
                           f"persistence_location {tmp_path}/"))
    with running_broker(broker):
        config = write_config(tmp_path, broker.port, charger_id=f"OUT-{os.getpid()}")
        root = f"chargers/{config.charger.id}/v1"
        async with persistent_backend(broker.port, root) as backend:
            running = await start_controller(config)
            try:
                await wait_online(backend, 10)
                await backend.ok("set_local_auth_list", local_list("AA11"))
                broker.stop()
                await asyncio.sleep(0.2)
                sim = running.sim
                sessions = 0
                loop = asyncio.get_running_loop()
                end = loop.time() + OUTAGE_S
                while loop.time() < end or sessions < 2:  # sessions while the broker is down
                    sim.plug(1, "B")
                    await asyncio.sleep(0.1)
                    sim.token(1, "AA11")
                    sim.plug(1, "C")
                    sim.load(1, 16)
                    await asyncio.sleep(0.3)
                    sim.plug(1, "A")
                    await asyncio.sleep(0.2)
                    sessions += 1
                produced = running.controller.core.seq  # what the charger numbered
                broker.start()
            except BaseException:
                await running.stop()
                raise
        try:
            async with persistent_backend(broker.port, root, backend) as backend:
                def all_there() -> bool:
                    seqs = {m["seq"] for m in backend.durable()}
                    return seqs == set(range(1, produced + 1))

                await backend.wait_for(all_there, 15)
        finally:
            await running.stop()
    arrival = [m["seq"] for m in backend.durable()]
    first_seen: list[int] = []
    for seq in arrival:
        if seq not in first_seen:
            first_seen.append(seq)
    assert first_seen == sorted(first_seen), "delivered out of order"
    duplicates = len(arrival) - len(first_seen)
    assert duplicates <= 2, f"{duplicates} duplicates: more than QoS 1 in-flight redelivery explains"
    events = [m["event"] for m in backend.durable() if "event" in m]
    assert events.count("SessionStarted") == events.count("SessionFinished") >= sessions
    print(f"\nbroker outage {OUTAGE_S:.0f} s: {sessions} sessions, {len(first_seen)} messages delivered after "
          f"the restart, in order, {duplicates} duplicate(s)")


async def start_with_modbus_meter(tmp_path: Path, port: int, broker_port: int) -> Running:
    meter_table = {"model": "SDM630", "url": f"tcp://127.0.0.1:{port}", "poll_interval_s": 0.1, "timeout_s": 0.2}
    config = write_config(tmp_path, broker_port, charger_id=f"METER-{os.getpid()}-{port}",
                          evses=evse(1, meter_stale_after_s=1.0, meter=meter_table))
    meter = config.evses[0].meter
    assert meter is not None
    modbus = ModbusMeter(meter.model, meter.url, device_id=meter.device_id, timeout_s=meter.timeout_s)
    return await start_controller(config, meters={1: modbus}, sim_meters=False)


WIRE = {"voltage_l1": 230.0, "voltage_l2": 231.0, "voltage_l3": 229.0, "current_l1": 10.0, "current_l2": 10.0,
        "current_l3": 10.0, "power_total": 6900.0, "frequency": 50.0, "energy_import": 1234.5, "energy_export": 0.0}


async def test_meter_stops_answering_then_returns(tmp_path: Path, broker: Broker) -> None:
    servers = Servers()
    port = await servers.tcp(meter_device("SDM630", WIRE))
    running = await start_with_modbus_meter(tmp_path, port, broker.port)
    try:
        running.controller.charger.local_list.apply(1, True, [
            LocalAuthEntry(id_token="AA11", status=LocalAuthStatus.ACCEPTED)])
        await plug_and_charge(running, token="AA11")  # on the board: no backend here
        machine = running.controller.charger.evses[1]
        lost_at = asyncio.get_running_loop().time()
        await servers.stop_all()
        await until(lambda: not running.sim.relay_commanded(1), 5)
        took = asyncio.get_running_loop().time() - lost_at
        assert "meter_lost" in {f.value for f in machine.faults}
        # staleness runs from the last good read, up to one poll (0.1 s) before the server stopped
        assert 1.0 - 0.1 <= took <= 3.0, f"MeterLost after {took:.2f} s (staleness 1 s)"
        await servers.tcp(meter_device("SDM630", WIRE), port=port)
        await until(lambda: not machine.faults and machine.state.name != "FAULTED", 5)
        assert running.controller.last_meter[1].energy_wh_import == pytest.approx(1234500.0)
    finally:
        await running.stop()
        await servers.stop_all()


@pytest.mark.parametrize("mode", ["random", "truncated", "wrong_function"])
async def test_meter_answering_garbage_is_lost(tmp_path: Path, broker: Broker, mode: str) -> None:
    async with garbage_server(mode, seed=3) as port:
        running = await start_with_modbus_meter(tmp_path, port, broker.port)
        try:
            machine = running.controller.charger.evses[1]
            await until(lambda: "meter_lost" in {f.value for f in machine.faults}, 5)
            assert machine.state.name == "FAULTED"
            assert not running.sim.relay_commanded(1)
            assert not running.task.done()  # garbage never stops the controller
        finally:
            await running.stop()
