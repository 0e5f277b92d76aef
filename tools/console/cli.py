"""`charger-console`: see, explain and operate a running charger through its console socket (issue 12).

Usage:
    charger-console [--socket PATH | --config FILE] [--json] [--no-color] [--show-tokens] SUBCOMMAND [ARGS]
    charger-console [--socket PATH | --config FILE]          (no subcommand, on a terminal: a prompt)

Subcommands: status, watch, why EVSE, reserve, cancel ID, reservations, authorize EVSE TOKEN,
stop EVSE, enable EVSE, disable EVSE, log [-n N], meter EVSE, service EVSE relay|led|lock, dump,
replay FILE, and on a simulated board `sim plug|token|fault|load ...`. `charger-console SUBCOMMAND -h`
tells the arguments.

Exit codes:
    0  done
    1  the controller refused or failed the command (its error code and message are printed), a
       service test failed, a `sim` command on real hardware, or a replay that could not run or
       diverged from the recording
    2  usage error: bad arguments, an unreadable --config FILE
    3  no controller: the socket is missing, is not a socket, or refuses connections
    4  permission denied on the socket: add your user to the charger group (or use sudo); or
       --show-tokens by a user other than root
    5  unsafe: the controller refused the command because it is unsafe now (the message says why)

Tokens (RFID UIDs, app tokens) are masked by the controller in everything the console shows;
`--show-tokens` asks for them whole, which the controller grants only to root (it reads the caller's
uid from the socket, SO_PEERCRED) and refuses to anyone else (exit 4). `watch` stays masked.

Output: human tables and lines (colour only on a terminal, never with --no-color); with `--json`
exactly one JSON document per command on stdout (the op's `result`, or the error envelope
`{"ok": false, "error": {"code", "message"}}`), and for `watch --json` one JSON object per line: a
`state` line per EVSE for the current state, then the stream's lines as the controller sends them.

What it must never do: import the controller (`firmware.app`, `firmware.core_loop`, ...) or touch the
hardware. It only talks to the socket; `--config` is read through `firmware.config` only to find the
socket, and `replay` uses the pure core's `firmware.core.replay` offline.

Standard: the console protocol (issue 12, newline-delimited JSON with the envelopes of API.md §2),
API.md §3 (op arguments), §4 (documents), §8 (sim ops).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, TextIO

from rich.console import Console, RenderableType
from rich.text import Text

from . import render
from .client import EXIT_PERMISSION, Client, ConsoleError, OpError
from .paths import ConfigProblem, default_socket

__all__ = ["EXIT_CODES", "Context", "build_parser", "main", "run"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
#: Output width when stdout is not a terminal (rich would use 80 and squeeze the EVSE table).
PIPE_WIDTH: Final = 200

EXIT_CODES: Final = """\
exit codes:
  0  done
  1  the controller refused or failed the command (code and message printed), a service test failed,
     a sim command on real hardware, or a replay that could not run or diverged from the recording
  2  usage error (bad arguments, unreadable --config FILE)
  3  no controller on the socket (missing, not a socket, connection refused)
  4  permission denied on the socket (add your user to the charger group, or use sudo),
     or --show-tokens by a user other than root
  5  unsafe: the controller refused the command as unsafe now (the message says why)"""

SUBCOMMANDS: Final = ("status", "watch", "why", "reserve", "cancel", "reservations", "authorize", "stop", "enable",
                      "disable", "log", "meter", "service", "dump", "replay", "sim")
EVSE_FIRST: Final = frozenset({"why", "authorize", "stop", "enable", "disable", "meter", "service"})
SIM_ACTIONS: Final = ("plug", "token", "fault", "load")
SERVICE_TESTS: Final = ("relay", "led", "lock")
SIM_FAULTS: Final = ("rcd", "relay_welded", "relay_stuck_open", "meter_lost", "overtemperature", "pilot")
STOP_REASONS: Final = ("Remote", "Local", "EmergencyStop", "PowerLoss", "Reboot", "Other", "TimeLimitReached",
                       "SoCLimitReached", "EVDisconnected")


class UsageError(Exception):
    """A bad command line that argparse did not catch (exit 2)."""


@dataclass
class Context:
    """What a subcommand needs: where the socket is, how to print."""

    socket: Path
    json: bool
    out: Console
    err: Console
    timeout_s: float = 60.0
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    show_tokens: bool = False  # ask for whole tokens (granted to root only)

    def client(self, *, timeout_s: float | None = None) -> Client:
        return Client(self.socket, timeout_s=self.timeout_s if timeout_s is None else timeout_s)

    def call(self, op: str, args: dict[str, object] | None = None) -> object:
        with self.client() as client:
            return client.request(op, (args or {}) | ({"show_tokens": True} if self.show_tokens else {}))

    def emit_json(self, doc: object, *, indent: int | None = 2) -> None:
        self.stdout.write(json.dumps(doc, indent=indent, ensure_ascii=False) + "\n")
        self.stdout.flush()

    def show(self, *renderables: RenderableType) -> None:
        for item in renderables:
            self.out.print(item)


Handler = Callable[[Context, argparse.Namespace], int]


# --- the subcommands ------------------------------------------------------------------------------------

def _cmd_status(ctx: Context, ns: argparse.Namespace) -> int:
    result = render.as_dict(ctx.call("status"))
    if ctx.json:
        ctx.emit_json(result)
        return EXIT_OK
    evses = [render.as_dict(d) for d in render.as_list(result.get("evses"))]
    samples: dict[int, dict[str, object]] = {}
    with ctx.client() as client:
        for doc in evses:
            evse_id = doc.get("evse_id")
            try:
                meter = render.as_dict(client.request("meter", {"evse_id": evse_id}))
            except OpError:
                continue  # no meter detail: the column shows a dash
            if isinstance(evse_id, int) and meter.get("sample"):
                samples[evse_id] = render.as_dict(meter.get("sample"))
    ctx.show(render.status_header(render.as_dict(result.get("status"))), render.evse_table(evses, samples))
    return EXIT_OK


def _cmd_watch(ctx: Context, ns: argparse.Namespace) -> int:
    """The watch stream, subscribed first; then the current state (so no change falls in between),
    then the changes: a live table, or (--json) one JSON object per line, starting with one `state`
    line per EVSE for the current state."""
    from rich.live import Live

    try:
        with ctx.client(timeout_s=ctx.timeout_s) as client:
            events = client.watch(show_tokens=ctx.show_tokens)
            first = render.as_dict(ctx.call("status"))
            evses = [render.as_dict(d) for d in render.as_list(first.get("evses"))]
            if ctx.json:
                for doc in evses:
                    ctx.emit_json({"op": "watch", "event": "state", "topic": f"evse/{doc.get('evse_id')}/state",
                                   "doc": doc}, indent=None)
                for event in events:
                    ctx.emit_json(event, indent=None)
                return EXIT_OK
            view = render.WatchView(render.as_dict(first.get("status")), evses)
            with Live(view.render(), console=ctx.out, auto_refresh=False, redirect_stderr=False) as live:
                for event in events:
                    view.apply(event)
                    live.update(view.render(), refresh=True)
    except KeyboardInterrupt:
        return EXIT_OK
    ctx.err.print("charger-console: the controller closed the watch")
    return EXIT_FAILED


def _cmd_why(ctx: Context, ns: argparse.Namespace) -> int:
    result = render.as_dict(ctx.call("why", {"evse_id": ns.evse}))
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.show(*render.why_lines(ns.evse, result))
    return EXIT_OK


def _expiry(ns: argparse.Namespace) -> str:
    if ns.expiry is not None:
        return str(ns.expiry)
    when = datetime.now(UTC) + timedelta(minutes=ns.expiry_minutes)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def _cmd_reserve(ctx: Context, ns: argparse.Namespace) -> int:
    args: dict[str, object] = {"reservation_id": ns.id, "id_token": ns.token, "expiry_time": _expiry(ns)}
    optional = {"evse_id": ns.evse, "parent_id_token": ns.group_token, "connector_type": ns.connector_type,
                "start_time": ns.start, "sender": ns.sender, "token_type": ns.token_type}
    args |= {k: v for k, v in optional.items() if v is not None}
    result = render.as_dict(ctx.call("reserve_now", args))
    if ctx.json:
        ctx.emit_json(result)
        return EXIT_OK
    status = str(result.get("status"))
    line = Text(f"reservation {ns.id}: ")
    line.append(status, style="green" if status == "Accepted" else "yellow")
    if result.get("uuid"):
        line.append(f"  (uuid {result.get('uuid')}, until {args['expiry_time']})")
    ctx.show(line)
    return EXIT_OK if status == "Accepted" else EXIT_FAILED


def _cmd_cancel(ctx: Context, ns: argparse.Namespace) -> int:
    args: dict[str, object] = {"reservation_id": ns.id}
    if ns.sender is not None:
        args["sender"] = ns.sender
    return _done(ctx, ctx.call("cancel_reservation", args), Text(f"reservation {ns.id} cancelled"),
                 Text(f"no reservation {ns.id} to cancel"))


def _done(ctx: Context, result: object, done: Text, not_done: Text) -> int:
    """An op that answers true (done) or false: the JSON, or one of the two lines; the exit code."""
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.show(done if result is True else not_done)
    return EXIT_OK if result is True else EXIT_FAILED


def _cmd_reservations(ctx: Context, ns: argparse.Namespace) -> int:
    result = render.as_list(ctx.call("list_reservations"))
    if ctx.json:
        ctx.emit_json(result)
    elif not result:
        ctx.show(Text("no reservations"))
    else:
        ctx.show(render.reservations_table(result))
    return EXIT_OK


def _cmd_authorize(ctx: Context, ns: argparse.Namespace) -> int:
    args: dict[str, object] = {"id_token": ns.token, "evse_id": ns.evse}
    if ns.token_type is not None:
        args["token_type"] = ns.token_type
    result = render.as_dict(ctx.call("authorize", args))
    if ctx.json:
        ctx.emit_json(result)
        return EXIT_OK
    status = str(result.get("status"))
    line = Text("authorize: ")
    line.append(status, style="green" if status == "Accepted" else "yellow")
    if result.get("evse_id") is not None:
        line.append(f" on EVSE {result.get('evse_id')}")
    if result.get("reservation_id") is not None:
        line.append(f" (reservation {result.get('reservation_id')})")
    ctx.show(line)
    return EXIT_OK if status == "Accepted" else EXIT_FAILED


def _cmd_stop(ctx: Context, ns: argparse.Namespace) -> int:
    args: dict[str, object] = {"evse_id": ns.evse}
    if ns.reason is not None:
        args["reason"] = ns.reason
    return _done(ctx, ctx.call("stop_session", args), Text(f"EVSE {ns.evse}: session stopped"),
                 Text(f"EVSE {ns.evse}: no session to stop"))


def _set_enabled(ctx: Context, evse: int, enabled: bool) -> int:
    return _done(ctx, ctx.call("set_enabled", {"evse_id": evse, "enabled": enabled}),
                 Text(f"EVSE {evse} {'enabled' if enabled else 'disabled'}"),
                 Text(f"EVSE {evse}: the controller did not {'enable' if enabled else 'disable'} it", style="yellow"))


def _cmd_enable(ctx: Context, ns: argparse.Namespace) -> int:
    return _set_enabled(ctx, ns.evse, True)


def _cmd_disable(ctx: Context, ns: argparse.Namespace) -> int:
    return _set_enabled(ctx, ns.evse, False)


def _cmd_log(ctx: Context, ns: argparse.Namespace) -> int:
    args: dict[str, object] = {} if ns.n is None else {"n": ns.n}
    result = render.as_dict(ctx.call("log", args))
    if ctx.json:
        ctx.emit_json(result)
    else:
        lines = render.log_lines(result)
        ctx.show(*(lines or [Text("no transitions yet")]))
    return EXIT_OK


def _cmd_meter(ctx: Context, ns: argparse.Namespace) -> int:
    result = render.as_dict(ctx.call("meter", {"evse_id": ns.evse}))
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.show(render.meter_view(result))
    return EXIT_OK


def _cmd_service(ctx: Context, ns: argparse.Namespace) -> int:
    result = render.as_dict(ctx.call("service", {"evse_id": ns.evse, "test": ns.test}))
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.show(render.service_view(result))
    return EXIT_OK if result.get("passed") is True else EXIT_FAILED


def _cmd_dump(ctx: Context, ns: argparse.Namespace) -> int:
    result = render.as_dict(ctx.call("dump"))
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.show(Text(f"flight recorder written to {result.get('path')} ({result.get('inputs')} inputs)"))
    return EXIT_OK


def _cmd_replay(ctx: Context, ns: argparse.Namespace) -> int:
    from .replay import ReplayUnavailable, replay_file

    try:
        result = replay_file(Path(ns.file))
    except ReplayUnavailable as exc:
        return _fail(ctx, "replay_unavailable", str(exc), EXIT_FAILED)
    identical = result.get("identical") is True
    if ctx.json:
        ctx.emit_json(result)
    else:
        divergences = render.as_list(result.get("divergences"))
        ctx.show(Text(f"# {result.get('reason')}, written {result.get('written_utc')}, {result.get('calls')} calls "
                      f"from {result.get('start')}", style="dim"),
                 *(Text(str(line), style="bold red" if str(line).startswith("DIVERGENCE") else "")
                   for line in render.as_list(result.get("lines"))),
                 Text("# identical" if identical else f"# {len(divergences)} divergence(s)",
                      style="green" if identical else "bold red"))
    return EXIT_OK if identical else EXIT_FAILED


_SIM_OPS: Final = {"plug": "sim_plug", "token": "sim_token", "fault": "sim_fault", "load": "sim_load"}


def _sim_args(ns: argparse.Namespace) -> dict[str, object]:
    args: dict[str, object] = {"evse_id": ns.evse}
    match ns.sim_action:
        case "plug":
            args["cp"] = ns.cp
            if ns.pp is not None:
                args["pp_ohms"] = ns.pp
            if ns.no_diode:
                args["diode_ok"] = False
        case "token":
            args["id_token"] = ns.token
            if ns.token_type is not None:
                args["token_type"] = ns.token_type
        case "fault":
            args["fault"] = ns.kind
            args["active"] = ns.state == "on"
        case "load":
            args["current_a"] = ns.amps
    return args


def _cmd_sim(ctx: Context, ns: argparse.Namespace) -> int:
    try:
        result = ctx.call(_SIM_OPS[ns.sim_action], _sim_args(ns))
    except OpError as exc:
        if exc.code != "unsupported":
            raise
        return _fail(ctx, exc.code, "the board is not simulated: `sim` commands work only with charger-firmware "
                     f"--sim ({exc.message})", EXIT_FAILED)
    if ctx.json:
        ctx.emit_json(result)
    else:
        ctx.show(Text(f"sim {ns.sim_action} on EVSE {ns.evse}: done"))
    return EXIT_OK


HANDLERS: Final[dict[str, Handler]] = {
    "status": _cmd_status, "watch": _cmd_watch, "why": _cmd_why, "reserve": _cmd_reserve, "cancel": _cmd_cancel,
    "reservations": _cmd_reservations, "authorize": _cmd_authorize, "stop": _cmd_stop, "enable": _cmd_enable,
    "disable": _cmd_disable, "log": _cmd_log, "meter": _cmd_meter, "service": _cmd_service, "dump": _cmd_dump,
    "replay": _cmd_replay, "sim": _cmd_sim,
}


# --- the command line --------------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_subcommands(parser: argparse.ArgumentParser) -> None:
    """The subcommands, shared by the command line and the interactive prompt."""
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.add_parser("status", help="the EVSEs: status, CP, PP, relay, currents, energy, session, errors")
    sub.add_parser("watch", help="a live table of the EVSEs, updated in place (Ctrl-C ends it)")
    p = sub.add_parser("why", help="why is this EVSE not charging? every blocking condition, in words")
    p.add_argument("evse", type=_positive_int, metavar="EVSE")
    p = sub.add_parser("reserve", help="reserve an EVSE (or any EVSE) for a token (API.md reserve_now)")
    p.add_argument("--id", type=int, required=True, help="reservation id")
    p.add_argument("--token", required=True, help="the id token the reservation is for")
    p.add_argument("--evse", type=_positive_int, help="the EVSE (default: any EVSE, a global reservation)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--expiry-minutes", type=_number, default=30.0, help="minutes from now (default 30)")
    when.add_argument("--expiry", metavar="RFC3339", help="the end, e.g. 2026-11-21T08:30:00Z")
    p.add_argument("--start", metavar="RFC3339", help="a scheduled reservation: holds the EVSE from then on")
    p.add_argument("--group-token", help="parent (group) token: any token of the group may use it")
    p.add_argument("--connector-type", help="e.g. sType2, cCCS2")
    p.add_argument("--sender", help="namespace of the id (default \"\")")
    p.add_argument("--token-type", help="e.g. RFID, APP_USER (informative)")
    p = sub.add_parser("cancel", help="cancel a reservation")
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--sender", help="namespace of the id (default \"\")")
    sub.add_parser("reservations", help="list the reservations")
    p = sub.add_parser("authorize", help="authorize a token at an EVSE (as a remote start)")
    p.add_argument("evse", type=_positive_int, metavar="EVSE")
    p.add_argument("token", metavar="TOKEN")
    p.add_argument("--token-type", help="e.g. RFID, APP_USER")
    p = sub.add_parser("stop", help="stop the session on an EVSE")
    p.add_argument("evse", type=_positive_int, metavar="EVSE")
    p.add_argument("--reason", choices=STOP_REASONS, help="SessionCancellationReason (default Remote)")
    for name, text in (("enable", "enable an EVSE"), ("disable", "disable an EVSE (Unavailable; stops a session)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("evse", type=_positive_int, metavar="EVSE")
    p = sub.add_parser("log", help="the last transitions, oldest first")
    p.add_argument("-n", type=_positive_int, metavar="N", help="how many (default: the controller's 50)")
    p = sub.add_parser("meter", help="an EVSE's meter: raw registers and decoded values")
    p.add_argument("evse", type=_positive_int, metavar="EVSE")
    p = sub.add_parser("service", help="relay, LED or lock test (only when the EVSE is disabled and unplugged)")
    p.add_argument("evse", type=_positive_int, metavar="EVSE")
    p.add_argument("test", choices=SERVICE_TESTS)
    sub.add_parser("dump", help="write the flight recorder to the state directory")
    p = sub.add_parser("replay", help="replay a flight recording through the core offline (no controller needed)")
    p.add_argument("file", metavar="FILE")
    p = sub.add_parser("sim", help="the simulated board (charger-firmware --sim only)")
    sim = p.add_subparsers(dest="sim_action", metavar="ACTION", required=True)
    q = sim.add_parser("plug", help="the simulated EV: A unplugged, B plugged, C charging, D ventilation, E short")
    q.add_argument("evse", type=_positive_int, metavar="EVSE")
    q.add_argument("cp", choices=("A", "B", "C", "D", "E"), metavar="A|B|C|D|E")
    q.add_argument("--pp", type=_number, metavar="OHMS", help="PP resistor of the cable")
    q.add_argument("--no-diode", action="store_true", help="the EV's diode is missing")
    q = sim.add_parser("token", help="hold a card to the EVSE's reader")
    q.add_argument("evse", type=_positive_int, metavar="EVSE")
    q.add_argument("token", metavar="TOKEN")
    q.add_argument("--token-type", help="default RFID")
    q = sim.add_parser("fault", help="inject or clear a hardware fault")
    q.add_argument("evse", type=_positive_int, metavar="EVSE")
    q.add_argument("kind", choices=SIM_FAULTS, metavar="KIND", help=", ".join(SIM_FAULTS))
    q.add_argument("state", choices=("on", "off"))
    q = sim.add_parser("load", help="current the simulated EV draws while the relay is closed")
    q.add_argument("evse", type=_positive_int, metavar="EVSE")
    q.add_argument("amps", type=_number, metavar="AMPS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charger-console",
        description="See, explain and operate a running charger-firmware through its console socket. "
                    "Without a subcommand (on a terminal): an interactive prompt.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--socket", metavar="PATH", help="the controller's console socket")
    where.add_argument("--config", metavar="FILE", help="read the socket path from this controller config "
                       "([console] socket)")
    parser.add_argument("--json", action="store_true", help="machine-readable output: one JSON document")
    parser.add_argument("--no-color", action="store_true", help="no colour (there is none off a terminal anyway)")
    parser.add_argument("--show-tokens", action="store_true", help="show tokens whole, not masked (root only; "
                        "not in watch)")
    parser.add_argument("--timeout", type=_number, default=60.0, metavar="S", help="seconds to wait for an answer")
    add_subcommands(parser)
    return parser


def _fail(ctx: Context, code: str, message: str, exit_code: int) -> int:
    if ctx.json:
        ctx.emit_json({"ok": False, "error": {"code": code, "message": message}})
    ctx.err.print(Text(f"charger-console: {message}" if code in {"no_controller", "permission_denied"}
                       or code.startswith("replay") else f"charger-console: {code}: {message}"))
    return exit_code


def run(ctx: Context, ns: argparse.Namespace) -> int:
    """One subcommand, with its errors turned into messages and exit codes."""
    try:
        return HANDLERS[ns.command](ctx, ns)
    except ConsoleError as exc:
        exit_code = EXIT_PERMISSION if exc.code == "permission_denied" else exc.exit_code  # also --show-tokens
        return _fail(ctx, exc.code, exc.message, exit_code)


def make_context(ns: argparse.Namespace) -> Context:
    """The context of the global options; ConfigProblem for an unreadable --config."""
    path = Path(ns.socket) if ns.socket else default_socket(ns.config)
    # soft_wrap: a line (a log line, a replayed action) is never cut in two; tables fit the width
    out = Console(no_color=ns.no_color, highlight=False, soft_wrap=True)
    if not out.is_terminal:  # a pipe or a file: no colour (rich), and room for the whole table
        out = Console(no_color=ns.no_color, highlight=False, soft_wrap=True, width=PIPE_WIDTH)
    return Context(socket=path, json=ns.json, timeout_s=ns.timeout, out=out, show_tokens=ns.show_tokens,
                   err=Console(stderr=True, no_color=ns.no_color, highlight=False, soft_wrap=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        ctx = make_context(ns)
    except ConfigProblem as exc:
        print(f"charger-console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if ns.command is None:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            parser.print_usage(sys.stderr)
            print("charger-console: a subcommand is needed (the interactive prompt needs a terminal)", file=sys.stderr)
            return EXIT_USAGE
        from .interactive import Shell

        return Shell(ctx).run()
    return run(ctx, ns)


if __name__ == "__main__":
    sys.exit(main())
