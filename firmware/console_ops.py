"""The console-only ops of the field console (issue 12): status, why, log, meter, service and dump.

What it is for: each op reads the controller's state (the same documents the backend gets) or, for
`service`, drives one EVSE's relay, LEDs or lock by hand for a technician. `firmware.console_server`
parses the line, hands API ops to the controller's request path and console-only ops here
(`CONSOLE_OPS`); `watch` lives in the server, since it streams on its connection, and listens to the
publish tap (`firmware.publish_tap`) and the core loop's `transition_listeners`.

Tokens: whatever the console sends passes `masked` (the server does it) unless the request carried
`show_tokens: true` and came from root (`peer_uid`, SO_PEERCRED); `status` gives whole session tokens
for that case. Anyone else asking for them gets `permission_denied`.

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
import dataclasses
import logging
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from firmware.aio import loop_time, utc_now
from firmware.args import Fields
from firmware.core.catalogue import Fault, Led
from firmware.core.errors import HardwareError
from firmware.core.service import TESTS, service_refusal
from firmware.core.why import blocked_by
from firmware.ops import Unsupported
from firmware.wire import InvalidArgs, Request, error_reply, mask_token, meter_doc, ok_reply
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
#: The request arg (of any console op) that asks for whole tokens: `charger-console --show-tokens`.
SHOW_TOKENS: Final = "show_tokens"
#: Only this user may see whole tokens on the console (the socket's group may use the console).
TOKENS_UID: Final = 0
#: The keys whose string values are tokens, at any depth of what the console sends (API.md §3, §4, §5).
TOKEN_KEYS: Final = frozenset({"id_token", "parent_id_token", "group_id_token", "id_tag", "parent_id"})


class Unsafe(Exception):  # noqa: N818 - the error code's name
    """A console op refused because it is unsafe now; the message says why."""


class Busy(Exception):  # noqa: N818
    """The op cannot run now because another one holds what it needs."""


class Forbidden(Exception):  # noqa: N818
    """Asked for something only root may have (whole tokens); the error code is `permission_denied`."""


# --- tokens: masked on the console unless root asks (issue 13 §5) ---------------------------------


def peer_uid(sock: socket.socket | None) -> int | None:
    """The uid of the process at the other end of a unix socket (SO_PEERCRED, unix(7): struct ucred,
    pid/uid/gid as three ints, taken when it connected); None when unknown."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def token_request(request: Request, uid: int | None) -> tuple[Request, bool]:
    """`request` without its `show_tokens` arg, and whether its answer may show whole tokens: only
    when root asks. Forbidden for anyone else; InvalidArgs when it is not a boolean."""
    args = request.args
    if not isinstance(args, dict) or SHOW_TOKENS not in args:
        return request, False
    show = args[SHOW_TOKENS]
    if not isinstance(show, bool):
        raise InvalidArgs(f"{SHOW_TOKENS}: must be true or false, got {show!r}")
    if show and uid != TOKENS_UID:
        who = "an unknown user" if uid is None else f"uid {uid}"
        raise Forbidden(f"{SHOW_TOKENS}: whole tokens are shown only to root, not to {who} (run it with sudo)")
    rest = {key: value for key, value in args.items() if key != SHOW_TOKENS}
    return dataclasses.replace(request, args=rest), show


def masked(doc: object) -> object:
    """`doc` with every token in it masked (`wire.mask_token`), at any depth; masking twice is harmless."""
    if isinstance(doc, dict):
        return {key: mask_token(value) if key in TOKEN_KEYS and isinstance(value, str) else masked(value)
                for key, value in doc.items()}
    if isinstance(doc, list):
        return [masked(item) for item in doc]
    return doc


def with_session_token(c: Controller, doc: dict[str, object]) -> dict[str, object]:
    """An EVSE state document (whose session token is masked, API.md §4) with the session's whole
    token from the core, for root's `--show-tokens`."""
    cid, session_doc = doc.get("evse_id"), doc.get("session")
    evse = c.charger.evses.get(cid) if isinstance(cid, int) else None
    session = None if evse is None else evse.session
    if session is None or not isinstance(session_doc, dict) or session_doc.get("uuid") != session.uuid:
        return doc
    return doc | {"session": session_doc | {"id_token": session.id_token}}


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
    except Forbidden as exc:
        return error_reply(rid, op, "permission_denied", str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug in an op is a reply, never a dead console
        log.exception("console op %s failed", op)
        return error_reply(rid, op, "internal", f"{type(exc).__name__}: {exc}")
    return ok_reply(rid, op, result)


async def status(c: Controller, f: Fields) -> object:
    """The status and the EVSE documents, sessions with their whole tokens: the server masks them
    unless root asked for them (`token_request`)."""
    f.done()
    return {"status": c.status_document(), "evses": [with_session_token(c, doc) for doc in c.state_documents()]}


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
        self._check(cid, "lock")

        async def drive(locked: bool, name: str) -> bool:
            try:
                await lock.set_locked(cid, locked)
            except HardwareError as exc:
                steps.append(f"{name} did not confirm: {exc}")
                return False
            steps.append(f"{name}ed (confirmed)")
            return True

        try:
            locked = await drive(True, "lock")
        finally:
            unlocked = await drive(False, "unlock")
        return locked and unlocked


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
