"""The durable journal (firmware/store.py): atomic commits of state parts and outbox messages.

Real files in temporary directories, no mocks. The "power cut" is simulated at the file level: a
journal is written, then cut at every byte (or a hypothesis-chosen byte), zero-filled, corrupted or
extended with garbage, and a fresh `Store.load()` must return exactly what a *prefix* of the fully
written records says: never part of a commit, never anything that was not written, and never raise.
"""

from __future__ import annotations

import errno
import logging
import struct
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware import store as store_module
from firmware.store import JOURNAL_FILE, MAGIC, METER_KEY_BASE, OutboxRecord, Store

STORE_LOGGER = "firmware.store"


# --- helpers ---------------------------------------------------------------------------------------


def session(seq: int, kind: str = "session") -> OutboxRecord:
    return OutboxRecord(seq=seq, topic=f"R/evse/1/{kind}", payload=b'{"seq":%d}' % seq, kind=kind)


def reservation(seq: int) -> OutboxRecord:
    return OutboxRecord(seq=seq, topic="R/reservation", payload=b'{"r":%d}' % seq, kind="reservation")


def meter(n: int) -> OutboxRecord:
    """The n-th meter sample (n >= 1), keyed like the controller keys them: above METER_KEY_BASE, < 0."""
    return OutboxRecord(seq=METER_KEY_BASE + n, topic="R/evse/1/meter", payload=b'{"m":%d}' % n, kind="meter")


def raw_frame(body: bytes) -> bytes:
    """A record built from the documented format, independently of store.frame()."""
    return MAGIC + struct.pack(">II", len(body), zlib.crc32(body)) + body


@dataclass(frozen=True)
class Loaded:
    state: dict[str, Any]
    pending: list[OutboxRecord]
    last_seq: int
    skipped: int


def load(state_dir: Path) -> Loaded:
    """What a freshly booted controller would see."""
    fresh = Store(state_dir)
    state, pending = fresh.load()
    return Loaded(state, pending, fresh.last_seq, fresh.skipped_records)


@dataclass
class Model:
    """The expected meaning of a journal: what has been committed and not acked."""

    state: dict[str, Any] = field(default_factory=dict)
    pending: dict[int, OutboxRecord] = field(default_factory=dict)
    last_seq: int = 0

    def commit(self, messages: list[OutboxRecord], state: dict[str, Any] | None) -> None:
        self.state.update(state or {})
        for m in messages:
            self.pending[m.seq] = m
            self.last_seq = max(self.last_seq, m.seq)

    def ack(self, seqs: list[int]) -> None:
        for s in seqs:
            self.pending.pop(s, None)

    def expect(self) -> tuple[dict[str, Any], list[OutboxRecord], int]:
        return dict(self.state), [self.pending[s] for s in sorted(self.pending)], self.last_seq

    def copy(self) -> Model:
        return Model(dict(self.state), dict(self.pending), self.last_seq)


def assert_matches(got: Loaded, expected: tuple[dict[str, Any], list[OutboxRecord], int]) -> None:
    state, pending, last_seq = expected
    assert got.state == state
    assert got.pending == pending
    assert [r.seq for r in got.pending] == sorted(r.seq for r in got.pending)
    assert got.last_seq == last_seq


@dataclass
class Recorded:
    """A journal written op by op, with the file offset at which every op's record ends and the
    expected meaning of the journal up to there (`boundaries[k]`: after k records)."""

    data: bytes
    boundaries: list[tuple[int, tuple[dict[str, Any], list[OutboxRecord], int]]]
    ops: list[tuple[str, Any, Any]]

    def expected_at(self, cut: int) -> tuple[dict[str, Any], list[OutboxRecord], int]:
        return max((b for b in self.boundaries if b[0] <= cut), key=lambda b: b[0])[1]

    def offsets(self) -> set[int]:
        return {b[0] for b in self.boundaries}


