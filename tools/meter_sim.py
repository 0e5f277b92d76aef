"""A Modbus energy-meter simulator: any model of `hal.meter_maps.MODELS`, over TCP or RTU.

What it is for: standing in for a real energy meter when a technician checks wiring, a USB/RS-485
adapter or a charger config, and for the tests. It serves one meter (one device id) with the
registers exactly where, and encoded exactly as, the model's map says (`hal.meter_codec.encode_register`,
the function code of the map), and everything else of the register block reading 0. A simple load
model runs while it serves: power = sum over the phases of V x I x pf, and every `--tick` seconds (and
when the current changes) the energy counter grows by P x dt / 3 600 000 kWh for the time that really
passed (import when P >= 0; a negative power factor makes the meter export instead). The current can
be changed at runtime by typing it on stdin ("16" or "16,10,0" and Enter).

    python tools/meter_sim.py --model SDM630 --tcp 127.0.0.1:5020 --current 16
    python tools/meter_sim.py --model EM24 --rtu /dev/ttyUSB0 --baud 9600 --parity N --device-id 2 --no-export
    python tools/meter_sim.py --model ABB-B23 --tcp 127.0.0.1:0 --export-na   # port 0: prints the real port
    python tools/meter_sim.py --list-models

It prints one line saying what it serves ("SDM630 (device 1) on tcp://127.0.0.1:5020: 230.0 V, 16.0 A,
11040.0 W, import 1234.500 kWh, export 0.000 kWh"), a line per tick with `--verbose` (and one per
request for another device id), and stops cleanly on SIGINT/SIGTERM (exit 0). Bad arguments exit 2
with argparse's message; a port or serial device that cannot be opened exits 1.

It behaves like the real meters in the ways that break readers:

* a read of more than the model's `max_count` registers answers exception 02 (Illegal Data Address),
  as the EM24-DIN does above 11 (METERS.md §6.6/§6.7);
* `--no-export` refuses any read that touches the export register with exception 02 (an EM24 that
  counts import only, METERS.md §6.6); `--export-na` answers it with all-0xFF words, ABB's
  "not available" (METERS.md §6.4);
* requests for another device id get no answer at all, as on an RS-485 bus (over TCP the client then
  times out, as behind a gateway); writes and bit reads answer exception 01 (Illegal Function).

How it hooks pymodbus 3.16 (server side, read in the installed source): the server is a
`ModbusTcpServer` / `ModbusSerialServer` given a `pymodbus.simulator.SimDevice` with four separate
blocks (coils, discrete inputs, holding, input registers). For each request
`SimRuntime.get_reg_block` first checks that the range lies inside the block (else exception 02), then
awaits the device's `action(function_code, start_address, address, count, registers, set_values)`; an
`ExcCodes` it returns is answered as that exception, and otherwise the answer is sliced from
`registers`, which the action may change in place. `Meter.on_request` is that action: it applies the
request limit and the refusals, and writes the current values into the block just before the slice,
so every answer is fresh without touching pymodbus' internals. Foreign device ids are dropped with the
server's `trace_pdu` hook: `ServerRequestHandler.callback_data` only handles a request if
`trace_pdu(False, pdu)` returns one.

What it must never do:

* import the controller (`firmware.app`, `firmware.config`, ...): it uses only the register maps
  (`hal.meter_maps`) and their encoder (`hal.meter_codec`), so it tests the maps' wire format from
  outside and cannot be driven by the code it checks;
* invent a wire format: addresses, types, word orders, scales, function codes and request limits come
  from `MODELS` alone; a value that does not fit its register is refused at start (exit 2);
* answer for a device id that is not its own, or leave the port open after SIGINT/SIGTERM.

Standard: Modbus Application Protocol Specification V1.1b3 (FC03/FC04, at most 125 registers per
request, exception codes 01/02), Modbus over Serial Line V1.02 (RTU framing; a slave does not answer
requests for other addresses) and Modbus Messaging on TCP/IP V1.0b, as implemented by pymodbus 3.16.
Register maps: /work/shared/METERS.md §6 through `hal.meter_maps`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pymodbus.constants import ExcCodes  # noqa: E402
from pymodbus.framer import FramerType  # noqa: E402
from pymodbus.pdu import ModbusPDU  # noqa: E402
from pymodbus.server import ModbusSerialServer, ModbusTcpServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402

from hal.meter_codec import encode_register  # noqa: E402
from hal.meter_maps import MODELS, MeterModel, Register  # noqa: E402

log = logging.getLogger("meter_sim")

#: Modbus Application Protocol V1.1b3 §6.3/§6.4: at most 125 registers per FC03/FC04 request.
MODBUS_MAX_COUNT: Final = 125
#: W x s per kWh.
WS_PER_KWH: Final = 3_600_000.0
ENERGY: Final = frozenset({"energy_import", "energy_export"})
PHASES: Final = ("l1", "l2", "l3")


# --------------------------------------------------------------------------------------------------
# What the meter measures


@dataclass(slots=True, kw_only=True)
class Measurement:
    """The simulated meter's readings in wire units (V, A, Hz, kWh), three phases (a 1-phase model
    uses L1 only), and the load model that makes energy accrue."""

    phases: int
    voltage_v: tuple[float, float, float]
    current_a: tuple[float, float, float]
    power_factor: tuple[float, float, float]
    frequency_hz: float
    import_kwh: float
    export_kwh: float
    #: When energy was last accrued (loop time, s); None before the load model starts.
    accrued_at_s: float | None = None

    def power_w(self) -> float:
        """Active power, import positive: the sum of V x I x pf over the model's phases."""
        return sum(
            v * i * pf
            for v, i, pf in list(zip(self.voltage_v, self.current_a, self.power_factor, strict=True))[: self.phases]
        )

    def accrue(self, dt_s: float) -> None:
        """`dt_s` seconds at the present power: import grows while P >= 0, export while P < 0."""
        energy_kwh = self.power_w() * dt_s / WS_PER_KWH
        if energy_kwh >= 0:
            self.import_kwh += energy_kwh
        else:
            self.export_kwh -= energy_kwh

    def advance_to(self, now_s: float) -> None:
        """Accrue the energy of the time since the last call at the present power."""
        if self.accrued_at_s is not None:
            self.accrue(now_s - self.accrued_at_s)
        self.accrued_at_s = now_s

    def wire_value(self, quantity: str, power_sign: int) -> float:
        """The value of one map quantity, in the meter's own sign convention."""
        match quantity:
            case "power_total":
                return power_sign * self.power_w()
            case "frequency":
                return self.frequency_hz
            case "energy_import":
                return self.import_kwh
            case "energy_export":
                return self.export_kwh
        kind, _, phase = quantity.partition("_")
        n = PHASES.index(phase)
        return self.voltage_v[n] if kind == "voltage" else self.current_a[n]


