"""The console socket's client: newline-delimited JSON requests and replies over a unix stream socket.

What it is for: `charger-console` talks to a running controller only through this module. It opens the
unix socket (never TCP), sends one request per line in the envelope of API.md §2
(`{"id", "op", "args"}`), and reads the reply line with the same `id`; `watch` then reads the stream of
change lines on the same connection (console spec, issue 12). Connection problems become
`NoController` (socket missing, not a socket, or refused) and `PermissionDenied` (the socket or its
directory is not accessible to this user), each with a message that says what to do.

What it must never do: import the controller (`firmware.app`, `firmware.core_loop`, ...), decide
anything about charging, or retry a request on its own (a state-changing op must run at most once per
command; the server's replay protection is for MQTT redelivery, not for us).

Standard: the console protocol (issue 12, /work/briefs/console-spec.md), API.md §2 envelopes; unix(7)
for the socket errors (ENOENT, ECONNREFUSED, EACCES).
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final, Self

__all__ = [
    "Client",
    "ConsoleError",
    "NoController",
    "OpError",
    "PermissionDenied",
    "ProtocolError",
    "no_controller_message",
]

#: The largest line we accept from the server (a meter block dump or a long log is a few kB).
MAX_LINE_BYTES: Final = 4 << 20

EXIT_OP_ERROR: Final = 1
EXIT_NO_CONTROLLER: Final = 3
EXIT_PERMISSION: Final = 4
EXIT_UNSAFE: Final = 5


class ConsoleError(Exception):
    """Anything that ends a console command without a result; `code` is the JSON error code."""

    exit_code: int = EXIT_OP_ERROR

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NoController(ConsoleError):  # noqa: N818 - named after what the user is told
    """No controller listens on the socket (missing, not a socket, or connection refused)."""

    exit_code = EXIT_NO_CONTROLLER


class PermissionDenied(ConsoleError):  # noqa: N818
    """The socket (or a directory on its path) is not accessible to this user."""

    exit_code = EXIT_PERMISSION


class ProtocolError(ConsoleError):
    """The server sent something that is not a reply of the console protocol, or closed early."""


class OpError(ConsoleError):
    """The controller answered `ok: false`; `unsafe` gets its own exit code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.exit_code = EXIT_UNSAFE if code == "unsafe" else EXIT_OP_ERROR


def no_controller_message(path: Path, detail: str = "") -> str:
    extra = f": {detail}" if detail else ""
    return (f"no controller on {path}{extra} "
            "(is charger-firmware running? systemctl status charger-firmware)")


def _connect(path: Path, timeout_s: float | None) -> socket.socket:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise NoController("no_controller", no_controller_message(path)) from None
    except PermissionError:
        raise PermissionDenied("permission_denied", _permission_message(path)) from None
    if not stat.S_ISSOCK(mode):
        raise NoController("no_controller", no_controller_message(path, "it is not a socket"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        sock.connect(str(path))
    except PermissionError:
        sock.close()
        raise PermissionDenied("permission_denied", _permission_message(path)) from None
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        raise NoController("no_controller", no_controller_message(path, "connection refused")) from None
    except OSError as exc:
        sock.close()
        raise NoController("no_controller", no_controller_message(path, exc.strerror or str(exc))) from exc
    return sock


def _permission_message(path: Path) -> str:
    return f"{path}: permission denied: add your user to the charger group (or use sudo)"


class Client:
    """One connection to the console socket; a context manager. Requests are answered in order."""

    def __init__(self, path: Path, *, timeout_s: float | None = 60.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._next_id = 0
        self._buffer = b""

    def __enter__(self) -> Self:
        self._sock = _connect(self.path, self.timeout_s)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _send(self, op: str, args: dict[str, object]) -> str:
        if self._sock is None:
            raise RuntimeError("Client is not connected (use `with Client(path) as c:`)")
        self._next_id += 1
        request_id = f"c{self._next_id}"
        line = json.dumps({"id": request_id, "op": op, "args": args}, separators=(",", ":")) + "\n"
        try:
            self._sock.sendall(line.encode())
        except OSError as exc:
            raise ProtocolError("connection_lost", f"{self.path}: the controller closed the connection "
                                f"({exc.strerror or exc})") from exc
        return request_id

    def _read_line(self) -> dict[str, object]:
        assert self._sock is not None  # noqa: S101 - only called after _send
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise ProtocolError("timeout", f"{self.path}: no answer from the controller within "
                                    f"{self.timeout_s:g} s") from None
            except OSError as exc:
                raise ProtocolError("connection_lost", f"{self.path}: connection lost "
                                    f"({exc.strerror or exc})") from exc
            if not chunk:
                raise ProtocolError("connection_lost", f"{self.path}: the controller closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ProtocolError("bad_reply", f"{self.path}: a reply line longer than {MAX_LINE_BYTES} bytes")
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise ProtocolError("bad_reply", f"{self.path}: a reply that is not JSON: {line[:80]!r}") from exc
        if not isinstance(doc, dict):
            raise ProtocolError("bad_reply", f"{self.path}: a reply that is not a JSON object: {line[:80]!r}")
        return doc

    def reply(self, op: str, args: dict[str, object] | None = None) -> dict[str, object]:
        """The whole reply envelope of one request (`ok` true or false); ProtocolError if none came."""
        request_id = self._send(op, args or {})
        while True:
            doc = self._read_line()
            if doc.get("id") == request_id and "ok" in doc:
                return doc
            if doc.get("id") is None and doc.get("ok") is False:  # the server could not read our request
                return doc

    def request(self, op: str, args: dict[str, object] | None = None) -> object:
        """The `result` of one op; OpError with the server's code and message when it says `ok: false`."""
        doc = self.reply(op, args)
        if doc.get("ok") is True:
            return doc.get("result")
        code, message = _error_of(doc)
        raise OpError(code, message)

    def watch(self, *, show_tokens: bool = False) -> Iterator[dict[str, object]]:
        """Start `watch` (now: its reply has come when this returns), then iterate over the change lines
        (`{"id", "op": "watch", "event", ...}`) until the controller closes the connection. `show_tokens`:
        whole tokens (granted to root only)."""
        self.request("watch", {"show_tokens": True} if show_tokens else {})
        if self._sock is not None:
            self._sock.settimeout(None)  # a quiet charger may publish nothing for a long time
        return self._events()

    def _events(self) -> Iterator[dict[str, object]]:
        while True:
            try:
                doc = self._read_line()
            except ProtocolError as exc:
                if exc.code == "connection_lost":
                    return
                raise
            if "event" in doc:
                yield doc
            elif doc.get("ok") is False:
                code, message = _error_of(doc)
                raise OpError(code, message)


def _error_of(doc: dict[str, object]) -> tuple[str, str]:
    error = doc.get("error")
    if isinstance(error, dict):
        return str(error.get("code", "internal")), str(error.get("message", ""))
    return "bad_reply", f"a reply without an error object: {json.dumps(doc)[:120]}"
