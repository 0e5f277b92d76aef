"""Migration of a charger updated from the journal store (before issue 9) to the SQLite store.

What it is for: such a charger must lose nothing. When `journal.log` exists in the state directory and
`state.db` does not, `Store` (firmware/store.py) calls `import_journal()` once: the journal is replayed
with the journal store's own reader (below, moved here unchanged), written into a new database beside
(`state.db.migrating`, one transaction, rollback-journal mode so that it is one file, fsync'ed) and
renamed into place; then `settle_journal()` renames the journal `journal.log.migrated`. A power cut
leaves either no `state.db` (the import runs again at the next boot) or a complete one.

What it must never do: change, truncate or delete the journal before the database holding its content
is durable, overwrite an earlier `journal.log.migrated`, or raise on a damaged journal: a torn or
corrupt record is logged and skipped, and the rest still loads, exactly as the journal store read it.

Journal format (cbor2, RFC 8949): records `MAGIC | length (u32 BE) | crc32 (u32 BE) | cbor body`; a
body is a map `{"state": {part: value}, "messages": [{"seq", "topic", "payload", "kind"}], "acks":
[seq, ...], "last_seq": int}` (each key optional). Replaying the records in order gives the state parts
(a later value replaces the part), the messages not acknowledged, and the highest seq ever used
(messages, acks and the `last_seq` floor of a compacted journal).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cbor2

log = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.log"
MAGIC: Final = b"\xc7\x1a"
_HEADER = struct.Struct(">2sII")


def frame(body: dict[str, Any]) -> bytes:
    """One journal record (what the journal store wrote; tests build journals with it)."""
    encoded = cbor2.dumps(body)
    return _HEADER.pack(MAGIC, len(encoded), zlib.crc32(encoded)) + encoded


@dataclass(slots=True)
class Journal:
    """What a journal means: the state parts, the pending messages by seq (plain maps with the keys
    seq, topic, payload, kind), the highest seq ever used, and the number of records skipped."""

    state: dict[str, Any] = field(default_factory=dict)
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)
    last_seq: int = 0
    skipped: int = 0


def read_journal(path: Path) -> Journal:
    """Replay the journal at `path`. Raises OSError only when the file cannot be read at all."""
    journal = Journal()
    data = path.read_bytes()
    for body in _records(data, journal):
        _apply(body, journal)
    return journal


def _apply(body: dict[str, Any], journal: Journal) -> None:
    state = body.get("state")
    if isinstance(state, dict):
        journal.state.update(state)
    for item in body.get("messages", ()) if isinstance(body.get("messages"), list) else ():
        if not (isinstance(item, dict) and isinstance(item.get("seq"), int)
                and isinstance(item.get("topic"), str) and isinstance(item.get("payload"), bytes)
                and isinstance(item.get("kind"), str)):
            journal.skipped += 1
            log.error("journal: a message with bad fields was skipped")
            continue
        message = {k: item[k] for k in ("seq", "topic", "payload", "kind")}
        journal.pending[message["seq"]] = message
        journal.last_seq = max(journal.last_seq, message["seq"])
    for seq in body.get("acks", ()) if isinstance(body.get("acks"), list) else ():
        if isinstance(seq, int):
            journal.pending.pop(seq, None)
            journal.last_seq = max(journal.last_seq, seq)
    floor = body.get("last_seq")
    if isinstance(floor, int):
        journal.last_seq = max(journal.last_seq, floor)


def _records(data: bytes, journal: Journal) -> Iterator[dict[str, Any]]:
    pos = 0
    while pos < len(data):
        start = data.find(MAGIC, pos)
        if start < 0:
            if data[pos:].strip(b"\0"):
                journal.skipped += 1
                log.error("journal: %d unreadable bytes at offset %d skipped", len(data) - pos, pos)
            return
        if start > pos and data[pos:start].strip(b"\0"):
            journal.skipped += 1
            log.error("journal: %d unreadable bytes at offset %d skipped", start - pos, pos)
        if start + _HEADER.size > len(data):
            journal.skipped += 1
            log.error("journal: torn record header at offset %d skipped", start)
            return
        _, length, crc = _HEADER.unpack_from(data, start)
        body_start = start + _HEADER.size
        body = data[body_start:body_start + length]
        if len(body) != length or zlib.crc32(body) != crc:
            journal.skipped += 1
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
            journal.skipped += 1
            log.error("journal: record at offset %d is not a CBOR map; skipped", start)
        pos = body_start + length


def fsync_dir(path: Path) -> None:
    """Make renames and new files in the directory `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def import_journal(journal_path: Path, db_path: Path, schema: Iterable[str]) -> Journal:
    """Read the journal and create the database `db_path` from it: the `schema` statements and the
    journal's content, in one transaction. Raises OSError or sqlite3.Error, the journal unchanged."""
    journal = read_journal(journal_path)
    tmp = db_path.with_name(db_path.name + ".migrating")
    for stale in (tmp, tmp.with_name(tmp.name + "-journal")):  # a power cut during an earlier attempt
        stale.unlink(missing_ok=True)
    db = sqlite3.connect(tmp, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = DELETE")  # everything in the one file that is renamed
        db.execute("PRAGMA synchronous = FULL")  # COMMIT fsyncs it
        db.execute("BEGIN IMMEDIATE")
        for statement in schema:
            db.execute(statement)
        db.executemany("INSERT INTO state (part, value) VALUES (?, ?)",
                       [(part, cbor2.dumps(value)) for part, value in journal.state.items()])
        db.executemany("INSERT INTO outbox (seq, topic, payload, kind) VALUES (?, ?, ?, ?)",
                       [(m["seq"], m["topic"], m["payload"], m["kind"]) for m in journal.pending.values()])
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                       [("last_seq", journal.last_seq), ("migrated_from", JOURNAL_FILE)])
        db.execute("COMMIT")
    finally:
        db.close()
    os.replace(tmp, db_path)
    fsync_dir(db_path.parent)
    return journal


def settle_journal(db: sqlite3.Connection, journal_path: Path, db_name: str) -> None:
    """A journal next to the database `db`: renamed if it was imported (a power cut came between the
    import and the rename), else left alone (the database is newer)."""
    if db.execute("SELECT value FROM meta WHERE key = 'migrated_from'").fetchone() is None:
        log.warning("%s next to %s is ignored: the database holds the state", journal_path, db_name)
        return
    try:
        target = retire_journal(journal_path)
    except OSError:
        log.exception("cannot rename %s; it stays and is ignored", journal_path)
        return
    log.info("%s imported; kept as %s", journal_path.name, target.name)


def retire_journal(journal_path: Path) -> Path:
    """Rename an imported journal to `journal.log.migrated` (`.migrated.1` ... if that exists)."""
    target = journal_path.with_name(journal_path.name + ".migrated")
    n = 0
    while target.exists():
        n += 1
        target = journal_path.with_name(f"{journal_path.name}.migrated.{n}")
    os.replace(journal_path, target)
    fsync_dir(journal_path.parent)
    return target
