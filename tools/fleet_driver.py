"""The fleet simulator's drivers: one task per EVSE plays its day of visits over MQTT (tools/fleet.py).

What it is for: turning each planned visit (`tools/fleet_pattern.py`) into what happens at a real
EVSE, as a backend test harness scripts it: the EV side through the sim ops of API.md §8 (`sim_plug`,
`sim_token`, `sim_load`, `sim_fault`) and the backend side through its ops (`reserve_now`,
`authorize`, `set_max_current`), all sent as requests on the charger's `R/cmd` by the worker's
`FleetBackend`, which times every one. Simulated hours become real seconds through `DayClock`
(`day_s` real seconds per simulated day); a visit that comes late (the previous one overran) starts
at once.

What it must never do: reach into the controller (only MQTT requests), stop on a failed command
(the failure is counted by the backend and the visit goes on, so the EVSE ends each visit unplugged
and fault-free), or run two visits of one EVSE at once. A driver cancelled at the end of a run leaves
its EVSE as it is: the chargers stop next.

Standard: API.md §5 (authorization paths), §7 (reservations), §8 (sim ops).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from tools.fleet_backend import FleetBackend
from tools.fleet_pattern import HOURS_PER_DAY, DayPlanner, Visit

#: A reservation's window, in simulated hours, and its real minimum (expiry is to the second, API.md §7 U2).
RESERVATION_WINDOW_H: Final = 0.5
MIN_RESERVATION_S: Final = 3.0
#: What a driver waits before coming to a reservation, as a share of its window.
RESERVED_ARRIVAL_SHARE: Final = 0.3
MAX_CURRENT_A: Final = 32.0  # the generated config's max_current_a
REDUCED_CURRENT_A: Final = 10.0  # what the backend's load management sets mid-session


@dataclass(frozen=True, slots=True)
class DayClock:
    """Simulated time of day in real seconds: day `d` hour `h` is at `t0 + (d * 24 + h - start_h) * day_s / 24`."""

    t0: float  # loop time when the simulated clock showed `start_h` of day 0
    day_s: float
    start_h: float = 6.0

    def at(self, day: int, hour: float) -> float:
        return self.t0 + (day * HOURS_PER_DAY + hour - self.start_h) * self.day_s / HOURS_PER_DAY

    def seconds(self, hours: float) -> float:
        return hours * self.day_s / HOURS_PER_DAY


def known_tokens(charger_id: str, evse_ids: list[int], per_evse: int = 4) -> list[str]:
    """The cards on each charger's local auth list."""
    return [f"{charger_id}-e{e}-k{n}" for e in evse_ids for n in range(per_evse)]


def local_auth_list(charger_id: str, evse_ids: list[int]) -> dict[str, object]:
    """`set_local_auth_list` args (API.md §3) for one charger's known cards."""
    return {"version": 1, "full": True, "tokens": [{"id_token": t, "status": "Accepted"}
                                                    for t in known_tokens(charger_id, evse_ids)]}


