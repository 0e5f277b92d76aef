"""Replaying a flight recording (issue 12 §2) through a fresh core, offline, to print the transitions
and actions the charger took.

What it is for. The shell's recorder (`firmware.recorder`) records every state-changing call into the
pure core (the `Charger`, its local list and reservation book, and the `Supervisor`), with its
arguments (which carry the call's `Instant` or `now`), what it returned, and the session ids handed out
during it. `read(data)` parses the file (its layout and the tagged CBOR encoding of the values are in
`firmware.core.recording`). `replay(data)` rebuilds the core from the recording's start (from boot:
the `Charger` and the `Supervisor` built with their recorded settings, the only constructors a replay
calls; from a checkpoint: the decoded object graph), feeds every call again with its recorded time and
compares each call's outputs with the recorded ones: a difference is a `Divergence`, reported with the
call's index. Only public methods and attributes of the recorded objects are called or set. Bytes in,
lines out.

What it must never do: read a clock or a file, or do I/O (the shell reads the file: `firmware.recorder.
replay_file`); it is pure like the rest of the core (tests/test_layering.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Final

import cbor2

from firmware.core.evse import State
from firmware.core.instant import Instant
from firmware.core.recording import (
    EMBEDDED_CBOR,
    FORMAT,
    ID_FUNCTION,
    UNRECORDED,
    VERSION,
    Decoder,
    EncodeError,
    Encoder,
    RecordingError,
    array,
    core_class,
    decode,
    dumps,
    embedded,
    encode,
    loads,
    registry,
    text,
    unembed,
)

__all__ = [  # the encoding is re-exported: `firmware.core.replay` reads and writes recordings as before
    "BUILDABLE", "EMBEDDED_CBOR", "FORMAT", "ID_FUNCTION", "UNRECORDED", "VERSION", "Call", "Decoder", "Divergence",
    "EncodeError", "Encoder", "Recording", "RecordingError", "Replay", "decode", "describe", "dumps", "embedded",
    "encode", "loads", "outputs", "read", "registry", "replay",
]

BUILDABLE: Final = frozenset({"Charger", "Supervisor"})  # the only constructors a replay calls


# --- the recording -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One recorded call (trees as recorded)."""

    index: int
    target: str
    method: str
    args: list[object]
    kwargs: dict[str, object]
    result: object
    raised: tuple[str, str] | None
    ids: list[str]

    @property
    def name(self) -> str:
        return f"{self.target}.{self.method.lstrip('=')}" + (" =" if self.method.startswith("=") else "()")


@dataclass(frozen=True, slots=True, kw_only=True)
class Recording:
    reason: str
    written_utc: str
    t0: float | None
    dropped: int
    objects: dict[str, dict[str, object]]
    start: dict[str, object]
    calls: list[Call]

    @property
    def from_boot(self) -> bool:
        return self.start.get("from") == "boot"


def read(data: bytes) -> Recording:
    """Parse a recording (RecordingError: not one, another version, damaged)."""
    try:
        top = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, EOFError) as exc:
        raise RecordingError(f"not a CBOR flight recording: {exc}") from exc
    if not isinstance(top, dict) or top.get("format") != FORMAT:
        raise RecordingError(f"not a flight recording (no format {FORMAT!r})")
    if top.get("version") != VERSION:
        raise RecordingError(f"flight recording version {top.get('version')!r}; this firmware reads version {VERSION}")
    calls = [_call(unembed(item)) for item in array(top.get("calls"))]
    objects, start = top.get("objects"), top.get("start")
    if not isinstance(objects, dict) or not isinstance(start, dict):
        raise RecordingError("a flight recording without its objects or start")
    t0 = top.get("t0")
    return Recording(reason=str(top.get("reason")), written_utc=str(top.get("written_utc")),
                     t0=float(t0) if isinstance(t0, int | float) else None, dropped=int(top.get("dropped") or 0),
                     objects=objects, start=start, calls=calls)


