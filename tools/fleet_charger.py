"""The fleet simulator's chargers: the real controller on the simulated board, one per charger id.

What it is for: each simulated charger of `tools/fleet.py` is the whole program, built as
`python -m firmware --sim --config FILE` builds it (`firmware.boards.build_board` / `build_meters`,
`firmware.app.Controller`), but in-process, many to one event loop. Each has its own charger id
(its own MQTT client id and topic tree, API.md §1), its own generated config file and its own state
directory (durable store, flight recorder, console socket). The generated config has fleet-like
intervals (meter telemetry every `telemetry_s`) and can be amended key by key (`--set`).

What it must never do: bypass the controller (nothing here touches its core, board or store once it
runs: the EV side is driven over MQTT), or leave a controller running when the run ends.

Standard: API.md §9 (the config file), firmware/config/settings.py (keys and ranges).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from dataclasses import dataclass, field
from pathlib import Path

from firmware.app import Controller
from firmware.boards import build_board, build_meters
from firmware.config import load_config
from firmware.store import Store

log = logging.getLogger("fleet.charger")


@dataclass(frozen=True, slots=True)
class ChargerSpec:
    """What every generated config has in common."""

    host: str
    port: int
    evses: int
    codec: str = "cbor"
    prefix: str = "chargers"
    telemetry_s: float = 15.0
    #: fsync every commit (a real charger's own SD card); off by default: a fleet shares one disk, whose
    #: fsyncs would queue behind each other as no real charger's do (the SQLite work is the same)
    fsync: bool = False
    #: extra keys, "section.key" -> TOML literal (e.g. "pilot.sample_interval_s" -> "0.02")
    overrides: dict[str, str] = field(default_factory=dict)


def parse_override(text: str) -> tuple[str, str]:
    """`section.key=value` (value a TOML literal) -> ("section.key", "value"); ValueError when malformed."""
    key, sep, value = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name or not value.strip():
        raise ValueError(f"{text!r}: expected section.key=value, e.g. pilot.sample_interval_s=0.02")
    return f"{section}.{name}", value.strip()


def config_text(charger_id: str, state_dir: Path, spec: ChargerSpec) -> str:
    """The TOML config of one charger (API.md §9)."""
    sections: dict[str, dict[str, str]] = {
        "charger": {"id": f'"{charger_id}"', "state_dir": f'"{state_dir}"'},
        "mqtt": {"host": f'"{spec.host}"', "port": str(spec.port), "prefix": f'"{spec.prefix}"',
                 "codec": f'"{spec.codec}"', "keepalive_s": "60"},
        "telemetry": {"meter_interval_s": str(spec.telemetry_s)},
        # A fleet's pace: CP/PP of an idle EVSE once a second (a sim op still wakes the sampler at once),
        # of a charging one every 50 ms (the slowest the config allows; the 30 ms debounce then ends at
        # the next sample), the simulated meters read as often as they are published. What the backend
        # sees is the same; the relay's reaction time, which a fleet does not measure, is longer. This
        # is what lets hundreds of chargers share one machine (`--set` overrides any of it).
        "pilot": {"sample_interval_s": "0.05", "idle_sample_interval_s": "1.0"},
        "board": {"sim_meter_poll_interval_s": str(spec.telemetry_s)},
    }
    for key, value in spec.overrides.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    text = "".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in keys.items()) + "\n"
                   for name, keys in sections.items())
    stale_s = 3 * spec.telemetry_s  # a missed meter read or two is no MeterLost
    return text + "".join(f'[[evse]]\nid = {i}\nconnectors = ["sType2"]\nmax_current_a = 32\nphases = 3\n'
                          f'meter_stale_after_s = {stale_s}\n\n' for i in range(1, spec.evses + 1))


def raise_fd_limit() -> int:
    """Raise the soft limit of open files to the hard limit (each charger holds a socket, its store's
    files and its console socket); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class FleetCharger:
    """One simulated charger: its config file, its state directory, its controller task."""

    def __init__(self, charger_id: str, directory: Path, spec: ChargerSpec) -> None:
        self.charger_id = charger_id
        self.directory = directory
        self.config_path = directory / "charger.toml"
        self.evse_ids = list(range(1, spec.evses + 1))
        self.fsync = spec.fsync
        self.controller: Controller | None = None
        self.task: asyncio.Task[None] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_text(charger_id, directory / "state", spec))

    async def start(self) -> None:
        """Build the controller as `charger-firmware --sim --config FILE` does and run it until `stop`;
        returns once it has booted (outputs safe, CP measured, tasks running)."""
        config = load_config(self.config_path)
        loop = asyncio.get_running_loop()
        board, sim = build_board(config, sim=True, clock=loop.time)
        self.controller = Controller(config, board, Store(config.charger.state_dir, fsync=self.fsync),
                                     meters=build_meters(config, board), sim=sim)
        self.task = loop.create_task(self.controller.run(), name=f"charger-{self.charger_id}")
        ready = loop.create_task(self.controller.ready.wait())
        await asyncio.wait([ready, self.task], return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
            self.task.result()  # raises what stopped the controller
            raise RuntimeError(f"{self.charger_id}: the controller stopped while booting")

    @property
    def failed(self) -> BaseException | None:
        """What stopped the controller before it was asked to (None while it runs)."""
        if self.task is None or not self.task.done() or self.task.cancelled():
            return None
        return self.task.exception()


async def stop_all(chargers: list[FleetCharger], timeout_s: float = 60.0) -> None:
    """Stop every controller as SIGTERM does (outputs safe, staged state committed), at once."""
    tasks = [c.task for c in chargers if c.task is not None and not c.task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            log.warning("%d controller(s) did not stop within %.0f s", len(pending), timeout_s)
