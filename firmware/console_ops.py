"""The console-only ops of the field console (issue 12): status, why, log, meter, service and dump.

What it is for: each op reads the controller's state (the same documents the backend gets) or, for
`service`, drives one EVSE's relay, LEDs or lock by hand for a technician. `firmware.console_server`
parses the line, hands API ops to the controller's request path and console-only ops here
(`CONSOLE_OPS`); `watch` lives in the server, since it streams on its connection.

What it must never do: change the core's state, decide anything about charging, or block the core
task. `service` is decided safe by the pure core (`firmware.core.service.service_refusal`), asked
before the test and again before each step; it runs in the console's own task, beside the safety
path, keeps a relay closed for less than the relay-feedback grace of supervision (so no Relais fault
is raised by the test itself) and always gives the outputs back as the core commanded them.

Standard: console spec (/work/briefs/console-spec.md), API.md §2 (envelope, error codes) and §4
(documents); IEC 61851-1 Annex A (state A: no EV connected).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from firmware.aio import loop_time, utc_now
from firmware.args import Fields
from firmware.core.catalogue import Fault, Led
from firmware.core.errors import HardwareError
from firmware.core.service import TESTS, service_refusal
from firmware.core.why import blocked_by
from firmware.ops import Unsupported
from firmware.wire import InvalidArgs, Request, error_reply, meter_doc, ok_reply
from hal.sim import SimMeter

if TYPE_CHECKING:
    from firmware.app import Controller

log = logging.getLogger(__name__)

#: The relay test keeps the contactor closed at most this long, and never for more than half the
#: relay-feedback grace (`[board] relay_feedback_timeout_s`), so supervision raises no Relais fault.
RELAY_CLOSED_MAX_S: Final = 0.2
#: How long each LED pattern is shown.
LED_STEP_S: Final = 0.5
#: The feedback contact is read this often while it should follow the relay.
FEEDBACK_POLL_S: Final = 0.01
#: A whole service test ends within this (a lock that neither confirms nor fails).
SERVICE_TIMEOUT_S: Final = 15.0
DEFAULT_LOG_LINES: Final = 50


class Unsafe(Exception):  # noqa: N818 - the error code's name
    """A console op refused because it is unsafe now; the message says why."""


class Busy(Exception):  # noqa: N818
    """The op cannot run now because another one holds what it needs."""


@runtime_checkable
class RawMeter(Protocol):
    """A meter that keeps the raw words of its last answers (`hal.meter_modbus.ModbusMeter`)."""

    @property
    def url(self) -> object: ...

    @property
    def device_id(self) -> int: ...

    @property
    def last_words(self) -> Mapping[tuple[int, int], tuple[int, ...]]: ...


ConsoleOp = Callable[["Controller", Fields], Awaitable[object]]


async def execute(c: Controller, handler: ConsoleOp, request: Request) -> dict[str, object]:
    """Run one console-only op: its reply, errors mapped to the codes of API.md §2 (and `unsafe`)."""
    rid, op = request.request_id, request.op
    try:
        result = await handler(c, Fields(request.args))
    except (InvalidArgs, ValueError) as exc:
        return error_reply(rid, op, "invalid_args", str(exc))
    except Unsupported as exc:
        return error_reply(rid, op, "unsupported", str(exc))
    except Unsafe as exc:
        return error_reply(rid, op, "unsafe", str(exc))
    except Busy as exc:
        return error_reply(rid, op, "busy", str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in an op is a reply, never a dead console
        log.exception("console op %s failed", op)
        return error_reply(rid, op, "internal", f"{type(exc).__name__}: {exc}")
    return ok_reply(rid, op, result)


async def status(c: Controller, f: Fields) -> object:
    f.done()
    return {"status": c.status_document(), "evses": c.state_documents()}


async def why(c: Controller, f: Fields) -> object:
    cid = c.evse_arg(f)
    f.done()
    blockers = blocked_by(c.charger, cid, loop_time())
    return {"evse_id": cid, "blocked_by": [{"code": b.code, "message": b.message} for b in blockers]}


async def transitions(c: Controller, f: Fields) -> object:
    n = f.int_("n", required=False, minimum=0, maximum=10_000)
    f.done()
    lines = c.transitions
    count = DEFAULT_LOG_LINES if n is None else n
    return {"transitions": lines[-count:] if count else []}


async def meter(c: Controller, f: Fields) -> object:
    cid = c.evse_arg(f)
    f.done()
    device = c.meters.get(cid)
    if device is None:
        raise Unsupported(f"EVSE {cid} has no meter")
    sample = c.last_meter.get(cid)
    sample_doc = None if sample is None else meter_doc(
        cid, sample, meter_ok=Fault.METER_LOST not in c.charger.evses[cid].faults, utc=utc_now())
    doc: dict[str, object] = {"evse_id": cid, "model": "sim", "url": None, "device_id": None, "blocks": [],
                              "sample": sample_doc}
    if isinstance(device, SimMeter):
        return doc
    doc["model"] = getattr(getattr(device, "model", None), "name", type(device).__name__)
    if isinstance(device, RawMeter):
        words = device.last_words
        plan = getattr(device, "plan", ())
        doc.update(url=str(device.url), device_id=device.device_id, blocks=[
            {"fc": b.fc, "address": b.address, "words": list(words[(b.fc, b.address)])
             if (b.fc, b.address) in words else None} for b in plan])
    return doc


async def dump(c: Controller, f: Fields) -> object:
    """Write the flight recorder's ring to `state_dir` now (firmware/recorder.py)."""
    f.done()
    written = await c.recorder.dump()
    return {"path": str(written.path), "inputs": written.inputs}


