"""The simulated board is deterministic (issue 8 §3.2, API.md §8): a `sim_*` reply means the controller
has seen the change (sampled, debounced, handled by the core, its events in the outbox)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.backend import Backend, wait_event
from tests.support.broker import Broker
from tests.support.builders import LOCAL_LIST, LOCAL_TOKEN
from tests.support.codec import as_json, decode, envelope
from tests.support.controller import Running, charger_and_backend
from tests.support.store import stored_bytes

pytestmark = pytest.mark.integration


def _request(request_id: str, op: str, **args: object) -> bytes:
    return as_json(envelope(request_id, op, args))


async def test_plug_b_then_a_at_once_is_a_whole_short_session(charger: tuple[Running, Backend]) -> None:
    """Both requests go out back to back, without waiting for a reply in between."""
    _, backend = charger
    await backend.send_raw(_request("p1", "sim_plug", evse_id=1, cp="B"))
    await backend.send_raw(_request("p2", "sim_plug", evse_id=1, cp="A"))
    await backend.wait_for(lambda: "p1" in backend.replies and "p2" in backend.replies, 5)
    assert backend.replies["p1"]["ok"] is True
    assert backend.replies["p2"]["ok"] is True
    started = await wait_event(backend, 1, "SessionStarted")
    finished = await wait_event(backend, 1, "SessionFinished")
    assert started["uuid"] == finished["uuid"]


async def test_a_sim_reply_follows_the_durable_events_it_caused(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path) as (running, backend):
        journal_at_reply: dict[str, bytes] = {}

        def on_message(topic: str, payload: bytes) -> None:
            if topic == f"{backend.root}/reply":
                journal_at_reply[decode(payload)["id"]] = stored_bytes(tmp_path / "state")

        backend.hooks.append(on_message)
        await backend.ok("set_local_auth_list", LOCAL_LIST)
        await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"}, request_id="plug")
        assert b"SessionStarted" in journal_at_reply["plug"]
        assert b"AuthRequired" in journal_at_reply["plug"]
        await backend.ok("sim_token", {"evse_id": 1, "id_token": LOCAL_TOKEN}, request_id="tap")
        assert running.controller.charger.evses[1].session.authorized  # type: ignore[union-attr]
        await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"}, request_id="ask")
        assert b"ChargingStarted" in journal_at_reply["ask"]
        assert running.sim.relay_commanded(1)
        await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True}, request_id="rcd")
        assert b"RCD" in journal_at_reply["rcd"]
        assert not running.sim.relay_commanded(1)
        await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": False})


async def test_the_state_a_script_reads_next_shows_the_change(charger: tuple[Running, Backend]) -> None:
    """`get_state` right after each sim reply sees its effect, every time (no sleeps in the script)."""
    running, backend = charger
    for cp, status in [("B", "Preparing"), ("A", "Available")] * 5:
        await backend.ok("sim_plug", {"evse_id": 1, "cp": cp})
        state = await backend.ok("get_state")
        assert state["evses"][0]["cp"] == cp
        assert state["evses"][0]["status"] == status
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B", "pp_ohms": 680})
    assert (await backend.ok("get_state"))["evses"][0]["pp_max_a"] == 20
    await backend.ok("sim_load", {"evse_id": 1, "current_a": 10})
    assert running.sim.ev(1).load_a == 10


async def test_relay_welded_is_seen_before_the_reply(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "relay_welded", "active": True})
    state = await backend.ok("get_state")
    assert "Relais" in state["evses"][0]["errors"]
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "relay_welded", "active": False})
    assert "Relais" not in (await backend.ok("get_state"))["evses"][0]["errors"]
    assert not running.sim.relay_commanded(1)


async def test_bad_sim_args_change_nothing_and_answer_at_once(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    reply = await backend.request("sim_plug", {"evse_id": 1, "cp": "Z"}, timeout=1)
    assert reply["error"]["code"] == "invalid_args"
    assert running.sim.ev(1).cp == "A"


async def test_without_sim_the_sim_ops_are_unsupported(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, sim_ops=False) as (_, backend):
        reply = await backend.request("sim_plug", {"evse_id": 1, "cp": "B"})
        assert reply["error"]["code"] == "unsupported"
