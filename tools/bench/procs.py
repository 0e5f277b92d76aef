"""Benchmark: the controller as a process of its own: RSS and CPU per EVSE, idle and charging, and start-up.

What is measured (figures only, nothing asserted). Each case starts `charger-firmware --sim --config
<generated>` (`python -m firmware`, from this checkout) against a private mosquitto:

* RSS and CPU with 1, 2, 8 and 32 EVSEs, idle (nothing plugged) and charging (every EVSE plugged in,
  its token presented and power requested with sim ops over MQTT, API.md §8): RSS from VmRSS of
  /proc/PID/status, CPU from utime + stime of /proc/PID/stat over each measuring window (% of one core,
  and per EVSE); the windows are repeated, and their figures summarised;
* idle CPU with 2 EVSEs on its own: a fresh process, longer windows (the headline figure);
* start-up, from the spawn: to the log line the controller prints once its outputs are safe
  (firmware/app.py, "outputs safe ... after the process started"), and to the first `R/status` with
  `online: true` received by a subscriber (API.md §1); compared with starting and ending a bare
  `python -c pass` the same way.

What it must never do: touch a broker but its own, or leave a process running.
Standard: proc(5) (VmRSS; utime and stime in clock ticks).

Usage: .venv/bin/python tools/bench/procs.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench.harness import ROOT, Backend, backend, broker, progress, write_config  # noqa: E402
from tools.bench.stats import Figure, compared, summarise, table  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
SAFE_LINE = b"outputs safe"
_ids = itertools.count(1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    sizes: tuple[int, ...] = (1, 2, 8, 32)
    windows: int = 3  # measuring windows per case
    window_s: float = 3.0
    headline_windows: int = 3  # idle CPU with 2 EVSEs
    headline_window_s: float = 20.0
    starts: int = 8


QUICK = Profile(sizes=(1, 2), windows=2, window_s=0.5, headline_windows=2, headline_window_s=1.0, starts=2)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15 of proc(5))


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


async def windows(pid: int, count: int, seconds: float) -> tuple[list[float], list[float]]:
    """CPU (% of one core) over `count` windows of `seconds`, and the RSS (MiB) at the end of each."""
    cpu_pct, rss = [], []
    for _ in range(count):
        before, started = cpu_s(pid), time.monotonic()
        await asyncio.sleep(seconds)
        cpu_pct.append(100 * (cpu_s(pid) - before) / (time.monotonic() - started))
        rss.append(rss_mib(pid))
    return cpu_pct, rss


@contextlib.asynccontextmanager
async def controller(directory: Path, port: int, evses: int) -> AsyncIterator[tuple[asyncio.subprocess.Process,
                                                                                     Backend, dict[str, float]]]:
    """A fresh charger process (its own charger id, so no retained document of an earlier one counts) and a
    backend subscribed before the spawn; `times` gets "safe" and "online" (s after the spawn) as they come."""
    charger_id = f"BENCH-PROC-{next(_ids)}"
    case = directory / charger_id
    case.mkdir()
    config = write_config(case / "bench.toml", port=port, charger_id=charger_id, evses=evses, state_dir=case / "state")
    times: dict[str, float] = {}
    async with backend(port, charger_id, name=f"bench-{charger_id}") as link:
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "firmware", "--sim", "--config", str(config), "--log-level", "INFO", cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        assert proc.stderr is not None  # noqa: S101

        async def read_log() -> None:
            assert proc.stderr is not None  # noqa: S101
            async for line in proc.stderr:
                if SAFE_LINE in line and "safe" not in times:
                    times["safe"] = time.perf_counter() - started

        reader = asyncio.get_running_loop().create_task(read_log())
        try:
            await link.wait_for(lambda: (link.status or {}).get("online") is True, 60, "online")
            times["online"] = time.perf_counter() - started
            await link.wait_for(lambda: len(link.states) == evses, 30, "publishing every EVSE's state")
            yield proc, link, times
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
            await asyncio.wait([reader], timeout=5)


async def bare_start_s() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    return time.perf_counter() - started


async def per_evse(directory: Path, port: int, profile: Profile) -> list[Figure]:
    out: list[Figure] = []
    rss_base: dict[str, Figure] = {}
    for n in profile.sizes:
        progress(f"procs: {n} EVSE(s), idle then charging, {profile.windows} x {profile.window_s:g} s each")
        async with controller(directory, port, n) as (proc, link, _):
            await asyncio.sleep(1.0)  # the start-up's own work is done
            idle = await windows(proc.pid, profile.windows, profile.window_s)
            await link.charge_all(list(range(1, n + 1)))
            await asyncio.sleep(1.0)
            charging = await windows(proc.pid, profile.windows, profile.window_s)
        idle_figs: list[Figure] = []
        for mode, (cpu, rss) in (("idle", idle), ("charging", charging)):
            key, label = f"proc.{mode}.evses_{n}", f"process, {n} EVSE(s) {mode}"
            figs = [summarise(f"{key}.cpu_pct", f"{label}: CPU", "% core", cpu),
                    summarise(f"{key}.cpu_pct_per_evse", f"{label}: CPU per EVSE", "% core", [c / n for c in cpu]),
                    summarise(f"{key}.rss_mib", f"{label}: RSS", "MiB", rss)]
            if mode == "charging":  # compared with the same process idle
                figs = [compared(f, base) for f, base in zip(figs, idle_figs, strict=True)]
            else:
                idle_figs = figs
                if mode in rss_base:  # RSS compared with 1 EVSE's
                    figs[2] = compared(figs[2], rss_base[mode])
                rss_base.setdefault(mode, figs[2])
            out += figs
    return out


async def headline(directory: Path, port: int, profile: Profile) -> Figure:
    progress(f"procs: idle CPU with 2 EVSEs, {profile.headline_windows} x {profile.headline_window_s:g} s")
    async with controller(directory, port, 2) as (proc, _, _):
        await asyncio.sleep(1.0)
        cpu, _ = await windows(proc.pid, profile.headline_windows, profile.headline_window_s)
    return summarise("proc.idle_cpu_2_evses", f"process, 2 EVSEs idle: CPU ({profile.headline_window_s:g} s windows)",
                     "% core", cpu, target="< 1 % core")


async def start_up(directory: Path, port: int, profile: Profile) -> list[Figure]:
    progress(f"procs: start-up, {profile.starts} starts with 2 EVSEs")
    safe, online, bare = [], [], []
    for _ in range(profile.starts):
        bare.append(await bare_start_s() * 1000)
        async with controller(directory, port, 2) as (_, _, times):
            pass
        if "safe" not in times:
            raise SystemExit("procs: the controller never logged that its outputs were safe")
        safe.append(times["safe"] * 1000)
        online.append(times["online"] * 1000)
    base = summarise("proc.start.bare_python", "start: bare `python -c pass`, spawn to exit", "ms", bare)
    return [base, compared(summarise("proc.start.outputs_safe", "start: spawn -> outputs safe (log line)", "ms", safe),
                           base),
            compared(summarise("proc.start.first_status", "start: spawn -> first R/status online received", "ms",
                               online), base)]


async def run(profile: Profile) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="bench-procs-") as tmp, broker(Path(tmp)) as port:
        figs = await start_up(Path(tmp), port, profile)
        figs += await per_evse(Path(tmp), port, profile)
        figs.append(await headline(Path(tmp), port, profile))
    return figs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 2 EVSEs, short windows (a smoke run)")
    args = parser.parse_args(argv)
    print(table(asyncio.run(run(QUICK if args.quick else Profile()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
