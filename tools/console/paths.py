"""Where the controller's console socket is: `--socket PATH`, the config's `[console] socket`, or a default.

What it is for: `charger-console` finds the same socket the controller opened (console spec, issue 12):
1. `--socket PATH` wins;
2. with `--config FILE`: the file's `[console] socket` when it sets one;
3. else `/run/charger-firmware/console.sock` (systemd's RuntimeDirectory) when it exists;
4. else `console.sock` in the state directory, which is where `charger-firmware --sim` opens it without
   the key: the config's `[charger] state_dir`, or, without `--config`, `$CHARGER_STATE_DIR` or `./state`
   (what firmware/__main__.py uses without a config) when that socket exists;
5. else `/run/charger-firmware/console.sock`, so that the "no controller" message names the usual place.

What it must never do: import the controller. It reads the config file only through `firmware.config`
(imported lazily, only for `--config`), and only to learn the socket path.

Standard: the console protocol (issue 12); API.md §9 for the config file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["RUN_SOCKET", "ConfigProblem", "default_socket"]

RUN_SOCKET: Final = Path("/run/charger-firmware/console.sock")
SOCKET_NAME: Final = "console.sock"


class ConfigProblem(Exception):
    """The `--config FILE` could not be read (a usage error: exit 2)."""


def _from_config(config_file: str) -> tuple[Path | None, Path]:
    """The config's `[console] socket` (None when not set) and its state directory."""
    from firmware.config import load_config  # lazily: only `--config` needs it
    from firmware.core.errors import ConfigError

    try:
        config = load_config(config_file)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from exc
    console: object = getattr(config, "console", None)
    socket_path: object = getattr(console, "socket", None)
    return (Path(str(socket_path)) if socket_path else None), Path(config.charger.state_dir)


def default_socket(config_file: str | None, *, run_socket: Path = RUN_SOCKET) -> Path:
    """The socket to use when `--socket` was not given (see the module docstring for the order)."""
    if config_file is not None:
        configured, state_dir = _from_config(config_file)
        if configured is not None:
            return configured
    else:
        state_dir = Path(os.environ.get("CHARGER_STATE_DIR", str(Path.cwd() / "state")))
    if run_socket.exists():
        return run_socket
    candidate = state_dir / SOCKET_NAME
    if candidate.exists():
        return candidate
    return run_socket
