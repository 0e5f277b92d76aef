"""Benchmark: the reservation book (firmware/core/reservations.py, API.md §7).

What is measured (figures are printed, never asserted: they depend on the machine):

(a) G1, `global_room(types, free_evses)`, the worst-case room check for global reservations, on
    random layouts from a seeded RNG: each EVSE has 1-2 connector types from
    {cCCS2, sType2, cType2, Unknown}, each reservation one type from the same set. Three cases:
    8 EVSEs / 8 globals, 16 EVSEs / 16 globals, 16 EVSEs / 8 globals, ~200 layouts each.
    `global_room` keeps no memo between calls (it is a bipartite matching per connector type), so
    each call is timed on its own.
    Next to it, for the 8-EVSE layouts, the brute force API.md §7 words (every order of arrival x
    every free fitting EVSE each car may pick, depth-first, no memo, stops at the first car without
    an EVSE). It is factorial, so it runs on the first 50 layouts only and each run stops after a
    budget of visited nodes; runs that hit it are counted and enter the figures as their time at the
    budget (a lower bound). The answers of both are compared where the brute force finished.

(b) `ReservationBook.reserve` and `exists` with ~1000 reservations: 16 EVSEs of mixed connector
    types; scheduled reservations (start_time in the future) are reserved at random windows
    (30 min - 4 h) over 30 days, 75 % EVSE-specific, 25 % global, until 1000 are accepted (or an
    attempt cap). Then new reserves are timed one by one (Accepted and refused separately; the
    accepted ones stay in the book), and `exists` at random instants of the 30 days, with and
    without evse_id.

(c) Global reservations active now (16 EVSEs, reserved at now until 8 are accepted, 4 with --quick): the time of
    each Accepted `reserve` and of one `set_evse` (an EV plugs in).
    Every mutating call re-derives the G3 holds, which runs G1 once per free EVSE (G2).

Usage: .venv/bin/python tools/bench/reservations.py [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's firmware, not an installed one

from firmware.core.reservations import (  # noqa: E402
    Reservation,
    ReservationBook,
    ReservationResult,
    fits,
    global_room,
)
from tools.bench.stats import Figure, percentile, summarise  # noqa: E402

TYPES = ("cCCS2", "sType2", "cType2", "Unknown")
T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
DAYS = 30


def us(ns: float) -> str:
    return f"{ns / 1000:,.1f} us" if ns < 10_000_000 else f"{ns / 1e6:,.1f} ms"


def figures(label: str, ns: list[int], extra: str = "") -> None:
    if not ns:
        print(f"{label}: no samples")
        return
    s = sorted(ns)
    print(f"{label}: median {us(statistics.median(s))}, p99 {us(percentile(s, 99))}, max {us(s[-1])} "
          f"({len(s)} calls{extra})")


def layout(rng: random.Random, n: int) -> list[tuple[str, ...]]:
    return [tuple(rng.sample(TYPES, rng.choice((1, 2)))) for _ in range(n)]


def demand(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(TYPES) for _ in range(n)]


def uuids() -> Callable[[], str]:
    """A book's `new_uuid`: uuid-1, uuid-2, ..."""
    counter = itertools.count(1)
    return lambda: f"uuid-{next(counter)}"


def timed(call: Callable[[], object]) -> tuple[int, object]:
    t = time.perf_counter_ns()
    result = call()
    return time.perf_counter_ns() - t, result


# --- (a) G1 --------------------------------------------------------------------------------------


class Budget(Exception):
    pass


def brute_room(types: Sequence[str], evses: Sequence[Sequence[str]], budget: int) -> tuple[bool, int]:
    """API.md §7 G1 by enumeration (no memo). Returns (answer, nodes); raises Budget past `budget` nodes."""
    if len(types) > len(evses):
        return False, 1
    nodes = 0

    def dfs(cars: list[str], free: list[int]) -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > budget:
            raise Budget
        for i, car in enumerate(cars):  # this car arrives next ...
            rest = cars[:i] + cars[i + 1:]
            choices = [j for j in free if fits(car, evses[j])]
            if not choices:
                return False
            for j in choices:  # ... and picks this free fitting EVSE
                if not dfs(rest, [k for k in free if k != j]):
                    return False
        return True

    return dfs(list(types), list(range(len(evses)))), nodes


