"""`charger_console`: the field console of charger-firmware (issue 12), installed as `charger-console`.

The package (source in tools/console/, installed under this name by setup.cfg's `package_dir`):
  cli.py          the command line: subcommands, output, exit codes (documented there)
  client.py       the console socket's client: newline-delimited JSON, connection errors with advice
  paths.py        which socket: --socket, the config's [console] socket, or the defaults
  render.py       human output with rich: the EVSE table, why, log, meter, service, the live watch view
  interactive.py  the prompt (cmd + readline history and completion)
  replay.py       `replay FILE`: the flight recording through the pure core, offline

What it must never do: import the controller (firmware.app, firmware.core_loop, ...). It talks to a
running controller only through its unix socket; it may read the config (firmware.config) to find the
socket and use the pure core's replay (firmware.core.replay) offline.

Standard: the console protocol of issue 12 (API.md §2 envelopes over a unix socket).
"""
