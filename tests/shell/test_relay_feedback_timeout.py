"""The board's `relay_feedback_timeout_s` is the time the contactor's mirror contact has to follow the
coil before the EVSE faults with Relais (issue 10): read from the config, applied by the controller."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.builders import LOCAL_TOKEN, evse
from tests.support.controller import start_controller, write_config


async def test_a_stuck_contactor_faults_after_the_configured_feedback_time(tmp_path: Path) -> None:
    board = "[board]\nrelay_feedback_timeout_s = 1.0\n"
    config = write_config(tmp_path, 1, charger_id="CP-FEEDBACK", evses=evse(1) + board, offline_policy="accept_all")
    assert config.board.relay_feedback_timeout_s == 1.0
    running = await start_controller(config)
    try:
        controller, sim = running.controller, running.sim
        sim.fault(1, "relay_stuck_open", True)
        sim.plug(1, "B")
        sim.token(1, LOCAL_TOKEN)
        sim.plug(1, "C")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(5):
            while not sim.relay_commanded(1):
                await asyncio.sleep(0.01)
        closed_at = loop.time()
        # The fault opens the relay, and the open relay agrees with its stuck-open contact: the fault
        # may clear before a polling test looks, so the transitions are listened to instead.
        faulted: list[tuple[float, str]] = []
        controller.core.transition_listeners.append(
            lambda line: faulted.append((loop.time(), line)) if "/Faulted" in line else None)
        await asyncio.sleep(0.6)  # past the 0.3 s default: no fault yet
        assert faulted == []
        async with asyncio.timeout(3):
            while not faulted:
                await asyncio.sleep(0.01)
        assert faulted[0][0] - closed_at >= 1.0
        assert "(FeedbackRead)" in faulted[0][1]
    finally:
        await running.stop()
