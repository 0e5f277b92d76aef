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


class Broker:
    """A private mosquitto on 127.0.0.1:<free port>, anonymous, no persistence; can be restarted."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "max_queued_messages 100000\nset_tcp_nodelay true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.directory / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([mosquitto_path(), "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: see {self.directory / 'mosquitto.log'}")
            time.sleep(0.02)
        pytest.fail(f"mosquitto did not listen on port {self.port}")

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
