"""The durable store (firmware/store.py): atomic commits of state parts and outbox messages in SQLite.

Real files in temporary directories, real SQLite, no mocks. The guarantees the journal store was
tested for are tested here against SQLite:

* a power cut loses nothing committed and never leaves part of a commit: a child process is killed
  (SIGKILL) in the middle of a stream of commits, and copies of `state.db` + its WAL are cut at frame
  boundaries, inside frames and in the header, zero-filled and bit-flipped; a fresh `Store.load()`
  must return exactly what a *prefix* of the commits says, and never raise;
* a damaged database file is a clear StoreError naming the file and what to do, and is never written;
* state parts, pending order, acks, the bound on droppable messages, events never dropped, `last_seq`
  never going back (random operations against a model too);
* a charger updated from the journal store loses nothing (migration of `journal.log`).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import store as store_module
from firmware.core.errors import ChargerError
from firmware.store import DB_FILE, METER_KEY_BASE, SCHEMA, OutboxRecord, Store, StoreError
from firmware.store_migrate import JOURNAL_FILE, MAGIC, frame, import_journal
from tests.support.program import REPO

STORE_LOGGER = "firmware.store"
WAL_HEADER = 32
WAL_FRAME = 24 + 4096  # frame header + one page (the default page size)


# --- helpers ---------------------------------------------------------------------------------------


def session(seq: int, kind: str = "session") -> OutboxRecord:
    return OutboxRecord(seq=seq, topic=f"R/evse/1/{kind}", payload=b'{"seq":%d}' % seq, kind=kind)


def reservation(seq: int) -> OutboxRecord:
    return OutboxRecord(seq=seq, topic="R/reservation", payload=b'{"r":%d}' % seq, kind="reservation")


def meter(n: int) -> OutboxRecord:
    """The n-th meter sample (n >= 1), keyed like the controller keys them: above METER_KEY_BASE, < 0."""
    return OutboxRecord(seq=METER_KEY_BASE + n, topic="R/evse/1/meter", payload=b'{"m":%d}' % n, kind="meter")


@dataclass(frozen=True)
class Loaded:
    state: dict[str, Any]
    pending: list[OutboxRecord]
    last_seq: int


def load(state_dir: Path) -> Loaded:
    """What a freshly booted controller would see."""
    fresh = Store(state_dir)
    try:
        state, pending = fresh.load()
        return Loaded(state, pending, fresh.last_seq)
    finally:
        fresh.close()


@dataclass
class Model:
    """The expected meaning of the store: what has been committed and not acked."""

    state: dict[str, Any] = field(default_factory=dict)
    pending: dict[int, OutboxRecord] = field(default_factory=dict)
    last_seq: int = 0

    def commit(self, messages: list[OutboxRecord], state: dict[str, Any] | None, acks: Sequence[int] = ()) -> None:
        for s in acks:
            self.pending.pop(s, None)
        self.state.update(state or {})
        for m in messages:
            self.pending[m.seq] = m
            self.last_seq = max(self.last_seq, m.seq)

    def ack(self, seqs: list[int]) -> None:
        for s in seqs:
            self.pending.pop(s, None)

    def expect(self) -> tuple[dict[str, Any], list[OutboxRecord], int]:
        return dict(self.state), [self.pending[s] for s in sorted(self.pending)], self.last_seq


Expected = tuple[dict[str, Any], list[OutboxRecord], int]


def assert_matches(got: Loaded, expected: Expected) -> None:
    state, pending, last_seq = expected
    assert got.state == state
    assert got.pending == pending
    assert [r.seq for r in got.pending] == sorted(r.seq for r in got.pending)
    assert got.last_seq == last_seq


def wal(state_dir: Path) -> Path:
    return state_dir / (DB_FILE + "-wal")


def wal_size(state_dir: Path) -> int:
    return wal(state_dir).stat().st_size if wal(state_dir).exists() else 0


@dataclass
class Recorded:
    """A store written op by op, without a checkpoint: the database file and the WAL as a power cut
    would find them, with the WAL offset at which every op's transaction ends and the expected meaning
    of the store up to there (`boundaries[k]`: after k transactions)."""

    db: bytes
    wal: bytes
    boundaries: list[tuple[int, Expected]]

    def expected_at(self, cut: int) -> Expected:
        """Below the first boundary the schema's transaction is torn too: the store starts empty."""
        return max((b for b in self.boundaries if b[0] <= max(cut, self.boundaries[0][0])), key=lambda b: b[0])[1]

    def offsets(self) -> set[int]:
        return {b[0] for b in self.boundaries}


def record_store(state_dir: Path, ops: list[tuple[str, Any, Any]]) -> Recorded:
    """Apply `ops` ("commit", messages, state) / ("ack", seqs, None) to a Store; every op must write
    one transaction (acks name pending messages only)."""
    s = Store(state_dir)
    s.load()
    model = Model()
    boundaries = [(wal_size(state_dir), model.expect())]  # the schema's transaction
    for op, a, b in ops:
        before = wal_size(state_dir)
        if op == "commit":
            s.commit(a, b)
            model.commit(a, b)
        else:
            assert all(seq in model.pending for seq in a)
            s.ack(a)
            model.ack(a)
        after = wal_size(state_dir)
        assert after > before, "every op of the scenario appends one transaction (and no checkpoint ran)"
        boundaries.append((after, model.expect()))
    recorded = Recorded((state_dir / DB_FILE).read_bytes(), wal(state_dir).read_bytes(), boundaries)
    s.close()
    return recorded


