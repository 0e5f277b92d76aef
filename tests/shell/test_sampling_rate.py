"""The safety sampler's pace (`Producers.safety_task`): CP/PP fast while the core times anything about
an EVSE's pilot (`Charger.needs_fast_sampling`), at `pilot.idle_sample_interval_s` otherwise, and woken
at once when an EVSE becomes watched (a relay closed by a token while the EV already waits in C).

The real controller runs on the simulated board; its `read_cp` is wrapped only to note when the
controller reads (the board behaves as before). The bounds are loose on purpose: they tell the two
paces (10 ms and 100 ms) apart, not how punctual this machine is.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Awaitable, Callable
from pathlib import Path

from firmware.core import replay as rp
from firmware.core.events import Fault
from firmware.core.pilot import Cp
from firmware.wire import parse_request
from hal.protocols import PilotSample
from hal.sim import SimBoard
from tests.support.builders import LOCAL_TOKEN, evse
from tests.support.controller import Running, start_controller, write_config

IDLE_S = 0.1  # pilot.idle_sample_interval_s's default


def note_reads(sim: SimBoard, cid: int) -> list[float]:
    """The loop times at which the controller reads EVSE `cid`'s CP from now on."""
    loop = asyncio.get_running_loop()
    reads: list[float] = []
    read_cp: Callable[[int], Awaitable[PilotSample]] = sim.read_cp

    async def noted(which: int) -> PilotSample:
        if which == cid:
            reads.append(loop.time())
        return await read_cp(which)

    sim.read_cp = noted  # type: ignore[method-assign]
    return reads


async def test_idle_is_sampled_at_the_idle_pace_and_charging_fast(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1, charger_id="CP-PACE", evses=evse(1), offline_policy="accept_all")
    assert config.pilot.idle_sample_interval_s == IDLE_S
    running = await start_controller(config)
    try:
        controller, sim = running.controller, running.sim
        reads = note_reads(sim, 1)
        await asyncio.sleep(0.55)
        assert not controller.producers.fast[1]
        assert len(reads) <= 0.55 / IDLE_S + 2  # 10 ms sampling would be about 55

        sim.plug(1, "B")
        sim.token(1, LOCAL_TOKEN)
        sim.plug(1, "C")
        async with asyncio.timeout(5):
            while not sim.relay_commanded(1):
                await asyncio.sleep(0.01)
        assert controller.producers.fast[1]
        reads.clear()
        await asyncio.sleep(0.3)
        gaps = [b - a for a, b in zip(reads, reads[1:], strict=False)]
        assert len(gaps) >= 3
        assert statistics.median(gaps) < IDLE_S / 2  # the fast pace (10 ms), not the idle one
    finally:
        await running.stop()


async def test_an_evse_that_becomes_watched_is_sampled_at_once(tmp_path: Path) -> None:
    """The EV waits in C (C1) with the relay open, nothing timed; a card authorizes it, and the relay
    closes on that step. The next CP read comes right after, not at the end of an idle interval."""
    config = write_config(tmp_path, 1, charger_id="CP-WAKE", evses=evse(1), offline_policy="accept_all")
    running = await start_controller(config)
    try:
        controller, sim = running.controller, running.sim
        sim.plug(1, "B")
        sim.plug(1, "C")
        async with asyncio.timeout(5):
            while controller.charger.evses[1].cp is None or controller.charger.evses[1].cp.value != "C" \
                    or controller.producers.fast[1]:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        reads = note_reads(sim, 1)
        sim.token(1, LOCAL_TOKEN)
        async with asyncio.timeout(5):
            while not sim.relay_commanded(1):
                await asyncio.sleep(0.001)
        closed_at = loop.time()
        async with asyncio.timeout(5):
            while not [t for t in reads if t >= closed_at]:
                await asyncio.sleep(0.001)
        first = next(t for t in reads if t >= closed_at)
        assert first - closed_at < IDLE_S / 2
        assert controller.producers.fast[1]
    finally:
        await running.stop()


async def sim_op(running: Running, op: str, args: dict[str, object]) -> tuple[dict[str, object], float]:
    """A sim op through the controller's own submission path; its reply and how long it took (s)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[dict[str, object]] = loop.create_future()
    request = parse_request(json.dumps({"id": f"t-{op}", "op": op, "args": args}).encode(), 65536)
    started = loop.time()
    running.controller._submit(request, done.set_result)  # noqa: SLF001 - the link's entry, without a broker
    reply = await asyncio.wait_for(done, 10)
    return reply, loop.time() - started


async def test_a_sim_op_that_changes_nothing_is_answered_at_the_fast_pace(tmp_path: Path) -> None:
    """`sim_plug` of the state the EV is already in starts no debounce, so nothing makes the EVSE
    watched; the sim op's wait for the pilot reading itself keeps the sampler at its fast pace, so the
    reply does not wait for an idle interval (here 1 s)."""
    config = write_config(tmp_path, 1, charger_id="CP-SAME", evses=evse(1), idle_sample_interval_s=1.0)
    running = await start_controller(config)
    try:
        reply, took_s = await sim_op(running, "sim_plug", {"evse_id": 1, "cp": "A"})
        assert reply["ok"] is True
        assert took_s < 0.5  # the debounce and PP settle times plus a fast sample (about 0.11 s), not 1 s
    finally:
        await running.stop()


def handed(running: Running, event: str) -> int:
    """How many `event`s (PilotSampled, InputsSensed, RelaySensed) the core has been handed so far
    (from the flight recorder's ring)."""
    calls = rp.read(running.controller.recorder.snapshot()).calls
    return sum(1 for call in calls if call.method == "handle" and event in repr(call.args))


async def test_an_idle_evse_s_unchanged_readings_are_not_handed_to_the_core(tmp_path: Path) -> None:
    """While nothing is watched, a reading equal to the last one handed over carries nothing new (the
    pilot monitor is stable on it, the supervisor judges edges): the sampler reads it and keeps it. A
    changed reading goes in at once."""
    config = write_config(tmp_path, 1, charger_id="CP-SAME-READING", evses=evse(1))
    running = await start_controller(config)
    try:
        sim = running.sim
        await asyncio.sleep(0.2)
        before = {event: handed(running, event) for event in ("PilotSampled", "InputsSensed", "RelaySensed")}
        reads = note_reads(sim, 1)
        await asyncio.sleep(0.5)
        assert len(reads) >= 3  # still read at the idle pace
        assert {event: handed(running, event) for event in before} == before  # but none handed over
        reply, _ = await sim_op(running, "sim_plug", {"evse_id": 1, "cp": "B", "pp_ohms": 220.0})
        assert reply["ok"] is True
        assert running.controller.charger.evses[1].cp is Cp.B
        assert handed(running, "PilotSampled") > before["PilotSampled"]
        reply, _ = await sim_op(running, "sim_fault", {"evse_id": 1, "fault": "rcd", "active": True})
        assert reply["ok"] is True
        assert handed(running, "InputsSensed") > before["InputsSensed"]
        assert Fault.RCD_TRIPPED in running.controller.charger.evses[1].faults
    finally:
        await running.stop()

