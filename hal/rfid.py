"""USB RFID readers that type the card's UID as a keyboard ("keyboard wedge"), read through evdev.

What it is for: the cheap USB readers most Pi-based chargers use (125 kHz EM4100 and 13.56 MHz
MIFARE readers sold as "USB RFID reader, 10 digit decimal") enumerate as a USB HID keyboard and
type the card number followed by Enter. `EvdevTokenReader` implements `hal.protocols.TokenReader`:
it opens each configured reader (`ReaderConfig`, one per EVSE, or several), grabs it exclusively,
decodes the key events into lines, converts each line with `normalise_uid` from what the reader
types (`UidFormat`) into the canonical token, and merges every reader into one `next_token()`
stream of `TokenRead(cid, id_token, "RFID")`. UID formats and the canonical token: `hal/uid.py`.

What it must never do:

* let the typed UID reach anything else: each device is grabbed with EVIOCGRAB, so a card number
  never lands on a login console or in another program; a device someone else holds is an error;
* log a UID: only the last 4 characters are shown (`hal.uid.mask_uid`), at every level;
* return a made-up token: a line with any key that is no digit/hex letter, longer than
  `MAX_LINE_CHARS`, interrupted for longer than `key_timeout_s` (a half-read UID from an unplug
  never merges with the next one), or that does not fit the configured format is discarded with a
  warning; a reader that vanishes makes `next_token()` raise `HardwareError` naming the device;
* read a clock or block the loop: time comes from the events' own timestamps (so recordings replay
  deterministically), and events are read with `loop.add_reader` + the non-blocking `read()`;
* import python-evdev at import time (it exists only on Linux): it is imported when opening.

Standards and sources:

* Linux input: Documentation/input/input.rst and event-codes.rst (EV_KEY value 0 release,
  1 press, 2 autorepeat; EV_MSC/MSC_SCAN; EV_SYN), the key codes of
  include/uapi/linux/input-event-codes.h, EVIOCGRAB in drivers/input/evdev.c (one grabber; a
  second grab is EBUSY; a read after a disconnect is ENODEV); python-evdev's `InputDevice`
  (src/evdev/device.py, eventio.py: `read()` raises BlockingIOError when nothing is pending).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Final, Protocol, Self

from firmware.core.errors import HardwareError
from hal.protocols import TokenRead
from hal.uid import UID_BYTES, UidFormat, mask_uid, normalise_uid

__all__ = ["MAX_LINE_CHARS", "UID_BYTES", "EvdevTokenReader", "ReaderConfig", "UidFormat", "mask_uid", "normalise_uid"]

log = logging.getLogger(__name__)

INSTALL_HINT: Final = "pip install 'charger-firmware[rpi]'"
#: A typed line longer than this is garbage (the longest valid one, a 10-byte decimal, has 25).
MAX_LINE_CHARS: Final = 32
TOKEN_TYPE: Final = "RFID"

# Linux key codes (include/uapi/linux/input-event-codes.h, a stable kernel ABI).
EV_KEY: Final = 0x01
KEY_RELEASE, KEY_PRESS, KEY_AUTOREPEAT = 0, 1, 2
KEY_ENTER: Final = 28
KEY_KPENTER: Final = 96
KEY_LEFTSHIFT: Final = 42
KEY_RIGHTSHIFT: Final = 54
#: Key code -> the character it stands for. Shift is ignored: hex readers may hold it for A-F or not,
#: and a reader set to an AZERTY layout holds it for the top-row digits.
KEY_CHARS: Final[dict[int, str]] = {
    2: "1", 3: "2", 4: "3", 5: "4", 6: "5", 7: "6", 8: "7", 9: "8", 10: "9", 11: "0",  # KEY_1..KEY_0
    79: "1", 80: "2", 81: "3", 75: "4", 76: "5", 77: "6", 71: "7", 72: "8", 73: "9", 82: "0",  # KEY_KP1..KP0
    30: "A", 48: "B", 46: "C", 32: "D", 18: "E", 33: "F",  # KEY_A, KEY_B, KEY_C, KEY_D, KEY_E, KEY_F
}
_ENTER_KEYS: Final = frozenset({KEY_ENTER, KEY_KPENTER})
_SHIFT_KEYS: Final = frozenset({KEY_LEFTSHIFT, KEY_RIGHTSHIFT})


@dataclass(frozen=True, slots=True, kw_only=True)
class ReaderConfig:
    """One keyboard-wedge reader: the EVSE it serves, its evdev node (best a stable
    /dev/input/by-id/usb-...-event-kbd link), what it types, and its timing."""

    cid: int
    device: Path
    uid_format: UidFormat = UidFormat.DECIMAL
    #: UID size for the decimal formats (4, 5, 7 or 10).
    uid_bytes: int = 4
    #: Longest pause between two key events of one UID; a longer one discards the partial line.
    key_timeout_s: float = 0.2
    #: The same card read again by the same reader within this time of its last read is ignored
    #: (readers re-send while a card stays on the antenna).
    repeat_s: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.cid, bool) or not isinstance(self.cid, int) or self.cid < 1:
            raise ValueError(f"cid must be an integer >= 1, got {self.cid!r}")
        if isinstance(self.device, str):
            object.__setattr__(self, "device", Path(self.device))
        if not isinstance(self.device, Path) or not self.device.is_absolute():
            raise ValueError(f"device must be an absolute path (e.g. /dev/input/by-id/...), got {self.device!r}")
        try:
            object.__setattr__(self, "uid_format", UidFormat(self.uid_format))
        except ValueError:
            formats = ", ".join(f.value for f in UidFormat)
            raise ValueError(f"uid_format must be one of {formats}, got {self.uid_format!r}") from None
        if isinstance(self.uid_bytes, bool) or self.uid_bytes not in UID_BYTES:
            raise ValueError(f"uid_bytes must be one of {UID_BYTES}, got {self.uid_bytes!r}")
        _check_seconds("key_timeout_s", self.key_timeout_s, low=0.001, high=10.0)
        _check_seconds("repeat_s", self.repeat_s, low=0.0, high=3600.0)


def _check_seconds(name: str, value: object, *, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be within {low:g}..{high:g} s, got {value!r}")


class _Event(Protocol):
    """python-evdev's InputEvent, as far as it is used here."""

    sec: int
    usec: int
    type: int
    code: int
    value: int


