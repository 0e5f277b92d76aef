"""Fixtures of the integration tests: a real `mosquitto` on a free loopback port, the whole controller
in-process on the simulated board, and a backend client speaking API.md over aiomqtt. The parts
themselves are in tests/support/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.backend import Backend
from tests.support.broker import Broker, broker, own_broker
from tests.support.controller import Running, charger_and_backend
from tests.support.leaks import no_leaked_tasks

__all__ = ["broker", "charger", "no_leaked_tasks", "own_broker"]  # pytest fixtures; no_leaked_tasks is autouse


@pytest.fixture
async def charger(broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[Running, Backend]]:
    """A running controller with the default config, and a backend online with it."""
    async with charger_and_backend(broker, tmp_path) as pair:
        yield pair
