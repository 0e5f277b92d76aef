"""The flight recorder end to end (issue 12 §2): a real controller on the simulated board goes through plug,
token, charging and an RCD fault; the fault writes a flight file to state_dir by itself; replaying it
(and a dump taken on request at the end) through a fresh core gives the transitions the controller
logged, the same actions for every call, and no divergence."""

from __future__ import annotations

import pytest

from firmware.core.charger import Charger
from firmware.core.evse import State
from firmware.core.replay import Replay
from firmware.recorder import replay_file
from tests.support.backend import Backend, wait_status
from tests.support.builders import LOCAL_LIST
from tests.support.controller import Running
from tests.support.flows import plug, plug_and_charge
from tests.support.polling import until

pytestmark = pytest.mark.integration


def states(lines: list[str], cid: int) -> list[str]:
    """The EVSE's successive states in transition lines (the controller's `c1 A/Status -> B/Status (cause)`
    or the replay's `t=... c1 A -> B`), repeats collapsed."""
    seen: list[str] = []
    for line in lines:
        if f" c{cid} " not in f" {line}":
            continue
        state = line.split(" -> ")[1].split("/")[0].split(" ")[0]
        if not seen or seen[-1] != state:
            seen.append(state)
    return seen


def is_subsequence(short: list[str], long: list[str]) -> bool:
    rest = iter(long)
    return all(item in rest for item in short)


def check(result: Replay, running: Running) -> None:
    assert result.identical, result.divergences[:3]
    assert result.recording.from_boot
    assert result.calls > 50
    logged = states(running.controller.transitions, 1)
    replayed = states(result.transitions, 1)
    # the controller logs once per step, the replay after every call: it sees the same states, and maybe more
    assert is_subsequence(logged, replayed), (logged, replayed)


async def test_a_live_fault_is_recorded_and_replays_identically(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    controller = running.controller
    await plug_and_charge(running, backend, local_list=LOCAL_LIST)
    assert controller.charger.evses[1].state is State.CHARGING
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True})
    await wait_status(backend, 1, "Faulted")
    await until(lambda: controller.recorder.written, 3)
    (fault,) = controller.recorder.written
    assert fault.path.parent == running.config.charger.state_dir
    assert fault.path.name.startswith("flight-")

    at_fault = replay_file(fault.path)
    check(at_fault, running)
    assert at_fault.recording.reason.startswith("fault c1 RCD_TRIPPED")
    assert at_fault.calls == fault.inputs
    assert "CHARGING" in states(at_fault.transitions, 1)
    assert states(at_fault.transitions, 1)[-1] == "FAULTED"
    assert any("facts: FaultRaised(cid=1, fault=Fault.RCD_TRIPPED)" in line for line in at_fault.actions)
    assert any("OpenRelay(cid=1, under_load=True)" in line for line in at_fault.actions)
    assert any("CloseRelay(cid=1)" in line for line in at_fault.actions)

    await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": False})
    await plug(backend, 1, "A", "Available")
    final = await controller.recorder.dump()
    assert 50 < final.inputs <= controller.recorder.calls  # the controller goes on while the file is written
    result = replay_file(final.path)
    check(result, running)
    story = states(at_fault.transitions, 1)
    assert states(result.transitions, 1)[:len(story)] == story  # the first dump's story begins the second's
    replayed = result.objects["charger"]
    assert isinstance(replayed, Charger)
    live = controller.charger
    assert [(e.state, e.relay_closed, e.duty_pct) for e in replayed.evses.values()] == \
        [(e.state, e.relay_closed, e.duty_pct) for e in live.evses.values()]
    assert replayed.local_list.snapshot() == live.local_list.snapshot()
