"""`hal.meter.ModbusMeter` against real Modbus servers: pymodbus' own server over TCP (127.0.0.1,
ephemeral port) and over RTU through a `socat` pty pair, plus a raw asyncio server that answers
garbage.

The emulated meters are built from `METER_FORMATS` below, a second transcription of METERS.md that
does not use hal/meter.py's tables or encoder: values are encoded with pymodbus'
`convert_to_registers` in each meter's exact wire format, so a wrong address, type, word order or
scale in the maps shows up as a wrong sample. The values are chosen to be exact in every format
(float32 and the integer scales), so samples are compared with `==`.

Failures must come out as `HardwareError` and nothing else, within the configured timeout, and the
meter must read again once the server is back. Every test is a few hundred milliseconds; an autouse
fixture fails any test that leaves an asyncio task behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware.config import MeterUrl as ConfigMeterUrl
from firmware.core.errors import HardwareError
from hal.meter import MODELS, ModbusMeter
from hal.protocols import MeterSample

pytestmark = pytest.mark.integration

DT = ModbusClientMixin.DATATYPE
LOOPBACK = "127.0.0.1"
#: Short timeout for the failure tests; a read must fail within this plus scheduling slack.
FAST_S = 0.3
SLACK_S = 0.25

# ------------------------------------------------------------------------------------------------
# The meters' wire formats, transcribed from METERS.md §6.1-6.6 (independently of hal/meter.py):
# quantity -> (address, pymodbus data type, scale); plus the model's function code and word order.


@dataclass(frozen=True)
class Format:
    fc: int
    word_order: str
    registers: dict[str, tuple[int, DT, float]]
    phases: int = 3


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
METER_FORMATS: dict[str, Format] = {
    "SDM630": Format(4, "big", _SDM630),
    "SDM72D-M-2": Format(4, "big", _SDM630),
    "SDM72D-M": Format(4, "big", {q: _SDM630[q] for q in ("power_total", "energy_import", "energy_export")}),
    "SDM120": Format(4, "big", {
        "voltage_l1": (0x00, DT.FLOAT32, 1.0), "current_l1": (0x06, DT.FLOAT32, 1.0),
        "power_total": (0x0C, DT.FLOAT32, 1.0), "frequency": (0x46, DT.FLOAT32, 1.0),
        "energy_import": (0x48, DT.FLOAT32, 1.0), "energy_export": (0x4A, DT.FLOAT32, 1.0),
    }, phases=1),
    "ABB-B23": Format(3, "big", {
        "voltage_l1": (0x5B00, DT.UINT32, 0.1), "voltage_l2": (0x5B02, DT.UINT32, 0.1),
        "voltage_l3": (0x5B04, DT.UINT32, 0.1),
        "current_l1": (0x5B0C, DT.UINT32, 0.01), "current_l2": (0x5B0E, DT.UINT32, 0.01),
        "current_l3": (0x5B10, DT.UINT32, 0.01),
        "power_total": (0x5B14, DT.INT32, 0.01), "frequency": (0x5B2C, DT.UINT16, 0.01),
        "energy_import": (0x5000, DT.UINT64, 0.01), "energy_export": (0x5004, DT.UINT64, 0.01),
    }),
    "EM340": Format(4, "little", {
        **_CG_VIP, "frequency": (0x33, DT.INT16, 0.1),
        "energy_import": (0x34, DT.INT32, 0.1), "energy_export": (0x4E, DT.INT32, 0.1),
    }),
    "EM24": Format(4, "little", {
        **_CG_VIP, "frequency": (0x37, DT.INT16, 0.1),
        "energy_import": (0x42, DT.INT32, 0.1), "energy_export": (0x5C, DT.INT32, 0.1),
    }),
}

#: What the meters measure (V, A, W, Hz, kWh); exact in float32 and in whole 0.1/0.01/0.001 steps.
IMPORTING = {
    "voltage_l1": 230.5, "voltage_l2": 231.5, "voltage_l3": 229.5,
    "current_l1": 16.5, "current_l2": 15.25, "current_l3": 14.75,
    "power_total": 11040.5, "frequency": 49.5, "energy_import": 1234.5, "energy_export": 12.5,
}
EXPORTING = IMPORTING | {"power_total": -3500.5, "current_l1": 5.5, "energy_export": 98765.5}


def expected_sample(model: str, wire: dict[str, float]) -> MeterSample:
    """The sample a correct reader returns: energies in Wh, unmeasured quantities 0.0."""
    present = METER_FORMATS[model].registers

    def get(q: str) -> float:
        return wire[q] if q in present else 0.0

    return MeterSample(
        energy_wh_import=wire["energy_import"] * 1000,
        energy_wh_export=wire["energy_export"] * 1000,
        power_w=wire["power_total"],
        currents_a=(get("current_l1"), get("current_l2"), get("current_l3")),
        voltages_v=(get("voltage_l1"), get("voltage_l2"), get("voltage_l3")),
        frequency_hz=get("frequency"),
    )


def encode(value: float, datatype: DT, scale: float, word_order: str) -> list[int]:
    if datatype is DT.FLOAT32:
        return ModbusClientMixin.convert_to_registers(value, datatype, word_order=word_order)  # type: ignore[arg-type]
    raw = round(value / scale)
    assert abs(raw * scale - value) < scale / 1000, f"{value} is not a whole number of {scale} steps"
    return ModbusClientMixin.convert_to_registers(raw, datatype, word_order=word_order)  # type: ignore[arg-type]


def meter_device(
    model: str, wire: dict[str, float], device_id: int = 1, overrides: dict[int, int] | None = None
) -> SimDevice:
    """A pymodbus `SimDevice` holding `wire` in `model`'s format: one block of registers per
    function code from the lowest to the highest address used (unused registers read 0, as
    reserved registers do on real meters), so batched reads may read through gaps. `overrides`
    replaces single registers (address -> raw word) after encoding."""
    fmt = METER_FORMATS[model]
    words: dict[int, int] = {}
    for quantity, (address, datatype, scale) in fmt.registers.items():
        for i, w in enumerate(encode(wire[quantity], datatype, scale, fmt.word_order)):
            assert address + i not in words, f"{model}: overlapping registers at 0x{address + i:04X}"
            words[address + i] = w
    words |= overrides or {}
    first, last = min(words), max(words)
    block = [SimData(first, values=[words.get(a, 0) for a in range(first, last + 1)], datatype=DataType.REGISTERS)]
    unused = [SimData(0, values=[0], datatype=DataType.REGISTERS)]
    holding, inputs = (block, unused) if fmt.fc == 3 else (unused, block)
    # Non-shared mode: (coils, discrete inputs, holding registers, input registers).
    return SimDevice(device_id, simdata=(_bits(), _bits(), holding, inputs))


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


# ------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (e.g. a pymodbus reconnect task)."""
    before = asyncio.all_tasks()
    yield
    for _ in range(3):  # let finished handlers and close callbacks run
        await asyncio.sleep(0.01)
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
    for t in leaked:
        t.cancel()
    assert not leaked, f"leaked tasks: {leaked}"


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

    async def rtu(self, device: SimDevice, tty: Path) -> ModbusSerialServer:
        trace = silent_to({device.id}, unit_byte=0)
        server = ModbusSerialServer(device, framer=FramerType.RTU, port=str(tty), baudrate=9600, trace_packet=trace)
        await server.serve_forever(background=True)
        self._running.append(server)
        return server

    async def stop_all(self) -> None:
        while self._running:
            await self._running.pop().shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    s = Servers()
    try:
        yield s
    finally:
        await s.stop_all()


