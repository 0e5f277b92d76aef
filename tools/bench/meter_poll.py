"""Benchmark of one meter poll per model: transactions, bytes on the wire, the 9600-baud bound, and the
cycle measured over Modbus TCP on loopback.

What it is for: the figures issue 11 asks for. For each model of `hal.meter_maps.MODELS`:

* the requests of one poll (`hal.meter_codec.plan_for`, within the model's request limit);
* the bytes of one poll on an RS-485 line (RTU: 8 bytes per request, 5 + 2 x registers per answer);
* the poll's lower bound at 9600 baud (11 bits per character, the 3.5-character gap before each frame;
  the meter's own turnaround comes on top): `hal.meter_codec.plan_wire_time_s`;
* the cycle time measured with the project's client (`hal.meter.ModbusMeter`) against
  `tools/meter_sim.py` over TCP on loopback: median, p99 and max of `--polls` reads.

What it must never do: assert anything (figures only; tests/test_tools.py checks that it runs) or touch
a real serial port. Usage: .venv/bin/python tools/bench/meter_poll.py [--polls N] [--models A,B]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hal.meter import MODELS, MeterUrl, ModbusMeter  # noqa: E402
from hal.meter_codec import plan_for, plan_wire_bytes, plan_wire_time_s  # noqa: E402
from tools.bench.stats import Figure, compared, percentile, summarise  # noqa: E402

SIM = REPO / "tools" / "meter_sim.py"


@contextlib.asynccontextmanager
async def meter_sims(model: str, count: int = 1, current_a: float = 16.0) -> AsyncIterator[list[int]]:
    """`count` tools/meter_sim.py processes, each serving `model` (device 1) over TCP on loopback, started
    at once; yields their ports."""
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(SIM), "--model", model, "--tcp", "127.0.0.1:0", "--current", f"{current_a:g}",
        "--tick", "600", cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE) for _ in range(count)]
    try:
        ports = []
        for proc in procs:
            assert proc.stdout is not None  # noqa: S101
            banner = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            port = re.search(r" on tcp://127\.0\.0\.1:(\d+): ", banner)
            if port is None:
                raise SystemExit(f"meter_sim did not start for {model}: {banner!r}")
            ports.append(int(port.group(1)))
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await proc.communicate()


async def measure(model: str, polls: int) -> list[float]:
    """Read `model` from a fresh meter_sim `polls` times; seconds per read."""
    async with meter_sims(model) as (port,):
        times: list[float] = []
        async with ModbusMeter(model, MeterUrl.parse(f"tcp://127.0.0.1:{port}")) as meter:
            await meter.read()  # connect
            for _ in range(polls):
                started = time.perf_counter()
                await meter.read()
                times.append(time.perf_counter() - started)
        return times


def bound_s(model: str) -> float:
    """The model's poll at 9600 Bd RTU, lower bound (hal.meter_codec.plan_wire_time_s)."""
    return plan_wire_time_s(plan_for(MODELS[model]), 9600)


async def figures(polls: int, models: list[str]) -> list[Figure]:
    """Per model: the TCP poll cycle (ms) compared with its 9600 Bd RTU bound (a constant figure)."""
    out: list[Figure] = []
    for name in models:
        bound = summarise(f"meter.{name}.rtu_9600_bound", f"meter {name}: RTU 9600 Bd bound", "ms",
                          [bound_s(name) * 1000])
        poll = summarise(f"meter.{name}.tcp_poll", f"meter {name}: poll over TCP (meter_sim)", "ms",
                         [t * 1000 for t in await measure(name, polls)])
        out += [bound, compared(poll, bound)]
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def main(polls: int, models: list[str]) -> None:
    print(f"One poll per meter model ({polls} polls each over TCP on loopback against tools/meter_sim.py)")
    print(f"{'model':<12} {'requests':>8} {'registers':>9} {'RTU bytes':>9} {'9600 bd bound ms':>16} "
          f"{'TCP median ms':>13} {'p99 ms':>7} {'max ms':>7}")
    for name in models:
        plan = plan_for(MODELS[name])
        times = sorted(await measure(name, polls))
        p99 = percentile(times, 99)
        print(f"{name:<12} {len(plan):>8} {sum(b.count for b in plan):>9} {plan_wire_bytes(plan):>9} "
              f"{ms(plan_wire_time_s(plan, 9600)):>16} {ms(statistics.median(times)):>13} {ms(p99):>7} "
              f"{ms(times[-1]):>7}")
    print("RTU bytes: 8 per request + 5 + 2 x registers per answer; the bound adds 3.5 characters of silence "
          "before each frame at 11 bits per character; the meter's turnaround comes on top.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--models", default=",".join(sorted(MODELS)))
    args = parser.parse_args()
    chosen = [m for m in args.models.split(",") if m]
    if unknown := [m for m in chosen if m not in MODELS]:
        parser.error(f"unknown models {unknown}; supported: {', '.join(sorted(MODELS))}")
    if args.polls < 1:
        parser.error("--polls must be >= 1")
    asyncio.run(main(args.polls, chosen))
