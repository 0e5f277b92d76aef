"""`kill -9` of the controller at random moments of a scripted workload, in a loop (issue 5).

Real processes and a real mosquitto. The backend stays connected the whole time and, at the end,
checks its view of the charger:

* every reservation it was told was Accepted is still there, or ended with an update;
* `seq` (shared by SessionEvents and ReservationUpdateStatus) has no gap;
* every session that started ends with SessionFinished once the EVs leave;
* energy readings never go backwards.

CI runs `CHARGER_KILL_RUNS` (default 25) kills; `CHARGER_KILL_RUNS=200` is the full loop whose
figures go into the closing note. The figures are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.backend import Backend, backend_for, root_of, wait_online
from tests.support.broker import Broker
from tests.support.builders import evses, local_list, rfc3339
from tests.support.controller import config_path, write_config
from tests.support.program import REPO, firmware_command

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUNS = int(os.environ.get("CHARGER_KILL_RUNS", "25"))


def spawn(config: Path) -> subprocess.Popen[bytes]:
    log = config.parent / "controller.log"
    with open(log, "ab") as out:
        return subprocess.Popen(firmware_command("--sim", "--config", str(config), "--log-level", "INFO"), cwd=REPO,
                                stdout=out, stderr=out)


class Workload:
    """Random backend traffic and simulated EV activity; remembers what the backend was told."""

    def __init__(self, backend: Backend, rng: random.Random) -> None:
        self.backend = backend
        self.rng = rng
        self.accepted: dict[tuple[str, int], str] = {}  # (sender, id) -> uuid of the last Accepted reply
        self.requests = 0

    async def step(self) -> None:
        rng, b = self.rng, self.backend
        action = rng.choice(["reserve", "reserve", "cancel", "plug", "plug", "token", "load"])
        evse = rng.choice([1, 2])
        try:
            if action == "reserve":
                sender, rid = rng.choice(["a", "b"]), rng.randint(1, 8)
                args: dict[str, Any] = {"reservation_id": rid, "id_token": rng.choice(["AA11", "BB22"]),
                                        "sender": sender, "expiry_time": rfc3339(datetime.now(UTC) + timedelta(
                                            seconds=rng.choice([3, 30, 600])))}
                if rng.random() < 0.6:
                    args["evse_id"] = evse
                reply = await b.request("reserve_now", args, timeout=2)
                if reply.get("ok") and reply["result"].get("status") == "Accepted":
                    self.accepted[(sender, rid)] = reply["result"]["uuid"]
            elif action == "cancel":
                await b.request("cancel_reservation", {"reservation_id": rng.randint(1, 8),
                                                       "sender": rng.choice(["a", "b"])}, timeout=2)
            elif action == "plug":
                await b.request("sim_plug", {"evse_id": evse, "cp": rng.choice(["A", "B", "C", "C"])}, timeout=2)
            elif action == "token":
                await b.request("sim_token", {"evse_id": evse, "id_token": rng.choice(["AA11", "BB22", "CC33"])},
                                timeout=2)
            else:
                await b.request("sim_load", {"evse_id": evse, "current_a": rng.choice([0, 10, 16, 32])}, timeout=2)
            self.requests += 1
        except AssertionError:
            pass  # no reply: the controller was killed meanwhile

    async def run(self) -> None:
        self.stopped = False
        while not self.stopped:  # a flag too: asyncio.wait_for in 3.11 can swallow a cancellation
            await self.step()


async def test_kill_nine_loop(broker: Broker, tmp_path: Path) -> None:
    charger_id = f"KILL-{os.getpid()}"
    root = root_of(charger_id)
    write_config(tmp_path, broker.port, charger_id=charger_id, meter_interval_s=0.2, auth_timeout_s=0.5,
                 evses=evses(1) + evses(2, connectors=("sType2", "cCCS2")))
    config = config_path(tmp_path)
    rng = random.Random(20261121)
    kills = 0
    async with backend_for(broker.port, root) as backend:
        workload = Workload(backend, rng)
        boot: str | None = None
        for run in range(RUNS):
            proc = spawn(config)
            try:
                boot = await wait_online(backend, 20, not_boot_id=boot)
                if run == 0:
                    await backend.ok("set_local_auth_list", local_list("CC33", "AA11"))
                task = asyncio.get_running_loop().create_task(workload.run())
                await asyncio.sleep(rng.uniform(0.02, 1.0))
                proc.send_signal(signal.SIGKILL)
                kills += 1
                workload.stopped = True
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(10)

        # A last, clean run: every EV leaves, and the outbox drains.
        proc = spawn(config)
        try:
            await wait_online(backend, 20, not_boot_id=boot)
            for evse in (1, 2):
                await backend.ok("sim_plug", {"evse_id": evse, "cp": "A"})
            reservations = await backend.ok("list_reservations", {})

            def settled() -> bool:
                seqs = {m["seq"] for m in backend.durable()}
                return bool(seqs) and seqs == set(range(1, max(seqs) + 1)) and _sessions_closed(backend)

            await backend.wait_for(settled, 20)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)

    durable = backend.durable()
    seqs = [m["seq"] for m in durable]
    unique = set(seqs)
    assert unique == set(range(1, max(unique) + 1)), "seq has a gap"

    updates = [m for m in durable if m.get("reservation_status")]
    ended = {m["uuid"] for m in updates if m["reservation_status"] in ("Expired", "Removed", "Cancelled", "Used")}
    placed_seq: dict[str, int] = {m["uuid"]: m["seq"] for m in updates if m["reservation_status"] == "Placed"}
    present = {r["uuid"] for r in reservations}
    for (sender, rid), uuid in workload.accepted.items():
        later = [m for m in updates if m["reservation_status"] == "Placed" and m["sender"] == sender
                 and m["reservation_id"] == rid and m["seq"] > placed_seq.get(uuid, 0)]
        assert uuid in present or uuid in ended or later, f"reservation {sender}/{rid} ({uuid}) vanished"

    assert _sessions_closed(backend)
    for evse in (1, 2):
        readings = sorted(_energy(backend, root, evse))
        values = [e for _, e in readings]
        assert values == sorted(values), f"EVSE {evse}: energy went backwards"

    sessions = {m["uuid"] for m in durable if m.get("event") == "SessionStarted"}
    print(f"\nkill loop: {kills} kills, {workload.requests} requests answered, {len(unique)} durable messages "
          f"(seq 1..{max(unique)}, {len(seqs) - len(unique)} redelivered), {len(sessions)} sessions, "
          f"{len(workload.accepted)} reservations accepted; lost: 0")


def _sessions_closed(backend: Backend) -> bool:
    durable = backend.durable()
    started = {m["uuid"] for m in durable if m.get("event") == "SessionStarted"}
    finished = {m["uuid"] for m in durable if m.get("event") == "SessionFinished"}
    return started <= finished


def _energy(backend: Backend, root: str, evse: int) -> list[tuple[str, float]]:
    readings = []
    for topic, value in backend.messages:
        if not isinstance(value, dict):
            continue
        if topic == f"{root}/evse/{evse}/meter":
            readings.append((value["timestamp"], value["energy_Wh_import"]))
        elif topic == f"{root}/evse/{evse}/session":
            for key in ("session_started", "session_finished", "session_cancelled"):
                if isinstance(value.get(key), dict):
                    readings.append((value["timestamp"], value[key]["energy_Wh_import"]))
    return readings