def record_journal(state_dir: Path, ops: list[tuple[str, Any, Any]]) -> Recorded:
    """Apply `ops` ("commit", messages, state) / ("ack", seqs, None) to a Store; every op must write
    exactly one record (acks name pending messages only)."""
    s = Store(state_dir)
    s.load()
    model = Model()
    boundaries = [(0, model.expect())]
    for op, a, b in ops:
        before = s.path.stat().st_size if s.path.exists() else 0
        if op == "commit":
            s.commit(a, b)
            model.commit(a, b)
        else:
            assert all(seq in model.pending for seq in a)
            s.ack(a)
            model.ack(a)
        after = s.path.stat().st_size
        assert after > before, "every op of the scenario writes one record"
        boundaries.append((after, model.expect()))
    return Recorded(s.path.read_bytes(), boundaries, ops)


#: A journal of every kind of record: state parts (replaced later), the three message kinds, acks of
#: meter samples and of events, a commit with both state and messages, a message-only commit.
SCENARIO: list[tuple[str, Any, Any]] = [
    ("commit", [], {"limits": {"1": 32.0}, "enabled": {"1": True}}),
    ("commit", [session(1)], {"sessions": {"1": {"uuid": "u-1", "energy_wh": 0.0}}}),
    ("commit", [meter(1), meter(2)], {"energy": {"1": 10.5}}),
    ("commit", [reservation(2), session(3)], {"reservations": [{"id": 7, "token": "ABC"}]}),
    ("ack", [1], None),
    ("commit", [session(4)], {"sessions": {"1": None}, "limits": {"1": 16.0}}),
    ("ack", [METER_KEY_BASE + 1, 3], None),
    ("commit", [meter(3)], None),
    ("commit", [], {"local_list": {"tok": "Accepted"}, "blob": b"\x00\xc7\x1a\xff"}),
    ("ack", [2, 4], None),
    ("commit", [session(5), reservation(6)], {"counters": {"1": [3, 1]}}),
    ("ack", [METER_KEY_BASE + 2, METER_KEY_BASE + 3, 5], None),
]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return record_journal(tmp_path_factory.mktemp("scenario"), SCENARIO)


@pytest.fixture(scope="module")
def long_journal(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """About 300 records: too long to cut at every byte, so hypothesis picks the cuts."""
    ops: list[tuple[str, Any, Any]] = []
    pending: list[int] = []
    seq, meters = 0, 0
    for i in range(200):
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
    return record_journal(tmp_path_factory.mktemp("long"), ops)


def write_journal(state_dir: Path, data: bytes) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / JOURNAL_FILE).write_bytes(data)


# --- commit / load round trip ----------------------------------------------------------------------


def test_empty_directory_loads_empty(tmp_path: Path) -> None:
    got = load(tmp_path / "new")
    assert got == Loaded({}, [], 0, 0)
    assert (tmp_path / "new").is_dir()


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
    assert got.pending == [] and got.skipped == 0


def test_state_values_of_every_cbor_type_round_trip(tmp_path: Path) -> None:
    value = {"int": -(2**40), "big": 2**70, "float": 1.5, "text": "äöü €", "bytes": b"\x00\xc7\x1a\xff",
             "none": None, "bool": False, "list": [1, [2, {"k": "v"}]], "map": {"1": {"2": 3}}}
    s = Store(tmp_path)
    s.load()
    s.commit(None, {"part": value})
    assert load(tmp_path).state == {"part": value}


def test_empty_commit_writes_nothing(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit()
    s.commit([], {})
    s.commit(None, None)
    assert not s.path.exists()
    s.ack([1, 2])  # nothing pending: nothing to write
    assert not s.path.exists()


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
    assert got.pending == expected and got.state == {"x": 1} and got.last_seq == 3


def test_commit_of_a_pending_seq_replaces_the_message(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1)])
    newer = OutboxRecord(seq=1, topic="R/evse/1/session", payload=b"v2", kind="session")
    s.commit([newer])
    assert load(tmp_path).pending == [newer]


