"""The tests' private broker is really theirs: a port that another process's broker took between
`free_port()` and mosquitto's bind must not leave a test talking to that other broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import broker as broker_module
from tests.support.broker import Broker, free_port, running_broker


def test_a_taken_port_gets_a_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = iter([taken])
        monkeypatch.setattr(broker_module, "free_port", lambda: next(ports, None) or free_port())
        broker = Broker(tmp_path)
        assert broker.port == taken
        with running_broker(broker):
            assert broker.port != taken
            assert broker.proc is not None
            assert broker.proc.poll() is None  # ours, running
            assert b"Address already in use" in broker.log.read_bytes()
