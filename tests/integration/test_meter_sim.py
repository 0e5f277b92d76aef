"""`tools/meter_sim.py` run as a program, read by the project's own meter client and by raw pymodbus.

Each test starts the simulator as a subprocess (`sys.executable tools/meter_sim.py ...`, PYTHONPATH
at the repository) on a free port it picks itself (`--tcp 127.0.0.1:0`, the real port is read from its
start line), or on one end of a `socat` pty pair for RTU, and stops it with SIGTERM or SIGINT, which
must end it with exit code 0.

What is checked: every model of `MODELS` serves the values it was given (within the resolution of
the model's encoding) to `hal.meter.ModbusMeter`; a request of `max_count` registers is answered and
one of `max_count + 1` gets exception 02; energy accrues as P x dt with a current set on stdin at
runtime, into import or (negative power factor) export; `--no-export` refuses the export register with
exception 02 and `--export-na` answers it all-0xFF, the rest of the meter still answering; RTU over a
pty pair, silent to other device ids; bad arguments exit 2 with a clear message; the simulator never
imports the controller.

The simulator and the client share `hal.meter_maps`, so these tests cannot find a wrong map: that is
what test_meter_modbus.py's independent transcription of METERS.md does. They check the simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from firmware.core.errors import HardwareError
from hal.meter import MODELS, MeterUrl, ModbusMeter
from hal.meter_maps import MeterModel, Register
from hal.protocols import MeterSample
from tests.support.meter_sim import SIM, START_S, meter_sim
from tests.support.program import REPO

pytestmark = pytest.mark.integration

#: No tick within a test: the values stay exactly as given.
NO_TICK = ("--tick", "600")

#: What the 3-phase meters are given; exact in float32 and in whole 0.01 steps (ABB).
VOLTS = (230.5, 231.5, 229.5)
AMPS = (16.5, 15.25, 14.75)
PF = (1.0, 0.8, 1.0)
FREQUENCY_HZ = 49.95  # a CG meter (0.1 Hz) rounds it to 50.0
IMPORT_KWH = 1234.56  # a CG meter (0.1 kWh) shows 1234.5
EXPORT_KWH = 12.34


def csv(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def register(model: MeterModel, quantity: str) -> Register:
    (reg,) = (r for r in model.registers if r.quantity == quantity)
    return reg


def tolerance(model: MeterModel, quantity: str) -> float:
    """The encoding's resolution in wire units: one scale step for integers, float32's 24 bits."""
    regs = [r for r in model.registers if r.quantity == quantity]
    if not regs:
        return 0.0
    return 1e-6 if regs[0].dtype == "float32" else regs[0].scale * 1.0001


def close(actual: float | None, expected: float, tol: float, what: str) -> None:
    assert actual is not None, f"{what}: absent"
    assert math.isclose(actual, expected, rel_tol=1e-6, abs_tol=tol), f"{what}: {actual} != {expected} (± {tol})"


def check_sample(model: MeterModel, s: MeterSample) -> None:
    q = model.quantities()
    n = model.phases
    volts = [v if i < n and "voltage_l1" in q else 0.0 for i, v in enumerate(VOLTS)]
    amps = [a if i < n and "current_l1" in q else 0.0 for i, a in enumerate(AMPS)]
    power_w = sum(v * a * pf for v, a, pf in list(zip(VOLTS, AMPS, PF, strict=True))[:n])
    for i in range(3):
        close(s.voltages_v[i], volts[i], tolerance(model, "voltage_l1"), f"voltage L{i + 1}")
        close(s.currents_a[i], amps[i], tolerance(model, "current_l1"), f"current L{i + 1}")
    close(s.power_w, power_w, tolerance(model, "power_total"), "power")
    close(s.frequency_hz, FREQUENCY_HZ if "frequency" in q else 0.0, tolerance(model, "frequency"), "frequency")
    close(s.energy_wh_import, IMPORT_KWH * 1000, tolerance(model, "energy_import") * 1000, "import")
    close(s.energy_wh_export, EXPORT_KWH * 1000, tolerance(model, "energy_export") * 1000, "export")


async def raw_read(client: AsyncModbusTcpClient, fc: int, address: int, count: int, device_id: int = 1) -> ModbusPDU:
    read = client.read_holding_registers if fc == 3 else client.read_input_registers
    return await read(address, count=count, device_id=device_id)


@contextlib.asynccontextmanager
async def raw_client(port: int | None) -> AsyncIterator[AsyncModbusTcpClient]:
    client = AsyncModbusTcpClient("127.0.0.1", port=port or 0, timeout=2, retries=0, reconnect_delay=0)
    try:
        assert await client.connect()
        yield client
    finally:
        client.close()


# ------------------------------------------------------------------------------------------------
# Every model over TCP


@pytest.mark.parametrize("name", sorted(MODELS))
async def test_every_model_serves_its_values_and_its_request_limit(name: str) -> None:
    model = MODELS[name]
    n = model.phases
    args = ["--model", name, "--tcp", "127.0.0.1:0", "--device-id", "7", *NO_TICK,
            "--voltage", csv(VOLTS[:n]), "--current", csv(AMPS[:n]), "--power-factor", csv(PF[:n]),
            "--frequency", f"{FREQUENCY_HZ}", "--import-kwh", f"{IMPORT_KWH}", "--export-kwh", f"{EXPORT_KWH}"]
    async with meter_sim(*args) as sim:
        assert sim.banner.startswith(f"{name} (device 7) on tcp://127.0.0.1:{sim.port}: "), sim.banner
        assert "import 1234.560 kWh" in sim.banner
        async with ModbusMeter(name, sim.url, device_id=7) as meter:
            check_sample(model, await meter.read())
            check_sample(model, await meter.read())

        # The model's limit per request, from the first register of each function code's block.
        async with raw_client(sim.port) as client:
            for fc in sorted({r.fc for r in model.registers}):
                first = min(r.address for r in model.registers if r.fc == fc)
                ok = await raw_read(client, fc, first, model.max_count, device_id=7)
                assert not ok.isError(), ok
                assert len(ok.registers) == model.max_count
                if model.max_count < 125:  # 126 is no legal request at all
                    over = await raw_read(client, fc, first, model.max_count + 1, device_id=7)
                    assert over.isError(), over
                    assert over.exception_code == 2


# ------------------------------------------------------------------------------------------------
# The load model


async def test_energy_accrues_with_a_current_set_on_stdin() -> None:
    tick_s = 0.05
    async with meter_sim("--model", "SDM630", "--tcp", "127.0.0.1:0", "--import-kwh", "0",
                         "--current", "0", "--tick", f"{tick_s}") as sim:
        async with ModbusMeter("SDM630", sim.url) as meter:
            idle = await meter.read()
            await asyncio.sleep(3 * tick_s)
            assert (await meter.read()).energy_wh_import == idle.energy_wh_import == 0.0

            await sim.send("20\n")
            assert (await sim.line()).strip() == "current 20.0 A: 13800.0 W"
            loop = asyncio.get_running_loop()
            first, t0 = await meter.read(), loop.time()
            await asyncio.sleep(0.6)
            second, t1 = await meter.read(), loop.time()

            assert second.currents_a == (20.0, 20.0, 20.0)
            assert second.power_w == 13800.0
            grown_wh = second.energy_wh_import - first.energy_wh_import
            expected_wh = 13800.0 * (t1 - t0) / 3600
            # Each read sees the energy of the last tick before it: up to a tick (+ scheduling) either way.
            slack_wh = 13800.0 * (2 * tick_s + 0.1) / 3600
            assert abs(grown_wh - expected_wh) <= slack_wh, (grown_wh, expected_wh)
            assert second.energy_wh_export == 0.0

            await sim.send("lots\n")
            assert (await sim.line()).startswith("ignored: ")


async def test_negative_power_factor_exports() -> None:
    async with meter_sim("--model", "SDM630", "--tcp", "127.0.0.1:0", "--current", "10", "--verbose",
                         "--power-factor", "-1", "--import-kwh", "5", "--export-kwh", "0", "--tick", "0.05") as sim:
        async with ModbusMeter("SDM630", sim.url) as meter:
            first = await meter.read()
            await asyncio.sleep(0.3)
            second = await meter.read()
        assert first.power_w == second.power_w == -6900.0
        assert second.energy_wh_import == first.energy_wh_import == 5000.0
        assert first.energy_wh_export is not None
        assert second.energy_wh_export is not None
        assert second.energy_wh_export > first.energy_wh_export
        rest = await sim.stop(signal.SIGINT)
    ticks = re.findall(r"^ +\d+\.\d s: 10\.0 A, -6900\.0 W, import 5\.0000 kWh, export 0\.\d{4} kWh, \d+ requests$",
                       rest, re.MULTILINE)
    assert len(ticks) >= 3, rest  # --verbose: a line per tick
    assert re.search(r"^stopped: import 5\.000 kWh, export 0\.\d{3} kWh$", rest, re.MULTILINE), rest


# ------------------------------------------------------------------------------------------------
# Optional export


async def test_no_export_refuses_the_export_register_only() -> None:
    model = MODELS["EM24"]
    export, imp = register(model, "energy_export"), register(model, "energy_import")
    async with meter_sim("--model", "EM24", "--tcp", "127.0.0.1:0", "--no-export", *NO_TICK) as sim:
        assert "export refused (exception 02)" in sim.banner
        async with raw_client(sim.port) as client:
            refused = await raw_read(client, export.fc, export.address, export.count)
            assert refused.isError(), refused
            assert refused.exception_code == 2
            wider = await raw_read(client, export.fc, export.address - 2, export.count + 4)  # spans it
            assert wider.isError()
            assert wider.exception_code == 2
            answered = await raw_read(client, imp.fc, imp.address, imp.count)
            assert not answered.isError(), answered
            assert answered.registers == [12345, 0]  # 1234.5 kWh x 10, low word first


async def test_export_na_answers_all_ff() -> None:
    model = MODELS["ABB-B23"]
    export = register(model, "energy_export")
    async with meter_sim("--model", "ABB-B23", "--tcp", "127.0.0.1:0", "--export-na", *NO_TICK) as sim:
        assert "export not available (all 0xFF)" in sim.banner
        async with raw_client(sim.port) as client:
            answer = await raw_read(client, export.fc, export.address, export.count)
            assert not answer.isError(), answer
            assert answer.registers == [0xFFFF] * 4


# ------------------------------------------------------------------------------------------------
# RTU




async def test_rtu_over_a_pty_pair_and_silent_to_other_ids(pty_pair: tuple[Path, Path]) -> None:
    a, b = pty_pair
    async with meter_sim("--model", "EM340", "--rtu", str(b), "--baud", "9600", "--parity", "N", "--stopbits", "1",
                         "--device-id", "5", "--current", "10", "--import-kwh", "99.9", "--verbose", *NO_TICK) as sim:
        assert sim.banner.startswith(f"EM340 (device 5) on rtu://{b}?baud=9600&parity=N&stopbits=1: "), sim.banner
        url = MeterUrl.parse(f"rtu://{a}?baud=9600&parity=N&stopbits=1")
        async with ModbusMeter("EM340", url, device_id=5) as meter:
            sample = await meter.read()
        assert sample.currents_a == (10.0, 10.0, 10.0)
        assert sample.power_w == 6900.0
        assert sample.energy_wh_import == 99900.0
        # Another id on the bus gets no answer at all (an RS-485 slave's silence), not an exception.
        loop = asyncio.get_running_loop()
        async with ModbusMeter("EM340", url, device_id=6, timeout_s=0.3) as other:
            t0 = loop.time()
            with pytest.raises(HardwareError, match="meter EM340 at rtu://") as info:
                await other.read()
        assert loop.time() - t0 >= 0.25
        assert "exception response" not in str(info.value)
        assert (await sim.line()).strip() == "no answer to a request for device 6 (this meter is device 5)"


# ------------------------------------------------------------------------------------------------
# The command line


def run_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SIM), *args], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=START_S, check=False)


def test_unknown_model_exits_2_listing_the_supported_ones() -> None:
    done = run_sim("--model", "SDM999", "--tcp", "127.0.0.1:0")
    assert done.returncode == 2
    assert "unknown model 'SDM999'; supported models: " + ", ".join(sorted(MODELS)) in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "SDM630"], "--tcp HOST:PORT or --rtu DEVICE"),
    (["--tcp", "127.0.0.1:0"], "--model is required"),
    (["--model", "SDM630", "--tcp", "localhost"], "is not HOST:PORT"),
    (["--model", "SDM120", "--tcp", "127.0.0.1:0", "--current", "16,16,16"], "give 1 value for a 1-phase meter"),
    (["--model", "SDM630", "--tcp", "127.0.0.1:0", "--current", "16,x"], "--current: '16,x' is not a number"),
    (["--model", "SDM630", "--tcp", "127.0.0.1:0", "--power-factor", "1.5"], "--power-factor: every value must be in"),
    (["--model", "EM340", "--tcp", "127.0.0.1:0", "--import-kwh", "1e12"], "does not fit energy_import (int32"),
    (["--model", "EM24", "--tcp", "127.0.0.1:0", "--no-export", "--export-na"], "not allowed with argument"),
    (["--model", "EM24", "--tcp", "127.0.0.1:0", "--device-id", "248"], "--device-id: 248 is not in 1..247"),
], ids=["no-where", "no-model", "bad-tcp", "phases", "not-a-number", "pf", "too-big", "two-exports", "device-id"])
def test_bad_arguments_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    done = run_sim(*args)
    assert done.returncode == 2, done
    assert message in done.stderr, done.stderr


def test_list_models_and_no_controller_imported() -> None:
    """--list-models names every model; loading the simulator imports no part of the controller
    (only firmware.core, which hal.protocols uses for its event types)."""
    code = (
        "import json, runpy, sys\n"
        f"sys.argv = ['meter_sim.py', '--list-models']\n"
        "try:\n"
        f"    runpy.run_path({str(SIM)!r}, run_name='__main__')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'firmware')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=START_S, check=False)
    assert done.returncode == 0, done.stderr
    *listing, imported = done.stdout.splitlines()
    assert [line.split()[0] for line in listing] == sorted(MODELS)
    modules = json.loads(imported)
    assert all(m == "firmware" or m.startswith("firmware.core") for m in modules), modules


@pytest.mark.parametrize(("model", "flag"), [("EM24", "--no-export"), ("ABB-B23", "--export-na")])
async def test_an_import_only_meter_reads_with_export_absent(model: str, flag: str) -> None:
    """The project's client against an import-only meter: export is None, the rest is read, the meter OK."""
    async with meter_sim("--model", model, "--tcp", "127.0.0.1:0", flag, "--current", "10",
                         "--import-kwh", "1234.5", *NO_TICK) as sim:
        async with ModbusMeter(model, sim.url) as meter:
            sample = await meter.read()
            assert sample.energy_wh_export is None
            assert sample.energy_wh_import == pytest.approx(1_234_500.0, abs=10.0)
            assert sample.currents_a == (pytest.approx(10.0),) * 3
            again = await meter.read()  # and it stays readable
            assert again.energy_wh_export is None
