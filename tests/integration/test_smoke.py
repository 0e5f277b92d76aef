"""The whole controller against a real mosquitto: the smallest end-to-end flow."""

from __future__ import annotations

import pytest

from tests.support.backend import Backend
from tests.support.builders import local_list
from tests.support.controller import Running
from tests.support.flows import plug_and_charge

pytestmark = pytest.mark.integration


async def test_plug_token_charge_unplug(charger: tuple[Running, Backend]) -> None:
    """The list loads, the EV plugs in (Preparing), the token is authorized with the `authorize` op
    (Accepted at EVSE 1), the EV asks for power (Charging): plug_and_charge asserts each of these."""
    running, backend = charger
    await plug_and_charge(running, backend, token="04A2B3C4", local_list=local_list("04A2B3C4"), authorize=True)
    assert running.sim.relay_commanded(1)
    await backend.ok("sim_plug", {"evse_id": 1, "cp": "A"})
    await backend.wait_for(lambda: "SessionFinished" in backend.event_names(1))
    names = backend.event_names(1)
    assert names[:3] == ["SessionStarted", "AuthRequired", "ChargingStarted"], names
    seqs = [e["seq"] for e in backend.events()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
