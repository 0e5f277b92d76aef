"""The flight recorder (issue 12 §2): every state-changing call into the pure core, in a bounded ring,
written to `state_dir/flight-<utc>.cbor` on every fault and on request, to be replayed on a laptop
(`firmware.core.replay`; `python -m firmware.recorder FILE`).

What it is for. The controller builds its `Charger` and `Supervisor` through `Recorder.construct`,
which records how they were built (the EvseConfigs and every setting: the config snapshot a fresh
core needs) and returns a recording proxy (`firmware.recorder_proxy`: which calls are recorded and
which only read). Each state-changing call is recorded with its arguments (which carry the call's
`Instant`, or the supervisor's `now`), its result or exception, and the session ids the generator
(`Recorder.ids`, an input: uuid4) handed out during the call. Each call is encoded as it is recorded
(tagged CBOR, `firmware.core.recording`, about 9 us) into the bytes a flight file holds: the ring is
bytes, which the garbage collector never walks. (It used to keep references to the core's values and
encode them only for a dump; a full collection then walked a ring of 20 000 calls' object graphs,
stalling the loop, safety lane included, for up to 33 ms under load.)

The ring keeps the last `max_calls` calls (20 000 by default; about a minute and a half of a busy
EVSE, whose CP and PP are sampled 100 times a second each) in two halves. When a half is full, a
checkpoint of the whole core (its object graph, encoded) is taken and a new half begins; when the
oldest half is dropped, the next one starts from its checkpoint. So every dump is replayable from its
first kept call: from boot while nothing was dropped, from a checkpoint after. A checkpoint (the
graph walk into a detached tree) costs a few milliseconds of the core task once per half ring; its
CBOR bytes are made when a dump is written.

Dumps. On a fault -- a recorded call whose result holds a `FaultRaised` (supervision raised RCD,
over-temperature, welded, meter lost ...), or that took an EVSE into FAULTED (the charger's own faults:
pilot, diode, output failed) -- the ring is copied once the step that raised it has run its calls
(`loop.call_soon`) and written FAULT_DUMP_DELAY_S later, after what the fault itself sends; `dump()`
writes it on request. The file's bytes are joined on the event loop, `ENCODE_CHUNK` calls per turn
with the loop's other work in between (one call into a C encoder or a thread doing it all would hold
the GIL for milliseconds, and the safety lane must not wait for a dump); only the file is written in a
thread.
Files are written atomically (a temporary file, fsync, rename); only the last `keep_files` (10)
flight files are kept.

What it must never do: take the charger down (a value it cannot record is logged and the call still
runs; a dump that fails is logged), write on the safety path (a call is kept in memory, as bytes; the
file is written off the event loop), or decide anything.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, NamedTuple, ParamSpec, TypeVar, cast

import cbor2

from firmware.aio import utc_now
from firmware.core.events import FaultRaised
from firmware.core.evse import State
from firmware.core.instant import Instant
from firmware.core.recording import FORMAT, ID_FUNCTION, UNRECORDED, VERSION, Encoder, RecordingError, embedded
from firmware.core.replay import Replay, outputs, replay
from firmware.recorder_proxy import BOOK, LOCAL_LIST, SPECS, Proxy, Spec, iterator

__all__ = ["BOOK", "KEEP_FILES", "LOCAL_LIST", "MAX_CALLS", "SPECS", "Dump", "Recorder", "Spec", "main", "replay_file"]

log = logging.getLogger(__name__)

#: The calls the ring keeps (at least half of them are always in a dump).
MAX_CALLS: Final = 20_000
#: Flight files kept in state_dir.
KEEP_FILES: Final = 10
#: Calls joined per turn of the event loop while a dump's bytes are made (about 1 ms).
ENCODE_CHUNK: Final = 1000
#: A fault's dump starts encoding this long after the fault, so that what the fault itself sends (the
#: state document, its SessionEvents) is not interleaved with it; the ring is copied at the fault.
FAULT_DUMP_DELAY_S: Final = 0.1

_P = ParamSpec("_P")
_T = TypeVar("_T")
#: A call: (i, target, method, args, kwargs, result, (exception type, message) | None, ids).
_Call = tuple[int, str, str, tuple[object, ...], Mapping[str, object], object, "tuple[str, str] | None",
              tuple[str, ...]]
_ARRAY_OPEN: Final = b"\x9f"  # an array of indefinite length
_BREAK: Final = b"\xff"  # its end


class Dump(NamedTuple):
    """A written flight file and the number of calls (inputs to the core) it holds: `(path, inputs)`."""

    path: Path
    inputs: int


@dataclass(slots=True, kw_only=True)
class _Segment:
    start: dict[str, object]  # {"from": "boot"} | {"from": "checkpoint", ...} | {"from": "lost", ...}
    first: int  # the index of its first call
    calls: list[bytes] = field(default_factory=list)  # each an embedded CBOR item, ready to write


class Recorder:
    """The flight recorder of one controller (see the module docstring)."""

    def __init__(self, state_dir: Path | None, *, max_calls: int = MAX_CALLS, keep_files: int = KEEP_FILES,
                 utc: Callable[[], datetime] = utc_now) -> None:
        if max_calls < 2:
            raise ValueError(f"max_calls must be at least 2, not {max_calls}")
        if keep_files < 1:
            raise ValueError(f"keep_files must be at least 1, not {keep_files}")
        self.state_dir = state_dir
        self.keep_files = keep_files
        self.segment_calls = max_calls // 2
        self.utc = utc
        self.total = 0  # calls recorded since boot
        self.written: list[Dump] = []  # the files written, oldest first
        self.objects: dict[str, object] = {}  # the real core objects, by name
        self._built: dict[str, object] = {}  # how each was built (trees)
        self._functions: dict[int, str] = {}
        self._id_functions: list[Callable[[], str]] = []  # kept alive: their id() names them
        self._ids: list[str] = []  # handed out during the call being recorded
        self._segments: deque[_Segment] = deque([_Segment(start={"from": "boot"}, first=0)], maxlen=2)
        self._t0: float | None = None
        self._faulted: set[int] = set()
        self._fault_reasons: list[str] = []
        self._dumping: set[asyncio.Task[None]] = set()
        self._last_name = ("", 0)  # (stamp, n) of the last file named
        self._broken = False
        self._evses: tuple[tuple[int, object], ...] | None = None  # the charger's, by cid

    # --- building the core --------------------------------------------------------------------------

    def ids(self, make: Callable[[], str]) -> Callable[[], str]:
        """The session-id generator for the charger: `make`'s ids, each recorded with its call."""
        def new_id() -> str:
            value = make()
            self._ids.append(value)
            return value
        self._id_functions.append(new_id)
        self._functions[id(new_id)] = ID_FUNCTION
        return new_id

    def construct(self, name: str, cls: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Build a core object (`name`: "charger" or "supervisor"), record how, return its recording proxy."""
        spec = SPECS.get(name)
        if spec is None or not isinstance(cls, type):
            raise ValueError(f"the recorder builds {sorted(SPECS)} from a class, not {name!r}")
        args = tuple(list(a) if iterator(a) else a for a in args)  # type: ignore[assignment] # read once: here
        obj = cls(*args, **kwargs)
        encoder = Encoder(functions=self._functions)
        try:
            self._built[name] = {"class": cls.__name__, "args": [encoder.encode(a) for a in args],
                                 "kwargs": {k: encoder.encode(v) for k, v in kwargs.items()}}
        except TypeError:
            log.exception("flight recorder: how the %s was built cannot be recorded; dumps start from a checkpoint",
                          name)
            self._segments[0].start = {"from": "lost", "why": f"the {name}'s settings could not be recorded"}
        self.objects[name] = obj
        return cast(_T, Proxy(self, obj, name, spec))

    # --- recording ------------------------------------------------------------------------------------

    @property
    def calls(self) -> int:
        """The calls in the ring now (what a dump would hold)."""
        return sum(len(s.calls) for s in self._segments)

    def call(self, target: str, method: str, fn: Callable[..., object], args: tuple[object, ...],
             kwargs: dict[str, object]) -> object:
        """Run one call into the core and record it (its result, or the exception it raised)."""
        if self._ids:
            self._ids.clear()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            self._record(target, method, args, kwargs, None, exc)
            raise
        self._record(target, method, args, kwargs, result, None)
        return result

    def _record(self, target: str, method: str, args: tuple[object, ...], kwargs: dict[str, object],
                result: object, raised: BaseException | None) -> None:
        x = None if raised is None else (type(raised).__name__, str(raised))
        ids = tuple(self._ids) if self._ids else ()
        item = cbor2.dumps(self._encode((self.total, target, method, args, kwargs, result, x, ids), now=True))
        if self._t0 is None:
            self._t0 = _time_of(target, args, kwargs)
        self.total += 1
        segment = self._segments[-1]
        segment.calls.append(item)
        if len(segment.calls) >= self.segment_calls:
            self._segments.append(_Segment(start=self._checkpoint(), first=self.total))
        if result or target != "supervisor":
            self._check_fault(target, result)

    def _encode(self, call: _Call, *, now: bool = False) -> cbor2.CBORTag:
        """One call as the file holds it (an embedded CBOR item); UNRECORDED when it cannot be encoded."""
        i, target, method, args, kwargs, result, x, ids = call
        try:
            encoder = Encoder(functions=self._functions)
            return embedded({"i": i, "o": target, "m": method, "a": [encoder.encode(a) for a in args],
                             "k": {k: encoder.encode(v) for k, v in kwargs.items()}, "r": encoder.encode(result),
                             "x": None if x is None else list(x), "ids": list(ids)})
        except Exception:  # noqa: BLE001 - the recorder never takes the charger down
            if not self._broken or not now:
                log.exception("flight recorder: %s.%s could not be recorded; dumps from here are incomplete",
                              target, method)
            self._broken = self._broken or now
            return embedded({"i": i, "o": target, "m": method, "a": [], "k": {}, "r": None,
                             "x": [UNRECORDED, "this call could not be recorded"], "ids": []})

    def _checkpoint(self) -> dict[str, object]:
        """The whole core now, for the half ring that begins here."""
        try:
            tree = Encoder(graph=True, functions=self._functions).encode(dict(self.objects))
            return {"from": "checkpoint", "at_call": self.total, "state": _Tree(tree)}  # embedded when written
        except Exception as exc:  # noqa: BLE001 - never fatal: that half ring is not replayable
            log.exception("flight recorder: no checkpoint at call %d", self.total)
            return {"from": "lost", "why": f"no checkpoint at call {self.total}: {exc}"}

    # --- faults -------------------------------------------------------------------------------------

    def _check_fault(self, target: str, result: object) -> None:
        """After a call: a FaultRaised in its result, or an EVSE taken into FAULTED by a call to the charger
        (the supervisor's calls never change the charger's state)."""
        reasons = [f"c{o.cid} {o.fault.name}" for o in outputs(result) if isinstance(o, FaultRaised)] if result else []
        if target != "supervisor":
            evses = self._evses
            if evses is None:
                charger = self.objects.get("charger")
                evses = tuple(getattr(charger, "evses", {}).items())
                if charger is not None:
                    self._evses = evses  # the charger's EVSEs, built once with it
            faulted = self._faulted
            for cid, evse in evses:
                if (evse.state is State.FAULTED) is not (cid in faulted):  # type: ignore[attr-defined]
                    now = {cid for cid, evse in evses if evse.state is State.FAULTED}  # type: ignore[attr-defined]
                    reasons += [f"c{cid} FAULTED" for cid in sorted(now - faulted)]
                    self._faulted = now
                    break
        if not reasons or self.state_dir is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the core driven without a loop (a test): nothing to write with
            return
        if not self._fault_reasons:  # one dump for the faults of one step
            loop.call_soon(self._dump_on_fault, loop)
        self._fault_reasons += reasons

    def _dump_on_fault(self, loop: asyncio.AbstractEventLoop) -> None:
        reason = "fault " + ", ".join(dict.fromkeys(self._fault_reasons))
        self._fault_reasons.clear()
        prepared = self._prepare(reason)  # the ring as it is now, at the fault
        log.warning("flight recorder: %s; writing %d calls to %s", reason, prepared[2], prepared[0])
        task = loop.create_task(self._dump_prepared(prepared), name="flight-recorder-dump")
        self._dumping.add(task)  # referenced until done (asyncio keeps only weak references)
        task.add_done_callback(self._dumping.discard)

    async def _dump_prepared(self, prepared: tuple[Path, dict[str, object], int]) -> None:
        path, payload, inputs = prepared
        await asyncio.sleep(FAULT_DUMP_DELAY_S)
        try:
            await asyncio.to_thread(self._write, path, await self._encoded(payload))
        except OSError as exc:
            log.error("flight recorder: %s could not be written: %s", path, exc)  # noqa: TRY400
            return
        self.written.append(Dump(path=path, inputs=inputs))

    async def _encoded(self, payload: dict[str, object]) -> bytes:
        """`_bytes`, on the loop, ENCODE_CHUNK calls per turn with the loop's other work between."""
        calls = cast(list[bytes], payload["calls"])
        parts = [self._head(payload)]
        for first in range(0, len(calls), ENCODE_CHUNK):
            parts.append(b"".join(calls[first:first + ENCODE_CHUNK]))
            await asyncio.sleep(0)
        parts.append(_BREAK)
        return b"".join(parts)

    # --- dumps ----------------------------------------------------------------------------------------

    async def dump(self, reason: str = "request") -> Dump:
        """Write the ring now (the console's `dump`): the file and the number of calls in it.
        OSError when it cannot be written; ValueError without a state_dir."""
        path, payload, inputs = self._prepare(reason)
        await asyncio.to_thread(self._write, path, await self._encoded(payload))
        written = Dump(path=path, inputs=inputs)
        self.written.append(written)
        log.info("flight recorder: %d calls written to %s (%s)", inputs, path, reason)
        return written

    def snapshot(self, reason: str = "request") -> bytes:
        """The ring as a flight file's bytes (for tests and tools; `dump` writes the same)."""
        return self._bytes(self._payload(reason))

    def _prepare(self, reason: str) -> tuple[Path, dict[str, object], int]:
        """The file's name and the ring's contents (its calls' bytes), copied."""
        if self.state_dir is None:
            raise ValueError("the flight recorder has no state_dir to write to")
        payload = self._payload(reason)
        stamp = self.utc().strftime("%Y%m%dT%H%M%S.%fZ")
        n = self._last_name[1] + 1 if self._last_name[0] == stamp else 1
        while (path := self.state_dir / _flight_name(stamp, n)).exists():
            n += 1
        self._last_name = (stamp, n)
        calls = payload["calls"]
        return path, payload, len(calls) if isinstance(calls, list) else 0

    def _payload(self, reason: str) -> dict[str, object]:
        oldest = self._segments[0]
        return {"format": FORMAT, "version": VERSION, "written_utc": self.utc().isoformat(), "reason": reason,
                "t0": self._t0, "dropped": oldest.first, "objects": dict(self._built), "start": dict(oldest.start),
                "calls": [call for segment in self._segments for call in segment.calls]}

    def _bytes(self, payload: dict[str, object]) -> bytes:
        """The payload's CBOR: the map, the checkpoint embedded, and the calls (already encoded)."""
        return self._head(payload) + b"".join(cast(list[bytes], payload["calls"])) + _BREAK

    @staticmethod
    def _head(payload: dict[str, object]) -> bytes:
        """The file's map up to its calls, which follow as an indefinite-length array (RFC 8949 §3.2.2)
        closed by _BREAK: the calls are joined as they are, never decoded and encoded again."""
        rest = {k: v for k, v in payload.items() if k != "calls"}
        start = cast(dict[str, object], rest["start"])
        if isinstance(state := start.get("state"), _Tree):
            rest["start"] = start | {"state": embedded(state.tree)}
        head = cbor2.dumps(rest)
        if not 0xA0 <= head[0] < 0xB7:  # a map of fewer than 23 pairs: its count is in the first byte
            raise ValueError(f"a flight file's map has {len(rest)} entries besides its calls")
        return bytes([head[0] + 1]) + head[1:] + cbor2.dumps("calls") + _ARRAY_OPEN

    def _write(self, path: Path, data: bytes) -> None:
        """In a thread: write atomically, keep the last `keep_files` flight files."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        with temp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        for old in sorted(path.parent.glob("flight-*.cbor"), key=_flight_order)[:-self.keep_files]:
            try:
                old.unlink(missing_ok=True)  # another dump's thread may have removed it
            except OSError as exc:
                log.warning("flight recorder: could not remove the old %s: %s", old, exc)


class _Tree(NamedTuple):
    """A checkpoint's tagged tree (detached from the live core), embedded as CBOR when a dump is written."""

    tree: object


def _flight_name(stamp: str, n: int) -> str:
    """`flight-<utc>.cbor`; a second file in the same microsecond is `flight-<utc>-2.cbor`, and so on."""
    return f"flight-{stamp}.cbor" if n == 1 else f"flight-{stamp}-{n}.cbor"


def _flight_order(path: Path) -> tuple[str, int]:
    """Oldest first: by time, then by the number of a file written in the same microsecond."""
    stamp, _, n = path.stem.removeprefix("flight-").partition("-")
    return stamp, int(n) if n.isdigit() else 1


def _time_of(target: str, args: tuple[object, ...], kwargs: Mapping[str, object]) -> float | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Instant):
            return value.mono
    if target == "supervisor" and args and isinstance(args[-1], float):
        return args[-1]
    return None


def replay_file(path: Path) -> Replay:
    """Read a flight file and replay it (`firmware.core.replay.replay`)."""
    return replay(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    """`python -m firmware.recorder FILE`: print the replay; exit 0 identical, 1 diverged, 2 unreadable."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m firmware.recorder FLIGHT_FILE\n")
        return 2
    try:
        result = replay_file(Path(args[0]))
    except (OSError, RecordingError) as exc:
        sys.stderr.write(f"cannot replay {args[0]}: {exc}\n")
        return 2
    recording = result.recording
    start = "boot" if recording.from_boot else f"a checkpoint ({recording.dropped} earlier calls dropped)"
    sys.stdout.write(f"# {recording.reason}, written {recording.written_utc}, {result.calls} calls from {start}\n")
    for line in result.lines:
        sys.stdout.write(line + "\n")
    sys.stdout.write(f"# {'identical' if result.identical else f'{len(result.divergences)} divergence(s)'}\n")
    return 0 if result.identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