@pytest.fixture
def meters() -> Iterator[Callable[..., ModbusMeter]]:
    """`meters(model, url, **kw)` makes a ModbusMeter that is closed at the end of the test."""
    made: list[ModbusMeter] = []

    def make(model: str, url: str, **kwargs: object) -> ModbusMeter:
        m = ModbusMeter(model, ConfigMeterUrl.parse(url), **kwargs)  # type: ignore[arg-type]
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.fixture
async def pty_pair(tmp_path: Path) -> AsyncIterator[tuple[Path, Path]]:
    """Two linked pseudo-terminals from `socat`: a null-modem cable for the RTU tests."""
    socat = shutil.which("socat")
    if socat is None:
        pytest.fail("socat is not installed, and the Modbus RTU tests need it: apt-get install socat", pytrace=False)
    a, b = tmp_path / "a", tmp_path / "b"
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
                if not line:
                    pytest.fail(f"socat exited early: {b''.join(log).decode(errors='replace')}", pytrace=False)
        yield a, b
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()
        await proc.stderr.read()


# ------------------------------------------------------------------------------------------------
# Reading every model


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("wire", [IMPORTING, EXPORTING], ids=["importing", "exporting"])
async def test_tcp_reads_exact_sample(
    model: str, wire: dict[str, float], servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    port = await servers.tcp(meter_device(model, wire, device_id=3))
    async with meters(model, f"tcp://{LOOPBACK}:{port}", device_id=3) as meter:
        assert await meter.read() == expected_sample(model, wire)
        assert await meter.read() == expected_sample(model, wire)  # the connection is reused
        assert meter.connected


@pytest.mark.parametrize("model", sorted(MODELS))
async def test_rtu_reads_exact_sample(model: str, pty_pair: tuple[Path, Path], servers: Servers,
                                      meters: Callable[..., ModbusMeter]) -> None:
    a, b = pty_pair
    await servers.rtu(meter_device(model, IMPORTING, device_id=7), b)
    async with meters(model, f"rtu://{a}?baud=9600&parity=N&stopbits=1", device_id=7) as meter:
        assert await meter.read() == expected_sample(model, IMPORTING)
        assert await meter.read() == expected_sample(model, IMPORTING)


# ------------------------------------------------------------------------------------------------
# Failures


async def elapsed(coro_fn: Callable[[], object]) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(HardwareError) as info:
        await coro_fn()  # type: ignore[misc]
    assert info.type is HardwareError
    return loop.time() - t0


async def test_nothing_listening_raises(meters: Callable[..., ModbusMeter]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=rf"meter SDM630 at tcp://127\.0\.0\.1:{port}: cannot connect"):
        await meter.read()


async def test_server_stopped_then_back(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    port = await servers.tcp(meter_device("EM340", IMPORTING))
    meter = meters("EM340", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    assert await meter.read() == expected_sample("EM340", IMPORTING)

    await servers.stop_all()
    assert await elapsed(meter.read) < FAST_S + SLACK_S
    assert not meter.connected
    assert await elapsed(meter.read) < FAST_S + SLACK_S  # still down: fails again, no hang

    await servers.tcp(meter_device("EM340", EXPORTING), port=port)  # back, same port, new values
    assert await meter.read() == expected_sample("EM340", EXPORTING)


async def test_wrong_device_id_gets_exception_response(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """pymodbus' TCP server answers an unknown device id with an exception (like a gateway)."""
    port = await servers.tcp(meter_device("SDM630", IMPORTING, device_id=1))
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=2, timeout_s=FAST_S)
    with pytest.raises(HardwareError, match="exception response"):
        await meter.read()


async def test_wrong_device_id_no_answer_times_out(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    port = await servers.tcp(meter_device("SDM630", IMPORTING, device_id=1), silent_to_others=True)
    meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=2, timeout_s=FAST_S)
    assert FAST_S - 0.05 < await elapsed(meter.read) < FAST_S + SLACK_S
    right = meters("SDM630", f"tcp://{LOOPBACK}:{port}", device_id=1, timeout_s=FAST_S)
    assert await right.read() == expected_sample("SDM630", IMPORTING)


async def test_missing_registers_give_exception_response(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """An ABB map read from an Eastron: FC03 0x5000 is not there -> ILLEGAL ADDRESS (code 2)."""
    port = await servers.tcp(meter_device("SDM630", IMPORTING))
    meter = meters("ABB-B23", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=r"meter ABB-B23 at .*: FC03 0x5000 count 8: exception response .*code 2"):
        await meter.read()


async def test_map_reading_past_the_end_gives_exception_response(
    servers: Servers, meters: Callable[..., ModbusMeter]
) -> None:
    """An EM24 map read from an EM340: the export register 0x5C is past the EM340's last register."""
    port = await servers.tcp(meter_device("EM340", IMPORTING))
    meter = meters("EM24", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match="exception response"):
        await meter.read()


async def test_not_available_values_are_refused(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    """ABB reports "not available" as all-0xFF; the meter must not turn that into 1.8e17 Wh."""
    port = await servers.tcp(meter_device("ABB-B23", IMPORTING, overrides={0x5004 + i: 0xFFFF for i in range(4)}))
    meter = meters("ABB-B23", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match=r"energy_export .*not available"):
        await meter.read()


async def test_rtu_silent_bus_then_device_appears(pty_pair: tuple[Path, Path], servers: Servers,
                                                   meters: Callable[..., ModbusMeter]) -> None:
    a, b = pty_pair
    meter = meters("SDM120", f"rtu://{a}?baud=9600&parity=N&stopbits=1", device_id=5, timeout_s=FAST_S)
    assert await elapsed(meter.read) < FAST_S + SLACK_S  # nobody on the bus: timeout

    await servers.rtu(meter_device("SDM120", IMPORTING, device_id=9), b)  # another id answers nothing
    assert await elapsed(meter.read) < FAST_S + SLACK_S

    await servers.stop_all()
    await servers.rtu(meter_device("SDM120", IMPORTING, device_id=5), b)
    assert await meter.read() == expected_sample("SDM120", IMPORTING)


async def test_rtu_missing_device_path_raises(tmp_path: Path, meters: Callable[..., ModbusMeter]) -> None:
    meter = meters("SDM120", f"rtu://{tmp_path}/ttyNONE?baud=2400&parity=N&stopbits=1", timeout_s=FAST_S)
    with pytest.raises(HardwareError, match="cannot connect"):
        await meter.read()


# ------------------------------------------------------------------------------------------------
# A server that answers garbage


def _response(tid: bytes, unit: int, fc: int, registers: list[int]) -> bytes:
    pdu = bytes([fc, 2 * len(registers)]) + b"".join(r.to_bytes(2, "big") for r in registers)
    return tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu


def _garbage(mode: str, tid: bytes, unit: int, fc: int, count: int, rng: random.Random) -> bytes | None:
    """The reply to one request; None closes the connection."""
    good = _response(tid, unit, fc, [0x4366] * count)
    match mode:
        case "random":
            return rng.randbytes(rng.randint(1, 300))
        case "random_pdu":  # a well-formed MBAP header around random bytes
            body = rng.randbytes(rng.randint(1, 60))
            return tid + b"\x00\x00" + (len(body) + 1).to_bytes(2, "big") + bytes([unit]) + body
        case "truncated":
            return good[: len(good) // 2]
        case "short":
            return _response(tid, unit, fc, [0x4366] * (count - 1))
        case "odd_byte_count":
            pdu = bytes([fc, 2 * count - 1]) + bytes(2 * count - 1)
            return tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
        case "byte_count_lie":
            pdu = bytes([fc, 250]) + bytes(4)
            return tid + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu
        case "wrong_function":
            return _response(tid, unit, 3 if fc == 4 else 4, [0x4366] * count)
        case "unknown_function":
            return _response(tid, unit, 0x41, [0] * count)
        case "wrong_tid":
            return _response(((int.from_bytes(tid, "big") + 1) & 0xFFFF).to_bytes(2, "big"), unit, fc, [0x4366] * count)
        case "wrong_unit":
            return _response(tid, (unit + 1) & 0xFF, fc, [0x4366] * count)
        case "bad_protocol_id":
            return good[:2] + b"\x12\x34" + good[4:]
        case "nan":
            return _response(tid, unit, fc, [0x7FC0, 0x0000] * (count // 2))
        case "silent":
            return b""
        case "close":
            return None
    raise AssertionError(mode)


GARBAGE_MODES = ["random", "random_pdu", "truncated", "short", "odd_byte_count", "byte_count_lie", "wrong_function",
                 "unknown_function", "wrong_tid", "wrong_unit", "bad_protocol_id", "nan", "silent", "close"]


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


@pytest.mark.parametrize("mode", GARBAGE_MODES)
async def test_garbage_frames_raise_hardware_error_only(mode: str, meters: Callable[..., ModbusMeter]) -> None:
    async with garbage_server(mode) as port:
        meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
        for _ in range(3):  # and again on the fresh connection after each failure
            assert await elapsed(meter.read) < FAST_S + SLACK_S
        assert not meter.connected


async def test_random_garbage_many_seeds(meters: Callable[..., ModbusMeter]) -> None:
    for seed in range(8):
        async with garbage_server("random_pdu" if seed % 2 else "random", seed) as port:
            meter = meters("EM340", f"tcp://{LOOPBACK}:{port}", timeout_s=0.15)
            assert await elapsed(meter.read) < 0.15 + SLACK_S
            meter.close()


async def test_recovers_after_garbage(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    async with garbage_server("random", seed=1) as port:
        meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=FAST_S)
        await elapsed(meter.read)
    await servers.tcp(meter_device("SDM630", IMPORTING), port=port)
    assert await meter.read() == expected_sample("SDM630", IMPORTING)


async def test_cancelled_read_leaves_meter_usable(servers: Servers, meters: Callable[..., ModbusMeter]) -> None:
    async with garbage_server("silent") as port:
        meter = meters("SDM630", f"tcp://{LOOPBACK}:{port}", timeout_s=5.0)
        task = asyncio.create_task(meter.read())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not meter.connected
    await servers.tcp(meter_device("SDM630", IMPORTING), port=port)
    assert await meter.read() == expected_sample("SDM630", IMPORTING)
