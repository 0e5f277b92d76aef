"""Benchmark of the durable store (firmware/store.py): outbox throughput and the fsync cost per event.

What it is for: the figures behind DESIGN.md principle 6 (SQLite, WAL, `synchronous=FULL`, one
transaction per commit). Each SessionEvent is committed (one transaction, fsync'ed) before it is
published. This measures, in a temporary directory on the same disk as the project:

* commit of one ~300-byte message and one state part per call, synchronous=FULL: events/s and latency
  (median, p99);
* the same with fsync off (synchronous=OFF): what the fsync costs per event;
* acks (synchronous=NORMAL: not fsync'ed);
* load at boot (quick_check + read) of a database with the pending messages;
* a WAL checkpoint (TRUNCATE): what SQLite does by itself every 1000 pages, here forced once, and the
  size of the database and its WAL before and after.

What it must never do: write outside its temporary directory or assert anything (figures only; the
smoke test in tests/test_tools.py checks that it runs). Usage: .venv/bin/python tools/bench/store.py [--events N]
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
from tools.bench.stats import Figure, compared, percentile, summarise  # noqa: E402

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
    store.close()
    return times


def figures(events: int, runs: int) -> list[Figure]:
    """For tools/bench/run.py: commit latency and outbox throughput (events/s per run of `events` commits),
    with fsync, compared with the same without fsync; `runs` runs each, in a temporary directory on this disk."""
    samples: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[2]) as tmp:
        for i in range(runs):
            for fsync in (True, False):
                times = run(Path(tmp) / f"{fsync}-{i}", events, fsync)
                samples[fsync][0].extend(t * 1000 for t in times)
                samples[fsync][1].append(len(times) / sum(times))
    out = []
    for index, (key, what, unit) in enumerate((("commit_latency", "commit latency", "ms"),
                                               ("outbox_throughput", "outbox throughput", "events/s"))):
        base = summarise(f"store.{key}.no_fsync", f"store: {what}, fsync off", unit, samples[False][index])
        out += [base, compared(summarise(f"store.{key}.fsync", f"store: {what}, fsync on (synchronous=FULL)", unit,
                                         samples[True][index]), base)]
    return out


def show(name: str, times: list[float]) -> float:
    us = sorted(t * 1e6 for t in times)
    median = statistics.median(us)
    p99 = percentile(us, 99)
    print(f"{name}: {len(us) / sum(times):,.0f} events/s, median {median:.0f} us, p99 {p99:.0f} us")
    return median


def sizes(directory: Path) -> str:
    db, wal = directory / "state.db", directory / "state.db-wal"
    return f"database {db.stat().st_size:,} bytes, WAL {wal.stat().st_size if wal.exists() else 0:,} bytes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    base = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        on = show("commit with fsync   ", run(Path(tmp) / "on", args.events, True))
        off = show("commit without fsync", run(Path(tmp) / "off", args.events, False))
        print(f"fsync cost per event: {on - off:.0f} us (median difference)")
        directory = Path(tmp) / "on"
        store = Store(directory)
        start = time.perf_counter()
        _, pending = store.load()
        print(f"load of {len(pending)} pending messages: {(time.perf_counter() - start) * 1000:.1f} ms")
        start = time.perf_counter()
        for record in pending:
            store.ack([record.seq])
        print(f"ack (not fsync'ed): {len(pending) / (time.perf_counter() - start):,.0f} acks/s")
        before = sizes(directory)
        start = time.perf_counter()
        store.checkpoint()
        print(f"WAL checkpoint: {(time.perf_counter() - start) * 1000:.1f} ms; "
              f"before: {before}; after: {sizes(directory)}")
        store.close()


if __name__ == "__main__":
    main()
