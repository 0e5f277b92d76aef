"""The charger: every EVSE machine of one board, and the pilot layer stacked under each.

It routes an event to the EVSE named by its `cid`. Raw CP samples (`PilotSampled`) first go through
that EVSE's `PilotMonitor` (debounce, hysteresis, diode check: IEC 61851-1 Table A.4 / A.2.2), which
turns them into `PilotChanged` for the machine, as EVerest's IEC layer feeds its charger layer. When
a machine stops driving F, its monitor is reset so the EV's real state is reported afresh.

No I/O, no clock: `now` is passed in (monotonic seconds). The shell's single core task is the only
caller, so nothing here is locked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from firmware.core.events import DUTY_F, Action, Event, PilotChanged, PilotSampled
from firmware.core.evse import EvseConfig, EvseMachine
from firmware.core.pilot import DEBOUNCE_S, PilotMonitor


class Charger:
    """All EVSEs of the board. `handle(event, now)`, `tick(now)`, `next_deadline()`."""

    def __init__(
        self,
        configs: Iterable[EvseConfig],
        *,
        new_session_id: Callable[[], str],
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self.evses: dict[int, EvseMachine] = {}
        self._monitors: dict[int, PilotMonitor] = {}
        for config in configs:
            if config.cid in self.evses:
                raise ValueError(f"EVSE id {config.cid} is configured twice")
            self.evses[config.cid] = EvseMachine(config, new_session_id=new_session_id)
            self._monitors[config.cid] = PilotMonitor(debounce_s)
        if not self.evses:
            raise ValueError("a charger needs at least one EVSE")

    def start(self, now: float) -> list[Action]:
        """The outputs every EVSE wants at boot (after the shell has driven them fail-safe)."""
        return [action for evse in self.evses.values() for action in evse.tick(now)]

    def handle(self, event: Event, now: float) -> list[Action]:
        evse = self.evses.get(event.cid)
        if evse is None:
            raise ValueError(f"unknown EVSE id {event.cid}")
        if isinstance(event, PilotSampled):
            reading = self._monitors[event.cid].update(event.volts_hi, event.volts_lo, evse.pwm_on, now)
            if reading is None:
                return []
            event = PilotChanged(cid=event.cid, cp=reading.cp, diode_ok=reading.diode_ok)
        was_f = evse.duty_pct == DUTY_F
        actions = evse.handle(event, now)
        self._after(evse, was_f)
        return actions

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for evse in self.evses.values():
            deadline = evse.next_deadline()
            if deadline is not None and deadline <= now:
                was_f = evse.duty_pct == DUTY_F
                actions.extend(evse.tick(now))
                self._after(evse, was_f)
        return actions

    def next_deadline(self) -> float | None:
        deadlines = [d for evse in self.evses.values() if (d := evse.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def _after(self, evse: EvseMachine, was_f: bool) -> None:
        if was_f and evse.duty_pct != DUTY_F:
            self._monitors[evse.cid].reset()
