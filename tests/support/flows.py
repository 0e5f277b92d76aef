"""Steps of the charging flows that many tests go through before what they test."""

from __future__ import annotations

from typing import Any

from firmware.core.events import Status
from tests.support.backend import Backend, wait_status
from tests.support.builders import LOCAL_TOKEN
from tests.support.controller import Running
from tests.support.polling import until


async def plug(backend: Backend, evse_id: int, cp: str, status: str) -> dict[str, Any]:
    """Set the simulated EV's CP state (`sim_plug`), then wait for the EVSE's `status`; returns its state
    document."""
    assert await backend.ok("sim_plug", {"evse_id": evse_id, "cp": cp}) is True
    return await wait_status(backend, evse_id, status)


async def plug_and_charge(running: Running, backend: Backend | None = None, *, token: str = LOCAL_TOKEN,
                          evse_id: int = 1, local_list: dict[str, Any] | None = None,
                          authorize: bool = False) -> dict[str, Any]:
    """Plug in (CP B: Preparing), have `token` accepted, request power (CP C): Charging. Returns the
    EVSE's state document once Charging.

    Through `backend` (API.md §3, §8): `local_list` is loaded first when given; the token is presented
    at the reader (`sim_token`), or with the `authorize` op when `authorize` (its result must be
    Accepted); the session must show the token before the EV asks for power. Without a backend (the
    link is down, or there is none) on the simulated board itself, watching the controller: the local
    list must already hold the token, and the relay must be closed at the end."""
    if backend is None:
        assert local_list is None, "without a backend, load the local list before"
        return await _charge_on_the_board(running, token, evse_id)
    if local_list is not None:
        assert await backend.ok("set_local_auth_list", local_list) is True
    await plug(backend, evse_id, "B", "Preparing")
    if authorize:
        result = await backend.ok("authorize", {"id_token": token, "evse_id": evse_id})
        assert result == {"status": "Accepted", "evse_id": evse_id, "reservation_id": None}
    else:
        assert await backend.ok("sim_token", {"evse_id": evse_id, "id_token": token}) is True
    await backend.wait_for(lambda: ((backend.state(evse_id) or {}).get("session") or {}).get("id_token") is not None)
    return await plug(backend, evse_id, "C", "Charging")


async def _charge_on_the_board(running: Running, token: str, evse_id: int) -> dict[str, Any]:
    charger, sim = running.controller.charger, running.sim

    def authorized() -> bool:
        session = charger.evses[evse_id].session
        return session is not None and session.authorized

    sim.plug(evse_id, "B")
    await until(lambda: charger.status(evse_id) is Status.PREPARING, 3)
    sim.token(evse_id, token)
    await until(authorized, 3)
    sim.plug(evse_id, "C")
    await until(lambda: charger.status(evse_id) is Status.CHARGING and sim.relay_commanded(evse_id), 3)
    return running.controller.state_doc(evse_id)
