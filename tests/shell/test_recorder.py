"""The flight recorder's shell side (firmware/recorder.py): what the proxies record and what they let
through, the ring's bounds, the boot restore, dumps on a fault and on request (atomic, the last N kept),
recording failures that never reach the core, and `python -m firmware.recorder`."""

from __future__ import annotations

import asyncio
import copy
import inspect
import itertools
import gc
import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import cbor2
import pytest

from firmware.core import replay as rp
from firmware.core.auth import LocalAuthEntry, LocalAuthList, LocalAuthStatus
from firmware.core.charger import Charger
from firmware.core.events import MeterSampled, PilotSampled
from firmware.core.evse import EvseConfig, State
from firmware.core.pilot import Cp
from firmware.core.reservations import Reservation, ReservationBook
from firmware.core.supervision import Supervisor
from firmware.core.supervision_events import InputsSensed
from firmware.persistence import collect_state, restore_state
from firmware.recorder import ENCODE_CHUNK, SPECS, Recorder, main, replay_file
from tests.support.charger import HOUR, M0, T2, UTC0, at, charging, plug
from tests.support.polling import until

CONFIGS = [EvseConfig(cid=1, connectors=T2), EvseConfig(cid=2, connectors=T2)]
AA11 = [LocalAuthEntry(id_token="AA11", status=LocalAuthStatus.ACCEPTED)]


def build(rec: Recorder) -> tuple[Charger, Supervisor]:
    counter = itertools.count(1)
    c = rec.construct("charger", Charger, CONFIGS, new_session_id=rec.ids(lambda: f"s-{next(counter)}"))
    s = rec.construct("supervisor", Supervisor, [1, 2], meter_stale_after_s={}, fallback_after_s=30.0,
                      fallback_current_a=6.0, now=M0)
    c.start(at(M0))
    for cid in (1, 2):
        c.handle(MeterSampled(cid=cid, energy_wh_import=0.0), at(M0))
    return c, s


def rcd_trip(c: Charger, s: Supervisor, mono: float) -> None:
    for fact in s.handle(InputsSensed(cid=1, rcd_tripped=True, overtemperature=False), mono):
        c.handle(fact, at(mono))  # type: ignore[arg-type]


# --- what is recorded -----------------------------------------------------------------------------


@pytest.mark.parametrize(("cls", "spec"), [
    (Charger, SPECS["charger"]), (Supervisor, SPECS["supervisor"]),
    (LocalAuthList, SPECS["charger"].children["local_list"]), (ReservationBook, SPECS["charger"].children["book"]),
])
def test_every_public_method_is_known_as_recorded_or_read_only(cls: type, spec: object) -> None:
    methods = {name for name, value in vars(cls).items() if inspect.isfunction(value) and not name.startswith("_")}
    recorded, reads = spec.recorded, spec.reads  # type: ignore[attr-defined]
    assert methods == recorded | reads, "a new core method: is it a state change (recorded) or a read?"
    assert not recorded & reads


def test_reads_pass_through_unrecorded() -> None:
    rec = Recorder(None)
    c, s = build(rec)
    calls = rec.total
    assert list(c.evses) == [1, 2]
    assert c.status(1).value == "Available"
    assert c.led(2).value
    assert c.next_deadline() is None
    assert c.limit_a(1) == 32.0
    assert not c.pilot_settling(1)
    assert c.book.entries == []
    assert c.book.specific(1, UTC0) is None
    assert c.local_list.snapshot()["version"] == 0
    assert len(c.local_list) == 0
    assert c.online
    assert s.pp[1].ohms is None
    assert s.next_deadline() is None
    assert rec.total == calls
    assert repr(c).startswith("<recorded <firmware.core.charger.Charger")
    c.online = False  # an attribute set is a call
    assert rec.total == calls + 1
    assert not c.online


