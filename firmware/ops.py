"""The operations of API.md §3 (and the parse-and-apply half of §8's sim ops): one table, one context.

What it is for: each op parses its args (`firmware.args`), asks the core, hands the core's actions to
the context to carry out, and returns its result. `execute()` maps errors to the reply codes of API.md
§2. The context (`OpContext`) is all an op may touch: the core, the action runner, the state
documents. What it must never do: perform I/O itself, wait for the disk (the reply is released after
the commit by the caller), or change anything when its args are refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, overload

from firmware import __version__
from firmware.args import Fields, parse_local_list, parse_reason, parse_reservation
from firmware.core.auth import AuthStatus
from firmware.core.charger import Charger, Output
from firmware.core.events import RequestBackendAuth
from firmware.core.instant import Instant
from firmware.wire import (
    InvalidArgs,
    Request,
    authorize_result,
    error_reply,
    ok_reply,
    reservation_doc,
    reserve_result,
    state_snapshot,
)


class Unsupported(Exception):  # noqa: N818 - the error code's name
    """The op is not available here (a sim op on real hardware, or a feature switched off)."""


@dataclass(frozen=True, slots=True)
class Deferred:
    """An op's result that comes later: `authorize` waiting for the backend's R/auth/response."""

    auth_request_id: str


class OpContext(Protocol):
    """What an op may use: the core, the runner of the core's actions, the documents."""

    @property
    def charger(self) -> Charger: ...

    @overload
    def evse_arg(self, f: Fields, name: str = ..., required: Literal[True] = ...) -> int: ...
    @overload
    def evse_arg(self, f: Fields, name: str = ..., *, required: bool) -> int | None: ...

    def evse_arg(self, f: Fields, name: str = "evse_id", required: bool = True) -> int | None:
        """The EVSE named by the field, checked to exist (InvalidArgs otherwise)."""
        ...

    async def apply(self, outputs: list[Output]) -> None:
        """Carry out the core's actions of this step (relays first; durable messages staged)."""
        ...

    def mark_changed(self, part: str) -> None:
        """A durable state part the op changed outside the core's actions (e.g. the local list)."""
        ...

    def state_documents(self) -> list[dict[str, object]]: ...

    def uptime_s(self) -> float: ...


OpHandler = Callable[[OpContext, Fields, Instant, Request], Awaitable[object]]
OPS: dict[str, OpHandler] = {}


def op(name: str) -> Callable[[OpHandler], OpHandler]:
    def register(handler: OpHandler) -> OpHandler:
        OPS[name] = handler
        return handler
    return register


async def execute(c: OpContext, request: Request, at: Instant) -> dict[str, object] | Deferred:
    """Run one request on the core: its reply, or `Deferred` (the reply comes with the backend's answer)."""
    handler = OPS.get(request.op)
    if handler is None:
        return error_reply(request.request_id, request.op, "unknown_op", f"unknown op {request.op!r}")
    try:
        result = await handler(c, Fields(request.args), at, request)
    except InvalidArgs as exc:
        return error_reply(request.request_id, request.op, "invalid_args", str(exc))
    except Unsupported as exc:
        return error_reply(request.request_id, request.op, "unsupported", str(exc))
    except ValueError as exc:
        return error_reply(request.request_id, request.op, "invalid_args", str(exc))
    if isinstance(result, Deferred):
        return result
    return ok_reply(request.request_id, request.op, result)


@op("reserve_now")
async def _reserve_now(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    reservation = parse_reservation(f.args)
    result, res_uuid, outputs = c.charger.reserve_now(reservation, at)
    await c.apply(outputs)
    return reserve_result(result.value, res_uuid)


@op("cancel_reservation")
async def _cancel_reservation(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    reservation_id = f.int_("reservation_id")
    sender = f.str_("sender", required=False, max_len=64) or ""
    f.done()
    cancelled, outputs = c.charger.cancel_reservation(sender, reservation_id, at)
    await c.apply(outputs)
    return cancelled


@op("exists_reservation")
async def _exists_reservation(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    token = f.str_("id_token")
    cid = c.evse_arg(f, required=False)
    group = f.str_("group_id_token", required=False)
    f.done()
    return c.charger.exists_reservation(token, cid, group, at).value


@op("list_reservations")
async def _list_reservations(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    f.done()
    return [reservation_doc(e, at.utc) for e in c.charger.book.entries]


@op("authorize")
async def _authorize(c: OpContext, f: Fields, at: Instant, request: Request) -> object:
    token = f.str_("id_token")
    cid = c.evse_arg(f, required=False)
    token_type = f.str_("token_type", required=False, max_len=64) or "RFID"
    f.done()
    if cid is None:
        chosen, decision, outputs = c.charger.authorize_anywhere(token, at, token_type)
    else:
        chosen = cid
        decision, outputs = c.charger.present_token(cid, token, at, token_type)
    await c.apply(outputs)
    if decision is None:  # the backend is asked: the reply comes when it answers or the request times out
        return Deferred(next(a.request_id for a in outputs if isinstance(a, RequestBackendAuth)))
    reservation_id = decision.reservation.reservation.reservation_id if decision.reservation else None
    evse_id = chosen if decision.status is not AuthStatus.NO_EVSE_AVAILABLE else None
    return authorize_result(decision.status.value, evse_id if decision.source != "held" else None, reservation_id)


@op("stop_session")
async def _stop_session(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    cid = c.evse_arg(f)
    reason = parse_reason(f.str_("reason", required=False, max_len=32))
    f.done()
    stopped, outputs = c.charger.stop_session(cid, reason, at)
    await c.apply(outputs)
    return stopped


@op("set_max_current")
async def _set_max_current(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    cid = c.evse_arg(f)
    current_a = f.number("current_a")
    f.done()
    result, outputs = c.charger.set_max_current(cid, current_a, at)
    await c.apply(outputs)
    return result.value


@op("switch_phases")
async def _switch_phases(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    cid = c.evse_arg(f)
    three = f.bool_("three_phases")
    f.done()
    return c.charger.switch_phases(cid, bool(three)).value


@op("set_enabled")
async def _set_enabled(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    cid = c.evse_arg(f)
    enabled = f.bool_("enabled")
    f.done()
    await c.apply(c.charger.set_enabled(cid, bool(enabled), at))
    return True


@op("unlock_connector")
async def _unlock_connector(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    cid = c.evse_arg(f)
    f.done()
    unlocked, outputs = c.charger.unlock_connector(cid, at)
    await c.apply(outputs)
    return unlocked


@op("set_local_auth_list")
async def _set_local_auth_list(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    update = parse_local_list(f.args)
    c.charger.local_list.apply(update.version, update.full, update.entries)
    c.mark_changed("local_list")  # durable before the reply (API.md §2)
    return True


@op("get_state")
async def _get_state(c: OpContext, f: Fields, at: Instant, _: Request) -> object:
    f.done()
    return state_snapshot(c.state_documents(), [reservation_doc(e, at.utc) for e in c.charger.book.entries],
                          firmware=__version__, uptime_s=c.uptime_s())
