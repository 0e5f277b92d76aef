"""systemd's notify protocol (firmware/sdnotify.py) with a real unix datagram socket as NOTIFY_SOCKET and
the whole controller on the simulated board: READY=1 once the outputs are safe, STATUS lines,
STOPPING=1 at stop, and WATCHDOG=1 pings that come from the core loop's health: a core task wedged in
an await stops them while every other task goes on, and they resume once it runs again."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from firmware.core.events import DUTY_F, DUTY_X1, Led
from firmware.sdnotify import Notifier
from hal.protocols import PilotSample
from tests.support.broker import free_port
from tests.support.controller import Running, start_controller, write_config

#: The watchdog period given to the controller (WATCHDOG_USEC): pings every 25 ms while healthy.
WATCHDOG_S = 0.1


@dataclass
class Received:
    """What systemd would have received: each datagram with the loop time it arrived, and a hook
    called on arrival (to look at the world at that moment)."""

    messages: list[tuple[float, str]] = field(default_factory=list)
    on_message: Callable[[str], None] | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def lines(self, since: float = 0.0) -> list[str]:
        return [line for at, text in self.messages if at >= since for line in text.split("\n")]

    async def next_line(self, wanted: str, timeout_s: float = 5.0, since: float = 0.0) -> float:
        """Wait for a datagram with `wanted` among its lines (arrived at `since` or later); its arrival time."""
        async with asyncio.timeout(timeout_s):
            while True:
                for at, text in self.messages:
                    if at >= since and wanted in text.split("\n"):
                        return at
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Received]:
    """A bound AF_UNIX datagram socket in NOTIFY_SOCKET, with WATCHDOG_USEC for WATCHDOG_S."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_S * 1e6)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    received = Received()
    loop = asyncio.get_running_loop()

    async def receive() -> None:
        while True:
            text = (await loop.sock_recv(sock, 4096)).decode()
            received.messages.append((loop.time(), text))
            if received.on_message is not None:
                received.on_message(text)
            received.arrived.set()

    task = loop.create_task(receive(), name="systemd")
    try:
        yield received
    finally:
        task.cancel()
        await asyncio.wait([task])
        sock.close()


async def started(tmp_path: Path) -> Running:
    """A controller whose safety sampler comes round well within half of WATCHDOG_S even while idle
    (the default idle pace, 100 ms, needs a WatchdogSec of more than 200 ms; the unit's is 10 s)."""
    return await start_controller(write_config(tmp_path, free_port(), charger_id="CP-NOTIFY",
                                               idle_sample_interval_s=0.01))


