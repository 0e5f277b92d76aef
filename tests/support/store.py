"""The controller's store as tests use it: what it made durable, and a store on a slow disk.

Imports only firmware.store (a child process of tests/test_store.py imports it and must start fast)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from firmware.store import Store


class SlowStore(Store):
    """A store whose every durable commit takes `fsync_s` longer (a worn SD card: 10 ms to several hundred
    ms), spent in the writing thread inside the transaction, as a slow fsync would be. `fsync_s` is a
    number of seconds, or a function that gives one for each commit."""

    def __init__(self, state_dir: str | os.PathLike[str], fsync_s: float | Callable[[], float]) -> None:
        super().__init__(state_dir)
        self.fsync_s = fsync_s

    def durable_write_delay(self) -> None:
        time.sleep(self.fsync_s() if callable(self.fsync_s) else self.fsync_s)


def stored_state(state_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """What the controller has made durable in `state_dir`, read as the next boot would read it."""
    return dict(Store(state_dir).load()[0])


def stored_bytes(state_dir: str | os.PathLike[str]) -> bytes:
    """Everything written to `state_dir` (to look for a message that must be durable): the payloads of
    the pending messages as the next boot reads them, then the files as they are. The files matter for a
    message acknowledged meanwhile: payloads are raw BLOBs in state.db's WAL, and a deleted row's bytes
    stay in the WAL frames written before, until a checkpoint lets SQLite reuse the WAL."""
    reader = Store(state_dir)
    try:
        pending = b"".join(r.payload for r in reader.load()[1])
    finally:
        reader.close()
    return pending + b"".join(p.read_bytes() for p in sorted(Path(state_dir).iterdir()) if p.is_file())
