"""Durable state under `charger.state_dir`: one SQLite database, `state.db` (stdlib `sqlite3`).

What must survive a power cut (API.md §2 durable replies, §6 delivery guarantees): reservations, the
local auth list, open sessions, limits, enabled flags, energy and contactor counters, the event
`seq`, and the outbox of SessionEvents and ReservationUpdateStatus not yet acknowledged by the broker.

The standard followed is DESIGN.md principle 6, the way EVerest and openeo keep their state: SQLite in
WAL mode with `synchronous=FULL`, and every step of the controller that changes any of it is **one
transaction** (`commit()`): the changed state parts, the new outbox messages and the acks that came
meanwhile. `commit()` returns only once COMMIT has fsync'ed the write-ahead log, so a message is
durable before it is published, and after a power cut either all of a commit is there or none of it
(SQLite's WAL recovery ignores the frames of a transaction whose commit frame is missing or torn).
An ack alone (`ack()`) is committed with `synchronous=NORMAL`: it becomes durable with the next
fsync'ed commit or checkpoint; a lost ack only means one more delivery, which QoS 1 allows.

Schema (`PRAGMA user_version` 1). A technician reads it with `sqlite3 -readonly state.db`:

    state(part TEXT PRIMARY KEY, value BLOB)   one row per state part; value in CBOR (RFC 8949)
    outbox(seq INTEGER PRIMARY KEY, topic TEXT, payload BLOB, kind TEXT)
                                               the messages not yet acknowledged; payload as sent
    meta(key TEXT PRIMARY KEY, value)          last_seq: the highest seq ever committed;
                                               migrated_from: "journal.log" after a migration

The outbox is bounded: past `max_outbox_records` the oldest *droppable* messages (meter samples, keyed
from METER_KEY_BASE up) are deleted in the same transaction; SessionEvents and
ReservationUpdateStatus are never dropped. A charger updated from the journal store is migrated once
(`journal.log` is imported, then renamed `journal.log.migrated`: firmware/store_migrate.py).

What it must never do: lose or reorder a committed message, let `last_seq` go back (a seq never
repeats, API.md §4), drop a message that is not droppable, or write into a database it could not
read: a damaged `state.db` raises StoreError naming the file and what to do, and is left as it is.
It is blocking and is called from worker threads only; the event loop calls only `load()`, through
`asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cbor2

from firmware.core.errors import ChargerError
from firmware.store_migrate import JOURNAL_FILE, fsync_dir, import_journal, settle_journal

log = logging.getLogger(__name__)

DB_FILE: Final = "state.db"
SCHEMA_VERSION: Final = 1
#: Meter samples waiting in the outbox are keyed upward from here: below every seq, so they never take a
#: number of the seq sequence (backends detect gaps in it) and replay before the events.
METER_KEY_BASE: Final = -(10**15)
BUSY_TIMEOUT_S: Final = 10.0  # a technician's sqlite3 holding the write lock: wait, then StoreError
WAL_SIZE_LIMIT_BYTES: Final = 4 << 20  # the WAL is truncated to this after a checkpoint that let it grow

SCHEMA: Final = (  # the statements that create an empty database (also run by the migration)
    "CREATE TABLE state (part TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL) WITHOUT ROWID",
    ("CREATE TABLE outbox (seq INTEGER PRIMARY KEY NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL,"
     " kind TEXT NOT NULL)"),
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value) WITHOUT ROWID",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class StoreError(ChargerError):
    """The durable state cannot be read or written; the message names the file and what to do."""


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


def _busy(exc: sqlite3.Error) -> bool:
    """Locked by another connection (not damage): worth a retry, never a reason to give up on the file."""
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


_UNDECODABLE: Final = object()


def _decoded(value: bytes) -> object:
    """A state part's value, or _UNDECODABLE when its bytes are not CBOR."""
    try:
        return cbor2.loads(value)
    except Exception:  # noqa: BLE001 - the CBOR decoder raises many types on damaged bytes
        return _UNDECODABLE


def _refuse_foreign_tables(db: sqlite3.Connection) -> None:
    """A database without our schema version that holds tables is another program's: not ours to take."""
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise sqlite3.DatabaseError("it holds tables of another program, not a charger's state")