async def test_ready_once_the_outputs_are_safe_with_status_then_stopping(
        systemd: Received, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    seen: list[tuple[str, ...]] = []

    def on_message(text: str) -> None:
        if "READY=1" in text.split("\n"):  # the log as it stands when systemd is told
            seen.append(tuple(r.getMessage() for r in caplog.records))

    systemd.on_message = on_message
    running = await started(tmp_path)
    await systemd.next_line("READY=1")
    sim = running.sim
    assert not sim.relay_commanded(1)  # relay open, CP offering no current (F or X1)
    assert sim.duty_pct(1) in (DUTY_F, DUTY_X1)
    (logs_at_ready,) = seen
    assert any(line.startswith("outputs safe") for line in logs_at_ready)
    assert any(line.startswith("controller CP-NOTIFY started") for line in logs_at_ready)
    first = systemd.messages[0][1].split("\n")
    assert first == ["READY=1", "STATUS=1 EVSE(s), backend offline, 0 charging"]  # nothing before READY

    await running.stop()
    stopping_at = await systemd.next_line("STOPPING=1")
    assert systemd.lines().count("READY=1") == 1
    assert "WATCHDOG=1" not in systemd.lines(since=stopping_at)  # the pings end with the controller
    assert "outputs safe; controller stopped" in caplog.messages


async def test_watchdog_pings_come_while_the_core_loop_runs(systemd: Received, tmp_path: Path) -> None:
    running = await started(tmp_path)
    try:
        ready_at = await systemd.next_line("READY=1")
        async with asyncio.timeout(5):
            while systemd.lines().count("WATCHDOG=1") < 5:
                systemd.arrived.clear()
                await systemd.arrived.wait()
        pings = [at for at, text in systemd.messages if text == "WATCHDOG=1"]
        assert pings[0] >= ready_at
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < WATCHDOG_S / 2  # every quarter period: well inside WatchdogSec
    finally:
        await running.stop()


async def test_a_wedged_core_task_stops_the_pings_while_the_other_tasks_run(
        systemd: Received, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    running = await started(tmp_path)
    sim, controller = running.sim, running.controller
    loop = asyncio.get_running_loop()
    wedged = asyncio.Event()
    release = asyncio.Event()

    async def set_led_that_hangs(cid: int, led: Led) -> None:  # an LED driver that never answers
        wedged.set()
        await release.wait()

    try:
        await systemd.next_line("WATCHDOG=1")
        monkeypatch.setattr(sim, "set_led", set_led_that_hangs)
        sim.plug(1, "B")  # A -> B: the core sets the LED, in its own task, and hangs there
        await asyncio.wait_for(wedged.wait(), 5)
        await asyncio.sleep(WATCHDOG_S)  # a ping already under way (core quiet < half a period) may land
        quiet_from = loop.time()
        queued = len(controller.queue)
        await asyncio.sleep(2.5 * WATCHDOG_S)
        assert "WATCHDOG=1" not in systemd.lines(since=quiet_from)  # > 2 periods: systemd would restart
        assert len(controller.queue) > queued  # the pilot tasks still sample; only the core is stuck
        assert any(r.levelno == logging.CRITICAL and "core loop has handled nothing" in r.getMessage()
                   for r in caplog.records)

        release.set()  # the driver answers again: the core catches up and the pings resume
        await systemd.next_line("WATCHDOG=1", since=loop.time())
    finally:
        release.set()
        await running.stop()


async def test_a_wedged_safety_sampler_stops_the_pings(
        systemd: Received, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle core waiting for input is healthy; but if the sampler that feeds it hangs in a board
    read, nothing reads the pilot any more, and the pings must stop although the core is idle."""
    running = await started(tmp_path)
    sim = running.sim
    loop = asyncio.get_running_loop()
    wedged = asyncio.Event()
    release = asyncio.Event()
    read_cp = sim.read_cp

    async def read_that_hangs(cid: int) -> PilotSample:  # an ADC that never answers
        wedged.set()
        await release.wait()
        return await read_cp(cid)

    try:
        await systemd.next_line("WATCHDOG=1")
        monkeypatch.setattr(sim, "read_cp", read_that_hangs)
        await asyncio.wait_for(wedged.wait(), 5)
        await asyncio.sleep(WATCHDOG_S)  # a ping already under way may land
        quiet_from = loop.time()
        await asyncio.sleep(2.5 * WATCHDOG_S)
        assert running.controller.core.waiting  # the core itself is idle, not wedged
        assert "WATCHDOG=1" not in systemd.lines(since=quiet_from)
        release.set()
        await systemd.next_line("WATCHDOG=1", since=loop.time())
    finally:
        release.set()
        await running.stop()


async def test_an_abstract_socket_address_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"charger-firmware-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "4000000"})
        assert notifier.watchdog_s == 4.0
        notifier.ready("1 EVSE(s), backend online, 1 charging")
        notifier.status("1 EVSE(s), backend online, 1 charging")  # unchanged: not sent again
        notifier.stopping()
        sock.settimeout(1)
        assert sock.recv(4096) == b"READY=1\nSTATUS=1 EVSE(s), backend online, 1 charging"
        assert sock.recv(4096).startswith(b"STOPPING=1\n")


async def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled
    assert notifier.watchdog_s is None
    assert not notifier.send("READY=1")
    await asyncio.wait_for(notifier.supervise(lambda: 0.0, lambda: "status"), 1)  # returns at once


def test_a_watchdog_meant_for_another_process_is_not_ours() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert Notifier(env).watchdog_s is None


def test_a_send_that_fails_is_logged_once_and_never_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.DEBUG, logger="firmware.sdnotify"):
        assert not notifier.send("READY=1")
        assert not notifier.send("WATCHDOG=1")
    levels = [r.levelno for r in caplog.records if "could not notify systemd" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG]
