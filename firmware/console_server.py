"""The field console's endpoint: newline-delimited JSON over a local unix socket (issue 12).

What it is for: a technician with SSH (`charger-console`) sees, asks why and operates the charger with
the backend offline. One request per line, one reply per line, in the envelope of API.md §2. Every API
op (§3, and §8's sim ops under --sim) goes through the controller's request path, the same one the
backend's requests take (`Controller.submit`): queued to the core task, answered once what it changed
is committed. The console-only ops are in `firmware.console_ops`; `watch` is here, since it streams on
its connection: one line per document the controller publishes (the backend link's publish tap,
`BackendLink.listen`) and per line of the transition log.

The socket: unix stream, never TCP, made mode 0660 (group `[console] group`) before it listens. A socket
file left by a dead controller is removed at start; one a live controller answers on is left alone (this
console is not served). The file is removed at stop, if it is still ours.

Tokens (id tokens, group tokens) are masked in everything sent (`console_ops.masked`) unless the request
carried `show_tokens: true` and the peer is root (SO_PEERCRED); anyone else gets `permission_denied`.

What it must never do: take the charger down or hold up the core task. It is a link, not
safety-relevant: a bug in it is logged and the server restarted (like the MQTT link), and a bad client
hurts only itself: lines are bounded (`[mqtt] max_payload_bytes`, as for MQTT requests), garbage gets
`bad_request`, a client gets at most MAX_IN_FLIGHT requests running and a bounded write buffer (one
that does not read what it asked for, a `watch` above all, is dropped), and at most MAX_CLIENTS are
served at once. Listeners called from the core task only write to a buffer, never wait.

Standard: console spec (/work/briefs/console-spec.md), API.md §2; unix(7) (AF_UNIX paths, a socket
file's write permission governs connect), RFC 8259 (JSON), NDJSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final

from firmware.args import Fields
from firmware.console_ops import (ConsoleOp, Forbidden, ServiceBench, console_ops, execute, masked,
                                  peer_uid, token_request, with_session_token)
from firmware.wire import JSON, BadRequest, InvalidArgs, Request, codec_of, encode, error_reply, ok_reply, parse_request

if TYPE_CHECKING:
    from firmware.app import Controller

log = logging.getLogger(__name__)

SOCKET_MODE: Final = 0o660
#: unix(7): `sun_path` holds 108 bytes with the final NUL.
MAX_PATH_BYTES: Final = 107
MAX_CLIENTS: Final = 16
MAX_IN_FLIGHT: Final = 8
#: A client with more than this waiting to be sent to it is dropped (its kernel buffer is bounded too).
MAX_BUFFER_BYTES: Final = 256 * 1024
KERNEL_SNDBUF_BYTES: Final = 64 * 1024
RESTART_S: Final = 5.0
PROBE_TIMEOUT_S: Final = 1.0


class ConsoleRefused(Exception):  # noqa: N818 - a refusal to serve, reported in one line
    """The console cannot be served on its path (another live controller, a file in the way, a bad
    group); the charger runs on without it."""


class LineTooLong(Exception):  # noqa: N818
    """A request line longer than the limit (its bytes were skipped up to its newline)."""


class ConsoleServer:
    """The console endpoint of one controller (`run()` is a task of its TaskGroup)."""

    def __init__(self, controller: Controller, path: Path, *, group: str | None = None,
                 max_line_bytes: int = 65536) -> None:
        self.c = controller
        self.path = path
        self.group = group
        self.max_line_bytes = max_line_bytes
        self.max_buffer_bytes = MAX_BUFFER_BYTES
        self.bench = ServiceBench(controller)
        self.ops: dict[str, ConsoleOp] = console_ops(self.bench)
        self.serving = asyncio.Event()
        self._connections: set[_Connection] = set()

    @property
    def clients(self) -> int:
        return len(self._connections)

    async def run(self) -> None:
        """Serve until cancelled; restart after a bug, give up (logged) when refused."""
        while True:
            try:
                await self.serve()
            except ConsoleRefused as exc:
                log.error("console not served: %s", exc)  # noqa: TRY400 - the message says it all
                return
            except Exception:  # noqa: BLE001 - the console never takes the charger down
                log.exception("console server crashed; restarting it in %.0f s", RESTART_S)
                await asyncio.sleep(RESTART_S)

    async def serve(self) -> None:
        sock = await self._bind()
        identity = _identity(self.path)
        try:
            server = await asyncio.start_unix_server(self._client, sock=sock, limit=self.max_line_bytes + 1)
        except BaseException:
            sock.close()
            _unlink_if(self.path, identity)
            raise
        try:
            self.serving.set()
            log.info("console on %s", self.path)
            await asyncio.Event().wait()  # until cancelled
        finally:
            self.serving.clear()
            server.close()
            await self._drop_all()
            await server.wait_closed()
            _unlink_if(self.path, identity)

    # --- the socket file -------------------------------------------------------------------------

    async def _bind(self) -> socket.socket:
        path = self.path
        if len(os.fsencode(path)) > MAX_PATH_BYTES:
            raise ConsoleRefused(f"{path}: longer than {MAX_PATH_BYTES} bytes (unix(7)); set [console] socket")
        gid = _gid(self.group)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConsoleRefused(f"cannot create {path.parent}: {exc.strerror}") from exc
        await self._clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            try:  # before listen(): until then nobody can connect (ECONNREFUSED)
                os.chmod(path, SOCKET_MODE)
                if gid is not None:
                    os.chown(path, -1, gid)
            except OSError:
                path.unlink(missing_ok=True)
                raise
        except OSError as exc:
            sock.close()
            raise ConsoleRefused(f"cannot create the socket {path}: {exc.strerror or exc}") from exc
        sock.setblocking(False)
        return sock

    async def _clear_stale(self, path: Path) -> None:
        """Remove a socket file nobody answers on; refuse to touch anything else."""
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConsoleRefused(f"{path} exists and is not a socket: remove it, or set [console] socket")
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                _, writer = await asyncio.open_unix_connection(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            path.unlink(missing_ok=True)
            log.info("removed the stale console socket %s (no controller answers on it)", path)
            return
        except TimeoutError as exc:
            raise ConsoleRefused(f"something listens on {path} but does not answer: another controller?") from exc
        except OSError as exc:
            raise ConsoleRefused(f"cannot tell whether {path} is in use ({exc.strerror}): remove it if no "
                                 "controller runs") from exc
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        raise ConsoleRefused(f"another controller serves the console on {path}")

    # --- clients ---------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(self, reader, writer)
        if len(self._connections) >= MAX_CLIENTS:
            connection.send(error_reply(None, None, "busy", f"the console serves at most {MAX_CLIENTS} clients"))
            connection.close()
            return
        self._connections.add(connection)
        try:
            await connection.run()
        except Exception:  # noqa: BLE001 - one client's trouble is its own
            log.exception("console client failed")
        finally:
            self._connections.discard(connection)
            connection.close()

    async def _drop_all(self) -> None:
        tasks = [c.task for c in self._connections if c.task is not None]
        for connection in list(self._connections):
            connection.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def submit(self, request: Request) -> dict[str, object]:
        """An API op: through the controller's request path; the reply comes after the commit."""
        done: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()

        def complete(reply: dict[str, object]) -> None:  # the ReplyCallback contract: never raises
            if not done.done():
                done.set_result(reply)

        try:
            self.c.submit(request, complete)
        except Exception as exc:  # noqa: BLE001 - a bug must still get exactly one reply
            log.exception("console op %s could not be submitted", request.op)
            return error_reply(request.request_id, request.op, "internal", f"{type(exc).__name__}: {exc}")
        return await done


