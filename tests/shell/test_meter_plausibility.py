"""A meter reading that cannot be right (a phase at 400 V, import energy going backwards) is refused by
the core's supervision: the charger never sees it, and a meter that keeps reading nonsense is lost
(MeterLost) like a silent one (issue 11)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from firmware.core.events import Fault
from hal.protocols import MeterSample
from tests.support.builders import evse
from tests.support.controller import start_controller, write_config

GOOD = MeterSample(energy_wh_import=5000.0, voltages_v=(230.0, 230.0, 230.0))


class ScriptedMeter:
    """A meter (hal.protocols.Meter) that answers the sample the test sets."""

    def __init__(self, sample: MeterSample) -> None:
        self.sample = sample
        self.reads = 0

    async def read(self) -> MeterSample:
        self.reads += 1
        return self.sample


async def wait_reads(meter: ScriptedMeter, more: int) -> None:
    target = meter.reads + more
    async with asyncio.timeout(5):
        while meter.reads < target:
            await asyncio.sleep(0.01)


async def test_implausible_readings_are_refused_and_end_in_meter_lost(tmp_path: Path) -> None:
    meter_table = {"model": "SDM630", "url": "tcp://127.0.0.1:1", "poll_interval_s": 0.05}
    config = write_config(tmp_path, 1, charger_id="CP-PLAUSIBLE",
                          evses=evse(1, meter=meter_table, meter_stale_after_s=0.5))
    meter = ScriptedMeter(GOOD)
    running = await start_controller(config, meters={1: meter}, sim_meters=False)
    try:
        controller = running.controller
        assert controller.last_meter[1] == GOOD
        meter.sample = MeterSample(energy_wh_import=4000.0, voltages_v=(230.0, 230.0, 230.0))  # backwards
        await wait_reads(meter, 3)
        assert controller.last_meter[1] == GOOD  # never handed on
        meter.sample = MeterSample(energy_wh_import=6000.0, voltages_v=(400.0, 230.0, 230.0))  # phase-to-phase
        await wait_reads(meter, 3)
        assert controller.last_meter[1] == GOOD
        async with asyncio.timeout(5):
            while Fault.METER_LOST not in controller.charger.evses[1].faults:
                await asyncio.sleep(0.02)
        meter.sample = MeterSample(energy_wh_import=6000.0, voltages_v=(230.0, 231.0, 229.0))
        async with asyncio.timeout(5):
            while Fault.METER_LOST in controller.charger.evses[1].faults:
                await asyncio.sleep(0.02)
        assert controller.last_meter[1].energy_wh_import == 6000.0
    finally:
        await running.stop()
