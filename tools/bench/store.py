"""Benchmark of the durable store (firmware/store.py): outbox throughput and the fsync cost per event.

Each SessionEvent is committed (one record, fsync'ed) before it is published. This measures, in a
temporary directory on the same disk as the project:

* commit of one ~300-byte message per call, fsync on: events/s and latency (median, p99);
* the same with fsync off: what the fsync costs per event;
* acks (not fsync'ed);
* load (replay) of a journal with the pending messages, and compaction.

Usage: .venv/bin/python tools/bench/store.py [--events N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from firmware.store import OutboxRecord, Store  # noqa: E402

PAYLOAD = b"x" * 300


def run(directory: Path, n: int, fsync: bool) -> list[float]:
    store = Store(directory, fsync=fsync)
    store.load()
    times = []
    for seq in range(1, n + 1):
        record = OutboxRecord(seq=seq, topic="chargers/CP/v1/evse/1/session", payload=PAYLOAD, kind="session")
        start = time.perf_counter()
        store.commit([record], {"sessions": {"1": {"uuid": "u", "seq": seq}}})
        times.append(time.perf_counter() - start)
    return times


def show(name: str, times: list[float]) -> float:
    us = sorted(t * 1e6 for t in times)
    median = statistics.median(us)
    p99 = us[min(len(us) - 1, round(0.99 * (len(us) - 1)))]
    print(f"{name}: {len(us) / sum(times):,.0f} events/s, median {median:.0f} us, p99 {p99:.0f} us")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    base = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        on = show("commit with fsync   ", run(Path(tmp) / "on", args.events, True))
        off = show("commit without fsync", run(Path(tmp) / "off", args.events, False))
        print(f"fsync cost per event: {on - off:.0f} us (median difference)")
        store = Store(Path(tmp) / "on")
        start = time.perf_counter()
        _, pending = store.load()
        print(f"load of {len(pending)} pending messages: {(time.perf_counter() - start) * 1000:.1f} ms")
        start = time.perf_counter()
        for record in pending:
            store.ack([record.seq])
        print(f"ack (not fsync'ed): {len(pending) / (time.perf_counter() - start):,.0f} acks/s")
        start = time.perf_counter()
        store.compact()
        print(f"compaction: {(time.perf_counter() - start) * 1000:.1f} ms, journal now "
              f"{(Path(tmp) / 'on' / 'journal.log').stat().st_size} bytes")


if __name__ == "__main__":
    main()