def expiry_in(seconds: float) -> str:
    """RFC 3339 UTC, whole seconds, at least `seconds` from now."""
    when = datetime.now(UTC) + timedelta(seconds=math.ceil(seconds) + 1)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class EvseDriver:
    """The cars of one EVSE, day after day."""

    def __init__(self, backend: FleetBackend, charger_id: str, evse_id: int, planner: DayPlanner,
                 clock: DayClock) -> None:
        self.backend = backend
        self.charger_id = charger_id
        self.evse_id = evse_id
        self.planner = planner
        self.clock = clock
        self._cards = itertools.cycle(range(4))
        self._serial = itertools.count(1)

    async def cmd(self, op: str, **args: object) -> object | None:
        return await self.backend.request(self.charger_id, op, {"evse_id": self.evse_id, **args})

    async def run(self) -> None:
        """Play the plan, one day after the other, until cancelled."""
        loop = asyncio.get_running_loop()
        for day in itertools.count():
            for visit in self.planner.day():
                if day == 0 and visit.start_h < self.clock.start_h:
                    continue  # before the simulation's first morning
                await asyncio.sleep(max(0.0, self.clock.at(day, visit.start_h) - loop.time()))
                await self.play(visit)
            await asyncio.sleep(max(0.0, self.clock.at(day + 1, 0.0) - loop.time()))

    async def play(self, visit: Visit) -> None:
        stay_s = self.clock.seconds(visit.stay_h)
        plays = {"walk_in": self._walk_in, "tap_first": self._tap_first, "remote": self._remote,
                 "unknown_card": self._unknown_card, "reserved": self._reserved,
                 "reserved_missed": self._reserved_missed, "fault": self._fault}
        await plays[visit.kind](visit, stay_s)  # a failed command returns None: the visit goes on
        await self.cmd("sim_plug", cp="A")  # the car leaves

    # --- the kinds of visit (tools/fleet_pattern.KINDS) ------------------------------------------

    def _card(self) -> str:
        return f"{self.charger_id}-e{self.evse_id}-k{next(self._cards)}"

    async def _charge(self, visit: Visit, stay_s: float) -> None:
        """The EV asks for power and draws its current for the stay, then is full (B)."""
        await self.cmd("sim_load", current_a=visit.load_a)
        await self.cmd("sim_plug", cp="C")
        await asyncio.sleep(stay_s)
        await self.cmd("sim_plug", cp="B")

    async def _tap_and_charge(self, visit: Visit) -> None:
        """Plug in, tap a card from the local list, and ask for power at the visit's current."""
        await self.cmd("sim_plug", cp="B")
        await self.cmd("sim_token", id_token=self._card())
        await self.cmd("sim_load", current_a=visit.load_a)
        await self.cmd("sim_plug", cp="C")

    async def _walk_in(self, visit: Visit, stay_s: float) -> None:
        """Plug in, tap a card from the local list; halfway the backend lowers the current, then restores it."""
        await self._tap_and_charge(visit)
        await asyncio.sleep(stay_s / 2)
        await self.cmd("set_max_current", current_a=REDUCED_CURRENT_A)
        await asyncio.sleep(stay_s / 2)
        await self.cmd("set_max_current", current_a=MAX_CURRENT_A)
        await self.cmd("sim_plug", cp="B")

    async def _tap_first(self, visit: Visit, stay_s: float) -> None:
        await self.cmd("sim_token", id_token=self._card())
        await self.cmd("sim_plug", cp="B")
        await self._charge(visit, stay_s)

    async def _remote(self, visit: Visit, stay_s: float) -> None:
        """Started from the app: the backend's `authorize` for this EVSE, then the car plugs in."""
        await self.cmd("authorize", id_token=self._card(), token_type="APP_USER")
        await self.cmd("sim_plug", cp="B")
        await self._charge(visit, stay_s)

    async def _unknown_card(self, visit: Visit, stay_s: float) -> None:
        """A card the charger does not know: it asks the backend (R/auth/request), which accepts it."""
        await self.cmd("sim_plug", cp="B")
        await self.cmd("sim_token", id_token=f"{self.charger_id}-e{self.evse_id}-u{next(self._serial)}")
        await self._charge(visit, stay_s)

    async def _reserve(self, token: str) -> float | None:
        """The backend reserves this EVSE for `token`: the window in real seconds, None when not Accepted."""
        window_s = max(MIN_RESERVATION_S, self.clock.seconds(RESERVATION_WINDOW_H))
        result = await self.cmd("reserve_now", reservation_id=next(self._serial), id_token=token, sender="fleet",
                                expiry_time=expiry_in(window_s))
        if not isinstance(result, dict) or result.get("status") != "Accepted":
            self.backend.counters.reservations_refused += 1
            return None
        return window_s

    async def _reserved(self, visit: Visit, stay_s: float) -> None:
        token = f"{self.charger_id}-e{self.evse_id}-r{next(self._serial)}"
        window_s = await self._reserve(token)
        if window_s is None:
            return
        await asyncio.sleep(window_s * RESERVED_ARRIVAL_SHARE)
        await self.cmd("sim_plug", cp="B")
        await self.cmd("sim_token", id_token=token)  # the reservation's token: accepted locally (API.md §5 step 1)
        await self._charge(visit, stay_s)

    async def _reserved_missed(self, visit: Visit, stay_s: float) -> None:
        window_s = await self._reserve(f"{self.charger_id}-e{self.evse_id}-r{next(self._serial)}")
        if window_s is not None:
            await asyncio.sleep(window_s + 1.5)  # nobody comes: it expires (to the second)

    async def _fault(self, visit: Visit, stay_s: float) -> None:
        """Charging, then the RCD trips (Faulted), is reset a while later, and the car leaves."""
        await self._tap_and_charge(visit)
        await asyncio.sleep(stay_s / 3)
        self.backend.counters.faults_injected += 1
        await self.cmd("sim_fault", fault="rcd", active=True)
        await asyncio.sleep(stay_s / 3)
        await self.cmd("sim_fault", fault="rcd", active=False)
