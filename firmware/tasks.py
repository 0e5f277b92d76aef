"""The producers: tasks that read the board and the meters and put what they read into the inbox.

What it is for: sampling CP and PP (`pilot.sample_interval_s`, the safety lane), the RCD, the
over-temperature alarm and the relay feedback contacts (every `SUPERVISE_INTERVAL_S`), the meters
(`poll_interval_s`, with capped, jittered backoff while one fails), the token reader, and the
telemetry tick. After each read a producer tells the barriers (`firmware.inbox`) what it has queued,
which is how a `sim_*` reply knows the controller has seen a change.

What it must never do: act on an output, wait on the disk or the network, or stop on a failing
meter (a meter is a link: its failures become MeterLost after `meter_stale_after_s`). The decisions
still made here (PP debounce, relay-feedback grace and latching, meter staleness) move into the core
(`firmware/core/supervision.py`) in the next step of issue 9.

Standard: IEC 61851-1 Annex A/B for what is sampled; the debounce times are the core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Hashable
from typing import Final

from firmware.config import Config, EvseSettings
from firmware.core.charger import Charger
from firmware.core.errors import HardwareError
from firmware.core.events import Event, Fault, FaultCleared, FaultRaised, PilotSampled, PpChanged
from firmware.core.pilot import Cp, nearest_cp
from firmware.core_loop import Item, MeterRead, TelemetryDue
from firmware.inbox import Barriers, Inbox
from hal.protocols import Board, Meter, MeterSample

log = logging.getLogger(__name__)

SUPERVISE_INTERVAL_S: Final = 0.05
RELAY_FEEDBACK_GRACE_S: Final = 0.3
PP_DEBOUNCE_S: Final = 0.1


class Producers:
    """Every producer task of one controller, and what they last measured (for the documents)."""

    def __init__(self, *, config: Config, board: Board, charger: Charger, inbox: Inbox[Item], barriers: Barriers,
                 meters: dict[int, Meter], last_meter: dict[int, MeterSample]) -> None:
        self.config = config
        self.board = board
        self.charger = charger
        self.inbox = inbox
        self.barriers = barriers
        self.meters = meters
        self.last_meter = last_meter
        self.evse_ids = list(charger.evses)
        self.pp: dict[int, float | None] = {}  # debounced PP ohms per EVSE (None: open)
        self.cp_seen: dict[int, Cp | None] = {}  # the band nearest to the last CP sample
        self._pp_candidate: dict[int, tuple[float | None, float] | None] = {}
        self._wake: dict[Hashable, asyncio.Event] = {}

    def wake(self, channel: Hashable) -> None:
        """Ask the producer of `channel` to read now rather than at its next poll."""
        if channel in self._wake:
            self._wake[channel].set()

    def pp_settling(self, cid: int) -> bool:
        return self._pp_candidate.get(cid) is not None

    def settings(self, cid: int) -> EvseSettings:
        return next(e for e in self.config.evses if e.id == cid)

    async def sample_pilot(self, cid: int) -> list[Event]:
        """Read CP, and PP debounced: PP_DEBOUNCE_S, longer than CP's, so that at an unplug CP reaches A
        first and a session ends as unplugged rather than paused by a cable that vanished earlier."""
        sample = await self.board.pilot.read_cp(cid)
        self.cp_seen[cid] = nearest_cp(sample.volts_hi)
        events: list[Event] = [PilotSampled(cid=cid, volts_hi=sample.volts_hi, volts_lo=sample.volts_lo)]
        ohms, now = await self.board.pilot.read_pp(cid), asyncio.get_running_loop().time()
        candidate = self._pp_candidate.get(cid)
        if cid in self.pp and _same_pp(ohms, self.pp[cid]):
            candidate = None
        elif candidate is None or not _same_pp(ohms, candidate[0]):
            candidate = (ohms, now)
        if candidate is not None and (now - candidate[1] >= PP_DEBOUNCE_S or cid not in self.pp):
            self.pp[cid] = ohms
            candidate = None
            events.append(PpChanged(cid=cid, ohms=ohms))
        self._pp_candidate[cid] = candidate
        return events

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
                commanded = self.charger.evses[cid].relay_closed
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
                        self.inbox.put_safety(event(cid=cid, fault=fault))
                self.barriers.reached(("inputs", cid), read_at)
            await asyncio.sleep(SUPERVISE_INTERVAL_S)

    async def meter_task(self, cid: int, meter: Meter) -> None:
        """Poll a meter; a meter silent for `meter_stale_after_s` raises MeterLost (link: never crashes).
        A meter that gave no first reading at boot is lost already (see `_first_meter_readings`)."""
        settings = self.settings(cid)
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
                    self.inbox.put_safety(FaultRaised(cid=cid, fault=Fault.METER_LOST))
                else:
                    log.debug("c%d meter read failed: %s", cid, exc)
                delay = min(delay * 2, max(interval, 10.0)) * random.uniform(0.8, 1.0)  # capped, jittered
            else:
                last_ok, delay = loop.time(), interval
                if lost:
                    lost = False
                    log.warning("c%d meter back", cid)
                    self.inbox.put(FaultCleared(cid=cid, fault=Fault.METER_LOST))
                self.inbox.put(MeterRead(cid=cid, sample=sample))
            self.barriers.reached(("meter", cid), read_at)
            wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await wake.wait()

    async def token_task(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            read = await self.board.tokens.next_token()
            self.inbox.put(read)
            self.barriers.reached(("token", read.cid), loop.time())

    async def telemetry_task(self) -> None:
        while True:
            await asyncio.sleep(self.config.telemetry.meter_interval_s)
            self.inbox.put(TelemetryDue())

def _same_pp(a: float | None, b: float | None) -> bool:
    """Two PP readings that mean the same cable (within 5 %, or both open)."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 0.05 * max(abs(b), 1.0)
