"""The producers: tasks that read the board and the meters and put what they read into the inbox.

What it is for: sampling CP and PP, the RCD, the over-temperature alarm and the relay feedback contacts
(the safety lane: fast while the core times anything about an EVSE's pilot, `pilot.sample_interval_s`
and `SUPERVISE_INTERVAL_S`, else at `pilot.idle_sample_interval_s`), the meters
(`poll_interval_s`, with capped, jittered backoff while one fails), the token reader, and the
telemetry tick. After each read a producer tells the barriers (`firmware.inbox`) what it has queued,
which is how a `sim_*` reply knows the controller has seen a change.

What it must never do: act on an output, wait on the disk or the network, or stop on a failing
meter, or decide anything: PP debounce, relay-feedback grace and latching and meter staleness are
the core's (`firmware/core/supervision.py`); a producer only reports what it read.

Standard: IEC 61851-1 Annex A/B for what is sampled; the debounce times are the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Hashable
from typing import Final

from firmware.config import Config, EvseSettings
from firmware.core.charger import Charger
from firmware.core.errors import HardwareError
from firmware.core.events import PilotSampled
from firmware.core.pilot import Cp, nearest_cp
from firmware.core.supervision_events import InputsSensed, MeterReadFailed, PpSampled
from firmware.inbox import Barriers, Inbox
from firmware.items import FeedbackRead, Item, MeterRead, TelemetryDue
from hal.protocols import Board, Meter

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S: Final = 0.05
TOKEN_READER_RETRY_S: Final = 5.0


class Producers:
    """Every producer task of one controller, and what they last measured (for the documents)."""

    def __init__(self, *, config: Config, board: Board, charger: Charger, inbox: Inbox[Item], barriers: Barriers,
                 meters: dict[int, Meter], watchful: Callable[[int], bool]) -> None:
        self.config = config
        self.board = board
        self.charger = charger
        self.inbox = inbox
        self.barriers = barriers
        self.meters = meters
        self.watchful = watchful  # EVSE -> its pilot must be sampled fast (the core decides; see safety_task)
        self.evse_ids = list(charger.evses)
        self.cp_seen: dict[int, Cp | None] = {}  # the band nearest to the last CP sample
        self.fast: dict[int, bool] = dict.fromkeys(self.evse_ids, True)  # the rate each pilot is sampled at
        safety = asyncio.Event()  # CP, PP and the inputs are read by one task: one wake for all of them
        self._wake: dict[Hashable, asyncio.Event] = {(kind, cid): safety for cid in self.evse_ids
                                                     for kind in ("pilot", "inputs")}
        self._safety_wake = safety
        self.sampled_at = 0.0  # when the safety task last came round its loop (loop time): its health
        self._woken = False  # the safety task was asked to read everything now (not just what is due)
        self._handed: dict[int, tuple[float, float, float | None]] = {}  # the last CP/PP reading handed over
        self._inputs_handed: dict[int, tuple[bool, bool, bool, bool | None]] = {}  # ... and inputs reading

    def wake(self, channel: Hashable) -> None:
        """Ask the producer of `channel` to read now rather than at its next poll."""
        if channel in self._wake:
            self._woken = self._woken or self._wake[channel] is self._safety_wake
            self._wake[channel].set()

    def rate_check(self) -> None:
        """After each step of the core task: an EVSE whose pilot now needs fast sampling (a change seen,
        the relay closed, the PWM on) is sampled at once and from then on fast, not at its idle pace."""
        if not self._woken and any(not self.fast[cid] and self.watchful(cid) for cid in self.evse_ids):
            self.wake(("pilot", self.evse_ids[0]))

    def settings(self, cid: int) -> EvseSettings:
        return next(e for e in self.config.evses if e.id == cid)

    async def sample_pilot(self, cid: int) -> tuple[PilotSampled, PpSampled]:
        """Read CP and PP once: the raw facts (the core debounces both, CP on its read time)."""
        read_at = asyncio.get_running_loop().time()
        sample = await self.board.pilot.read_cp(cid)
        self.cp_seen[cid] = nearest_cp(sample.volts_hi)
        ohms = await self.board.pilot.read_pp(cid)
        if ohms is not None and not (math.isfinite(ohms) and ohms >= 0):
            log.warning("c%d PP reading %r is not a resistance; taken as open", cid, ohms)
            ohms = None
        return (PilotSampled(cid=cid, volts_hi=sample.volts_hi, volts_lo=sample.volts_lo, read_at=read_at),
                PpSampled(cid=cid, ohms=ohms))

    async def safety_task(self) -> None:
        """The safety lane's producer: CP and PP of every EVSE, and its inputs (RCD, over-temperature,
        the relay's mirror contact).

        An EVSE whose pilot the core watches (`Charger.needs_fast_sampling`: relay closed, PWM on, a
        change being debounced; or its PP being debounced) is sampled every `pilot.sample_interval_s`,
        the others every `pilot.idle_sample_interval_s`; the inputs every SUPERVISE_INTERVAL_S while any
        EVSE is watched, else at the idle pace. The task wakes at once for the RCD's trip interrupt, a
        sim op, and an EVSE that becomes watched (`rate_check`, after the core's step)."""
        loop = asyncio.get_running_loop()
        pilot = self.config.pilot
        wake = self._safety_wake
        self.board.rcd.on_trip(lambda cid: self.wake(("inputs", cid)))
        pilot_due = dict.fromkeys(self.evse_ids, 0.0)
        inputs_due = 0.0
        while True:
            woken, self._woken = self._woken, False
            wake.clear()
            now = self.sampled_at = loop.time()
            for cid in self.evse_ids:
                if woken or now >= pilot_due[cid]:
                    await self._read_pilot(cid, now)
                    pilot_due[cid] = now + (pilot.sample_interval_s if self.fast[cid] else pilot.idle_sample_interval_s)
            if woken or now >= inputs_due:
                await self._read_inputs(now)
                watched = any(self.fast.values()) or any(self.barriers.awaited(("inputs", c)) for c in self.evse_ids)
                inputs_due = now + (SUPERVISE_INTERVAL_S if watched else pilot.idle_sample_interval_s)
            timer = loop.call_at(min(inputs_due, *pilot_due.values()), wake.set)  # cheaper than a timeout
            try:
                await wake.wait()
            finally:
                timer.cancel()

    async def _read_pilot(self, cid: int, read_at: float) -> None:
        """One CP and PP reading, handed to the core unless nothing is watched and it equals the last one
        handed over (then the monitors are stable on it and it carries nothing new); and the pace."""
        cp, pp = await self.sample_pilot(cid)
        reading = (cp.volts_hi, cp.volts_lo, pp.ohms)
        self.fast[cid] = self.watchful(cid) or self.barriers.awaited(("pilot", cid))  # a sim op waits
        if self.fast[cid] or reading != self._handed.get(cid):
            self._handed[cid] = reading
            self.inbox.put_safety(cp)
            self.inbox.put_safety(pp)
        self.barriers.reached(("pilot", cid), read_at)

    async def _read_inputs(self, read_at: float) -> None:
        """The RCD, the thermal switch and the relay's mirror contact of every EVSE. A reading is handed
        to the core while its EVSE is watched or a sim op waits for it, while it shows something to
        time or to keep (a trip, heat, a contact that disagrees with the relay's command), and when it
        changed since the last one handed over; a calm, unchanged reading of an idle EVSE carries
        nothing new (the supervisor judges edges, and how long a mismatch lasts)."""
        for cid in self.evse_ids:
            rcd = await self.board.rcd.tripped(cid)
            hot = await self.board.temperature.overtemperature(cid)
            feedback = await self.board.relays.feedback_closed(cid)
            commanded = self.charger.evses[cid].relay_closed
            reading = (rcd, hot, commanded, feedback)
            calm = not rcd and not hot and feedback in (None, commanded)
            if (self.fast[cid] or not calm or reading != self._inputs_handed.get(cid)
                    or self.barriers.awaited(("inputs", cid))):
                self._inputs_handed[cid] = reading
                self.inbox.put_safety(InputsSensed(cid=cid, rcd_tripped=rcd, overtemperature=hot))
                self.inbox.put_safety(FeedbackRead(cid=cid, feedback_closed=feedback))
            self.barriers.reached(("inputs", cid), read_at)

    async def meter_task(self, cid: int, meter: Meter) -> None:
        """Poll a meter; each read, good or failed, is a fact for the core (which decides MeterLost after
        `meter_stale_after_s`). A failing meter is retried with capped, jittered backoff; it never stops
        this task (a meter is a link)."""
        settings = self.settings(cid)
        interval = (settings.meter.poll_interval_s if settings.meter is not None
                    else self.config.board.sim_meter_poll_interval_s)
        loop = asyncio.get_running_loop()
        delay = interval
        wake = self._wake[("meter", cid)] = asyncio.Event()
        while True:
            read_at = loop.time()
            try:
                sample = await meter.read()
            except HardwareError as exc:
                log.debug("c%d meter read failed: %s", cid, exc)
                self.inbox.put_safety(MeterReadFailed(cid=cid))
                delay = min(delay * 2, max(interval, 10.0)) * random.uniform(0.8, 1.0)  # capped, jittered
            else:
                delay = interval
                self.inbox.put(MeterRead(cid=cid, sample=sample))
            self.barriers.reached(("meter", cid), read_at)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()

    async def token_task(self) -> None:
        """Card reads. A reader that fails (a USB reader unplugged) is not safety-relevant: it is logged
        and asked again after TOKEN_READER_RETRY_S, while charging goes on."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                read = await self.board.tokens.next_token()
            except HardwareError as exc:
                log.error("token reader: %s; trying again in %.0f s", exc, TOKEN_READER_RETRY_S)  # noqa: TRY400
                await asyncio.sleep(TOKEN_READER_RETRY_S)
                with contextlib.suppress(HardwareError):
                    await self.board.tokens.reopen()
                continue
            self.inbox.put(read)
            self.barriers.reached(("token", read.cid), loop.time())

    async def telemetry_task(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry.meter_interval_s)
            self.inbox.put(TelemetryDue())
