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


def _strings(value: object) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list | tuple) else []


def replay_file(path: Path) -> dict[str, object]:
    """The replay of the recording at `path` as a JSON-able document: `{"file", "reason", "written_utc",
    "start", "calls", "identical", "lines", "transitions", "actions", "divergences"}`; `lines` interleaves
    the transitions, actions and divergences in order (`firmware.core.replay.Replay`)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReplayUnavailable(f"replay: {path}: no such file") from None
    except OSError as exc:
        raise ReplayUnavailable(f"replay: {path}: {exc.strerror or exc}") from exc
    try:
        module = importlib.import_module(REPLAY_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name is not None and REPLAY_MODULE.startswith(exc.name):
            raise ReplayUnavailable(f"replay: this installation has no {REPLAY_MODULE} (the flight recorder's "
                                    "replay); install a charger-firmware that has it") from exc
        raise
    replay: object = getattr(module, "replay", None)
    if not callable(replay):
        raise ReplayUnavailable(f"replay: {REPLAY_MODULE} has no replay(data)")
    try:
        result: object = replay(data)
    except ValueError as exc:  # RecordingError: not a recording, damaged, or its start was lost
        raise ReplayUnavailable(f"replay: {path}: {exc}") from exc
    recording: object = getattr(result, "recording", None)
    from_boot = getattr(recording, "from_boot", None)
    return {
        "file": str(path),
        "reason": getattr(recording, "reason", None),
        "written_utc": str(getattr(recording, "written_utc", "") or "") or None,
        "start": "boot" if from_boot else f"checkpoint ({getattr(recording, 'dropped', '?')} earlier calls dropped)",
        "calls": getattr(result, "calls", None),
        "identical": bool(getattr(result, "identical", False)),
        "lines": _strings(getattr(result, "lines", None)),
        "transitions": _strings(getattr(result, "transitions", None)),
        "actions": _strings(getattr(result, "actions", None)),
        "divergences": _strings(getattr(result, "divergences", None)),
    }
