"""Fleet simulator: N simulated chargers of M EVSEs each, the real controller, against one MQTT broker.

    python tools/fleet.py --chargers N --evses M --broker HOST:PORT [--procs K] [--duration S] [--json FILE]

Each charger is the real `firmware.app.Controller` on the simulated board (`hal.sim.SimBoard`) with
its own charger id (`{id-prefix}-0001` ...), config and state directory, so it speaks the whole of
API.md. A backend side in each process (`tools/fleet_backend.py`) plays a day of visits per EVSE
(`tools/fleet_pattern.py`, `tools/fleet_driver.py`): arrivals, card taps, app starts, unknown cards
the backend accepts, reservations honoured or missed, RCD trips and recovery. The EV side is driven
over MQTT with the sim ops (API.md §8), as a backend test harness would. With `--procs K` the
chargers are split among K child processes (this script again, with `--worker-index`) whose JSON
reports this process adds up.

It prints a progress line to stderr every `--progress-s` and, at the end (after `--duration`, or on
SIGINT/SIGTERM: a clean stop), the summary: messages per second to and from the chargers, RSS per
charger, CPU, command round trips (publish to reply, p50/p99), sessions, reservations, errors; with
`--json FILE` also as JSON.

What it must never do: talk to a broker other than the one given, model a charger itself (the
controller is the charger), or assert anything about time: it reports figures. The broker must
allow enough connections (mosquitto: `max_connections -1`; see the README's fleet section).

Standard: API.md (the contract the chargers speak); figures as tools/bench/ reports them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.fleet_stats import progress_line, summarize, summary_text  # noqa: E402

log = logging.getLogger("fleet")


def _broker(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT")
    return host, int(port)


def _positive(kind: type[int] | type[float]) -> Any:  # noqa: ANN401 - an argparse type
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text}: must be positive")
        return value
    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tools/fleet.py", description=__doc__.splitlines()[0])
    p.add_argument("--chargers", type=_positive(int), required=True, help="number of simulated chargers")
    p.add_argument("--evses", type=_positive(int), required=True, help="EVSEs per charger")
    p.add_argument("--broker", type=_broker, required=True, metavar="HOST:PORT")
    p.add_argument("--procs", type=_positive(int), default=1, help="processes to split the chargers among")
    p.add_argument("--duration", type=_positive(float), metavar="S",
                   help="seconds of driving after every charger is online (default: until SIGINT/SIGTERM)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the summary as JSON")
    p.add_argument("--seed", type=int, default=1, help="seed of the random daily patterns")
    p.add_argument("--day-s", type=_positive(float), default=600.0, help="real seconds per simulated day")
    p.add_argument("--start-hour", type=float, default=6.0, help="simulated hour the run starts at")
    p.add_argument("--script", type=Path, metavar="FILE",
                   help="a scripted day for every EVSE (JSON list of visits) instead of random ones")
    p.add_argument("--state-dir", type=Path, help="where the chargers' state goes (default: a temporary "
                   "directory, removed at the end)")
    p.add_argument("--id-prefix", default="fleet", help="charger ids are PREFIX-0001, PREFIX-0002, ...")
    p.add_argument("--batch", type=_positive(int), default=25, help="chargers connected at once")
    p.add_argument("--telemetry-s", type=_positive(float), default=15.0, help="meter sample interval per EVSE")
    p.add_argument("--codec", choices=["cbor", "json"], default="cbor")
    p.add_argument("--fsync", action="store_true", help="fsync every store commit, as a charger on its own "
                   "SD card does (default off: the chargers share one disk here, whose fsyncs would queue)")
    p.add_argument("--gc-freeze", action=argparse.BooleanOptionalAction, default=True,
                   help="gc.freeze() every --progress-s (default on): the garbage collector's full passes then skip "
                   "older objects; without it they stall a process of many chargers for 100s of ms")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="an extra config key for every charger (a TOML literal), e.g. pilot.sample_interval_s=0.02")
    p.add_argument("--progress-s", type=_positive(float), default=10.0, help="progress line interval")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # a child process of --procs
    return p


def split(ids: list[str], parts: int) -> list[list[str]]:
    """`ids` in `parts` contiguous chunks whose sizes differ by at most one."""
    size, extra = divmod(len(ids), parts)
    chunks, start = [], 0
    for n in range(parts):
        end = start + size + (1 if n < extra else 0)
        chunks.append(ids[start:end])
        start = end
    return [c for c in chunks if c]


def _charger_ids(args: argparse.Namespace) -> list[str]:
    return [f"{args.id_prefix}-{n:04d}" for n in range(1, args.chargers + 1)]


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def _worker(args: argparse.Namespace, index: int, state_dir: Path, report: Any) -> dict[str, object]:  # noqa: ANN401
    """This process's share of the fleet (imported here: the parent of --procs needs no controller)."""
    from tools.fleet_charger import ChargerSpec, parse_override, raise_fd_limit
    from tools.fleet_pattern import load_script
    from tools.fleet_worker import WorkerSpec, run_worker

    raise_fd_limit()
    stop = asyncio.Event()
    _stop_on_signals(stop)
    host, port = args.broker
    charger = ChargerSpec(host=host, port=port, evses=args.evses, codec=args.codec, telemetry_s=args.telemetry_s,
                          fsync=args.fsync,
                          overrides=dict(parse_override(o) for o in args.overrides))
    spec = WorkerSpec(index=index, charger_ids=split(_charger_ids(args), args.procs)[index], charger=charger,
                      state_dir=state_dir, seed=args.seed, day_s=args.day_s, start_h=args.start_hour,
                      script=load_script(args.script) if args.script else None, duration_s=args.duration,
                      progress_s=args.progress_s, batch=args.batch, gc_freeze=args.gc_freeze)
    return await run_worker(spec, stop, report)


