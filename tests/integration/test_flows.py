"""End-to-end flows of API.md §4, §5 and §7 against the real broker: charging, reservations,
authorization through the backend, expiry, faults."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend import Backend, wait_event, wait_status, wait_update
from tests.support.broker import Broker
from tests.support.builders import LOCAL_LIST, LOCAL_TOKEN, evse, evses, in_s, parse_time, rfc3339
from tests.support.codec import as_json
from tests.support.controller import Running, charger_and_backend
from tests.support.flows import plug, plug_and_charge
from tests.support.polling import stays

pytestmark = pytest.mark.integration

TWO_EVSES = evses(1, 2)


def assert_seq_gapless(backend: Backend) -> None:
    seqs = [m["seq"] for m in backend.durable()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


# --- charging ------------------------------------------------------------------------------------


async def test_charging_flow(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    sim = running.sim
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    # a reservation placed and cancelled first, so R/reservation takes part in the seq check
    await backend.ok("reserve_now", {"reservation_id": 9, "id_token": "ZZ99", "expiry_time": in_s(600), "evse_id": 1})
    assert await backend.ok("cancel_reservation", {"reservation_id": 9}) is True
    await wait_update(backend, "Cancelled", 9)
    await wait_status(backend, 1, "Available")

    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    started = await wait_event(backend, 1, "SessionStarted")
    assert started["session_started"]["reason"] == "EVConnected"
    await wait_event(backend, 1, "AuthRequired")
    await backend.ok("sim_token", {"evse_id": 1, "id_token": LOCAL_TOKEN})  # the RFID reader
    await backend.wait_for(lambda: ((backend.state(1) or {}).get("session") or {}).get("id_token") == "04A2****")
    assert not sim.relay_commanded(1)
    state = await plug(backend, 1, "C", "Charging")
    assert state["relay_closed"] is True
    assert sim.relay_commanded(1)
    assert state["offered_a"] == 32
    await wait_event(backend, 1, "ChargingStarted")

    await backend.ok("sim_load", {"evse_id": 1, "current_a": 16})
    meter = f"{backend.root}/evse/1/meter"

    def rising() -> bool:
        samples = [v for t, v in backend.messages if t == meter and v["power_W"] > 0]
        return len(samples) >= 2 and samples[-1]["energy_Wh_import"] > samples[0]["energy_Wh_import"]

    await backend.wait_for(rising, 6)
    sample = [v for t, v in backend.messages if t == meter][-1]
    assert set(sample) == {"evse_id", "timestamp", "energy_Wh_import", "energy_Wh_export", "power_W", "current_A",
                           "voltage_V", "frequency_Hz", "meter_ok"}
    assert sample["evse_id"] == 1
    assert sample["meter_ok"] is True
    assert sample["power_W"] == pytest.approx(3 * 230 * 16)
    assert sample["current_A"] == [16, 16, 16]
    parse_time(sample["timestamp"])

    state = await plug(backend, 1, "B", "SuspendedEV")  # the EV pauses
    await wait_event(backend, 1, "ChargingPausedEV")
    assert state["relay_closed"] is False
    assert not sim.relay_commanded(1)
    await plug(backend, 1, "C", "Charging")  # and resumes
    await wait_event(backend, 1, "ChargingResumed")
    assert sim.relay_commanded(1)
    await plug(backend, 1, "B", "SuspendedEV")  # the EV is full: stops drawing, then unplugged
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "A"})
    finished = await wait_event(backend, 1, "SessionFinished")
    await wait_status(backend, 1, "Available")
    assert not sim.relay_commanded(1)
    assert finished["session_finished"]["energy_Wh_import"] > 0

    names = [e["event"] for e in backend.events(1) if e["uuid"] == started["uuid"]]
    assert names == ["SessionStarted", "AuthRequired", "ChargingStarted", "ChargingPausedEV", "ChargingResumed",
                     "ChargingPausedEV", "SessionFinished"], names
    for event in backend.durable():
        assert {"timestamp", "seq"} <= set(event)
        parse_time(event["timestamp"])
    for event in backend.events():
        assert {"uuid", "evse_id", "event", "timestamp", "seq"} <= set(event)
        assert event["evse_id"] == 1
    assert [u["reservation_status"] for u in backend.reservation_updates()] == ["Placed", "Cancelled"]
    assert_seq_gapless(backend)


async def test_unplug_under_load(charger: tuple[Running, Backend]) -> None:
    """The cable pulled while the EV draws current (C -> A): the relay opens, the session finishes."""
    running, backend = charger
    await plug_and_charge(running, backend, local_list=LOCAL_LIST)
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "A"})
    await wait_event(backend, 1, "SessionFinished")
    state = await wait_status(backend, 1, "Available")
    assert not running.sim.relay_commanded(1)
    assert state["relay_closed"] is False
    assert state["session"] is None
    assert running.controller.charger.evses[1].counters.openings_under_load == 1


# --- reservations ---------------------------------------------------------------------------------


async def test_reservation_lock_out(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    sim = running.sim
    await backend.ok("set_local_auth_list", LOCAL_LIST)  # LOCAL_TOKEN is Accepted, but not for this EVSE
    expiry = in_s(3600)
    placed = await backend.ok("reserve_now", {"reservation_id": 1, "id_token": "AA11", "expiry_time": expiry,
                                              "evse_id": 1, "sender": "emsp"})
    state = await wait_status(backend, 1, "Reserved")
    assert state["reservation"]["reservation_id"] == 1
    assert state["reservation"]["sender"] == "emsp"
    assert parse_time(state["reservation"]["expiry_time"]) == parse_time(expiry)
    assert set(state["reservation"]) == {"reservation_id", "sender", "expiry_time"}
    start = await wait_event(backend, 1, "ReservationStart")
    assert start["reservation_start"]["reservation_id"] == 1
    assert start["reservation_start"]["id_tag"] == "AA11"

    await plug(backend, 1, "B", "Preparing")
    await backend.ok("sim_token", {"evse_id": 1, "id_token": LOCAL_TOKEN})
    await wait_event(backend, 1, "ReservationAuthtokenMismatch")
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"})
    await backend.wait_for(lambda: (backend.state(1) or {}).get("cp") == "C")
    assert await stays(lambda: not sim.relay_commanded(1), 0.3)
    assert (backend.state(1) or {})["relay_closed"] is False
    refused = await backend.ok("authorize", {"id_token": "BB22", "evse_id": 1})
    assert refused == {"status": "ReservedForOther", "evse_id": 1, "reservation_id": None}
    assert backend.event_names(1).count("ReservationAuthtokenMismatch") == 2
    assert not sim.relay_commanded(1)
    assert [e["reservation_id"] for e in await backend.ok("list_reservations")] == [1]  # still reserved

    await backend.ok("sim_token", {"evse_id": 1, "id_token": "aa11"})  # case-insensitive (U1)
    state = await wait_status(backend, 1, "Charging")
    assert state["session"]["reservation_id"] == 1
    assert sim.relay_commanded(1)
    end = await wait_event(backend, 1, "ReservationEnd")
    assert end["reservation_end"] == {"reservation_id": 1, "reason": "UsedToStartCharging"}
    used = await wait_update(backend, "Used", 1)
    assert used["uuid"] == placed["uuid"]
    assert used["sender"] == "emsp"
    session_uuid = state["session"]["uuid"]
    assert end["uuid"] == session_uuid
    assert await backend.ok("list_reservations") == []
    assert_seq_gapless(backend)


async def test_authorize_at_reserved_evse_with_the_reserved_token(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("reserve_now", {"reservation_id": 3, "id_token": "AA11", "expiry_time": in_s(600), "evse_id": 1})
    result = await backend.ok("authorize", {"id_token": "AA11", "evse_id": 1})
    assert result == {"status": "Accepted", "evse_id": 1, "reservation_id": 3}
    started = await wait_event(backend, 1, "SessionStarted")
    assert started["session_started"]["reservation_id"] == 3
    assert started["session_started"]["reason"] == "Authorized"
    await wait_update(backend, "Used", 3)


async def test_parent_token_from_local_list_uses_the_reservation(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("set_local_auth_list", {"version": 1, "full": True, "tokens": [
        {"id_token": "CHILD2", "status": "Accepted", "parent_id_token": "FLEET1"}]})
    await backend.ok("reserve_now", {"reservation_id": 4, "id_token": "CHILD1", "parent_id_token": "FLEET1",
                                     "expiry_time": in_s(600), "evse_id": 1})
    await wait_status(backend, 1, "Reserved")
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    await backend.ok("sim_token", {"evse_id": 1, "id_token": "CHILD2"})
    await wait_update(backend, "Used", 4)
    end = await wait_event(backend, 1, "ReservationEnd")
    assert end["reservation_end"]["reason"] == "UsedToStartCharging"
    state = await plug(backend, 1, "C", "Charging")
    assert state["session"]["reservation_id"] == 4
    assert "ReservationAuthtokenMismatch" not in backend.event_names(1)
    assert not [m for t, m in backend.messages if t.endswith("/auth/request")]  # decided locally


async def test_reservation_expires_within_a_second(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    expiry = parse_time(in_s(2))  # to the millisecond, as sent
    await backend.ok("reserve_now", {"reservation_id": 5, "id_token": "AA11", "expiry_time": rfc3339(expiry),
                                     "evse_id": 1})
    await wait_status(backend, 1, "Reserved")
    expired = await wait_update(backend, "Expired", 5, timeout=4)
    arrived = datetime.now(UTC)
    assert expiry <= parse_time(expired["timestamp"]) < expiry + timedelta(seconds=1), (expired, expiry)
    assert arrived - expiry < timedelta(seconds=1)
    end = await wait_event(backend, 1, "ReservationEnd")
    assert end["reservation_end"] == {"reservation_id": 5, "reason": "Expired"}
    await wait_status(backend, 1, "Available")
    assert await backend.ok("list_reservations") == []


async def test_scheduled_reservation(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    start = parse_time(in_s(1.5))
    await backend.ok("reserve_now", {"reservation_id": 6, "id_token": "AA11", "start_time": rfc3339(start),
                                     "expiry_time": in_s(600), "evse_id": 1})
    await wait_update(backend, "Placed", 6)  # at acceptance
    (entry,) = await backend.ok("list_reservations")
    assert entry["state"] == "Scheduled"
    state = (await backend.ok("get_state"))["evses"][0]
    assert state["status"] == "Available"
    assert state["reservation"] is None
    assert "ReservationStart" not in backend.event_names(1)

    reserved = await wait_status(backend, 1, "Reserved", timeout=4)
    assert datetime.now(UTC) >= start
    assert reserved["reservation"]["reservation_id"] == 6
    begin = await wait_event(backend, 1, "ReservationStart")
    assert begin["reservation_start"]["reservation_id"] == 6
    assert parse_time(begin["timestamp"]) >= start
    (entry,) = await backend.ok("list_reservations")
    assert entry["state"] == "Active"
    statuses = [v["status"] for t, v in backend.messages if t == f"{backend.root}/evse/1/state"]
    assert set(statuses[:statuses.index("Reserved")]) == {"Available"}  # never Reserved while Scheduled


async def test_sender_namespacing(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, evses=TWO_EVSES) as (_, backend):
        a = await backend.ok("reserve_now", {"reservation_id": 1, "id_token": "AA11", "expiry_time": in_s(600),
                                             "evse_id": 1, "sender": "emsp-a"})
        assert a["status"] == "Accepted"
        assert await backend.ok("cancel_reservation", {"reservation_id": 1, "sender": "emsp-b"}) is False
        assert await backend.ok("cancel_reservation", {"reservation_id": 1}) is False  # sender "" is another one
        b = await backend.ok("reserve_now", {"reservation_id": 1, "id_token": "BB22", "expiry_time": in_s(600),
                                             "evse_id": 2, "sender": "emsp-b"})
        assert b["status"] == "Accepted"
        assert b["uuid"] != a["uuid"]
        entries = await backend.ok("list_reservations")
        assert sorted((e["sender"], e["reservation_id"], e["evse_id"]) for e in entries) == [
            ("emsp-a", 1, 1), ("emsp-b", 1, 2)]
        await wait_status(backend, 1, "Reserved")
        await wait_status(backend, 2, "Reserved")
        assert await backend.ok("cancel_reservation", {"reservation_id": 1, "sender": "emsp-a"}) is True
        cancelled = await wait_update(backend, "Cancelled", 1)
        assert cancelled["sender"] == "emsp-a"
        assert cancelled["uuid"] == a["uuid"]
        assert [(e["sender"], e["reservation_id"]) for e in await backend.ok("list_reservations")] == [("emsp-b", 1)]
        await wait_status(backend, 1, "Available")
        assert (backend.state(2) or {})["status"] == "Reserved"
        end = await wait_event(backend, 1, "ReservationEnd")
        assert end["reservation_end"] == {"reservation_id": 1, "reason": "Cancelled"}
        assert "ReservationEnd" not in backend.event_names(2)


# --- authorization (§5) ---------------------------------------------------------------------------


async def answer_auth(backend: Backend, status: str, after: int = 0, **extra: Any) -> dict[str, Any]:  # noqa: ANN401
    topic = f"{backend.root}/auth/request"

    def requests() -> list[Any]:
        return [v for t, v in backend.messages if t == topic][after:]

    (request,) = await backend.wait_for(requests)
    await backend.client.publish(f"{backend.root}/auth/response",
                                 as_json({"id": request["id"], "status": status} | extra), qos=1)
    return request  # type: ignore[no-any-return]


async def test_backend_auth_accepts_unknown_token(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    await wait_event(backend, 1, "AuthRequired")
    await backend.ok("sim_token", {"evse_id": 1, "id_token": "UNKNOWN1"})
    request = await answer_auth(backend, "Accepted")
    assert set(request) == {"id", "id_token", "evse_id", "token_type"}
    assert (request["id_token"], request["evse_id"], request["token_type"]) == ("UNKNOWN1", 1, "RFID")
    assert isinstance(request["id"], str)
    assert request["id"]
    await backend.wait_for(lambda: ((backend.state(1) or {}).get("session") or {}).get("id_token") == "UNKN****")
    await plug(backend, 1, "C", "Charging")


async def test_backend_auth_answers_the_authorize_op(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    pending = asyncio.ensure_future(backend.request("authorize", {"id_token": "APPUSER7", "evse_id": 1,
                                                                  "token_type": "APP_USER"}))
    request = await answer_auth(backend, "Accepted")
    assert request["token_type"] == "APP_USER"
    reply = await pending
    assert reply["result"] == {"status": "Accepted", "evse_id": 1, "reservation_id": None}
    # a refusal by the backend
    await backend.ok("stop_session", {"evse_id": 1})
    await wait_event(backend, 1, "SessionFinished")
    pending = asyncio.ensure_future(backend.request("authorize", {"id_token": "APPUSER8", "evse_id": 1}))
    await answer_auth(backend, "Blocked", after=1)
    assert (await pending)["result"] == {"status": "Rejected", "evse_id": 1, "reservation_id": None}


async def test_backend_silent_local_list_only_rejects(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    loop = asyncio.get_running_loop()
    begin = loop.time()
    reply = await backend.request("authorize", {"id_token": "NOANSWER", "evse_id": 1}, timeout=5)
    waited = loop.time() - begin
    assert reply["result"] == {"status": "Rejected", "evse_id": 1, "reservation_id": None}
    assert 0.9 <= waited < 2.5, waited  # auth.timeout_s = 1 in the tests
    assert [v["id_token"] for t, v in backend.messages if t.endswith("/auth/request")] == ["NOANSWER"]
    # the RFID reader path: no answer, rejected, the relay never closes
    await backend.ok("sim_token", {"evse_id": 1, "id_token": "NOANSWER2"})
    await backend.wait_for(lambda: len([1 for t, _ in backend.messages if t.endswith("/auth/request")]) == 2)
    asked = loop.time()
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"})
    assert await stays(lambda: not running.sim.relay_commanded(1), asked + 1.2 - loop.time())  # past the timeout
    assert (backend.state(1) or {})["session"]["id_token"] is None
    assert (backend.state(1) or {})["status"] == "Preparing"
    assert not (backend.state(1) or {})["relay_closed"]


async def test_backend_silent_accept_all_accepts(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, offline_policy="accept_all") as (running, backend):
        await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
        reply = await backend.request("authorize", {"id_token": "NOANSWER", "evse_id": 1}, timeout=5)
        assert reply["result"] == {"status": "Accepted", "evse_id": 1, "reservation_id": None}
        await plug(backend, 1, "C", "Charging")
        assert running.sim.relay_commanded(1)


async def test_authorize_without_evse_picks_the_waiting_ev(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, evses=TWO_EVSES) as (_, backend):
        await backend.ok("set_local_auth_list", LOCAL_LIST)
        await backend.ok("sim_plug", {"evse_id": 2, "cp": "B"})
        await wait_event(backend, 2, "AuthRequired")
        result = await backend.ok("authorize", {"id_token": LOCAL_TOKEN})
        assert result == {"status": "Accepted", "evse_id": 2, "reservation_id": None}
        await plug(backend, 2, "C", "Charging")
        assert (backend.state(1) or {})["status"] == "Available"


async def test_authorize_without_evse_holds_the_token_for_the_next_plug_in(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    result = await backend.ok("authorize", {"id_token": LOCAL_TOKEN})
    assert result == {"status": "Accepted", "evse_id": None, "reservation_id": None}
    assert backend.events(1) == []  # no session yet
    state = await plug(backend, 1, "C", "Charging")
    assert state["session"]["id_token"] == "04A2****"
    assert running.sim.relay_commanded(1)
    started = await wait_event(backend, 1, "SessionStarted")
    assert started["session_started"]["reason"] == "EVConnected"
    await wait_event(backend, 1, "ChargingStarted")


async def test_held_token_session_has_no_auth_required(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    await backend.ok("authorize", {"id_token": LOCAL_TOKEN})
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"})
    await wait_event(backend, 1, "ChargingStarted")
    assert backend.event_names(1) == ["SessionStarted", "ChargingStarted"], backend.event_names(1)


async def test_authorize_without_evse_no_evse_available(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    await backend.ok("set_local_auth_list", LOCAL_LIST)
    await backend.ok("set_enabled", {"evse_id": 1, "enabled": False})
    result = await backend.ok("authorize", {"id_token": LOCAL_TOKEN})
    assert result == {"status": "NoEvseAvailable", "evse_id": None, "reservation_id": None}
    await backend.ok("set_enabled", {"evse_id": 1, "enabled": True})
    await backend.ok("reserve_now", {"reservation_id": 1, "id_token": "AA11", "expiry_time": in_s(600), "evse_id": 1})
    result = await backend.ok("authorize", {"id_token": LOCAL_TOKEN})
    assert result == {"status": "NoEvseAvailable", "evse_id": None, "reservation_id": None}


# --- faults -----------------------------------------------------------------------------------------


async def test_rcd_fault_while_charging(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await plug_and_charge(running, backend, local_list=LOCAL_LIST)
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True})
    state = await wait_status(backend, 1, "Faulted")
    assert not running.sim.relay_commanded(1)
    assert state["relay_closed"] is False
    assert state["errors"] == ["RCD"]
    assert state["pwm_duty_pct"] == 0
    error = await wait_event(backend, 1, "Error")
    assert error["error"] == "RCD"
    cancelled = await wait_event(backend, 1, "SessionCancelled")
    assert cancelled["session_cancelled"]["reason"] == "EmergencyStop"
    assert error["uuid"] == cancelled["uuid"] != ""
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": False})
    await backend.wait_for(lambda: (backend.state(1) or {}).get("errors") == [])
    assert await stays(lambda: not running.sim.relay_commanded(1), 0.5)  # the cancelled session never resumes


async def test_fault_removes_the_evse_reservation(charger: tuple[Running, Backend]) -> None:
    _, backend = charger
    placed = await backend.ok("reserve_now", {"reservation_id": 2, "id_token": "AA11", "expiry_time": in_s(600),
                                              "evse_id": 1})
    await wait_status(backend, 1, "Reserved")
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "rcd", "active": True})
    removed = await wait_update(backend, "Removed", 2)
    assert removed["uuid"] == placed["uuid"]
    end = await wait_event(backend, 1, "ReservationEnd")
    assert end["reservation_end"] == {"reservation_id": 2, "reason": "Cancelled"}
    state = await wait_status(backend, 1, "Faulted")
    assert state["reservation"] is None
    assert await backend.ok("list_reservations") == []
    assert_seq_gapless(backend)


async def test_welded_relay(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    await plug_and_charge(running, backend, local_list=LOCAL_LIST)
    await backend.ok("sim_fault", {"evse_id": 1, "fault": "relay_welded", "active": True})
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})  # the relay is commanded open, but stays closed
    state = await wait_status(backend, 1, "Faulted", timeout=3)
    assert state["errors"] == ["Relais"]
    assert not running.sim.relay_commanded(1)
    error = await wait_event(backend, 1, "Error")
    assert error["error"] == "Relais"
    assert running.sim.locked(1)  # a welded contactor keeps the cable locked


async def test_meter_lost(broker: Broker, tmp_path: Path) -> None:
    async with charger_and_backend(broker, tmp_path, evses=evse(1, meter_stale_after_s=0.2)) as (running, backend):
        await plug_and_charge(running, backend, local_list=LOCAL_LIST)
        await backend.ok("sim_fault", {"evse_id": 1, "fault": "meter_lost", "active": True})
        state = await wait_status(backend, 1, "Faulted", timeout=4)
        assert state["errors"] == ["MeterLost"]
        assert not running.sim.relay_commanded(1)
        error = await wait_event(backend, 1, "Error")
        assert error["error"] == "MeterLost"
        meter = f"{backend.root}/evse/1/meter"
        await backend.wait_for(lambda: any(t == meter and v["meter_ok"] is False for t, v in backend.messages), 2)
