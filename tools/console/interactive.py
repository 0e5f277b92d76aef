"""The interactive prompt of `charger-console` (no subcommand, on a terminal): the same subcommands, typed.

What it is for: a technician at a charger types `status`, `why 1`, `sim plug 1 C` ... at a prompt, with
readline history (kept in ~/.charger_console_history across runs, the up arrow recalls) and tab
completion of the subcommands, their fixed words (service tests, sim actions, fault kinds) and the EVSE
ids the controller reports. `help` lists the subcommands, `help why` shows one; `quit`, `exit` or Ctrl-D
leave. Each line runs exactly as `charger-console LINE` would, on a fresh connection, so a command
that fails leaves the prompt usable.

What it must never do: import the controller, or exit on a bad line (usage errors are printed).

Standard: Python's `cmd` and `readline` modules (GNU readline history file).
"""

from __future__ import annotations

import argparse
import cmd
import contextlib
import os
import shlex
from pathlib import Path
from types import ModuleType
from typing import Final

from . import render
from .cli import EXIT_CODES, EVSE_FIRST, HANDLERS, SERVICE_TESTS, SIM_ACTIONS, SIM_FAULTS, SUBCOMMANDS, Context, \
    add_subcommands, run
from .client import ConsoleError

__all__ = ["HISTORY_FILE", "Shell"]

HISTORY_FILE: Final = "~/.charger_console_history"
HISTORY_LENGTH: Final = 1000


class _NoExit(argparse.ArgumentParser):
    """An argparse parser that reports errors instead of exiting the prompt."""

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        if message:
            self._print_message(message)
        raise _ParseStopped(status)


class _ParseStopped(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Shell(cmd.Cmd):
    """`cmd.Cmd` over the subcommands of cli.py."""

    intro = "charger-console: type help for the commands, quit to leave (history: up arrow; completion: TAB)"
    prompt = "charger> "

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.parser = _NoExit(prog="", add_help=False, epilog=EXIT_CODES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        add_subcommands(self.parser)
        self._evse_ids: list[str] | None = None
        self.last_exit = 0

    # --- lifecycle -------------------------------------------------------------------------------------
    def run(self) -> int:
        history = Path(os.path.expanduser(HISTORY_FILE))
        readline = _readline()
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.read_history_file(history)
            readline.set_history_length(HISTORY_LENGTH)
        try:
            self.cmdloop()
        except KeyboardInterrupt:
            self.ctx.out.print()
        finally:
            if readline is not None:
                with contextlib.suppress(OSError):
                    readline.write_history_file(history)
        return 0

    # --- commands ----------------------------------------------------------------------------------------
    def emptyline(self) -> bool:
        return False  # an empty line does nothing (not: repeat the last command)

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 - cmd's name for Ctrl-D
        """Ctrl-D: leave the prompt"""
        self.ctx.out.print()
        return True

    def default(self, line: str) -> None:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.ctx.err.print(f"charger-console: {exc}")
            return
        try:
            ns = self.parser.parse_args(words)
        except _ParseStopped:
            return
        if ns.command is None:
            return
        try:
            self.last_exit = run(self.ctx, ns)
        except KeyboardInterrupt:  # Ctrl-C ends a watch, not the prompt
            self.ctx.out.print()

    def do_quit(self, arg: str) -> bool:
        """quit: leave the prompt"""
        return True

    do_exit = do_quit

    def do_help(self, arg: str) -> None:
        """help [SUBCOMMAND]: the subcommands, or one subcommand's arguments"""
        words = arg.split()
        if words and words[0] in HANDLERS:
            with contextlib.suppress(_ParseStopped):
                self.parser.parse_args([*words, "-h"])
            return
        self.parser.print_help()
        self.ctx.out.print("prompt commands: help [SUBCOMMAND], quit")

    # --- completion --------------------------------------------------------------------------------------
    def completenames(self, text: str, *ignored: object) -> list[str]:
        names = (*SUBCOMMANDS, "help", "quit", "exit")
        return [name for name in names if name.startswith(text)]

    def completedefault(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        words = line[:begidx].split()
        return [c for c in self._candidates(words) if c.startswith(text)]

    def complete_help(self, text: str, line: str, begidx: int, endidx: int) -> list[str]:
        return [name for name in SUBCOMMANDS if name.startswith(text)]

    def _candidates(self, words: list[str]) -> list[str]:
        """What may come after `words` (the line's words before the one being completed)."""
        if not words:
            return []
        command, rest = words[0], words[1:]
        if command in EVSE_FIRST:
            if not rest:
                return self.evse_ids()
            if command == "service" and len(rest) == 1:
                return list(SERVICE_TESTS)
            return []
        if command == "sim":
            if not rest:
                return list(SIM_ACTIONS)
            if len(rest) == 1:
                return self.evse_ids()
            if rest[0] == "plug" and len(rest) == 2:
                return ["A", "B", "C", "D", "E"]
            if rest[0] == "fault" and len(rest) == 2:
                return list(SIM_FAULTS)
            if rest[0] == "fault" and len(rest) == 3:
                return ["on", "off"]
        return []

    def evse_ids(self) -> list[str]:
        """The controller's EVSE ids (asked once; none when it cannot be reached)."""
        if self._evse_ids is None:
            try:
                result = render.as_dict(self.ctx.call("status"))
            except ConsoleError:
                return []
            docs = [render.as_dict(d) for d in render.as_list(result.get("evses"))]
            self._evse_ids = [str(d.get("evse_id")) for d in docs if d.get("evse_id") is not None]
        return self._evse_ids


def _readline() -> ModuleType | None:
    try:
        import readline
    except ImportError:  # not on every platform; the prompt works without history
        return None
    return readline
