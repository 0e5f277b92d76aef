"""Modbus links: one client and one lock per connection, shared by the meters of an RS-485 bus.

What it is for: several energy meters often hang on one RS-485 line (one serial device,
different device ids). A serial port can be opened once (pymodbus opens it exclusively)
and the line carries one transaction at a time, so those meters must share ONE client
and take turns. A `Link` is that shared connection: the client (made by a factory, opened
lazily, dropped after a failure so that a half-finished transaction cannot answer the
next request) and an `asyncio.Lock` that a meter holds for its whole poll, so that the
requests of two meters never interleave on the wire. `serial_link()` hands every meter on
the same serial path the same `Link` and refuses (ValueError naming both meters) a meter
whose baud rate, parity or stop bits differ from the bus's; `private_link()` is a link of
one's own (Modbus TCP: each meter keeps its own connection).

A meter `join`s its link when it is made and `leave`s it on close (or when it is garbage
collected); a serial link with no member left closes its client and is forgotten, so a
later meter may open the port with other settings.

What it must never do:

* import pymodbus (only `hal/meter_modbus.py` does, STYLE.md B4): the client is anything
  with `connected`, `connect()` and `close()`;
* bound the wait for the lock itself: each holder bounds its own poll (its timeout
  budget, `hal/meter_modbus.py`), so a meter waits at most for the polls of the meters
  ahead of it, and a dead meter costs the others its own budget, never more;
* block the event loop: everything here is asyncio.

Standard: Modbus over Serial Line V1.02 §2.1/§2.4 (one master; a single transaction at a
time on the line: the master waits for the answer or a timeout before the next request;
all devices of a line use the same baud rate and character format, §2.5.1).
Two spellings of one device (a symlink and its target) are not recognised as one bus:
configure every meter of a bus with the same path.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os.path
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar, cast

__all__ = ["Link", "LinkClient", "SerialSettings", "private_link", "serial_link"]

log = logging.getLogger(__name__)


class LinkClient(Protocol):
    """What a link needs of a client (pymodbus' async clients have it)."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> bool: ...

    def close(self) -> None: ...


C = TypeVar("C", bound=LinkClient)


@dataclass(frozen=True, slots=True, kw_only=True)
class SerialSettings:
    """A serial line's character format (8 data bits always)."""

    path: str
    baud: int
    parity: str
    stopbits: int

    def __str__(self) -> str:
        return f"{self.baud} 8{self.parity}{self.stopbits}"


class Link(Generic[C]):
    """One Modbus connection: the client, made by `factory` when first needed, and the
    lock its users hold for a whole poll (`async with link.lock:`)."""

    def __init__(self, name: str, factory: Callable[[], C], settings: SerialSettings | None = None) -> None:
        self.name: Final = name
        self.settings: Final = settings
        self.lock: Final = asyncio.Lock()
        self._factory = factory
        self._client: C | None = None
        self._members: dict[int, str] = {}  # token -> the member's description

    def __repr__(self) -> str:
        return f"Link({self.name!r}, members={sorted(self._members.values())})"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(self._members.values())

    async def client(self) -> C | None:
        """The open client, connecting a fresh one if needed; None if it cannot connect.
        Call with `lock` held."""
        if self._client is not None and self._client.connected:
            return self._client
        self.drop()
        self._client = client = self._factory()
        if not await client.connect():
            self.drop()
            return None
        log.debug("%s: connected", self.name)
        return client

    def drop(self) -> None:
        """Close the client (idempotent); the next `client()` opens a new one."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def join(self, token: int, who: str) -> None:
        self._members[token] = who

    def leave(self, token: int) -> None:
        """A member is gone; the last one out closes the client (and a serial link is
        forgotten, see `serial_link`)."""
        self._members.pop(token, None)
        if not self._members:
            self.drop()
            if self.settings is not None and _SERIAL.get(self.settings.path) is self:
                del _SERIAL[self.settings.path]


#: The serial links in use, by device path. A link is here while it has members. (Any:
#: the registry holds links of whatever client type their factory makes.)
_SERIAL: dict[str, Link[Any]] = {}
_tokens = itertools.count(1)


def new_token() -> int:
    """A member token, unique in this process."""
    return next(_tokens)


def serial_link(
    settings: SerialSettings, factory: Callable[[], C], token: int, who: str
) -> Link[C]:
    """The link of the bus at `settings.path`, made with `factory` if there is none yet,
    joined by member `token` (described as `who`).

    Raises ValueError naming both sides if the bus already runs with other serial
    settings."""
    path = os.path.normpath(settings.path)
    settings = SerialSettings(path=path, baud=settings.baud, parity=settings.parity, stopbits=settings.stopbits)
    link = _SERIAL.get(path)
    if link is None:
        link = _SERIAL[path] = Link(f"serial bus {path}", factory, settings)
    elif link.settings != settings:
        raise ValueError(
            f"{who} wants {settings} on {path}, but that bus already runs at {link.settings}"
            f" for {', '.join(link.members)}: every meter on one RS-485 bus needs the same"
            " baud rate, parity and stop bits"
        )
    link.join(token, who)
    return cast("Link[C]", link)


def private_link(name: str, factory: Callable[[], C], token: int, who: str) -> Link[C]:
    """A link of one's own (Modbus TCP), joined by `token`."""
    link = Link(name, factory)
    link.join(token, who)
    return link
