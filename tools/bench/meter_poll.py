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
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hal.meter import MODELS, MeterUrl, ModbusMeter  # noqa: E402
from hal.meter_codec import plan_for, plan_wire_bytes, plan_wire_time_s  # noqa: E402

SIM = REPO / "tools" / "meter_sim.py"


async def measure(model: str, polls: int) -> list[float]:
    """Read `model` from a fresh meter_sim `polls` times; seconds per read."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SIM), "--model", model, "--tcp", "127.0.0.1:0", "--current", "16", "--tick", "600",
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None  # noqa: S101
    try:
        banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        port = re.search(r" on tcp://127\.0\.0\.1:(\d+): ", banner)
        if port is None:
            raise SystemExit(f"meter_sim did not start for {model}: {banner!r}")
        times: list[float] = []
        async with ModbusMeter(model, MeterUrl.parse(f"tcp://127.0.0.1:{port.group(1)}")) as meter:
            await meter.read()  # connect
            for _ in range(polls):
                started = time.perf_counter()
                await meter.read()
                times.append(time.perf_counter() - started)
        return times
    finally:
        proc.terminate()
        await proc.communicate()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


async def main(polls: int, models: list[str]) -> None:
    print(f"One poll per meter model ({polls} polls each over TCP on loopback against tools/meter_sim.py)")
    print(f"{'model':<12} {'requests':>8} {'registers':>9} {'RTU bytes':>9} {'9600 bd bound ms':>16} "
          f"{'TCP median ms':>13} {'p99 ms':>7} {'max ms':>7}")
    for name in models:
        plan = plan_for(MODELS[name])
        times = sorted(await measure(name, polls))
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
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