def test_last_seq_survives_acks_compaction_and_reload(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1), session(2)], {"a": 1})
    s.commit([reservation(3), meter(1)])
    s.ack([1, 2, 3, METER_KEY_BASE + 1])
    assert s.pending() == [] and s.last_seq == 3
    assert load(tmp_path) == Loaded({"a": 1}, [], 3, 0)  # only acks say seq 3 was used

    s.compact()
    assert len(s.path.read_bytes()) < 100  # one small record
    assert not (tmp_path / (JOURNAL_FILE + ".tmp")).exists()
    assert load(tmp_path) == Loaded({"a": 1}, [], 3, 0)  # the compacted journal's last_seq floor

    rebooted = Store(tmp_path)
    rebooted.load()
    rebooted.compact()  # a compaction right after a reload keeps the floor
    assert load(tmp_path) == Loaded({"a": 1}, [], 3, 0)
    rebooted.commit([session(4)])
    assert load(tmp_path).last_seq == 4


def test_compaction_keeps_state_and_pending(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.load()
    s.commit([session(1), meter(1)], {"a": 1, "b": 2})
    s.commit([session(2), reservation(3)], {"b": 3})
    s.ack([2])
    before = load(tmp_path)
    size = s.path.stat().st_size
    s.compact()
    assert s.path.stat().st_size < size
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
    assert got.last_seq == 0 and got.pending == [meter(1), meter(2)]
    s.ack([METER_KEY_BASE + 1])
    s.compact()
    assert load(tmp_path).last_seq == 0

    s.commit([session(1), meter(3)])
    s.ack([METER_KEY_BASE + 2, METER_KEY_BASE + 3])
    assert s.last_seq == 1 and load(tmp_path).last_seq == 1
    s.compact()
    assert load(tmp_path).last_seq == 1


def test_duplicate_seqs_in_one_ack(tmp_path: Path) -> None:
    """An ack naming a seq twice acks it once; the journal and memory agree afterwards."""
    s = Store(tmp_path)
    s.load()
    s.commit([session(5), session(6), session(7)])
    s.ack([5, 5, 6])
    assert s.pending() == [session(7)]
    assert load(tmp_path).pending == [session(7)]


# --- power cut: truncation at every byte -----------------------------------------------------------


def test_scenario_records_are_distinct(scenario: Recorded) -> None:
    assert len(scenario.boundaries) == len(SCENARIO) + 1
    assert scenario.boundaries[-1][0] == len(scenario.data)
    assert_matches(load_bytes(scenario.data), scenario.boundaries[-1][1])


def load_bytes(data: bytes) -> Loaded:
    with tempfile.TemporaryDirectory() as d:
        write_journal(Path(d), data)
        return load(Path(d))


def check_cut(rec: Recorded, state_dir: Path, cut: int, *, zero_fill: bool) -> None:
    data = rec.data[:cut] + (b"\0" * (len(rec.data) - cut) if zero_fill else b"")
    write_journal(state_dir, data)
    got = load(state_dir)  # (a) does not raise
    expected = rec.expected_at(cut)
    assert_matches(got, expected)  # (b), (c): exactly the records fully written before the cut
    if cut in rec.offsets():
        assert got.skipped == 0
    else:
        assert got.skipped >= 1  # the torn record is detected, logged and skipped

    # and the controller goes on after the reboot: new commits land after the torn record
    s = Store(state_dir)
    s.load()
    s.commit([session(1000)], {"after": cut})
    state, pending, last_seq = expected
    assert_matches(load(state_dir), ({**state, "after": cut}, [*pending, session(1000)], 1000))


@pytest.mark.parametrize("zero_fill", [False, True], ids=["truncated", "zero-filled"])
def test_power_cut_at_every_byte(scenario: Recorded, tmp_path: Path, zero_fill: bool) -> None:
    for cut in range(len(scenario.data) + 1):
        check_cut(scenario, tmp_path, cut, zero_fill=zero_fill)


@given(cut=st.data(), zero_fill=st.booleans())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_power_cut_in_a_long_journal(long_journal: Recorded, cut: st.DataObject, zero_fill: bool) -> None:
    assert len(long_journal.boundaries) > 250
    position = cut.draw(st.integers(0, len(long_journal.data)), label="cut")
    with tempfile.TemporaryDirectory() as d:
        check_cut(long_journal, Path(d), position, zero_fill=zero_fill)


def test_long_journal_loads_whole(long_journal: Recorded) -> None:
    got = load_bytes(long_journal.data)
    assert_matches(got, long_journal.boundaries[-1][1])
    assert got.skipped == 0


# --- damaged journals ------------------------------------------------------------------------------


def expected_without(rec: Recorded, skip: int) -> tuple[dict[str, Any], list[OutboxRecord], int]:
    """The meaning of the journal when record `skip` is lost and every other one loads."""
    model = Model()
    for i, (op, a, b) in enumerate(rec.ops):
        if i == skip:
            continue
        if op == "commit":
            model.commit(a, b)
        else:
            model.ack(a)
            model.last_seq = max([model.last_seq, *a])  # an ack also says that seq was used
    return model.expect()


@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_single_byte_corruption_skips_only_that_record(scenario: Recorded, data: st.DataObject) -> None:
    index = data.draw(st.integers(1, len(SCENARIO) - 2), label="record")  # a middle record
    start, end = scenario.boundaries[index][0], scenario.boundaries[index + 1][0]
    offset = data.draw(st.integers(start, end - 1), label="offset")
    flip = data.draw(st.integers(1, 255), label="xor")
    damaged = bytearray(scenario.data)
    damaged[offset] ^= flip
    got = load_bytes(bytes(damaged))
    assert got.skipped >= 1
    assert_matches(got, expected_without(scenario, index))


def test_corrupt_record_is_logged(scenario: Recorded, caplog: pytest.LogCaptureFixture) -> None:
    start, end = scenario.boundaries[3][0], scenario.boundaries[4][0]
    damaged = bytearray(scenario.data)
    damaged[(start + end) // 2] ^= 0x55
    with caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        got = load_bytes(bytes(damaged))
    assert got.skipped >= 1
    assert any(r.levelno == logging.ERROR and r.name == STORE_LOGGER for r in caplog.records)
    assert_matches(got, expected_without(scenario, 3))


@given(garbage=st.binary(min_size=1, max_size=300), magic_at=st.lists(st.integers(0, 300), max_size=3))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_garbage_appended(scenario: Recorded, garbage: bytes, magic_at: list[int]) -> None:
    junk = bytearray(garbage)
    for at in magic_at:  # make the reader try to parse headers inside the garbage too
        at = min(at, len(junk))
        junk[at:at] = MAGIC
    with tempfile.TemporaryDirectory() as d:
        write_journal(Path(d), scenario.data + bytes(junk))
        got = load(Path(d))
        assert_matches(got, scenario.boundaries[-1][1])
        if junk.strip(b"\0"):
            assert got.skipped >= 1
        s = Store(d)  # and a commit after the garbage still loads
        s.load()
        s.commit([session(500)], {"later": True})
        state, pending, _ = scenario.boundaries[-1][1]
        assert_matches(load(Path(d)), ({**state, "later": True}, [*pending, session(500)], 500))


@pytest.mark.parametrize("zeros", [1, 9, 10, 4096])
def test_zero_filled_tail_is_not_an_error(scenario: Recorded, zeros: int) -> None:
    got = load_bytes(scenario.data + b"\0" * zeros)
    assert_matches(got, scenario.boundaries[-1][1])
    assert got.skipped == 0


def test_zero_filled_gap_between_records(scenario: Recorded, tmp_path: Path) -> None:
    """A power cut left zeros at the end; the next boot appends after them."""
    write_journal(tmp_path, scenario.data + b"\0" * 100)
    s = Store(tmp_path)
    s.load()
    s.commit([session(77)], {"z": 1})
    state, pending, _ = scenario.boundaries[-1][1]
    got = load(tmp_path)
    assert_matches(got, ({**state, "z": 1}, [*pending, session(77)], 77))
    assert got.skipped == 0


@given(data=st.binary(max_size=2000), magic_at=st.lists(st.integers(0, 2000), max_size=5))
def test_file_of_random_bytes(data: bytes, magic_at: list[int]) -> None:
    junk = bytearray(data)
    for at in magic_at:
        at = min(at, len(junk))
        junk[at:at] = MAGIC
    got = load_bytes(bytes(junk))  # never raises; nothing was ever written, so nothing loads
    assert got.state == {} and got.pending == [] and got.last_seq == 0


def test_empty_file(tmp_path: Path) -> None:
    write_journal(tmp_path, b"")
    assert load(tmp_path) == Loaded({}, [], 0, 0)


def test_directory_in_place_of_the_journal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / JOURNAL_FILE).mkdir()
    with caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        got = load(tmp_path)
    assert got == Loaded({}, [], 0, 0)
    assert any(r.levelno >= logging.ERROR and r.name == STORE_LOGGER for r in caplog.records)


def test_unreadable_journal_symlink_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An OSError other than 'not found' (ELOOP here: works as root too) is logged, not raised."""
    (tmp_path / JOURNAL_FILE).symlink_to(tmp_path / JOURNAL_FILE)
    with pytest.raises(OSError) as info:
        (tmp_path / JOURNAL_FILE).read_bytes()
    assert info.value.errno == errno.ELOOP
    with caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        got = load(tmp_path)
    assert got == Loaded({}, [], 0, 0)
    assert any(r.levelno >= logging.ERROR and r.name == STORE_LOGGER for r in caplog.records)


NOT_A_MAP_BODIES = {
    "empty": b"",
    "break code": b"\xff",
    "truncated map": b"\xa1\x65sta",
    "huge declared array": b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
    "deep nesting": b"\x81" * 5000,
    "bad datetime tag": b"\xc1\x61x",
    "list": cbor2.dumps([{"state": {"evil": 1}}]),
    "int": cbor2.dumps(5),
    "text": cbor2.dumps("state"),
    "bytes": cbor2.dumps(b"\xa1"),
    "null": cbor2.dumps(None),
}


@pytest.mark.parametrize("body", NOT_A_MAP_BODIES.values(), ids=NOT_A_MAP_BODIES.keys())
def test_crc_matches_but_body_is_not_a_cbor_map(tmp_path: Path, body: bytes) -> None:
    good1 = raw_frame(cbor2.dumps({"state": {"a": 1}, "messages": [session(1).plain()]}))
    good2 = raw_frame(cbor2.dumps({"state": {"b": 2}, "acks": [1]}))
    write_journal(tmp_path, good1 + raw_frame(body) + good2)
    got = load(tmp_path)
    assert got.skipped >= 1
    assert got.state == {"a": 1, "b": 2}  # the records around it still load; "evil" never appears
    assert got.pending == [] and got.last_seq == 1


def test_bad_message_fields_are_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = session(1).plain()
    bad_messages = [
        {**good, "seq": "2"},
        {**good, "seq": 2.0},
        {**good, "seq": None},
        {**good, "seq": [2]},
        {**good, "topic": 5},
        {**good, "payload": "text, not bytes"},
        {**good, "kind": None},
        {k: v for k, v in good.items() if k != "kind"},
        {},
        "not a map",
        7,
        None,
        [1, 2],
    ]
    records = [
        raw_frame(cbor2.dumps({"state": {"a": 1}, "messages": [session(1).plain()]})),
        raw_frame(cbor2.dumps({"messages": bad_messages})),
        # every optional key with the wrong type: ignored, never raises
        raw_frame(cbor2.dumps({"state": [1, 2], "messages": "nope", "acks": {"1": 1}, "last_seq": "9"})),
        raw_frame(cbor2.dumps({"acks": ["1", None, 1.0, [1]], "last_seq": 1.5})),
        raw_frame(cbor2.dumps({"unknown": 1, 2: 3})),
        raw_frame(cbor2.dumps({"state": {"b": 2}, "messages": [reservation(3).plain()]})),
    ]
    write_journal(tmp_path, b"".join(records))
    with caplog.at_level(logging.ERROR, logger=STORE_LOGGER):
        got = load(tmp_path)
    assert got.skipped >= len(bad_messages)
    assert got.state == {"a": 1, "b": 2}
    assert got.pending == [session(1), reservation(3)]  # none of the bad ones, and no wrong ack
    assert got.last_seq == 3
    assert any(r.levelno == logging.ERROR for r in caplog.records)


# --- interrupted compaction ------------------------------------------------------------------------


def compacted_bytes(rec: Recorded, tmp: Path) -> bytes:
    write_journal(tmp, rec.data)
    s = Store(tmp)
    s.load()
    s.compact()
    return s.path.read_bytes()


@pytest.mark.parametrize("tmp_kind", ["complete", "empty", "half", "garbage", "older journal"])
def test_crash_during_compaction_leaves_a_stale_tmp(scenario: Recorded, tmp_path: Path, tmp_kind: str) -> None:
    compacted = compacted_bytes(scenario, tmp_path / "copy")
    assert len(compacted) < len(scenario.data)
    stale = {
        "complete": compacted,  # written and fsync'ed, not yet renamed
        "empty": b"",  # created, nothing written
        "half": compacted[: len(compacted) // 2],
        "garbage": b"\x13" * 50,
        "older journal": raw_frame(cbor2.dumps({"state": {"evil": 1}, "messages": [session(999).plain()]})),
    }[tmp_kind]
    d = tmp_path / "state"
    write_journal(d, scenario.data)
    (d / (JOURNAL_FILE + ".tmp")).write_bytes(stale)
    expected = scenario.boundaries[-1][1]
    got = load(d)
    assert_matches(got, expected)  # the tmp is ignored
    assert got.skipped == 0

    s = Store(d)
    s.load()
    s.commit([session(50)], {"next": 1})
    s.compact()  # overwrites the stale tmp and renames it
    assert not (d / (JOURNAL_FILE + ".tmp")).exists()
    state, pending, _ = expected
    assert_matches(load(d), ({**state, "next": 1}, [*pending, session(50)], 50))


def test_crash_right_after_the_rename(scenario: Recorded, tmp_path: Path) -> None:
    """The rename happened (directory not yet fsync'ed): the compacted journal means the same."""
    write_journal(tmp_path / "state", compacted_bytes(scenario, tmp_path / "copy"))
    got = load(tmp_path / "state")
    assert_matches(got, scenario.boundaries[-1][1])
    assert got.skipped == 0


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
    s.commit([meter(n) for n in range(10, 0, -1)] + [session(i) for i in range(1, 9)])
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
@pytest.mark.parametrize("compact_every", [0, 7], ids=["no-compaction", "with-compaction"])
def test_commit_and_ack_from_two_threads(tmp_path: Path, compact_every: int, run: int) -> None:
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
                if compact_every and i % compact_every == 0:
                    s.compact()
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
    got = load(tmp_path)
    assert got.skipped == 0
    assert_matches(got, (state, expected_pending, ops))


# --- automatic compaction --------------------------------------------------------------------------


def test_automatic_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    threshold = 4000
    monkeypatch.setattr(store_module, "COMPACT_AFTER_BYTES", threshold)
    s = Store(tmp_path)
    s.load()
    model = Model()
    shrunk = 0
    previous = 0
    for i in range(1, 301):
        messages = [session(i)] + ([meter(i)] if i % 4 == 0 else [])
        state = {f"part{i % 6}": {"i": i, "pad": "p" * 20}}
        s.commit(messages, state)
        model.commit(messages, state)
        size = s.path.stat().st_size
        assert size <= threshold  # compacted as soon as it grew past the threshold
        shrunk += size < previous
        if i > 2:
            done = [i - 2, METER_KEY_BASE + i - 2]  # the second one only exists every 4th step
            s.ack(done)
            model.ack(done)
        previous = s.path.stat().st_size
    assert shrunk >= 3  # it did compact, more than once
    assert not (tmp_path / (JOURNAL_FILE + ".tmp")).exists()
    got = load(tmp_path)
    assert got.skipped == 0
    assert_matches(got, model.expect())


# --- hypothesis: random commit / ack / compact / reboot sequences ----------------------------------

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
        s = Store(d)
        s.load()
        model = Model()
        seq, meters = 0, 0
        # (end offset of the record, meaning of the journal up to there); reset by compaction
        boundaries = [(0, Model().expect())]
        for _ in range(data.draw(st.integers(1, 25), label="steps")):
            op = data.draw(st.sampled_from(["commit", "commit", "commit", "ack", "ack", "compact", "reboot"]))
            before = s.path.stat().st_size if s.path.exists() else 0
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
                s.commit(messages, state)
                model.commit(messages, state)
            elif op == "ack":
                known = sorted(model.pending)
                seqs = data.draw(st.lists(st.sampled_from(known), max_size=4)) if known else []
                seqs += data.draw(st.lists(st.integers(-5, seq + 5), max_size=2))  # unknown ones too
                s.ack(seqs)
                model.ack(seqs)
            elif op == "compact":
                s.compact()
            else:  # a clean reboot: a fresh Store takes over the directory
                s = Store(d)
                assert_matches(Loaded(*s.load(), s.last_seq, s.skipped_records), model.expect())
            after = s.path.stat().st_size if s.path.exists() else 0
            if op == "compact":
                boundaries = [(0, Model().expect()), (after, model.expect())]
            elif after != before:
                boundaries.append((after, model.expect()))
            else:
                assert boundaries[-1][1] == model.expect()  # nothing written: nothing changed

            assert (s.state, s.pending(), s.last_seq) == model.expect()
            got = load(d)
            assert got.skipped == 0
            assert_matches(got, model.expect())

        if not s.path.exists():
            return
        journal = s.path.read_bytes()
        cut = data.draw(st.integers(0, len(journal)), label="cut")
        (d / JOURNAL_FILE).write_bytes(journal[:cut])
        got = load(d)
        expected = max((b for b in boundaries if b[0] <= cut), key=lambda b: b[0])[1]
        assert_matches(got, expected)
        assert (got.skipped == 0) == (cut in {b[0] for b in boundaries})



def test_a_large_outbox_is_not_rewritten_on_every_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compaction that must keep a large outbox (backend offline) does not repeat on every commit."""
    monkeypatch.setattr(store_module, "COMPACT_AFTER_BYTES", 4000)
    store = Store(tmp_path)
    store.load()
    compactions = 0
    original = store.compact

    def counting() -> None:
        nonlocal compactions
        compactions += 1
        original()

    monkeypatch.setattr(store, "compact", counting)
    for seq in range(1, 201):  # never acked: the outbox grows to ~60 kB, far above the threshold
        store.commit([OutboxRecord(seq=seq, topic="t", payload=b"x" * 300, kind="session")])
    assert compactions <= 8  # doubling: 4 kB, 8 kB, 16 kB, ... not 190 rewrites
    assert [r.seq for r in Store(tmp_path).load()[1]] == list(range(1, 201))