def _call(tree: object) -> Call:
    if not isinstance(tree, dict):
        raise RecordingError("a call is not a map")
    try:
        raised = tree.get("x")
        return Call(index=int(tree["i"]), target=text(tree["o"]), method=text(tree["m"]), args=array(tree["a"]),
                    kwargs=dict(tree["k"]), result=tree.get("r"),
                    raised=(str(raised[0]), str(raised[1])) if isinstance(raised, list) else None,
                    ids=[text(i) for i in array(tree.get("ids", []))])
    except (KeyError, TypeError) as exc:
        raise RecordingError(f"a damaged call: {exc}") from exc


# --- replaying -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Divergence:
    """A replayed call whose outputs (or exception, or session ids) differ from the recorded ones."""

    index: int
    call: str
    recorded: str
    replayed: str

    def __str__(self) -> str:
        return f"DIVERGENCE at call #{self.index} {self.call}: recorded {self.recorded}, replayed {self.replayed}"


@dataclass(slots=True, kw_only=True)
class Replay:
    """What a replay printed and found. `lines` interleaves `transitions`, actions and divergences, in order."""

    recording: Recording
    objects: dict[str, object]
    lines: list[str] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    calls: int = 0

    @property
    def identical(self) -> bool:
        return not self.divergences


class _Ids:
    """The session-id generator of a replay: hands out the ids recorded for the call being replayed."""

    def __init__(self) -> None:
        self.queue: list[str] = []
        self.missing = 0

    def __call__(self) -> str:
        if self.queue:
            return self.queue.pop(0)
        self.missing += 1
        return f"replay-extra-{self.missing}"


def replay(data: bytes) -> Replay:
    """Build the core as the recording starts, feed every call with its recorded time, compare outputs.
    RecordingError when the file cannot be replayed at all (its start was lost, an unknown class)."""
    recording = read(data)
    ids = _Ids()
    objects = _start(recording, ids)
    result = Replay(recording=recording, objects=objects)
    charger = objects.get("charger")
    states = _states(charger)
    t0 = recording.t0
    now: float | None = None
    for call in recording.calls:
        decoder = Decoder({ID_FUNCTION: ids})
        args = [decoder.decode(a) for a in call.args]
        kwargs = {k: decoder.decode(v) for k, v in call.kwargs.items()}
        now = _time(call, args, kwargs, now)
        if t0 is None:
            t0 = now
        stamp = f"t={(now or 0.0) - (t0 or 0.0):.3f}"
        ids.queue, ids.missing = list(call.ids), 0
        if call.raised is not None and call.raised[0] == UNRECORDED:
            divergence = Divergence(index=call.index, call=call.name, recorded="a call that could not be recorded",
                                    replayed="nothing (skipped)")
            result.divergences.append(divergence)
            result.lines.append(str(divergence))
            continue
        got, raised = _invoke(objects, call, args, kwargs)
        result.calls += 1
        _compare(result, call, got, raised, ids)
        _report(result, call, got, stamp)
        new_states = _states(charger)
        for cid, state in new_states.items():
            if states.get(cid) is not state:
                line = f"{stamp} c{cid} {_state_name(states.get(cid))} -> {state.name}"
                result.transitions.append(line)
                result.lines.append(line)
        states = new_states
    return result


def _start(recording: Recording, ids: _Ids) -> dict[str, object]:
    start = recording.start
    source = start.get("from")
    if source == "boot":
        objects: dict[str, object] = {}
        for name, spec in recording.objects.items():
            decoder = Decoder({ID_FUNCTION: ids})
            cls = core_class(spec.get("class"))
            if cls.__name__ not in BUILDABLE:
                raise RecordingError(f"object {name}: a {cls.__name__} is not built by a replay")
            args = [decoder.decode(a) for a in array(spec.get("args"))]
            kwargs = spec.get("kwargs")
            if not isinstance(kwargs, dict):
                raise RecordingError(f"object {name} without its kwargs")
            objects[name] = cls(*args, **{text(k): decoder.decode(v) for k, v in kwargs.items()})
        return objects
    if source == "checkpoint":
        state = start.get("state")
        tree = unembed(state)
        objects_tree = Decoder({ID_FUNCTION: ids}).decode(tree)
        if not isinstance(objects_tree, dict):
            raise RecordingError("a checkpoint that is not a map of objects")
        return {text(k): v for k, v in objects_tree.items()}
    raise RecordingError(f"this recording cannot be replayed: its start was not recorded ({start.get('why')})")


