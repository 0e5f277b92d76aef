"""Reservation contract points of API.md §4, §5 and §7 against the real broker (issue 8):

* G3: an EVSE gets hold events only when its held state changes (no End + Start "blip" when a
  global reservation is used at another held EVSE).

A `sim_*` reply may come before or after the controller has handled the change, so every test
waits for the observable result (an event, a state document) after a sim op.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import (
    Backend,
    Broker,
    charger_and_backend,
    in_s,
    wait_event,
    wait_status,
    wait_update,
)

pytestmark = pytest.mark.integration

EVSE = '[[evse]]\nid = {id}\nconnectors = ["sType2"]\nmax_current_a = 32\nphases = 3\n'
TWO_EVSES = EVSE.format(id=1) + EVSE.format(id=2)
FIVE_EVSES = "".join(EVSE.format(id=i) for i in range(1, 6))
RESERVATION_EVENTS = ("ReservationStart", "ReservationEnd")


def reservation_events(backend: Backend, evse_id: int) -> list[dict[str, Any]]:
    return [e for e in backend.events(evse_id) if e["event"] in RESERVATION_EVENTS]


def durable_seqs(backend: Backend) -> list[int]:
    return sorted(v["seq"] for t, v in backend.messages
                  if (t.endswith("/session") or t == f"{backend.root}/reservation") and isinstance(v, dict))


async def plug(backend: Backend, evse_id: int, cp: str, status: str) -> None:
    await backend.ok("sim_plug", {"evse_id": evse_id, "cp": cp})
    await wait_status(backend, evse_id, status)


async def until(when: datetime, margin_s: float = 0.3) -> None:
    """Sleep until `margin_s` after `when` (the controller acts at `when`; nothing shows it here)."""
    await asyncio.sleep(max((when - datetime.now(UTC)).total_seconds(), 0) + margin_s)


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
