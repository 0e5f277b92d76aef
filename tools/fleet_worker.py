"""One fleet process: its chargers, its backend side, its drivers, and its reports (tools/fleet.py).

What it is for: `run_worker` starts this process's share of the fleet in batches (the backend
subscribes to a batch's topic trees, its controllers boot and connect, the backend waits for each
`online: true` and sends each charger its local auth list), then lets one driver per EVSE play its
days until the duration is over or `stop` is set, reporting progress every `progress_s`. At the end
it measures (RSS over the RSS before any charger started, CPU and messages over the driving window),
stops the drivers and the controllers, and returns its final report. Reports are plain dicts
(`tools/fleet_stats.py` adds up those of several processes).

What it must never do: run past `stop` (a stop during start-up ends it at once, with what it has),
or measure the start-up burst as the steady rate (rates are over the driving window only).

Standard: RSS from /proc/self/status (VmRSS), CPU from `time.process_time` (every thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tools.fleet_backend import FleetBackend
from tools.fleet_charger import ChargerSpec, FleetCharger, stop_all
from tools.fleet_driver import DayClock, EvseDriver, local_auth_list
from tools.fleet_pattern import DayPlanner, Visit
from tools.fleet_stats import Counters

log = logging.getLogger("fleet.worker")

Report = Callable[[dict[str, object]], None]
ONLINE_TIMEOUT_S = 60.0
LAG_PROBE_S = 0.25


@dataclass
class WorkerSpec:
    index: int
    charger_ids: list[str]
    charger: ChargerSpec
    state_dir: Path
    seed: int = 1
    day_s: float = 600.0
    start_h: float = 6.0
    script: list[Visit] | None = None
    duration_s: float | None = None
    progress_s: float = 10.0
    batch: int = 25
    gc_freeze: bool = False  # gc.freeze() at every progress tick: full collections skip what was there then
    counters: Counters = field(default_factory=Counters)


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class GcPauses:
    """The cyclic garbage collector's pauses (ms), by generation: a full collection walks every
    object, and a fleet process holds many (each controller's flight recorder ring)."""

    def __init__(self) -> None:
        self.pauses_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses_ms[info["generation"]].append((time.perf_counter() - self._started) * 1000)

    def summary(self) -> dict[str, object]:
        return {f"gen{g}": {"n": len(v), "max_ms": round(max(v), 1) if v else None, "total_ms": round(sum(v), 1)}
                for g, v in self.pauses_ms.items()}


class Worker:
    def __init__(self, spec: WorkerSpec, stop: asyncio.Event, report: Report) -> None:
        self.spec = spec
        self.stop = stop
        self.report = report
        self.counters = spec.counters
        self.chargers: list[FleetCharger] = []
        self.started_mono = time.monotonic()
        self.rss_base_mib = rss_mib()
        self._last = (time.monotonic(), 0, 0, time.process_time())
        self.gc = GcPauses()

    async def run(self) -> dict[str, object]:
        gc.callbacks.append(self.gc)
        try:
            return await self._run()
        finally:
            gc.callbacks.remove(self.gc)

    async def _run(self) -> dict[str, object]:
        spec = self.spec
        async with FleetBackend(spec.charger.host, spec.charger.port, prefix=spec.charger.prefix,
                                codec=spec.charger.codec, counters=self.counters,
                                name=f"fleet-backend-{spec.index}-{spec.charger_ids[0]}") as backend:
            progress = asyncio.get_running_loop().create_task(self._progress(backend))
            lag = asyncio.get_running_loop().create_task(self._lag_probe())
            drivers: list[asyncio.Task[None]] = []
            try:
                await self._start(backend)
                window = (time.monotonic(), self.counters.msgs_in, self.counters.msgs_out, time.process_time())
                if not self.stop.is_set():
                    drivers = self._drive(backend)
                    with contextlib.suppress(TimeoutError):  # the duration is over
                        async with asyncio.timeout(spec.duration_s):
                            await self.stop.wait()
                final = self._final(backend, window)  # measured while every charger still runs
            finally:
                progress.cancel()
                lag.cancel()
                for task in drivers:
                    task.cancel()
                if drivers:
                    await asyncio.wait(drivers, timeout=10)
                await stop_all(self.chargers)
        return final

    async def _start(self, backend: FleetBackend) -> None:
        """Connect the chargers batch by batch, so neither the broker nor this loop is flooded."""
        spec = self.spec
        for first in range(0, len(spec.charger_ids), spec.batch):
            if self.stop.is_set():
                return
            ids = spec.charger_ids[first:first + spec.batch]
            await backend.watch(ids)
            batch = [FleetCharger(cid, spec.state_dir / cid, spec.charger) for cid in ids]
            self.chargers += batch
            results = await asyncio.gather(*(c.start() for c in batch), return_exceptions=True)
            for charger, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    self.counters.errors["charger_start"] += 1
                    log.error("%s did not start: %s", charger.charger_id, result)
            await self._online(backend, ids)
            await asyncio.gather(*(backend.request(c.charger_id, "set_local_auth_list",
                                                   local_auth_list(c.charger_id, c.evse_ids)) for c in batch))

    async def _online(self, backend: FleetBackend, ids: list[str]) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ONLINE_TIMEOUT_S):
                while not (set(ids) <= backend.online) and not self.stop.is_set():
                    backend.online_changed.clear()
                    await backend.online_changed.wait()
        missing = sorted(set(ids) - backend.online)
        if missing and not self.stop.is_set():
            self.counters.errors["charger_offline"] += len(missing)
            log.error("%d charger(s) not online within %.0f s: %s", len(missing), ONLINE_TIMEOUT_S, missing[:5])

    def _drive(self, backend: FleetBackend) -> list[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        clock = DayClock(t0=loop.time(), day_s=self.spec.day_s, start_h=self.spec.start_h)
        return [loop.create_task(EvseDriver(backend, c.charger_id, e, DayPlanner(self.spec.seed, c.charger_id, e,
                                                                                  self.spec.script), clock).run())
                for c in self.chargers if c.failed is None for e in c.evse_ids]

    async def _lag_probe(self) -> None:
        """How late the event loop runs a timer (ms): the loop's saturation, seen from inside."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            self.counters.loop_lag_ms.append((loop.time() - due) * 1000)

    async def _progress(self, backend: FleetBackend) -> None:
        while True:
            await asyncio.sleep(self.spec.progress_s)
            if self.spec.gc_freeze:
                gc.freeze()
            now, cpu = time.monotonic(), time.process_time()
            then, msgs_in, msgs_out, cpu_then = self._last
            elapsed = max(now - then, 1e-9)
            c = self.counters
            self.report({"type": "progress", "worker": self.spec.index, "elapsed_s": now - self.started_mono,
                         "online": len(backend.online), "rate_in": (c.msgs_in - msgs_in) / elapsed,
                         "rate_out": (c.msgs_out - msgs_out) / elapsed, "cpu_pct": 100 * (cpu - cpu_then) / elapsed,
                         "errors_total": sum(c.errors.values()), "sessions_completed": c.events["SessionFinished"],
                         "rss_delta_mib": rss_mib() - self.rss_base_mib, "rtts_ms": c.take_rtts(),
                         "loop_lag_ms": c.take_lag()})
            self._last = (now, c.msgs_in, c.msgs_out, cpu)

    def _final(self, backend: FleetBackend, window: tuple[float, int, int, float]) -> dict[str, object]:
        start, msgs_in, msgs_out, cpu = window
        c = self.counters
        started = sum(1 for ch in self.chargers if ch.controller is not None and ch.failed is None)
        return {"type": "final", "worker": self.spec.index, "chargers": len(self.spec.charger_ids),
                "started": started, "online": len(backend.online),
                "window_s": time.monotonic() - start, "window_msgs_in": c.msgs_in - msgs_in,
                "window_msgs_out": c.msgs_out - msgs_out, "window_cpu_s": time.process_time() - cpu,
                "rss_base_mib": self.rss_base_mib, "rss_delta_mib": rss_mib() - self.rss_base_mib,
                "rtts_ms": c.take_rtts(), "loop_lag_ms": c.take_lag(), "gc": self.gc.summary(), **c.snapshot()}


async def run_worker(spec: WorkerSpec, stop: asyncio.Event, report: Report) -> dict[str, object]:
    """Run this process's share of the fleet until the duration is over or `stop` is set."""
    return await Worker(spec, stop, report).run()