#: Every kind of transaction: state parts (replaced later), the three message kinds, acks of meter
#: samples and of events, a commit with both state and messages, a message-only commit.
SCENARIO: list[tuple[str, Any, Any]] = [
    ("commit", [], {"limits": {"1": 32.0}, "enabled": {"1": True}}),
    ("commit", [session(1)], {"sessions": {"1": {"uuid": "u-1", "energy_wh": 0.0}}}),
    ("commit", [meter(1), meter(2)], {"energy": {"1": 10.5}}),
    ("commit", [reservation(2), session(3)], {"reservations": [{"id": 7, "token": "ABC"}]}),
    ("ack", [1], None),
    ("commit", [session(4)], {"sessions": {"1": None}, "limits": {"1": 16.0}}),
    ("ack", [METER_KEY_BASE + 1, 3], None),
    ("commit", [meter(3)], None),
    ("commit", [], {"local_list": {"tok": "Accepted"}, "blob": b"\x00\xc7\x1a\xff" * 2000}),  # overflow pages
    ("ack", [2, 4], None),
    ("commit", [session(5), reservation(6)], {"counters": {"1": [3, 1]}}),
    ("ack", [METER_KEY_BASE + 2, METER_KEY_BASE + 3, 5], None),
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return record_store(tmp_path_factory.mktemp("scenario"), SCENARIO)


@pytest.fixture(scope="module")
def long_store(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """About 200 transactions (under the 1000 pages that start an automatic checkpoint)."""
    ops: list[tuple[str, Any, Any]] = []
    pending: list[int] = []
    seq, meters = 0, 0
    for i in range(140):
        messages = []
        if i % 3 == 0:
            meters += 1
            messages.append(meter(meters))
        if i % 2 == 0:
            seq += 1
            messages.append(session(seq) if i % 4 else reservation(seq))
        ops.append(("commit", messages, {f"part{i % 7}": {"i": i, "text": "x" * (i % 13)}}))
        pending += [m.seq for m in messages]
        if i % 2 == 1 and pending:
            ops.append(("ack", pending[:2], None))
            pending = pending[2:]
    return record_store(tmp_path_factory.mktemp("long"), ops)


def write_copy(state_dir: Path, db: bytes, wal_bytes: bytes | None) -> None:
    """A database as a power cut left it: the file and its WAL (no -shm: it is rebuilt)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm"):
        (state_dir / name).unlink(missing_ok=True)
    (state_dir / DB_FILE).write_bytes(db)
    if wal_bytes is not None:
        wal(state_dir).write_bytes(wal_bytes)


# --- commit / load round trip ----------------------------------------------------------------------


def test_empty_directory_loads_empty(tmp_path: Path) -> None:
    got = load(tmp_path / "new")
    assert got == Loaded({}, [], 0)
    assert (tmp_path / "new").is_dir()
    assert (tmp_path / "new" / DB_FILE).is_file()


def test_state_parts_merge_later_commit_replaces_the_part(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit(None, {"a": 1, "b": {"x": 1, "z": 0}})
    s.commit(None, {"b": {"y": 2}, "c": [1, 2]})
    s.commit([], {"a": None})
    expected = {"a": None, "b": {"y": 2}, "c": [1, 2]}  # "b" replaced as a whole, not merged inside
    assert s.state == expected
    got = load(tmp_path)
    assert got.state == expected
    assert got.pending == []


def test_state_values_of_every_cbor_type_round_trip(tmp_path: Path) -> None:
    value = {"int": -(2**40), "big": 2**70, "float": 1.5, "text": "äöü €", "bytes": b"\x00\xc7\x1a\xff",
             "none": None, "bool": False, "list": [1, [2, {"k": "v"}]], "map": {"1": {"2": 3}}}
    s = Store(tmp_path)
    s.load()
    s.commit(None, {"part": value, "large": "x" * 100_000})
    assert load(tmp_path).state == {"part": value, "large": "x" * 100_000}


def test_empty_commit_writes_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    before = wal(tmp_path).read_bytes()
    s.commit()
    s.commit([], {})
    s.commit(None, None)
    s.ack([1, 2])  # nothing pending: nothing to write
    s.commit(None, None, acks=[3])
    assert wal(tmp_path).read_bytes() == before  # no transaction at all


def test_messages_pending_in_seq_order_and_acks_remove_them(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(3)], {"x": 1})
    s.commit([session(1), reservation(2)])
    s.commit([meter(2), meter(1)])
    expected = [meter(1), meter(2), session(1), reservation(2), session(3)]  # meter samples replay first
    assert s.pending() == expected
    assert load(tmp_path).pending == expected

    s.ack([2, METER_KEY_BASE + 1])
    s.ack([99])  # unknown: ignored
    expected = [meter(2), session(1), session(3)]
    assert s.pending() == expected
    got = load(tmp_path)
    assert got.pending == expected
    assert got.state == {"x": 1}
    assert got.last_seq == 3


def test_acks_given_to_a_commit_are_part_of_its_transaction(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1), session(2), meter(1)], {"a": 1})
    s.commit([session(3)], {"a": 2}, acks=[1, 1, METER_KEY_BASE + 1, 77])  # twice, unknown: ignored
    assert s.pending() == [session(2), session(3)]
    assert_matches(load(tmp_path), ({"a": 2}, [session(2), session(3)], 3))
    s.commit(None, None, acks=[2])  # acks alone: an ack (not fsync'ed), still applied
    assert_matches(load(tmp_path), ({"a": 2}, [session(3)], 3))


def test_commit_of_a_pending_seq_replaces_the_message(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1)])
    newer = OutboxRecord(seq=1, topic="R/evse/1/session", payload=b"v2", kind="session")
    s.commit([newer])
    assert load(tmp_path).pending == [newer]


def test_commit_without_load_reads_the_database_first(tmp_path: Path) -> None:
    """A store committed into before it was loaded (a script seeding a state_dir may do that): nothing
    committed before is lost and last_seq does not go back."""
    s = Store(tmp_path)
    s.load()
    s.commit([session(5)], {"a": 1})
    s.close()
    other = Store(tmp_path)
    other.commit(None, {"b": 2})
    assert other.pending() == [session(5)]
    assert other.last_seq == 5
    assert_matches(load(tmp_path), ({"a": 1, "b": 2}, [session(5)], 5))


def test_last_seq_survives_acks_checkpoint_and_reload(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1), session(2)], {"a": 1})
    s.commit([reservation(3), meter(1)])
    s.ack([1, 2, 3, METER_KEY_BASE + 1])
    assert s.pending() == []
    assert s.last_seq == 3
    assert load(tmp_path) == Loaded({"a": 1}, [], 3)  # no message says seq 3 was used: meta does

    assert s.checkpoint()
    assert wal_size(tmp_path) == 0
    assert load(tmp_path) == Loaded({"a": 1}, [], 3)  # from the database file alone

    s.close()
    rebooted = Store(tmp_path)
    rebooted.load()
    rebooted.checkpoint()
    assert load(tmp_path) == Loaded({"a": 1}, [], 3)
    rebooted.commit([session(4)])
    assert load(tmp_path).last_seq == 4


def test_checkpoint_keeps_state_and_pending(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1), meter(1)], {"a": 1, "b": 2})
    s.commit([session(2), reservation(3)], {"b": 3})
    s.ack([2])
    before = load(tmp_path)
    assert wal_size(tmp_path) > 0
    assert s.checkpoint()
    assert wal_size(tmp_path) == 0
    assert load(tmp_path) == before
    s.commit([session(4)], {"c": 4})
    s.ack([1])
    assert_matches(load(tmp_path), ({"a": 1, "b": 3, "c": 4}, [meter(1), reservation(3), session(4)], 4))


def test_meter_samples_never_raise_last_seq(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([meter(1), meter(2)])
    assert s.last_seq == 0
    got = load(tmp_path)
    assert got.last_seq == 0
    assert got.pending == [meter(1), meter(2)]
    s.ack([METER_KEY_BASE + 1])
    s.checkpoint()
    assert load(tmp_path).last_seq == 0

    s.commit([session(1), meter(3)])
    s.ack([METER_KEY_BASE + 2, METER_KEY_BASE + 3])
    assert s.last_seq == 1
    assert load(tmp_path).last_seq == 1
    s.checkpoint()
    assert load(tmp_path).last_seq == 1


def test_duplicate_seqs_in_one_ack(tmp_path: Path) -> None:
    """An ack naming a seq twice acks it once; the database and memory agree afterwards."""
    s = Store(tmp_path)
    s.load()
    s.commit([session(5), session(6), session(7)])
    s.ack([5, 5, 6])
    assert s.pending() == [session(7)]
    assert load(tmp_path).pending == [session(7)]


class CountingStore(Store):
    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.delays: list[bool] = []

    def durable_write_delay(self) -> None:
        assert self._db is not None
        self.delays.append(self._db.in_transaction)  # inside the transaction, before COMMIT


def test_durable_write_delay_runs_once_inside_every_durable_commit(tmp_path: Path) -> None:
    """The hook SlowStore overrides (tests/support/store.py, also used by tools/bench/reaction.py)."""
    s = CountingStore(tmp_path)
    s.load()
    s.commit([session(1), session(2)], {"a": 1})
    s.commit(None, {"b": 1}, acks=[1])
    assert s.delays == [True, True]
    s.ack([2])  # not durable: no delay
    s.commit()  # nothing to write
    s.commit(None, None, acks=[3])
    assert s.delays == [True, True]


def test_the_database_is_sqlite_in_wal_mode_readable_with_the_sqlite3_tool(tmp_path: Path) -> None:
    """A technician inspects it read-only while the controller runs: plain tables, payloads as sent."""
    s = Store(tmp_path)
    s.load()
    s.commit([session(1), meter(1)], {"limits": {"1": 16.0}})
    assert s._db is not None  # noqa: SLF001 - the connection's settings, as promised in the docstring
    assert s._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL  # noqa: SLF001
    with sqlite3.connect(f"file:{tmp_path / DB_FILE}?mode=ro", uri=True) as ro:
        assert ro.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ro.execute("SELECT seq, topic, payload, kind FROM outbox ORDER BY seq").fetchall() == [
            (METER_KEY_BASE + 1, "R/evse/1/meter", b'{"m":1}', "meter"),
            (1, "R/evse/1/session", b'{"seq":1}', "session")]
        assert [(p, cbor2.loads(v)) for p, v in ro.execute("SELECT part, value FROM state")] == [
            ("limits", {"1": 16.0})]
        assert ro.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone() == (1,)
    ro.close()
    if shutil.which("sqlite3"):
        out = subprocess.run(["sqlite3", "-readonly", str(tmp_path / DB_FILE), "SELECT topic FROM outbox"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        assert out.split() == ["R/evse/1/meter", "R/evse/1/session"]


# --- power cut: a killed process ---------------------------------------------------------------------

#: The stream of commits the child writes (the parent's model of it is `kill_step`, written separately):
#: step i commits session(i) (and meter(i) every third step) with the state parts {"n": i, "p{i % 5}": i},
#: acking session(i - 2) in the same transaction; then acks meter(i - 3) alone (not fsync'ed), and
#: checkpoints every 7th step. Only firmware.store (through tests.support.store) is imported: a child
#: starts in a quarter of a second.
KILL_CHILD = r"""
import os, random, sys
from firmware.store import METER_KEY_BASE, OutboxRecord
from tests.support.store import SlowStore

state_dir, seed, max_delay_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
rng = random.Random(seed)

def step_ack(i):
    return [METER_KEY_BASE + i - 3] if i > 3 else []

def say(tag, i):
    os.write(1, b"%s %d\n" % (tag, i))  # one write(2) of a few bytes to a pipe: never torn by the kill

s = SlowStore(state_dir, lambda: rng.uniform(0, max_delay_s))  # the kill often lands in its delay
state, _ = s.load()
n = state.get("n", 0)
s.ack(step_ack(n))  # the last step's ack may have been lost with the kill
say(b"R", n)
while True:
    n += 1
    say(b"B", n)
    messages = [OutboxRecord(seq=n, topic="R/evse/1/session", payload=b'{"seq":%d}' % n, kind="session")]
    if n % 3 == 0:
        messages.append(OutboxRecord(seq=METER_KEY_BASE + n, topic="R/evse/1/meter", payload=b'{"m":%d}' % n,
                                     kind="meter"))
    s.commit(messages, {"n": n, f"p{n % 5}": n}, acks=[n - 2] if n > 2 else [])
    say(b"C", n)
    s.ack(step_ack(n))
    if n % 7 == 0:
        s.checkpoint()
    say(b"D", n)
"""


def kill_step(i: int) -> tuple[list[OutboxRecord], dict[str, Any], list[int]]:
    messages = [session(i)] + ([meter(i)] if i % 3 == 0 else [])
    return messages, {"n": i, f"p{i % 5}": i}, ([i - 2] if i > 2 else [])


def kill_step_ack(i: int) -> list[int]:
    return [METER_KEY_BASE + i - 3] if i > 3 else []


def kill_model(n: int, *, with_last_ack: bool) -> Expected:
    model = Model()
    for i in range(1, n + 1):
        model.commit(*kill_step(i))
        if i < n or with_last_ack:
            model.ack(kill_step_ack(i))
    return model.expect()


@pytest.mark.slow
def test_kill_nine_in_the_middle_of_a_stream_of_commits(tmp_path: Path) -> None:
    """Every commit the child saw return is there after a SIGKILL, the one under way is there whole or
    not at all, and seq never goes back; twelve kills in a row on the same database."""
    rng = random.Random(20261202)
    state_dir = tmp_path / "state"
    committed = 0
    in_flight = 0
    for run in range(12):
        with subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(state_dir), str(run), "0.004"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
            assert child.stdout is not None
            assert child.stderr is not None
            lines = [child.stdout.readline()]
            assert lines[0].split() == ["R", str(committed)], lines[0] + child.stderr.read()
            wanted = rng.randint(1, 25)
            while sum(line.startswith("C") for line in lines) < wanted:
                lines.append(child.stdout.readline())
                assert lines[-1], child.stderr.read()
            time.sleep(rng.uniform(0, 0.01))
            os.kill(child.pid, signal.SIGKILL)
            lines += child.stdout.read().splitlines()  # not communicate(): it would skip what readline() buffered
        events = [line.split() for line in lines if line.strip()]
        returned = max(int(n) for tag, n in events if tag == "C")
        begun = max(int(n) for tag, n in events if tag == "B")
        in_flight += begun > returned

        got = load(state_dir)
        n = got.state["n"]
        assert returned <= n <= begun  # every returned commit is there; nothing invented
        after_commit, after_step = kill_model(n, with_last_ack=False), kill_model(n, with_last_ack=True)
        assert got.last_seq == n >= committed  # seq never repeats
        assert (got.state, got.pending, got.last_seq) in (after_commit, after_step), (n, got.pending)
        committed = n
    assert committed > 12
    assert in_flight >= 1, "no kill landed inside a commit"


# --- power cut: a torn or damaged WAL ------------------------------------------------------------------


def load_copy(rec: Recorded, wal_bytes: bytes | None) -> Loaded:
    with tempfile.TemporaryDirectory() as d:
        write_copy(Path(d), rec.db, wal_bytes)
        return load(Path(d))


def cuts(rec: Recorded) -> set[int]:
    """Every frame boundary, and bytes around and inside each frame, and the WAL header."""
    out = {0, 1, 8, 16, 31, WAL_HEADER, len(rec.wal)}
    for start in range(WAL_HEADER, len(rec.wal), WAL_FRAME):
        out |= {start + 1, start + 23, start + 24, start + 2048, start + WAL_FRAME - 1}
    return {c for c in out if c <= len(rec.wal)}


def check_cut(rec: Recorded, state_dir: Path, cut: int, *, zero_fill: bool) -> None:
    data = rec.wal[:cut] + (b"\0" * (len(rec.wal) - cut) if zero_fill else b"")
    write_copy(state_dir, rec.db, data)
    intact = cut
    while zero_fill and intact < len(rec.wal) and rec.wal[intact] == 0:
        intact += 1  # zeros written over zeros (the empty end of a page) tear nothing
    expected = rec.expected_at(intact)
    assert_matches(load(state_dir), expected)  # never raises; exactly the transactions whole before the cut

    # and the controller goes on after the reboot: new commits land after the recovered ones
    s = Store(state_dir)
    s.load()
    s.commit([session(1000)], {"after": cut})
    s.close()
    state, pending, _ = expected
    assert_matches(load(state_dir), ({**state, "after": cut}, [*pending, session(1000)], 1000))


def test_scenario_transactions_are_distinct(scenario: Recorded) -> None:
    assert len(scenario.boundaries) == len(SCENARIO) + 1
    assert scenario.boundaries[-1][0] == len(scenario.wal)
    assert (len(scenario.wal) - WAL_HEADER) % WAL_FRAME == 0
    assert_matches(load_copy(scenario, scenario.wal), scenario.boundaries[-1][1])
    assert_matches(load_copy(scenario, None), scenario.boundaries[0][1])  # the WAL lost: nothing committed


@pytest.mark.parametrize("zero_fill", [False, True], ids=["truncated", "zero-filled"])
def test_truncated_wal_loads_a_prefix_of_the_commits(scenario: Recorded, tmp_path: Path, zero_fill: bool) -> None:
    for cut in sorted(cuts(scenario)):
        check_cut(scenario, tmp_path, cut, zero_fill=zero_fill)


@given(cut=st.data(), zero_fill=st.booleans())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
def test_truncated_wal_in_a_long_stream(long_store: Recorded, cut: st.DataObject, zero_fill: bool) -> None:
    assert len(long_store.boundaries) > 200
    position = cut.draw(st.integers(0, len(long_store.wal)), label="cut")
    with tempfile.TemporaryDirectory() as d:
        check_cut(long_store, Path(d), position, zero_fill=zero_fill)


def test_long_stream_loads_whole(long_store: Recorded) -> None:
    assert_matches(load_copy(long_store, long_store.wal), long_store.boundaries[-1][1])


@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
def test_a_damaged_wal_frame_ends_the_recovered_prefix(scenario: Recorded, data: st.DataObject) -> None:
    """A byte flipped in the WAL (a bad sector, a torn write) fails that frame's checksum: the
    transactions before it load, nothing from that frame on does (SQLite's WAL recovery)."""
    offset = data.draw(st.integers(0, len(scenario.wal) - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    damaged = bytearray(scenario.wal)
    damaged[offset] ^= flip
    frame_start = 0 if offset < WAL_HEADER else WAL_HEADER + (offset - WAL_HEADER) // WAL_FRAME * WAL_FRAME
    assert_matches(load_copy(scenario, bytes(damaged)), scenario.expected_at(frame_start))


@given(garbage=st.binary(min_size=1, max_size=300))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=50)
def test_garbage_appended_to_the_wal(scenario: Recorded, garbage: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        write_copy(Path(d), scenario.db, scenario.wal + garbage)
        assert_matches(load(Path(d)), scenario.boundaries[-1][1])
        s = Store(d)  # and a commit after the garbage still loads
        s.load()
        s.commit([session(500)], {"later": True})
        s.close()
        state, pending, _ = scenario.boundaries[-1][1]
        assert_matches(load(Path(d)), ({**state, "later": True}, [*pending, session(500)], 500))


# --- a damaged database file: a clear error, the file left alone ---------------------------------------


def assert_clear_error(state_dir: Path, info: pytest.ExceptionInfo[StoreError]) -> None:
    message = str(info.value)
    assert isinstance(info.value, ChargerError)
    assert f"{DB_FILE} is not a readable SQLite database" in message
    assert str(state_dir / DB_FILE) in message
    assert "move it away to start with an empty state" in message


GARBAGE_FILES = {
    "text": b"this is not a database\n" * 100,
    "zeros": b"\0" * 8192,
    "a few bytes": b"\x13\x37",
    "the SQLite header only": b"SQLite format 3\0",
    "a CBOR journal": frame({"state": {"a": 1}}),
}


@pytest.mark.parametrize("content", GARBAGE_FILES.values(), ids=GARBAGE_FILES.keys())
def test_a_file_that_is_not_a_database_is_a_clear_error_and_is_never_written(tmp_path: Path, content: bytes) -> None:
    (tmp_path / DB_FILE).write_bytes(content)
    s = Store(tmp_path)
    with pytest.raises(StoreError) as info:
        s.load()
    assert_clear_error(tmp_path, info)
    with pytest.raises(StoreError) as again:  # the shell's last commit at shutdown: refused, same message
        s.commit([session(1)], {"clean": True})
    assert str(again.value) == str(info.value)
    with pytest.raises(StoreError):
        s.ack([1])
    assert (tmp_path / DB_FILE).read_bytes() == content  # left as it was, for the technician
    assert not wal(tmp_path).exists()


@given(data=st.binary(min_size=100, max_size=2000))  # (SQLite takes a file of one byte for an empty database)
def test_a_file_of_random_bytes_is_a_clear_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / DB_FILE).write_bytes(data)
        with pytest.raises(StoreError) as info:
            Store(d).load()
        assert_clear_error(Path(d), info)


def test_an_empty_file_is_an_empty_database(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"")
    assert load(tmp_path) == Loaded({}, [], 0)


def test_damaged_pages_in_a_database_are_a_clear_error(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    for i in range(1, 200):
        s.commit([session(i)], {f"p{i % 9}": "v" * 300})
    s.checkpoint()
    s.close()
    data = bytearray((tmp_path / DB_FILE).read_bytes())
    assert len(data) >= 6 * 4096
    data[4096: 4096 * 4] = b"\x5a" * (4096 * 3)  # pages 2 to 4 (the tables' roots) overwritten
    (tmp_path / DB_FILE).write_bytes(bytes(data))
    with pytest.raises(StoreError) as info:
        Store(tmp_path).load()
    assert_clear_error(tmp_path, info)


def test_a_directory_in_place_of_the_database(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).mkdir()
    with pytest.raises(StoreError) as info:
        Store(tmp_path).load()
    assert_clear_error(tmp_path, info)


def test_a_symlink_loop_in_place_of_the_database(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).symlink_to(tmp_path / DB_FILE)
    with pytest.raises(StoreError) as info:
        Store(tmp_path).load()
    assert_clear_error(tmp_path, info)


def test_another_programs_database_is_not_taken_over(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_FILE) as other:
        other.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, data BLOB)")
    other.close()
    with pytest.raises(StoreError, match="another program") as info:
        Store(tmp_path).load()
    assert_clear_error(tmp_path, info)


def test_a_database_from_a_newer_firmware_is_a_clear_error(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("PRAGMA user_version = 2")
    db.close()
    with pytest.raises(StoreError, match="newer than this firmware") as info:
        Store(tmp_path).load()
    assert_clear_error(tmp_path, info)


def test_an_outbox_row_of_the_wrong_types_is_a_clear_error(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1)])
    s.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:  # a technician's edit
        db.execute("INSERT INTO outbox VALUES (2, 'R/evse/1/session', 'text, not bytes', 'session')")
    db.close()
    with pytest.raises(StoreError, match="wrong type") as info:
        Store(tmp_path).load()
    assert_clear_error(tmp_path, info)


def test_a_state_part_that_is_not_cbor_is_skipped_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1)], {"a": 1, "b": 2})
    s.close()
    with sqlite3.connect(tmp_path / DB_FILE) as db:
        db.execute("UPDATE state SET value = x'ff' WHERE part = 'b'")
    db.close()
    with caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        got = load(tmp_path)
    assert_matches(got, ({"a": 1}, [session(1)], 1))  # as app._restore does with a damaged part
    assert any(r.levelno == logging.ERROR and "'b'" in r.getMessage() for r in caplog.records)


