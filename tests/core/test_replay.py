"""Flight recordings (firmware/core/replay.py): the tagged CBOR encoding round trip, replaying a recorded
charger and supervisor identically (from boot and from a checkpoint), and every way a recording is refused
or found to diverge. The recordings are made by the shell's recorder (firmware/recorder.py) around real
core objects, driven by the tests/support/charger.py helpers; no clock, no I/O."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from enum import Enum
from typing import Any

import cbor2
import pytest

from firmware.core import replay as rp
from firmware.core.auth import BackendAnswer, LocalAuthEntry, LocalAuthStatus
from firmware.core.charger import Charger
from firmware.core.events import Fault, FaultRaised, MeterSampled, OpenRelay, PilotChanged, PilotSampled, \
    SessionCancellationReason, SetPwm
from firmware.core.evse import EvseConfig, State
from firmware.core.instant import Instant
from firmware.core.pilot import Cp
from firmware.core.reservations import Reservation
from firmware.core.supervision import Supervisor
from firmware.core.supervision_events import InputsSensed, LinkDown, LinkUp, MeterReadSucceeded, PpSampled
from firmware.recorder import Recorder
from tests.support.charger import HOUR, M0, T2, UTC0, at, charging, plug

CONFIGS = [EvseConfig(cid=1, connectors=T2), EvseConfig(cid=2, connectors=T2, phase_switching=True)]


def recorded(max_calls: int = 20_000) -> tuple[Recorder, Charger, Supervisor]:
    """A recorder around a started charger (two EVSEs, meters read) and its supervisor."""
    rec = Recorder(None, max_calls=max_calls)
    counter = itertools.count(1)
    c = rec.construct("charger", Charger, CONFIGS, new_session_id=rec.ids(lambda: f"s-{next(counter)}"),
                      debounce_s=0.05, online=True)
    s = rec.construct("supervisor", Supervisor, [1, 2], meter_stale_after_s={1: 10.0}, fallback_after_s=30.0,
                      fallback_current_a=6.0, now=M0)
    c.start(at(M0))
    for cid in (1, 2):
        c.handle(MeterSampled(cid=cid, energy_wh_import=100.0), at(M0))
    return rec, c, s


def supervise(c: Charger, s: Supervisor, event: Any, mono: float) -> None:  # noqa: ANN401
    """What the shell's core loop does with a reading: supervision first, its faults to the charger."""
    for fact in s.handle(event, mono):
        if isinstance(fact, FaultRaised):
            c.handle(fact, at(mono))


def accept(c: Charger) -> None:
    c.local_list.apply(1, True, [LocalAuthEntry(id_token=t, status=LocalAuthStatus.ACCEPTED) for t in ("AA11", "CAFE")])


def a_day_of_work(c: Charger, s: Supervisor) -> None:
    accept(c)
    charging(c, 1, at(M0 + 1))
    c.handle(MeterSampled(cid=1, energy_wh_import=900.0, currents_a=(16.0, 16.0, 16.0)), at(M0 + 60))
    assert c.set_max_current(1, 10.0, at(M0 + 61))[1]
    c.reserve_now(Reservation(reservation_id=7, id_token="BEEF", expiry_utc=UTC0 + HOUR, evse_id=2), at(M0 + 62))
    c.exists_reservation("BEEF", 2, None, at(M0 + 62))
    c.cancel_reservation("", 7, at(M0 + 63))
    plug(c, 2, Cp.B, at(M0 + 64))
    decision, out = c.present_token(2, "UNKNOWN1", at(M0 + 65))
    assert decision is None  # the backend is asked
    request_id = next(a.request_id for a in out if hasattr(a, "request_id"))
    c.backend_auth_answer(request_id, BackendAnswer(status=LocalAuthStatus.ACCEPTED), at(M0 + 66))
    c.switch_phases(2, False)
    for i in range(20):  # raw CP samples through the pilot monitor: C on EVSE 2
        c.handle(PilotSampled(cid=2, volts_hi=6.0, volts_lo=-12.0), at(M0 + 67 + i / 64))
    c.online = False
    c.set_fallback(6.0, at(M0 + 70))
    supervise(c, s, PpSampled(cid=1, ohms=220.0), M0 + 70)
    supervise(c, s, MeterReadSucceeded(cid=1, energy_wh_import=950.0, voltages_v=(230.0, 230.0, 230.0)), M0 + 71)
    supervise(c, s, LinkDown(), M0 + 72)
    s.tick(M0 + 200)
    supervise(c, s, LinkUp(), M0 + 201)
    supervise(c, s, InputsSensed(cid=1, rcd_tripped=True, overtemperature=False), M0 + 202)
    with pytest.raises(ValueError, match="unknown EVSE"):
        c.stop_session(9, SessionCancellationReason.REMOTE, at(M0 + 203))
    c.stop_session(2, SessionCancellationReason.REMOTE, at(M0 + 204))
    c.tick(at(M0 + 300))
    c.handle(PilotChanged(cid=2, cp=Cp.A), at(M0 + 301))
    c.authorize_anywhere("CAFE", at(M0 + 302))
    c.unlock_connector(2, at(M0 + 303))
    c.set_enabled(2, False, at(M0 + 304))


