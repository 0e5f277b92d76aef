"""Background load for the reaction benchmark, in a process of its own (so it shares the machine, not the
controller's event loop), and the bare event loop whose wake-up lateness is the baseline.

Two modes, each running until SIGTERM and then printing one JSON line on stdout (after a "ready" line
once it runs):

* `backend --port P --charger ID --rate N --console SOCKET`: a backend client sending `exists_reservation`
  (a cheap, read-only op) at N requests/s over the private mosquitto, pipelined (QoS 1, never waiting
  for a reply before the next request, but at most MAX_UNANSWERED unanswered: a controller that cannot
  keep up gets a lower rate, reported, rather than an ever-growing backlog), counting the replies; and
  a console client on the controller's unix socket running `watch` (firmware/console_server.py:
  newline-delimited JSON), reading every line.
  Prints {"seconds", "sent", "replies", "watch_lines"}.
* `lateness --interval-ms MS`: a bare asyncio loop sleeping MS again and again; each wake-up's lateness
  (woken minus due, loop.time()) in ms. Prints {"lateness_ms": [...]}.

What it must never do: talk to any broker but the one on 127.0.0.1 it is given, or change the charger's
state (only read-only ops). Standard: API.md §2 (request envelope), §3 (`exists_reservation`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench.harness import NODELAY  # noqa: E402

MAX_IN_FLIGHT = 2000
#: Requests sent and not yet answered, at most: a controller that cannot keep up slows the load down
#: (the rate reached is reported) instead of drowning in an ever-growing backlog.
MAX_UNANSWERED = 1000
#: Requests the load may be behind its schedule before it gives up on catching up (no bursts after a stall).
MAX_BEHIND = 20


async def _stopped() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _watch(socket_path: str, counter: list[int]) -> None:
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 20)
    try:
        writer.write(b'{"id": "bench-watch", "op": "watch", "args": {}}\n')
        await writer.drain()
        while await reader.readline():
            counter[0] += 1
    finally:
        writer.close()


async def backend(port: int, charger_id: str, rate_hz: float, console: str | None) -> dict[str, float]:
    import aiomqtt

    stop = await _stopped()
    root = f"chargers/{charger_id}/v1"
    counts = {"sent": 0, "replies": 0}
    watch_lines = [0]
    in_flight: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-load", socket_options=NODELAY,
                              max_inflight_messages=MAX_IN_FLIGHT) as client:
        await client.subscribe(f"{root}/reply", qos=1)

        async def replies() -> None:
            async for _ in client.messages:
                counts["replies"] += 1

        async def publish(body: bytes) -> None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(f"{root}/cmd", body, qos=1)

        tasks = [loop.create_task(replies())]
        if console:
            tasks.append(loop.create_task(_watch(console, watch_lines)))
        print("ready", flush=True)
        started = loop.time()
        skipped = 0
        while not stop.is_set():
            due = int((loop.time() - started) * rate_hz) - skipped
            if due - counts["sent"] > MAX_BEHIND:
                skipped += due - counts["sent"] - MAX_BEHIND
                due = counts["sent"] + MAX_BEHIND
            while (counts["sent"] < due and len(in_flight) < MAX_IN_FLIGHT
                   and counts["sent"] - counts["replies"] < MAX_UNANSWERED):
                counts["sent"] += 1
                body = json.dumps({"id": f"load-{counts['sent']}", "op": "exists_reservation",
                                   "args": {"id_token": "LOAD"}}).encode()
                task = loop.create_task(publish(body))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.002)
        seconds = loop.time() - started
        if in_flight:  # the last requests' PUBACKs (a disconnect with publishes pending warns of each)
            await asyncio.wait(list(in_flight), timeout=5)
        for task in [*tasks, *in_flight]:
            task.cancel()
        await asyncio.wait([*tasks, *in_flight], timeout=2)
    return {"seconds": seconds, "sent": counts["sent"], "replies": counts["replies"], "watch_lines": watch_lines[0]}


async def lateness(interval_s: float) -> dict[str, list[float]]:
    stop = await _stopped()
    loop = asyncio.get_running_loop()
    samples: list[float] = []
    print("ready", flush=True)
    while not stop.is_set():
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        samples.append((loop.time() - due) * 1000)
    return {"lateness_ms": samples}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    modes = parser.add_subparsers(dest="mode", required=True)
    load = modes.add_parser("backend")
    load.add_argument("--port", type=int, required=True)
    load.add_argument("--charger", required=True)
    load.add_argument("--rate", type=float, default=1000.0)
    load.add_argument("--console", default=None, help="the controller's console socket (watch)")
    probe = modes.add_parser("lateness")
    probe.add_argument("--interval-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.mode == "backend":
        result: object = asyncio.run(backend(args.port, args.charger, args.rate, args.console))
    else:
        result = asyncio.run(lateness(args.interval_ms / 1000))
    print(json.dumps(result), flush=True)
    print(f"load {args.mode}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