def test_a_database_locked_by_another_program_is_not_taken_for_damage(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A technician's sqlite3 shell writing: the commit fails whole (StoreError), and works once the
    lock is gone; a load blocked by an exclusive lock says so, and works once it is gone."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.1)
    s = Store(tmp_path)
    s.load()
    s.commit([session(1)], {"a": 1})
    other = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="cannot write") as info:
        s.commit([session(2)], {"a": 2})
    assert "nothing of this commit was stored" in str(info.value)
    assert s.pending() == [session(1)]
    assert s.state == {"a": 1}
    assert s.last_seq == 1
    other.execute("ROLLBACK")
    s.commit([session(2)], {"a": 2})
    s.close()

    other.execute("PRAGMA locking_mode = EXCLUSIVE")  # keeps its lock after the write: even readers wait
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE meta SET value = value WHERE key = 'last_seq'")
    other.execute("COMMIT")
    booting = Store(tmp_path)
    with pytest.raises(StoreError, match="locked by another program"):
        booting.load()
    other.close()
    assert_matches(Loaded(*booting.load(), booting.last_seq), ({"a": 2}, [session(1), session(2)], 2))
    booting.close()


# --- bound -----------------------------------------------------------------------------------------


def test_bound_drops_oldest_meter_samples_first(tmp_path: Path) -> None:
    s = Store(tmp_path, max_outbox_records=10)
    s.load()
    s.commit([session(i) for i in range(1, 6)] + [reservation(i) for i in range(6, 9)])
    for n in range(1, 11):
        s.commit([meter(n)])
        assert len(s.pending()) <= 10
    assert s.dropped_records == 8
    expected = [meter(9), meter(10)] + [session(i) for i in range(1, 6)] + [reservation(i) for i in range(6, 9)]
    assert s.pending() == expected
    assert_matches(load(tmp_path), ({}, expected, 8))