def fingerprint(c: Charger) -> list[tuple[int, State, str, bool, float, str | None]]:
    return [(cid, e.state, c.status(cid).value, e.relay_closed, c.limit_a(cid), e.session and e.session.uuid)
            for cid, e in c.evses.items()]


# --- replaying ------------------------------------------------------------------------------------


def test_a_recorded_session_replays_identically() -> None:
    rec, c, s = recorded()
    a_day_of_work(c, s)
    result = rp.replay(rec.snapshot())
    assert result.identical, result.divergences
    assert result.calls == rec.total == rec.calls
    assert result.recording.from_boot
    assert result.recording.dropped == 0
    replayed = result.objects["charger"]
    assert isinstance(replayed, Charger)
    assert fingerprint(replayed) == fingerprint(c)
    assert replayed.evses[1].state is State.FAULTED
    assert "t=1.000 c1 AVAILABLE -> WAITING_FOR_AUTH" in result.transitions
    assert any(re.fullmatch(r"t=202\.000 c1 CHARGING -> FAULTED", line) for line in result.transitions)
    assert any("facts: FaultRaised(cid=1, fault=Fault.RCD_TRIPPED)" in line for line in result.actions)
    assert any(line.startswith("t=202.000 actions: ") and "OpenRelay(cid=1" in line for line in result.actions)
    assert all(re.match(r"t=\d+\.\d{3} ", line) for line in result.lines)


def test_replay_is_deterministic() -> None:
    rec, c, s = recorded()
    a_day_of_work(c, s)
    data = rec.snapshot()
    first, second = rp.replay(data), rp.replay(data)
    assert first.lines == second.lines
    assert first.identical


def test_a_wrapped_ring_replays_from_its_checkpoint() -> None:
    rec, c, s = recorded(max_calls=40)
    a_day_of_work(c, s)
    for i in range(45):  # CP samples: the ring wraps
        c.handle(PilotSampled(cid=1, volts_hi=9.0, volts_lo=-12.0), at(M0 + 400 + i / 64))
    assert rec.total > 80
    assert 20 <= rec.calls <= 40
    result = rp.replay(rec.snapshot())
    assert result.identical, result.divergences
    assert not result.recording.from_boot
    assert result.recording.start["from"] == "checkpoint"
    assert result.recording.dropped == rec.total - rec.calls
    replayed = result.objects["charger"]
    assert isinstance(replayed, Charger)
    assert fingerprint(replayed) == fingerprint(c)
    assert replayed.next_deadline() == c.next_deadline()
    supervisor = result.objects["supervisor"]
    assert isinstance(supervisor, Supervisor)
    assert supervisor.next_deadline() == s.next_deadline()


def test_a_lost_start_is_refused_clearly() -> None:
    rec, c, _ = recorded()
    top = cbor2.loads(rec.snapshot())
    top["start"] = {"from": "lost", "why": "no checkpoint at call 9"}
    with pytest.raises(rp.RecordingError, match="cannot be replayed.*no checkpoint at call 9"):
        rp.replay(cbor2.dumps(top))


# --- divergences ----------------------------------------------------------------------------------