class Aggregate:
    """The parent's view: the latest progress of each worker, every round trip, the final reports."""

    def __init__(self, args: argparse.Namespace, workers: int) -> None:
        self.args = args
        self.workers = workers
        self.latest: dict[int, dict[str, object]] = {}
        self.rtts_ms: dict[str, list[float]] = {}
        self.interval_ms: list[float] = []
        self.lag_ms: list[float] = []
        self.interval_lag_ms: list[float] = []
        self.finals: list[dict[str, object]] = []

    def _take_rtts(self, report: dict[str, object]) -> None:
        rtts = report.get("rtts_ms")
        if isinstance(rtts, dict):
            for op, values in rtts.items():
                self.rtts_ms.setdefault(str(op), []).extend(values)
                self.interval_ms.extend(values)
        lag = report.get("loop_lag_ms")
        if isinstance(lag, list):
            self.lag_ms.extend(lag)
            self.interval_lag_ms.extend(lag)

    def report(self, report: dict[str, object]) -> None:
        self._take_rtts(report)
        if report.get("type") == "final":
            self.finals.append(report)
            return
        self.latest[int(str(report.get("worker", 0)))] = report
        if len(self.latest) == self.workers:  # every worker has reported this round
            elapsed = max(float(str(r.get("elapsed_s", 0))) for r in self.latest.values())
            print(progress_line(elapsed, list(self.latest.values()), self.interval_ms, self.args.chargers,
                                self.interval_lag_ms), file=sys.stderr, flush=True)
            self.latest.clear()
            self.interval_ms, self.interval_lag_ms = [], []

    def summary(self) -> dict[str, object]:
        return summarize(self.finals, self.rtts_ms, evses_per_charger=self.args.evses, procs=self.workers,
                         loop_lag_ms=self.lag_ms)


async def _children(args: argparse.Namespace, state_dir: Path, aggregate: Aggregate) -> int:
    """Run `--procs` children (this script with --worker-index) and read their JSON lines."""
    argv = [a for a in sys.argv[1:]]
    procs = [await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).resolve()), *argv, "--worker-index", str(n), "--state-dir",
        str(state_dir), stdout=asyncio.subprocess.PIPE) for n in range(aggregate.workers)]
    stop = asyncio.Event()
    _stop_on_signals(stop)

    async def forward_stop() -> None:
        await stop.wait()
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)

    async def read(proc: asyncio.subprocess.Process) -> int:
        assert proc.stdout is not None  # noqa: S101
        async for line in proc.stdout:
            try:
                aggregate.report(json.loads(line))
            except json.JSONDecodeError:
                sys.stderr.write(line.decode(errors="replace"))
        return await proc.wait()

    forwarder = asyncio.get_running_loop().create_task(forward_stop())
    codes = await asyncio.gather(*(read(p) for p in procs))
    forwarder.cancel()
    failed = [n for n, code in enumerate(codes) if code != 0]
    if failed:
        log.error("worker process(es) %s exited with %s", failed, [codes[n] for n in failed])
    return 1 if failed or len(aggregate.finals) < len(procs) else 0


def _child_main(args: argparse.Namespace) -> int:
    def emit(report: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()

    final = asyncio.run(_worker(args, args.worker_index, args.state_dir, emit))
    emit(final)
    return 0


def _check(args: argparse.Namespace, state_dir: Path) -> str | None:
    """What is wrong with the options (a one-line message), before any charger or process starts."""
    from firmware.config import load_config
    from firmware.core.errors import ConfigError
    from tools.fleet_charger import ChargerSpec, config_text, parse_override
    from tools.fleet_pattern import load_script

    try:
        if args.script is not None:
            load_script(args.script)
        spec = ChargerSpec(host=args.broker[0], port=args.broker[1], evses=args.evses, codec=args.codec,
                           telemetry_s=args.telemetry_s, overrides=dict(parse_override(o) for o in args.overrides))
        probe = state_dir / "config-check.toml"
        probe.write_text(config_text(f"{args.id_prefix}-{args.chargers:04d}", state_dir / "check", spec))
        load_config(probe)
        probe.unlink()
    except (ValueError, TypeError, OSError, ConfigError) as exc:
        return str(exc)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if args.procs > args.chargers:
        args.procs = args.chargers
    if args.worker_index is not None:
        return _child_main(args)
    temporary = args.state_dir is None
    state_dir: Path = Path(tempfile.mkdtemp(prefix="fleet-")) if temporary else args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    aggregate = Aggregate(args, args.procs)
    try:
        problem = _check(args, state_dir)
        if problem is not None:
            print(f"tools/fleet.py: {problem}", file=sys.stderr)
            return 2
        if args.procs == 1:
            aggregate.report(asyncio.run(_worker(args, 0, state_dir, aggregate.report)))
            status = 0
        else:
            status = asyncio.run(_children(args, state_dir, aggregate))
    finally:
        if temporary:
            shutil.rmtree(state_dir, ignore_errors=True)
    if not aggregate.finals:
        print("fleet: no worker reported", file=sys.stderr)
        return 1
    summary = aggregate.summary()
    print(summary_text(summary), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