def test_bound_in_one_commit(tmp_path: Path) -> None:
    s = Store(tmp_path, max_outbox_records=10)
    s.load()
    dropped = s.commit([meter(n) for n in range(10, 0, -1)] + [session(i) for i in range(1, 9)])
    assert dropped == [METER_KEY_BASE + n for n in range(1, 9)]
    assert s.dropped_records == 8
    expected = [meter(9), meter(10)] + [session(i) for i in range(1, 9)]
    assert s.pending() == expected
    assert load(tmp_path).pending == expected


def test_bound_meter_samples_first_then_events(tmp_path: Path) -> None:
    s = Store(tmp_path, max_outbox_records=10)
    s.load()
    s.commit([meter(n) for n in range(1, 11)])
    assert s.dropped_records == 0
    for i in range(1, 9):
        s.commit([session(i)])
    assert s.dropped_records == 8
    assert s.pending() == [meter(9), meter(10)] + [session(i) for i in range(1, 9)]
    assert load(tmp_path).pending == s.pending()


def test_events_are_never_dropped_past_the_bound(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Store(tmp_path, max_outbox_records=10)
    s.load()
    s.commit([meter(1), meter(2), meter(3)])
    events = [session(i) if i % 2 else reservation(i) for i in range(1, 13)]
    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        for e in events:
            s.commit([e])
    assert s.dropped_records == 3  # every meter sample went; no event did
    assert s.pending() == events
    assert any(r.levelno == logging.ERROR and r.name == STORE_LOGGER and "bound" in r.getMessage()
               for r in caplog.records)
    assert_matches(load(tmp_path), ({}, events, 12))


# --- concurrency -----------------------------------------------------------------------------------


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads far more often than every 5 ms, so that races show up in a short test."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


@pytest.mark.usefixtures("frequent_thread_switches")
@pytest.mark.parametrize("run", range(3))  # a race shows up in some runs only
@pytest.mark.parametrize("checkpoint_every", [0, 7], ids=["no-checkpoint", "with-checkpoint"])
def test_commit_and_ack_from_two_threads(tmp_path: Path, checkpoint_every: int, run: int) -> None:
    s = Store(tmp_path)
    s.load()
    ops = 1000
    acked: list[int] = []
    errors: list[BaseException] = []

    def committer() -> None:
        try:
            for i in range(1, ops + 1):
                s.commit([session(i)], {"n": i, f"p{i % 5}": i})
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def acker() -> None:
        try:
            for i in range(ops):
                pending = s.pending()
                if pending:
                    seqs = [r.seq for r in pending[: 1 + i % 3]]
                    s.ack(seqs)
                    acked.extend(seqs)
                if checkpoint_every and i % checkpoint_every == 0:
                    s.checkpoint()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=committer), threading.Thread(target=acker)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(acked) == len(set(acked))  # each seen as pending once, so each acked once

    expected_pending = [session(i) for i in range(1, ops + 1) if i not in set(acked)]
    state = {"n": ops, **{f"p{k}": max(i for i in range(1, ops + 1) if i % 5 == k) for k in range(5)}}
    assert s.pending() == expected_pending
    assert_matches(load(tmp_path), (state, expected_pending, ops))