class _Device(Protocol):
    """python-evdev's InputDevice, as far as it is used here."""

    path: str
    fd: int
    name: str

    def grab(self) -> None: ...

    def ungrab(self) -> None: ...

    def read(self) -> Iterator[_Event]: ...

    def close(self) -> None: ...


class _LineDecoder:
    """Key events of one reader -> canonical UIDs (sans-I/O; time from the events' timestamps).

    evdev stamps events with CLOCK_REALTIME unless told otherwise, so a clock step (NTP at boot on
    a Pi without RTC) can show up between two events: a negative or huge gap discards a partial
    line (safe), and a repeat is only suppressed for a gap in [0, repeat_s) (at worst a card is
    read twice, never a read lost)."""

    def __init__(self, config: ReaderConfig) -> None:
        self._config = config
        self._where = f"RFID reader c{config.cid} {config.device}"
        self._key_timeout_us = round(config.key_timeout_s * 1_000_000)
        self._repeat_us = round(config.repeat_s * 1_000_000)
        self._chars: list[str] = []
        self._garbage = False
        self._last_key_us: int | None = None
        self._last_uid: str | None = None
        self._last_uid_us = 0

    def feed(self, event: _Event) -> str | None:
        """Take one event; return the canonical UID when it completes a new card read."""
        if event.type != EV_KEY:
            return None  # EV_SYN, EV_MSC/MSC_SCAN, EV_LED: no information about the text
        now_us = event.sec * 1_000_000 + event.usec
        self._check_gap(now_us)
        self._last_key_us = now_us
        if event.value != KEY_PRESS:
            return None  # a release, or an autorepeat of a held key: never a second character
        if event.code in _SHIFT_KEYS:
            return None  # held for A-F by hex readers, for the top-row digits by AZERTY ones
        if event.code in _ENTER_KEYS:
            return self._end_line(now_us)
        if not self._garbage:
            self._add_key(event.code)
        return None

    def _check_gap(self, now_us: int) -> None:
        last = self._last_key_us
        if last is None or not (self._chars or self._garbage):
            return
        gap_us = now_us - last
        if 0 <= gap_us <= self._key_timeout_us:
            return
        if not self._garbage:
            log.warning(
                "%s: partial line %s discarded (%.3f s without a key, more than key_timeout_s %g)",
                self._where, mask_uid("".join(self._chars)), gap_us / 1e6, self._config.key_timeout_s,
            )
        self._reset()

    def _add_key(self, code: int) -> None:
        char = KEY_CHARS.get(code)
        if char is None:
            self._spoil(f"key code {code} is no digit or hex letter")
        elif len(self._chars) >= MAX_LINE_CHARS:
            self._spoil(f"longer than {MAX_LINE_CHARS} characters")
        else:
            self._chars.append(char)

    def _spoil(self, why: str) -> None:
        log.warning(
            "%s: line discarded up to the next Enter: %s (after %s)", self._where, why, mask_uid("".join(self._chars))
        )
        self._garbage = True

    def _reset(self) -> None:
        self._chars.clear()
        self._garbage = False

    def _end_line(self, now_us: int) -> str | None:
        typed, garbage = "".join(self._chars), self._garbage
        self._reset()
        if garbage or not typed:
            return None
        config = self._config
        try:
            uid = normalise_uid(typed, config.uid_format, uid_bytes=config.uid_bytes)
        except ValueError as exc:
            log.warning("%s: line %s discarded: %s", self._where, mask_uid(typed), exc)
            return None
        last_uid, last_us = self._last_uid, self._last_uid_us
        self._last_uid, self._last_uid_us = uid, now_us
        if uid == last_uid and 0 <= now_us - last_us < self._repeat_us:
            log.debug("%s: card %s still on the antenna, repeat ignored", self._where, mask_uid(uid))
            return None
        return uid


