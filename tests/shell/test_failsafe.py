"""Fail-safe shutdown of the shell (DESIGN.md principle 3, STYLE.md B3/B7): on a crash of a
safety-relevant task, on SIGTERM/SIGINT and at start, every relay opens and CP goes to F."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from firmware.app import Controller
from firmware.failsafe import failsafe
from firmware.core.auth import LocalAuthEntry, LocalAuthStatus
from firmware.core.errors import HardwareError
from firmware.core.events import DUTY_F, Led
from firmware.store import Store
from hal.protocols import PilotSample
from hal.sim import SimBoard
from tests.support.broker import free_port
from tests.support.controller import write_config
from tests.support.program import REPO, firmware_command, run_firmware

class AdcDies(SimBoard):
    """The simulated board whose CP ADC stops answering after `healthy` reads (a bus fault)."""

    def __init__(self, *args: object, healthy: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.healthy = healthy

    async def read_cp(self, cid: int) -> PilotSample:
        self.healthy -= 1
        if self.healthy < 0:
            raise HardwareError("ADC on SPI0 does not answer")
        return await super().read_cp(cid)


class EverythingFails(SimBoard):
    """Every output fails in its own way; each attempt is recorded."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.tried: list[tuple[str, int]] = []

    async def set_closed(self, cid: int, closed: bool) -> None:
        self.tried.append(("relay", cid))
        raise HardwareError("relay driver gone")

    async def set_duty(self, cid: int, duty_pct: float) -> None:
        self.tried.append(("duty", cid))
        await asyncio.sleep(10)  # hangs: bounded by the per-step timeout

    async def set_led(self, cid: int, led: Led) -> None:
        self.tried.append(("led", cid))
        raise RuntimeError("unexpected")


ALL_STEPS = [(kind, cid) for cid in (1, 2) for kind in ("relay", "duty", "led")]


async def test_a_dead_adc_ends_fail_safe(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_port(), charger_id="FAILSAFE-1")
    loop = asyncio.get_running_loop()
    board = AdcDies([1], clock=loop.time, healthy=60)
    controller = Controller(config, board, Store(config.charger.state_dir), meters={}, sim=board)
    controller.charger.local_list.apply(1, True, [LocalAuthEntry(id_token="AA11", status=LocalAuthStatus.ACCEPTED)])
    board.plug(1, "C")
    board.token(1, "AA11")
    task = loop.create_task(controller.run())
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(task, 10)
    assert info.group_contains(HardwareError)
    assert not board.relay_commanded(1)
    assert board.duty_pct(1) == DUTY_F
    assert board.led(1) is Led.FAULT


async def test_failsafe_is_bounded_and_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    board = EverythingFails([1, 2], clock=lambda: 0.0)
    start = time.monotonic()
    await failsafe(board, [1, 2])
    await failsafe(board, [1, 2])  # idempotent
    assert time.monotonic() - start < 2 * 2 * 3 * 0.5 + 1
    assert board.tried == ALL_STEPS * 2  # every step tried, relays first, whatever failed before
    assert caplog.text.count("failsafe: open relay") == 4
    assert caplog.text.count("failsafe: CP F") == 4  # the hanging step timed out, was logged, and the rest ran
    assert caplog.text.count("failsafe: LED fault") == 4


async def test_failsafe_tries_every_step_when_cancelled_then_is_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    """A cancellation (SIGTERM during the fail-safe) is not swallowed, but no output is skipped."""
    board = EverythingFails([1, 2], clock=lambda: 0.0)
    task = asyncio.create_task(failsafe(board, [1, 2]))
    await asyncio.sleep(0.1)  # in the first hanging duty step
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert board.tried == ALL_STEPS
    assert caplog.text.count("failsafe: CP F 1 cancelled") == 1  # the step under way when it came
    assert caplog.text.count("failsafe: CP F 2 failed") == 1  # the later ones still ran


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_outputs_safe(tmp_path: Path, sig: signal.Signals) -> None:
    """`charger-firmware --sim` with no broker: runs, then a signal ends it with status 0."""
    config = tmp_path / "c.toml"
    config.write_text(f'[charger]\nid = "SIG"\nstate_dir = "{tmp_path / "state"}"\n[mqtt]\nport = {free_port()}\n'
                      '[[evse]]\nid = 1\n')
    proc = subprocess.Popen(firmware_command("--sim", "--config", str(config)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), name="read-firmware", daemon=True)
    reader.start()
    # Signal once the missing broker has been logged (the first connect attempt is over): before that,
    # a loaded machine could stop the program before it says anything about the broker.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any("unreachable" in line for line in lines):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.wait(timeout=15)
    reader.join(timeout=5)
    proc.stdout.close()
    text = "".join(lines)
    assert proc.returncode == 0, text
    assert "outputs safe; controller stopped" in text
    assert "Traceback" not in text
    assert text.count("unreachable") == 1, "the missing broker is logged once, not in a loop"


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[charger]\nid = "X"\n[[evse]]\nid = 1\n')
    bad = tmp_path / "bad.toml"
    bad.write_text('[charger]\nid = "X"\n[[evse]]\nid = 1\nmax_curent_a = 16\n')
    ok = run_firmware("--check-config", str(good))
    assert ok.returncode == 0
    assert "OK" in ok.stdout
    fail = run_firmware("--check-config", str(bad))
    assert fail.returncode == 2
    assert "evse[0].max_curent_a" in fail.stderr
    assert "Traceback" not in fail.stderr
    run = run_firmware("--sim", "--config", str(bad))
    assert run.returncode == 2
    assert "max_curent_a" in run.stderr
    assert "Traceback" not in run.stderr


def test_without_sim_the_missing_hardware_backends_are_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[charger]\nid = "HW"\nstate_dir = "{tmp_path}"\n[[evse]]\nid = 1\n')
    run = run_firmware("--config", str(config), env=dict(os.environ))
    assert run.returncode != 0
    assert "--sim" in run.stderr
    assert "Traceback" not in run.stderr