# --- the WAL stays bounded; a commit writes what changed, not the outbox --------------------------------


def test_automatic_checkpoints_keep_the_wal_bounded(tmp_path: Path) -> None:
    s = Store(tmp_path, fsync=False)  # the same SQLite work, without waiting for the disk
    s.load()
    model = Model()
    largest = 0
    for i in range(1, 1501):
        messages = [session(i)] + ([meter(i)] if i % 4 == 0 else [])
        state = {f"part{i % 6}": {"i": i, "pad": "p" * 20}}
        s.commit(messages, state)
        model.commit(messages, state)
        if i > 2:
            done = [i - 2, METER_KEY_BASE + i - 2]  # the second one only exists every 4th step
            s.ack(done)
            model.ack(done)
        largest = max(largest, wal_size(tmp_path))
    assert largest <= WAL_HEADER + (1000 + 10) * WAL_FRAME  # SQLite checkpoints at 1000 pages
    assert largest <= store_module.WAL_SIZE_LIMIT_BYTES
    assert_matches(load(tmp_path), model.expect())


def test_a_large_outbox_is_not_rewritten_on_every_commit(tmp_path: Path) -> None:
    """With the backend offline the outbox grows (here to ~600 kB); a commit still appends a few pages."""
    s = Store(tmp_path, fsync=False)
    s.load()
    for seq in range(1, 2001):
        s.commit([OutboxRecord(seq=seq, topic="t", payload=b"x" * 300, kind="session")])
    s.checkpoint()
    for seq in range(2001, 2011):
        before = wal_size(tmp_path)
        s.commit([OutboxRecord(seq=seq, topic="t", payload=b"x" * 300, kind="session")], {"n": seq})
        # the state part, the outbox's last leaf (and a new one with its parent), meta, page 1: ~25 kB
        assert wal_size(tmp_path) - before <= (WAL_HEADER if before == 0 else 0) + 6 * WAL_FRAME
    assert [r.seq for r in Store(tmp_path).load()[1]] == list(range(1, 2011))