def quantised(reg: Register, value: float) -> float:
    """`value` as a whole number of `reg.scale` steps for the integer types (energy counters round
    down, as a meter's counter does; everything else to the nearest step); float32 unchanged."""
    if reg.dtype == "float32":
        return value
    step = Fraction(reg.scale).limit_denominator(1_000_000)
    steps = Fraction(repr(value)) / step
    n = math.floor(steps) if reg.quantity in ENERGY else round(steps)
    return float(n * step)


def encode(reg: Register, value: float) -> list[int]:
    """The register words for `value`; ValueError if it does not fit the register's type."""
    try:
        return encode_register(reg, quantised(reg, value))
    except (ValueError, OverflowError, struct.error) as exc:
        raise ValueError(f"{value:g} does not fit {reg.quantity} ({reg.dtype}, scale {reg.scale:g}): {exc}") from exc


# --------------------------------------------------------------------------------------------------
# The Modbus device


def block_span(model: MeterModel, fc: int) -> tuple[int, int] | None:
    """(first address, number of registers) of the block holding the model's `fc` registers: from
    the lowest register to the highest, and at least `MODBUS_MAX_COUNT` long, so that any legal request
    starting at the first register is inside the block and only the model's limit refuses it."""
    regs = [r for r in model.registers if r.fc == fc]
    if not regs:
        return None
    first = min(r.address for r in regs)
    end = max(max(r.end for r in regs), first + MODBUS_MAX_COUNT)
    return first, min(end, 0x10000) - first


