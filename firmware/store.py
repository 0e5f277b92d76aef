"""Durable state under `charger.state_dir`: a snapshot of what must survive a power cut, and the
outbox of messages the backend must receive (API.md §2 durable replies, §6 delivery guarantees).

Two files, both cbor2 (RFC 8949):

* `state.cbor` — the snapshot (reservations, local auth list, limits, enabled flags, counters, the
  event `seq`, open sessions). Written atomically: temp file, fsync, rename, fsync of the directory.
  The previous generation is kept as `state.prev.cbor`; each file carries a CRC-32 of its body, so a
  corrupt file is detected, logged, and the previous generation is used instead.
* `outbox.log` — an append-only journal. Each record is `MAGIC | length (u32 BE) | crc32 (u32 BE) |
  cbor body`. A body is either a message `{"seq", "topic", "payload", "kind"}` or an ack
  `{"ack": seq}`. A torn or corrupt record is logged and skipped (the reader resynchronises on the
  next MAGIC), never loaded as data. The journal is compacted (rewritten atomically) when acks make
  up most of it. It is bounded: when full, the oldest *droppable* records (meter samples) go first;
  SessionEvents and ReservationUpdateStatus are never dropped.

Reading a damaged store never raises: it returns what could be read. Writing raises `OSError` only
when the disk itself fails; callers then treat the change as not durable.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2

log = logging.getLogger(__name__)

STATE_FILE: Final = "state.cbor"
STATE_PREV_FILE: Final = "state.prev.cbor"
OUTBOX_FILE: Final = "outbox.log"
MAGIC: Final = b"\xc7\x1a"
_HEADER = struct.Struct(">2sII")
STATE_FORMAT: Final = 1


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


def _wrap(body: bytes) -> bytes:
    return cbor2.dumps({"format": STATE_FORMAT, "crc32": zlib.crc32(body), "body": body})


def _unwrap(data: bytes) -> dict[str, Any] | None:
    try:
        outer = cbor2.loads(data)
        body = outer["body"]
        if not isinstance(body, bytes) or zlib.crc32(body) != outer["crc32"]:
            return None
        state = cbor2.loads(body)
    except Exception:  # noqa: BLE001 - any damage means "not loadable", never a crash
        return None
    return state if isinstance(state, dict) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRecord:
    seq: int
    topic: str
    payload: bytes
    kind: str  # "session", "reservation" (never dropped) or "meter" (droppable)

    @property
    def droppable(self) -> bool:
        return self.kind == "meter"


class Store:
    """The state snapshot and the outbox journal in one directory."""

    def __init__(self, state_dir: str | os.PathLike[str], *, max_outbox_records: int = 100_000) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_outbox_records = max_outbox_records
        self._pending: dict[int, OutboxRecord] = {}
        self._journal_records = 0
        self.last_seq = 0  # the highest seq ever journalled (seq never repeats, API.md §4)
        self.skipped_records = 0
        self.dropped_records = 0

    # --- snapshot --------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        """The newest undamaged snapshot, or {} when there is none."""
        for name in (STATE_FILE, STATE_PREV_FILE):
            path = self.dir / name
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError:
                log.exception("cannot read %s", path)
                continue
            state = _unwrap(data)
            if state is not None:
                if name == STATE_PREV_FILE:
                    log.warning("%s is damaged; using the previous generation %s", STATE_FILE, name)
                return state
            log.error("%s is damaged (bad CRC or not CBOR); ignoring it", path)
        return {}

    def save_state(self, state: dict[str, Any]) -> None:
        """Durably replace the snapshot (blocking: call through asyncio.to_thread)."""
        data = _wrap(cbor2.dumps(state))
        current = self.dir / STATE_FILE
        if current.exists():
            os.replace(current, self.dir / STATE_PREV_FILE)
        write_atomic(current, data)

    # --- outbox ----------------------------------------------------------------------------------

    def load_outbox(self) -> list[OutboxRecord]:
        """Replay the journal: the unacknowledged messages in `seq` order."""
        self._pending.clear()
        self._journal_records = 0
        path = self.dir / OUTBOX_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError:
            log.exception("cannot read %s", path)
            return []
        for body in self._records(data):
            self._journal_records += 1
            if "ack" in body and isinstance(body["ack"], int):
                self._pending.pop(body["ack"], None)
                self.last_seq = max(self.last_seq, body["ack"])
                continue
            try:
                record = OutboxRecord(seq=body["seq"], topic=body["topic"], payload=body["payload"],
                                      kind=body["kind"])
                if not (isinstance(record.seq, int) and isinstance(record.topic, str)
                        and isinstance(record.payload, bytes) and isinstance(record.kind, str)):
                    raise TypeError("field types")
            except (KeyError, TypeError):
                self.skipped_records += 1
                log.error("outbox record with bad fields skipped")
                continue
            self._pending[record.seq] = record
            self.last_seq = max(self.last_seq, record.seq)
        return self.pending()

    def _records(self, data: bytes) -> Iterator[dict[str, Any]]:
        pos = 0
        while pos < len(data):
            start = data.find(MAGIC, pos)
            if start < 0:
                if data[pos:].strip(b"\0"):
                    self.skipped_records += 1
                    log.error("outbox: %d stray bytes at offset %d skipped", len(data) - pos, pos)
                return
            if start > pos:
                self.skipped_records += 1
                log.error("outbox: %d unreadable bytes at offset %d skipped", start - pos, pos)
            if start + _HEADER.size > len(data):
                self.skipped_records += 1
                log.error("outbox: torn record header at offset %d skipped", start)
                return
            _, length, crc = _HEADER.unpack_from(data, start)
            body_start = start + _HEADER.size
            body = data[body_start:body_start + length]
            if len(body) != length or zlib.crc32(body) != crc:
                self.skipped_records += 1
                log.error("outbox: torn or corrupt record at offset %d skipped", start)
                pos = start + len(MAGIC)
                continue
            try:
                decoded = cbor2.loads(body)
            except Exception:  # noqa: BLE001 - CRC matched but the body is not CBOR: skip it
                decoded = None
            if isinstance(decoded, dict):
                yield decoded
            else:
                self.skipped_records += 1
                log.error("outbox: record at offset %d is not a CBOR map; skipped", start)
            pos = body_start + length

    def _append(self, bodies: list[dict[str, Any]]) -> None:
        chunk = bytearray()
        for body in bodies:
            encoded = cbor2.dumps(body)
            chunk += _HEADER.pack(MAGIC, len(encoded), zlib.crc32(encoded)) + encoded
        path = self.dir / OUTBOX_FILE
        with open(path, "ab") as f:
            f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        self._journal_records += len(bodies)

    def append(self, records: list[OutboxRecord]) -> None:
        """Durably add messages before they are published (blocking: use asyncio.to_thread)."""
        if not records:
            return
        self._append([{"seq": r.seq, "topic": r.topic, "payload": r.payload, "kind": r.kind} for r in records])
        for record in records:
            self._pending[record.seq] = record
            self.last_seq = max(self.last_seq, record.seq)
        self._enforce_bound()

    def ack(self, seqs: list[int]) -> None:
        """The broker acknowledged these messages; they will not be replayed."""
        seqs = [s for s in seqs if s in self._pending]
        if not seqs:
            return
        self._append([{"ack": s} for s in seqs])
        for seq in seqs:
            del self._pending[seq]
        if self._journal_records > 1000 and self._journal_records > 4 * max(len(self._pending), 1):
            self.compact()

    def pending(self) -> list[OutboxRecord]:
        return [self._pending[s] for s in sorted(self._pending)]

    def compact(self) -> None:
        """Rewrite the journal with only the unacknowledged messages (atomic). An ack of the last
        seq comes first, so the highest seq survives even when nothing is pending."""
        floor = cbor2.dumps({"ack": self.last_seq})
        chunk = bytearray(_HEADER.pack(MAGIC, len(floor), zlib.crc32(floor)) + floor)
        for record in self.pending():
            encoded = cbor2.dumps({"seq": record.seq, "topic": record.topic, "payload": record.payload,
                                   "kind": record.kind})
            chunk += _HEADER.pack(MAGIC, len(encoded), zlib.crc32(encoded)) + encoded
        write_atomic(self.dir / OUTBOX_FILE, bytes(chunk))
        self._journal_records = len(self._pending) + 1

    def _enforce_bound(self) -> None:
        excess = len(self._pending) - self.max_outbox_records
        if excess <= 0:
            return
        droppable = [s for s in sorted(self._pending) if self._pending[s].droppable][:excess]
        if droppable:
            log.warning("outbox full (%d records): dropping the %d oldest meter samples",
                        len(self._pending), len(droppable))
            self.dropped_records += len(droppable)
            self.ack(droppable)
        if len(self._pending) > self.max_outbox_records:
            log.error("outbox over its bound with %d undroppable messages; keeping them all", len(self._pending))
