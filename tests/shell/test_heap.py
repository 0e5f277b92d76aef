"""The heap after boot (`firmware.aio.settle_heap`): the objects alive once the controller has booted
live as long as the process, and are kept out of the garbage collector's full passes."""

from __future__ import annotations

import gc
from pathlib import Path

from tests.support.builders import evse
from tests.support.controller import start_controller, write_config


async def test_the_heap_made_at_boot_is_kept_out_of_the_collector_s_reach(tmp_path: Path) -> None:
    """A full garbage collection walks every tracked object with the loop (safety lane included)
    stalled; the objects alive after boot are frozen (`gc.freeze`), so it walks only what came since."""
    frozen_before = gc.get_freeze_count()
    running = await start_controller(write_config(tmp_path, 1, charger_id="CP-HEAP", evses=evse(1)))
    try:
        assert gc.get_freeze_count() > frozen_before
    finally:
        await running.stop()
    # stopped: the collector may reclaim it again (else a process that starts many controllers, the
    # tests and the fleet simulator, keeps every stopped one's cycles, sockets included, for ever)
    assert gc.get_freeze_count() == 0
