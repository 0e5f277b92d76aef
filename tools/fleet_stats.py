"""The fleet simulator's figures: counters of one process, their reports, and the summary of all processes.

What it is for: a worker process counts what its backend side sends and receives and what happened
(`Counters`), and reports plain dicts (JSON lines when it runs as a child process); the parent adds
the reports of every process up (`summarize`) into the summary that `tools/fleet.py` prints and
writes with `--json`.

What it must never do: measure anything itself (no clock, no /proc: the worker hands it the numbers),
or assert anything about time (figures depend on the host).

Standard: percentiles by the nearest-rank method; RSS in MiB (2**20 bytes).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

#: Keys of the summary the brief asks for (the JSON file has these and more).
REQUIRED_KEYS: Final = ("chargers", "evses", "msgs_per_s_in", "msgs_per_s_out", "rss_per_charger_mib",
                        "cmd_round_trip_p50_ms", "cmd_round_trip_p99_ms")


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Counters:
    """What one worker's backend side saw. `events` counts SessionEvents by name, `reservations`
    ReservationUpdateStatus by status, `errors` failed commands by op and error code."""

    msgs_in: int = 0  # published to the chargers (commands, auth responses)
    msgs_out: int = 0  # received from the chargers
    commands: int = 0
    auth_answered: int = 0
    faults_injected: int = 0
    reservations_refused: int = 0
    events: Counter[str] = field(default_factory=Counter)
    reservations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rtts_ms: dict[str, list[float]] = field(default_factory=dict)  # round trips by op, not yet reported
    loop_lag_ms: list[float] = field(default_factory=list)  # event loop lag samples, not yet reported

    def round_trip(self, op: str, ms: float) -> None:
        self.rtts_ms.setdefault(op, []).append(round(ms, 3))

    def take_rtts(self) -> dict[str, list[float]]:
        """The round trips measured since the last call (each is reported once)."""
        taken, self.rtts_ms = self.rtts_ms, {}
        return taken

    def take_lag(self) -> list[float]:
        taken, self.loop_lag_ms = [round(ms, 2) for ms in self.loop_lag_ms], []
        return taken

    def snapshot(self) -> dict[str, object]:
        return {"msgs_in": self.msgs_in, "msgs_out": self.msgs_out, "commands": self.commands,
                "auth_answered": self.auth_answered, "faults_injected": self.faults_injected,
                "reservations_refused": self.reservations_refused, "events": dict(self.events),
                "reservations": dict(self.reservations), "errors": dict(self.errors)}


def _add_counts(total: dict[str, int], part: object) -> None:
    if isinstance(part, dict):
        for key, value in part.items():
            total[str(key)] = total.get(str(key), 0) + int(value)


def _num(report: dict[str, object], key: str) -> float:
    value = report.get(key, 0)
    return float(value) if isinstance(value, int | float) else 0.0


def _gc(finals: list[dict[str, object]]) -> dict[str, dict[str, float | None]]:
    """The workers' garbage collector pauses by generation: count, longest, total (ms)."""
    merged: dict[str, dict[str, float | None]] = {}
    for f in finals:
        pauses = f.get("gc")
        for gen, p in (pauses.items() if isinstance(pauses, dict) else []):
            m = merged.setdefault(str(gen), {"n": 0, "max_ms": None, "total_ms": 0.0})
            m["n"] = (m["n"] or 0) + p.get("n", 0)
            m["total_ms"] = round((m["total_ms"] or 0.0) + p.get("total_ms", 0.0), 1)
            if p.get("max_ms") is not None:
                m["max_ms"] = max(m["max_ms"] or 0.0, p["max_ms"])
    return merged


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summarize(finals: list[dict[str, object]], rtts_ms: dict[str, list[float]], *, evses_per_charger: int,
              procs: int, loop_lag_ms: list[float] | None = None) -> dict[str, object]:
    """The summary of every worker's final report; `rtts_ms` are all round trips by op, of all workers."""
    chargers = int(sum(_num(f, "chargers") for f in finals))
    started = int(sum(_num(f, "started") for f in finals))
    counts: dict[str, dict[str, int]] = {"events": {}, "reservations": {}, "errors": {}}
    for f in finals:
        for key, total in counts.items():
            _add_counts(total, f.get(key))
    rate_in = sum(_num(f, "window_msgs_in") / _num(f, "window_s") for f in finals if _num(f, "window_s") > 0)
    rate_out = sum(_num(f, "window_msgs_out") / _num(f, "window_s") for f in finals if _num(f, "window_s") > 0)
    cpu_pct = sum(100 * _num(f, "window_cpu_s") / _num(f, "window_s") for f in finals if _num(f, "window_s") > 0)
    rss_mib = sum(_num(f, "rss_delta_mib") for f in finals)
    every = [ms for values in rtts_ms.values() for ms in values]
    events, reservations = counts["events"], counts["reservations"]
    return {
        "chargers": chargers, "evses": chargers * evses_per_charger, "procs": procs, "chargers_started": started,
        "window_s": round(max((_num(f, "window_s") for f in finals), default=0.0), 1),
        "msgs_per_s_in": round(rate_in, 1), "msgs_per_s_out": round(rate_out, 1),
        "msgs_in": int(sum(_num(f, "msgs_in") for f in finals)),
        "msgs_out": int(sum(_num(f, "msgs_out") for f in finals)),
        "rss_per_charger_mib": round(rss_mib / started, 3) if started else None,
        "rss_base_mib": round(sum(_num(f, "rss_base_mib") for f in finals), 1),
        "cpu_pct_of_one_core": round(cpu_pct, 1),
        "cpu_pct_per_charger": round(cpu_pct / started, 3) if started else None,
        "commands": len(every),
        "cmd_round_trip_p50_ms": _ms(percentile(every, 50)), "cmd_round_trip_p99_ms": _ms(percentile(every, 99)),
        "cmd_round_trip_by_op": {op: {"n": len(v), "p50_ms": _ms(percentile(v, 50)), "p99_ms": _ms(percentile(v, 99))}
                                 for op, v in sorted(rtts_ms.items())},
        "loop_lag_p50_ms": _ms(percentile(loop_lag_ms or [], 50)),
        "loop_lag_p99_ms": _ms(percentile(loop_lag_ms or [], 99)), "gc_pauses": _gc(finals),
        "errors": sum(counts["errors"].values()), "errors_by_kind": counts["errors"],
        "sessions_started": events.get("SessionStarted", 0), "sessions_charging": events.get("ChargingStarted", 0),
        "sessions_completed": events.get("SessionFinished", 0),
        "reservations_placed": reservations.get("Placed", 0), "reservations_honoured": reservations.get("Used", 0),
        "reservations_missed": reservations.get("Expired", 0),
        "reservations_refused": int(sum(_num(f, "reservations_refused") for f in finals)),
        "faults_injected": int(sum(_num(f, "faults_injected") for f in finals)),
        "auth_requests_answered": int(sum(_num(f, "auth_answered") for f in finals)),
        "session_events": events, "reservation_updates": reservations,
    }


