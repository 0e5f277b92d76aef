"""What a backend sees first (issue 8 §3.1 and §3.7): `cp` as measured, never null, and no energy
figure that did not come from a meter reading."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from firmware.core.errors import HardwareError
from hal.protocols import MeterSample
from tests.support.backend import (
    SyncSubscriber,
    backend_for,
    new_charger_id,
    root_of,
    wait_event,
    wait_online,
    wait_status,
)
from tests.support.broker import Broker
from tests.support.builders import LOCAL_LIST, LOCAL_TOKEN, evse, evses
from tests.support.controller import plugged, start_controller, write_config

pytestmark = pytest.mark.integration
CPS = {"A", "B", "C", "D", "E", "F"}


def _states(sub: SyncSubscriber, root: str, evse_id: int = 1) -> list[dict[str, Any]]:
    return [v for v in sub.decoded(f"{root}/evse/{evse_id}/state") if isinstance(v, dict)]


async def test_the_first_state_document_has_cp_and_pp_as_measured(broker: Broker, tmp_path: Path) -> None:
    """An EV is plugged in (B, 680 Ohm cable) before the controller starts: the very first state
    document says so, and `online: true` comes only after CP and PP were measured."""
    charger_id = new_charger_id()
    root = root_of(charger_id)
    config = write_config(tmp_path, broker.port, charger_id=charger_id)
    sub = SyncSubscriber(broker.port, f"{root}/#")
    try:
        running = await start_controller(config, prepare=plugged(1, "B", pp_ohms=680.0))
        try:
            await asyncio.sleep(0)
            assert running.controller.charger.evses[1].cp is not None  # measured before `ready`
            async with backend_for(broker.port, root) as backend:
                await wait_status(backend, 1, "Preparing")
            states = _states(sub, root)
            assert states, "no state document"
            assert states[0]["cp"] == "B"
            assert states[0]["pp_max_a"] == 20
            statuses = [v for v in sub.decoded(f"{root}/status") if isinstance(v, dict)]
            assert statuses[0]["online"] is True
        finally:
            await running.stop()
    finally:
        sub.close()


async def test_cp_is_never_null_through_faults_and_sessions(broker: Broker, tmp_path: Path) -> None:
    charger_id = new_charger_id()
    root = root_of(charger_id)
    config = write_config(tmp_path, broker.port, charger_id=charger_id)
    sub = SyncSubscriber(broker.port, f"{root}/#")
    try:
        running = await start_controller(config)
        try:
            async with backend_for(broker.port, root) as backend:
                await wait_online(backend, 10)
                await backend.ok("set_local_auth_list", LOCAL_LIST)
                for args in ({"cp": "B"}, {"cp": "C"}, {"cp": "E"}, {"cp": "B"}, {"cp": "B", "diode_ok": False},
                             {"cp": "A"}):
                    await backend.ok("sim_plug", {"evse_id": 1, **args})
                for active in (True, False):
                    await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": active})
                await backend.ok("sim_fault", {"evse_id": 1, "fault": "pilot", "active": True})
                await backend.ok("sim_fault", {"evse_id": 1, "fault": "pilot", "active": False})
                await backend.ok("get_state")
            states = _states(sub, root)
            assert len(states) > 5
            assert all(s["cp"] in CPS for s in states), [s["cp"] for s in states]
        finally:
            await running.stop()
    finally:
        sub.close()


class SlowFirstMeter:
    """A meter that fails until `ready_at` (loop time), then reads `energy_wh`."""

    def __init__(self, ready_at: float, energy_wh: float) -> None:
        self.ready_at, self.energy_wh, self.reads = ready_at, energy_wh, 0

    async def read(self) -> MeterSample:
        self.reads += 1
        if asyncio.get_running_loop().time() < self.ready_at:
            raise HardwareError("no answer yet")
        return MeterSample(energy_wh_import=self.energy_wh)


class DeadMeter:
    async def read(self) -> MeterSample:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def _events(sub: SyncSubscriber, root: str) -> list[dict[str, Any]]:
    return [v for v in sub.decoded(f"{root}/evse/1/session") if isinstance(v, dict)]


async def test_energy_in_session_started_comes_from_a_reading(broker: Broker, tmp_path: Path) -> None:
    """The meter gives no reading for its first second: the EVSE is MeterLost (Faulted) meanwhile and
    offers nothing; the session that starts once it answers carries the meter's energy, not 0.0."""
    charger_id = new_charger_id()
    root = root_of(charger_id)
    config = write_config(tmp_path, broker.port, charger_id=charger_id, evses=evse(1, meter_stale_after_s=0.3))
    meter = SlowFirstMeter(asyncio.get_running_loop().time() + 1.0, energy_wh=4321.5)
    sub = SyncSubscriber(broker.port, f"{root}/#")
    try:
        running = await start_controller(config, meters={1: meter}, prepare=plugged(1, "B"))
        try:
            async with backend_for(broker.port, root) as backend:
                await wait_status(backend, 1, "Faulted")
                assert "MeterLost" in (backend.state(1) or {})["errors"]
                started = await wait_event(backend, 1, "SessionStarted", timeout=5)
                assert started["session_started"]["energy_Wh_import"] == 4321.5
            events = _events(sub, root)
            for event in events:
                for key in ("session_started", "session_finished", "session_cancelled"):
                    if isinstance(event.get(key), dict) and "energy_Wh_import" in event[key]:
                        assert event[key]["energy_Wh_import"] == 4321.5, event
        finally:
            await running.stop()
    finally:
        sub.close()


async def test_a_dead_meter_delays_online_only_by_its_timeout(broker: Broker, tmp_path: Path) -> None:
    """Two EVSEs whose meters never answer, 0.5 s timeout each: online within about 0.5 s (both are
    tried at once), both EVSEs Faulted with MeterLost, and no session without a reading."""
    charger_id = new_charger_id()
    root = root_of(charger_id)
    config = write_config(tmp_path, broker.port, charger_id=charger_id, evses=evses(1, 2, meter_stale_after_s=0.5))
    loop = asyncio.get_running_loop()
    started_at = loop.time()
    running = await start_controller(config, meters={1: DeadMeter(), 2: DeadMeter()},
                                     prepare=plugged(1, "B"))
    try:
        ready_s = loop.time() - started_at
        assert 0.45 < ready_s < 1.5, ready_s
        async with backend_for(broker.port, root) as backend:
            for cid in (1, 2):
                state = await wait_status(backend, cid, "Faulted")
                assert state["errors"] == ["MeterLost"]
            await asyncio.sleep(0.2)
            assert "SessionStarted" not in backend.event_names(1)
            reply = await backend.ok("authorize", {"id_token": LOCAL_TOKEN, "evse_id": 2})
            assert reply["status"] != "Accepted" or "SessionStarted" not in backend.event_names(2)
            assert json.dumps(backend.events()).count("energy_Wh_import") == 0
    finally:
        await running.stop()
