"""Modbus servers for the meter tests: pymodbus' own server (TCP on 127.0.0.1, or RTU on a pty) holding
one emulated meter, or several on one RTU line, and a raw asyncio server that answers garbage.

The emulated meters are built from `METER_FORMATS`, a second transcription of METERS.md that does not
use hal/meter.py's tables or encoder: values are encoded with pymodbus' `convert_to_registers` in each
meter's exact wire format, so a wrong address, type, word order or scale in the maps shows up as a
wrong sample. Each emulated meter also behaves like the real one towards requests (a `SimDevice`
action): a request for more registers than the model answers at once gets exception 02 (the limits
are transcribed from METERS.md too, not taken from the maps), a meter with `documented_only` refuses
any request touching a register its manual does not list, and `refuse` makes it refuse chosen
addresses (an EM24 without the export counter). Every request that reaches a meter is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from hal.protocols import MeterSample

DT = ModbusClientMixin.DATATYPE
LOOPBACK = "127.0.0.1"

# ------------------------------------------------------------------------------------------------
# The meters' wire formats, transcribed from METERS.md §6.1-6.6 (independently of hal/meter.py):
# quantity -> (address, pymodbus data type, scale); plus the model's function code, word order and the
# most registers it answers in one request: METERS.md §6.1/§6.7 "Eastron limits a request to 40 values
# (80 registers)", §6.7 "the EM340 20", §6.6 "at most 11 registers per request" (EM24-DIN). §6.4 states
# no limit for the ABB B23/B24, so its emulation answers up to the Modbus limit of 125 (Application
# Protocol §6.3/§6.4).


@dataclass(frozen=True)
class Format:
    fc: int
    word_order: str
    registers: dict[str, tuple[int, DT, float]]
    max_count: int
    phases: int = 3
    #: Refuse (exception 02) any request touching a register not in `registers` (SDM72D-M v1: METERS.md
    #: §6.3 lists only these for it; the others are undocumented).
    documented_only: bool = False


_SDM630 = {
    "voltage_l1": (0x00, DT.FLOAT32, 1.0), "voltage_l2": (0x02, DT.FLOAT32, 1.0), "voltage_l3": (0x04, DT.FLOAT32, 1.0),
    "current_l1": (0x06, DT.FLOAT32, 1.0), "current_l2": (0x08, DT.FLOAT32, 1.0), "current_l3": (0x0A, DT.FLOAT32, 1.0),
    "power_total": (0x34, DT.FLOAT32, 1.0), "frequency": (0x46, DT.FLOAT32, 1.0),
    "energy_import": (0x48, DT.FLOAT32, 1.0), "energy_export": (0x4A, DT.FLOAT32, 1.0),
}
_CG_VIP = {
    "voltage_l1": (0x00, DT.INT32, 0.1), "voltage_l2": (0x02, DT.INT32, 0.1), "voltage_l3": (0x04, DT.INT32, 0.1),
    "current_l1": (0x0C, DT.INT32, 0.001), "current_l2": (0x0E, DT.INT32, 0.001), "current_l3": (0x10, DT.INT32, 0.001),
    "power_total": (0x28, DT.INT32, 0.1),
}
EASTRON_LIMIT, EM340_LIMIT, EM24_LIMIT, MODBUS_LIMIT = 80, 20, 11, 125
METER_FORMATS: dict[str, Format] = {
    "SDM630": Format(4, "big", _SDM630, EASTRON_LIMIT),
    "SDM72D-M-2": Format(4, "big", _SDM630, EASTRON_LIMIT),
    "SDM72D-M": Format(4, "big", {q: _SDM630[q] for q in ("power_total", "energy_import", "energy_export")},
                       EASTRON_LIMIT, documented_only=True),
    "SDM120": Format(4, "big", {
        "voltage_l1": (0x00, DT.FLOAT32, 1.0), "current_l1": (0x06, DT.FLOAT32, 1.0),
        "power_total": (0x0C, DT.FLOAT32, 1.0), "frequency": (0x46, DT.FLOAT32, 1.0),
        "energy_import": (0x48, DT.FLOAT32, 1.0), "energy_export": (0x4A, DT.FLOAT32, 1.0),
    }, EASTRON_LIMIT, phases=1),
    "ABB-B23": Format(3, "big", {
        "voltage_l1": (0x5B00, DT.UINT32, 0.1), "voltage_l2": (0x5B02, DT.UINT32, 0.1),
        "voltage_l3": (0x5B04, DT.UINT32, 0.1),
        "current_l1": (0x5B0C, DT.UINT32, 0.01), "current_l2": (0x5B0E, DT.UINT32, 0.01),
        "current_l3": (0x5B10, DT.UINT32, 0.01),
        "power_total": (0x5B14, DT.INT32, 0.01), "frequency": (0x5B2C, DT.UINT16, 0.01),
        "energy_import": (0x5000, DT.UINT64, 0.01), "energy_export": (0x5004, DT.UINT64, 0.01),
    }, MODBUS_LIMIT),
    "EM340": Format(4, "little", {
        **_CG_VIP, "frequency": (0x33, DT.INT16, 0.1),
        "energy_import": (0x34, DT.INT32, 0.1), "energy_export": (0x4E, DT.INT32, 0.1),
    }, EM340_LIMIT),
    # METERS.md §6.6: kWh (+) TOT at 0x3E; 0x42 is the user-resettable partial counter (EM24_PARTIAL).
    "EM24": Format(4, "little", {
        **_CG_VIP, "frequency": (0x37, DT.INT16, 0.1),
        "energy_import": (0x3E, DT.INT32, 0.1), "energy_export": (0x5C, DT.INT32, 0.1),
    }, EM24_LIMIT),
}
#: The EM24's partial import counter: (address, type, scale) as for the quantities above.
EM24_PARTIAL = (0x42, DT.INT32, 0.1)


@dataclass(frozen=True)
class Request:
    """One request as it reached an emulated meter."""

    device_id: int
    fc: int
    address: int
    count: int


@dataclass
class RequestLog:
    """What the emulated meters were asked, in order of arrival."""

    requests: list[Request] = field(default_factory=list)

    def runs(self) -> list[tuple[int, int]]:
        """(device id, number of requests) for each run of consecutive requests to one device."""
        out: list[tuple[int, int]] = []
        for r in self.requests:
            if out and out[-1][0] == r.device_id:
                out[-1] = (r.device_id, out[-1][1] + 1)
            else:
                out.append((r.device_id, 1))
        return out


def encode_registers(value: float, datatype: DT, scale: float, word_order: str) -> list[int]:
    if datatype is DT.FLOAT32:
        return ModbusClientMixin.convert_to_registers(value, datatype, word_order=word_order)  # type: ignore[arg-type]
    raw = round(value / scale)
    assert abs(raw * scale - value) < scale / 1000, f"{value} is not a whole number of {scale} steps"
    return ModbusClientMixin.convert_to_registers(raw, datatype, word_order=word_order)  # type: ignore[arg-type]


def meter_device(
    model: str, wire: dict[str, float], device_id: int = 1, overrides: dict[int, int] | None = None, *,
    refuse: Collection[int] = (), log: RequestLog | None = None,
) -> SimDevice:
    """A pymodbus `SimDevice` holding `wire` in `model`'s format: one block of registers per
    function code from the lowest to the highest address used (unused registers read 0, as
    reserved registers do on real meters), so batched reads may read through gaps unless the format is
    `documented_only`. `overrides` replaces single registers (address -> raw word) after encoding.

    Like the real meter, it answers exception 02 to a request for more than the format's `max_count`
    registers, and to any request touching an address in `refuse`. `log` records every request."""
    fmt = METER_FORMATS[model]
    words: dict[int, int] = {}
    for quantity, (address, datatype, scale) in fmt.registers.items():
        for i, w in enumerate(encode_registers(wire[quantity], datatype, scale, fmt.word_order)):
            assert address + i not in words, f"{model}: overlapping registers at 0x{address + i:04X}"
            words[address + i] = w
    documented = frozenset(words) | frozenset(overrides or {})
    words |= overrides or {}
    first, last = min(words), max(words)
    block = [SimData(first, values=[words.get(a, 0) for a in range(first, last + 1)], datatype=DataType.REGISTERS)]
    unused = [SimData(0, values=[0], datatype=DataType.REGISTERS)]
    holding, inputs = (block, unused) if fmt.fc == 3 else (unused, block)
    refused = frozenset(refuse) | (frozenset(range(first, last + 1)) - documented if fmt.documented_only else set())

    async def behave(fc: int, _start: int, address: int, count: int, _registers: list[int],
                     _set_values: Sequence[int] | Sequence[bool] | None) -> ExcCodes | None:
        if log is not None:
            log.requests.append(Request(device_id, fc, address, count))
        if count > fmt.max_count or refused.intersection(range(address, address + count)):
            return ExcCodes.ILLEGAL_ADDRESS
        return None

    # Non-shared mode: (coils, discrete inputs, holding registers, input registers).
    return SimDevice(device_id, simdata=(_bits(), _bits(), holding, inputs), action=behave)


def _bits() -> list[SimData]:
    return [SimData(0, values=[False] * 16, datatype=DataType.BITS)]


def silent_to(known_ids: set[int], unit_byte: int) -> Callable[[bool, bytes], bytes]:
    """A server `trace_packet` that drops answers to device ids not on the bus, like RS-485 slaves
    do (pymodbus' own server answers them with an exception response instead)."""

    def trace(sending: bool, data: bytes) -> bytes:
        if sending and len(data) > unit_byte and data[unit_byte] not in known_ids:
            return b""
        return data

    return trace


class Servers:
    """Starts pymodbus servers and stops whatever is still running at the end of the test."""

    def __init__(self) -> None:
        self._running: list[ModbusTcpServer | ModbusSerialServer] = []

    async def tcp(self, device: SimDevice, port: int = 0, *, silent_to_others: bool = False) -> int:
        trace = silent_to({device.id}, unit_byte=6) if silent_to_others else None
        server = ModbusTcpServer(device, address=(LOOPBACK, port), trace_packet=trace)
        await server.serve_forever(background=True)
        self._running.append(server)
        return int(server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def rtu(self, device: SimDevice | list[SimDevice], tty: Path) -> ModbusSerialServer:
        """One RTU line on `tty` with one or several meters (different device ids) on it."""
        devices = device if isinstance(device, list) else [device]
        trace = silent_to({d.id for d in devices}, unit_byte=0)
        server = ModbusSerialServer(devices, framer=FramerType.RTU, port=str(tty), baudrate=9600, trace_packet=trace)
        await server.serve_forever(background=True)
        self._running.append(server)
        return server

    async def stop_all(self) -> None:
        while self._running:
            await self._running.pop().shutdown()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def socat_pty_pair(directory: Path) -> AsyncIterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals from `socat` (links `a` and `b` in `directory`): a null-modem cable for
    the RTU tests. Raises AssertionError with socat's output if it does not start."""
    socat = shutil.which("socat")
    assert socat is not None, "socat is not installed, and the Modbus RTU tests need it: apt-get install socat"
    a, b = directory / "a", directory / "b"
    proc = await asyncio.create_subprocess_exec(
        socat, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    log: list[bytes] = []
    try:
        async with asyncio.timeout(5):
            while b"starting data transfer loop" not in (line := await proc.stderr.readline()):
                log.append(line)
                assert line, f"socat exited early: {b''.join(log).decode(errors='replace')}"
        yield a, b
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        await proc.stderr.read()


# ------------------------------------------------------------------------------------------------
# A server that answers garbage


def _frame(tid: bytes, unit: int, pdu: bytes) -> bytes:
    """A Modbus/TCP frame: MBAP header (transaction id, protocol 0, length, unit) and the PDU."""
    return tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu


def _response(tid: bytes, unit: int, fc: int, registers: list[int]) -> bytes:
    return _frame(tid, unit, bytes([fc, 2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers))


def _broken(mode: str, tid: bytes, unit: int, fc: int, count: int, rng: random.Random) -> bytes | None:
    """A reply that is no frame, or a frame that is broken in itself; None closes the connection."""
    good = _response(tid, unit, fc, [0x4366] * count)
    match mode:
        case "random":
            return rng.randbytes(rng.randint(1, 300))
        case "random_pdu":  # a well-formed MBAP header around random bytes
            return _frame(tid, unit, rng.randbytes(rng.randint(1, 60)))
        case "truncated":
            return good[: len(good) // 2]
        case "short":
            return _response(tid, unit, fc, [0x4366] * (count - 1))
        case "odd_byte_count":
            return _frame(tid, unit, bytes([fc, 2 * count - 1]) + bytes(2 * count - 1))
        case "byte_count_lie":
            return _frame(tid, unit, bytes([fc, 250]) + bytes(4))
        case "silent":
            return b""
        case "close":
            return None
    raise AssertionError(mode)


def _wrong(mode: str, tid: bytes, unit: int, fc: int, count: int) -> bytes:
    """A well-formed frame that does not answer the request, or answers it with a NaN."""
    match mode:
        case "wrong_function":
            return _response(tid, unit, 3 if fc == 4 else 4, [0x4366] * count)
        case "unknown_function":
            return _response(tid, unit, 0x41, [0] * count)
        case "wrong_tid":
            return _response(((int.from_bytes(tid, "big") + 1) & 0xFFFF).to_bytes(2, "big"), unit, fc, [0x4366] * count)
        case "wrong_unit":
            return _response(tid, (unit + 1) & 0xFF, fc, [0x4366] * count)
        case "bad_protocol_id":
            good = _response(tid, unit, fc, [0x4366] * count)
            return good[:2] + b"\x12\x34" + good[4:]
        case "nan":
            return _response(tid, unit, fc, [0x7FC0, 0x0000] * (count // 2))
    raise AssertionError(mode)


BROKEN_MODES = ["random", "random_pdu", "truncated", "short", "odd_byte_count", "byte_count_lie"]
WRONG_MODES = ["wrong_function", "unknown_function", "wrong_tid", "wrong_unit", "bad_protocol_id", "nan"]
GARBAGE_MODES = [*BROKEN_MODES, *WRONG_MODES, "silent", "close"]


def _garbage(mode: str, tid: bytes, unit: int, fc: int, count: int, rng: random.Random) -> bytes | None:
    """The reply to one request; None closes the connection."""
    if mode in WRONG_MODES:
        return _wrong(mode, tid, unit, fc, count)
    return _broken(mode, tid, unit, fc, count, rng)


@contextlib.asynccontextmanager
async def garbage_server(mode: str, seed: int = 0) -> AsyncIterator[int]:
    """A raw TCP server on 127.0.0.1 that reads Modbus/TCP requests and answers per `_garbage`."""
    rng = random.Random(seed)
    writers: set[asyncio.StreamWriter] = set()
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        if (task := asyncio.current_task()) is not None:
            handlers.add(task)
        try:
            while True:
                head = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(head[4:6], "big") - 1)
                reply = _garbage(mode, head[0:2], head[6], body[0], int.from_bytes(body[3:5], "big"), rng)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            writers.discard(writer)

    server = await asyncio.start_server(handle, LOOPBACK, 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in list(writers):  # ends each handler's read with EOF (no cancel: 3.11's streams log those)
            w.close()
        await asyncio.gather(*handlers)
        await server.wait_closed()


# ------------------------------------------------------------------------------------------------
# What the meter tests read: known values, and the sample a correct reader makes of them.

#: Short timeout for the failure tests; a read must fail within this plus scheduling slack.
FAST_S = 0.3
SLACK_S = 0.25

#: What the meters measure (V, A, W, Hz, kWh); exact in float32 and in whole 0.1/0.01/0.001 steps.
IMPORTING = {
    "voltage_l1": 230.5, "voltage_l2": 231.5, "voltage_l3": 229.5,
    "current_l1": 16.5, "current_l2": 15.25, "current_l3": 14.75,
    "power_total": 11040.5, "frequency": 49.5, "energy_import": 1234.5, "energy_export": 12.5,
}


def expected_sample(model: str, wire: dict[str, float], *, export: bool = True) -> MeterSample:
    """The sample a correct reader returns: energies in Wh, unmeasured quantities 0.0, an export the meter
    does not provide (`export=False`) None."""
    present = METER_FORMATS[model].registers

    def get(q: str) -> float:
        return wire[q] if q in present else 0.0

    return MeterSample(
        energy_wh_import=wire["energy_import"] * 1000,
        energy_wh_export=wire["energy_export"] * 1000 if export else None,
        power_w=wire["power_total"],
        currents_a=(get("current_l1"), get("current_l2"), get("current_l3")),
        voltages_v=(get("voltage_l1"), get("voltage_l2"), get("voltage_l3")),
        frequency_hz=get("frequency"),
    )