def tampered(data: bytes, index: int, **changes: object) -> bytes:
    top = cbor2.loads(data)
    call = cbor2.loads(top["calls"][index].value)
    call.update(changes)
    top["calls"][index] = rp.embedded(call)
    return cbor2.dumps(top)


def test_a_different_result_is_a_divergence_with_its_index() -> None:
    rec, c, _ = recorded()
    accept(c)
    charging(c, 1, at(M0 + 1))
    data = tampered(rec.snapshot(), 5, r=rp.encode([OpenRelay(cid=1)]))
    result = rp.replay(data)
    (divergence,) = result.divergences
    assert divergence.index == 5
    assert divergence.call == "charger.handle()"
    assert str(divergence) in result.lines
    assert str(divergence).startswith("DIVERGENCE at call #5 charger.handle(): recorded [OpenRelay(cid=1)], replayed [")


def test_exceptions_and_session_ids_are_compared() -> None:
    rec, c, _ = recorded()
    accept(c)
    charging(c, 1, at(M0 + 1))
    data = rec.snapshot()
    plug_call = next(i for i, item in enumerate(cbor2.loads(data)["calls"]) if cbor2.loads(item.value)["ids"])
    missing = rp.replay(tampered(data, plug_call, ids=[])).divergences
    assert [d.replayed for d in missing if d.index == plug_call][-1] == "1 more, 0 unused"  # and its outputs differ
    assert rp.replay(tampered(data, plug_call, ids=["s-1", "x"])).divergences[0].replayed == "0 more, 1 unused"
    (raised,) = rp.replay(tampered(data, 0, x=["ValueError", "boom"])).divergences
    assert raised.recorded == "exception ('ValueError', 'boom')"
    assert raised.replayed == "exception None"
    unrecorded = rp.replay(tampered(data, 1, x=[rp.UNRECORDED, "x"], a=[], k={}))
    assert unrecorded.divergences[0].recorded == "a call that could not be recorded"


def test_an_unrecordable_result_is_a_divergence() -> None:
    rec, c, _ = recorded()
    last = rec.total - 1
    data = tampered(rec.snapshot(), last, o="charger", m="pilot_settling", a=[1], k={}, r=None)
    (divergence,) = rp.replay(data).divergences
    assert divergence.replayed == "False"
    data = tampered(rec.snapshot(), last, o="charger", m="evses", a=[], r=None)  # not callable: raises
    assert "TypeError" in rp.replay(data).divergences[0].replayed


def test_only_public_names_of_known_objects_are_replayed() -> None:
    rec, _, _ = recorded()
    with pytest.raises(rp.RecordingError, match="refused name '_step'"):
        rp.replay(tampered(rec.snapshot(), 0, m="_step"))
    with pytest.raises(rp.RecordingError, match="unknown object 'board'"):
        rp.replay(tampered(rec.snapshot(), 0, o="board"))


# --- the encoding ---------------------------------------------------------------------------------


class Colour(Enum):
    RED = 1


@pytest.mark.parametrize("value", [
    None, True, 3, 2.5, float("inf"), "x", b"\x00", [1, [2]], (1, (2, "3")), frozenset({1, 2}),
    {1: "a", "$": [2]}, {Fault.RCD_TRIPPED}, datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=2))), datetime(2026, 1, 2), timedelta(days=1, seconds=2),
    Instant(mono=12.5, utc=UTC0), Fault.RCD_TRIPPED, State.FAULTED, SetPwm(cid=1, duty_pct=53.3),
    (None, [OpenRelay(cid=2, under_load=True)]), CONFIGS[1], replace(CONFIGS[0], max_current_a=16.0),
])
def test_values_round_trip(value: object) -> None:
    back = rp.loads(rp.dumps(value))
    assert back == value
    assert type(back) is type(value)


def test_every_enum_of_the_core_round_trips() -> None:
    enums = [cls for cls in rp.registry().values() if issubclass(cls, Enum)]
    assert len(enums) > 10
    for enum in enums:
        for member in enum:
            assert rp.loads(rp.dumps(member)) is member


def test_the_registry_names_are_unique_class_names() -> None:
    names = rp.registry()
    assert names["Charger"] is Charger
    assert names["FaultRaised"] is FaultRaised
    assert all(":" not in name for name in names)  # no two core classes share a name today