class Store:
    """The database. `load()` once at boot, then `commit()` / `ack()`; blocking (use to_thread)."""

    def __init__(self, state_dir: str | os.PathLike[str], *, max_outbox_records: int = 100_000,
                 fsync: bool = True) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / DB_FILE
        self.max_outbox_records = max_outbox_records
        self.fsync = fsync
        self.state: dict[str, Any] = {}
        self._pending: dict[int, OutboxRecord] = {}
        self.last_seq = 0  # the highest seq ever committed: seq never repeats (API.md §4)
        self.dropped_records = 0
        self._db: sqlite3.Connection | None = None
        self._loaded = False
        self._broken: StoreError | None = None  # set once the file proved unreadable: never written then
        # One connection, used by worker threads only (the controller's one writer, and a last commit at
        # shutdown that may overlap a write still under way): one at a time. The loop never takes it.
        self._lock = threading.Lock()

    # --- reading ---------------------------------------------------------------------------------

    def load(self) -> tuple[dict[str, Any], list[OutboxRecord]]:
        """The state parts, and the unacknowledged messages in seq order; sets `last_seq`."""
        with self._lock:
            self._read()
            return dict(self.state), self._sorted()

    def pending(self) -> list[OutboxRecord]:
        """The committed messages not yet acknowledged, in seq order (meter samples first)."""
        with self._lock:
            if not self._loaded:
                self._read()
            return self._sorted()

    def _sorted(self) -> list[OutboxRecord]:
        return [self._pending[s] for s in sorted(self._pending)]

    def _read(self) -> None:
        db = self._connection()
        try:
            db.execute("BEGIN")  # one snapshot for the three tables
            try:
                check = [str(row[0]) for row in db.execute("PRAGMA quick_check")]
                if check != ["ok"]:
                    raise sqlite3.DatabaseError("quick_check: " + "; ".join(check[:3]))
                parts = db.execute("SELECT part, value FROM state").fetchall()
                rows = db.execute("SELECT seq, topic, payload, kind FROM outbox ORDER BY seq").fetchall()
                floor = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
            finally:
                db.execute("COMMIT")
            pending = {}
            for seq, topic, payload, kind in rows:
                if not (isinstance(seq, int) and isinstance(topic, str) and isinstance(payload, bytes)
                        and isinstance(kind, str)):
                    raise sqlite3.DatabaseError(f"outbox row {seq!r} has fields of the wrong type")
                pending[seq] = OutboxRecord(seq=seq, topic=topic, payload=payload, kind=kind)
            last_seq = floor[0] if floor is not None else 0
            if not isinstance(last_seq, int):
                raise sqlite3.DatabaseError(f"meta last_seq is {last_seq!r}, not an integer")
        except sqlite3.Error as exc:
            if _busy(exc):
                raise self._locked(exc) from exc
            self._broken = self._unreadable(exc)
            raise self._broken from exc
        state = {}
        for part, value in parts:
            decoded = _decoded(value)
            if decoded is _UNDECODABLE:  # one damaged part is skipped (and rewritten by the next commit)
                log.error("%s: state part %r does not decode as CBOR; skipped", self.path, part)
            else:
                state[part] = decoded
        self.state, self._pending, self._loaded = state, pending, True
        self.last_seq = max([last_seq, *(s for s in pending if s > 0)])

    def _unreadable(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self.path.name} is not a readable SQLite database ({self.path}: {exc}); move it "
                          "away to start with an empty state (it holds the state and the messages not yet "
                          "delivered: keep it for analysis)")

    def _locked(self, exc: BaseException) -> StoreError:
        return StoreError(f"{self.path} is locked by another program ({exc}); close it (a sqlite3 shell must "
                          "open it with -readonly while the controller runs)")

    # --- opening and migrating -------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._broken is not None:  # a new exception each time: re-raising one would stack tracebacks
            raise StoreError(str(self._broken)) from self._broken.__cause__
        if self._db is None:
            try:
                self._db = self._open()
            except StoreError as exc:
                if not isinstance(exc.__cause__, sqlite3.Error) or not _busy(exc.__cause__):
                    self._broken = exc
                raise
        return self._db

    def _open(self) -> sqlite3.Connection:
        journal = self.dir / JOURNAL_FILE
        if journal.exists() and not self.path.exists():
            self._migrate(journal)
        try:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._unreadable(exc) from exc
        try:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.DatabaseError(f"journal_mode stays {mode!r}, not 'wal'")
            db.execute(f"PRAGMA synchronous = {'FULL' if self.fsync else 'OFF'}")
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._create_schema(db)
            elif version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than this firmware's "
                                            f"({SCHEMA_VERSION})")
            if journal.exists():
                settle_journal(db, journal, self.path.name)
        except sqlite3.Error as exc:
            db.close()
            raise (self._locked(exc) if _busy(exc) else self._unreadable(exc)) from exc
        return db

    def _create_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] == 0:  # not created meanwhile by another one
                _refuse_foreign_tables(db)
                for statement in SCHEMA:
                    db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        fsync_dir(self.dir)  # the new files' directory entries

    def _migrate(self, journal_path: Path) -> None:
        try:
            journal = import_journal(journal_path, self.path, SCHEMA)
        except (OSError, sqlite3.Error, cbor2.CBOREncodeError) as exc:
            raise StoreError(f"cannot migrate {journal_path} into {self.path} ({exc}); the journal is unchanged: "
                             "free space or fix permissions in the state directory") from exc
        log.info("migrated %s into %s: %d state parts, %d pending messages, last seq %d (%d damaged "
                 "records skipped)", journal_path.name, self.path.name, len(journal.state),
                 len(journal.pending), journal.last_seq, journal.skipped)

    # --- writing ---------------------------------------------------------------------------------

    def commit(self, messages: list[OutboxRecord] | None = None, state: dict[str, Any] | None = None, *,
               acks: list[int] | None = None) -> list[int]:
        """Durably record state parts and new outbox messages, atomically (one fsync'ed transaction), with
        acknowledgements that came meanwhile. Returns the seqs of meter samples dropped by the bound."""
        messages = list(messages or ())
        state = dict(state or {})
        encoded = [(part, cbor2.dumps(value)) for part, value in state.items()]
        with self._lock:
            self._ready()
            acked = [s for s in dict.fromkeys(acks or ()) if s in self._pending]
            if not messages and not state:
                if acked:
                    self._ack(acked)
                return []
            new = {m.seq: m for m in messages}  # a seq twice in one commit: the later one, as before
            dropped = self._over_bound(set(acked), new)
            last_seq = max([self.last_seq, *(s for s in new if s > 0)])

            def write(db: sqlite3.Connection) -> None:
                db.executemany("INSERT OR REPLACE INTO state (part, value) VALUES (?, ?)", encoded)
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in [*acked, *dropped]])
                db.executemany("INSERT OR REPLACE INTO outbox (seq, topic, payload, kind) VALUES (?, ?, ?, ?)",
                               [(m.seq, m.topic, m.payload, m.kind) for m in new.values() if m.seq not in dropped])
                if last_seq != self.last_seq:
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_seq', ?)", (last_seq,))

            self._transaction(write, durable=True)
            # memory follows only what COMMIT made durable
            self.state.update(state)
            for seq in acked:
                del self._pending[seq]
            self._pending.update(new)
            for seq in dropped:
                del self._pending[seq]
            self.last_seq = last_seq
            self.dropped_records += len(dropped)
            return dropped

    def ack(self, seqs: list[int]) -> None:
        """The broker acknowledged these messages. Not fsync'ed: a lost ack only means a message is
        delivered once more after a power cut, which QoS 1 allows (API.md §6)."""
        with self._lock:
            self._ready()
            seqs = [s for s in dict.fromkeys(seqs) if s in self._pending]  # a seq named twice: acked once
            if seqs:
                self._ack(seqs)

    def _ack(self, seqs: list[int]) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

        self._transaction(write, durable=False)
        for seq in seqs:
            del self._pending[seq]

    def durable_write_delay(self) -> None:
        """Called once in every durable commit, in the writing thread, just before COMMIT (a test or
        benchmark overrides it to model a slow SD card; the write lock is held meanwhile)."""

    def checkpoint(self) -> bool:
        """Copy the WAL into the database file and truncate the WAL (SQLite also checkpoints by itself
        every 1000 pages, without the truncation). False if a reader kept it from completing."""
        with self._lock:
            db = self._connection()
            try:
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error as exc:
                raise StoreError(f"cannot checkpoint {self.path} ({exc})") from exc
            return not busy

    def close(self) -> None:
        """Close the connection (the last one to close also checkpoints and removes the WAL)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db, self._loaded = None, False

    def _ready(self) -> None:
        """Open the database, and read it into memory if `load()` has not (a commit without a load)."""
        if not self._loaded:
            self._read()

    def _transaction(self, write: Callable[[sqlite3.Connection], None], *, durable: bool) -> None:
        db = self._connection()
        relaxed = not durable and self.fsync
        try:
            if relaxed:
                db.execute("PRAGMA synchronous = NORMAL")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    write(db)
                    if durable and self.fsync:
                        self.durable_write_delay()
                    db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    raise
            finally:
                if relaxed:
                    db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path} ({exc}); nothing of this commit was stored") from exc

    def _over_bound(self, acked: set[int], new: dict[int, OutboxRecord]) -> list[int]:
        """The oldest droppable messages to delete so that the outbox stays within its bound."""
        count = len(self._pending) - len(acked) + sum(1 for s in new if s not in self._pending or s in acked)
        excess = count - self.max_outbox_records
        if excess <= 0:
            return []
        candidates = {s for s, r in self._pending.items() if r.droppable and s not in acked and s not in new}
        candidates |= {s for s, r in new.items() if r.droppable}
        dropped = sorted(candidates)[:excess]
        if dropped:
            log.warning("outbox full (%d messages): dropping the %d oldest meter samples", count, len(dropped))
        if count - len(dropped) > self.max_outbox_records:
            log.error("outbox over its bound with %d messages that are never dropped; keeping them",
                      count - len(dropped))
        return dropped
