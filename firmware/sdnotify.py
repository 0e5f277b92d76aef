"""The service manager's side channel: systemd's notify protocol (READY, STATUS, STOPPING, WATCHDOG).

What it is for. Under systemd (`deploy/charger-firmware.service`, `Type=notify`) the controller tells
the service manager:

* `READY=1` once the outputs are safe, the config is loaded and the controller has booted (sent by
  `Controller._run_tasks` when its tasks are started); until then `systemctl start` waits;
* `STATUS=...`, one line for `systemctl status` ("2 EVSE(s), backend online, 1 charging"), sent when
  it changes;
* `STOPPING=1` when the controller begins to stop (before the outputs are driven safe again);
* `WATCHDOG=1` pings, but ONLY while the safety path is healthy: `supervise` pings every quarter of
  the watchdog period (`WATCHDOG_USEC`) if, within half the period, the core task came round its loop
  (one item or deadline handled, `CoreLoop.handled_at`, or it waits, idle, on an empty inbox) and the
  safety sampler came round its own (`Producers.sampled_at`: at least every
  `pilot.idle_sample_interval_s`, at most 1 s). A core task wedged in an await (a board call that never
  returns), a sampler wedged the same way, or a loop blocked by synchronous code (then this task does
  not run either) end the pings, and systemd restarts the service (`WatchdogSec=`). There is
  deliberately no timer that pings regardless.

Without `NOTIFY_SOCKET` (a laptop, the tests, `--sim`) everything here is a no-op. A send that fails is
logged once (then at DEBUG) and never raised: the notify channel must never take the charger down.
Sends are non-blocking datagrams, so nothing here waits on the service manager.

What it must never do: decide anything about charging, ping the watchdog for a core that is not
making progress, or raise into the controller.

Standard: sd_notify(3) and the protocol description of systemd.io/NOTIFY/ (AF_UNIX SOCK_DGRAM, a
path or an abstract `@name` socket; newline-separated VAR=VALUE; `WATCHDOG_USEC`/`WATCHDOG_PID` as in
sd_watchdog_enabled(3)); systemd.service(5) `Type=notify`, `NotifyAccess=`, `WatchdogSec=`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from firmware.core.catalogue import Status

if TYPE_CHECKING:  # `python -m firmware` imports this module at start; the core only when it runs
    from firmware.core.charger import Charger

log = logging.getLogger(__name__)

#: How often the status line is refreshed when systemd runs no watchdog for us.
STATUS_INTERVAL_S: Final = 2.0
#: `supervise` pings this often, as a share of the watchdog period (sd_watchdog_enabled(3) advises
#: pinging at half the period at least; a quarter leaves room for a late wake-up).
PING_SHARE: Final = 0.25
#: The core loop counts as healthy if it came round within this share of the watchdog period.
HEALTHY_SHARE: Final = 0.5


def _address(value: str) -> str | None:
    """The socket address of `NOTIFY_SOCKET`: a path, or `@name` for the abstract namespace."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract @socket; not notifying systemd", value)
    return None


def _watchdog_s(environ: Mapping[str, str]) -> float | None:
    """The watchdog period systemd expects of this process (sd_watchdog_enabled(3)), or None."""
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    try:
        if pid and int(pid) != os.getpid():
            return None  # meant for another process (our parent, say)
        period_us = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r / WATCHDOG_PID=%r are not numbers; no watchdog pings", usec, pid)
        return None
    return period_us / 1e6 if period_us > 0 else None


def service_status(charger: Charger, backend_online: bool) -> str:
    """The `STATUS=` line: how many EVSEs, whether the backend link is up, how many are charging."""
    charging = sum(1 for cid in charger.evses if charger.status(cid) is Status.CHARGING)
    return (f"{len(charger.evses)} EVSE(s), backend {'online' if backend_online else 'offline'}, "
            f"{charging} charging")


class Notifier:
    """Messages to the service manager; every method is a no-op without `NOTIFY_SOCKET`."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_s = _watchdog_s(env) if self.address is not None else None
        self._status: str | None = None
        self._failed = False
        self._wedged = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """One datagram of `VAR=VALUE` lines; False when not sent (disabled, or the send failed)."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode("utf-8", "replace")
        try:  # a socket per message, as libsystemd's sd_notify does: nothing to keep open or close
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # never wait on the service manager
                sock.sendto(message, self.address)
        except OSError as exc:
            level = logging.DEBUG if self._failed else logging.WARNING
            log.log(level, "could not notify systemd at %r (%s): %r not sent", self.address, exc, lines[0])
            self._failed = True
            return False
        log.debug("notified systemd: %r", message)
        return True

    def ready(self, status: str) -> None:
        """The controller is up: outputs safe, config loaded, booted."""
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """The status line, sent only when it changed."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: driving the outputs safe")

    def failed(self, reason: str) -> None:
        """The program ends on an error (`systemctl status` shows why)."""
        self.send(f"STATUS=stopped: {reason}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def check_core(self, handled_at: float, now: float) -> bool:
        """Ping the watchdog if the core loop came round (`handled_at`, loop time) recently enough;
        True if it did. A core that stops coming round is logged once (and its recovery)."""
        if self.watchdog_s is None:
            return True
        quiet_s = now - handled_at
        if quiet_s <= self.watchdog_s * HEALTHY_SHARE:
            if self._wedged:
                log.warning("the core loop is running again (it was quiet for a while): watchdog pings resume")
                self._wedged = False
            self.watchdog()
            return True
        if not self._wedged:
            log.critical("the core loop has handled nothing for %.1f s: no more watchdog pings, systemd "
                         "will restart the service", quiet_s)
            self._wedged = True
        return False

    async def supervise(self, handled_at: Callable[[], float], status: Callable[[], str]) -> None:
        """The notify task: watchdog pings tied to the core loop's health (`handled_at`: the loop time
        the core last came round) and the status line. Ends at once when there is no NOTIFY_SOCKET."""
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        period_s = self.watchdog_s * PING_SHARE if self.watchdog_s is not None else STATUS_INTERVAL_S
        while True:
            try:
                self.check_core(handled_at(), loop.time())
                self.status(status())
            except Exception:  # noqa: BLE001 - the notify channel never takes the charger down
                log.exception("systemd notification failed; no watchdog ping this round")
            await asyncio.sleep(period_s)
