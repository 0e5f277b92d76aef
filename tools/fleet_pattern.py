"""The fleet simulator's daily pattern: which visits each EVSE gets in a simulated day (tools/fleet.py).

What it is for: a plan of visits per EVSE and per day, either drawn from a seeded random generator
(arrivals peak in the morning and the evening, as at a workplace or a car park) or read from a
script file, the same every day. A visit says when the driver arrives (hour of the day), how long
the car stays (hours) and what kind of visit it is (`KINDS`); `tools/fleet_driver.py` plays it.

What it must never do: read a clock or the global random generator (a plan depends only on its seed,
so a run can be repeated), or know anything of MQTT or of the controller.

Standard: none; the kinds follow API.md §5 (how a session is authorized) and §7 (reservations).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: walk_in: plug in, tap a known card; tap_first: tap, then plug in; remote: the backend's `authorize`;
#: unknown_card: a card not on the local list (R/auth/request, the backend answers); reserved: the
#: backend reserves the EVSE, the driver comes and taps; reserved_missed: reserved, nobody comes (it
#: expires); fault: charging, then an RCD trip, recovery, unplug.
KINDS: Final = ("walk_in", "tap_first", "remote", "unknown_card", "reserved", "reserved_missed", "fault")
#: How often each kind is drawn (same order as KINDS).
WEIGHTS: Final = (0.35, 0.15, 0.1, 0.1, 0.15, 0.07, 0.08)
HOURS_PER_DAY: Final = 24.0


@dataclass(frozen=True, slots=True)
class Visit:
    """One car at one EVSE: arrival hour (0..24), stay in hours, kind (KINDS), current drawn (A)."""

    start_h: float
    stay_h: float
    kind: str
    load_a: float = 16.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r}: must be one of {', '.join(KINDS)}")
        if not 0.0 <= self.start_h < HOURS_PER_DAY:
            raise ValueError(f"start_h {self.start_h}: must be in [0, 24)")
        if self.stay_h <= 0:
            raise ValueError(f"stay_h {self.stay_h}: must be positive")
        if not 6.0 <= self.load_a <= 80.0:
            raise ValueError(f"load_a {self.load_a}: must be in [6, 80]")


def _arrival_h(rng: random.Random) -> float:
    """Morning (around 08:00) or evening (around 18:00) peak, within 05:00..22:00."""
    peak_h, spread_h = (8.0, 1.5) if rng.random() < 0.5 else (18.0, 2.0)
    return min(22.0, max(5.0, rng.gauss(peak_h, spread_h)))


def random_day(rng: random.Random, visits_per_day: tuple[int, int] = (2, 5)) -> list[Visit]:
    """One EVSE's day: a few visits, in arrival order, none overlapping the next."""
    count = rng.randint(*visits_per_day)
    arrivals = sorted(_arrival_h(rng) for _ in range(count))
    visits: list[Visit] = []
    for i, start_h in enumerate(arrivals):
        if visits and start_h < visits[-1].start_h + visits[-1].stay_h:
            continue  # the EVSE is still taken: this driver goes elsewhere
        next_h = arrivals[i + 1] if i + 1 < len(arrivals) else HOURS_PER_DAY
        stay_h = min(rng.uniform(0.5, 4.0), max(0.1, next_h - start_h - 0.05), HOURS_PER_DAY - start_h)
        kind = rng.choices(KINDS, WEIGHTS)[0]
        visits.append(Visit(start_h=start_h, stay_h=stay_h, kind=kind, load_a=float(rng.choice((10, 16, 32)))))
    return visits


def load_script(path: Path) -> list[Visit]:
    """A scripted day from a JSON file: `[{"start_h": 8, "stay_h": 2, "kind": "walk_in", "load_a": 16}, ...]`.
    Raises ValueError naming the entry that is wrong (TypeError when the file holds no list)."""
    entries = json.loads(path.read_text())
    if not isinstance(entries, list):
        raise TypeError(f"{path}: a JSON list of visits is expected")
    visits: list[Visit] = []
    for n, entry in enumerate(entries):
        try:
            visits.append(Visit(float(entry["start_h"]), float(entry["stay_h"]), str(entry["kind"]),
                                float(entry.get("load_a", 16.0))))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: visit {n}: {exc}") from exc
    return sorted(visits, key=lambda v: v.start_h)


class DayPlanner:
    """The visits of one EVSE, day after day: scripted, or drawn from its own seeded generator (the
    seed, the charger's id and the EVSE id make it, so a plan does not depend on how chargers are
    split among processes)."""

    def __init__(self, seed: int, charger_id: str, evse_id: int, script: list[Visit] | None = None) -> None:
        self.rng = random.Random(f"{seed}/{charger_id}/{evse_id}")
        self.script = script

    def day(self) -> list[Visit]:
        return list(self.script) if self.script is not None else random_day(self.rng)