# --- migration from the journal store ----------------------------------------------------------------

#: `tests/data/journal_v0.bin` was written by the journal store itself (firmware/store.py at 0b32e80):
#: commits, acks, a compaction (a record with the `last_seq` floor), more commits, then a record torn in
#: half by a "power cut". This is what it loaded as.
JOURNAL_V0_STATE = {"limits": {"1": 16.0}, "enabled": {"1": True}, "clean": False, "energy": {"1": 1200.5},
                    "sessions": {"1": {"uuid": "u-1", "id_token": "04A2B3C4"}}, "blob": b"\x00\xc7\x1a\xff",
                    "reservations": {"entries": [{"id": 7}]}}
JOURNAL_V0_PENDING = [
    OutboxRecord(seq=METER_KEY_BASE + 2, topic="chargers/CP-1/v1/evse/1/meter", payload=b'{"m":2}', kind="meter"),
    OutboxRecord(seq=METER_KEY_BASE + 3, topic="chargers/CP-1/v1/evse/1/meter", payload=b'{"m":3}', kind="meter"),
    OutboxRecord(seq=4, topic="chargers/CP-1/v1/reservation", payload=b'{"seq": 4, "event": "SessionStarted"}',
                 kind="reservation"),
]


def test_a_journal_written_by_the_journal_store_is_migrated_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    original = (REPO / "tests" / "data" / "journal_v0.bin").read_bytes()
    (tmp_path / JOURNAL_FILE).write_bytes(original)
    with caplog.at_level(logging.INFO):
        got = load(tmp_path)
    assert_matches(got, (JOURNAL_V0_STATE, JOURNAL_V0_PENDING, 4))
    assert not (tmp_path / JOURNAL_FILE).exists()
    assert (tmp_path / (JOURNAL_FILE + ".migrated")).read_bytes() == original  # kept, unchanged
    assert not (tmp_path / (DB_FILE + ".migrating")).exists()
    assert any("migrated journal.log into state.db" in r.getMessage() for r in caplog.records)

    s = Store(tmp_path)  # the next boot reads the database only; the controller goes on from seq 4
    assert_matches(Loaded(*s.load(), s.last_seq), (JOURNAL_V0_STATE, JOURNAL_V0_PENDING, 4))
    s.commit([session(5)], {"limits": {"1": 20.0}}, acks=[4])
    s.close()
    expected = ({**JOURNAL_V0_STATE, "limits": {"1": 20.0}}, [*JOURNAL_V0_PENDING[:2], session(5)], 5)
    assert_matches(load(tmp_path), expected)


