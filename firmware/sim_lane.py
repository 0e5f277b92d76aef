"""The `sim_*` ops of API.md §8: change the simulated world at once, answer once the controller saw it.

What it is for: backend teams script their tests with these ops, so they must be deterministic. A
`sim_*` reply means the controller has seen the change: sampled through its normal input path,
debounced, handled by the core, and its SessionEvents committed to the outbox. So `sim_plug` B followed
at once by `sim_plug` A is a whole short session, and a script's next request always sees the effect.

How:

* Sim ops run one at a time, in the order they arrived, in their own lane: the world changes at
  once, as physics would, even while other requests wait behind slow commits; the next sim op changes
  the world only after the previous one was seen (otherwise a 2 ms B would be debounced away).
* After the change, the lane waits for a barrier (`firmware.inbox`) on the input channel that reads
  it (the EVSE's pilot sampler, the input supervisor, the meter poller, the token reader), read late
  enough for the debounce to have run, and, for the pilot, until the debounce has settled. Then it
  waits for the commit of everything the core did up to there, and replies.

What it must never do: skip the controller's debounce or sampling (real hardware keeps them; the sim
goes through the same path), or answer before the change was handled. It exists only with `--sim`.

A change that the controller cannot see within `SEEN_TIMEOUT_S` (a stopped sampler) is answered with
`internal`, naming what was not seen. `meter_lost` is seen when a meter read fails; the MeterLost fault
itself follows after `meter_stale_after_s`, as for a real meter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from firmware.args import Fields
from firmware.wire import InvalidArgs, error_reply, ok_reply
from hal.sim import KEEP, Keep, SimBoard

if TYPE_CHECKING:
    from firmware.app import Controller
    from firmware.items import Command

log = logging.getLogger(__name__)

SEEN_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Watch:
    """What reads a change: an input channel, how long after the change its reading must be taken,
    and whether to wait for the pilot debounce of an EVSE to settle."""

    channel: Hashable
    settle_s: float = 0.0
    pilot_of: int | None = None


SimHandler = Callable[["Controller", Fields, SimBoard], Watch]


def _plug(c: Controller, f: Fields, sim: SimBoard) -> Watch:
    cid = c.evse_arg(f)
    cp = f.str_("cp", max_len=1)
    # pp_ohms absent: the cable stays as it is; null: open (no cable)
    pp_ohms: float | Literal[Keep.KEEP] | None = f.number("pp_ohms", required=False) if "pp_ohms" in f.args else KEEP
    diode_ok = f.bool_("diode_ok", required=False)
    f.done()
    sim.plug(cid, cp, pp_ohms, True if diode_ok is None else diode_ok)
    return c.pilot_watch(cid)


def _token(c: Controller, f: Fields, sim: SimBoard) -> Watch:
    cid = c.evse_arg(f)
    token = f.str_("id_token")
    token_type = f.str_("token_type", required=False, max_len=64) or "RFID"
    f.done()
    sim.token(cid, token, token_type)
    return Watch(("token", cid))


def _fault(c: Controller, f: Fields, sim: SimBoard) -> Watch:
    cid = c.evse_arg(f)
    fault = f.str_("fault", max_len=32)
    active = f.bool_("active")
    f.done()
    sim.fault(cid, fault, bool(active))
    if fault == "pilot":
        return c.pilot_watch(cid)
    if fault == "meter_lost":
        return c.meter_watch(cid)
    return c.inputs_watch(cid, relay=fault in ("relay_welded", "relay_stuck_open"))


def _load(c: Controller, f: Fields, sim: SimBoard) -> Watch:
    cid = c.evse_arg(f)
    current_a = f.number("current_a")
    f.done()
    sim.load(cid, current_a)
    return c.meter_watch(cid)


SIM_HANDLERS: Final[dict[str, SimHandler]] = {"sim_plug": _plug, "sim_token": _token, "sim_fault": _fault,
                                              "sim_load": _load}
SIM_OPS: Final = frozenset(SIM_HANDLERS)


class SimLane:
    """The ordered lane of sim ops of one controller (a task of its TaskGroup; never raises)."""

    def __init__(self, controller: Controller, sim: SimBoard) -> None:
        self.controller = controller
        self.sim = sim
        self._queue: asyncio.Queue[Command] = asyncio.Queue()

    def submit(self, command: Command) -> None:
        self._queue.put_nowait(command)

    async def run(self) -> None:
        while True:
            command = await self._queue.get()
            try:
                reply = await self._execute(command)
            except Exception as exc:  # noqa: BLE001 - a bug here must still get exactly one reply
                log.exception("sim op %s failed", command.request.op)
                reply = error_reply(command.request.request_id, command.request.op, "internal",
                                    f"{type(exc).__name__}: {exc}")
            command.complete(reply)

    async def _execute(self, command: Command) -> dict[str, object]:
        request, c = command.request, self.controller
        loop = asyncio.get_running_loop()
        changed_at = loop.time()
        try:
            watch = SIM_HANDLERS[request.op](c, Fields(request.args), self.sim)
        except (InvalidArgs, ValueError) as exc:  # nothing was changed
            return error_reply(request.request_id, request.op, "invalid_args", str(exc))
        c.wake(watch.channel)
        if not await self._seen(watch, changed_at):
            log.error("sim op %s: the controller did not see the change within %.0f s", request.op,
                      SEEN_TIMEOUT_S)
            return error_reply(request.request_id, request.op, "internal",
                               f"the controller did not see the change on {watch.channel} within {SEEN_TIMEOUT_S:g} s")
        c.core.ops_executed += 1
        return ok_reply(request.request_id, request.op, True)

    async def _seen(self, watch: Watch, changed_at: float) -> bool:
        """Wait until the controller has read the change (after its debounce) and committed what it
        did; False when that takes longer than SEEN_TIMEOUT_S."""
        c = self.controller
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(SEEN_TIMEOUT_S):
                read_after = changed_at + watch.settle_s
                while True:
                    await c.barriers.wait(watch.channel, read_after)
                    if watch.pilot_of is None or not c.pilot_settling(watch.pilot_of):
                        break
                    read_after = loop.time()  # the debounce is still running: one more round
                await c.durable()
        except TimeoutError:
            return False
        return True
