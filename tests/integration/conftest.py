"""Fixtures of the integration tests: a real `mosquitto` on a free loopback port, the whole controller
in-process on the simulated board, and a backend client speaking API.md over aiomqtt. The parts
themselves are in tests/support/; the Modbus fixtures (servers, meters, pty_pair) are shared by the meter
tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from firmware.config import MeterUrl as ConfigMeterUrl
from hal.meter import ModbusMeter

from tests.support.backend import Backend
from tests.support.broker import Broker, broker, own_broker
from tests.support.controller import Running, charger_and_backend
from tests.support.leaks import no_leaked_tasks
from tests.support.modbus import Servers, socat_pty_pair

__all__ = ["broker", "charger", "no_leaked_tasks", "own_broker"]  # pytest fixtures; no_leaked_tasks is autouse


@pytest.fixture
async def charger(broker: Broker, tmp_path: Path) -> AsyncIterator[tuple[Running, Backend]]:
    """A running controller with the default config, and a backend online with it."""
    async with charger_and_backend(broker, tmp_path) as pair:
        yield pair


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    """pymodbus servers started by the test, stopped at its end."""
    s = Servers()
    try:
        yield s
    finally:
        await s.stop_all()


@pytest.fixture
def meters() -> Iterator[Callable[..., ModbusMeter]]:
    """`meters(model, url, **kw)` makes a ModbusMeter that is closed at the end of the test."""
    made: list[ModbusMeter] = []

    def make(model: str, url: str, **kwargs: object) -> ModbusMeter:
        m = ModbusMeter(model, ConfigMeterUrl.parse(url), **kwargs)  # type: ignore[arg-type]
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals from `socat`: a null-modem cable for the RTU tests (socat missing: an
    error, never a skip)."""
    async with socat_pty_pair(tmp_path) as pair:
        yield pair
