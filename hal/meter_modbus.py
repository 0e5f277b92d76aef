"""The energy meter's Modbus client: `ModbusMeter`, the `hal.protocols.Meter` backend.

What it is for: reading one energy meter per EVSE over Modbus TCP or Modbus RTU (a
serial device) and handing the shell a `MeterSample` in SI units (V, A, W, Hz, Wh;
import positive). `ModbusMeter(model, url)` takes a model name from
`hal.meter_maps.MODELS` and an address (`hal.meter_url`); each `read()` makes the
requests `hal.meter_codec.plan_reads` planned (two or three per poll, not ten) and
decodes them with `hal.meter_codec`. This is the only module of the project that imports
pymodbus (STYLE.md B4; the version is pinned in setup.cfg).

What it must never do:

* decide anything about charging: it returns raw readings; the core decides what they
  mean;
* return a made-up value: every failure (cannot connect, timeout, exception response, a
  garbled, short or mismatched frame, a value that does not decode, NaN, a meter's "not
  available" pattern such as ABB's all-0xFF) raises `HardwareError("meter <model> at
  <url>: <what>")` with the cause chained, and nothing else escapes `read()`. A quantity
  a model does not have (L2/L3 of a 1-phase meter, V/I/f of an SDM72D-M v1) is reported
  as 0.0, which `MeterSample` documents as "not measured";
* retry behind the caller's back: pymodbus' own retries and reconnect task are off;
  after a failure the connection is dropped and the next `read()` opens a fresh one.
  Back-off is the shell's job.

Standard: Modbus Application Protocol Specification V1.1b3 (function codes 03 "Read
Holding Registers" and 04 "Read Input Registers", at most 125 registers per request;
exception responses), Modbus over Serial Line V1.02 (RTU framing) and Modbus Messaging
on TCP/IP V1.0b (MBAP), as implemented by pymodbus 3.16. Register maps:
/work/shared/METERS.md §6 via `hal.meter_maps`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Final, Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from firmware.core.errors import HardwareError
from hal.meter_codec import ReadBlock, decode_block, plan_reads, sample_from
from hal.meter_maps import MODELS
from hal.meter_url import MeterUrlLike, as_meter_url
from hal.protocols import MeterSample

__all__ = ["ModbusMeter"]

log = logging.getLogger(__name__)

_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


class ModbusMeter:
    """A Modbus energy meter implementing `hal.protocols.Meter`.

    `async with ModbusMeter("SDM630", MeterUrl.parse("tcp://10.0.0.5:502")) as meter:`
    does not connect; the first `read()` does. Each request waits at most `timeout_s`,
    and a whole `read()` at most `timeout_s` x (requests + 1) plus a margin. Any failure
    raises HardwareError and drops the connection; the next `read()` reconnects.
    """

    def __init__(
        self, model: str, url: MeterUrlLike, device_id: int = 1, timeout_s: float = 1.0
    ) -> None:
        if model not in MODELS:
            raise ValueError(
                f"meter model {model!r} unknown; supported: {', '.join(sorted(MODELS))}"
            )
        url = as_meter_url(url)
        if not 0 <= device_id <= 247:
            raise ValueError(f"device_id {device_id} not in 0..247")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s {timeout_s} must be positive")
        self.model: Final = MODELS[model]
        self.url: Final = url
        self.device_id: Final = device_id
        self.timeout_s: Final = timeout_s
        self._where = f"meter {model} at {url}"
        self._plan = plan_reads(
            self.model.registers, self.model.max_count, self.model.max_gap
        )
        self._budget_s = timeout_s * (len(self._plan) + 1) + 0.5
        self._client: _Client | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return (
            f"ModbusMeter({self.model.name!r}, {str(self.url)!r},"
            f" device_id={self.device_id})"
        )

    @property
    def plan(self) -> tuple[ReadBlock, ...]:
        """The requests one `read()` makes."""
        return self._plan

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the connection (idempotent). A later `read()` opens a new one."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    async def read(self) -> MeterSample:
        """Read every register of the model and return the sample. Raises HardwareError
        on any failure."""
        async with self._lock:
            try:
                async with asyncio.timeout(self._budget_s):
                    sample = await self._read_once()
            except HardwareError:
                self.close()
                raise
            except TimeoutError as exc:
                self.close()
                raise self._error(
                    f"no complete answer within {self._budget_s:.1f} s"
                ) from exc
            except asyncio.CancelledError:
                # A half-finished transaction must not answer the next request.
                self.close()
                raise
            except Exception as exc:
                # The Meter contract is "HardwareError, never anything else". What
                # pymodbus raises varies between releases (ModbusException, OSError,
                # TimeoutError, struct.error, ...); convert it all.
                self.close()
                raise self._error(f"{type(exc).__name__}: {exc}") from exc
        log.debug("%s: %s", self._where, sample)
        return sample

    # -- internals ---------------------------------------------------------------------

    def _error(self, what: str) -> HardwareError:
        return HardwareError(f"{self._where}: {what}")

    def _new_client(self) -> _Client:
        # retries=0 and reconnect_delay=0: one attempt per request, no background
        # reconnect task; the shell owns back-off. pymodbus' `timeout` bounds both the
        # connect and each response.
        if self.url.scheme == "tcp":
            return AsyncModbusTcpClient(
                self.url.host,
                port=self.url.port,
                name=self._where,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        return AsyncModbusSerialClient(
            self.url.path,
            baudrate=self.url.baud,
            bytesize=8,
            parity=self.url.parity,
            stopbits=self.url.stopbits,
            name=self._where,
            timeout=self.timeout_s,
            retries=0,
            reconnect_delay=0,
        )

    async def _connected_client(self) -> _Client:
        if self._client is not None and self._client.connected:
            return self._client
        self.close()
        self._client = client = self._new_client()
        if not await client.connect():
            raise self._error("cannot connect")
        log.debug("%s: connected", self._where)
        return client

    async def _read_once(self) -> MeterSample:
        client = await self._connected_client()
        values: dict[str, float] = {}
        for block in self._plan:
            words = await self._request(client, block)
            try:
                values.update(decode_block(block, words))
            except ValueError as exc:
                raise self._error(str(exc)) from exc
        try:
            return sample_from(self.model, values)
        except ValueError as exc:
            raise self._error(str(exc)) from exc

    async def _request(self, client: _Client, block: ReadBlock) -> list[int]:
        what = f"FC{block.fc:02d} 0x{block.address:04X} count {block.count}"
        read = (
            client.read_holding_registers
            if block.fc == 3
            else client.read_input_registers
        )
        try:
            resp: ModbusPDU = await read(
                block.address, count=block.count, device_id=self.device_id
            )
        except (ModbusException, OSError, TimeoutError) as exc:
            # No answer within timeout_s (a timeout is a ModbusIOException), a lost
            # connection, a refused send.
            raise self._error(f"{what}: {type(exc).__name__}: {exc}") from exc
        if resp.isError():
            code = getattr(resp, "exception_code", None)
            raise self._error(
                f"{what}: exception response"
                f" (function 0x{resp.function_code:02X}, code {code})"
            )
        if resp.function_code != block.fc:
            raise self._error(f"{what}: answer has function code {resp.function_code}")
        if len(resp.registers) != block.count:
            raise self._error(f"{what}: answer has {len(resp.registers)} registers")
        return list(resp.registers)