# --- service ---------------------------------------------------------------------------------------


class ServiceBench:
    """The service tests of one controller: one at a time per EVSE."""

    def __init__(self, controller: Controller) -> None:
        self.c = controller
        self._running: set[int] = set()

    async def run(self, c: Controller, f: Fields) -> object:
        cid = c.evse_arg(f)
        test = f.str_("test", max_len=16)
        f.done()
        if test not in TESTS:
            raise InvalidArgs(f"test: must be one of {', '.join(TESTS)}, got {test!r}")
        self._check(cid, test)
        if cid in self._running:
            raise Busy(f"a service test is running on EVSE {cid}")
        self._running.add(cid)
        steps: list[str] = []
        try:
            async with asyncio.timeout(SERVICE_TIMEOUT_S):
                passed = await {"relay": self._relay, "led": self._led, "lock": self._lock}[test](cid, steps)
        except TimeoutError:
            steps.append(f"did not end within {SERVICE_TIMEOUT_S:g} s")
            passed = False
        except Unsafe as exc:
            steps.append(f"aborted: {exc}")
            passed = False
        finally:
            self._running.discard(cid)
        log.info("c%d service test %s %s: %s", cid, test, "passed" if passed else "FAILED", "; ".join(steps))
        return {"test": test, "passed": passed, "steps": steps}

    def _check(self, cid: int, test: str) -> None:
        refusal = service_refusal(self.c.charger, cid, test)
        if refusal is not None:
            raise Unsafe(refusal)

    async def _relay(self, cid: int, steps: list[str]) -> bool:
        """Close for at most RELAY_CLOSED_MAX_S and open; the feedback contact must follow both ways."""
        relays = self.c.board.relays
        closed_s = min(RELAY_CLOSED_MAX_S, self.c.config.board.relay_feedback_timeout_s / 2)
        wired = await relays.feedback_closed(cid) is not None
        self._check(cid, "relay")  # right before the close
        passed = True
        try:
            await relays.set_closed(cid, True)
            steps.append(f"relay closed for at most {closed_s * 1000:.0f} ms")
            if wired:
                ok = await _follows(relays.feedback_closed, cid, True, closed_s)
                steps.append("feedback closed" if ok else "feedback did NOT close")
                passed = ok
            else:
                await asyncio.sleep(closed_s)
        except HardwareError as exc:
            steps.append(f"relay could not be driven: {exc}")
            passed = False
        finally:
            await self._restore_relay(cid, steps)
        if wired:
            ok = await _follows(relays.feedback_closed, cid, False, self.c.config.board.relay_feedback_timeout_s)
            steps.append("feedback open" if ok else "feedback did NOT open (welded?)")
            passed = passed and ok
        else:
            steps.append("no feedback contact wired: not checked")
        return passed

    async def _restore_relay(self, cid: int, steps: list[str]) -> None:
        closed = self.c.charger.evses[cid].relay_closed  # what the core commands (open: the test needs it)
        try:
            await self.c.board.relays.set_closed(cid, closed)
        except HardwareError as exc:
            steps.append(f"relay could not be given back to the core: {exc}")
            log.critical("c%d relay could not be restored after the service test: %s", cid, exc)
            raise
        steps.append("relay open" if not closed else "relay given back closed, as the core commands")

    async def _led(self, cid: int, steps: list[str]) -> bool:
        """Each pattern for LED_STEP_S, then the core's pattern again."""
        leds = self.c.board.leds
        passed = True
        try:
            for led in Led:
                self._check(cid, "led")
                try:
                    await leds.set_led(cid, led)
                except HardwareError as exc:
                    steps.append(f"led {led.value} could not be shown: {exc}")
                    passed = False
                    continue
                steps.append(f"led {led.value}")
                await asyncio.sleep(LED_STEP_S)
        finally:
            restored = self.c.charger.led(cid)
            try:
                await leds.set_led(cid, restored)
                steps.append(f"led {restored.value} again (as the core shows it)")
            except HardwareError as exc:
                steps.append(f"led could not be restored: {exc}")
                passed = False
        return passed

    async def _lock(self, cid: int, steps: list[str]) -> bool:
        """Lock, then unlock, each confirmed by the lock's feedback (the Lock contract raises otherwise).
        The core commands the lock only while an EV is plugged in (`EvseMachine._drive_lock`): with
        nothing plugged in it keeps the socket unlocked, so the test ends unlocked."""
        lock = self.c.board.lock
        passed = True
        self._check(cid, "lock")
        try:
            await lock.set_locked(cid, True)
            steps.append("locked (confirmed)")
        except HardwareError as exc:
            steps.append(f"lock did not confirm: {exc}")
            passed = False
        finally:
            try:
                await lock.set_locked(cid, False)
                steps.append("unlocked (confirmed)")
            except HardwareError as exc:
                steps.append(f"unlock did not confirm: {exc}")
                passed = False
        return passed


async def _follows(read: Callable[[int], Awaitable[bool | None]], cid: int, closed: bool, within_s: float) -> bool:
    """Poll the feedback contact until it reads `closed`, for at most `within_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        if await read(cid) is closed:
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(FEEDBACK_POLL_S, max(deadline - loop.time(), 0.0)))


def console_ops(bench: ServiceBench) -> dict[str, ConsoleOp]:
    """The console-only ops (without `watch`, which the server runs on its connection)."""
    return {"status": status, "why": why, "log": transitions, "meter": meter, "service": bench.run, "dump": dump}
