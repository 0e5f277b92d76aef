"""The whole controller against a real mosquitto: the smallest end-to-end flow."""

from __future__ import annotations

import pytest

from tests.integration.conftest import Backend, Running

pytestmark = pytest.mark.integration


async def test_plug_token_charge_unplug(charger: tuple[Running, Backend]) -> None:
    running, backend = charger
    assert await backend.ok("set_local_auth_list", {"version": 1, "full": True,
                                                    "tokens": [{"id_token": "04A2B3C4", "status": "Accepted"}]})
    assert await backend.ok("sim_plug", {"evse_id": 1, "cp": "B"})
    await backend.wait_for(lambda: (backend.state(1) or {}).get("status") == "Preparing")
    result = await backend.ok("authorize", {"evse_id": 1, "id_token": "04A2B3C4"})
    assert result == {"status": "Accepted", "evse_id": 1, "reservation_id": None}
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "C"})
    await backend.wait_for(lambda: (backend.state(1) or {}).get("status") == "Charging")
    assert running.sim.relay_commanded(1)
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "A"})
    await backend.wait_for(lambda: "SessionFinished" in backend.event_names(1))
    names = backend.event_names(1)
    assert names[:3] == ["SessionStarted", "AuthRequired", "ChargingStarted"], names
    seqs = [e["seq"] for e in backend.events()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
