"""The recording proxies of the flight recorder (issue 12 §2): which calls into the pure core change its
state, and the proxy that records those through the `Recorder` (`firmware.recorder`).

What it is for. The controller's `Charger` and `Supervisor` are built by `Recorder.construct`, which
returns one of these proxies. The proxy forwards everything; the calls that can change the core's
state (`charger.handle/tick/start/present_token/...`, every op's charger call, the `online` setter,
`set_fallback`, `restore_session`, `charger.local_list.apply/restore`, `charger.book.restore`,
`supervisor.handle/tick`) go through `Recorder.call`, which records them. Attribute reads (`evses`,
`book.entries`, `pp`) and read-only methods (`status`, `led`, `next_deadline`, `book.specific`, ...)
pass through unrecorded. A public method `SPECS` does not know is recorded (the safe side);
tests/shell/test_recorder.py checks that `SPECS` classifies every public method of the core objects.
A proxy binds each method once (kept in its own `__dict__`); values are always read live.

What it must never do: change what the core sees (arguments, results and exceptions pass through
unchanged; a generator argument is read once, here, and handed on as a tuple) or decide anything.
Not recorded: the wear counters the store restores into `charger.evses[cid].counters` (attribute
writes below the charger; they decide nothing).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MethodType
from typing import TYPE_CHECKING, Final, TypeGuard


if TYPE_CHECKING:
    from firmware.recorder import Recorder


@dataclass(frozen=True, slots=True)
class Spec:
    """Which methods of a recorded object change its state (recorded) and which only read it."""

    recorded: frozenset[str]
    reads: frozenset[str] = frozenset()
    children: Mapping[str, Spec] = field(default_factory=dict)


LOCAL_LIST: Final = Spec(frozenset({"apply", "restore"}), frozenset({"lookup", "parent", "snapshot"}))
BOOK: Final = Spec(
    frozenset({"restore", "reserve", "cancel", "use", "set_evse", "set_evses", "tick"}),
    frozenset({"get", "reserved", "specific", "next_deadline", "walk_in_allowed", "exists", "match", "needs_parent",
               "snapshot"}))
#: Unknown public methods are recorded (the safe side); tests/shell/test_recorder.py checks these cover all.
SPECS: Final[Mapping[str, Spec]] = {
    "charger": Spec(
        frozenset({"start", "handle", "tick", "present_token", "backend_auth_answer", "authorize_anywhere",
                   "stop_session", "set_enabled", "set_max_current", "set_fallback", "switch_phases",
                   "unlock_connector", "restore_session", "reserve_now", "cancel_reservation", "exists_reservation"}),
        frozenset({"status", "led", "pilot_settling", "needs_fast_sampling", "next_deadline", "limit_a",
                   "commanded_limit_a"}),
        {"local_list": LOCAL_LIST, "book": BOOK}),
    "supervisor": Spec(frozenset({"handle", "tick"}), frozenset({"next_deadline"})),
}


class Proxy:
    """Forwards everything to the core object; records the calls its `Spec` does not mark read-only.

    The first read of a method binds it once: the recording wrapper (or the read-only bound method) is
    kept in the proxy's own `__dict__`, so later reads never reach `__getattr__`. Only methods of the
    target's class are kept; values (properties such as `online` or `evses`, plain attributes) are read
    from the target every time, and a child proxy (`book`, `local_list`) is rebuilt when the target's
    attribute is another object."""

    __slots__ = ("__dict__", "_fr_children", "_fr_name", "_fr_recorder", "_fr_spec", "_fr_target")
    _fr_recorder: Recorder
    _fr_target: object
    _fr_name: str
    _fr_spec: Spec
    _fr_children: dict[str, Proxy]

    def __init__(self, recorder: Recorder, target: object, name: str, spec: Spec) -> None:
        object.__setattr__(self, "_fr_recorder", recorder)
        object.__setattr__(self, "_fr_target", target)
        object.__setattr__(self, "_fr_name", name)
        object.__setattr__(self, "_fr_spec", spec)
        object.__setattr__(self, "_fr_children", {})

    def __getattr__(self, name: str) -> object:
        target = self._fr_target
        value = getattr(target, name)
        spec = self._fr_spec
        child = spec.children.get(name)
        if child is not None:
            known = self._fr_children.get(name)
            if known is None or known._fr_target is not value:
                known = self._fr_children[name] = Proxy(self._fr_recorder, value, f"{self._fr_name}.{name}", child)
            return known
        bound = type(value) is MethodType and value.__self__ is target  # a method of its class: kept
        if name.startswith("_") or name in spec.reads or not callable(value):
            if bound:
                self.__dict__[name] = value
            return value
        recorder, owner = self._fr_recorder, self._fr_name

        def recorded(*args: object, **kwargs: object) -> object:
            if any(map(iterator, args)):  # a generator: it is read once, here
                args = tuple(tuple(a) if iterator(a) else a for a in args)
            return recorder.call(owner, name, value, args, kwargs)
        if bound:
            self.__dict__[name] = recorded
        return recorded

    def __setattr__(self, name: str, value: object) -> None:
        target = self._fr_target
        self.__dict__.pop(name, None)  # a method shadowed on the target is no longer the one kept
        self._fr_recorder.call(self._fr_name, f"={name}", lambda v: setattr(target, name, v), (value,), {})

    def __len__(self) -> int:
        return len(self._fr_target)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f"<recorded {self._fr_target!r}>"


def iterator(value: object) -> TypeGuard[Iterator[object]]:
    """A generator or other iterator: an argument that can be read only once."""
    return hasattr(value, "__next__")
