"""The controller: config + board + core + links, in one asyncio.TaskGroup with fail-safe shutdown.

Only the `core` task touches the core. The other tasks turn hardware readings, broker messages and
meter reads into items on one queue, and the core task carries out the actions the core returns.
That keeps the shell free of locks and the core free of I/O (DESIGN.md principles 1-3).

Safety: outputs are driven safe (relays open, CP F, LEDs fault) before anything else runs, and
again on any crash of a safety-relevant task, on SIGTERM/SIGINT and on exit (`failsafe()`). Links
(MQTT, meters) reconnect by themselves; the core decides what a lost link means (MeterLost after
the staleness time; the fallback current after `mqtt.fallback_after_s` without the backend).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware import __version__
from firmware.config import Config, EvseSettings
from firmware.core.auth import AuthStatus, BackendAnswer, LocalAuthStatus
from firmware.core.charger import Charger, Output
from firmware.core.errors import ChargerError, HardwareError
from firmware.core.events import (
    DUTY_F,
    FAULT_ERROR,
    AuthDecided,
    CloseRelay,
    EmitSessionEvent,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    Led,
    MeterSampled,
    OpenRelay,
    PilotSampled,
    PpChanged,
    RequestBackendAuth,
    SetLed,
    SetLock,
    SessionCancellationReason,
    SessionEvent,
    SetPwm,
)
from firmware.core.evse import StoredSession
from firmware.core.pilot import Cp, nearest_cp, pp_ampacity_a
from firmware.core.reservations import ReservationUpdate
from firmware.inbox import Barrier, Barriers, Inbox
from firmware.mqtt import BackendLink, InvalidArgs, ReplyCallback, Request, encode, error_reply, ok_reply
from firmware.persistence import Persistence
from firmware.sim_lane import SIM_HANDLERS, SIM_OPS, SimLane, Watch
from firmware.ops import Fields, mask_token, parse_local_list, parse_reason, parse_reservation, reservation_doc, rfc3339
from firmware.store import METER_KEY_BASE, OutboxRecord, Store
from hal.protocols import Board, Meter, MeterSample, TokenRead

log = logging.getLogger(__name__)

FAILSAFE_STEP_S = 0.5
SUPERVISE_INTERVAL_S = 0.05
RELAY_FEEDBACK_GRACE_S = 0.3
BOOT_PILOT_TIMEOUT_S = 1.0
PP_DEBOUNCE_S = 0.1


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Command:
    """A request for the core task; `complete` takes its reply (the link's callback: never fails)."""

    request: Request
    complete: ReplyCallback


@dataclass(frozen=True, slots=True)
class AuthResponse:
    value: object


@dataclass(frozen=True, slots=True)
class LinkChanged:
    up: bool


@dataclass(frozen=True, slots=True)
class FallbackDue:
    pass


@dataclass(frozen=True, slots=True)
class TelemetryDue:
    pass


@dataclass(frozen=True, slots=True)
class MeterRead:
    cid: int
    sample: MeterSample


Item = Event | Command | TokenRead | AuthResponse | LinkChanged | FallbackDue | MeterRead | TelemetryDue | Barrier


@dataclass(frozen=True, slots=True)
class Deferred:
    """An op's result that comes later: `authorize` waiting for the backend's R/auth/response."""

    auth_request_id: str


async def failsafe(board: Board, evse_ids: list[int]) -> None:
    """Every relay open, CP to F, LEDs to fault. Idempotent, bounded in time, never raises."""
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    for cid in evse_ids:
        steps += [
            (f"open relay {cid}", lambda cid=cid: board.relays.set_closed(cid, False)),
            (f"CP F {cid}", lambda cid=cid: board.pilot.set_duty(cid, DUTY_F)),
            (f"LED fault {cid}", lambda cid=cid: board.leds.set_led(cid, Led.FAULT)),
        ]
    for name, step in steps:
        try:
            async with asyncio.timeout(FAILSAFE_STEP_S):
                await step()
        except BaseException:  # noqa: BLE001 - fail-safe must try every step and never raise
            log.exception("failsafe: %s failed", name)


class Controller:
    """One charger: its board, its core and its backend link."""

    def __init__(self, config: Config, board: Board, store: Store, *, meters: dict[int, Meter] | None = None,
                 sim: Any = None) -> None:  # noqa: ANN401 - the simulated board, when there is one
        self.config = config
        self.board = board
        self.sim = sim
        self.store = store
        self.boot_id = str(uuid.uuid4())
        self.started_mono = time.monotonic()
        self.evse_ids = [e.id for e in config.evses]
        self.meters = meters if meters is not None else {}
        self.charger = Charger(
            [replace(e.core_config(config.auth.connection_timeout_s), has_meter=e.id in self.meters)
             for e in config.evses],
            new_session_id=lambda: str(uuid.uuid4()),
            debounce_s=config.pilot.debounce_s,
            reservations_enabled=config.reservations.enabled,
            auth=replace(config.auth_settings(), request_prefix=self.boot_id[:8]),
        )
        self.queue: Inbox[Item] = Inbox()
        self.barriers = Barriers(self.queue)  # type: ignore[arg-type]
        self.persistence = Persistence(store, collect=self._collect)
        self.link = BackendLink(
            settings=config.mqtt, charger_id=config.charger.id, codec=config.mqtt.codec,
            submit=self._submit, on_auth_response=self._on_auth_response, on_link=self._on_link,
            status_doc=self._status_doc, outbox_pending=self.persistence.pending,
            outbox_acked=self.persistence.ack,
        )
        self.persistence.on_committed = self.link.outbox_changed
        self.sim_lane = SimLane(self) if sim is not None else None
        self.transitions: deque[str] = deque(maxlen=200)
        self.last_meter: dict[int, MeterSample] = {}
        self.ops_executed = 0  # requests run on the core (a re-sent id answered from the cache is not)
        self._seq = 0
        self._relay: dict[int, bool] = dict.fromkeys(self.evse_ids, False)
        self._authorize_waiters: dict[str, Command] = {}
        self._replies_after_step: list[tuple[Command, dict[str, object]]] = []
        self._fallback_timer: asyncio.TimerHandle | None = None
        self._states: dict[int, str] = {}
        self._cause = "boot"
        self._published: dict[int, bytes] = {}
        self._session_started: dict[str, datetime] = {}
        self._last_session: dict[int, str] = {}
        self._pp: dict[int, float | None] = {}
        self._pp_candidate: dict[int, tuple[float | None, float] | None] = {}
        self._wake: dict[Hashable, asyncio.Event] = {}
        self._cp_seen: dict[int, Cp | None] = {}
        self._meter_key = METER_KEY_BASE
        self._first_online_logged = False
        self._background: set[asyncio.Task[Any]] = set()
        self.charger.online = False  # until the backend link is up: tokens go to the offline policy
        self.ready = asyncio.Event()

    # --- life cycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        await failsafe(self.board, self.evse_ids)  # outputs safe before anything else runs
        age = process_age_s()
        log.info("outputs safe%s", f" {age * 1000:.0f} ms after the process started" if age is not None else "")
        try:
            async with self.board:
                await self._boot()
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._core_loop(), name="core")
                    group.create_task(self.persistence.run(), name="store-writer")
                    for cid in self.evse_ids:
                        group.create_task(self._pilot_task(cid), name=f"pilot{cid}")
                    group.create_task(self._supervise_inputs(), name="inputs")
                    for cid, meter in self.meters.items():
                        group.create_task(cancellable(self._meter_task(cid, meter), f"meter{cid}"), name=f"meter{cid}")
                    group.create_task(self._token_task(), name="tokens")
                    group.create_task(cancellable(self._link_task(), "mqtt-link"), name="mqtt")
                    group.create_task(self._telemetry_task(), name="telemetry")
                    if self.sim_lane is not None:
                        group.create_task(self.sim_lane.run(), name="sim-ops")
                    self.ready.set()
        finally:
            await failsafe(self.board, self.evse_ids)
            try:  # what is staged is committed; sessions found open at the next boot end with reason Reboot
                self.persistence.stage(extra={"clean": True})
                await self.persistence.flush()
            except Exception:  # noqa: BLE001 - the outputs are safe already; log and stop
                log.exception("could not record the clean stop")
            log.info("outputs safe; controller stopped")

    async def _boot(self) -> None:
        """Restore, take the first meter readings and measure CP and PP, all before `online: true`
        and before the first state documents (API.md §4: `cp` is as measured, never null)."""
        loop = asyncio.get_running_loop()
        state, pending = await asyncio.to_thread(self.store.load)
        self.persistence.loaded(state, pending)
        self._seq = max(self.store.last_seq, 0)
        self._meter_key = max([METER_KEY_BASE] + [r.seq for r in pending if r.droppable])
        if self.sim is not None:  # a real meter keeps its register itself; the simulated one is restored
            for key, energy_wh in _items(state.get("energy")):
                with contextlib.suppress(ValueError, TypeError):
                    self.sim.restore_energy(int(key), float(energy_wh))
        now, utc = loop.time(), utc_now()
        outputs: list[Output] = list(self.charger.start(now, utc))
        outputs += await self._first_meter_readings(now, utc)
        outputs += self._restore(state, now, utc)
        self.persistence.stage(extra={"clean": False})
        await self._run(outputs)
        await self._measure_pilots()
        await self.persistence.flush()
        self._arm_fallback()
        for cid in self.evse_ids:
            self._publish_state(cid)
        log.info("controller %s started: %d EVSE(s), boot %s, %d message(s) to replay, last seq %d",
                 self.config.charger.id, len(self.evse_ids), self.boot_id, len(pending), self._seq)

    async def _first_meter_readings(self, now: float, utc: datetime) -> list[Output]:
        """Every meter at once, each bounded by its `meter_stale_after_s`: a meter that gives no first
        reading is lost (MeterLost; its EVSE offers no charging until a reading comes), as EVerest's
        `initial_meter_value_timeout`. The energy of a restored session comes from these readings."""
        async def first(cid: int, meter: Meter) -> MeterSample | Exception:
            try:
                async with asyncio.timeout(self._settings(cid).meter_stale_after_s):
                    return await meter.read()
            except (HardwareError, TimeoutError) as exc:
                return exc
        cids = list(self.meters)
        results = await asyncio.gather(*(first(cid, self.meters[cid]) for cid in cids))
        outputs: list[Output] = []
        for cid, result in zip(cids, results, strict=True):
            if isinstance(result, Exception):
                log.error("c%d meter gave no first reading (%s): MeterLost until it answers", cid,
                          result or type(result).__name__)
                outputs += self.charger.handle(FaultRaised(cid=cid, fault=Fault.METER_LOST), now, utc)
                continue
            self.last_meter[cid] = result
            outputs += self.charger.handle(MeterSampled(cid=cid, energy_wh_import=result.energy_wh_import,
                                                        energy_wh_export=result.energy_wh_export), now, utc)
        return outputs

    async def _measure_pilots(self) -> None:
        """Sample every EVSE's CP and PP until the core has a debounced CP for each (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOOT_PILOT_TIMEOUT_S
        while True:
            for cid in self.evse_ids:
                for event in await self._sample_pilot(cid):
                    await self._run(self.charger.handle(event, loop.time(), utc_now()))
            if all(self.charger.evses[cid].cp is not None for cid in self.evse_ids):
                return
            if loop.time() >= deadline:
                log.error("CP not stable within %.1f s at boot: %s", BOOT_PILOT_TIMEOUT_S,
                          {cid: self._cp_seen.get(cid) for cid in self.evse_ids})
                return
            await asyncio.sleep(self.config.pilot.sample_interval_s)

    def _restore(self, state: dict[str, Any], now: float, utc: datetime) -> list[Output]:
        """Bring back what the journal holds; a damaged part is logged and skipped, never fatal."""
        out: list[Output] = []
        charger = self.charger
        steps: list[tuple[str, Callable[[], list[Output]]]] = [
            ("local_list", lambda: charger.local_list.restore(state["local_list"]) or []),
        ]
        for key, limit in _items(state.get("limits")):
            steps.append(("limits", lambda k=key, v=limit: charger.set_max_current(int(k), float(v), now, utc)[1]))
        for key, enabled in _items(state.get("enabled")):
            if enabled is False:
                steps.append(("enabled", lambda k=key: charger.set_enabled(int(k), False, now, utc)))
        for key, counts in _items(state.get("counters")):
            steps.append(("counters", lambda k=key, c=counts: self._restore_counters(int(k), c)))
        reason = SessionCancellationReason.REBOOT if state.get("clean") is True else SessionCancellationReason.POWER_LOSS
        for key, stored in _items(state.get("sessions")):
            if isinstance(stored, dict):
                steps.append(("sessions", lambda k=key, v=stored: charger.restore_session(
                    int(k), StoredSession(**v), now, utc, reason=reason,
                    resume=self.config.sessions.resume_after_power_loss)))
        # Last: the book then judges scheduled reservations and G3 holds on EVSEs whose sessions are back.
        steps.append(("reservations", lambda: charger.book.restore(state["reservations"], utc)))
        for part, step in steps:
            if part not in state:
                continue
            try:
                out += step()
            except (ValueError, KeyError, TypeError, IndexError, ChargerError):
                log.exception("stored %s could not be restored; continuing with the rest", part)
        return out

    def _restore_counters(self, cid: int, counts: object) -> list[Output]:
        counters = self.charger.evses[cid].counters
        values = list(counts)  # type: ignore[call-overload]
        counters.contactor_cycles, counters.openings_under_load = int(values[0]), int(values[1])
        return []

    def _collect(self, dirty: set[str]) -> dict[str, Any]:
        """The durable state parts as they are now (called by the writer before each commit). The
        energy registers go with every commit, so nothing published ever exceeds what a restart
        restores; the reservation book and the local list only when a step marked them changed."""
        charger = self.charger
        parts: dict[str, Any] = {
            "sessions": {str(cid): (asdict(StoredSession.of(m.session)) if m.session is not None else None)
                         for cid, m in charger.evses.items()},
            "limits": {str(cid): charger.commanded_limit_a(cid) for cid in self.evse_ids},
            "enabled": {str(cid): m.enabled for cid, m in charger.evses.items()},
            "counters": {str(cid): [m.counters.contactor_cycles, m.counters.openings_under_load]
                         for cid, m in charger.evses.items()},
        }
        energy = self._energy_part()
        if energy:
            parts["energy"] = energy
        if "reservations" in dirty:
            parts["reservations"] = charger.book.snapshot()
        if "local_list" in dirty:
            parts["local_list"] = charger.local_list.snapshot()
        return parts

    def _energy_part(self) -> dict[str, float]:
        return {str(cid): sample.energy_wh_import for cid, sample in self.last_meter.items()}

    # --- the core task ---------------------------------------------------------------------------

    async def _core_loop(self) -> None:
        """Take one item (hardware first), let the core decide, carry out its actions. Nothing here
        waits for the disk or the network: durable output is staged for the writer, and replies are
        released by it once their step is committed."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(self.charger.next_deadline()):
                    item = await self.queue.get()
            except TimeoutError:
                self._cause = "deadline"
                await self._after(self.charger.tick(loop.time(), utc_now()))
                continue
            self._cause = item.request.op if isinstance(item, Command) else type(item).__name__
            await self._dispatch(item, loop.time(), utc_now())

    async def _dispatch(self, item: Item, now: float, utc: datetime) -> None:
        charger = self.charger
        match item:
            case Command():
                self.ops_executed += 1
                reply = await self._execute(item.request, now, utc)
                self.persistence.stage()  # what the op changed, found by the writer's diff
                if isinstance(reply, Deferred):  # authorize: answered when the backend decides
                    self._authorize_waiters[reply.auth_request_id] = item
                else:
                    self._reply_when_durable(item, reply)
                return
            case Barrier():
                self.barriers.handled(item)
                return
            case TokenRead(cid=cid, id_token=token, token_type=token_type):
                log.info("c%d token %s presented (%s)", cid, mask_token(token), token_type)
                if cid not in charger.evses:
                    log.warning("token for unknown EVSE %d ignored", cid)
                    return
                await self._after(charger.present_token(cid, token, now, utc, token_type)[1])
            case AuthResponse(value=value):
                try:
                    outputs = self._auth_response(value, now, utc)
                except InvalidArgs as exc:
                    log.warning("ignored a bad R/auth/response: %s", exc)
                    return
                await self._after(outputs)
            case LinkChanged(up=up):
                charger.online = up
                if up:
                    self._disarm_fallback()
                    await self._after(charger.set_fallback(None, now, utc), publish=True)
                else:
                    self._arm_fallback()
            case FallbackDue():
                log.warning("backend unreachable for %.0f s: offering at most %.1f A",
                            self.config.mqtt.fallback_after_s, self.config.mqtt.fallback_current_a)
                await self._after(charger.set_fallback(self.config.mqtt.fallback_current_a, now, utc))
            case TelemetryDue():
                self._telemetry()
            case MeterRead(cid=cid, sample=sample):
                self.last_meter[cid] = sample
                await self._after(charger.handle(MeterSampled(cid=cid, energy_wh_import=sample.energy_wh_import,
                                                              energy_wh_export=sample.energy_wh_export,
                                                              currents_a=sample.currents_a), now, utc),
                                  publish=True)  # the session's energy is in the state document
            case Event():
                before = [m.cp for m in charger.evses.values()]
                outputs = charger.handle(item, now, utc)
                await self._after(outputs, publish=before != [m.cp for m in charger.evses.values()])

    async def _after(self, outputs: list[Output], *, publish: bool = False) -> None:
        """Carry out outputs; republish the state documents that changed (only if anything can have:
        most CP samples change nothing, and building documents 100 times a second costs CPU)."""
        await self._run(outputs)
        if outputs or publish:
            for cid in self.evse_ids:
                self._publish_state(cid)

    async def _run(self, outputs: list[Output]) -> None:
        """Carry out the core's actions in order, then stage the step's durable messages and state for
        the writer. Nothing here waits for the disk: replies wait for the commit instead."""
        durable: list[OutboxRecord] = []
        dirty: set[str] = set()
        for action in outputs:
            match action:
                case OpenRelay(cid=cid, under_load=under_load):
                    await self.board.relays.set_closed(cid, False)
                    self._relay[cid] = False
                    if under_load:
                        log.warning("c%d contactor opened under load", cid)
                case CloseRelay(cid=cid):
                    await self.board.relays.set_closed(cid, True)
                    self._relay[cid] = True
                case SetPwm(cid=cid, duty_pct=duty):
                    await self.board.pilot.set_duty(cid, duty)
                case SetLock(cid=cid, locked=locked):
                    await self.board.lock.set_locked(cid, locked)
                case SetLed(cid=cid, led=led):
                    try:
                        await self.board.leds.set_led(cid, led)
                    except HardwareError:
                        log.exception("c%d LED could not be set", cid)
                case EmitSessionEvent():
                    durable.append(self._session_record(action))
                    if action.event in (SessionEvent.RESERVATION_START, SessionEvent.RESERVATION_END):
                        dirty.add("reservations")
                case ReservationUpdate():
                    durable.append(self._reservation_record(action))
                    dirty.add("reservations")
                case RequestBackendAuth():
                    doc = {"id": action.request_id, "id_token": action.id_token, "evse_id": action.cid,
                           "token_type": action.token_type}
                    self.background(self.link.publish_now(self.link.topics.auth_request, doc, qos=1))
                case AuthDecided():
                    self._auth_decided(action)
        if outputs:  # a step with no output changed nothing durable (a request's step is staged anyway)
            self.persistence.stage(durable, dirty=dirty)
        for command, reply in self._replies_after_step:
            self._reply_when_durable(command, reply)
        self._replies_after_step.clear()
        self._log_transitions()

    def _reply_when_durable(self, command: Command, reply: dict[str, object]) -> None:
        """API.md §2: a reply goes out once everything its request changed is committed (and, to keep
        replies in request order, everything before it)."""
        self.persistence.when_durable(self.persistence.staged_ticket, lambda: command.complete(reply))

    def background(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A best-effort send (auth request, meter sample, retained document): kept referenced until it ends."""
        task = asyncio.get_running_loop().create_task(coro, name="send")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _session_record(self, action: EmitSessionEvent) -> OutboxRecord:
        seq = self._next_seq()
        doc = action.payload()
        timestamp = rfc3339(utc_now())
        doc["timestamp"] = timestamp
        doc["seq"] = seq
        for key in ("session_started", "session_finished", "session_cancelled"):
            if isinstance(doc.get(key), dict):
                doc[key] = dict(doc[key], timestamp=timestamp)  # type: ignore[arg-type]
        log.info("c%d session event %s seq %d", action.cid, action.event.value, seq)
        return OutboxRecord(seq=seq, topic=self.link.topics.evse(action.cid, "session"),
                            payload=encode(self.link.codec, doc), kind="session")

    def _reservation_record(self, update: ReservationUpdate) -> OutboxRecord:
        seq = self._next_seq()
        doc = update.payload()
        doc["timestamp"] = rfc3339(utc_now())
        doc["seq"] = seq
        log.info("reservation %s/%d %s (seq %d)", update.sender, update.reservation_id, update.status.value, seq)
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
                self.transitions.append(f"{rfc3339(utc_now())} {line}")
                log.info("%s", line)

    # --- documents -------------------------------------------------------------------------------

    def _status_doc(self, online: bool) -> dict[str, object]:
        if not online:
            return {"online": False}
        return {"online": True, "firmware": __version__, "boot_id": self.boot_id, "evses": self.evse_ids}

    def state_doc(self, cid: int) -> dict[str, object]:
        """The EVSE state document of API.md §4."""
        evse = self.charger.evses[cid]
        config = evse.config
        utc = utc_now()
        session = evse.session
        if session is None:
            self._session_started.pop(self._last_session.get(cid, ""), None)
        else:
            self._last_session[cid] = session.uuid
        session_doc: dict[str, object] | None = None
        if session is not None:
            meter = self.last_meter.get(cid)
            energy_wh = (meter.energy_wh_import - session.energy_wh_import_start) if meter else None
            started = self._session_started.get(session.uuid)
            if started is None:
                age_s = asyncio.get_running_loop().time() - session.started_at
                started = self._session_started[session.uuid] = utc - timedelta(seconds=age_s)
            session_doc = {"uuid": session.uuid, "id_token": mask_token(session.id_token),
                           "started_at": rfc3339(started), "energy_wh": None if energy_wh is None else round(max(energy_wh, 0.0), 3),
                           "reservation_id": session.reservation_id}
        entry = self.charger.book.specific(cid, utc)
        reservation_doc_ = None
        if entry is not None and entry.active:
            reservation_doc_ = {"reservation_id": entry.reservation.reservation_id, "sender": entry.reservation.sender,
                                "expiry_time": rfc3339(entry.reservation.expiry_utc)}
        pp_a = pp_ampacity_a(self._pp.get(cid), config.phases) if config.socket_outlet else config.cable_max_current_a
        return {
            "evse_id": cid,
            "status": self.charger.status(cid).value,
            "cp": self._measured_cp(cid).value,
            "pp_max_a": pp_a,
            "relay_closed": evse.relay_closed,
            "pwm_duty_pct": evse.duty_pct,
            "offered_a": evse.offered_a,
            "max_current_a": config.max_current_a,
            "phases": self.charger.phases[cid],
            "connectors": list(config.connectors),
            "enabled": evse.enabled,
            "errors": sorted(FAULT_ERROR[f].value for f in evse.faults),
            "session": session_doc,
            "reservation": reservation_doc_,
            "led": self.charger.led(cid).value,
            "updated_at": rfc3339(utc),
        }

    def _measured_cp(self, cid: int) -> Cp:
        """CP as measured (API.md §4, never null): the debounced state, else (out of band, or just
        re-read after F) the band nearest to the last sample."""
        cp = self.charger.evses[cid].cp
        return cp if cp is not None else self._cp_seen.get(cid) or Cp.F

    def _publish_state(self, cid: int) -> None:
        doc = self.state_doc(cid)
        key = encode("cbor", {k: v for k, v in doc.items() if k != "updated_at"})
        if self._published.get(cid) == key:
            return
        self._published[cid] = key
        self.link.retain(self.link.topics.evse(cid, "state"), doc)

    # --- requests --------------------------------------------------------------------------------

    def _submit(self, request: Request, complete: ReplyCallback) -> None:
        """From the link: queue a request without waiting. Sim ops go to their own lane (they change
        the simulated world at once and answer once the controller has seen the change)."""
        command = Command(request, complete)
        if self.sim_lane is not None and request.op in SIM_OPS:  # without --sim: `unsupported` from the core
            self.sim_lane.submit(command)
        else:
            self.queue.put(command)

    async def _on_auth_response(self, value: object) -> None:
        self.queue.put(AuthResponse(value))

    async def _on_link(self, up: bool) -> None:
        if up and not self._first_online_logged:
            self._first_online_logged = True
            age = process_age_s()
            log.info("first status online%s", f" {age * 1000:.0f} ms after the process started" if age else "")
        self.queue.put(LinkChanged(up))

    async def _execute(self, request: Request, now: float, utc: datetime) -> dict[str, object] | Deferred:
        handler = OPS.get(request.op)
        if request.op in SIM_OPS:  # the sim lane runs them (and waits until seen); here only parse and apply
            return self._sim_now(request)
        if handler is None:
            return error_reply(request.request_id, request.op, "unknown_op", f"unknown op {request.op!r}")
        try:
            result = await handler(self, Fields(request.args), now, utc, request)
        except InvalidArgs as exc:
            return error_reply(request.request_id, request.op, "invalid_args", str(exc))
        except Unsupported as exc:
            return error_reply(request.request_id, request.op, "unsupported", str(exc))
        except ValueError as exc:
            return error_reply(request.request_id, request.op, "invalid_args", str(exc))
        if isinstance(result, Deferred):
            return result
        return ok_reply(request.request_id, request.op, result)

    def evse_arg(self, f: Fields, name: str = "evse_id", required: bool = True) -> int | None:
        cid = f.int_(name, required=required, minimum=1)
        if cid is not None and cid not in self.charger.evses:
            raise InvalidArgs(f"{name}: unknown EVSE {cid} (this charger has {self.evse_ids})")
        return cid

    def _sim_now(self, request: Request) -> dict[str, object]:
        if self.sim is None:
            return error_reply(request.request_id, request.op, "unsupported", "sim ops are only available with --sim")
        try:
            SIM_HANDLERS[request.op](self, Fields(request.args), self.sim)
        except (InvalidArgs, ValueError) as exc:
            return error_reply(request.request_id, request.op, "invalid_args", str(exc))
        return ok_reply(request.request_id, request.op, True)

    def _settings(self, cid: int) -> EvseSettings:
        return next(e for e in self.config.evses if e.id == cid)

    def _auth_response(self, value: object, now: float, utc: datetime) -> list[Output]:
        f = Fields(value)
        request_id = f.str_("id", max_len=64)
        status = f.str_("status", max_len=16)
        parent = f.str_("parent_id_token", required=False)
        try:
            answer = BackendAnswer(status=LocalAuthStatus(status), parent_id_token=parent)
        except ValueError as exc:
            raise InvalidArgs("status: must be Accepted, Blocked, Expired or Invalid") from exc
        return self.charger.backend_auth_answer(request_id or "", answer, now, utc)

    def _auth_decided(self, action: AuthDecided) -> None:
        if action.request_id is None:
            return
        command = self._authorize_waiters.pop(action.request_id, None)
        if command is not None:  # released with the step's commit, like every reply
            result = {"status": action.status, "evse_id": action.cid, "reservation_id": action.reservation_id}
            self._replies_after_step.append((command, ok_reply(command.request.request_id, command.request.op,
                                                               result)))

    # --- link supervision ------------------------------------------------------------------------

    def _arm_fallback(self) -> None:
        if self._fallback_timer is None:
            loop = asyncio.get_running_loop()
            self._fallback_timer = loop.call_later(self.config.mqtt.fallback_after_s, self.queue.put,
                                                   FallbackDue())

    def _disarm_fallback(self) -> None:
        if self._fallback_timer is not None:
            self._fallback_timer.cancel()
            self._fallback_timer = None

    # --- hardware and link tasks -----------------------------------------------------------------

    async def _sample_pilot(self, cid: int) -> list[Event]:
        """Read CP, and PP debounced: PP_DEBOUNCE_S, longer than CP's, so that at an unplug CP reaches A
        first and a session ends as unplugged rather than paused by a cable that vanished earlier."""
        sample = await self.board.pilot.read_cp(cid)
        self._cp_seen[cid] = nearest_cp(sample.volts_hi)
        events: list[Event] = [PilotSampled(cid=cid, volts_hi=sample.volts_hi, volts_lo=sample.volts_lo)]
        ohms, now = await self.board.pilot.read_pp(cid), asyncio.get_running_loop().time()
        candidate = self._pp_candidate.get(cid)
        if cid in self._pp and _same_pp(ohms, self._pp[cid]):
            candidate = None
        elif candidate is None or not _same_pp(ohms, candidate[0]):
            candidate = (ohms, now)
        if candidate is not None and (now - candidate[1] >= PP_DEBOUNCE_S or cid not in self._pp):
            self._pp[cid] = ohms
            candidate = None
            events.append(PpChanged(cid=cid, ohms=ohms))
        self._pp_candidate[cid] = candidate
        return events

    async def _pilot_task(self, cid: int) -> None:
        """Sample CP and PP every `pilot.sample_interval_s` (safety-relevant: the safety lane)."""
        interval = self.config.pilot.sample_interval_s
        loop = asyncio.get_running_loop()
        while True:
            read_at = loop.time()
            for event in await self._sample_pilot(cid):
                self.queue.put_safety(event)
            self.barriers.reached(("pilot", cid), read_at)
            await asyncio.sleep(interval)

    async def _supervise_inputs(self) -> None:
        """RCD, over-temperature and relay feedback become faults raised and cleared (safety)."""
        active: dict[tuple[int, Fault], bool] = {}
        mismatch_since: dict[int, float] = {}
        loop = asyncio.get_running_loop()
        while True:
            for cid in self.evse_ids:
                read_at = loop.time()
                states = {
                    Fault.RCD_TRIPPED: await self.board.rcd.tripped(cid),
                    Fault.OVERTEMPERATURE: await self.board.temperature.overtemperature(cid),
                }
                feedback = await self.board.relays.feedback_closed(cid)
                now = loop.time()
                commanded = self._relay[cid]
                if feedback is None or feedback == commanded:
                    mismatch_since.pop(cid, None)
                else:
                    mismatch_since.setdefault(cid, now)
                late = now - mismatch_since.get(cid, now) >= RELAY_FEEDBACK_GRACE_S
                states[Fault.RELAY_WELDED] = late and bool(feedback) and not commanded
                states[Fault.RELAY_STUCK_OPEN] = late and not feedback and commanded
                for fault, is_active in states.items():
                    # a welded relay stays a fault until it opens while commanded open
                    if fault is Fault.RELAY_WELDED and active.get((cid, fault)) and feedback:
                        is_active = True
                    if fault is Fault.RELAY_STUCK_OPEN and active.get((cid, fault)) and not commanded:
                        is_active = bool(feedback is False and commanded)
                    if is_active != active.get((cid, fault), False):
                        active[(cid, fault)] = is_active
                        event = FaultRaised if is_active else FaultCleared
                        log.warning("c%d %s %s", cid, fault.value, "raised" if is_active else "cleared")
                        self.queue.put_safety(event(cid=cid, fault=fault))
                self.barriers.reached(("inputs", cid), read_at)
            await asyncio.sleep(SUPERVISE_INTERVAL_S)

    async def _meter_task(self, cid: int, meter: Meter) -> None:
        """Poll a meter; a meter silent for `meter_stale_after_s` raises MeterLost (link: never crashes).
        A meter that gave no first reading at boot is lost already (see `_first_meter_readings`)."""
        settings = self._settings(cid)
        interval = settings.meter.poll_interval_s if settings.meter is not None else 1.0
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        lost = cid not in self.last_meter
        delay = interval
        wake = self._wake[("meter", cid)] = asyncio.Event()
        while True:
            read_at = loop.time()
            try:
                sample = await meter.read()
            except HardwareError as exc:
                if loop.time() - last_ok >= settings.meter_stale_after_s and not lost:
                    lost = True
                    log.error("c%d meter lost: %s", cid, exc)
                    self.queue.put_safety(FaultRaised(cid=cid, fault=Fault.METER_LOST))
                else:
                    log.debug("c%d meter read failed: %s", cid, exc)
                delay = min(delay * 2, max(interval, 10.0)) * random.uniform(0.8, 1.0)  # capped, jittered
            else:
                last_ok, delay = loop.time(), interval
                if lost:
                    lost = False
                    log.warning("c%d meter back", cid)
                    self.queue.put(FaultCleared(cid=cid, fault=Fault.METER_LOST))
                self.queue.put(MeterRead(cid=cid, sample=sample))
            self.barriers.reached(("meter", cid), read_at)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()

    async def _token_task(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            read = await self.board.tokens.next_token()
            self.queue.put(read)
            self.barriers.reached(("token", read.cid), loop.time())

    async def _link_task(self) -> None:
        """The backend link is not safety-relevant: a bug in it is logged and the link restarted."""
        while True:
            try:
                await self.link.run()
            except Exception:  # noqa: BLE001 - a link never takes the charger down
                log.exception("backend link crashed; restarting it in 5 s")
                await asyncio.sleep(5.0)

    async def _telemetry_task(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry.meter_interval_s)
            self.queue.put(TelemetryDue())

    def _telemetry(self) -> None:
        """Meter samples (QoS 0), published once the energy in them is committed (never ahead of the
        store). While the backend is unreachable they wait in the outbox (droppable: oldest first)."""
        offline: list[OutboxRecord] = []
        online: list[tuple[str, dict[str, object]]] = []
        for cid in self.evse_ids:
            sample = self.last_meter.get(cid)
            if sample is None:
                continue
            doc: dict[str, object] = {
                "evse_id": cid, "timestamp": rfc3339(utc_now()), "energy_Wh_import": sample.energy_wh_import,
                "energy_Wh_export": sample.energy_wh_export, "power_W": sample.power_w,
                "current_A": list(sample.currents_a), "voltage_V": list(sample.voltages_v),
                "frequency_Hz": sample.frequency_hz, "meter_ok": Fault.METER_LOST not in self.charger.evses[cid].faults}
            topic = self.link.topics.evse(cid, "meter")
            if self.link.connected.is_set():
                online.append((topic, doc))
            else:
                self._meter_key += 1
                offline.append(OutboxRecord(seq=self._meter_key, topic=topic, payload=encode(self.link.codec, doc),
                                            kind="meter"))
        ticket = self.persistence.stage(offline)
        for topic, doc in online:
            self.persistence.when_durable(ticket, lambda t=topic, d=doc: self.background(
                self.link.publish_now(t, d, qos=0)))

    # --- what the sim lane needs (API.md §8) ----------------------------------------------------

    def wake(self, channel: Hashable) -> None:
        """Ask the producer of `channel` to read now rather than at its next poll."""
        if channel in self._wake:
            self._wake[channel].set()

    def pilot_watch(self, cid: int) -> Watch:
        interval = self.config.pilot.sample_interval_s
        return Watch(("pilot", cid), settle_s=max(self.config.pilot.debounce_s, PP_DEBOUNCE_S) + interval,
                     pilot_of=cid)

    def inputs_watch(self, cid: int, *, relay: bool) -> Watch:
        return Watch(("inputs", cid), settle_s=RELAY_FEEDBACK_GRACE_S + SUPERVISE_INTERVAL_S if relay else 0.0)

    def meter_watch(self, cid: int) -> Watch:
        return Watch(("meter", cid) if cid in self.meters else ("inputs", cid))

    def pilot_settling(self, cid: int) -> bool:
        """A CP or PP change of this EVSE is still being debounced."""
        return self.charger.pilot_settling(cid) or self._pp_candidate.get(cid) is not None

    async def durable(self) -> None:
        """Wait until everything the core has done so far is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.persistence.when_durable(self.persistence.staged_ticket,
                                      lambda: None if done.done() else done.set_result(None))
        await done


class Unsupported(Exception):  # noqa: N818 - the error code's name
    """The op is not available here (a sim op on real hardware, or a feature switched off)."""


# --- the operations of API.md §3 and §8 ------------------------------------------------------------

OpHandler = Callable[[Controller, Fields, float, datetime, Request], Awaitable[object]]
OPS: dict[str, OpHandler] = {}


def op(name: str) -> Callable[[OpHandler], OpHandler]:
    def register(handler: OpHandler) -> OpHandler:
        OPS[name] = handler
        return handler
    return register


@op("reserve_now")
async def _reserve_now(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    reservation = parse_reservation(f.args)
    result, res_uuid, outputs = c.charger.reserve_now(reservation, now, utc)
    await c._after(outputs)  # noqa: SLF001
    doc: dict[str, object] = {"status": result.value}
    if res_uuid is not None:
        doc["uuid"] = res_uuid
    return doc


@op("cancel_reservation")
async def _cancel_reservation(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    reservation_id = f.int_("reservation_id")
    sender = f.str_("sender", required=False, max_len=64) or ""
    f.done()
    cancelled, outputs = c.charger.cancel_reservation(sender, reservation_id or 0, now, utc)
    await c._after(outputs)  # noqa: SLF001
    return cancelled


@op("exists_reservation")
async def _exists_reservation(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    token = f.str_("id_token")
    cid = c.evse_arg(f, required=False)
    group = f.str_("group_id_token", required=False)
    f.done()
    return c.charger.exists_reservation(token or "", cid, group, now, utc).value


@op("list_reservations")
async def _list_reservations(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    f.done()
    return [reservation_doc(e, utc) for e in c.charger.book.entries]


@op("authorize")
async def _authorize(c: Controller, f: Fields, now: float, utc: datetime, request: Request) -> object:
    token = f.str_("id_token") or ""
    cid = c.evse_arg(f, required=False)
    token_type = f.str_("token_type", required=False, max_len=64) or "RFID"
    f.done()
    if cid is None:
        chosen, decision, outputs = c.charger.authorize_anywhere(token, now, utc, token_type)
    else:
        chosen = cid
        decision, outputs = c.charger.present_token(cid, token, now, utc, token_type)
    await c._after(outputs)  # noqa: SLF001
    if decision is None:  # the backend is asked: the reply comes when it answers or the request times out
        return Deferred(next(a.request_id for a in outputs if isinstance(a, RequestBackendAuth)))
    reservation_id = decision.reservation.reservation.reservation_id if decision.reservation else None
    evse_id = chosen if decision.status is not AuthStatus.NO_EVSE_AVAILABLE else None
    return {"status": decision.status.value, "evse_id": evse_id if decision.source != "held" else None,
            "reservation_id": reservation_id}


@op("stop_session")
async def _stop_session(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    cid = c.evse_arg(f) or 0
    reason = parse_reason(f.str_("reason", required=False, max_len=32))
    f.done()
    stopped, outputs = c.charger.stop_session(cid, reason, now, utc)
    await c._after(outputs)  # noqa: SLF001
    return stopped


@op("set_max_current")
async def _set_max_current(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    cid = c.evse_arg(f) or 0
    current_a = f.number("current_a") or 0.0
    f.done()
    result, outputs = c.charger.set_max_current(cid, current_a, now, utc)
    await c._after(outputs)  # noqa: SLF001
    return result.value


@op("switch_phases")
async def _switch_phases(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    cid = c.evse_arg(f) or 0
    three = f.bool_("three_phases")
    f.done()
    return c.charger.switch_phases(cid, bool(three)).value


@op("set_enabled")
async def _set_enabled(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    cid = c.evse_arg(f) or 0
    enabled = f.bool_("enabled")
    f.done()
    await c._after(c.charger.set_enabled(cid, bool(enabled), now, utc))  # noqa: SLF001
    return True


@op("unlock_connector")
async def _unlock_connector(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    cid = c.evse_arg(f) or 0
    f.done()
    unlocked, outputs = c.charger.unlock_connector(cid, now, utc)
    await c._after(outputs)  # noqa: SLF001
    return unlocked


@op("set_local_auth_list")
async def _set_local_auth_list(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    update = parse_local_list(f.args)
    c.charger.local_list.apply(update.version, update.full, update.entries)
    c.persistence.stage(dirty={"local_list"})  # durable before the reply (API.md §2)
    return True


@op("get_state")
async def _get_state(c: Controller, f: Fields, now: float, utc: datetime, _: Request) -> object:
    f.done()
    return {"evses": [c.state_doc(cid) for cid in c.evse_ids],
            "reservations": [reservation_doc(e, utc) for e in c.charger.book.entries],
            "firmware": __version__, "uptime_s": round(time.monotonic() - c.started_mono, 3)}


def _items(value: object) -> list[tuple[object, object]]:
    """The (key, value) pairs of a stored map; anything else is treated as empty (damaged)."""
    return list(value.items()) if isinstance(value, dict) else []


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; 10 ms resolution), for the boot log."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(uptime - start, 0.0)


async def cancellable(coro: Coroutine[Any, Any, None], name: str) -> None:
    """Run a link task so that one cancellation always ends it. Libraries that await through
    `asyncio.wait_for` (aiomqtt, pymodbus) can swallow a cancel on Python 3.11 (CPython gh-86296);
    then a SIGTERM would never reach the fail-safe. The inner task is cancelled until it stops."""
    inner = asyncio.get_running_loop().create_task(coro, name=f"{name}-inner")
    try:
        await asyncio.wait([inner])
        inner.result()
    finally:
        for _ in range(100):
            if inner.done():
                break
            inner.cancel()
            await asyncio.wait([inner], timeout=0.02)
        else:
            log.error("%s did not stop after repeated cancellation; abandoning it", name)


def _same_pp(a: float | None, b: float | None) -> bool:
    """Two PP readings that mean the same cable (within 5 %, or both open)."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 0.05 * max(abs(b), 1.0)
