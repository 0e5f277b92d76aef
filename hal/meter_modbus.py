"""The energy meter's Modbus client: `ModbusMeter`, the `hal.protocols.Meter` backend.

What it is for: reading one energy meter per EVSE over Modbus TCP or Modbus RTU (a
serial device) and handing the shell a `MeterSample` in SI units (V, A, W, Hz, Wh;
import positive). `ModbusMeter(model, url)` takes a model name from
`hal.meter_maps.MODELS` and an address (`hal.meter_url`); each `read()` makes the
requests `hal.meter_codec.plan_for` planned within the model's own request limit and
decodes them with `hal.meter_codec`. Meters on one serial device (one RS-485 bus,
different device ids) share one client and take turns for whole polls
(`hal.meter_bus`); a TCP meter has a connection of its own. This is the only module of
the project that imports pymodbus (STYLE.md B4; the version is pinned in setup.cfg).

Optional quantities (`Register.optional`: export energy on the ABB B23/B24 and the
EM24) are read in requests of their own. If the meter answers such a request with
exception 02 (Illegal Data Address) or with the "not available" pattern, the quantity is
absent: the sample reports it as None (`energy_wh_export`) and `read()` succeeds; this
is logged once per meter at INFO. A frequency reported x10 is divided, an implausible
one reported as 0.0 (`hal.meter_codec.plausible_frequency`); each case is logged once
per meter at WARNING.

What it must never do:

* decide anything about charging: it returns raw readings; the core decides what they
  mean;
* return a made-up value: every failure (cannot connect, timeout, exception response to
  a required register, a garbled, short or mismatched frame, a value that does not
  decode, NaN, a meter's "not available" pattern such as ABB's all-0xFF in a required
  register) raises `HardwareError("meter <model> at <url>: <what>")` with the cause
  chained, and nothing else escapes `read()`. A quantity a model does not have (L2/L3
  of a 1-phase meter, V/I/f of an SDM72D-M v1) is reported as 0.0, which `MeterSample`
  documents as "not measured";
* retry behind the caller's back: pymodbus' own retries and reconnect task are off;
  after a failure the connection is dropped and the next `read()` opens a fresh one.
  Back-off is the shell's job;
* interleave with another meter on its bus, or hold the bus longer than its own budget
  (`timeout_s` x (requests + 1) + 0.5 s, counted once it has the bus).

Standard: Modbus Application Protocol Specification V1.1b3 (function codes 03 "Read
Holding Registers" and 04 "Read Input Registers", at most 125 registers per request;
exception responses, §7: code 02 "Illegal Data Address"), Modbus over Serial Line V1.02
(RTU framing; one transaction at a time on a line) and Modbus Messaging on TCP/IP V1.0b
(MBAP), as implemented by pymodbus 3.16. Register maps: /work/shared/METERS.md §6 via
`hal.meter_maps`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Self

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from firmware.core.errors import HardwareError
from hal.meter_bus import Link, SerialSettings, new_token, private_link, serial_link
from hal.meter_codec import NotAvailable, ReadBlock, decode_block, plan_for, plausible_frequency, sample_from
from hal.meter_maps import MODELS
from hal.meter_url import MeterUrl, MeterUrlLike, as_meter_url
from hal.protocols import MeterSample

__all__ = ["ModbusMeter"]

log = logging.getLogger(__name__)

_Client = AsyncModbusTcpClient | AsyncModbusSerialClient
#: Exception code 02, Illegal Data Address (Modbus Application Protocol §7): how a meter
#: says it does not have a register.
ILLEGAL_DATA_ADDRESS: Final = 2


class _Absent(Exception):
    """An optional quantity the meter does not provide (exception 02 or "not available")."""


class ModbusMeter:
    """A Modbus energy meter implementing `hal.protocols.Meter`.

    `async with ModbusMeter("SDM630", MeterUrl.parse("tcp://10.0.0.5:502")) as meter:`
    does not connect; the first `read()` does. Each request waits at most `timeout_s`,
    and a whole `read()` at most `timeout_s` x (requests + 1) plus a margin, once it has
    the bus. Any failure raises HardwareError and drops the connection; the next
    `read()` reconnects. Meters on the same serial device share its client and lock;
    one whose serial settings differ from the bus's raises ValueError here.
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
        self._plan = plan_for(self.model)
        self._budget_s = timeout_s * (len(self._plan) + 1) + 0.5
        self._noted: set[str] = set()  # what was logged once already
        self._words: dict[tuple[int, int], tuple[int, ...]] = {}  # (fc, address) -> the last answer's words
        self._token = new_token()
        self._link = self._join()  # ValueError: another meter holds the bus with other settings
        self._membership = self._member()

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
    def last_words(self) -> Mapping[tuple[int, int], tuple[int, ...]]:
        """The raw words of the last good answer to each request of `plan`, by (function code, address):
        what the field console shows (read-only; a request never answered is absent)."""
        return MappingProxyType(self._words)

    @property
    def connected(self) -> bool:
        """Whether the meter's link (its own, or its bus's) holds an open connection."""
        return self._membership.alive and self._link.connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the link (idempotent): a TCP meter's connection closes; a bus closes when
        its last meter leaves. A later `read()` joins again and opens a new one."""
        self._membership()

    async def read(self) -> MeterSample:
        """Read every register of the model and return the sample. Raises HardwareError
        on any failure."""
        link = self._rejoin()
        async with link.lock:
            try:
                async with asyncio.timeout(self._budget_s):
                    values = await self._read_values(link)
                sample = self._sample(values)
            except HardwareError:
                link.drop()
                raise
            except TimeoutError as exc:
                link.drop()
                raise self._error(
                    f"no complete answer within {self._budget_s:.1f} s"
                ) from exc
            except asyncio.CancelledError:
                # A half-finished transaction must not answer the next request.
                link.drop()
                raise
            except Exception as exc:
                # The Meter contract is "HardwareError, never anything else". What
                # pymodbus raises varies between releases (ModbusException, OSError,
                # TimeoutError, struct.error, ...); convert it all.
                link.drop()
                raise self._error(f"{type(exc).__name__}: {exc}") from exc
        log.debug("%s: %s", self._where, sample)
        return sample

    # -- internals ---------------------------------------------------------------------

    def _error(self, what: str) -> HardwareError:
        return HardwareError(f"{self._where}: {what}")

    def _once(self, key: str, level: int, msg: str, *args: object) -> None:
        """Log `msg` at `level` the first time for this meter, at DEBUG afterwards."""
        first = key not in self._noted
        self._noted.add(key)
        log.log(level if first else logging.DEBUG, msg, *args)

    def _join(self) -> Link[_Client]:
        # The client factories hold the URL and timeout, never the meter: a link (kept by
        # the bus registry) must not keep a meter alive.
        who = f"meter {self.model.name} (device {self.device_id})"
        if self.url.scheme == "tcp":
            factory = functools.partial(_tcp_client, self.url, self._where, self.timeout_s)
            return private_link(self._where, factory, self._token, who)
        settings = SerialSettings(
            path=self.url.path, baud=self.url.baud, parity=self.url.parity, stopbits=self.url.stopbits
        )
        factory = functools.partial(_serial_client, self.url, self.timeout_s)
        return serial_link(settings, factory, self._token, who)

    def _rejoin(self) -> Link[_Client]:
        """The link, joining it again after `close()`."""
        if not self._membership.alive:
            try:
                self._link = self._join()
            except ValueError as exc:
                raise self._error(str(exc)) from exc
            self._membership = self._member()
        return self._link

    def _member(self) -> weakref.finalize[[int], ModbusMeter]:
        """Leave the link on `close()`, or when the meter is garbage collected (not at
        interpreter exit: the event loop is gone by then)."""
        membership = weakref.finalize(self, self._link.leave, self._token)
        membership.atexit = False
        return membership

    async def _read_values(self, link: Link[_Client]) -> dict[str, float]:
        client = await link.client()
        if client is None:
            raise self._error("cannot connect")
        # The response timeout pymodbus reads for every request (transaction.py): this
        # meter's, also on a client another meter of the bus opened.
        client.comm_params.timeout_connect = self.timeout_s
        values: dict[str, float] = {}
        for block in self._plan:
            try:
                words = await self._request(client, block)
                self._words[(block.fc, block.address)] = tuple(words)
                values.update(decode_block(block, words))
            except _Absent as exc:
                self._once(f"absent {block.address}", logging.INFO,
                           "%s: %s absent (%s); reported as not available", self._where,
                           block.registers[0].quantity, exc)
            except NotAvailable as exc:
                if not block.optional:
                    raise self._error(str(exc)) from exc
                self._once(f"absent {block.address}", logging.INFO,
                           "%s: %s; reported as absent", self._where, exc)
            except ValueError as exc:
                raise self._error(str(exc)) from exc
        return values

    def _sample(self, values: dict[str, float]) -> MeterSample:
        try:
            sample = sample_from(self.model, values)
        except ValueError as exc:
            raise self._error(str(exc)) from exc
        if "frequency" in values:
            hz, verdict = plausible_frequency(values["frequency"])
            if verdict == "scaled_x10":
                self._once("f x10", logging.WARNING,
                           "%s: frequency %s looks like ten times the mains frequency; reported as %s Hz",
                           self._where, values["frequency"], hz)
            elif verdict == "implausible":
                self._once("f implausible", logging.WARNING,
                           "%s: frequency %s is not plausible (45..65 Hz); reported as 0.0 (not measured)",
                           self._where, values["frequency"])
        return sample

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
            if block.optional and code == ILLEGAL_DATA_ADDRESS:
                raise _Absent(f"{what}: exception 02, illegal data address")
            raise self._error(
                f"{what}: exception response"
                f" (function 0x{resp.function_code:02X}, code {code})"
            )
        if resp.function_code != block.fc:
            raise self._error(f"{what}: answer has function code {resp.function_code}")
        if len(resp.registers) != block.count:
            raise self._error(f"{what}: answer has {len(resp.registers)} registers")
        return list(resp.registers)


# retries=0 and reconnect_delay=0: one attempt per request, no background reconnect task;
# the shell owns back-off. pymodbus' `timeout` bounds both the connect and each response;
# on a shared bus each meter sets its own before its requests.


def _tcp_client(url: MeterUrl, name: str, timeout_s: float) -> _Client:
    return AsyncModbusTcpClient(
        url.host, port=url.port, name=name, timeout=timeout_s, retries=0, reconnect_delay=0
    )


def _serial_client(url: MeterUrl, timeout_s: float) -> _Client:
    return AsyncModbusSerialClient(
        url.path,
        baudrate=url.baud,
        bytesize=8,
        parity=url.parity,
        stopbits=url.stopbits,
        name=f"serial bus {url.path}",
        timeout=timeout_s,
        retries=0,
        reconnect_delay=0,
    )
