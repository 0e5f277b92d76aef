"""A fake of python-evdev (https://github.com/gvalkov/python-evdev, src/evdev/device.py, eventio.py,
events.py) for tests, with only the part `hal.rfid` uses: `InputDevice(path)` with `.path`, `.fd`,
`.name`, `.phys`, `.fileno()`, `.grab()`, `.ungrab()`, `.read()`, `.close()`, `InputEvent` and `ecodes`.

It behaves like the real library on a real kernel, and contains no logic of the project:

* `InputDevice(path)` opens a device registered in `FAKE_DEVICES` (else `FileNotFoundError(2)`, as
  `os.open` raises; a `FakeDevice(readable=False)` gives `PermissionError(13)`). Each `InputDevice`
  gets its own non-blocking fd (a dup of the read end of the device's pipe), usable with
  `loop.add_reader`.
* `read()` returns a generator of `InputEvent`; it reads real `struct input_event` bytes (64-bit
  layout: `struct timeval {long tv_sec; long tv_usec}`, `__u16 type`, `__u16 code`, `__s32 value`,
  24 bytes, `struct` format "llHHi" native) and raises `BlockingIOError` when nothing is available,
  like `_input.device_read_many`. A partial record stays buffered until its rest arrives.
* `grab()` is EVIOCGRAB: `OSError(16, 'Device or resource busy')` when the device is already
  grabbed (by anyone, as the kernel's evdev_grab); `ungrab()` by a non-grabber is `OSError(22)`;
  closing the fd releases a grab (the kernel's evdev_release).
* `FakeDevice.unplug()` is a USB disconnect: every fd becomes readable (hang-up) and `read()`,
  `grab()`, `ungrab()` raise `OSError(19, 'No such device')`, as evdev_read does once the device is
  gone; events not yet read are lost.

The test side: `FAKE_DEVICES[path] = FakeDevice(name=...)`, then `fake.feed(recorded_bytes)`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios
from collections.abc import Iterator
from typing import Final

from . import ecodes

__all__ = ["FAKE_DEVICES", "EVENT_FORMAT", "EVENT_SIZE", "FakeDevice", "InputDevice", "InputEvent", "ecodes"]

#: `struct input_event` on a 64-bit kernel (include/uapi/linux/input.h).
EVENT_FORMAT: Final = "llHHi"
EVENT_SIZE: Final = struct.calcsize(EVENT_FORMAT)
#: python-evdev reads at most 64 events per read() (input.c, device_read_many).
_MAX_EVENTS: Final = 64


def _oserror(code: int, filename: str | None = None) -> OSError:
    if filename is None:
        return OSError(code, os.strerror(code))
    return OSError(code, os.strerror(code), filename)


class InputEvent:
    """A generic input event (python-evdev's `evdev.events.InputEvent`)."""

    __slots__ = ("sec", "usec", "type", "code", "value")

    def __init__(self, sec: int, usec: int, type: int, code: int, value: int) -> None:  # noqa: A002
        self.sec = sec
        self.usec = usec
        self.type = type
        self.code = code
        self.value = value

    def timestamp(self) -> float:
        """Return event timestamp as a float."""
        return self.sec + (self.usec / 1000000.0)

    def __repr__(self) -> str:
        return f"InputEvent({self.sec!r}, {self.usec!r}, {self.type!r}, {self.code!r}, {self.value!r})"


class FakeDevice:
    """The kernel side of one input device: a pipe the test writes recorded event bytes into."""

    def __init__(self, name: str = "Fake RFID reader", *, phys: str = "usb-0000:01:00.0-1.3/input0",
                 readable: bool = True) -> None:
        self.name = name
        self.phys = phys
        self.readable = readable
        self.unplugged = False
        self.grabbed_by: InputDevice | None = None
        #: Every InputDevice opened on this device and not closed yet.
        self.handles: list[InputDevice] = []
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)

    @property
    def grabbed(self) -> bool:
        return self.grabbed_by is not None

    def feed(self, data: bytes) -> None:
        """Make `data` (raw `struct input_event` records, or a part of one) available to read()."""
        if self.unplugged:
            raise _oserror(errno.ENODEV)
        view = memoryview(data)
        while view:
            view = view[os.write(self._write_fd, view):]

    def unread(self) -> int:
        """How many fed bytes no InputDevice has read yet (FIONREAD on the pipe)."""
        if self._read_fd < 0:
            return 0
        buf = fcntl.ioctl(self._read_fd, termios.FIONREAD, b"\0\0\0\0")
        return int(struct.unpack("i", buf)[0])

    def unplug(self) -> None:
        """Pull the USB plug: readers wake up and their next read() raises ENODEV."""
        self.unplugged = True
        self.grabbed_by = None
        if self._write_fd >= 0:
            os.close(self._write_fd)  # the read ends report a hang-up, as the kernel's evdev_hangup
            self._write_fd = -1

    def close(self) -> None:
        """Release the pipe (test teardown)."""
        for fd in (self._read_fd, self._write_fd):
            if fd >= 0:
                os.close(fd)
        self._read_fd = self._write_fd = -1

    def _dup(self) -> int:
        return os.dup(self._read_fd)