def journal_of(ops: list[tuple[str, Any, Any]]) -> tuple[bytes, list[tuple[int, Expected]]]:
    """SCENARIO written as the journal store wrote it, with the meaning after every record."""
    data, model = b"", Model()
    boundaries = [(0, model.expect())]
    for op, a, b in ops:
        if op == "commit":
            body: dict[str, Any] = {"messages": [m.plain() for m in a]}
            if b:
                body["state"] = b
            data += frame(body)
            model.commit(a, b)
        else:
            data += frame({"acks": a})
            model.ack(a)
        boundaries.append((len(data), model.expect()))
    return data, boundaries


def test_every_prefix_of_a_journal_torn_by_a_power_cut_is_migrated_whole(tmp_path: Path) -> None:
    data, boundaries = journal_of(SCENARIO)
    ends = [b[0] for b in boundaries]
    for cut in sorted({*ends, *(e + 1 for e in ends[:-1]), *(e + 9 for e in ends[:-1]),
                       *((a + b) // 2 for a, b in zip(ends, ends[1:], strict=False))}):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / JOURNAL_FILE).write_bytes(data[:cut])
        expected = max((b for b in boundaries if b[0] <= cut), key=lambda b: b[0])[1]
        assert_matches(load(d), expected)
        assert (d / (JOURNAL_FILE + ".migrated")).read_bytes() == data[:cut]


def test_migration_keeps_the_seq_of_acks_and_of_the_compaction_floor(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILE).write_bytes(frame({"state": {"a": 1}, "messages": [], "last_seq": 41})
                                          + frame({"acks": [42]}) + frame({"acks": [METER_KEY_BASE + 7]}))
    assert load(tmp_path) == Loaded({"a": 1}, [], 42)  # seq 43 is the next one, never 1 again


def test_damaged_journal_records_are_skipped_by_the_migration(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The journal store's reader, unchanged: bad records and bad message fields are logged and skipped."""
    good = session(1).plain()
    bad_crc = bytearray(frame({"state": {"evil": 1}}))
    bad_crc[-1] ^= 0xFF
    records = [
        frame({"state": {"a": 1}, "messages": [session(1).plain()]}),
        bytes(bad_crc),
        MAGIC + b"\x00\x00\x00\x05\x00\x00\x00\x00\xff",  # a CRC of the wrong body
        frame({"messages": [{**good, "seq": "2"}, {**good, "payload": "text"}, {}, "not a map", 7, None]}),
        frame({"state": [1, 2], "messages": "nope", "acks": {"1": 1}, "last_seq": "9"}),
        b"\x00" * 10 + b"garbage",
        frame({"state": {"b": 2}, "messages": [reservation(3).plain()]}),
    ]
    (tmp_path / JOURNAL_FILE).write_bytes(b"".join(records) + frame({"acks": [1]})[:7])
    with caplog.at_level(logging.ERROR):
        got = load(tmp_path)
    assert_matches(got, ({"a": 1, "b": 2}, [session(1), reservation(3)], 3))
    assert sum(r.levelno == logging.ERROR for r in caplog.records) >= 6


@pytest.mark.parametrize("stale", [b"", b"SQLite format 3\0" + b"\x01" * 100, b"garbage" * 50])
def test_a_power_cut_during_the_migration_leaves_no_database(tmp_path: Path, stale: bytes) -> None:
    """The import is written beside and renamed into place: a stale half-written one is redone."""
    (tmp_path / JOURNAL_FILE).write_bytes((REPO / "tests" / "data" / "journal_v0.bin").read_bytes())
    (tmp_path / (DB_FILE + ".migrating")).write_bytes(stale)
    (tmp_path / (DB_FILE + ".migrating-journal")).write_bytes(b"hot journal of the stale import")
    assert_matches(load(tmp_path), (JOURNAL_V0_STATE, JOURNAL_V0_PENDING, 4))
    assert sorted(p.name for p in tmp_path.iterdir() if "migrating" in p.name) == []


def test_a_power_cut_between_the_import_and_the_rename(tmp_path: Path) -> None:
    """The database is complete; the journal still has its name: renamed at the next boot, not imported
    again, and an earlier `journal.log.migrated` is kept."""
    original = (REPO / "tests" / "data" / "journal_v0.bin").read_bytes()
    (tmp_path / JOURNAL_FILE).write_bytes(original)
    (tmp_path / (JOURNAL_FILE + ".migrated")).write_bytes(b"from an earlier update")
    import_journal(tmp_path / JOURNAL_FILE, tmp_path / DB_FILE, SCHEMA)  # the first half
    assert (tmp_path / JOURNAL_FILE).exists()
    assert (tmp_path / DB_FILE).exists()
    assert_matches(load(tmp_path), (JOURNAL_V0_STATE, JOURNAL_V0_PENDING, 4))
    assert not (tmp_path / JOURNAL_FILE).exists()
    assert (tmp_path / (JOURNAL_FILE + ".migrated")).read_bytes() == b"from an earlier update"
    assert (tmp_path / (JOURNAL_FILE + ".migrated.1")).read_bytes() == original


def test_a_journal_next_to_a_database_it_did_not_come_from_is_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1)], {"a": 1})
    s.close()
    (tmp_path / JOURNAL_FILE).write_bytes(frame({"state": {"evil": 1}, "messages": [session(9).plain()]}))
    with caplog.at_level(logging.WARNING, logger=STORE_LOGGER):
        assert_matches(load(tmp_path), ({"a": 1}, [session(1)], 1))
    assert (tmp_path / JOURNAL_FILE).exists()
    assert any("ignored" in r.getMessage() for r in caplog.records)


def test_an_unreadable_journal_is_a_clear_error_and_creates_no_database(tmp_path: Path) -> None:
    (tmp_path / JOURNAL_FILE).mkdir()  # read_bytes() fails (works as root too)
    with pytest.raises(StoreError, match="cannot migrate .*journal.log into .*state.db .*Is a directory"):
        Store(tmp_path).load()
    assert not (tmp_path / DB_FILE).exists()


# --- hypothesis: random commit / ack / checkpoint / reboot sequences ---------------------------------

STATE_KEYS = ["sessions", "limits", "enabled", "counters", "energy", "reservations", "local_list"]
state_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@given(data=st.data())
def test_random_operations_against_a_model(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        s = Store(d, fsync=False)  # durability is tested above; here the meaning of every operation
        s.load()
        model = Model()
        seq, meters = 0, 0
        # (end offset of the transaction in the WAL, meaning of the store up to there); reset when the
        # WAL is (a checkpoint, a reboot: the last connection to close checkpoints and removes it)
        boundaries = [(wal_size(d), model.expect())]
        for _ in range(data.draw(st.integers(1, 25), label="steps")):
            op = data.draw(st.sampled_from(["commit", "commit", "commit", "ack", "ack", "checkpoint", "reboot"]))
            before = wal_size(d)
            if op == "commit":
                messages = []
                for kind in data.draw(st.lists(st.sampled_from(["session", "reservation", "meter"]), max_size=3)):
                    if kind == "meter":
                        meters += 1
                        messages.append(meter(meters))
                    else:
                        seq += 1
                        messages.append(session(seq, kind))
                state = data.draw(st.none() | st.dictionaries(st.sampled_from(STATE_KEYS), state_values, max_size=3))
                known = sorted(model.pending)
                acks = data.draw(st.lists(st.sampled_from(known), max_size=2)) if known else []
                s.commit(messages, state, acks=acks)
                model.commit(messages, state, acks)
            elif op == "ack":
                known = sorted(model.pending)
                seqs = data.draw(st.lists(st.sampled_from(known), max_size=4)) if known else []
                seqs += data.draw(st.lists(st.integers(-5, seq + 5), max_size=2))  # unknown ones too
                s.ack(seqs)
                model.ack(seqs)
            elif op == "checkpoint":
                s.checkpoint()
            else:  # a clean reboot: a fresh Store takes over the directory
                s.close()
                s = Store(d, fsync=False)
                assert_matches(Loaded(*s.load(), s.last_seq), model.expect())
            after = wal_size(d)
            if op in ("checkpoint", "reboot"):
                boundaries = [(after, model.expect())]
            elif after != before:
                assert after > before
                boundaries.append((after, model.expect()))
            else:
                assert boundaries[-1][1] == model.expect()  # nothing written: nothing changed

            assert (s.state, s.pending(), s.last_seq) == model.expect()
            assert_matches(load(d), model.expect())

        # a power cut now, with the WAL torn anywhere: a prefix of the transactions
        db, wal_bytes = (d / DB_FILE).read_bytes(), wal(d).read_bytes() if wal(d).exists() else b""
        s.close()
        cut = data.draw(st.integers(0, len(wal_bytes)), label="cut")
        with tempfile.TemporaryDirectory() as other:
            write_copy(Path(other), db, wal_bytes[:cut])
            expected = max((b for b in boundaries if b[0] <= max(cut, boundaries[0][0])), key=lambda b: b[0])[1]
            assert_matches(load(Path(other)), expected)
