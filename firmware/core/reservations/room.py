"""G1, the worst-case room check for global reservations, the EVSE views it is asked over, and the
judgement of a new reservation (V3, V4) that asks it.

What it is for: API.md §7 G1 asks, for every order in which the cars of the global reservations may
arrive, and every free fitting EVSE each may pick, whether every later car still finds a free
fitting EVSE. EVerest enumerates permutations (factorial). Here it is a bipartite matching question
per connector type (`global_room`, with `_max_matching`), polynomial in the number of cars and
EVSEs; tests prove it agrees with the brute-force enumeration on thousands of random layouts.
`free_evses`, `g1_at` and `g1_over_window` ask it over the book's EVSEs and reservations: at now
(live state counts), at an instant after now (V5: hardware and EVSE-specific reservations only),
for U4 capacity (only faulted and disabled EVSEs are missing), and over a new window (V5).
`judge` says whether a new reservation fits beside the others (V3 EVSE-specific, V4 global) and,
if not, which refusal the backend gets.

It must never change anything: every function is a pure question over the values passed in (the
book owns the state and acts on the answers). No clock, no I/O (DESIGN.md principle 1, STYLE.md B1).

Standard: API.md §7 rules G1-G3, V3-V5 and U4; EVerest's reservation G1 (the permutation check it
replaces, /work/shared/seeds/everest_interfaces_reservation.rst).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from firmware.core.reservations.model import Entry, EvseLive, ReservationResult, _overlap, fits


def _max_matching(cars: list[str], evses: list[tuple[str, ...]]) -> int:
    """Size of a maximum matching of cars to EVSEs they fit (Kuhn's augmenting paths)."""
    owner: list[int | None] = [None] * len(evses)

    def augment(car: int, seen: list[bool]) -> bool:
        for j, connectors in enumerate(evses):
            if not seen[j] and fits(cars[car], connectors):
                seen[j] = True
                holder = owner[j]
                if holder is None or augment(holder, seen):
                    owner[j] = car
                    return True
        return False

    return sum(augment(car, [False] * len(evses)) for car in range(len(cars)))


def global_room(types: Iterable[str], free_evses: Iterable[Iterable[str]]) -> bool:
    """G1's worst-case clause: whatever order the cars of the global reservations (`types`) arrive
    in, and whichever free fitting EVSE each picks, every car finds a free fitting EVSE.

    A car c is stranded exactly when the cars before it can occupy *every* free EVSE that fits c,
    each taking a different EVSE that fits itself, i.e. when the other cars can be matched onto all
    of c's fitting EVSEs (the adversary sends those cars first, each to its matched EVSE). So G1
    holds iff, for every car c, a maximum matching of the other cars into c's fitting EVSEs is
    smaller than their number. Cars of one type share the question, so it is asked once per type:
    polynomial time instead of EVerest's n! orders (tests compare it with the brute force).
    """
    cars = list(types)
    evses = [tuple(c) for c in free_evses]
    if len(cars) > len(evses):
        return False
    for requested in set(cars):
        fitting = [e for e in evses if fits(requested, e)]
        others = list(cars)
        others.remove(requested)
        if len(others) >= len(fitting) and _max_matching(others, fitting) == len(fitting):
            return False
    return True


def free_evses(evses: Mapping[int, EvseLive], entries: Iterable[Entry], now: datetime,
               instant: datetime | None = None, skip: Entry | None = None) -> list[int]:
    """EVSEs free for global reservations at `instant` (default now). V5: live state only at now."""
    instant = now if instant is None else instant
    held = {
        e.reservation.evse_id
        for e in entries
        if e is not skip and e.reservation.evse_id is not None and e.in_window(instant)
    }
    return [
        evse_id
        for evse_id, live in evses.items()
        if evse_id not in held
        and (instant > now or (not live.occupied and not live.faulted and live.enabled))
    ]


def g1_at(evses: Mapping[int, EvseLive], entries: list[Entry], instant: datetime, now: datetime, *,
          capacity: bool = False) -> bool:
    """G1 at one instant over `entries` (those whose windows contain it are counted). With
    `capacity`, only faulted and disabled EVSEs are missing (U4: a plug-in removes nothing)."""
    counted = [e for e in entries if e.in_window(instant)]
    if len(counted) > len(evses):
        return False
    specific = {e.reservation.evse_id for e in counted if e.reservation.evse_id is not None}
    free = [
        live.connectors
        for evse_id, live in evses.items()
        if evse_id not in specific
        and (instant > now or ((capacity or not live.occupied) and not live.faulted and live.enabled))
    ]
    return global_room((e.reservation.connector_type for e in counted if e.reservation.evse_id is None), free)


def g1_over_window(evses: Mapping[int, EvseLive], candidate: Entry, others: list[Entry], now: datetime) -> bool:
    """V5: G1 at the new window's start and at every other window's start inside it."""
    entries = [*others, candidate]
    instants = {candidate.window_start}
    instants.update(
        e.window_start for e in others if candidate.window_start < e.window_start < candidate.reservation.expiry_utc
    )
    return all(g1_at(evses, entries, instant, now) for instant in sorted(instants))


def judge(evses: Mapping[int, EvseLive], candidate: Entry, others: list[Entry], now: datetime) -> ReservationResult:
    """V3 / V4 (V1 is the book's): ACCEPTED when the EVSEs hold `candidate` beside `others` (every
    reservation but the one it replaces), else the refusal that says why."""
    evse_id = candidate.reservation.evse_id
    if evse_id is None:
        return _judge_global(evses, candidate, others, now)
    return _judge_specific(evses, evse_id, candidate, others, now)


def _judge_specific(evses: Mapping[int, EvseLive], evse_id: int, candidate: Entry, others: list[Entry],
                    now: datetime) -> ReservationResult:
    """V3: a reservation of one EVSE (live state counts only when it starts now)."""
    live = evses[evse_id]
    if any(e.reservation.evse_id == evse_id and _overlap(e, candidate) for e in others):
        return ReservationResult.OCCUPIED
    if not fits(candidate.reservation.connector_type, live.connectors):
        return ReservationResult.REJECTED
    refusal = _live_refusal(live) if candidate.window_start <= now else None
    if refusal is not None:
        return refusal
    return ReservationResult.ACCEPTED if g1_over_window(evses, candidate, others, now) else ReservationResult.OCCUPIED


def _judge_global(evses: Mapping[int, EvseLive], candidate: Entry, others: list[Entry],
                  now: datetime) -> ReservationResult:
    """V4: a reservation of any fitting EVSE; a refusal names the likeliest cause."""
    fitting = [live for live in evses.values() if fits(candidate.reservation.connector_type, live.connectors)]
    if not fitting:
        return ReservationResult.REJECTED
    if g1_over_window(evses, candidate, others, now):
        return ReservationResult.ACCEPTED
    if others or any(live.occupied for live in evses.values()):
        return ReservationResult.OCCUPIED
    if any(live.faulted for live in fitting):
        return ReservationResult.FAULTED
    if any(not live.enabled for live in fitting):
        return ReservationResult.UNAVAILABLE
    return ReservationResult.OCCUPIED


def _live_refusal(live: EvseLive) -> ReservationResult | None:
    """Why an EVSE cannot be reserved from now: occupied, faulted or disabled (None: it can)."""
    if live.occupied:
        return ReservationResult.OCCUPIED
    if live.faulted:
        return ReservationResult.FAULTED
    if not live.enabled:
        return ReservationResult.UNAVAILABLE
    return None
