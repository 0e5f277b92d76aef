"""`charger-console replay FILE`: a flight recording fed through the pure core, offline, on a laptop.

What it is for: the controller writes its flight recorder (every input to the pure core, with its
timestamp) to a CBOR file on a fault or on `dump`; this module hands such a file to the pure core's
replay (`firmware.core.replay`, issue 12 part 2) and returns the transitions and actions it produced, so
a field bug can be reproduced without the charger.

What it must never do: talk to a controller or touch hardware; import anything of the controller but
the pure core's replay module, and that lazily (the console runs without it; `replay` then says so).

Standard: issue 12 (flight recorder, deterministic replay).
"""

from __future__ import annotations

import importlib
from pathlib import Path

__all__ = ["ReplayUnavailable", "replay_file"]

REPLAY_MODULE = "firmware.core.replay"


class ReplayUnavailable(Exception):  # noqa: N818 - what the user is told
    """The recording cannot be replayed: no such file, no replay module, or a recording it refuses."""


def replay_file(path: Path) -> dict[str, object]:
    """`{"file", "lines": [...]}`: the transitions and actions of the recording, in order."""
    if not path.is_file():
        raise ReplayUnavailable(f"replay: {path}: no such file")
    try:
        module = importlib.import_module(REPLAY_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is not None and REPLAY_MODULE.startswith(exc.name):
            raise ReplayUnavailable(f"replay: this installation has no {REPLAY_MODULE} (the flight recorder's "
                                    "replay); install a charger-firmware that has it") from exc
        raise
    replay = getattr(module, "replay_file", None)
    if not callable(replay):
        raise ReplayUnavailable(f"replay: {REPLAY_MODULE} has no replay_file(path)")
    try:
        lines = replay(path)
    except (OSError, ValueError) as exc:
        raise ReplayUnavailable(f"replay: {path}: {exc}") from exc
    return {"file": str(path), "lines": [str(line) for line in lines]}
