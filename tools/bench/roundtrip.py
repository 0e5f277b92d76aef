"""Benchmark: a backend command's round trip through the controller, against a bare MQTT echo (figures only).

What is measured. The controller runs in-process (`Controller` on the simulated board, 2 EVSEs) against a
private mosquitto on loopback. A backend client sends `exists_reservation` (read-only) on R/cmd and waits
for its reply on R/reply, one request at a time; then, in the same run and the same broker, the same
payload goes to a bare aiomqtt echo client (subscribe, republish; MQTT 5 like the controller) and back,
the controller still running. The two alternate request by request, measured by the same client code.
The ratio of the medians is what the controller adds to a plain MQTT round trip (API.md §2).

What it must never do: talk to a broker but its own. Standard: API.md §2-§3, MQTT 3.1.1 QoS 1.

Usage: .venv/bin/python tools/bench/roundtrip.py [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench.harness import NODELAY, broker, progress, write_config  # noqa: E402
from tools.bench.inproc import bounded, in_process  # noqa: E402
from tools.bench.stats import Figure, compared, summarise, table  # noqa: E402

CHARGER = "BENCH-RTT"
BODY = {"op": "exists_reservation", "args": {"id_token": "AA11"}}


async def round_trip(client: aiomqtt.Client, send_to: str, reply_on: str, request_id: str) -> float:
    """Seconds for one request -> reply: publish on `send_to`, wait for the message on `reply_on`."""
    started = time.perf_counter()
    await client.publish(send_to, json.dumps({"id": request_id, **BODY}).encode(), qos=1)
    async for message in client.messages:
        if message.topic.value == reply_on:
            break
    return time.perf_counter() - started


async def echo(port: int, ready: asyncio.Event) -> None:
    """A bare aiomqtt client that republishes what it gets; it connects as the controller does (MQTT 5,
    TCP_NODELAY), so both answer over the same protocol."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-echo", socket_options=NODELAY,
                              protocol=aiomqtt.ProtocolVersion.V5) as client:
        await client.subscribe("bench/echo/cmd", qos=1)
        ready.set()
        async for message in client.messages:
            await client.publish("bench/echo/reply", message.payload, qos=1)


async def alternating(port: int, count: int) -> tuple[list[float], list[float]]:
    """`count` round trips through the controller and `count` through the echo, alternating one by one,
    so both see the same moments of the machine's load; one client code measures both."""
    root = f"chargers/{CHARGER}/v1"
    ready = asyncio.Event()
    echo_task = asyncio.get_running_loop().create_task(echo(port, ready))
    ours: list[float] = []
    bare: list[float] = []
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-backend", socket_options=NODELAY) as theirs, \
                aiomqtt.Client("127.0.0.1", port, identifier="bench-echo-backend", socket_options=NODELAY) as plain:
            await theirs.subscribe(f"{root}/reply", qos=1)
            await plain.subscribe("bench/echo/reply", qos=1)
            for i in range(count):
                ours.append(await round_trip(theirs, f"{root}/cmd", f"{root}/reply", f"c{i}"))
                bare.append(await round_trip(plain, "bench/echo/cmd", "bench/echo/reply", f"e{i}"))
    finally:
        echo_task.cancel()  # aiomqtt on 3.11 can swallow a cancel: do not wait forever
        await asyncio.wait([echo_task], timeout=2)
    return ours, bare


async def run(count: int) -> list[Figure]:
    progress(f"round trip: {count} commands through the controller, {count} through a bare echo, alternating")
    with tempfile.TemporaryDirectory(prefix="bench-rtt-") as tmp, broker(Path(tmp)) as port:
        config = write_config(Path(tmp) / "bench.toml", port=port, charger_id=CHARGER, evses=2,
                              state_dir=Path(tmp) / "state")
        async with in_process(config, probed=False):
            ours, bare = await bounded(alternating(port, count), 60 + 2 * count)
    base = summarise("roundtrip.bare_echo", "MQTT round trip: bare aiomqtt echo", "ms", [t * 1000 for t in bare])
    mine = summarise("roundtrip.controller", "MQTT round trip: command -> reply (controller)", "ms",
                     [t * 1000 for t in ours], target="1.2x bare echo (medians)")
    return [base, compared(mine, base)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300, help="round trips of each kind (default 300)")
    args = parser.parse_args(argv)
    print(table(asyncio.run(run(args.count))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