class Meter:
    """One simulated meter: its model, device id, measurement and how it answers."""

    def __init__(self, model: MeterModel, device_id: int, measurement: Measurement, *, export: str = "normal",
                 on_foreign: Callable[[int], None] | None = None) -> None:
        if export not in ("normal", "refused", "not-available"):
            raise ValueError(f"export: {export!r} is not normal, refused or not-available")
        self.model: Final = model
        self.device_id: Final = device_id
        self.measurement: Final = measurement
        self.export: Final = export
        self.on_foreign = on_foreign
        self.requests = 0
        self._export_regs: Final = tuple(r for r in model.registers if r.quantity == "energy_export")
        for reg in model.registers:  # refuse values that do not fit now, not on the first request
            self._words(reg)

    def _words(self, reg: Register) -> list[int]:
        if reg.quantity == "energy_export" and self.export == "not-available":
            return [0xFFFF] * reg.count
        return encode(reg, self.measurement.wire_value(reg.quantity, self.model.power_sign))

    def device(self) -> SimDevice:
        """The pymodbus device: coils and discrete inputs (refused by `on_request`), and one block of
        holding and one of input registers (INVALID, i.e. exception 02, if the model has none)."""
        blocks: list[list[SimData]] = []
        for fc in (3, 4):
            span = block_span(self.model, fc)
            if span is None:
                blocks.append([SimData(0, datatype=DataType.INVALID)])
            else:
                blocks.append([SimData(span[0], values=[0] * span[1], datatype=DataType.REGISTERS)])
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(self.device_id, simdata=(bits, list(bits), blocks[0], blocks[1]), action=self.on_request)

    async def on_request(self, function_code: int, start_address: int, address: int, count: int,
                         registers: list[int], set_values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus' `SimDevice.action`: the limit and refusals, then fresh values into `registers`."""
        self.requests += 1
        if set_values is not None or function_code not in (3, 4):
            return ExcCodes.ILLEGAL_FUNCTION  # read-only; no coils or discrete inputs
        if count > self.model.max_count:
            return ExcCodes.ILLEGAL_ADDRESS  # as the real meter answers an over-long request
        if self.export == "refused" and any(
            r.fc == function_code and r.address < address + count and address < r.end for r in self._export_regs
        ):
            return ExcCodes.ILLEGAL_ADDRESS
        for reg in self.model.registers:
            if reg.fc == function_code:
                offset = reg.address - start_address
                registers[offset : offset + reg.count] = self._words(reg)
        return None

    def filter_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """pymodbus' server `trace_pdu`: drop requests for other device ids (no answer, as on RS-485)."""
        if sending or pdu.dev_id == self.device_id:
            return pdu
        log.debug("ignored a request for device %d", pdu.dev_id)
        if self.on_foreign is not None:
            self.on_foreign(pdu.dev_id)
        return None


# --------------------------------------------------------------------------------------------------
# Command line


def _floats(text: str) -> tuple[float, ...]:
    """argparse type: "16" or "16,16,10" -> finite floats."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return values


def _float(text: str) -> float:
    """argparse type: one finite float."""
    values = _floats(text)
    if len(values) != 1:
        raise argparse.ArgumentTypeError(f"{text!r}: one number expected")
    return values[0]


def _three(values: tuple[float, ...]) -> tuple[float, float, float]:
    """One value per phase (L1, L2, L3) from 1, 2 or 3 values; the last one repeats."""
    padded = (*values, values[-1], values[-1])
    return padded[0], padded[1], padded[2]


def _tcp(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (port 0..65535; 0 picks a free one)")
    return host.strip("[]"), int(port)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meter_sim.py",
        description="Modbus energy-meter simulator: serves one meter of a supported model over TCP or RTU.",
        epilog="Per-phase options take one value (all phases) or one per phase: --current 16,16,10. "
               "Type a current (e.g. 16 or 16,10,0) and Enter on stdin to change it while it runs.",
    )
    p.add_argument("--list-models", action="store_true", help="list the supported models and exit")
    p.add_argument("--model", help=f"meter model: {', '.join(sorted(MODELS))}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--tcp", type=_tcp, metavar="HOST:PORT", help="serve Modbus TCP (port 0: a free port)")
    where.add_argument("--rtu", metavar="DEVICE", help="serve Modbus RTU on a serial device or pty")
    p.add_argument("--baud", type=int, default=9600, help="RTU baud rate (default 9600)")
    p.add_argument("--parity", choices=("N", "E", "O"), default="N", help="RTU parity (default N)")
    p.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="RTU stop bits (default 1)")
    p.add_argument("--device-id", type=int, default=1, help="Modbus device id 1..247 (default 1)")
    p.add_argument("--voltage", type=_floats, default=(230.0,), metavar="V[,V,V]", help="phase voltage (230)")
    p.add_argument("--current", type=_floats, default=(0.0,), metavar="A[,A,A]", help="phase current (0)")
    p.add_argument("--power-factor", type=_floats, default=(1.0,), metavar="PF[,PF,PF]",
                   help="power factor -1..1; negative exports (1)")
    p.add_argument("--frequency", type=_float, default=50.0, metavar="HZ", help="frequency (50)")
    p.add_argument("--import-kwh", type=_float, default=1234.5, metavar="KWH", help="import counter at start (1234.5)")
    p.add_argument("--export-kwh", type=_float, default=0.0, metavar="KWH", help="export counter at start (0)")
    export = p.add_mutually_exclusive_group()
    export.add_argument("--no-export", action="store_true",
                        help="answer exception 02 for the export register (an import-only EM24)")
    export.add_argument("--export-na", action="store_true",
                        help="answer all-0xFF for the export register (ABB's 'not available')")
    p.add_argument("--tick", type=_float, default=1.0, metavar="S", help="load-model step in seconds (1.0)")
    p.add_argument("-v", "--verbose", action="store_true", help="print a line per tick")
    p.add_argument("--debug", action="store_true", help="log pymodbus' frames (DEBUG) to stderr")
    return p


def _per_phase(p: argparse.ArgumentParser, name: str, values: tuple[float, ...], phases: int,
               ok: Callable[[float], bool], rule: str) -> tuple[float, float, float]:
    if len(values) not in (1, phases):
        counts = "1 value" if phases == 1 else f"1 value or {phases} (one per phase)"
        p.error(f"--{name}: give {counts} for a {phases}-phase meter, not {len(values)}")
    if not all(ok(v) for v in values):
        p.error(f"--{name}: every value must be {rule}, got {','.join(f'{v:g}' for v in values)}")
    return _three(values)


def _model(p: argparse.ArgumentParser, name: str | None) -> MeterModel:
    if name is None:
        p.error(f"--model is required (one of: {', '.join(sorted(MODELS))})")
    by_upper = {m.upper(): m for m in MODELS}
    if name.upper() not in by_upper:
        p.error(f"unknown model {name!r}; supported models: {', '.join(sorted(MODELS))}")
    return MODELS[by_upper[name.upper()]]


def measurement_from(p: argparse.ArgumentParser, args: argparse.Namespace, model: MeterModel) -> Measurement:
    n = model.phases
    scalars = (("frequency", args.frequency > 0, "positive"), ("tick", args.tick > 0, "positive"),
               ("import-kwh", args.import_kwh >= 0, ">= 0"), ("export-kwh", args.export_kwh >= 0, ">= 0"))
    for name, good, rule in scalars:
        if not good:
            p.error(f"--{name}: must be {rule}")
    return Measurement(
        phases=n,
        voltage_v=_per_phase(p, "voltage", args.voltage, n, lambda v: v >= 0, ">= 0"),
        current_a=_per_phase(p, "current", args.current, n, lambda v: v >= 0, ">= 0"),
        power_factor=_per_phase(p, "power-factor", args.power_factor, n, lambda v: -1 <= v <= 1, "in -1..1"),
        frequency_hz=args.frequency,
        import_kwh=args.import_kwh,
        export_kwh=args.export_kwh,
    )


def parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Meter | None]:
    """Arguments, and the meter they describe (None for --list-models). Exits 2 on bad arguments."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.list_models:
        return args, None
    model = _model(p, args.model)
    if args.tcp is None and args.rtu is None:
        p.error("say where to serve: --tcp HOST:PORT or --rtu DEVICE")
    if not 1 <= args.device_id <= 247:
        p.error(f"--device-id: {args.device_id} is not in 1..247")
    if args.baud <= 0:
        p.error(f"--baud: {args.baud} is not a positive baud rate")
    export = "refused" if args.no_export else "not-available" if args.export_na else "normal"
    try:
        meter = Meter(model, args.device_id, measurement_from(p, args, model), export=export)
    except ValueError as exc:
        p.error(f"{model.name}: {exc}")
    return args, meter


def list_models() -> str:
    short = {"voltage": "V", "current": "I", "power_total": "P", "frequency": "f",
             "energy_import": "import", "energy_export": "export"}
    lines = []
    for name in sorted(MODELS):
        m = MODELS[name]
        shown: list[str] = []
        for r in m.registers:
            label = short.get(r.quantity, short.get(r.quantity.partition("_")[0], r.quantity))
            if label not in shown:
                shown.append(label)
        fcs = "/".join(f"FC{fc:02d}" for fc in sorted({r.fc for r in m.registers}))
        lines.append(f"{name:<12} {m.phases}-phase  {fcs}  max {m.max_count:>3} registers/request  {' '.join(shown)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Running


def _phases(values: tuple[float, ...], phases: int) -> str:
    shown = values[:phases]
    return f"{shown[0]:.1f}" if len(set(shown)) == 1 else "/".join(f"{v:.1f}" for v in shown)


def describe(meter: Meter, where: str) -> str:
    m = meter.measurement
    export = {"refused": "export refused (exception 02)",
              "not-available": "export not available (all 0xFF)"}.get(meter.export, f"export {m.export_kwh:.3f} kWh")
    return (f"{meter.model.name} (device {meter.device_id}) on {where}: {_phases(m.voltage_v, m.phases)} V, "
            f"{_phases(m.current_a, m.phases)} A, {m.power_w():.1f} W, import {m.import_kwh:.3f} kWh, {export}")


def set_current(meter: Meter, line: str, now_s: float) -> str:
    """Apply one stdin line ("16" or "16,10,0") at loop time `now_s` (the energy until then at the
    old current); returns what to print."""
    m = meter.measurement
    try:
        values = _floats(line.strip())
    except argparse.ArgumentTypeError as exc:
        return f"ignored: {exc}"
    if len(values) not in (1, m.phases) or any(v < 0 for v in values):
        return f"ignored: give 1 current or {m.phases} (one per phase), each >= 0 A"
    m.advance_to(now_s)
    m.current_a = _three(values)
    return f"current {_phases(m.current_a, m.phases)} A: {m.power_w():.1f} W"


def _watch_stdin(loop: asyncio.AbstractEventLoop, meter: Meter) -> bool:
    """Read currents from stdin if it is a pipe or terminal; False if it cannot be watched."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    pending = bytearray()

    def readable() -> None:
        # No O_NONBLOCK on fd (a terminal's flags are shared with the shell): a readable fd gives
        # what is there without blocking.
        try:
            data = os.read(fd, 4096)
        except OSError:  # the terminal went away
            data = b""
        if not data:
            loop.remove_reader(fd)
            return
        pending.extend(data)
        while (nl := pending.find(b"\n")) >= 0:
            line = pending[:nl].decode(errors="replace")
            del pending[: nl + 1]
            if line.strip():
                print(set_current(meter, line, loop.time()), flush=True)

    try:
        loop.add_reader(fd, readable)
    except (OSError, ValueError):  # /dev/null, a regular file, a closed stdin: nothing to watch
        return False
    return True


async def serve(args: argparse.Namespace, meter: Meter) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.verbose:
        meter.on_foreign = lambda dev_id: print(
            f"no answer to a request for device {dev_id} (this meter is device {meter.device_id})", flush=True)
    server: ModbusTcpServer | ModbusSerialServer
    # pymodbus' server handles a request only if trace_pdu returns one (ServerRequestHandler.callback_data).
    trace_pdu = meter.filter_pdu
    if args.tcp is not None:
        server = ModbusTcpServer(meter.device(), address=args.tcp, trace_pdu=trace_pdu)  # type: ignore[arg-type]
    else:
        try:
            os.close(os.open(args.rtu, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
        except OSError as exc:
            print(f"meter_sim: cannot open {args.rtu}: {exc.strerror}"
                  + (" (is the user in the dialout group?)" if exc.errno == 13 else ""), file=sys.stderr)
            return 1
        server = ModbusSerialServer(meter.device(), framer=FramerType.RTU, port=args.rtu, baudrate=args.baud,
                                    bytesize=8, parity=args.parity, stopbits=args.stopbits,
                                    trace_pdu=trace_pdu)  # type: ignore[arg-type]
    try:
        await server.serve_forever(background=True)
    except (OSError, RuntimeError) as exc:
        where = f"{args.tcp[0]}:{args.tcp[1]}" if args.tcp is not None else args.rtu
        print(f"meter_sim: cannot serve on {where}: {exc}", file=sys.stderr)
        await server.shutdown()  # type: ignore[no-untyped-call]
        return 1
    if args.tcp is not None:
        host, port = server.transport.sockets[0].getsockname()[:2]  # type: ignore[attr-defined]  # an asyncio.Server
        where = f"tcp://{host}:{port}"
    else:
        where = f"rtu://{args.rtu}?baud={args.baud}&parity={args.parity}&stopbits={args.stopbits}"
    print(describe(meter, where), flush=True)
    watching = _watch_stdin(loop, meter)
    try:
        await run_load(meter, args.tick, args.verbose, stop)
    finally:
        if watching:
            loop.remove_reader(sys.stdin.fileno())
        await server.shutdown()  # type: ignore[no-untyped-call]
    m = meter.measurement
    print(f"stopped: import {m.import_kwh:.3f} kWh, export {m.export_kwh:.3f} kWh", flush=True)
    return 0


async def run_load(meter: Meter, tick_s: float, verbose: bool, stop: asyncio.Event) -> None:
    """The load model: every `tick_s` (and at the stop) the energy grows by P x dt for the time that
    really passed."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    m = meter.measurement
    m.advance_to(start)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(tick_s):
                await stop.wait()
        now = loop.time()
        m.advance_to(now)
        if verbose:
            print(f"{now - start:9.1f} s: {_phases(m.current_a, m.phases)} A, {m.power_w():.1f} W, "
                  f"import {m.import_kwh:.4f} kWh, export {m.export_kwh:.4f} kWh, {meter.requests} requests",
                  flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args, meter = parse(argv)
    if meter is None:
        print(list_models())
        return 0
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="meter_sim: %(name)s: %(message)s", stream=sys.stderr)
    return asyncio.run(serve(args, meter))


if __name__ == "__main__":
    sys.exit(main())
