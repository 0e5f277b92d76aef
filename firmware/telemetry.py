"""Meter samples for the backend: `R/evse/{id}/meter` every `telemetry.meter_interval_s` (API.md §4).

What it is for: building each EVSE's meter sample from the last accepted reading and getting it to the
backend: online, published (QoS 0) once the energy in it is committed, never ahead of the store;
offline, staged into the outbox as droppable records (the oldest go first when it is full), numbered
from METER_KEY_BASE so they never take a `seq` of the durable messages.

What it must never do: wait on the disk or the network (the core task calls it), publish a reading the
core refused (it only sees `last_meter`, which holds accepted readings), or decide anything.

Standard: API.md §4 (the meter sample), §1 (QoS 0 for samples).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from firmware.aio import utc_now
from firmware.core.charger import Charger
from firmware.core.events import Fault
from firmware.mqtt import BackendLink
from firmware.persistence import Persistence
from firmware.store import METER_KEY_BASE, OutboxRecord
from firmware.wire import encode, meter_doc
from hal.protocols import MeterSample


class Telemetry:
    """The meter samples of one controller (see the module docstring)."""

    def __init__(self, *, charger: Charger, link: BackendLink, persistence: Persistence,
                 last_meter: dict[int, MeterSample], background: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self.charger = charger
        self.link = link
        self.persistence = persistence
        self.last_meter = last_meter
        self.background = background
        self.meter_key = METER_KEY_BASE  # the last key given to a meter sample waiting in the outbox

    def due(self) -> None:
        """One sample per EVSE with a reading: published once committed, or staged while offline."""
        offline: list[OutboxRecord] = []
        online: list[tuple[str, dict[str, object]]] = []
        for cid, evse in self.charger.evses.items():
            sample = self.last_meter.get(cid)
            if sample is None:
                continue
            doc = meter_doc(cid, sample, meter_ok=Fault.METER_LOST not in evse.faults, utc=utc_now())
            topic = self.link.topics.evse(cid, "meter")
            if self.link.connected.is_set():
                online.append((topic, doc))
            else:
                self.meter_key += 1
                offline.append(OutboxRecord(seq=self.meter_key, topic=topic, payload=encode(self.link.codec, doc),
                                            kind="meter"))
        ticket = self.persistence.stage(offline)
        for topic, doc in online:
            self.persistence.when_durable(ticket, partial(self._publish, topic, doc))

    def _publish(self, topic: str, doc: dict[str, object]) -> None:
        self.background(self.link.publish_now(topic, doc, qos=0))
