"""The format of a flight recording (issue 12 §2): the file's layout, and the tagged CBOR encoding of
the pure core's values that the shell's recorder (`firmware.recorder`) writes and the replay
(`firmware.core.replay`) reads.

What it is for. Turning the core's values -- the arguments and results of the calls into the core,
and, for a checkpoint, the whole core object graph -- into tagged trees that CBOR can hold, and back.

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
constructor (objects are made with `object.__new__` and their attributes set); a bound method named
`__...` is refused.

What it must never do: read a clock or a file, or do I/O (the shell writes and reads the files); it
is pure like the rest of the core (tests/test_layering.py).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import Enum
from types import MethodType
from typing import Final, TypeVar

import cbor2

import firmware.core

FORMAT: Final = "charger-firmware flight recording"
VERSION: Final = 1
ID_FUNCTION: Final = "new_id"
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


def core_class(name: object) -> type:
    """The registered class of that name (RecordingError: not a class of firmware.core)."""
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
            enum = core_class(tree["$e"])
            if not issubclass(enum, Enum):
                raise RecordingError(f"{tree['$e']} is not an enum")
            return enum(tree.get("v"))
        if "$dt" in tree:
            return datetime.fromisoformat(text(tree["$dt"]))
        if "$td" in tree:
            days, seconds, micro = array(tree["$td"])
            return timedelta(days=days, seconds=seconds, microseconds=micro)  # type: ignore[arg-type]
        if "$t" in tree:
            return tuple(self.decode(t) for t in array(tree["$t"]))
        if "$fs" in tree:
            return frozenset(self._hashable(t) for t in array(tree["$fs"]))
        if "$fn" in tree:
            if tree["$fn"] not in self.functions:
                raise RecordingError(f"unknown function {tree['$fn']!r}")
            return self.functions[text(tree["$fn"])]
        if "$bm" in tree:
            name = text(tree.get("n"))
            if name.startswith("__"):
                raise RecordingError(f"refused method name {name!r}")
            return getattr(self.decode(tree["$bm"]), name)
        return self._container(tree)

    def _container(self, tree: dict[object, object]) -> object:
        if "$l" in tree:
            items: list[object] = self._remember(tree, [])
            items.extend(self.decode(t) for t in array(tree["$l"]))
            return items
        if "$m" in tree:
            mapping: dict[object, object] = self._remember(tree, {})
            for pair in array(tree["$m"]):
                key, value = array(pair)
                mapping[self._hashable(key)] = self.decode(value)
            return mapping
        if "$s" in tree:
            members: set[object] = self._remember(tree, set())
            members.update(self._hashable(t) for t in array(tree["$s"]))
            return members
        if "$" in tree:
            cls = core_class(tree["$"])
            if not dataclasses.is_dataclass(cls):
                raise RecordingError(f"{tree['$']} is not a dataclass")
            obj = self._remember(tree, object.__new__(cls))
            for f in dataclasses.fields(cls):
                if f.name in tree:
                    object.__setattr__(obj, f.name, self.decode(tree[f.name]))
            return obj
        if "$o" in tree:
            obj = self._remember(tree, object.__new__(core_class(tree["$o"])))
            state = tree.get("s")
            if not isinstance(state, dict):
                raise RecordingError(f"object {tree['$o']} without its state")
            for attr, value in state.items():
                object.__setattr__(obj, text(attr), self.decode(value))
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


def array(value: object) -> list[object]:
    """A tree's CBOR array (RecordingError otherwise)."""
    if not isinstance(value, list):
        raise RecordingError(f"expected an array, got {str(value)[:80]}")
    return value


def text(value: object) -> str:
    """A tree's CBOR text string (RecordingError otherwise)."""
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


def unembed(item: object) -> object:
    """The tree inside an embedded CBOR data item (tag 24; RecordingError otherwise)."""
    if isinstance(item, cbor2.CBORTag) and item.tag == EMBEDDED_CBOR and isinstance(item.value, bytes):
        return cbor2.loads(item.value)
    raise RecordingError("a call is not an embedded CBOR item (tag 24)")

