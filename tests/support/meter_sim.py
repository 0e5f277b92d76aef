"""`tools/meter_sim.py` started as a program for a test: `async with meter_sim("--model", "SDM630",
"--tcp", "127.0.0.1:0") as sim:` waits for its start line (which names the real port) and stops it at
the end with SIGTERM, which must end it with exit code 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from hal.meter import MeterUrl
from tests.support.program import REPO

SIM = REPO / "tools" / "meter_sim.py"
START_S = 15.0  # a cold interpreter importing pymodbus on a slow CI box


@dataclass
class Sim:
    """A running simulator: its process, start line, TCP port (None for RTU) and stdout."""

    proc: asyncio.subprocess.Process
    banner: str
    port: int | None

    @property
    def url(self) -> MeterUrl:
        return MeterUrl.parse(f"tcp://127.0.0.1:{self.port}")

    async def line(self, timeout_s: float = 5.0) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            return (await self.proc.stdout.readline()).decode()

    async def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        await self.proc.stdin.drain()

    async def stop(self, sig: int = signal.SIGTERM) -> str:
        """Signal it, and return the rest of its stdout; it must exit 0."""
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(5):
            rest, err = await asyncio.gather(self.proc.stdout.read(), self.proc.stderr.read())
            rc = await self.proc.wait()
        assert rc == 0, f"meter_sim exited {rc} on {signal.Signals(sig).name}: {err.decode()}"
        return rest.decode()


@contextlib.asynccontextmanager
async def meter_sim(*args: str) -> AsyncIterator[Sim]:
    """Start `tools/meter_sim.py args...`, wait for its start line, and stop it (exit 0) at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SIM), *args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(START_S):
            banner = (await proc.stdout.readline()).decode()
        if not banner:
            pytest.fail(f"meter_sim {' '.join(args)} did not start: {(await proc.stderr.read()).decode()}",
                        pytrace=False)
        port = re.search(r" on tcp://127\.0\.0\.1:(\d+): ", banner)
        sim = Sim(proc, banner, int(port.group(1)) if port else None)
        yield sim
        if proc.returncode is None:
            assert "stopped: import" in await sim.stop()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