def progress_line(elapsed_s: float, reports: list[dict[str, object]], rtts_ms: list[float], chargers: int,
                  lag_ms: list[float]) -> str:
    """One line for stderr from the workers' latest progress reports and the round trips of the interval."""
    online = int(sum(_num(r, "online") for r in reports))
    rate_in = sum(_num(r, "rate_in") for r in reports)
    rate_out = sum(_num(r, "rate_out") for r in reports)
    errors = int(sum(_num(r, "errors_total") for r in reports))
    finished = int(sum(_num(r, "sessions_completed") for r in reports))
    cpu = sum(_num(r, "cpu_pct") for r in reports)
    rss = sum(_num(r, "rss_delta_mib") for r in reports)
    p50, p99 = percentile(rtts_ms, 50), percentile(rtts_ms, 99)
    rtt = f"p50 {p50:.1f} ms p99 {p99:.1f} ms" if p50 is not None and p99 is not None else "no replies"
    lag = percentile(lag_ms, 99)
    return (f"fleet [{elapsed_s:6.0f} s] online {online}/{chargers} | in {rate_in:.1f}/s out {rate_out:.1f}/s | "
            f"{len(rtts_ms)} cmds {rtt} | sessions done {finished} | errors {errors} | "
            f"cpu {cpu:.0f} % | loop lag p99 {lag or 0:.0f} ms | rss +{rss:.0f} MiB")


def summary_text(summary: dict[str, object]) -> str:
    """The final summary, for humans."""
    by_op = summary.get("cmd_round_trip_by_op")
    lines = [
        f"fleet: {summary['chargers']} chargers, {summary['evses']} EVSEs, in {summary['procs']} process(es), "
        f"{summary['window_s']} s measured",
        f"  messages/s: in {summary['msgs_per_s_in']}, out {summary['msgs_per_s_out']}",
        f"  RSS per charger: {summary['rss_per_charger_mib']} MiB; CPU {summary['cpu_pct_of_one_core']} % of one core "
        f"({summary['cpu_pct_per_charger']} % per charger)",
        f"  event loop lag: p50 {summary['loop_lag_p50_ms']} ms, p99 {summary['loop_lag_p99_ms']} ms; "
        f"gc pauses {summary['gc_pauses']}",
        f"  command round trip: p50 {summary['cmd_round_trip_p50_ms']} ms, p99 {summary['cmd_round_trip_p99_ms']} ms "
        f"over {summary['commands']} commands",
    ]
    if isinstance(by_op, dict):
        lines += [f"    {op}: n={v['n']} p50 {v['p50_ms']} ms p99 {v['p99_ms']} ms" for op, v in by_op.items()]
    lines += [
        f"  sessions: started {summary['sessions_started']}, charging {summary['sessions_charging']}, "
        f"completed {summary['sessions_completed']}; faults injected {summary['faults_injected']}",
        f"  reservations: placed {summary['reservations_placed']}, honoured {summary['reservations_honoured']}, "
        f"missed {summary['reservations_missed']}, refused {summary['reservations_refused']}",
        f"  errors: {summary['errors']} {summary['errors_by_kind'] or ''}".rstrip(),
    ]
    return "\n".join(lines)
