"""Durable state under `charger.state_dir`: one append-only journal of commits (cbor2, RFC 8949).

What must survive a power cut (API.md §2 durable replies, §6 delivery guarantees): reservations, the
local auth list, open sessions, limits, enabled flags, energy and contactor counters, the event
`seq`, and the outbox of SessionEvents and ReservationUpdateStatus not yet acknowledged by the broker.

Every step of the controller that changes any of it becomes **one commit**: the changed parts of the
state and the new outbox messages, written as a single record and fsync'ed. A commit is therefore
atomic: after a power cut either all of it is there or none of it. A message is committed before it
is published; its ack (after the broker's PUBACK) is a later record.

Record: `MAGIC | length (u32 BE) | crc32 (u32 BE) | cbor body`. Body: `{"state": {part: value},
"messages": [{"seq", "topic", "payload", "kind"}], "acks": [seq, ...]}` (each key optional). A torn
or corrupt record is detected by its CRC, logged and skipped (the reader resynchronises on the next
MAGIC): never loaded as data, and the rest still loads. Reading a damaged journal never raises.

The journal is compacted (rewritten atomically: temp file, fsync, rename, fsync of the directory)
into one record holding the whole state and the pending messages once it has grown. It is bounded:
past `max_outbox_records` the oldest *droppable* messages (meter samples) go first; SessionEvents
and ReservationUpdateStatus are never dropped.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2

log = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.log"
MAGIC: Final = b"\xc7\x1a"
_HEADER = struct.Struct(">2sII")
COMPACT_AFTER_BYTES: Final = 1 << 20
#: Meter samples waiting in the outbox are keyed upward from here: below every seq, so they never take a
#: number of the seq sequence (backends detect gaps in it) and replay before the events.
METER_KEY_BASE: Final = -(10**15)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a power cut leaves either the old or the new file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def frame(body: dict[str, Any]) -> bytes:
    encoded = cbor2.dumps(body)
    return _HEADER.pack(MAGIC, len(encoded), zlib.crc32(encoded)) + encoded


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRecord:
    seq: int  # the message's seq; meter samples use keys from METER_KEY_BASE up (they carry no seq)
    topic: str
    payload: bytes
    kind: str  # "session", "reservation" (never dropped) or "meter" (droppable)

    @property
    def droppable(self) -> bool:
        return self.kind == "meter"

    def plain(self) -> dict[str, Any]:
        return {"seq": self.seq, "topic": self.topic, "payload": self.payload, "kind": self.kind}


class Store:
    """The journal. `load()` once at boot, then `commit()` / `ack()`; blocking (use to_thread)."""

    def __init__(self, state_dir: str | os.PathLike[str], *, max_outbox_records: int = 100_000,
                 fsync: bool = True) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / JOURNAL_FILE
        self.max_outbox_records = max_outbox_records
        self.fsync = fsync
        self.state: dict[str, Any] = {}
        self._pending: dict[int, OutboxRecord] = {}
        self.last_seq = 0  # the highest seq ever committed: seq never repeats (API.md §4)
        self.skipped_records = 0
        self.dropped_records = 0
        self._size = 0
        self._compacted_size = 0
        # Only worker threads write (the controller's one writer, and a last commit at shutdown that
        # may overlap a write still under way): one at a time. The event loop never takes this lock.
        self._lock = threading.RLock()

    # --- reading ---------------------------------------------------------------------------------

    def load(self) -> tuple[dict[str, Any], list[OutboxRecord]]:
        """Replay the journal: the state, and the unacknowledged messages in seq order."""
        self.state, self._pending, self.skipped_records = {}, {}, 0
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError:
            log.exception("cannot read %s; starting from an empty state", self.path)
            data = b""
        self._size = len(data)
        for body in self._records(data):
            self._apply(body)
        return dict(self.state), self.pending()

    def _apply(self, body: dict[str, Any]) -> None:
        state = body.get("state")
        if isinstance(state, dict):
            self.state.update(state)
        for item in body.get("messages", ()) if isinstance(body.get("messages"), list) else ():
            try:
                record = OutboxRecord(seq=item["seq"], topic=item["topic"], payload=item["payload"], kind=item["kind"])
                if not (isinstance(record.seq, int) and isinstance(record.topic, str)
                        and isinstance(record.payload, bytes) and isinstance(record.kind, str)):
                    raise TypeError("field types")
            except (KeyError, TypeError):
                self.skipped_records += 1
                log.error("journal: a message with bad fields was skipped")
                continue
            self._pending[record.seq] = record
            self.last_seq = max(self.last_seq, record.seq)
        for seq in body.get("acks", ()) if isinstance(body.get("acks"), list) else ():
            if isinstance(seq, int):
                self._pending.pop(seq, None)
                self.last_seq = max(self.last_seq, seq)
        floor = body.get("last_seq")
        if isinstance(floor, int):
            self.last_seq = max(self.last_seq, floor)

    def _records(self, data: bytes) -> Iterator[dict[str, Any]]:
        pos = 0
        while pos < len(data):
            start = data.find(MAGIC, pos)
            if start < 0:
                if data[pos:].strip(b"\0"):
                    self.skipped_records += 1
                    log.error("journal: %d unreadable bytes at offset %d skipped", len(data) - pos, pos)
                return
            if start > pos and data[pos:start].strip(b"\0"):
                self.skipped_records += 1
                log.error("journal: %d unreadable bytes at offset %d skipped", start - pos, pos)
            if start + _HEADER.size > len(data):
                self.skipped_records += 1
                log.error("journal: torn record header at offset %d skipped", start)
                return
            _, length, crc = _HEADER.unpack_from(data, start)
            body_start = start + _HEADER.size
            body = data[body_start:body_start + length]
            if len(body) != length or zlib.crc32(body) != crc:
                self.skipped_records += 1
                log.error("journal: torn or corrupt record at offset %d skipped", start)
                pos = start + len(MAGIC)
                continue
            try:
                decoded = cbor2.loads(body)
            except Exception:  # noqa: BLE001 - the CRC matched but the body is not CBOR: skip it
                decoded = None
            if isinstance(decoded, dict):
                yield decoded
            else:
                self.skipped_records += 1
                log.error("journal: record at offset %d is not a CBOR map; skipped", start)
            pos = body_start + length

    # --- writing ---------------------------------------------------------------------------------

    def commit(self, messages: list[OutboxRecord] | None = None, state: dict[str, Any] | None = None, *,
               acks: list[int] | None = None) -> list[int]:
        """Durably record state parts and new outbox messages, atomically (one fsync'ed record), with
        acknowledgements that came meanwhile. Returns the seqs of meter samples dropped by the bound."""
        with self._lock:
            messages = messages or []
            acks = [s for s in dict.fromkeys(acks or ()) if s in self._pending]
            if not messages and not state:
                if acks:
                    self.ack(acks)
                return []
            body: dict[str, Any] = {}
            if state:
                body["state"] = state
            if messages:
                body["messages"] = [m.plain() for m in messages]
            if acks:
                body["acks"] = acks
            self._write(frame(body), sync=True)
            if state:
                self.state.update(state)
            for seq in acks:
                del self._pending[seq]
            for record in messages:
                self._pending[record.seq] = record
                self.last_seq = max(self.last_seq, record.seq)
            dropped = self._enforce_bound()
            # compact once the journal is mostly history; not again right after a compaction that
            # had to keep a large outbox (that would rewrite it on every commit)
            if self._size > max(COMPACT_AFTER_BYTES, 2 * self._compacted_size):
                self.compact()
            return dropped

    def ack(self, seqs: list[int]) -> None:
        """The broker acknowledged these messages. Not fsync'ed: a lost ack only means a message is
        delivered once more after a power cut, which QoS 1 allows (API.md §6)."""
        with self._lock:
            seqs = [s for s in dict.fromkeys(seqs) if s in self._pending]  # a seq named twice: acked once
            if not seqs:
                return
            self._write(frame({"acks": seqs}), sync=False)
            for seq in seqs:
                del self._pending[seq]

    def _write(self, data: bytes, *, sync: bool) -> None:
        with open(self.path, "ab") as f:
            f.write(data)
            f.flush()
            if sync and self.fsync:
                self.sync_file(f.fileno())
        self._size += len(data)

    def sync_file(self, fd: int) -> None:
        """Flush a commit to the medium (a test or benchmark may slow this down to model an SD card)."""
        os.fsync(fd)

    def pending(self) -> list[OutboxRecord]:
        with self._lock:
            return [self._pending[s] for s in sorted(self._pending)]

    def compact(self) -> None:
        """Rewrite the journal as one record: the whole state and the pending messages."""
        with self._lock:
            body = {"state": self.state, "messages": [m.plain() for m in self.pending()], "last_seq": self.last_seq}
            data = frame(body)
            write_atomic(self.path, data)
            self._size = self._compacted_size = len(data)

    def _enforce_bound(self) -> list[int]:
        excess = len(self._pending) - self.max_outbox_records
        if excess <= 0:
            return []
        droppable = [s for s in sorted(self._pending) if self._pending[s].droppable][:excess]
        if droppable:
            log.warning("outbox full (%d messages): dropping the %d oldest meter samples",
                        len(self._pending), len(droppable))
            self.dropped_records += len(droppable)
            self.ack(droppable)
        if len(self._pending) > self.max_outbox_records:
            log.error("outbox over its bound with %d messages that are never dropped; keeping them",
                      len(self._pending))
        return droppable