Case = tuple[list[str], list[tuple[str, ...]]]  # the cars' connector types, the EVSEs' connectors


def g1_times(rng: random.Random, n_evses: int, n_globals: int,
             n_layouts: int) -> tuple[list[Case], list[int], list[bool]]:
    """`global_room` on `n_layouts` random layouts: the cases, each call's ns and each answer."""
    cases = [(demand(rng, n_globals), layout(rng, n_evses)) for _ in range(n_layouts)]
    times: list[int] = []
    answers = []
    for types, evses in cases:
        ns, room = timed(partial(global_room, types, evses))
        times.append(ns)
        answers.append(bool(room))
    return cases, times, answers


def room_figures(n_layouts: int, seed: int = 20261121) -> list[Figure]:
    """The room check with 8 EVSEs / 8 globals and 16 / 16, for tools/bench/run.py (us per call)."""
    rng = random.Random(seed)
    return [summarise(f"reservations.room_check.evses_{n}", f"reservations: room check G1, {n} EVSEs / {n} globals",
                      "us", [ns / 1000 for ns in g1_times(rng, n, n, n_layouts)[1]]) for n in (8, 16)]


def bench_g1(rng: random.Random, n_evses: int, n_globals: int, n_layouts: int) -> list[Case]:
    cases, times, answers = g1_times(rng, n_evses, n_globals, n_layouts)
    share = sum(bool(a) for a in answers) / len(answers)
    name = f"G1 global_room {n_evses:2} EVSEs / {n_globals:2} globals"
    figures(f"{name}        ", times, f", room in {share:.0%}")
    for answer, label in ((True, "room   "), (False, "no room")):
        part = [ns for ns, a in zip(times, answers, strict=True) if a is answer]
        if part and len(part) < len(times):
            figures(f"{name}, {label}", part)
    return cases


def bench_brute(cases: list[Case], cap: int, budget: int) -> None:
    times: list[int] = []
    stopped = 0
    agree = 0
    for types, evses in cases[:cap]:
        t = time.perf_counter_ns()
        try:
            room, _ = brute_room(types, evses, budget)
        except Budget:
            stopped += 1
        else:
            agree += room == global_room(types, evses)
        times.append(time.perf_counter_ns() - t)
    n = len(times)
    figures(f"G1 brute force   {len(cases[0][1]):2} EVSEs / {len(cases[0][0]):2} globals        ", times,
            f", first {n} layouts only; {stopped} stopped at the {budget:,}-node budget (counted as that time, "
            f"a lower bound); agrees with global_room on {agree}/{n - stopped} finished")


def bench_worst(n: int, budget: int) -> None:
    """Room exists: every order and pick must be walked. n Unknown cars on n Unknown EVSEs."""
    types, evses = ["Unknown"] * n, [("Unknown",)] * n
    ns, room = timed(partial(global_room, types, evses))
    print(f"G1 worst case, {n} Unknown globals on {n} Unknown EVSEs (room: {room}): global_room {us(ns)}")
    t = time.perf_counter_ns()
    try:
        brute_room(types, evses, budget)
        status = "finished"
    except Budget:
        leaves = __import__("math").factorial(n) ** 2
        status = f"stopped at the {budget:,}-node budget; the full walk has (n!)^2 = {leaves:,} leaves"
    print(f"G1 worst case, brute force: {us(time.perf_counter_ns() - t)} ({status})")


# --- (b) the book --------------------------------------------------------------------------------


