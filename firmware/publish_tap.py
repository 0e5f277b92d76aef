"""The publish tap: every document the backend link publishes, or queues while offline, told to listeners.

What it is for: the console's `watch` (firmware/console_server.py) sees what the backend would see,
with or without a broker: retained state documents and status when they change, meter samples and auth
requests when they are sent, SessionEvents and ReservationUpdateStatus when the writer commits them to
the outbox (so a `watch` shows them in seq order even offline).

What it must never do: block or fail a publish (a listener must return at once; an exception is logged
and ignored), decode anything but the outbox's own records, or keep state beyond the last outbox key
shown per kind.

Standard: API.md §1 (topics) and §4 (documents).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from firmware.store import OutboxRecord
from firmware.wire import BadRequest, decode

log = logging.getLogger(__name__)

#: Told of every document the controller publishes, or queues for the backend while offline (the console's
#: `watch`): (the topic under R, e.g. "evse/1/state"; the document). Called on the event loop, often from
#: the core task: it must return at once; an exception is logged and ignored.
PublishListener = Callable[[str, object], None]


class PublishTap:
    """The listeners of one backend link, and what of its outbox they have been told."""

    def __init__(self, root: str, outbox_pending: Callable[[], list[OutboxRecord]]) -> None:
        self._prefix = root + "/"
        self._outbox_pending = outbox_pending
        self._listeners: list[PublishListener] = []
        self._shown: dict[bool, int] = {}  # the last outbox key shown (True: meter samples' keys)

    def listen(self, listener: PublishListener) -> Callable[[], None]:
        """Tell `listener` of every document published from now on; returns the function that stops it."""
        if not self._listeners:  # the outbox's messages committed so far are not news
            self._shown.clear()
            for record in self._outbox_pending():
                self._shown[record.seq < 0] = record.seq
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return stop

    def published(self, topic: str, value: object) -> None:
        suffix = topic.removeprefix(self._prefix)
        for listener in list(self._listeners):
            try:
                listener(suffix, value)
            except Exception:  # noqa: BLE001 - a listener never stops a publish
                log.exception("a publish listener failed")

    def outbox_changed(self) -> None:
        """The durable messages (and offline meter samples) committed since the last look, in order."""
        if not self._listeners:
            return
        for record in self._outbox_pending():
            meter_key = record.seq < 0
            last = self._shown.get(meter_key)
            if last is not None and record.seq <= last:
                continue
            self._shown[meter_key] = record.seq
            try:
                _, doc = decode(record.payload)
            except BadRequest:
                continue
            self.published(record.topic, doc)