class _Connection:
    """One client: its requests run concurrently (at most MAX_IN_FLIGHT), replies in completion order."""

    def __init__(self, server: ConsoleServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.task = asyncio.current_task()
        self.closed = False
        self._requests: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._stops: list[Callable[[], None]] = []
        sock = writer.get_extra_info("socket")
        self.peer_uid = peer_uid(sock)  # root may see whole tokens (console_ops.token_request)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SNDBUF_BYTES)

    async def run(self) -> None:
        try:
            while not self.closed:
                try:
                    line = await _read_line(self.reader)
                except LineTooLong:
                    self.send(error_reply(None, None, "bad_request",
                                          f"line longer than {self.server.max_line_bytes} bytes"))
                    continue
                except OSError:
                    break
                if line is None:
                    break
                if not line.strip():
                    continue
                await self._slots.acquire()
                task = asyncio.get_running_loop().create_task(self._answer(line), name="console-request")
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)
        finally:
            self.close()
            for task in list(self._requests):
                task.cancel()
            await asyncio.gather(*self._requests, return_exceptions=True)
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()

    async def _answer(self, line: bytes) -> None:
        try:
            reply, whole_tokens = await self._reply(line)
            if reply is not None:
                self.send(reply, whole_tokens=whole_tokens)
        finally:
            self._slots.release()

    async def _reply(self, line: bytes) -> tuple[dict[str, object] | None, bool]:
        """The reply, and whether it may show whole tokens (root asked for them)."""
        if codec_of(line) != JSON:
            return error_reply(None, None, "bad_request", "a console request is one JSON object per line"), False
        try:
            request = parse_request(line, self.server.max_line_bytes)
            request, whole = token_request(request, self.peer_uid)
        except BadRequest as exc:
            return error_reply(exc.request_id, exc.op, "bad_request", str(exc)), False
        except (InvalidArgs, Forbidden) as exc:
            code = "invalid_args" if isinstance(exc, InvalidArgs) else "permission_denied"
            return error_reply(request.request_id, request.op, code, str(exc)), False
        if request.op == "watch":
            return self._watch(request, whole), whole
        handler = self.server.ops.get(request.op)
        if handler is None:
            return await self.server.submit(request), whole
        return await execute(self.server.c, handler, request), whole

    def _watch(self, request: Request, whole_tokens: bool) -> dict[str, object] | None:
        """Reply `{"watching": true}`, then stream until the client closes."""
        rid = request.request_id
        try:
            Fields(request.args).done()
        except InvalidArgs as exc:
            return error_reply(rid, request.op, "invalid_args", str(exc))
        self.send(ok_reply(rid, "watch", {"watching": True}))

        def published(topic: str, doc: object) -> None:
            event = event_of(topic)
            if whole_tokens and event == "state" and isinstance(doc, dict):
                doc = with_session_token(self.server.c, doc)
            self.send({"id": rid, "op": "watch", "event": event, "topic": topic, "doc": doc}, whole_tokens=whole_tokens)

        def transition(line: str) -> None:
            self.send({"id": rid, "op": "watch", "event": "transition", "line": line})

        listeners = self.server.c.core.transition_listeners
        listeners.append(transition)
        self._stops.append(self.server.c.link.listen(published))
        self._stops.append(lambda: listeners.remove(transition))
        return None

    def send(self, doc: dict[str, object], *, whole_tokens: bool = False) -> None:
        """Write one line without waiting, its tokens masked unless `whole_tokens`; a client that lets too
        much pile up is dropped."""
        if self.closed or self.writer.is_closing():
            return
        try:
            data = encode(JSON, doc if whole_tokens else masked(doc))
        except (TypeError, ValueError):
            log.exception("console reply could not be encoded")
            data = encode(JSON, error_reply(None, None, "internal", "reply could not be encoded"))
        self.writer.write(data + b"\n")
        waiting = self.writer.transport.get_write_buffer_size()
        if waiting > self.server.max_buffer_bytes:
            log.warning("console client dropped: it does not read (%d bytes waiting)", waiting)
            self.close(abort=True)

    def close(self, *, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        for stop in self._stops:
            with contextlib.suppress(ValueError):
                stop()
        if abort:
            self.writer.transport.abort()
        else:
            self.writer.close()


def event_of(topic: str) -> str:
    """The watch event of a topic under R: `evse/1/state` -> state, `reservation`, `status`, ..."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "evse":
        return parts[2]
    return topic.replace("/", "_")


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line (a last one without newline included); None at the end. A line over the reader's
    limit raises LineTooLong once its bytes, up to its newline, are skipped."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None
    except asyncio.LimitOverrunError as exc:
        skip = exc.consumed
    while True:  # skip the rest of the long line
        await reader.readexactly(skip)
        try:
            await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            skip = exc.consumed
            continue
        except asyncio.IncompleteReadError:
            pass
        raise LineTooLong


def _gid(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConsoleRefused(f"[console] group {group!r} does not exist") from None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.lstat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _unlink_if(path: Path, identity: tuple[int, int] | None) -> None:
    """Remove the socket file if it is still the one we made (another controller may have taken over)."""
    if identity is not None and _identity(path) == identity:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