def bench_book(rng: random.Random, target: int, timed_reserves: int, timed_exists: int) -> None:
    evses = {i: list(conns) for i, conns in enumerate(layout(rng, 16), start=1)}
    book = ReservationBook(evses, new_uuid=uuids())
    rid = iter(range(1, 10**9))
    tokens = [f"TOKEN-{i:03}" for i in range(200)]

    def candidate() -> Reservation:
        start = T0 + timedelta(minutes=rng.randrange(1, DAYS * 24 * 60))
        length = timedelta(minutes=rng.randrange(30, 4 * 60 + 1))
        specific = rng.random() < 0.75
        evse = rng.choice(list(evses)) if specific else None
        conn = rng.choice(evses[evse]) if evse is not None and rng.random() < 0.5 else rng.choice(TYPES)
        return Reservation(reservation_id=next(rid), id_token=rng.choice(tokens), expiry_utc=start + length,
                           evse_id=evse, connector_type=conn, start_utc=start, sender="bench",
                           parent_id_token=rng.choice((None, "GROUP-1", "GROUP-2")))

    build_t = time.perf_counter()
    attempts = 0
    results: dict[str, int] = {}
    while len(book.entries) < target and attempts < target * 4:
        attempts += 1
        result = book.reserve(candidate(), T0)[0]
        results[result.value] = results.get(result.value, 0) + 1
    build_s = time.perf_counter() - build_t
    n_specific = sum(e.reservation.evse_id is not None for e in book.entries)
    print(f"book: 16 EVSEs, {len(book.entries)} scheduled reservations accepted ({n_specific} specific, "
          f"{len(book.entries) - n_specific} global) out of {attempts} attempts over {DAYS} days in {build_s:.1f} s; "
          + ", ".join(f"{k} {v}" for k, v in sorted(results.items())))

    accepted: list[int] = []
    refused: list[int] = []
    for _ in range(timed_reserves):
        r = candidate()
        ns, (result, _, _) = timed(partial(book.reserve, r, T0))  # type: ignore[misc]
        (accepted if result is ReservationResult.ACCEPTED else refused).append(ns)
    figures(f"reserve with ~{len(book.entries)} in the book, Accepted", accepted)
    figures(f"reserve with ~{len(book.entries)} in the book, refused ", refused)

    with_evse: list[int] = []
    without: list[int] = []
    for _ in range(timed_exists):
        now = T0 + timedelta(minutes=rng.randrange(0, DAYS * 24 * 60))
        token = rng.choice(tokens)
        group = rng.choice((None, "GROUP-1"))
        evse = rng.choice(list(evses))
        with_evse.append(timed(partial(book.exists, token, evse, group, now))[0])
        without.append(timed(partial(book.exists, token, None, group, now))[0])
    figures(f"exists with evse_id   ({len(book.entries)} in the book)", with_evse)
    figures(f"exists without evse_id ({len(book.entries)} in the book)", without)


def bench_live_globals(rng: random.Random, trials: int, n_globals: int) -> None:
    """(c) Globals active now: every mutating call refreshes G3, one G1 per free EVSE (G2)."""
    reserve_ns: list[int] = []
    set_evse_ns: list[int] = []
    for _ in range(trials):
        evses = {i: list(conns) for i, conns in enumerate(layout(rng, 16), start=1)}
        book = ReservationBook(evses, new_uuid=uuids())
        rid = 0
        while len(book.entries) < n_globals and rid < 64:
            rid += 1
            r = Reservation(reservation_id=rid, id_token="TOKEN", expiry_utc=T0 + timedelta(hours=4),
                            connector_type=rng.choice(TYPES))
            ns, outcome = timed(partial(book.reserve, r, T0))
            if outcome[0] is ReservationResult.ACCEPTED:  # type: ignore[index]
                reserve_ns.append(ns)
        set_evse_ns.append(timed(partial(book.set_evse, 1, occupied=True, faulted=False, enabled=True, now=T0))[0])
    figures(f"reserve of a global, up to {n_globals} active globals on 16 EVSEs, Accepted", reserve_ns)
    figures(f"set_evse (EV plugs in) with {n_globals} active globals on 16 EVSEs, cold      ", set_evse_ns,
            f", {trials} layouts")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, runs in a few seconds (smoke test)")
    parser.add_argument("--seed", type=int, default=20261121)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    layouts, slow_layouts, brute_cap, budget = (30, 4, 10, 20_000) if args.quick else (200, 200, 50, 2_000_000)
    target, reserves, exists = (150, 60, 200) if args.quick else (1000, 400, 2000)

    print(f"reservations bench{' (--quick)' if args.quick else ''}, seed {args.seed}")
    print(f"python: {platform.python_implementation()} {platform.python_version()} on {platform.machine()}")
    cases8 = bench_g1(rng, 8, 8, layouts)
    bench_brute(cases8, brute_cap, budget)
    bench_g1(rng, 16, 16, layouts)
    bench_g1(rng, 16, 8, slow_layouts)
    bench_worst(8, budget)
    bench_book(rng, target, reserves, exists)
    bench_live_globals(rng, *((2, 4) if args.quick else (20, 8)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
