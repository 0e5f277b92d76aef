"""Benchmark of the running controller on this machine (prints figures; asserts nothing about time).

1. Command -> reply on loopback: a backend client sends `exists_reservation` over a private
   mosquitto and waits for the reply; next to it, a bare aiomqtt echo client (subscribe, republish)
   measured in the same run. The ratio of the two medians is the figure that matters: what the
   controller adds to a plain MQTT round trip.
2. CP C -> B to relay open: the simulated EV stops asking for power; the time until the relay is
   commanded open (IEC 61851-1 allows 100 ms), with the controller's real 10 ms sampling.
3. RSS and idle CPU of `charger-firmware --sim` with 2 EVSEs, as a separate process.

Usage: .venv/bin/python tools/bench/runtime.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from firmware.app import Controller  # noqa: E402
from firmware.config import load_config  # noqa: E402
from firmware.store import Store  # noqa: E402
from hal.sim import SimBoard  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def show(name: str, values_s: list[float]) -> float:
    ms = [v * 1000 for v in values_s]
    median = statistics.median(ms)
    print(f"{name}: n={len(ms)} median {median:.2f} ms, p99 {percentile(ms, 99):.2f} ms, max {max(ms):.2f} ms")
    return median


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private mosquitto, once it runs: a port another broker took meanwhile ("Address already in use")
    is retried with a new one, so the benchmark never talks to someone else's broker."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if binary is None:
        raise SystemExit("mosquitto is not installed (./tools/test installs it)")
    for _ in range(3):
        port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n")
        log_path = directory / f"mosquitto-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if b" running" in log_path.read_bytes():
                return proc, port
            time.sleep(0.02)
        proc.kill()
        proc.wait(5)
    raise SystemExit(f"mosquitto did not start: {log_path.read_text(errors='replace')[-500:]}")


def write_config(directory: Path, port: int, evses: int) -> Path:
    tables = "".join(f'[[evse]]\nid = {i}\nconnectors = ["sType2"]\n' for i in range(1, evses + 1))
    path = directory / "bench.toml"
    path.write_text(f'[charger]\nid = "BENCH"\nstate_dir = "{directory / "state"}"\n'
                    f'[mqtt]\nport = {port}\ncodec = "json"\n{tables}')
    return path


async def command_latency(port: int, config_path: Path, count: int) -> None:
    config = load_config(config_path)
    loop = asyncio.get_running_loop()
    sim = SimBoard([e.id for e in config.evses], clock=loop.time)
    controller = Controller(config, sim, Store(config.charger.state_dir), meters={}, sim=sim)
    task = loop.create_task(controller.run())
    await controller.ready.wait()
    await asyncio.wait_for(controller.link.connected.wait(), 10)
    root = "chargers/BENCH/v1"
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-backend",
                              socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as client:
        await client.subscribe(f"{root}/reply", qos=1)
        await client.subscribe("bench/echo/reply", qos=1)
        messages = client.messages

        async def round_trip(topic: str, payload: bytes, reply_topic: str) -> float:
            start = time.perf_counter()
            await client.publish(topic, payload, qos=1)
            async for message in messages:
                if message.topic.value == reply_topic:
                    return time.perf_counter() - start
            raise RuntimeError("no reply")

        controller_times = []
        for i in range(count):
            body = json.dumps({"id": f"b{i}", "op": "exists_reservation", "args": {"id_token": "AA11"}}).encode()
            controller_times.append(await round_trip(f"{root}/cmd", body, f"{root}/reply"))

        async def echo() -> None:
            async with aiomqtt.Client("127.0.0.1", port, identifier="bench-echo",
                                      socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)) as echo_client:
                await echo_client.subscribe("bench/echo/cmd", qos=1)
                async for message in echo_client.messages:
                    await echo_client.publish("bench/echo/reply", message.payload, qos=1)

        echo_task = loop.create_task(echo())
        await asyncio.sleep(0.3)
        echo_times = []
        for i in range(count):
            body = json.dumps({"id": f"e{i}", "op": "exists_reservation", "args": {"id_token": "AA11"}}).encode()
            echo_times.append(await round_trip("bench/echo/cmd", body, "bench/echo/reply"))
        echo_task.cancel()  # aiomqtt on 3.11 can swallow a cancel (asyncio.wait_for): do not wait forever
        await asyncio.wait([echo_task], timeout=2)
    ours = show("command -> reply (controller)", controller_times)
    bare = show("command -> reply (bare aiomqtt echo)", echo_times)
    print(f"ratio controller / bare echo (medians): {ours / bare:.2f}")

    opens = []
    for _ in range(count // 10 or 5):
        sim.plug(1, "B")
        await asyncio.sleep(0.3)
        controller.queue.put(_authorize_event())
        sim.plug(1, "C")
        while not sim.relay_commanded(1):
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.2)
        start = loop.time()
        sim.plug(1, "B")
        while sim.relay_commanded(1):
            await asyncio.sleep(0.0005)
        opens.append(loop.time() - start)
        sim.plug(1, "A")
        await asyncio.sleep(0.3)
    show("CP C -> B to relay open (limit 100 ms)", opens)
    task.cancel()
    await asyncio.wait([task], timeout=10)


def _authorize_event() -> object:
    from hal.protocols import TokenRead
    return TokenRead(cid=1, id_token="BENCH", token_type="RFID")


def idle_process(config_path: Path, seconds: float) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "firmware", "--sim", "--config", str(config_path),
                             "--log-level", "WARNING"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # start-up
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu_s() -> float:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        before, start = cpu_s(), time.monotonic()
        time.sleep(seconds)
        used, elapsed = cpu_s() - before, time.monotonic() - start
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
        print(f"idle with 2 EVSEs: RSS {rss_kb / 1024:.1f} MiB, CPU {100 * used / elapsed:.1f} % of one core "
              f"over {elapsed:.0f} s")
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args()
    count = 30 if args.quick else 300
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker, port = start_broker(directory)
        try:
            config_path = write_config(directory, port, evses=2)
            # the bench's token must be accepted without a backend: a local list entry
            Store(directory / "state").commit(None, {"local_list": {"version": 1, "tokens": [
                {"id_token": "BENCH", "status": "Accepted", "parent_id_token": None, "expiry": None}]}})
            asyncio.run(command_latency(port, config_path, count))
            idle_process(config_path, 3.0 if args.quick else 20.0)
        finally:
            broker.terminate()
            broker.wait(5)


if __name__ == "__main__":
    main()