def test_methods_are_bound_once_and_values_read_live() -> None:
    rec = Recorder(None)
    c, s = build(rec)
    core = rec.objects["charger"]
    assert c.handle is c.handle  # the recording wrapper, bound once
    assert c.status is c.status  # a read-only method, bound once
    assert {"handle", "status"} <= set(vars(c))
    assert s.tick is s.tick
    assert c.evses is core.evses
    core.online = False  # type: ignore[attr-defined] # behind the proxy's back: a property is read live
    assert not c.online
    calls = rec.total
    c.online = True
    assert c.online
    assert rec.total == calls + 1
    assert c.book is c.book
    book = core.book  # type: ignore[attr-defined]
    core.book = copy.copy(book)  # type: ignore[attr-defined] # another object: another proxy
    assert repr(c.book) == f"<recorded {core.book!r}>"  # type: ignore[attr-defined]
    core.book = book  # type: ignore[attr-defined]


def last_call(rec: Recorder) -> dict[str, object]:
    call: dict[str, object] = cbor2.loads(cbor2.loads(rec.snapshot())["calls"][-1].value)
    return call


def test_later_changes_to_mutable_arguments_and_results_do_not_change_the_dump() -> None:
    rec = Recorder(None)
    c, _ = build(rec)
    entries = list(AA11)
    c.local_list.apply(1, True, entries)
    entries.append(LocalAuthEntry(id_token="BB22", status=LocalAuthStatus.BLOCKED))
    (entry,) = last_call(rec)["a"][2]  # type: ignore[index]
    assert entry["id_token"] == "AA11"
    data: dict[str, object] = {"version": 2, "tokens": [
        {"id_token": "CC33", "status": "Accepted", "parent_id_token": None, "expiry": None}]}
    c.local_list.restore(data)
    data["version"] = 3
    data["tokens"].append({"id_token": "DD44", "status": "Blocked"})  # type: ignore[attr-defined]
    assert last_call(rec)["a"] == [{"$m": [["version", 2], ["tokens", [
        {"$m": [["id_token", "CC33"], ["status", "Accepted"], ["parent_id_token", None], ["expiry", None]]}]]]}]
    out = c.set_enabled(1, False, at(M0 + 1))
    assert out
    out.clear()
    assert len(last_call(rec)["r"]) > 0  # type: ignore[arg-type]
    result = rp.replay(rec.snapshot())
    assert result.identical, result.divergences
    assert result.objects["charger"].local_list.snapshot() == c.local_list.snapshot()  # type: ignore[attr-defined]


def test_generators_are_read_once_and_recorded() -> None:
    rec = Recorder(None)
    c, _ = build(rec)
    c.local_list.apply(1, True, (e for e in AA11))
    assert c.local_list.lookup("AA11") is not None
    assert rp.replay(rec.snapshot()).identical
    other = Recorder(None)
    built = other.construct("charger", Charger, (config for config in CONFIGS), new_session_id=other.ids(lambda: "x"))
    assert list(built.evses) == [1, 2]
    assert list(rp.replay(other.snapshot()).objects["charger"].evses) == [1, 2]  # type: ignore[attr-defined]


def test_exceptions_are_recorded_and_raised() -> None:
    rec = Recorder(None)
    c, _ = build(rec)
    with pytest.raises(ValueError, match="unknown EVSE id 7"):
        c.set_enabled(7, False, at(M0))
    call = cbor2.loads(cbor2.loads(rec.snapshot())["calls"][-1].value)
    assert call["x"] == ["ValueError", "unknown EVSE id 7"]


