"""Every benchmark in one command: one table on stdout, the same figures in a JSON file.

What it is for: the figures of issue 14, measured together on one machine in one run, each as median,
p99 and max over repeated measurements, and each that has a natural baseline also as a ratio to that
baseline measured in the same run:

1. the core: one event (core_events.py); the reservation room check with 8 and 16 EVSEs (reservations.py);
2. reaction latency of the running program, idle, under load, under load with a 200 ms fsync
   (reaction.py: after the debounce, against a bare asyncio loop's wake-up lateness; end to end over MQTT);
3. a command's round trip over loopback mosquitto, against a bare aiomqtt echo (roundtrip.py);
4. RSS and CPU per EVSE (1, 2, 8, 32 EVSEs, idle and charging), idle CPU with 2 EVSEs, start-up time to
   safe outputs and to the first status document (procs.py);
5. outbox throughput and commit latency with fsync, against fsync off (store.py);
6. each meter model's poll over Modbus TCP against its 9600 Bd RTU wire-time bound (meter_poll.py).

Profiles: the full one (the default; under 10 minutes on a 2-core machine) and `--smoke` (few repetitions,
about a minute; tests/tools/test_bench_smoke.py runs it). Progress goes to stderr.

What it must never do: judge a figure (targets are printed as notes, never compared), talk to a broker
but its own private ones, or leave a process running.

Usage: .venv/bin/python tools/bench/run.py [--smoke] [--json FILE] [--only SECTION,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hal.meter import MODELS  # noqa: E402
from tools.bench import core_events, meter_poll, procs, reaction, reservations, roundtrip, store  # noqa: E402
from tools.bench.harness import progress  # noqa: E402
from tools.bench.stats import Figure, table  # noqa: E402

DEFAULT_JSON = "bench-results.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    name: str
    core_events: int
    layouts: int
    reaction_cycles: int
    round_trips: int
    procs: procs.Profile
    store_events: int
    store_runs: int
    meter_polls: int
    meter_models: tuple[str, ...]


FULL = Profile(name="full", core_events=20_000, layouts=200, reaction_cycles=20, round_trips=300,
               procs=procs.Profile(), store_events=500, store_runs=5, meter_polls=100,
               meter_models=tuple(sorted(MODELS)))
SMOKE = Profile(name="smoke", core_events=2000, layouts=10, reaction_cycles=1, round_trips=20, procs=procs.QUICK,
                store_events=30, store_runs=2, meter_polls=5, meter_models=("EM24", "SDM630"))
SLOW_FSYNC_MS = 200.0
LOAD_RATE_HZ = 1000.0


def planned_keys(profile: Profile) -> list[str]:
    """The key of every figure a run of `profile` gives (the smoke test checks the JSON against it)."""
    keys = ["core.handle_event", "core.tick", "reservations.room_check.evses_8", "reservations.room_check.evses_16"]
    for scenario in ("idle", "load", "slow_store"):
        keys.append(f"reaction.{scenario}.loop_lateness")
        keys += [f"reaction.{scenario}.{m}.{k}" for m in ("after_debounce", "end_to_end", "op_to_open")
                 for k in ("c_to_b", "c_to_a", "rcd", "all")]
    keys += ["roundtrip.bare_echo", "roundtrip.controller",
             "proc.start.bare_python", "proc.start.outputs_safe", "proc.start.first_status", "proc.idle_cpu_2_evses"]
    keys += [f"proc.{mode}.evses_{n}.{what}" for n in profile.procs.sizes for mode in ("idle", "charging")
             for what in ("cpu_pct", "cpu_pct_per_evse", "rss_mib")]
    keys += [f"store.{what}.{fsync}" for what in ("commit_latency", "outbox_throughput")
             for fsync in ("fsync", "no_fsync")]
    keys += [f"meter.{model}.{what}" for model in profile.meter_models for what in ("rtu_9600_bound", "tcp_poll")]
    return keys


Section = Callable[[Profile, list[str]], list[Figure]]


def core(p: Profile, _: list[str]) -> list[Figure]:
    progress(f"core: {p.core_events} events; room check on {p.layouts} layouts")
    return core_events.figures(p.core_events) + reservations.room_figures(p.layouts)


def reacting(p: Profile, notes: list[str]) -> list[Figure]:
    figs, more = asyncio.run(reaction.run(p.reaction_cycles, LOAD_RATE_HZ, SLOW_FSYNC_MS))
    notes += more
    return figs


def commands(p: Profile, _: list[str]) -> list[Figure]:
    return asyncio.run(roundtrip.run(p.round_trips))


def processes(p: Profile, _: list[str]) -> list[Figure]:
    return asyncio.run(procs.run(p.procs))


def storing(p: Profile, _: list[str]) -> list[Figure]:
    progress(f"store: {p.store_runs} x {p.store_events} commits, fsync on and off")
    return store.figures(p.store_events, p.store_runs)


def meters(p: Profile, _: list[str]) -> list[Figure]:
    progress(f"meters: {p.meter_polls} polls of each of {', '.join(p.meter_models)}")
    return asyncio.run(meter_poll.figures(p.meter_polls, list(p.meter_models)))


SECTIONS: dict[str, Section] = {"core": core, "reaction": reacting, "roundtrip": commands, "procs": processes,
                                "store": storing, "meters": meters}


def machine() -> dict[str, object]:
    return {"python": platform.python_version(), "implementation": platform.python_implementation(),
            "system": f"{platform.system()} {platform.release()} {platform.machine()}", "cpus": os.cpu_count(),
            "load_average": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="few repetitions, about a minute (CI)")
    parser.add_argument("--json", type=Path, default=Path(DEFAULT_JSON), metavar="FILE",
                        help=f"where the figures go (default {DEFAULT_JSON} in the current directory)")
    parser.add_argument("--only", default="", metavar="SECTION,...", help=f"a subset of {', '.join(SECTIONS)}")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    if unknown := set(only) - set(SECTIONS):
        parser.error(f"--only: unknown sections {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    profile = SMOKE if args.smoke else FULL
    started, started_utc, before = time.monotonic(), datetime.now(UTC), machine()
    progress(f"profile {profile.name}; load average {before['load_average']}")
    figures: list[Figure] = []
    notes: list[str] = []
    for name, section in SECTIONS.items():
        if not only or name in only:
            figures += section(profile, notes)
    duration_s = time.monotonic() - started
    after = machine()
    notes.append(f"{profile.name} profile, {duration_s:.0f} s, {after['cpus']} CPUs, python {after['python']}; "
                 f"load average before {before['load_average']}, after {after['load_average']}")
    print(table(figures))
    print()
    print("\n".join(notes))
    args.json.write_text(json.dumps({
        "profile": profile.name, "started_utc": started_utc.isoformat(), "duration_s": duration_s,
        "machine": {**after, "load_average_before": before["load_average"]}, "notes": notes,
        "figures": {f.key: f.as_json() for f in figures}}, indent=2) + "\n")
    progress(f"done in {duration_s:.0f} s; figures in {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
