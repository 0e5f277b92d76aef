"""The whole controller in-process on the simulated board: a config for tests, starting and stopping
it, and a running charger with a backend already online."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.app import Controller
from firmware.config import Config, load_config
from firmware.store import Store
from hal.protocols import Meter
from hal.sim import SimBoard
from tests.support.backend import Backend, backend_for, new_charger_id, root_of, wait_online
from tests.support.broker import Broker
from tests.support.builders import evse

FAST = """
[pilot]
sample_interval_s = 0.005
idle_sample_interval_s = {idle_sample_interval_s}
[telemetry]
meter_interval_s = {meter_interval_s}
[auth]
timeout_s = {auth_timeout_s}
offline_policy = "{offline_policy}"
connection_timeout_s = 60
[mqtt]
host = "127.0.0.1"
port = {port}
codec = "{codec}"
reconnect_min_s = 0.05
reconnect_max_s = 0.5
fallback_after_s = {fallback_after_s}
fallback_current_a = {fallback_current_a}
"""


def config_path(directory: Path) -> Path:
    """Where `write_config` writes the config (for a controller started as a program)."""
    return directory / "charger.toml"


def write_config(directory: Path, port: int, *, charger_id: str, evses: str | None = None,
                 mqtt_extra: str = "", **kw: Any) -> Config:  # noqa: ANN401
    """A config for tests; `mqtt_extra` is TOML appended to the [mqtt] table (credentials, [mqtt.tls])."""
    settings = {"meter_interval_s": 0.5, "auth_timeout_s": 1.0, "offline_policy": "local_list_only",
                "codec": "json", "fallback_after_s": 60, "fallback_current_a": 6.0,
                "idle_sample_interval_s": 0.1} | kw
    text = (f'[charger]\nid = "{charger_id}"\nstate_dir = "{directory / "state"}"\n'
            + FAST.format(port=port, **settings) + mqtt_extra + (evses or evse(1)))
    path = config_path(directory)
    path.write_text(text)
    return load_config(path)


@dataclass
class Running:
    controller: Controller
    sim: SimBoard
    config: Config
    task: asyncio.Task[None]

    async def stop(self, grace_s: float = 2.0) -> None:
        """Cancel the controller and wait (`grace_s`) for it to return.

        One cancellation can be lost while the MQTT link connects (Python 3.11's asyncio.wait_for,
        used by aiomqtt, swallows it; see test_link.py::test_stops_on_one_cancel_while_connecting),
        and cancelling the controller again does not help (its TaskGroup is already aborting). So
        that such a run does not hang the suite, the controller's own tasks are then cancelled
        directly."""
        self.task.cancel()
        done, _ = await asyncio.wait({self.task}, timeout=grace_s)
        if not done:
            for task in asyncio.all_tasks():
                frame = getattr(task.get_coro(), "cr_frame", None)
                if frame is not None and frame.f_locals.get("self") is self.controller:
                    task.cancel()
            done, _ = await asyncio.wait({self.task}, timeout=5)
        assert done, "the controller did not stop"
        if not self.task.cancelled() and self.task.exception() is not None:
            raise self.task.exception()  # type: ignore[misc]


def sim_ids(config: Config) -> list[int]:
    return [e.id for e in config.evses]


async def start_controller(config: Config, *, sim_ops: bool = True, store: Store | None = None,
                           meters: dict[int, Meter] | None = None, sim_meters: bool = True,
                           prepare: Callable[[SimBoard], None] | None = None) -> Running:
    """The controller on a simulated board; `sim_ops=False` runs it as on real hardware (`sim=None`:
    the board is still simulated, but the `sim_*` ops answer `unsupported`). `store` and `meters`
    replace the defaults (a journal in `state_dir`, the simulated meters; `sim_meters=False`: the
    board simulates none); `prepare` sets up the simulated world before the controller starts."""
    loop = asyncio.get_running_loop()
    sim = SimBoard(sim_ids(config), clock=loop.time, phases={e.id: e.phases for e in config.evses},
                   meter_ids=None if sim_meters else [])
    if prepare is not None:
        prepare(sim)
    if meters is None:
        meters = {cid: m for cid in sim_ids(config) if (m := sim.meter(cid)) is not None}
    controller = Controller(config, sim, store or Store(config.charger.state_dir), meters=meters,
                            sim=sim if sim_ops else None)
    task = loop.create_task(controller.run(), name="controller")
    await asyncio.wait_for(controller.ready.wait(), 10)
    return Running(controller, sim, config, task)


def plugged(evse_id: int, cp: str = "B", **kw: Any) -> Callable[[SimBoard], None]:  # noqa: ANN401
    """A `prepare` for start_controller: an EV already plugged in at `evse_id` (`kw`: pp_ohms ...)."""
    def prepare(sim: SimBoard) -> None:
        sim.plug(evse_id, cp, **kw)
    return prepare


@contextlib.asynccontextmanager
async def charger_and_backend(broker: Broker, directory: Path, *, sim_ops: bool = True, store: Store | None = None,
                              **kw: Any) -> AsyncIterator[tuple[Running, Backend]]:  # noqa: ANN401
    """A running controller and a backend subscribed to its topics, online already."""
    charger_id = new_charger_id()
    config = write_config(directory, broker.port, charger_id=charger_id, **kw)
    async with backend_for(broker.port, root_of(charger_id)) as backend:
        running = await start_controller(config, sim_ops=sim_ops, store=store)
        try:
            await wait_online(backend, 10)
            await asyncio.wait_for(running.controller.link.connected.wait(), 5)  # its connect sequence is over
            yield running, backend
        finally:
            await running.stop()
