"""A damaged `state.db` at boot (issue 9): the outputs are driven safe and the error names the file.

The controller drives the outputs safe before it loads the store (DESIGN.md principle 3) and again on
its way out; `Store.load()` raises StoreError (firmware/store.py) instead of starting from an empty
state that would lose the outbox. These tests pin what happens today, in-process and as a program.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from firmware.app import Controller
from firmware.core.events import DUTY_F, Led
from firmware.store import DB_FILE, Store, StoreError
from hal.sim import SimBoard
from tests.support.broker import free_port
from tests.support.controller import write_config
from tests.support.program import run_firmware

GARBAGE = b"not a database: a bad sector, or a file copied over it\n" * 200


async def test_a_corrupt_database_leaves_the_outputs_safe(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), charger_id="CORRUPT-1")
    state_dir = Path(config.charger.state_dir)
    state_dir.mkdir(parents=True)
    (state_dir / DB_FILE).write_bytes(GARBAGE)
    loop = asyncio.get_running_loop()
    board = SimBoard([1], clock=loop.time)
    await board.set_closed(1, True)  # as a crashed process may have left them
    await board.set_duty(1, 53.3)
    controller = Controller(config, board, Store(state_dir), meters={}, sim=board)
    with pytest.raises(StoreError, match=f"{DB_FILE} is not a readable SQLite database") as info:
        await asyncio.wait_for(controller.run(), 10)
    assert "move it away" in str(info.value)
    assert not board.relay_commanded(1)
    assert board.duty_pct(1) == DUTY_F
    assert board.led(1) is Led.FAULT
    assert (state_dir / DB_FILE).read_bytes() == GARBAGE  # kept for the technician, never overwritten


def test_the_program_stops_with_outputs_safe_and_names_the_file(tmp_path: Path) -> None:
    """`charger-firmware --sim` on a corrupt database: exit status 1 (stopped on an error), the error
    line names the file and what to do, and the outputs were driven safe."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / DB_FILE).write_bytes(GARBAGE)
    config = tmp_path / "c.toml"
    config.write_text(f'[charger]\nid = "CORRUPT-2"\nstate_dir = "{state_dir}"\n[mqtt]\nport = {free_port()}\n'
                      '[[evse]]\nid = 1\n')
    start = time.monotonic()
    run = run_firmware("--sim", "--config", str(config), timeout=60)
    text = run.stdout + run.stderr
    assert run.returncode == 1, text
    assert time.monotonic() - start < 30, "it stops; it does not wait for anything"
    assert f"{DB_FILE} is not a readable SQLite database ({state_dir / DB_FILE}: file is not a database)" in text
    assert "move it away to start with an empty state" in text
    assert "outputs safe; controller stopped" in text
    assert (state_dir / DB_FILE).read_bytes() == GARBAGE
