"""The producers: tasks that read the board and the meters and put what they read into the inbox.

What it is for: sampling CP and PP (`pilot.sample_interval_s`, the safety lane), the RCD, the
over-temperature alarm and the relay feedback contacts (every `SUPERVISE_INTERVAL_S`), the meters
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
from collections.abc import Hashable
from typing import Final

from firmware.config import Config, EvseSettings
from firmware.core.charger import Charger
from firmware.core.errors import HardwareError
from firmware.core.events import Event, PilotSampled
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
                 meters: dict[int, Meter]) -> None:
        self.config = config
        self.board = board
        self.charger = charger
        self.inbox = inbox
        self.barriers = barriers
        self.meters = meters
        self.evse_ids = list(charger.evses)
        self.cp_seen: dict[int, Cp | None] = {}  # the band nearest to the last CP sample
        self._wake: dict[Hashable, asyncio.Event] = {}

    def wake(self, channel: Hashable) -> None:
        """Ask the producer of `channel` to read now rather than at its next poll."""
        if channel in self._wake:
            self._wake[channel].set()

    def settings(self, cid: int) -> EvseSettings:
        return next(e for e in self.config.evses if e.id == cid)

    async def sample_pilot(self, cid: int) -> list[Event | PpSampled]:
        """Read CP and PP once: the raw facts (the core debounces both)."""
        sample = await self.board.pilot.read_cp(cid)
        self.cp_seen[cid] = nearest_cp(sample.volts_hi)
        ohms = await self.board.pilot.read_pp(cid)
        if ohms is not None and not (math.isfinite(ohms) and ohms >= 0):
            log.warning("c%d PP reading %r is not a resistance; taken as open", cid, ohms)
            ohms = None
        return [PilotSampled(cid=cid, volts_hi=sample.volts_hi, volts_lo=sample.volts_lo),
                PpSampled(cid=cid, ohms=ohms)]

    async def pilot_task(self, cid: int) -> None:
        """Sample CP and PP every `pilot.sample_interval_s` (safety-relevant: the safety lane)."""
        interval = self.config.pilot.sample_interval_s
        loop = asyncio.get_running_loop()
        while True:
            read_at = loop.time()
            for event in await self.sample_pilot(cid):
                self.inbox.put_safety(event)
            self.barriers.reached(("pilot", cid), read_at)
            await asyncio.sleep(interval)

    async def supervise_inputs(self) -> None:
        """RCD, over-temperature and the relay's mirror contact, every SUPERVISE_INTERVAL_S, and at once
        when the RCD's trip interrupt fires (safety)."""
        loop = asyncio.get_running_loop()
        tripped = asyncio.Event()
        self.board.rcd.on_trip(lambda cid: tripped.set())
        while True:
            for cid in self.evse_ids:
                read_at = loop.time()
                rcd = await self.board.rcd.tripped(cid)
                hot = await self.board.temperature.overtemperature(cid)
                feedback = await self.board.relays.feedback_closed(cid)
                self.inbox.put_safety(InputsSensed(cid=cid, rcd_tripped=rcd, overtemperature=hot))
                self.inbox.put_safety(FeedbackRead(cid=cid, feedback_closed=feedback))
                self.barriers.reached(("inputs", cid), read_at)
            tripped.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SUPERVISE_INTERVAL_S):
                    await tripped.wait()

    async def meter_task(self, cid: int, meter: Meter) -> None:
        """Poll a meter; each read, good or failed, is a fact for the core (which decides MeterLost after
        `meter_stale_after_s`). A failing meter is retried with capped, jittered backoff; it never stops
        this task (a meter is a link)."""
        settings = self.settings(cid)
        interval = settings.meter.poll_interval_s if settings.meter is not None else 1.0
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
