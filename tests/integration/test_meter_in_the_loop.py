"""A technician's check (issue 11, done when): `charger-firmware --sim --config X` whose `[evse.meter]`
points at `tools/meter_sim.py` shows that meter's values in the meter samples and the state document.
Both are real programs; the broker is a real mosquitto."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend import backend_for, new_charger_id, root_of, wait_event, wait_online, wait_status
from tests.support.broker import Broker
from tests.support.builders import evse, local_list
from tests.support.controller import write_config
from tests.support.meter_sim import meter_sim
from tests.support.program import REPO, firmware_command

pytestmark = pytest.mark.integration


async def test_the_program_reads_a_simulated_em340_and_publishes_its_values(broker: Broker, tmp_path: Path) -> None:
    async with meter_sim("--model", "EM340", "--tcp", "127.0.0.1:0", "--device-id", "3", "--voltage", "231.5",
                         "--current", "10", "--frequency", "50", "--import-kwh", "42.5", "--tick", "0.2") as sim:
        charger_id = new_charger_id()
        meter = {"model": "EM340", "url": f"tcp://127.0.0.1:{sim.port}", "device_id": 3, "poll_interval_s": 0.2}
        config = write_config(tmp_path, broker.port, charger_id=charger_id, evses=evse(1, meter=meter),
                              meter_interval_s=0.3)
        config_path = tmp_path / "charger.toml"
        assert config.evses[0].meter is not None
        process = await asyncio.create_subprocess_exec(*firmware_command("--sim", "--config", str(config_path)),
                                                       cwd=REPO, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        try:
            root = root_of(charger_id)
            async with backend_for(broker.port, root) as backend:
                await wait_online(backend, 20)
                samples: list[dict[str, Any]] = await backend.wait_for(
                    lambda: [v for t, v in backend.messages if t == f"{root}/evse/1/meter" and isinstance(v, dict)],
                    10)
                sample = samples[-1]
                assert sample["voltage_V"] == [pytest.approx(231.5)] * 3
                assert sample["current_A"] == [pytest.approx(10.0)] * 3
                assert sample["frequency_Hz"] == pytest.approx(50.0)
                assert sample["energy_Wh_import"] >= 42_500.0  # the EM340's 0.1 kWh register, accruing
                assert sample["meter_ok"] is True
                # a session: it starts from the simulated meter's register, and its energy in the state
                # document is that meter's (about 7 kW: one 0.1 kWh step of the EM340 within a minute)
                await backend.ok("set_local_auth_list", local_list("04A2B3C4"))
                await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
                started = await wait_event(backend, 1, "SessionStarted")
                assert started["session_started"]["energy_Wh_import"] >= 42_500.0
                await backend.ok("sim_token", {"evse_id": 1, "id_token": "04A2B3C4"})
                await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"})
                state = await wait_status(backend, 1, "Charging")
                assert state["session"]["energy_wh"] >= 0
        finally:
            process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, output.decode(errors="replace")