def _time(call: Call, args: list[object], kwargs: dict[str, object], last: float | None) -> float | None:
    """The call's monotonic time: its Instant's, or the supervisor's `now` (its last argument)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Instant):
            return value.mono
    if call.target == "supervisor" and args and isinstance(args[-1], int | float) and not isinstance(args[-1], bool):
        return float(args[-1])
    return last


def _invoke(objects: Mapping[str, object], call: Call, args: list[object],
            kwargs: dict[str, object]) -> tuple[object, tuple[str, str] | None]:
    root, *path = call.target.split(".")
    if root not in objects:
        raise RecordingError(f"call #{call.index} to an unknown object {root!r}")
    target = objects[root]
    for part in path:
        target = getattr(target, _public(part))
    name = _public(call.method.removeprefix("="))
    try:
        if call.method.startswith("="):
            setattr(target, name, args[0])
            return None, None
        return getattr(target, name)(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - the recorded call may have raised too: compared, not fatal
        return None, (type(exc).__name__, str(exc))


def _public(name: str) -> str:
    if not name.isidentifier() or name.startswith("_"):
        raise RecordingError(f"refused name {name!r}: only public methods and attributes are replayed")
    return name


def _compare(result: Replay, call: Call, got: object, raised: tuple[str, str] | None, ids: _Ids) -> None:
    def diverged(recorded: str, replayed: str) -> None:
        divergence = Divergence(index=call.index, call=call.name, recorded=recorded, replayed=replayed)
        result.divergences.append(divergence)
        result.lines.append(str(divergence))

    if raised != call.raised:
        diverged(f"exception {call.raised}", f"exception {raised}")
        return
    try:
        tree = encode(got)
    except EncodeError as exc:
        diverged(_short(call.result), f"an unrecordable value ({exc})")
        return
    if tree != call.result:
        diverged(describe(decode(call.result, {ID_FUNCTION: ids})), describe(got))
    if ids.queue or ids.missing:
        diverged(f"session ids {call.ids}", f"{ids.missing} more, {len(ids.queue)} unused")


def _short(tree: object) -> str:
    return str(tree)[:200]


def _report(result: Replay, call: Call, got: object, stamp: str) -> None:
    items = list(outputs(got))
    if not items:
        return
    kind = "facts" if call.target == "supervisor" else "actions"
    line = f"{stamp} {kind}: " + ", ".join(describe(item) for item in items)
    result.actions.append(line)
    result.lines.append(line)


def outputs(value: object) -> Iterable[object]:
    """The actions in a call's result: the items of its lists (a result may be a tuple holding one)."""
    if isinstance(value, list):
        yield from value
    elif isinstance(value, tuple):
        for part in value:
            if isinstance(part, list):
                yield from part


def _states(charger: object) -> dict[int, State]:
    evses = getattr(charger, "evses", None)
    if not isinstance(evses, dict):
        return {}
    return {cid: evse.state for cid, evse in evses.items()}


def _state_name(state: State | None) -> str:
    return "boot" if state is None else state.name


def describe(value: object) -> str:
    """A short, stable text of a core value: `OpenRelay(cid=1)` (fields at their default left out),
    `Fault.RCD_TRIPPED`."""
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={describe(getattr(value, f.name))}" for f in dataclasses.fields(value)
                          if f.default is dataclasses.MISSING or getattr(value, f.name) != f.default)
        return f"{type(value).__name__}({inner})"
    if isinstance(value, list | tuple):
        inner = ", ".join(describe(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)
