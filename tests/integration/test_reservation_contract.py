"""Reservation contract points of API.md §4, §5 and §7 against the real broker (issue 8):

* G3: an EVSE gets hold events only when its held state changes (no End + Start "blip" when a
  global reservation is used at another held EVSE);
* V5: a scheduled reservation whose EVSE is busy at `start_time` stays Scheduled until the EVSE is
  free (then Active) or it expires (Expired, no ReservationStart / ReservationEnd); faulted or
  disabled at `start_time` it ends as in U4 (Removed);
* §5: a token the local auth list holds has a known parent (or none): at a reserved EVSE it is
  decided at once, without a backend lookup.

A `sim_*` reply comes once the controller has handled the change (API.md §8); the tests still wait
for the observable result (an event, a state document), which may arrive just before or after it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend import Backend, wait_event, wait_status, wait_update
from tests.support.broker import Broker
from tests.support.builders import evses, in_s, parse_time, rfc3339
from tests.support.controller import charger_and_backend, plugged, start_controller
from tests.support.flows import plug

pytestmark = pytest.mark.integration

TWO_EVSES = evses(1, 2)
FIVE_EVSES = evses(*range(1, 6))
RESERVATION_EVENTS = ("ReservationStart", "ReservationEnd")


def reservation_events(backend: Backend, evse_id: int) -> list[dict[str, Any]]:
    return [e for e in backend.events(evse_id) if e["event"] in RESERVATION_EVENTS]


def durable_seqs(backend: Backend) -> list[int]:
    return sorted(m["seq"] for m in backend.durable())


async def past(when: datetime, margin_s: float = 0.3) -> None:
    """Sleep until `margin_s` after `when` (the controller acts at `when`; nothing shows it here)."""
    await asyncio.sleep(max((when - datetime.now(UTC)).total_seconds(), 0) + margin_s)


async def scheduled_while_busy(backend: Backend, reservation_id: int, start_in_s: float, expiry_time: str) -> None:
    """An EV at EVSE 1 (Preparing), then a reservation of EVSE 1 from `start_in_s` on, Accepted (V5: it is
    judged at start_time, not at acceptance); returns once start_time has passed."""
    await plug(backend, 1, "B", "Preparing")
    start = parse_time(in_s(start_in_s))
    result = await backend.ok("reserve_now", {"reservation_id": reservation_id, "id_token": "AA11", "evse_id": 1,
                                              "start_time": rfc3339(start), "expiry_time": expiry_time})
    assert result["status"] == "Accepted"
    await past(start)


# --- G3: no hold blips ------------------------------------------------------------------------------


async def test_global_used_at_one_held_evse_leaves_the_other_hold_alone(broker: Broker, tmp_path: Path) -> None:
    """EVSEs 1..5, EVs at 1, 3, 4, two global reservations: 2 and 5 are held (G3). The first global
    is used at 2: EVSE 2's hold ends with UsedToStartCharging and that reservation's id; EVSE 5
    stays held and gets no event at all."""
    async with charger_and_backend(broker, tmp_path, evses=FIVE_EVSES) as (_, backend):
        for cid in (1, 3, 4):
            await plug(backend, cid, "B", "Preparing")
        for rid, token in ((1, "AA11"), (2, "BB22")):
            result = await backend.ok("reserve_now", {"reservation_id": rid, "id_token": token,
                                                      "expiry_time": in_s(600)})
            assert result["status"] == "Accepted"
        await wait_status(backend, 2, "Reserved")
        await wait_status(backend, 5, "Reserved")
        hold = {"reservation_id": -1, "id_tag": "", "global": True}
        await wait_event(backend, 5, "ReservationStart")
        assert [e["reservation_start"] for e in reservation_events(backend, 5)] == [hold]

        await backend.ok("sim_token", {"evse_id": 2, "id_token": "AA11"})
        end = await wait_event(backend, 2, "ReservationEnd")
        assert end["reservation_end"] == {"reservation_id": 1, "reason": "UsedToStartCharging"}
        used = await wait_update(backend, "Used", 1)
        assert used["evse_id"] == 2
        assert (backend.state(5) or {})["status"] == "Reserved"
        # A later durable message on EVSE 2 marks the end of what the token step published. Stopping
        # the session frees EVSE 2: 2 free for 1 global, so now EVSE 5's hold really ends.
        assert await backend.ok("stop_session", {"evse_id": 2}) is True
        marker = await wait_event(backend, 2, "SessionCancelled")
        await backend.wait_for(lambda: durable_seqs(backend)[-1] >= marker["seq"])
        seqs = [s for s in durable_seqs(backend) if s <= marker["seq"]]
        assert seqs == list(range(seqs[0], marker["seq"] + 1))  # nothing missing up to the marker
        before_marker = [e for e in reservation_events(backend, 5) if e["seq"] < marker["seq"]]
        assert [e["event"] for e in before_marker] == ["ReservationStart"], before_marker
        dropped = await wait_event(backend, 5, "ReservationEnd")
        assert dropped["reservation_end"] == {"reservation_id": -1, "reason": "GlobalReservationRequirementDropped"}
        await wait_status(backend, 5, "Available")


# --- V5: busy at start_time -----------------------------------------------------------------------------


async def test_scheduled_reservation_busy_at_start_waits_for_the_evse(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path) as (_, backend):
        await scheduled_while_busy(backend, 6, 1.0, in_s(60))
        (entry,) = await backend.ok("list_reservations")
        assert entry["state"] == "Scheduled"
        state = (await backend.ok("get_state"))["evses"][0]
        assert state["status"] == "Preparing"
        assert state["reservation"] is None
        assert [r["state"] for r in (await backend.ok("get_state"))["reservations"]] == ["Scheduled"]
        assert reservation_events(backend, 1) == []

        await plug(backend, 1, "A", "Reserved")  # the EVSE is free: now it becomes Active
        begin = await wait_event(backend, 1, "ReservationStart")
        assert begin["reservation_start"] == {"reservation_id": 6, "id_tag": "AA11"}
        (entry,) = await backend.ok("list_reservations")
        assert entry["state"] == "Active"
        assert (backend.state(1) or {})["reservation"]["reservation_id"] == 6


async def test_scheduled_reservation_busy_until_expiry_ends_without_evse_events(broker: Broker,
                                                                               tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path) as (_, backend):
        expiry = parse_time(in_s(2.0))
        await scheduled_while_busy(backend, 7, 0.8, rfc3339(expiry))
        assert [e["state"] for e in await backend.ok("list_reservations")] == ["Scheduled"]
        expired = await wait_update(backend, "Expired", 7, timeout=5)
        assert parse_time(expired["timestamp"]) >= expiry
        await plug(backend, 1, "A", "Available")
        before = len(backend.events(1))
        await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
        await wait_event(backend, 1, "AuthRequired", after=before)  # a later event on EVSE 1
        assert reservation_events(backend, 1) == []  # never started: no ReservationStart, no ReservationEnd
        assert await backend.ok("list_reservations") == []
        assert [u["reservation_status"] for u in backend.reservation_updates()] == ["Placed", "Expired"]


async def test_scheduled_reservation_faulted_or_disabled_at_start_is_removed(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, evses=TWO_EVSES) as (_, backend):
        assert await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True}) is True
        await wait_status(backend, 1, "Faulted")
        assert await backend.ok("set_enabled", {"evse_id": 2, "enabled": False}) is True
        await wait_status(backend, 2, "Unavailable")
        start = rfc3339(parse_time(in_s(0.8)))
        for rid in (1, 2):
            result = await backend.ok("reserve_now", {"reservation_id": rid, "id_token": "AA11", "evse_id": rid,
                                                      "start_time": start, "expiry_time": in_s(60)})
            assert result["status"] == "Accepted"  # V5: judged at start_time, not at acceptance
        for rid in (1, 2):
            removed = await wait_update(backend, "Removed", rid, timeout=4)
            assert removed["evse_id"] == rid
        assert await backend.ok("list_reservations") == []
        assert reservation_events(backend, 1) == reservation_events(backend, 2) == []


# --- §5: the local list knows a token's parent ----------------------------------------------------------


@pytest.mark.parametrize(("status", "parent"), [
    ("Accepted", None), ("Blocked", None), ("Expired", None), ("Invalid", None),
    ("Blocked", "FLEET1"),  # a token the list does not accept gives no parent to match with
])
async def test_local_token_without_parent_is_refused_at_once_at_a_group_reservation(
        broker: Broker, tmp_path: Path, status: str, parent: str | None) -> None:
    """auth.timeout_s is 5 s: the refusal comes well before, and nothing is asked of the backend."""
    token: dict[str, Any] = {"id_token": "LOCAL1", "status": status}
    if parent is not None:
        token["parent_id_token"] = parent
    async with charger_and_backend(broker, tmp_path, auth_timeout_s=5.0) as (_, backend):
        await backend.ok("set_local_auth_list", {"version": 1, "full": True, "tokens": [token]})
        await backend.ok("reserve_now", {"reservation_id": 4, "id_token": "CHILD1", "parent_id_token": "FLEET1",
                                         "expiry_time": in_s(600), "evse_id": 1})
        await wait_status(backend, 1, "Reserved")
        await plug(backend, 1, "B", "Preparing")
        loop = asyncio.get_running_loop()

        begin = loop.time()
        await backend.ok("sim_token", {"evse_id": 1, "id_token": "LOCAL1"})
        await wait_event(backend, 1, "ReservationAuthtokenMismatch", timeout=1.0)
        assert loop.time() - begin < 1.0

        begin = loop.time()
        reply = await backend.request("authorize", {"id_token": "LOCAL1", "evse_id": 1}, timeout=1.0)
        assert loop.time() - begin < 1.0
        assert reply["result"] == {"status": "ReservedForOther", "evse_id": 1, "reservation_id": None}
        assert backend.event_names(1).count("ReservationAuthtokenMismatch") == 2
        assert not [m for t, m in backend.messages if t.endswith("/auth/request")]  # decided locally
        assert [r["reservation_id"] for r in await backend.ok("list_reservations")] == [4]  # still reserved
        assert (backend.state(1) or {})["session"]["id_token"] is None
        assert not (backend.state(1) or {})["relay_closed"]


async def test_scheduled_reservation_waiting_for_a_busy_evse_stays_scheduled_after_a_restart(
        broker: Broker, tmp_path: Path) -> None:
    """The restored session makes the EVSE busy before the book judges its reservations (boot order)."""
    async with charger_and_backend(broker, tmp_path) as (running, backend):
        await scheduled_while_busy(backend, 8, 0.5, in_s(60))
        assert [e["state"] for e in await backend.ok("list_reservations")] == ["Scheduled"]
        await running.stop()  # a clean stop; the EV stays plugged in
        restarted = await start_controller(running.config, prepare=plugged(1, "B"))
        try:
            await backend.wait_for(lambda: restarted.controller.link.connected.is_set(), 10)
            assert [e["state"] for e in await backend.ok("list_reservations")] == ["Scheduled"]
            assert reservation_events(backend, 1) == []
        finally:
            await restarted.stop()
