"""The controller: config, board, core, store and backend link wired into one asyncio.TaskGroup.

Data flows one way. Producers (`firmware.tasks`) read the board and the meters and put facts into
the inbox (`firmware.inbox`); the link (`firmware.mqtt`) submits requests; the core task
(`firmware.core_loop`) hands each item to the pure core and carries out the actions it returns; the
writer (`firmware.persistence`) commits what the steps staged and releases the replies. This module
only builds those parts, boots them, answers what the ops and the sim lane may ask (`OpContext`,
`firmware.sim_lane`) and builds the published documents from the core's state (`firmware.wire`).

Safety (DESIGN.md principles 1-3): outputs are driven safe (relays open, CP F, LEDs fault) before
anything else runs, and again on any crash of a safety-relevant task, on SIGTERM/SIGINT and on exit
(`firmware.failsafe`). What it must never do: decide anything about charging, or let the link (not
safety-relevant) take the charger down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Hashable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Final, Literal, overload

from firmware import __version__, ops
from firmware.aio import cancellable, instant, loop_time, process_age_s, settle_heap, unsettle_heap, utc_now
from firmware.args import Fields
from firmware.config import Config
from firmware.console_server import ConsoleServer
from firmware.core.charger import Charger, Output
from firmware.core.errors import HardwareError
from firmware.core.instant import Instant
from firmware.core.pilot import Cp
from firmware.core.supervision import PP_DEBOUNCE_S, Supervisor
from firmware.core.supervision_events import (
    LinkDown,
    LinkUp,
    MeterReadFailed,
)
from firmware.core_loop import CoreLoop
from firmware.failsafe import failsafe
from firmware.inbox import Barriers, Inbox
from firmware.items import AuthResponse, Command, Item
from firmware.mqtt import BackendLink, ReplyCallback
from firmware.ops import Deferred
from firmware.persistence import Persistence, collect_state, restore_state
from firmware.recorder import Recorder
from firmware.sdnotify import Notifier, service_status
from firmware.sim_lane import SIM_HANDLERS, SIM_OPS, SimLane, Watch
from firmware.store import METER_KEY_BASE, Store
from firmware.tasks import SUPERVISE_INTERVAL_S, Producers
from firmware.wire import (
    InvalidArgs,
    Request,
    encode,
    error_reply,
    evse_state_doc,
    ok_reply,
    status_doc,
)
from hal.protocols import Board, Meter, MeterSample
from hal.sim import SimBoard

log = logging.getLogger(__name__)

BOOT_PILOT_TIMEOUT_S: Final = 1.0


class Controller:
    """One charger: its board, its core and its backend link."""

    def __init__(self, config: Config, board: Board, store: Store, *, meters: dict[int, Meter] | None = None,
                 sim: SimBoard | None = None) -> None:
        self.config = config
        self.board = board
        self.sim = sim
        self.store = store
        self.boot_id = str(uuid.uuid4())
        self.started_mono = time.monotonic()
        self.evse_ids = [e.id for e in config.evses]
        self.meters = meters if meters is not None else {}
        self.recorder = Recorder(config.charger.state_dir)  # the flight recorder: every call into the core
        self.charger = self.recorder.construct(
            "charger", Charger,
            [replace(core, has_meter=core.cid in self.meters) for core in config.evse_configs()],
            new_session_id=self.recorder.ids(lambda: str(uuid.uuid4())),
            debounce_s=config.pilot.debounce_s,
            reservations_enabled=config.reservations.enabled,
            auth=replace(config.auth_settings(), request_prefix=self.boot_id[:8]),
            online=False,  # until the link is up (supervision's LinkUp): the offline policy
        )
        self.last_meter: dict[int, MeterSample] = {}
        self.queue: Inbox[Item] = Inbox()
        self.barriers = Barriers(self.queue)
        self.persistence = Persistence(store, collect=lambda dirty: collect_state(self.charger, self.last_meter, dirty))
        self.link = BackendLink(
            settings=config.mqtt, charger_id=config.charger.id, codec=config.mqtt.codec,
            submit=self._submit, on_auth_response=self._on_auth_response, on_link=self._on_link,
            status_doc=self._status_doc, outbox_pending=self.persistence.pending,
            outbox_acked=self.persistence.ack,
        )
        self.persistence.on_committed = self.link.outbox_changed
        self.supervisor = self.recorder.construct(
            "supervisor", Supervisor, self.evse_ids,
            meter_stale_after_s={e.id: e.meter_stale_after_s for e in config.evses if e.id in self.meters},
            fallback_after_s=config.mqtt.fallback_after_s, fallback_current_a=config.mqtt.fallback_current_a,
            now=loop_time(), relay_feedback_grace_s=config.board.relay_feedback_timeout_s)
        self.producers = Producers(config=config, board=board, charger=self.charger, inbox=self.queue,
                                   barriers=self.barriers, meters=self.meters, watchful=self.watchful)
        self.core = CoreLoop(config=config, charger=self.charger, board=board, persistence=self.persistence,
                             link=self.link, inbox=self.queue, barriers=self.barriers, execute=self._execute,
                             publish_states=self.publish_states, last_meter=self.last_meter,
                             supervisor=self.supervisor, after_step=self.producers.rate_check)
        self.sim_lane = SimLane(self, sim) if sim is not None else None
        socket_path = config.console.socket_path(sim=board.is_sim, state_dir=config.charger.state_dir)
        self.console = ConsoleServer(self, socket_path, group=config.console.group,
                                     max_line_bytes=config.mqtt.max_payload_bytes)
        self.ready = asyncio.Event()
        self.notifier = Notifier()  # systemd's READY/STATUS/STOPPING/WATCHDOG; no-ops without NOTIFY_SOCKET
        self._published: dict[int, bytes] = {}
        self._session_started: dict[str, datetime] = {}
        self._first_online_logged = False

    @property
    def ops_executed(self) -> int:
        return self.core.ops_executed

    @property
    def transitions(self) -> list[str]:
        return list(self.core.transitions)

    # --- life cycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Open the board (a real one drives its outputs safe as it opens: CP F, relays open), drive every
        output safe, boot, run the tasks; on any end, drive the outputs safe again. A device that does
        not open raises its HardwareError before anything runs."""
        try:
            async with self.board:
                try:
                    await failsafe(self.board, self.evse_ids)  # outputs safe before anything else runs
                    age = process_age_s()
                    log.info("outputs safe%s", f" {age * 1000:.0f} ms after the process started" if age else "")
                    await self._boot()
                    settle_heap()  # outputs are safe already: a collection now costs nothing that matters
                    await self._run_tasks()
                finally:
                    self.notifier.stopping()
                    await failsafe(self.board, self.evse_ids)  # while the board is open (it closes safe too)
                    self.core.cancel_background()
                    unsettle_heap()
        finally:
            try:  # what is staged is committed; sessions found open at the next boot end with reason Reboot
                self.persistence.stage(extra={"clean": True})
                await self.persistence.flush()
            except Exception:  # noqa: BLE001 - the outputs are safe already; log and stop
                log.exception("could not record the clean stop")
            log.info("outputs safe; controller stopped")

    async def _run_tasks(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.core.run(), name="core")
            group.create_task(self.persistence.run(), name="store-writer")
            group.create_task(self.producers.safety_task(), name="safety")  # CP, PP, RCD, feedback
            for cid, meter in self.meters.items():
                group.create_task(cancellable(self.producers.meter_task(cid, meter), f"meter{cid}"),
                                  name=f"meter{cid}")
            group.create_task(self.producers.token_task(), name="tokens")
            group.create_task(cancellable(self._link_task(), "mqtt-link"), name="mqtt")
            group.create_task(cancellable(self.console.run(), "console"), name="console")
            group.create_task(self.producers.telemetry_task(), name="telemetry")
            if self.sim_lane is not None:
                group.create_task(self.sim_lane.run(), name="sim-ops")
            group.create_task(self.notifier.supervise(self._healthy_at, self._service_status),
                              name="sd-notify")  # watchdog pings only while the core loop comes round
            self.ready.set()
            self.notifier.ready(self._service_status())  # outputs safe, config loaded, booted

    async def _boot(self) -> None:
        """Restore, take the first meter readings and measure CP and PP, all before `online: true`
        and before the first state documents (API.md §4: `cp` is as measured, never null)."""
        state, pending = await asyncio.to_thread(self.store.load)
        self.persistence.loaded(state, pending)
        self.core.seq = max(self.store.last_seq, 0)
        self.core.telemetry.meter_key = max([METER_KEY_BASE] + [r.seq for r in pending if r.droppable])
        energy = state.get("energy")
        if self.sim is not None and isinstance(energy, dict):  # a real meter keeps its register itself
            for key, energy_wh in energy.items():
                with contextlib.suppress(ValueError, TypeError):
                    self.sim.restore_energy(int(key), float(energy_wh))
        at = instant()
        outputs: list[Output] = list(self.charger.start(at))
        outputs += await self._first_meter_readings(at)
        outputs += restore_state(self.charger, state, at,
                                 resume_after_power_loss=self.config.sessions.resume_after_power_loss)
        self.persistence.stage(extra={"clean": False})
        await self.core.run_actions(outputs)
        await self._measure_pilots()
        await self.persistence.flush()
        await self.core.run_actions(self.core.decide(LinkDown(), instant()))  # the fallback runs
        self.publish_states()
        log.info("controller %s started: %d EVSE(s), boot %s, %d message(s) to replay, last seq %d",
                 self.config.charger.id, len(self.evse_ids), self.boot_id, len(pending), self.core.seq)

    async def _first_meter_readings(self, at: Instant) -> list[Output]:
        """Every meter at once, each bounded by its `meter_stale_after_s`: a meter that gives no first
        reading is lost (MeterLost; its EVSE offers no charging until a reading comes), as EVerest's
        `initial_meter_value_timeout`. The energy of a restored session comes from these readings."""
        async def first(cid: int, meter: Meter) -> MeterSample | Exception:
            try:
                async with asyncio.timeout(self.producers.settings(cid).meter_stale_after_s):
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
                outputs += self.core.decide(MeterReadFailed(cid=cid), at)
                continue
            outputs += self.core.meter_read(cid, result, at)
        return outputs

    async def _measure_pilots(self) -> None:
        """Sample every EVSE's CP and PP until the core has a debounced CP for each (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOOT_PILOT_TIMEOUT_S
        while True:
            for cid in self.evse_ids:
                for event in await self.producers.sample_pilot(cid):
                    await self.core.run_actions(self.core.decide(event, instant()))
            if all(self.charger.evses[cid].cp is not None for cid in self.evse_ids):
                return
            if loop.time() >= deadline:
                log.error("CP not stable within %.1f s at boot: %s", BOOT_PILOT_TIMEOUT_S,
                          {cid: self.producers.cp_seen.get(cid) for cid in self.evse_ids})
                return
            await asyncio.sleep(self.config.pilot.sample_interval_s)

    async def _link_task(self) -> None:
        """The backend link is not safety-relevant: a bug in it is logged and the link restarted."""
        while True:
            try:
                await self.link.run()
            except Exception:  # noqa: BLE001 - a link never takes the charger down
                log.exception("backend link crashed; restarting it in 5 s")
                await asyncio.sleep(5.0)

    # --- documents -------------------------------------------------------------------------------

    def _service_status(self) -> str:
        return service_status(self.charger, self.link.connected.is_set())

    def _status_doc(self, online: bool) -> dict[str, object]:
        return status_doc(online=online, firmware=__version__, boot_id=self.boot_id, evse_ids=self.evse_ids)

    def state_doc(self, cid: int) -> dict[str, object]:
        """The EVSE state document of API.md §4."""
        utc = utc_now()
        session = self.charger.evses[cid].session
        started: datetime | None = None
        if session is not None:  # the session's start in UTC, from its monotonic start, once
            started = self._session_started.get(session.uuid)
            if started is None:
                age_s = asyncio.get_running_loop().time() - session.started_at
                started = self._session_started[session.uuid] = utc - timedelta(seconds=age_s)
        live = {m.session.uuid for m in self.charger.evses.values() if m.session is not None}
        for stale in set(self._session_started) - live:
            del self._session_started[stale]
        return evse_state_doc(self.charger, cid, cp=self._measured_cp(cid), pp_ohms=self.supervisor.pp[cid].ohms,
                              meter=self.last_meter.get(cid), session_started_utc=started, utc=utc)

    def _measured_cp(self, cid: int) -> Cp:
        """CP as measured (API.md §4, never null): the debounced state, else (out of band, or just
        re-read after F) the band nearest to the last sample."""
        cp = self.charger.evses[cid].cp
        return cp if cp is not None else self.producers.cp_seen.get(cid) or Cp.F

    def publish_states(self) -> None:
        """Publish (retained) the state documents that changed since they were last published."""
        for cid in self.evse_ids:
            doc = self.state_doc(cid)
            key = encode("cbor", {k: v for k, v in doc.items() if k != "updated_at"})
            if self._published.get(cid) != key:
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
        self.queue.put(LinkUp() if up else LinkDown())

    async def _execute(self, request: Request, at: Instant) -> dict[str, object] | Deferred:
        if request.op in SIM_OPS:  # the sim lane runs them (and waits until seen); here only parse and apply
            return self._sim_now(request)
        return await ops.execute(self, request, at)

    def _sim_now(self, request: Request) -> dict[str, object]:
        if self.sim is None:
            return error_reply(request.request_id, request.op, "unsupported", "sim ops are only available with --sim")
        try:
            SIM_HANDLERS[request.op](self, Fields(request.args), self.sim)
        except (InvalidArgs, ValueError) as exc:
            return error_reply(request.request_id, request.op, "invalid_args", str(exc))
        return ok_reply(request.request_id, request.op, True)

    # --- what the console needs (firmware.console_server) ------------------------------------------

    def submit(self, request: Request, complete: ReplyCallback) -> None:
        """A console request: the backend's path exactly (queued to the core; replied after the commit)."""
        self._submit(request, complete)

    def status_document(self) -> dict[str, object]:
        """`R/status` as published while online, `online` telling whether the backend link is up now."""
        return self._status_doc(True) | {"online": self.link.connected.is_set()}

    # --- what the ops may use (ops.OpContext) ----------------------------------------------------

    async def apply(self, outputs: list[Output]) -> None:
        await self.core.after(outputs)

    def mark_changed(self, part: str) -> None:
        self.persistence.stage(dirty={part})

    def state_documents(self) -> list[dict[str, object]]:
        return [self.state_doc(cid) for cid in self.evse_ids]

    def uptime_s(self) -> float:
        return round(time.monotonic() - self.started_mono, 3)

    @overload
    def evse_arg(self, f: Fields, name: str = ..., required: Literal[True] = ...) -> int: ...
    @overload
    def evse_arg(self, f: Fields, name: str = ..., *, required: bool) -> int | None: ...

    def evse_arg(self, f: Fields, name: str = "evse_id", required: bool = True) -> int | None:
        cid = f.int_(name, required=required, minimum=1)
        if cid is not None and cid not in self.charger.evses:
            raise InvalidArgs(f"{name}: unknown EVSE {cid} (this charger has {self.evse_ids})")
        return cid

    # --- what the sim lane needs (API.md §8) ----------------------------------------------------

    def wake(self, channel: Hashable) -> None:
        self.producers.wake(channel)

    def pilot_watch(self, cid: int) -> Watch:
        interval = self.config.pilot.sample_interval_s
        return Watch(("pilot", cid), settle_s=max(self.config.pilot.debounce_s, PP_DEBOUNCE_S) + interval,
                     pilot_of=cid)

    def inputs_watch(self, cid: int, *, relay: bool) -> Watch:
        settle_s = self.config.board.relay_feedback_timeout_s + SUPERVISE_INTERVAL_S if relay else 0.0
        return Watch(("inputs", cid), settle_s=settle_s)

    def meter_watch(self, cid: int) -> Watch:
        return Watch(("meter", cid) if cid in self.meters else ("inputs", cid))

    def _healthy_at(self) -> float:
        """Until when the safety path is known to run (firmware.sdnotify): the core task came round
        its loop (or waits, idle, for input) and the safety sampler came round its own."""
        core = loop_time() if self.core.waiting else self.core.handled_at
        return min(core, self.producers.sampled_at)

    def watchful(self, cid: int) -> bool:
        """EVSE `cid`'s pilot must be sampled fast (`Producers.safety_task`)."""
        return self.charger.needs_fast_sampling(cid) or self.supervisor.pp[cid].settling

    def pilot_settling(self, cid: int) -> bool:
        """A CP or PP change of this EVSE is still being debounced."""
        return self.charger.pilot_settling(cid) or self.supervisor.pp[cid].settling

    async def durable(self) -> None:
        """Wait until everything the core has done so far is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.persistence.when_durable(self.persistence.staged_ticket,
                                      lambda: None if done.done() else done.set_result(None))
        await done
