"""A private mosquitto on a free loopback port (never a public broker), and its pytest fixtures.

If mosquitto is missing the tests fail (never skip) and say how to install it; `./tools/test`
installs it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO_HINT = "mosquitto is not installed: run ./tools/test (it installs it) or `apt-get install mosquitto`"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_path() -> str:
    path = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail(MOSQUITTO_HINT)
    return path


PLAIN_SETTINGS = "allow_anonymous true\npersistence false\nmax_queued_messages 100000\nset_tcp_nodelay true\n"


class Broker:
    """A private mosquitto on 127.0.0.1:<free port>, anonymous, no persistence; can be restarted."""

    def __init__(self, directory: Path, settings: str = PLAIN_SETTINGS) -> None:
        self.settings = settings  # mosquitto.conf after the `listener` line
        self.directory = directory
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.port = self._new_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_once = False

    def _new_port(self) -> int:
        self.port = free_port()
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n{self.settings}")
        return self.port

    def start(self) -> None:
        """Start mosquitto and wait until *it* listens. Connecting to the port is not proof: another
        process's broker may hold it (two free_port() calls can return the same port), and then this one
        exits with "Address already in use". A fresh broker gets a new port; a restarted one keeps its
        port (its clients reconnect there), so a port taken meanwhile fails the test."""
        for _ in range(1 if self.started_once else 3):
            started = self.log.stat().st_size if self.log.exists() else 0
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen([mosquitto_path(), "-c", str(self.conf)], stdout=log, stderr=log)
            if self._running(started):
                self.started_once = True
                return
            if b"Address already in use" not in self.log.read_bytes()[started:]:
                break
            self._new_port()
        pytest.fail(f"mosquitto did not start on port {self.port}: see {self.log}")

    def _running(self, log_offset: int) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if b" running" in self.log.read_bytes()[log_offset:]:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            time.sleep(0.02)
        return False

    def kill(self) -> None:
        """`kill -9`: the broker dies without closing a single connection cleanly."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@contextlib.contextmanager
def running_broker(broker: Broker) -> Iterator[Broker]:
    """`broker` started for the block, stopped after it (also when the block fails)."""
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """One broker for the session; tests use distinct charger ids so their topics never meet."""
    with running_broker(Broker(tmp_path_factory.mktemp("mosquitto"))) as b:
        yield b


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker of the test's own, for tests that stop and restart it."""
    with running_broker(Broker(tmp_path)) as b:
        yield b
