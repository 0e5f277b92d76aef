"""The items of the core task's inbox: what producers and the backend link hand it, besides events.

What it is for: one closed set of types (`Item`) that `firmware.core_loop.CoreLoop.dispatch` matches
on. The core's own facts (`firmware.core.events.Event`, supervision's readings) go in as they are;
the shell adds requests (`Command`), the backend's authorization answers (`AuthResponse`), readings
that need the core task's knowledge before they are facts (`FeedbackRead`, `MeterRead`), the
telemetry timer (`TelemetryDue`), and the inbox's own `Barrier`.

What it must never do: hold behaviour or state. An item is a frozen fact or request; the core task
decides what it means.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.events import Event
from firmware.core.supervision_events import SupervisionEvent
from firmware.inbox import Barrier
from firmware.mqtt import ReplyCallback
from firmware.wire import Request
from hal.protocols import MeterSample, TokenRead


@dataclass(frozen=True, slots=True)
class Command:
    """A request for the core task; `complete` takes its reply (the link's callback: never fails)."""

    request: Request
    complete: ReplyCallback


@dataclass(frozen=True, slots=True)
class AuthResponse:
    """The backend's `R/auth/response` payload, as received (the core task parses it)."""

    value: object


@dataclass(frozen=True, slots=True)
class FeedbackRead:
    """The relay's mirror contact as read (None: not wired); the core loop adds what was commanded."""

    cid: int
    feedback_closed: bool | None


@dataclass(frozen=True, slots=True)
class TelemetryDue:
    """Time to publish the meter samples (every `telemetry.meter_interval_s`)."""


@dataclass(frozen=True, slots=True)
class MeterRead:
    """A good meter reading of EVSE `cid`."""

    cid: int
    sample: MeterSample


Item = (Event | SupervisionEvent | FeedbackRead | Command | TokenRead | AuthResponse | MeterRead | TelemetryDue
        | Barrier)