def test_a_value_that_cannot_be_recorded_never_reaches_the_core(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(None)
    c, _ = build(rec)
    result, _ = c.set_max_current(1, Decimal(10), at(M0))  # type: ignore[arg-type]
    assert result.value == "Success"
    assert "set_max_current could not be recorded" in caplog.text
    (divergence,) = rp.replay(rec.snapshot()).divergences
    assert divergence.recorded == "a call that could not be recorded"


def test_settings_that_cannot_be_recorded_leave_the_boot_unreplayable(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(None)
    rec.construct("charger", Charger, CONFIGS, new_session_id=lambda: "x")  # not the recorder's generator
    assert "how the charger was built cannot be recorded" in caplog.text
    with pytest.raises(rp.RecordingError, match="the charger's settings could not be recorded"):
        rp.replay(rec.snapshot())


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        Recorder(None, max_calls=1)
    with pytest.raises(ValueError, match="keep_files"):
        Recorder(None, keep_files=0)
    with pytest.raises(ValueError, match="the recorder builds"):
        Recorder(None).construct("board", Charger, CONFIGS, new_session_id=lambda: "x")


# --- the ring -------------------------------------------------------------------------------------


def test_the_ring_is_bounded_and_starts_from_a_checkpoint() -> None:
    rec = Recorder(None, max_calls=10)
    c, _ = build(rec)
    for i in range(100):
        c.handle(PilotSampled(cid=1, volts_hi=9.0, volts_lo=-12.0), at(M0 + i / 64))
    assert rec.total == 103
    assert 5 <= rec.calls <= 10
    top = cbor2.loads(rec.snapshot())
    assert len(top["calls"]) == rec.calls
    assert top["dropped"] == rec.total - rec.calls
    assert top["start"]["from"] == "checkpoint"
    assert top["start"]["at_call"] == top["dropped"]
    result = rp.replay(rec.snapshot())
    assert result.identical
    assert result.calls == rec.calls
    assert result.objects["charger"].evses[1].state is c.evses[1].state is State.WAITING_FOR_AUTH  # type: ignore[attr-defined]


def test_a_checkpoint_that_fails_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    rec = Recorder(None, max_calls=4)
    c, _ = build(rec)
    rec.objects["charger"].junk = object()  # type: ignore[attr-defined]
    for i in range(6):
        c.handle(PilotSampled(cid=1, volts_hi=9.0, volts_lo=-12.0), at(M0 + i))
    assert "no checkpoint at call" in caplog.text
    with pytest.raises(rp.RecordingError, match="cannot be replayed: its start was not recorded"):
        rp.replay(rec.snapshot())


def test_the_boot_restore_is_recorded() -> None:
    live = Recorder(None)
    c, _ = build(live)
    c.local_list.apply(3, True, AA11)
    c.reserve_now(Reservation(reservation_id=4, id_token="BEEF", expiry_utc=UTC0 + HOUR, evse_id=2), at(M0))
    c.set_max_current(1, 16.0, at(M0))
    c.set_enabled(2, False, at(M0))
    charging(c, 1, at(M0 + 1))
    state = collect_state(c, {}, {"reservations", "local_list"})  # type: ignore[arg-type]
    rec = Recorder(None)
    booted, _ = build(rec)
    restore_state(booted, state, at(M0 + 100), resume_after_power_loss=True)
    plug(booted, 1, Cp.C, at(M0 + 101))
    result = rp.replay(rec.snapshot())
    assert result.identical, result.divergences
    replayed = result.objects["charger"]
    assert isinstance(replayed, Charger)
    assert replayed.local_list.snapshot() == booted.local_list.snapshot()
    assert replayed.book.snapshot() == booted.book.snapshot() != {}
    assert [e.state for e in replayed.evses.values()] == [e.state for e in booted.evses.values()]


# --- dumps ----------------------------------------------------------------------------------------


async def test_a_fault_writes_the_ring(tmp_path: Path) -> None:
    rec = Recorder(tmp_path)
    c, s = build(rec)
    rcd_trip(c, s, M0 + 5)
    await until(lambda: rec.written, 2)
    (dump,) = rec.written
    assert dump.path.parent == tmp_path
    assert dump.path.name.startswith("flight-")
    assert dump.inputs == rec.total
    recording = rp.read(dump.path.read_bytes())
    assert recording.reason == "fault c1 RCD_TRIPPED, c1 FAULTED"
    result = replay_file(dump.path)
    assert result.identical
    assert result.transitions[-1] == "t=5.000 c1 AVAILABLE -> FAULTED"


async def test_a_dump_on_request(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "state", keep_files=3, utc=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    c, _ = build(rec)
    dumps = [await rec.dump() for _ in range(5)]
    assert dumps[0].path.name == "flight-20260102T030405.000000Z.cbor"
    assert dumps[0].inputs == 3
    assert dumps[1].path.name == "flight-20260102T030405.000000Z-2.cbor"
    kept = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert kept == sorted(d.path.name for d in dumps[-3:])  # the last 3, and no temporary file left
    assert rec.written == dumps
    assert rp.read(dumps[-1].path.read_bytes()).reason == "request"


def test_the_ring_holds_bytes_that_the_garbage_collector_never_walks() -> None:
    """Each call is encoded as it is recorded. A ring of the core's values kept by reference was an
    object graph the size of 20 000 calls, which every full collection walked: up to 33 ms with the
    loop stalled, safety lane included. Recording adds no object the collector tracks."""
    rec = Recorder(None)
    c, _ = build(rec)
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        c.handle(PilotSampled(cid=2, volts_hi=12.0, volts_lo=-12.0, read_at=M0 + 1 + i * 0.01), at(M0 + 1 + i * 0.01))
    gc.collect()
    assert rec.calls >= 2000
    assert len(gc.get_objects()) - before < 100  # by reference it was several per call: > 4000
    assert rp.replay(rec.snapshot()).identical


async def test_a_dump_is_made_on_the_loop_in_short_turns(tmp_path: Path) -> None:
    """A dump's bytes are joined ENCODE_CHUNK calls per turn of the loop, with its other work (here a
    task that counts its turns) in between; only the file is written in a thread. It replays."""
    rec = Recorder(tmp_path)
    c, s = build(rec)
    for i in range(5 * ENCODE_CHUNK):
        c.handle(PilotSampled(cid=2, volts_hi=12.0, volts_lo=-12.0), at(M0 + 1 + i * 0.01))
    turns: list[bool] = []  # whether the dump was being made, at each turn of another task
    made = rec._encoded  # noqa: SLF001 - noted, not changed
    making = False

    async def noting(payload: dict[str, object]) -> bytes:
        nonlocal making
        making = True
        try:
            return await made(payload)
        finally:
            making = False

    rec._encoded = noting  # type: ignore[method-assign]  # noqa: SLF001

    async def ticker() -> None:
        while True:
            turns.append(making)
            await asyncio.sleep(0)

    other = asyncio.get_running_loop().create_task(ticker())
    rcd_trip(c, s, M0 + 300)
    await until(lambda: rec.written, 5)
    other.cancel()
    assert sum(turns) >= 4  # the loop came round between the chunks
    assert replay_file(rec.written[0].path).identical


async def test_a_dump_needs_a_state_dir() -> None:
    rec = Recorder(None)
    build(rec)
    with pytest.raises(ValueError, match="no state_dir"):
        await rec.dump()


async def test_a_dump_that_cannot_be_written_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    rec = Recorder(blocked)
    c, s = build(rec)
    with caplog.at_level(logging.WARNING, logger="firmware.recorder"):
        rcd_trip(c, s, M0 + 1)
        await until(lambda: "could not be written" in caplog.text, 2)
    assert rec.written == []
    await asyncio.sleep(0)


# --- python -m firmware.recorder ------------------------------------------------------------------


async def test_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = Recorder(tmp_path)
    c, _ = build(rec)
    c.local_list.apply(1, True, AA11)
    charging(c, 1, at(M0 + 2))
    dump = await rec.dump()
    assert main([str(dump.path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# request, written {rec.utc().year}")
    assert "t=2.000 c1 WAITING_FOR_AUTH -> CHARGING" in out or "t=2.000 c1 AVAILABLE -> WAITING_FOR_AUTH" in out
    assert out.rstrip().endswith("# identical")
    top = cbor2.loads(dump.path.read_bytes())
    top["calls"][-1] = rp.embedded(cbor2.loads(top["calls"][-1].value) | {"r": []})
    dump.path.write_bytes(cbor2.dumps(top))
    assert main([str(dump.path)]) == 1
    assert "DIVERGENCE at call #" in capsys.readouterr().out
    assert main([str(tmp_path / "missing.cbor")]) == 2
    assert main([]) == 2
    assert "cannot replay" in capsys.readouterr().err
