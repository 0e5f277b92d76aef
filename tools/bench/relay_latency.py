"""Benchmark: CP C -> B to relay open, with a normal store and with a slow one (prints figures only).

The controller runs in-process on the simulated board against a private mosquitto. An EV charges;
a backend sends `set_max_current` at a steady rate (durable requests: every one is a commit); the
simulated EV then stops asking for power (CP C -> B) and the time until the relay is commanded open is
taken from the simulated board's relay log (the controller's real sampling and 30 ms debounce
included; IEC 61851-1 allows 100 ms). The same run is repeated with every fsync of the store slowed
to `--slow-fsync-ms` (a worn SD card), where a core that waited for its commits would open seconds
late. Figures: p50 / p99 / max per store, and the grouping of commits (steps per fsync).

Usage: .venv/bin/python tools/bench/relay_latency.py [--cycles N] [--rate HZ] [--slow-fsync-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from firmware.app import Controller  # noqa: E402
from firmware.config import load_config  # noqa: E402
from firmware.store import Store  # noqa: E402
from hal.sim import SimBoard  # noqa: E402
from tools.bench.runtime import percentile, start_broker  # noqa: E402

T = TypeVar("T")


class SlowStore(Store):
    """Every durable commit also sleeps `delay_s` (in the writer thread, before COMMIT, as a slow card
    blocks it)."""

    def __init__(self, state_dir: Path, delay_s: float) -> None:
        super().__init__(state_dir)
        self.delay_s = delay_s

    def durable_write_delay(self) -> None:
        time.sleep(self.delay_s)


async def wait_until(predicate: object, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise SystemExit("relay_latency: the controller did not react within the time allowed")
        await asyncio.sleep(0.001)


async def running(flag: asyncio.Event, controller: asyncio.Task[None], what: str, timeout_s: float = 30.0) -> None:
    """Wait for `flag`; a controller that stopped meanwhile raises its error, one that hangs is shown."""
    waiter = asyncio.get_running_loop().create_task(flag.wait(), name=f"wait-{what}")
    done, _ = await asyncio.wait({waiter, controller}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    if controller in done:
        waiter.cancel()
        controller.result()  # its exception, if it raised
        raise SystemExit(f"relay_latency: the controller stopped before it was {what}")
    if waiter not in done:
        waiter.cancel()
        for other in asyncio.all_tasks():
            other.print_stack(limit=5, file=sys.stderr)
        raise SystemExit(f"relay_latency: the controller was not {what} after {timeout_s:g} s (tasks above)")


async def bounded(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """`coro`, or a clear error with every task's stack when it takes longer than `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await coro
    except TimeoutError:
        for other in asyncio.all_tasks():
            other.print_stack(limit=8, file=sys.stderr)
        raise SystemExit(f"relay_latency: a measurement took over {timeout_s:g} s (tasks above)") from None


async def stop(task: asyncio.Task[None], grace_s: float = 10.0) -> None:
    """Cancel the controller and wait for it, bounded: a controller that does not stop within `grace_s`
    prints every task's stack and ends the benchmark (instead of hanging past the caller's timeout)."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace_s)
    if not done:
        for other in asyncio.all_tasks():
            other.print_stack(limit=8, file=sys.stderr)
        raise SystemExit(f"relay_latency: the controller did not stop within {grace_s:g} s (tasks above)")


async def measure(port: int, directory: Path, fsync_delay_s: float, cycles: int, rate_hz: float) -> dict[str, float]:
    config_path = directory / "bench.toml"
    config_path.write_text(f'[charger]\nid = "BENCH-RELAY"\nstate_dir = "{directory / "state"}"\n'
                           f'[mqtt]\nport = {port}\ncodec = "json"\n'
                           '[[evse]]\nid = 1\nconnectors = ["sType2"]\n')
    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    sim = SimBoard([1], clock=loop.time)
    store = SlowStore(directory / "state", fsync_delay_s) if fsync_delay_s else Store(directory / "state")
    controller = Controller(config, sim, store, meters={1: sim.meter(1)}, sim=sim)  # type: ignore[dict-item]
    task = loop.create_task(controller.run(), name="controller")
    latencies: list[float] = []
    try:
        await running(controller.ready, task, "ready")
        await running(controller.link.connected, task, "connected to the broker")
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-relay-backend") as client:
            async def send(op: str, args: dict[str, object], request_id: str) -> None:
                await client.publish("chargers/BENCH-RELAY/v1/cmd", json.dumps(
                    {"id": request_id, "op": op, "args": args}).encode(), qos=1)

            await send("set_local_auth_list", {"version": 1, "full": True,
                                               "tokens": [{"id_token": "AA11", "status": "Accepted"}]}, "list")
            sim.plug(1, "B")
            await wait_until(lambda: controller.charger.evses[1].session is not None, 5)
            sim.token(1, "AA11")
            sim.plug(1, "C")
            await wait_until(lambda: sim.relay_commanded(1), 10)

            async def stream() -> None:
                i = 0
                while True:
                    i += 1
                    await send("set_max_current", {"evse_id": 1, "current_a": 16 + i % 10}, f"m{i}")
                    await asyncio.sleep(1 / rate_hz)

            streamer = loop.create_task(stream())
            try:
                for _ in range(cycles):
                    await asyncio.sleep(0.5)
                    changed_at = loop.time()
                    sim.plug(1, "B")
                    await wait_until(lambda: not sim.relay_commanded(1), 30)
                    opened_at = next(t for t, cid, closed in reversed(sim.relay_log) if cid == 1 and not closed)
                    latencies.append(opened_at - changed_at)
                    sim.plug(1, "C")
                    await wait_until(lambda: sim.relay_commanded(1), 30)
            finally:
                streamer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await streamer
    finally:
        await stop(task)
    stats = controller.persistence.stats
    ms = [v * 1000 for v in latencies]
    return {"p50": percentile(ms, 50), "p99": percentile(ms, 99), "max": max(ms),
            "steps_per_commit": stats.steps / max(stats.commits, 1), "largest_batch": stats.largest_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=30, help="C -> B changes per store (default 30)")
    parser.add_argument("--rate", type=float, default=50.0, help="set_max_current per second (default 50)")
    parser.add_argument("--slow-fsync-ms", type=float, default=200.0, help="the slow store's fsync (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        broker, port = start_broker(Path(tmp))
        try:
            print(f"relay_latency: CP C -> B to relay open, {args.cycles} changes per store, "
                  f"{args.rate:g} set_max_current/s over loopback mosquitto, {os.cpu_count()} CPU(s); limit 100 ms")
            for name, delay_ms in (("normal store", 0.0), (f"fsync + {args.slow_fsync_ms:g} ms", args.slow_fsync_ms)):
                directory = Path(tmp) / name.replace(" ", "_").replace("+", "")
                directory.mkdir()
                figures = asyncio.run(bounded(measure(port, directory, delay_ms / 1000, args.cycles, args.rate),
                                              timeout_s=30 + 10 * args.cycles))
                print(f"  {name:<20} relay open p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms, "
                      f"max {figures['max']:.1f} ms; {figures['steps_per_commit']:.1f} steps per commit "
                      f"(largest group {figures['largest_batch']:.0f})")
        finally:
            broker.terminate()
            broker.wait(5)


if __name__ == "__main__":
    main()
