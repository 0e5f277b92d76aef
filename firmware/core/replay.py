"""Flight recordings (issue 12 §2): the tagged CBOR encoding of the core's values, and replaying a
recording through a fresh core, offline, to print the transitions and actions the charger took.

What it is for. The shell's recorder (`firmware.recorder`) records every state-changing call into the
pure core (the `Charger`, its local list and reservation book, and the `Supervisor`), with its
arguments (which carry the call's `Instant` or `now`), what it returned, and the session ids handed out
during it. `replay(data)` rebuilds the core from the recording's start, feeds every call again with its
recorded time and compares each call's outputs with the recorded ones: a difference is a `Divergence`,
reported with the call's index. Bytes in, lines out.

The file (RFC 8949 CBOR; one map, `version` 1):

* `format` ("charger-firmware flight recording"), `version`, `written_utc`, `reason` (what made the
  shell write it: "request", or the fault), `t0` (the monotonic time shown as t=0), `dropped` (calls
  that left the ring before the first one kept);
* `objects`: how the core was built at boot, in build order, name -> `{"class", "args", "kwargs"}`
  (e.g. `charger`: the EvseConfigs, debounce, reservations_enabled, auth incl. request_prefix;
  `supervisor`: its settings and boot `now`); the session-id generator appears as `{"$fn": "new_id"}`;
* `start`: where the calls start from: `{"from": "boot"}` (the objects as built), `{"from":
  "checkpoint", "at_call": N, "state": <embedded CBOR>}` (the whole core graph, taken when the ring
  dropped the calls before call N), or `{"from": "lost", "why": ...}` (not replayable);
* `calls`: each an embedded CBOR data item (tag 24) holding `{"i": index, "o": "charger" |
  "charger.local_list" | "charger.book" | "supervisor", "m": method (or "=name" for an attribute
  set), "a": [args], "k": {kwargs}, "r": result, "x": null | [exception type, message], "ids": [session
  ids handed out during the call]}`.

Values are tagged trees: a dataclass is `{"$": "ClassName", field: value...}`, an enum `{"$e":
"EnumName", "v": value}`, a datetime `{"$dt": ISO 8601}` (aware stays aware), a timedelta `{"$td":
[days, s, us]}`, a tuple `{"$t": [...]}`, a frozenset `{"$fs": [...]}`, a set `{"$s": [...]}`, a
dict `{"$m": [[k, v], ...]}` (any keys), a list a CBOR array. In a checkpoint the object graph keeps
its sharing and cycles: each mutable value carries `"$id"` where first seen and is `{"$r": id}`
after; a plain object is `{"$o": "ClassName", "$id": n, "s": {attribute: value}}`, a bound method
`{"$bm": object, "n": name}`. Names are looked up in a registry of the classes defined in
`firmware.core`'s modules; an unknown name is refused (RecordingError), and decoding never calls a
constructor but the `Charger`'s and the `Supervisor`'s (objects are made with `object.__new__` and
their attributes set); only public methods of the recorded objects are called.

What it must never do: read a clock or a file, or do I/O (the shell reads the file: `firmware.recorder.
replay_file`); it is pure like the rest of the core (tests/test_layering.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from types import MethodType
from typing import Final, TypeVar

import cbor2

import firmware.core
from firmware.core.evse import State
from firmware.core.instant import Instant

FORMAT: Final = "charger-firmware flight recording"
VERSION: Final = 1
ID_FUNCTION: Final = "new_id"
BUILDABLE: Final = frozenset({"Charger", "Supervisor"})  # the only constructors a replay calls
UNRECORDED: Final = "Unrecorded"  # the exception type of a call the recorder could not encode
EMBEDDED_CBOR: Final = 24  # RFC 8949 §3.4.5.1

_T = TypeVar("_T")


class RecordingError(ValueError):
    """A recording that cannot be read or replayed (not a recording, another version, an unknown name)."""


class EncodeError(TypeError):
    """A value the recording cannot hold (not a core type)."""


# --- the registry of the core's classes ----------------------------------------------------------

_REGISTRY: dict[str, type] = {}
_NAMES: dict[type, str] = {}


def registry() -> Mapping[str, type]:
    """Every class defined in a module of `firmware.core`, by name (module-qualified when two share one)."""
    if not _REGISTRY:
        found: dict[str, list[type]] = {}
        for info in pkgutil.walk_packages(firmware.core.__path__, "firmware.core."):
            module = importlib.import_module(info.name)
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == info.name:
                    same = found.setdefault(value.__qualname__, [])
                    if value not in same:  # an alias (`_P = SessionPhase`) is the same class
                        same.append(value)
        for name, classes in found.items():
            for cls in classes:
                key = name if len(classes) == 1 else f"{cls.__module__}:{name}"
                _REGISTRY[key], _NAMES[cls] = cls, key
    return _REGISTRY


def _name(cls: type) -> str:
    registry()
    name = _NAMES.get(cls)
    if name is None:
        raise EncodeError(f"{cls.__module__}.{cls.__qualname__} is not a class of firmware.core")
    return name


def _class(name: object) -> type:
    cls = registry().get(name) if isinstance(name, str) else None
    if cls is None:
        raise RecordingError(f"unknown class {name!r}: not a class of firmware.core (a newer firmware's recording?)")
    return cls


# --- encoding ------------------------------------------------------------------------------------


_PLAIN: Final = frozenset({type(None), bool, int, float, str, bytes})
_DATACLASSES: dict[type, tuple[str, tuple[str, ...]]] = {}  # class -> (its name, its fields), once seen


class Encoder:
    """Values -> tagged trees. `graph=True` keeps sharing and cycles (for a checkpoint of the core)."""

    def __init__(self, *, graph: bool = False, functions: Mapping[int, str] | None = None) -> None:
        self.graph = graph
        self.functions = dict(functions or {})  # id(function) -> its name in the file
        self._memo: dict[int, int] = {}
        self._alive: list[object] = []  # keeps every memoised object alive, so id() stays unique

    def encode(self, value: object) -> object:  # noqa: C901, PLR0911, PLR0912 - one case per kind of value
        cls = type(value)
        if cls in _PLAIN:  # the fast paths first: the recorder encodes every call on the core task
            return value
        known = _DATACLASSES.get(cls)
        if known is not None and not self.graph:
            out: dict[str, object] = {"$": known[0]}
            for name in known[1]:
                out[name] = self.encode(getattr(value, name))
            return out
        if isinstance(value, Enum):
            return {"$e": _name(type(value)), "v": value.value}
        if value is None or isinstance(value, bool | int | float | str | bytes):
            return value
        if isinstance(value, datetime):
            return {"$dt": value.isoformat()}
        if isinstance(value, timedelta):
            return {"$td": [value.days, value.seconds, value.microseconds]}
        if isinstance(value, tuple):
            return {"$t": [self.encode(v) for v in value]}
        if isinstance(value, frozenset):
            return {"$fs": [self.encode(v) for v in value]}
        if isinstance(value, MethodType):
            return {"$bm": self.encode(value.__self__), "n": value.__func__.__name__}
        if callable(value) and not isinstance(value, type) and id(value) in self.functions:
            return {"$fn": self.functions[id(value)]}
        if isinstance(value, list) and not self.graph:
            return [self.encode(v) for v in value]
        ref = self._ref(value)
        if isinstance(ref, dict) and "$r" in ref:
            return ref
        tag: dict[str, object] = {} if ref is None else {"$id": ref}
        if isinstance(value, list):
            return {"$l": [self.encode(v) for v in value], **tag}
        if isinstance(value, dict):
            return {"$m": [[self.encode(k), self.encode(v)] for k, v in value.items()], **tag}
        if isinstance(value, set):
            return {"$s": [self.encode(v) for v in value], **tag}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            names = _DATACLASSES[cls] = (_name(cls), tuple(f.name for f in dataclasses.fields(value)))
            return {"$": names[0], **tag, **{name: self.encode(getattr(value, name)) for name in names[1]}}
        if self.graph and not callable(value):
            return {"$o": _name(type(value)), **tag, "s": {k: self.encode(v) for k, v in _attributes(value).items()}}
        raise EncodeError(f"cannot record {type(value).__module__}.{type(value).__qualname__} {value!r:.80}")

    def _ref(self, value: object) -> object:
        """In a graph: `{"$r": n}` for a value seen before, else its new number; None outside a graph."""
        if not self.graph:
            return None
        seen = self._memo.get(id(value))
        if seen is not None:
            return {"$r": seen}
        number = self._memo[id(value)] = len(self._memo)
        self._alive.append(value)
        return number


def _attributes(obj: object) -> dict[str, object]:
    """The state of a plain object: its slots (over the MRO) and its __dict__."""
    out: dict[str, object] = {}
    for klass in type(obj).__mro__:
        slots = getattr(klass, "__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            name = f"_{klass.__name__.lstrip('_')}{slot}" if slot.startswith("__") else slot
            if hasattr(obj, name):
                out[name] = getattr(obj, name)
    out.update(getattr(obj, "__dict__", {}))
    return out


def encode(value: object) -> object:
    """One value as a tagged tree (no sharing)."""
    return Encoder().encode(value)


def dumps(value: object) -> bytes:
    """One value as CBOR of its tagged tree."""
    return cbor2.dumps(encode(value))


# --- decoding ------------------------------------------------------------------------------------


class Decoder:
    """Tagged trees -> values. `functions` gives the functions a tree names (`{"$fn": name}`)."""

    def __init__(self, functions: Mapping[str, Callable[[], str]] | None = None) -> None:
        self.functions = dict(functions or {})
        self._memo: dict[object, object] = {}

    def decode(self, tree: object) -> object:  # noqa: C901, PLR0911 - one case per tag
        if isinstance(tree, list):
            return [self.decode(t) for t in tree]
        if not isinstance(tree, dict):
            return tree
        if "$r" in tree:
            if tree["$r"] not in self._memo:
                raise RecordingError(f"reference to an unknown object {tree['$r']!r}")
            return self._memo[tree["$r"]]
        if "$e" in tree:
            enum = _class(tree["$e"])
            if not issubclass(enum, Enum):
                raise RecordingError(f"{tree['$e']} is not an enum")
            return enum(tree.get("v"))
        if "$dt" in tree:
            return datetime.fromisoformat(_str(tree["$dt"]))
        if "$td" in tree:
            days, seconds, micro = _seq(tree["$td"])
            return timedelta(days=days, seconds=seconds, microseconds=micro)  # type: ignore[arg-type]
        if "$t" in tree:
            return tuple(self.decode(t) for t in _seq(tree["$t"]))
        if "$fs" in tree:
            return frozenset(self._hashable(t) for t in _seq(tree["$fs"]))
        if "$fn" in tree:
            if tree["$fn"] not in self.functions:
                raise RecordingError(f"unknown function {tree['$fn']!r}")
            return self.functions[_str(tree["$fn"])]
        if "$bm" in tree:
            name = _str(tree.get("n"))
            if name.startswith("__"):
                raise RecordingError(f"refused method name {name!r}")
            return getattr(self.decode(tree["$bm"]), name)
        return self._container(tree)

    def _container(self, tree: dict[object, object]) -> object:
        if "$l" in tree:
            items: list[object] = self._remember(tree, [])
            items.extend(self.decode(t) for t in _seq(tree["$l"]))
            return items
        if "$m" in tree:
            mapping: dict[object, object] = self._remember(tree, {})
            for pair in _seq(tree["$m"]):
                key, value = _seq(pair)
                mapping[self._hashable(key)] = self.decode(value)
            return mapping
        if "$s" in tree:
            members: set[object] = self._remember(tree, set())
            members.update(self._hashable(t) for t in _seq(tree["$s"]))
            return members
        if "$" in tree:
            cls = _class(tree["$"])
            if not dataclasses.is_dataclass(cls):
                raise RecordingError(f"{tree['$']} is not a dataclass")
            obj = self._remember(tree, object.__new__(cls))
            for f in dataclasses.fields(cls):
                if f.name in tree:
                    object.__setattr__(obj, f.name, self.decode(tree[f.name]))
            return obj
        if "$o" in tree:
            obj = self._remember(tree, object.__new__(_class(tree["$o"])))
            state = tree.get("s")
            if not isinstance(state, dict):
                raise RecordingError(f"object {tree['$o']} without its state")
            for attr, value in state.items():
                object.__setattr__(obj, _str(attr), self.decode(value))
            return obj
        raise RecordingError(f"unknown value {str(tree)[:80]}")

    def _remember(self, tree: dict[object, object], value: _T) -> _T:
        if "$id" in tree:
            self._memo[tree["$id"]] = value
        return value

    def _hashable(self, tree: object) -> object:
        value = self.decode(tree)
        if isinstance(value, list):  # a tuple recorded as a list (never in our own files)
            return tuple(value)
        return value


def _seq(value: object) -> list[object]:
    if not isinstance(value, list):
        raise RecordingError(f"expected an array, got {str(value)[:80]}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise RecordingError(f"expected a string, got {str(value)[:80]}")
    return value


def decode(tree: object, functions: Mapping[str, Callable[[], str]] | None = None) -> object:
    return Decoder(functions).decode(tree)


def loads(data: bytes) -> object:
    return decode(cbor2.loads(data))


def embedded(tree: object) -> cbor2.CBORTag:
    """A tree as an embedded CBOR data item (tag 24): encoded once, when it is recorded."""
    return cbor2.CBORTag(EMBEDDED_CBOR, cbor2.dumps(tree))


def _unembed(item: object) -> object:
    if isinstance(item, cbor2.CBORTag) and item.tag == EMBEDDED_CBOR and isinstance(item.value, bytes):
        return cbor2.loads(item.value)
    raise RecordingError("a call is not an embedded CBOR item (tag 24)")


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
    calls = [_call(_unembed(item)) for item in _seq(top.get("calls"))]
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
        return Call(index=int(tree["i"]), target=_str(tree["o"]), method=_str(tree["m"]), args=_seq(tree["a"]),
                    kwargs=dict(tree["k"]), result=tree.get("r"),
                    raised=(str(raised[0]), str(raised[1])) if isinstance(raised, list) else None,
                    ids=[_str(i) for i in _seq(tree.get("ids", []))])
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
            cls = _class(spec.get("class"))
            if cls.__name__ not in BUILDABLE:
                raise RecordingError(f"object {name}: a {cls.__name__} is not built by a replay")
            args = [decoder.decode(a) for a in _seq(spec.get("args"))]
            kwargs = spec.get("kwargs")
            if not isinstance(kwargs, dict):
                raise RecordingError(f"object {name} without its kwargs")
            objects[name] = cls(*args, **{_str(k): decoder.decode(v) for k, v in kwargs.items()})
        return objects
    if source == "checkpoint":
        state = start.get("state")
        tree = _unembed(state)
        objects_tree = Decoder({ID_FUNCTION: ids}).decode(tree)
        if not isinstance(objects_tree, dict):
            raise RecordingError("a checkpoint that is not a map of objects")
        return {_str(k): v for k, v in objects_tree.items()}
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