@dataclass(slots=True)
class _Open:
    config: ReaderConfig
    device: _Device
    decoder: _LineDecoder


def _import_evdev() -> ModuleType:
    try:
        import evdev  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise HardwareError(f"python-evdev (module evdev) is not installed: {INSTALL_HINT}") from exc
    return evdev  # type: ignore[no-any-return, unused-ignore]


class EvdevTokenReader:
    """Keyboard-wedge RFID readers merged into one `hal.protocols.TokenReader`.

    `async with EvdevTokenReader([ReaderConfig(cid=1, device=Path("/dev/input/by-id/..."))]) as r:`
    opens and grabs every reader, or raises HardwareError (closing what it opened) naming the first
    that cannot be opened: not found, permission denied (the service user must be in the `input`
    group), or held by another program. Exit ungrabs and closes them; it may be entered again.

    `next_token()` returns the reads of all readers in the order they arrive. When a reader
    vanishes (USB unplugged: ENODEV) it is closed and `next_token()` raises HardwareError naming it
    once, after the reads that came before; the other readers go on. While no reader is left,
    `next_token()` raises at once. `reopen()` tries to open the vanished readers again (the caller
    owns the back-off). A `next_token()` still waiting when the readers are closed raises
    HardwareError("RFID readers closed").
    """

    def __init__(self, readers: Sequence[ReaderConfig]) -> None:
        configs = list(readers)
        if not configs or not all(isinstance(c, ReaderConfig) for c in configs):
            raise ValueError("readers must be a non-empty sequence of ReaderConfig")
        devices = [c.device for c in configs]
        if len(set(devices)) != len(devices):
            raise ValueError(f"each reader device may be configured once, got {[str(d) for d in devices]}")
        self._configs: Final = tuple(configs)
        self._open: dict[Path, _Open] = {}
        self._gone: dict[Path, ReaderConfig] = {}
        self._queue: asyncio.Queue[TokenRead | HardwareError] | None = None
        self._evdev: ModuleType | None = None

    @property
    def gone(self) -> tuple[Path, ...]:
        """The devices that vanished and were not reopened yet."""
        return tuple(self._gone)

    async def __aenter__(self) -> Self:
        if self._queue is not None:
            raise RuntimeError("EvdevTokenReader is already open")
        self._evdev = _import_evdev()
        self._queue = asyncio.Queue()
        try:
            for config in self._configs:
                self._open_one(config)
        except BaseException:
            self._close_all()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._close_all()

    async def next_token(self) -> TokenRead:
        """Wait for the next card on any reader. Raises HardwareError when a reader has vanished."""
        queue = self._queue
        if queue is None:
            raise RuntimeError("EvdevTokenReader is not open: use 'async with'")
        if queue.empty() and not self._open:
            raise HardwareError(f"no RFID reader is open: {', '.join(map(str, self._gone))} gone")
        item = await queue.get()
        if isinstance(item, HardwareError):
            raise item
        return item

    async def reopen(self) -> None:
        """Open the readers that vanished again. Raises HardwareError (the first failure) if any of
        them still cannot be opened; those that could are back in the stream."""
        if self._queue is None:
            raise RuntimeError("EvdevTokenReader is not open: use 'async with'")
        failures: list[HardwareError] = []
        for path, config in list(self._gone.items()):
            try:
                self._open_one(config)
            except HardwareError as exc:
                failures.append(exc)
            else:
                del self._gone[path]
        if failures:
            raise failures[0]

    # --- plumbing -------------------------------------------------------------------------------

    def _open_one(self, config: ReaderConfig) -> None:
        assert self._evdev is not None
        where = f"RFID reader {config.device}"
        try:
            device: _Device = self._evdev.InputDevice(str(config.device))
        except FileNotFoundError as exc:
            raise HardwareError(f"{where}: not found (unplugged? see ls -l /dev/input/by-id/)") from exc
        except PermissionError as exc:
            raise HardwareError(f"{where}: permission denied: add the service user to the input group") from exc
        except OSError as exc:
            raise HardwareError(f"{where}: cannot open: {exc.strerror or exc}") from exc
        try:
            device.grab()
        except OSError as exc:
            device.close()
            if exc.errno == errno.EBUSY:
                raise HardwareError(f"{where}: grabbed by another program (EVIOCGRAB: device busy)") from exc
            raise HardwareError(f"{where}: cannot grab it (EVIOCGRAB): {exc.strerror or exc}") from exc
        reader = _Open(config=config, device=device, decoder=_LineDecoder(config))
        asyncio.get_running_loop().add_reader(device.fd, self._on_readable, reader)
        self._open[config.device] = reader
        log.info(
            "RFID reader c%d %s (%s) open and grabbed, typing %s", config.cid, config.device, device.name,
            config.uid_format,
        )

    def _on_readable(self, reader: _Open) -> None:
        try:
            events = list(reader.device.read())
        except BlockingIOError:
            return  # woken up without a whole event
        except OSError as exc:
            self._vanished(reader, exc)
            return
        assert self._queue is not None
        for event in events:
            uid = reader.decoder.feed(event)
            if uid is not None:
                log.info("RFID reader c%d: card %s", reader.config.cid, mask_uid(uid))
                self._queue.put_nowait(TokenRead(cid=reader.config.cid, id_token=uid, token_type=TOKEN_TYPE))

    def _vanished(self, reader: _Open, exc: OSError) -> None:
        config = reader.config
        why = "gone (unplugged?)" if exc.errno == errno.ENODEV else f"read failed: {exc.strerror or exc}"
        error = HardwareError(f"RFID reader {config.device}: {why}")
        error.__cause__ = exc
        log.warning("RFID reader c%d %s: %s", config.cid, config.device, why)
        self._close_one(reader)
        self._gone[config.device] = config
        assert self._queue is not None
        self._queue.put_nowait(error)

    def _close_one(self, reader: _Open) -> None:
        device = reader.device
        self._open.pop(reader.config.device, None)
        if device.fd < 0:
            return
        asyncio.get_running_loop().remove_reader(device.fd)
        try:
            device.ungrab()
        except OSError as exc:  # gone already; closing releases the grab anyway
            log.debug("RFID reader %s: ungrab: %s", device.path, exc)
        try:
            device.close()
        except OSError as exc:
            log.debug("RFID reader %s: close: %s", device.path, exc)

    def _close_all(self) -> None:
        for reader in list(self._open.values()):
            self._close_one(reader)
        self._gone.clear()
        queue, self._queue = self._queue, None
        if queue is not None:  # a next_token() still waiting must not wait forever
            queue.put_nowait(HardwareError("RFID readers closed"))