#: path -> the device the fake InputDevice opens there.
FAKE_DEVICES: dict[str, FakeDevice] = {}


class InputDevice:
    """A linux input device from which input events can be read (python-evdev's `InputDevice`)."""

    def __init__(self, dev: str | bytes | os.PathLike[str]) -> None:
        path = os.fsdecode(dev)
        self.path = path
        fake = FAKE_DEVICES.get(path)
        if fake is None or fake.unplugged:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if not fake.readable:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        self._fake = fake
        self._pending = b""
        self.fd: int = fake._dup()
        self.name: str = fake.name
        self.phys: str = fake.phys
        self.uniq: str = ""
        fake.handles.append(self)

    def fileno(self) -> int:
        return self.fd

    def grab(self) -> None:
        """EVIOCGRAB 1: only this handle receives the device's events."""
        self._check_open()
        if self._fake.unplugged:
            raise _oserror(errno.ENODEV)
        if self._fake.grabbed_by is not None:
            raise _oserror(errno.EBUSY)
        self._fake.grabbed_by = self

    def ungrab(self) -> None:
        """EVIOCGRAB 0: release a grab this handle holds."""
        self._check_open()
        if self._fake.unplugged:
            raise _oserror(errno.ENODEV)
        if self._fake.grabbed_by is not self:
            raise _oserror(errno.EINVAL)
        self._fake.grabbed_by = None

    def read(self) -> Iterator[InputEvent]:
        """Yield the available events; BlockingIOError when there are none (a generator, as the real
        one: the error comes at the first next())."""
        for sec, usec, type_, code, value in self._read_many():
            yield InputEvent(sec, usec, type_, code, value)

    def _read_many(self) -> list[tuple[int, int, int, int, int]]:
        self._check_open()
        if self._fake.unplugged:
            raise _oserror(errno.ENODEV)
        data = self._pending + os.read(self.fd, EVENT_SIZE * _MAX_EVENTS - len(self._pending))
        whole = len(data) - len(data) % EVENT_SIZE
        self._pending = data[whole:]
        return list(struct.iter_unpack(EVENT_FORMAT, data[:whole]))

    def close(self) -> None:
        if self.fd > -1:
            try:
                if self._fake.grabbed_by is self:
                    self._fake.grabbed_by = None
                os.close(self.fd)
            finally:
                self.fd = -1
                if self in self._fake.handles:
                    self._fake.handles.remove(self)

    def _check_open(self) -> None:
        if self.fd < 0:
            raise _oserror(errno.EBADF)

    def __repr__(self) -> str:
        return f"InputDevice({self.path!r})"
