"""What the benchmarks that run the controller share: a private mosquitto, a generated config, a backend client.

What it is for: tools/bench/reaction.py, roundtrip.py and procs.py start a private mosquitto on a free
loopback port, write a charger config for it, talk to the controller as its backend does (API.md §2-§4,
§8: requests on R/cmd, replies on R/reply, state documents on R/evse/{id}/state) and print progress.

What it must never do: talk to any broker but its own private one, write outside the directory it is
given, or judge a figure.

Standard: API.md (topics, envelopes, sim ops), MQTT 3.1.1 over loopback TCP (TCP_NODELAY).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
TOKEN = "BENCH01"
_STARTED = time.monotonic()


def progress(message: str) -> None:
    """One progress line on stderr (a full run takes minutes)."""
    print(f"[bench {time.monotonic() - _STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private mosquitto, once it runs: a port another broker took meanwhile ("Address already in use")
    is retried with a new one, so the benchmark never talks to someone else's broker."""
    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    if binary is None:
        raise SystemExit("mosquitto is not installed (./tools/test installs it)")
    for _ in range(3):
        port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 100000\nset_tcp_nodelay true\n")
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


@contextlib.contextmanager
def broker(directory: Path) -> Iterator[int]:
    """A private mosquitto for the `with` block; yields its port."""
    proc, port = start_broker(directory)
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def write_config(path: Path, *, port: int, charger_id: str, evses: int, state_dir: Path,
                 meter_ports: list[int] | None = None) -> Path:
    """A charger config (API.md §9): `evses` EVSEs, JSON codec; with `meter_ports` EVSE i polls an SDM630
    (device 1) on 127.0.0.1:meter_ports[i - 1] over Modbus TCP (else the simulated board's meters)."""
    def meter(i: int) -> str:
        if not meter_ports:
            return ""
        return f'[evse.meter]\nmodel = "SDM630"\nurl = "tcp://127.0.0.1:{meter_ports[i - 1]}"\ndevice_id = 1\n'
    tables = "".join(f'[[evse]]\nid = {i}\nconnectors = ["sType2"]\n{meter(i)}' for i in range(1, evses + 1))
    path.write_text(f'[charger]\nid = "{charger_id}"\nstate_dir = "{state_dir}"\n'
                    f'[mqtt]\nport = {port}\ncodec = "json"\n{tables}')
    return path


class Backend:
    """A backend on the private broker: requests with their replies, and the latest state document per
    EVSE (each with the perf_counter time it arrived)."""

    def __init__(self, client: aiomqtt.Client, root: str) -> None:
        self.client = client
        self.root = root
        self.states: dict[int, dict[str, Any]] = {}
        self.status: dict[str, Any] | None = None
        self._ids = itertools.count(1)
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Condition()
        #: called with (evse_id, document, arrival perf_counter) for every state document
        self.on_state: list[Callable[[int, dict[str, Any], float], None]] = []

    async def _read(self) -> None:
        async for message in self.client.messages:
            arrived = time.perf_counter()
            doc = json.loads(bytes(message.payload))
            topic = message.topic.value
            if topic.endswith("/reply"):
                future = self._replies.pop(str(doc.get("id")), None)
                if future is not None and not future.done():
                    future.set_result(doc)
                continue
            if topic.endswith("/status"):
                self.status = doc
            else:
                cid = int(doc["evse_id"])
                self.states[cid] = doc
                for listener in self.on_state:
                    listener(cid, doc, arrived)
            async with self._changed:
                self._changed.notify_all()

    async def send(self, op: str, args: dict[str, object] | None = None) -> asyncio.Future[dict[str, Any]]:
        """Publish a request; the future is its reply."""
        request_id = f"bench-{next(self._ids)}"
        future = self._replies[request_id] = asyncio.get_running_loop().create_future()
        body = {"id": request_id, "op": op, "args": args or {}}
        await self.client.publish(f"{self.root}/cmd", json.dumps(body).encode(), qos=1)
        return future

    async def ok(self, op: str, args: dict[str, object] | None = None, timeout_s: float = 30.0) -> object:
        reply = await asyncio.wait_for(await self.send(op, args), timeout_s)
        if not reply.get("ok"):
            raise SystemExit(f"bench: {op} {args} was refused: {reply}")
        return reply.get("result")

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
        async def until() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)
        try:
            await asyncio.wait_for(until(), timeout_s)
        except TimeoutError:
            raise SystemExit(f"bench: not {what or 'as expected'} after {timeout_s:g} s; "
                             f"states {self.states}") from None

    def state(self, cid: int) -> dict[str, Any]:
        return self.states.get(cid) or {}

    def session_token(self, cid: int) -> object:
        return (self.state(cid).get("session") or {}).get("id_token")

    async def charge(self, cid: int) -> None:
        """From unplugged (or plugged, not charging): plug in, present the token, ask for power; until the
        EVSE charges with its relay closed (API.md §8, as tests/support/flows.plug_and_charge)."""
        if self.state(cid).get("cp") not in ("B", "C") or self.session_token(cid) is None:
            await self.ok("sim_plug", {"evse_id": cid, "cp": "B"})
            await self.wait_for(lambda: self.state(cid).get("session") is not None, what=f"a session on EVSE {cid}")
            await self.ok("sim_token", {"evse_id": cid, "id_token": TOKEN})
            await self.wait_for(lambda: self.session_token(cid) is not None, what=f"EVSE {cid} authorized")
        await self.ok("sim_plug", {"evse_id": cid, "cp": "C"})
        await self.wait_for(lambda: self.state(cid).get("status") == "Charging" and self.state(cid).get("relay_closed")
                            is True, what=f"EVSE {cid} charging")

    async def charge_all(self, evse_ids: list[int]) -> None:
        """The bench's token on the local list, then every EVSE charging."""
        await self.ok("set_local_auth_list", {"version": 1, "full": True,
                                              "tokens": [{"id_token": TOKEN, "status": "Accepted"}]})
        await asyncio.gather(*(self.charge(cid) for cid in evse_ids))


@contextlib.asynccontextmanager
async def backend(port: int, charger_id: str, name: str = "bench-backend") -> AsyncIterator[Backend]:
    """A connected `Backend` for `charger_id` (subscribed to its replies, status and state documents)."""
    root = f"chargers/{charger_id}/v1"
    async with aiomqtt.Client("127.0.0.1", port, identifier=name, socket_options=NODELAY) as client:
        link = Backend(client, root)
        for topic in ("reply", "status", "evse/+/state"):
            await client.subscribe(f"{root}/{topic}", qos=1)
        reader = asyncio.get_running_loop().create_task(link._read(), name="bench-backend-reader")
        try:
            yield link
        finally:
            reader.cancel()  # aiomqtt on 3.11 can swallow a cancel: do not wait forever
            await asyncio.wait([reader], timeout=2)