def test_a_graph_keeps_sharing_and_cycles() -> None:
    shared: list[object] = [1]
    cyclic: dict[str, object] = {"shared": shared, "again": shared, "set": {Fault.RCD_TRIPPED}}
    cyclic["self"] = cyclic
    tree = rp.Encoder(graph=True).encode(cyclic)
    back = rp.decode(cbor2.loads(cbor2.dumps(tree)))
    assert isinstance(back, dict)
    assert back["self"] is back
    assert back["shared"] is back["again"] == [1]
    assert back["set"] == {Fault.RCD_TRIPPED}


def test_non_core_values_are_refused() -> None:
    with pytest.raises(rp.EncodeError, match=r"tests\.core\.test_replay\.Colour is not a class of firmware\.core"):
        rp.encode(Colour.RED)
    with pytest.raises(rp.EncodeError, match="cannot record"):
        rp.encode(object())
    with pytest.raises(rp.EncodeError, match="cannot record"):
        rp.encode(lambda: "x")


@pytest.mark.parametrize(("tree", "message"), [
    ({"$": "Popen"}, "unknown class 'Popen'"),
    ({"$": "Charger"}, "Charger is not a dataclass"),
    ({"$e": "Charger", "v": 1}, "Charger is not an enum"),
    ({"$r": 5}, "reference to an unknown object 5"),
    ({"$fn": "system"}, "unknown function 'system'"),
    ({"$bm": {"$o": "Charger", "s": {}}, "n": "__class__"}, "refused method name '__class__'"),
    ({"$o": "Charger"}, "object Charger without its state"),
    ({"$t": 5}, "expected an array"),
    ({"$dt": 5}, "expected a string"),
    ({"what": 1}, "unknown value"),
])
def test_bad_trees_are_refused(tree: object, message: str) -> None:
    with pytest.raises(rp.RecordingError, match=re.escape(message)):
        rp.decode(tree)


def test_bad_files_are_refused() -> None:
    rec, _, _ = recorded()
    good = cbor2.loads(rec.snapshot())
    with pytest.raises(rp.RecordingError, match="not a CBOR flight recording"):
        rp.read(b"\xff\x00")
    with pytest.raises(rp.RecordingError, match="not a flight recording"):
        rp.read(cbor2.dumps({"format": "x"}))
    with pytest.raises(rp.RecordingError, match="version 99; this firmware reads version 1"):
        rp.read(cbor2.dumps(good | {"version": 99}))
    with pytest.raises(rp.RecordingError, match="not an embedded CBOR item"):
        rp.read(cbor2.dumps(good | {"calls": [{"i": 1}]}))
    with pytest.raises(rp.RecordingError, match="a call is not a map"):
        rp.read(cbor2.dumps(good | {"calls": [rp.embedded([1])]}))
    with pytest.raises(rp.RecordingError, match="a damaged call"):
        rp.read(cbor2.dumps(good | {"calls": [rp.embedded({"i": 1})]}))
    with pytest.raises(rp.RecordingError, match="without its objects"):
        rp.read(cbor2.dumps(good | {"objects": None}))
    with pytest.raises(rp.RecordingError, match="without its kwargs"):
        rp.replay(cbor2.dumps(good | {"objects": {"charger": {"class": "Charger", "args": []}}}))
    with pytest.raises(rp.RecordingError, match="a Reservation is not built by a replay"):
        rp.replay(cbor2.dumps(good | {"objects": {"charger": {"class": "Reservation", "args": [], "kwargs": {}}}}))
    with pytest.raises(rp.RecordingError, match="not a map of objects"):
        rp.replay(cbor2.dumps(good | {"start": {"from": "checkpoint", "state": rp.embedded([])}}))


def test_describe_is_short_and_stable() -> None:
    assert rp.describe(OpenRelay(cid=1)) == "OpenRelay(cid=1)"
    assert rp.describe(OpenRelay(cid=1, under_load=True)) == "OpenRelay(cid=1, under_load=True)"
    assert rp.describe((Fault.RCD_TRIPPED, [1.5])) == "(Fault.RCD_TRIPPED, [1.5])"
    assert rp.describe(UTC0) == "2026-11-21T08:00:00+00:00"
    assert rp.describe("x") == "'x'"
