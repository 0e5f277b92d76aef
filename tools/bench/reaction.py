"""Benchmark: how fast the running controller opens a relay, idle and under load (prints figures only).

What is measured. The controller runs in-process (`Controller` on the simulated board, 8 EVSEs, the
default 10 ms CP sampling and 30 ms debounce) against a private mosquitto. Every EVSE charges. A backend
client then makes, one at a time and rotating over the EVSEs, one of three changes with a sim op over
MQTT (API.md §8): the EV stops asking for power (`sim_plug` C -> B), the EV is unplugged (C -> A), the
RCD trips (`sim_fault` rcd). Each gives two figures:

* after the debounce: from the board read that made the core act (the CP sample that completed the
  debounce; for the RCD, the read that saw the trip) to the relay-open command (tools/bench/probe.py).
  Its baseline is the wake-up lateness of a bare asyncio loop (a process of its own sleeping 10 ms again
  and again, tools/bench/load.py), measured over the same time, so under the same background load;
* end to end: from the sim op's publish to the arrival, at the backend, of the EVSE's state document
  showing the relay open (debounce and sampling included); and, to tell where that time goes, from the
  publish to the relay-open command (the rest is the state document's way out).

Scenarios: idle (nothing else runs); under load: a backend process sending 1000 `exists_reservation`/s
(pipelined QoS 1), a console client running `watch`, and every EVSE's meter polled over real Modbus TCP
(each EVSE's SDM630 served by a tools/meter_sim.py process of its own, polled once a second); and the same load with
a store whose every fsync takes 200 ms longer (tests/support/store.py `SlowStore`).
The controller's own log and aiomqtt's are kept to errors (a C -> A under load logs a warning each time;
under the slow store aiomqtt warns of its pending publishes, which the end-to-end figures show anyway).

Usage: .venv/bin/python tools/bench/reaction.py [--cycles N] [--rate HZ] [--slow-fsync-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from firmware.app import Controller  # noqa: E402
from tools.bench.harness import ROOT, Backend, backend, broker, progress, write_config  # noqa: E402
from tools.bench.meter_poll import meter_sims  # noqa: E402
from tools.bench.inproc import bounded, in_process  # noqa: E402
from tools.bench.probe import Probe  # noqa: E402
from tools.bench.stats import Figure, compared, summarise, table  # noqa: E402

EVSES = 8
CHARGER = "BENCH-REACT"
LOAD = ROOT / "tools" / "bench" / "load.py"
KINDS: dict[str, tuple[str, str, dict[str, object]]] = {
    "c_to_b": ("CP C -> B", "sim_plug", {"cp": "B"}),
    "c_to_a": ("CP C -> A (unplug)", "sim_plug", {"cp": "A"}),
    "rcd": ("RCD trip", "sim_fault", {"fault": "rcd", "active": True}),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    key: str
    label: str
    load: bool
    fsync_delay_s: float


def scenarios(slow_fsync_ms: float) -> list[Scenario]:
    return [Scenario("idle", "idle", load=False, fsync_delay_s=0.0),
            Scenario("load", "load", load=True, fsync_delay_s=0.0),
            Scenario("slow_store", f"load+fsync {slow_fsync_ms:g} ms", load=True, fsync_delay_s=slow_fsync_ms / 1000)]


@contextlib.asynccontextmanager
async def side_process(*args: str, result: dict[str, Any]) -> AsyncIterator[None]:
    """tools/bench/load.py with `args` for the `with` block (started once it says "ready"); its JSON
    result (printed when SIGTERM stops it) lands in `result`."""
    proc = await asyncio.create_subprocess_exec(sys.executable, str(LOAD), *args, cwd=ROOT,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None  # noqa: S101
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise SystemExit(f"reaction: load.py {args[0]} did not start: {line!r}")
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        lines = out.decode().strip().splitlines()
        result.update(json.loads(lines[-1]) if lines else {})


async def restore(link: Backend, kind: str, cid: int) -> None:
    """The EVSE back to charging after the change `kind`."""
    if kind == "rcd":
        await link.ok("sim_fault", {"evse_id": cid, "fault": "rcd", "active": False})
        await link.ok("sim_plug", {"evse_id": cid, "cp": "A"})
        await link.wait_for(lambda: link.state(cid).get("status") == "Available", what=f"EVSE {cid} available")
    await link.charge(cid)


async def cycle(link: Backend, probe: Probe, kind: str, cid: int) -> tuple[tuple[float, float, float], bool]:
    """One change on EVSE `cid`: (after the debounce, end to end, sim op sent -> relay-open command) in
    seconds, and whether the open was traced to a tagged read; then back to charging."""
    _, op, args = KINDS[kind]
    arrived: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_state(evse: int, doc: dict[str, Any], at: float) -> None:
        if evse == cid and not doc.get("relay_closed") and not arrived.done():
            arrived.set_result(at)

    link.on_state.append(on_state)
    index = len(probe.opens)
    try:
        sent_at = time.perf_counter()
        reply = await link.send(op, {"evse_id": cid, **args})
        shown_at = await asyncio.wait_for(arrived, 30)
    finally:
        link.on_state.remove(on_state)
    await asyncio.wait_for(reply, 30)
    opened = probe.opened_since(index, cid)
    if opened is None:
        raise SystemExit(f"reaction: {kind} on EVSE {cid}: the state shows the relay open, but no open was commanded")
    await restore(link, kind, cid)
    return (opened.at - opened.read_at, shown_at - sent_at, opened.at - sent_at), opened.tagged


async def measure(scenario: Scenario, cycles: int, rate_hz: float, directory: Path) -> tuple[list[Figure], list[str]]:
    with broker(directory) as port:
        state_dir = directory / "state"
        console = state_dir / "console.sock"
        load: dict[str, Any] = {}
        lateness: dict[str, Any] = {}
        async with contextlib.AsyncExitStack() as stack:
            meter_ports = None
            if scenario.load:
                meter_ports = await stack.enter_async_context(meter_sims("SDM630", EVSES, current_a=0.0))
            config = write_config(directory / "bench.toml", port=port, charger_id=CHARGER, evses=EVSES,
                                  state_dir=state_dir, meter_ports=meter_ports)
            with config.open("a") as f:
                f.write(f'[console]\nsocket = "{console}"\n')
            controller, probe = await stack.enter_async_context(in_process(config, scenario.fsync_delay_s))
            assert probe is not None  # noqa: S101
            link = await stack.enter_async_context(backend(port, CHARGER))
            await link.charge_all(controller.evse_ids)
            if scenario.load:
                await stack.enter_async_context(side_process("backend", "--port", str(port), "--charger", CHARGER,
                                                             "--rate", f"{rate_hz:g}", "--console", str(console),
                                                             result=load))
            await stack.enter_async_context(side_process("lateness", "--interval-ms", "10", result=lateness))
            await asyncio.sleep(0.5)  # the load settles
            samples: dict[str, tuple[list[float], ...]] = {kind: ([], [], []) for kind in KINDS}
            untagged = 0
            for i in range(cycles):
                for k, kind in enumerate(KINDS):
                    cid = controller.evse_ids[(i * len(KINDS) + k) % len(controller.evse_ids)]
                    seconds, tagged = await cycle(link, probe, kind, cid)
                    untagged += not tagged
                    for index, value in enumerate(seconds):
                        samples[kind][index].append(value * 1000)
                    await asyncio.sleep(0.01 + 0.003 * (i % 7))  # the next change lands at another sampling phase
    return figures(scenario, samples, lateness["lateness_ms"]), notes(scenario, load, untagged, controller)


def figures(scenario: Scenario, samples: dict[str, tuple[list[float], ...]],
            lateness_ms: list[float]) -> list[Figure]:
    key, label = f"reaction.{scenario.key}", scenario.label
    baseline = summarise(f"{key}.loop_lateness", f"{label}: bare asyncio loop wake-up lateness (10 ms sleeps)", "ms",
                         lateness_ms)
    out = [baseline]
    after_target = "p99 < 10 ms" if scenario.load else None
    for measure_key, what, index, target in (("after_debounce", "after debounce -> relay open", 0, after_target),
                                             ("end_to_end", "MQTT sim op -> state doc relay open", 1, "p99 <= 40 ms"),
                                             ("op_to_open", "MQTT sim op -> relay open command", 2, None)):
        every: list[float] = []
        for kind, (kind_label, _, _) in KINDS.items():
            values = samples[kind][index]
            every += values
            fig = summarise(f"{key}.{measure_key}.{kind}", f"{label}: {kind_label}, {what}", "ms", values)
            out.append(compared(fig, baseline) if index == 0 else fig)
        fig = summarise(f"{key}.{measure_key}.all", f"{label}: all changes, {what}", "ms", every, target=target)
        out.append(compared(fig, baseline) if index == 0 else fig)
    return out


def notes(scenario: Scenario, load: dict[str, Any], untagged: int, controller: Controller) -> list[str]:
    stats = controller.persistence.stats
    out = [f"reaction {scenario.label}: group commit {stats.steps / max(stats.commits, 1):.1f} steps per commit "
           f"(largest group {stats.largest_batch})"]
    if load:
        seconds = load["seconds"] or 1.0
        out.append(f"reaction {scenario.label}: background backend sent {load['sent'] / seconds:,.0f} requests/s, "
                   f"got {load['replies'] / seconds:,.0f} replies/s; console watch read {load['watch_lines']} lines; "
                   "meters: 8 x SDM630 over Modbus TCP (tools/meter_sim.py processes), each polled once a second")
    if untagged:
        out.append(f"reaction {scenario.label}: {untagged} relay opens not traced to a tagged read "
                   "(timed from the EVSE's last read instead)")
    return out


async def run(cycles: int, rate_hz: float, slow_fsync_ms: float, only: list[str] | None = None,
              ) -> tuple[list[Figure], list[str]]:
    logging.getLogger("firmware").setLevel(logging.ERROR)
    logging.getLogger("mqtt").setLevel(logging.ERROR)  # aiomqtt's "pending publish calls" (the figures show it)
    out: list[Figure] = []
    out_notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-reaction-") as tmp:
        for scenario in scenarios(slow_fsync_ms):
            if only and scenario.key not in only:
                continue
            progress(f"reaction: {scenario.label}, {cycles} changes of each kind on {EVSES} EVSEs")
            directory = Path(tmp) / scenario.key
            directory.mkdir()
            figs, more = await bounded(measure(scenario, cycles, rate_hz, directory), 120 + 20 * cycles)
            out += figs
            out_notes += more
    return out, out_notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=10, help="changes of each kind per scenario (default 10)")
    parser.add_argument("--rate", type=float, default=1000.0, help="background requests per second (default 1000)")
    parser.add_argument("--slow-fsync-ms", type=float, default=200.0, help="the slow store's fsync (default 200)")
    parser.add_argument("--scenarios", default="", help="comma-separated subset of idle,load,slow_store")
    args = parser.parse_args(argv)
    figs, more = asyncio.run(run(args.cycles, args.rate, args.slow_fsync_ms,
                                 [s for s in args.scenarios.split(",") if s]))
    print(table(figs))
    print("\n".join(more))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
