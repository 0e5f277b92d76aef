"""The core task: the one consumer of the inbox, the only caller of the core, the runner of its actions.

What it is for. It takes one item (`firmware.items`) at a time (hardware facts first:
`firmware.inbox`), lets the core (`firmware.core.charger.Charger`) decide at one `Instant`, and carries
out the actions in order: relays, PWM, lock and LEDs at once; SessionEvents and ReservationUpdateStatus
numbered with the charger's `seq` and staged for the writer (`firmware.persistence`); replies released
once their step is committed (API.md §2); the transitions logged, one INFO line each, tokens masked
(DESIGN.md principle 7).

What it must never do: wait for the disk or the network (the safety path: DESIGN.md timing table),
decide anything the core decides, or let an item reach the core as an exception (a bad backend answer
is logged and dropped; a link event is just a fact).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final

from firmware.actuators import SlowOutputs
from firmware.aio import instant, loop_time, utc_now
from firmware.args import parse_auth_response
from firmware.config import Config
from firmware.core.charger import Charger, Output
from firmware.core.errors import HardwareError
from firmware.core.events import (
    AuthDecided,
    CloseRelay,
    EmitSessionEvent,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    OpenRelay,
    PpChanged,
    RequestBackendAuth,
    RunRcdSelfTest,
    SessionEvent,
    SetLed,
    SetLock,
    SetPwm,
)
from firmware.core.instant import Instant
from firmware.core.reservations import ReservationUpdate
from firmware.core.supervision import Supervisor
from firmware.core.supervision_events import (
    FallbackChanged,
    InputsSensed,
    LinkDown,
    LinkUp,
    LockSensed,
    MeterReadFailed,
    MeterReadSucceeded,
    MeterRejected,
    OnlineChanged,
    OutputFailed,
    PpSampled,
    RelaySensed,
    SupervisionEvent,
)
from firmware.core.supervision_events import Output as SupervisionOutput
from firmware.inbox import Barrier, Barriers, Inbox
from firmware.items import AuthResponse, Command, FeedbackRead, Item, MeterRead, TelemetryDue
from firmware.mqtt import BackendLink
from firmware.ops import Deferred
from firmware.persistence import Persistence
from firmware.telemetry import Telemetry
from firmware.store import OutboxRecord
from firmware.wire import (
    InvalidArgs,
    Request,
    auth_request_doc,
    authorize_result,
    encode,
    mask_token,
    ok_reply,
    rfc3339,
    reservation_update_doc,
    session_event_doc,
)
from hal.protocols import Board, MeterSample, TokenRead

log = logging.getLogger(__name__)

SUPERVISION_EVENTS: Final = (InputsSensed, RelaySensed, PpSampled, MeterReadSucceeded, MeterReadFailed, LockSensed,
                             OutputFailed, LinkUp, LinkDown)

Executor = Callable[[Request, Instant], Awaitable["dict[str, object] | Deferred"]]


class CoreLoop:
    """The core task of one controller (see the module docstring)."""

    def __init__(self, *, config: Config, charger: Charger, board: Board, persistence: Persistence,
                 link: BackendLink, inbox: Inbox[Item], barriers: Barriers, execute: Executor,
                 publish_states: Callable[[], None], last_meter: dict[int, MeterSample],
                 supervisor: Supervisor, after_step: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.charger = charger
        self.board = board
        self.persistence = persistence
        self.link = link
        self.inbox = inbox
        self.barriers = barriers
        self.execute = execute
        self.publish_states = publish_states
        self.last_meter = last_meter
        self.supervisor = supervisor
        self.after_step = after_step  # told when the inbox is empty again (the sampling rate)
        self.evse_ids = list(charger.evses)
        self.transitions: deque[str] = deque(maxlen=200)
        #: told of every transition line as it is logged (the console's `watch`); must return at once
        self.transition_listeners: list[Callable[[str], None]] = []
        self.ops_executed = 0  # requests run on the core (a re-sent id answered from the cache is not)
        self.seq = 0  # the last seq given to a durable message (API.md §4)
        self.authorize_waiters: dict[str, Command] = {}
        self._replies_after_step: list[tuple[Command, dict[str, object]]] = []
        self._states: dict[int, str] = {}
        self._cause = "boot"
        self._background: set[asyncio.Task[Any]] = set()
        self.handled_at = loop_time()  # when run() last came round its loop: its health (firmware.sdnotify)
        self.waiting = False  # run() waits for input (an empty inbox): idle, not wedged
        self.slow = SlowOutputs(board, inbox)
        self.telemetry = Telemetry(charger=charger, link=link, persistence=persistence, last_meter=last_meter,
                                   background=self.background)

    async def run(self) -> None:
        """Take one item (hardware first), let the core decide, carry out its actions. Nothing here
        waits for the disk or the network: durable output is staged for the writer, and replies are
        released by it once their step is committed."""
        while True:
            self.handled_at = loop_time()  # the previous item or deadline is handled (watchdog pings)
            if not self.inbox:  # a batch of items is handled: before waiting, whatever must follow it
                self.after_step()
            # With items queued the deadline need not be known yet: they are taken first either way.
            self.waiting = True
            item = await self.inbox.get_until(None if self.inbox else self.next_deadline())
            self.waiting = False
            if item is None:
                self._cause = "deadline"
                at = instant()
                outputs = self._apply_facts(self.supervisor.tick(at.mono), at)
                outputs += self.charger.tick(at)
                await self.after(outputs)
                continue
            self._cause = item.request.op if isinstance(item, Command) else type(item).__name__
            await self.dispatch(item, instant())

    async def dispatch(self, item: Item, at: Instant) -> None:
        charger = self.charger
        match item:
            case Command():
                await self._command(item, at)
            case Barrier():
                self.barriers.handled(item)
            case TokenRead():
                await self._token(item, at)
            case AuthResponse(value=value):
                try:
                    outputs = self._auth_response(value, at)
                except InvalidArgs as exc:
                    log.warning("ignored a bad R/auth/response: %s", exc)
                    return
                await self.after(outputs)
            case FeedbackRead(cid=cid, feedback_closed=feedback):
                commanded = charger.evses[cid].relay_closed
                await self._supervise(RelaySensed(cid=cid, commanded_closed=commanded, feedback_closed=feedback), at)
            case TelemetryDue():
                self.telemetry.due()
            case MeterRead(cid=cid, sample=sample):
                await self.after(self.meter_read(cid, sample, at), publish=True)  # energy is in the state document
            case InputsSensed() | RelaySensed() | PpSampled() | MeterReadSucceeded() | MeterReadFailed() \
                    | LockSensed() | OutputFailed() | LinkUp() | LinkDown():
                await self._supervise(item, at)
            case Event():
                before = [m.cp for m in charger.evses.values()]
                outputs = charger.handle(item, at)
                await self.after(outputs, publish=before != [m.cp for m in charger.evses.values()])

    def meter_read(self, cid: int, sample: MeterSample, at: Instant) -> list[Output]:
        """A good meter read: supervision judges it (stale, plausible); a plausible sample goes to the
        charger, an implausible one counts as a failed read and is dropped."""
        facts = self.supervisor.handle(MeterReadSucceeded(cid=cid, energy_wh_import=sample.energy_wh_import,
                                                          voltages_v=sample.voltages_v), at.mono)
        outputs = self._apply_facts(facts, at)
        if any(isinstance(fact, MeterRejected) for fact in facts):
            return outputs
        self.last_meter[cid] = sample
        return outputs + self.charger.handle(MeterSampled(cid=cid, energy_wh_import=sample.energy_wh_import,
                                                          energy_wh_export=sample.energy_wh_export,
                                                          currents_a=sample.currents_a), at)

    async def _command(self, command: Command, at: Instant) -> None:
        self.ops_executed += 1
        reply = await self.execute(command.request, at)
        self.persistence.stage()  # what the op changed, found by the writer's diff
        if isinstance(reply, Deferred):  # authorize: answered when the backend decides
            self.authorize_waiters[reply.auth_request_id] = command
        else:
            self._reply_when_durable(command, reply)

    async def _token(self, read: TokenRead, at: Instant) -> None:
        log.info("c%d token %s presented (%s)", read.cid, mask_token(read.id_token), read.token_type)
        if read.cid not in self.charger.evses:
            log.warning("token for unknown EVSE %d ignored", read.cid)
            return
        await self.after(self.charger.present_token(read.cid, read.id_token, at, read.token_type)[1])

    async def after(self, outputs: list[Output], *, publish: bool = False) -> None:
        """Carry out outputs; republish the state documents that changed (only if anything can have:
        most CP samples change nothing, and building documents 100 times a second costs CPU)."""
        await self.run_actions(outputs)
        if outputs or publish:
            self.publish_states()

    async def run_actions(self, outputs: list[Output]) -> None:
        """Carry out the core's actions in order, then stage the step's durable messages and state for
        the writer. Nothing here waits for the disk: replies wait for the commit instead."""
        durable: list[OutboxRecord] = []
        dirty: set[str] = set()
        for action in outputs:
            if not await self._drive(action):
                self._record(action, durable, dirty)
        if outputs:  # a step with no output changed nothing durable (a request's step is staged anyway)
            self.persistence.stage(durable, dirty=dirty)
        for command, reply in self._replies_after_step:
            self._reply_when_durable(command, reply)
        self._replies_after_step.clear()
        self._log_transitions()

    async def _drive(self, action: Output) -> bool:
        """An output for the board, carried out at once: True when `action` was one."""
        match action:
            case OpenRelay(cid=cid, under_load=under_load):
                await self._write(cid, "relay", self.board.relays.set_closed(cid, False))
                if under_load:
                    log.warning("c%d contactor opened under load", cid)
            case CloseRelay(cid=cid):
                await self._write(cid, "relay", self.board.relays.set_closed(cid, True))
            case SetPwm(cid=cid, duty_pct=duty):
                await self._write(cid, "pwm", self.board.pilot.set_duty(cid, duty))
            case SetLock(cid=cid, locked=locked):
                self.slow.lock(cid, locked)  # a pulse and its feedback take time: beside the safety path
            case RunRcdSelfTest(cid=cid):
                self.slow.rcd_self_test(cid)
            case SetLed(cid=cid, led=led):
                try:
                    await self.board.leds.set_led(cid, led)
                except HardwareError:
                    log.exception("c%d LED could not be set", cid)
            case _:
                return False
        return True

    async def _write(self, cid: int, output: str, write: Awaitable[None]) -> None:
        """Write a safety output; one that fails is a fact for the core (OUTPUT_FAILED: the EVSE faults,
        which opens its relay and drives F, as far as the board still can)."""
        try:
            await write
        except HardwareError as exc:
            log.critical("c%d %s could not be written (%s): the EVSE is faulted", cid, output, exc)
            self.inbox.put_safety(OutputFailed(cid=cid, output=output))

    def _record(self, action: Output, durable: list[OutboxRecord], dirty: set[str]) -> None:
        """An output for the backend: durable messages join the step's `durable` (the state parts they
        change join `dirty`); an auth request is sent at once; an auth decision releases its reply."""
        match action:
            case EmitSessionEvent():
                durable.append(self._session_record(action))
                if action.event in (SessionEvent.RESERVATION_START, SessionEvent.RESERVATION_END):
                    dirty.add("reservations")
            case ReservationUpdate():
                durable.append(self._reservation_record(action))
                dirty.add("reservations")
            case RequestBackendAuth():
                doc = auth_request_doc(action.request_id, action.id_token, action.cid, action.token_type)
                self.background(self.link.publish_now(self.link.topics.auth_request, doc, qos=1))
            case AuthDecided():
                self._auth_decided(action)

    def _reply_when_durable(self, command: Command, reply: dict[str, object]) -> None:
        """API.md §2: a reply goes out once everything its request changed is committed (and, to keep
        replies in request order, everything before it)."""
        self.persistence.when_durable(self.persistence.staged_ticket, lambda: command.complete(reply))

    def cancel_background(self) -> None:
        """At stop: best-effort sends still waiting (for a broker that is gone) are dropped, and a lock
        or RCD test still running is stopped (failsafe() drives the outputs safe)."""
        for task in list(self._background):
            task.cancel()
        self.slow.cancel()

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A best-effort send (auth request, meter sample, retained document): kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name="send")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _session_record(self, action: EmitSessionEvent) -> OutboxRecord:
        seq = self._next_seq()
        log.info("c%d session event %s seq %d", action.cid, action.event.value, seq)
        doc = session_event_doc(action, seq=seq, utc=utc_now())
        return OutboxRecord(seq=seq, topic=self.link.topics.evse(action.cid, "session"),
                            payload=encode(self.link.codec, doc), kind="session")

    def _reservation_record(self, update: ReservationUpdate) -> OutboxRecord:
        seq = self._next_seq()
        log.info("reservation %s/%d %s (seq %d)", update.sender, update.reservation_id, update.status.value, seq)
        doc = reservation_update_doc(update, seq=seq, utc=utc_now())
        return OutboxRecord(seq=seq, topic=self.link.topics.reservation, payload=encode(self.link.codec, doc),
                            kind="reservation")

    def _log_transitions(self) -> None:
        for cid, evse in self.charger.evses.items():
            status = self.charger.status(cid).value
            label = f"{evse.state.name}/{status}"
            old = self._states.get(cid)
            if old != label:
                self._states[cid] = label
                line = f"c{cid} {old or 'boot'} -> {label} ({self._cause})"
                entry = f"{rfc3339(utc_now())} {line}"
                self.transitions.append(entry)
                for listener in list(self.transition_listeners):
                    try:
                        listener(entry)
                    except Exception:  # noqa: BLE001 - a listener never stops the core task
                        log.exception("a transition listener failed")
                log.info("%s", line)

    def _auth_response(self, value: object, at: Instant) -> list[Output]:
        request_id, answer = parse_auth_response(value)
        return self.charger.backend_auth_answer(request_id, answer, at)

    def _auth_decided(self, action: AuthDecided) -> None:
        if action.request_id is None:
            return
        command = self.authorize_waiters.pop(action.request_id, None)
        if command is not None:  # released with the step's commit, like every reply
            result = authorize_result(action.status, action.cid, action.reservation_id)
            self._replies_after_step.append((command, ok_reply(command.request.request_id, command.request.op,
                                                               result)))

    # --- link supervision ------------------------------------------------------------------------

    def decide(self, event: Event | SupervisionEvent, at: Instant) -> list[Output]:
        """The core's answer to one fact. A reading goes through supervision first, which turns it into
        facts for the charger (faults raised or cleared, a PP change, the link's state)."""
        if not isinstance(event, SUPERVISION_EVENTS):
            return self.charger.handle(event, at)
        return self._apply_facts(self.supervisor.handle(event, at.mono), at)

    async def _supervise(self, event: SupervisionEvent, at: Instant) -> None:
        """A reading: most say nothing new (no fact), and then nothing else is done for them (CPU: CP,
        PP and the inputs are sampled many times a second)."""
        facts = self.supervisor.handle(event, at.mono)
        if facts:
            await self.after(self._apply_facts(facts, at), publish=True)

    def _apply_facts(self, facts: list[SupervisionOutput], at: Instant) -> list[Output]:
        outputs: list[Output] = []
        for fact in facts:
            match fact:
                case OnlineChanged(online=online):
                    self.charger.online = online
                case FallbackChanged(current_a=current_a):
                    if current_a is not None:
                        log.warning("backend unreachable for %.0f s: offering at most %.1f A",
                                    self.config.mqtt.fallback_after_s, current_a)
                    outputs += self.charger.set_fallback(current_a, at)
                case FaultRaised(cid=cid, fault=fault) | FaultCleared(cid=cid, fault=fault):
                    raised = isinstance(fact, FaultRaised)
                    log.log(logging.ERROR if raised and fault is Fault.METER_LOST else logging.WARNING,
                            "c%d %s %s", cid, fault.value, "raised" if raised else "cleared")
                    outputs += self.charger.handle(fact, at)
                case PpChanged():
                    outputs += self.charger.handle(fact, at)
                case MeterRejected(cid=cid, reason=reason):
                    log.warning("c%d meter reading refused: %s (counts as a failed read)", cid, reason)
        return outputs

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.charger.next_deadline(), self.supervisor.next_deadline()) if d is not None]
        return min(deadlines, default=None)
