"""tools/fleet.py, the fleet simulator: its pure parts, and whole runs against a private mosquitto.

The runs are the command line as an operator types it (a subprocess); what is checked is what the
JSON summary and the broker say, never a time: figures depend on the host.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.config import load_config
from tests.support.backend import SyncSubscriber
from tests.support.codec import decode
from tests.support.broker import PLAIN_SETTINGS, Broker, running_broker
from tests.support.program import REPO
from tools.fleet import split
from tools.fleet_charger import ChargerSpec, config_text, parse_override
from tools.fleet_pattern import KINDS, Visit, load_script, random_day
from tools.fleet_stats import REQUIRED_KEYS, percentile

FLEET = REPO / "tools" / "fleet.py"
#: Every kind of visit, early in the simulated day (the run starts at 06:00).
SCRIPT = [{"start_h": 6.1, "stay_h": 1.0, "kind": "reserved"},
          {"start_h": 8.0, "stay_h": 2.0, "kind": "fault", "load_a": 32},
          {"start_h": 11.0, "stay_h": 1.0, "kind": "unknown_card"},
          {"start_h": 13.0, "stay_h": 1.0, "kind": "remote"},
          {"start_h": 15.0, "stay_h": 1.0, "kind": "tap_first"},
          {"start_h": 17.0, "stay_h": 1.0, "kind": "walk_in"},
          {"start_h": 19.0, "stay_h": 1.0, "kind": "reserved_missed"}]


@pytest.fixture(scope="module")
def fleet_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    settings = PLAIN_SETTINGS + "max_connections -1\n"
    with running_broker(Broker(tmp_path_factory.mktemp("fleet-broker"), settings)) as broker:
        yield broker


def fleet(broker: Broker, prefix: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(FLEET), "--chargers", "3", "--evses", "2", "--broker", f"127.0.0.1:{broker.port}",
         "--duration", "10", "--day-s", "5", "--json", str(out), "--id-prefix", prefix, "--progress-s", "4", *extra],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)


def finished(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return err


def retained_states(broker: Broker, prefix: str, expected: int) -> dict[str, object]:
    """The retained EVSE state documents of chargers `prefix-*` on the broker, by topic."""
    subscriber = SyncSubscriber(broker.port, "chargers/+/v1/evse/+/state")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = {t: p for t, p, retained in list(subscriber.messages)
                     if retained and t.startswith(f"chargers/{prefix}-")}
            if len(found) >= expected:
                break
            time.sleep(0.05)
        return {t: decode(p) for t, p in found.items()}
    finally:
        subscriber.close()


def test_two_fleets_one_and_two_processes_drive_their_chargers_over_mqtt(fleet_broker: Broker,
                                                                         tmp_path: Path) -> None:
    script = tmp_path / "day.json"
    script.write_text(json.dumps(SCRIPT))
    one_json, two_json, state2 = tmp_path / "one.json", tmp_path / "two.json", tmp_path / "state2"
    one = fleet(fleet_broker, "fleet-t1", one_json, "--seed", "7")
    two = fleet(fleet_broker, "fleet-t2", two_json, "--procs", "2", "--script", str(script),
                "--state-dir", str(state2), "--codec", "json")
    err_one, err_two = finished(one), finished(two)

    for err, out in ((err_one, one_json), (err_two, two_json)):
        summary = json.loads(out.read_text())
        assert set(REQUIRED_KEYS) <= set(summary)
        assert (summary["chargers"], summary["evses"], summary["chargers_started"]) == (3, 6, 3)
        assert summary["msgs_per_s_in"] > 0, summary
        assert summary["msgs_per_s_out"] > 0, summary
        assert summary["msgs_out"] > summary["msgs_in"] > 0  # state, meter and events outnumber commands
        assert summary["cmd_round_trip_p50_ms"] is not None
        assert summary["cmd_round_trip_p99_ms"] >= summary["cmd_round_trip_p50_ms"]
        assert summary["cmd_round_trip_by_op"]["set_local_auth_list"]["n"] == 3  # one per charger
        assert summary["sessions_charging"] > 0, summary
        assert summary["sessions_completed"] > 0, summary
        assert summary["rss_per_charger_mib"] > 0
        assert summary["errors"] == 0, summary["errors_by_kind"]
        assert "fleet [" in err  # progress lines on stderr
    two_summary = json.loads(two_json.read_text())
    assert two_summary["procs"] == 2
    assert two_summary["reservations_honoured"] >= 1, two_summary
    assert two_summary["faults_injected"] >= 1, two_summary
    assert two_summary["auth_requests_answered"] >= 1
    assert two_summary["session_events"]["Error"] >= 1  # the RCD trip, reported as a SessionEvent
    for n in (1, 2, 3):  # --state-dir kept: each charger has its own config and state
        assert load_config(state2 / f"fleet-t2-{n:04d}" / "charger.toml").charger.id == f"fleet-t2-{n:04d}"

    for prefix in ("fleet-t1", "fleet-t2"):  # each charger's retained state, under its own id
        states = retained_states(fleet_broker, prefix, 6)
        assert sorted(states) == sorted(f"chargers/{prefix}-{n:04d}/v1/evse/{e}/state" for n in (1, 2, 3)
                                        for e in (1, 2))
        for topic, doc in states.items():
            assert isinstance(doc, dict), doc
            assert doc["evse_id"] == int(topic.split("/")[4]), doc


def test_chargers_are_split_among_processes_in_contiguous_near_equal_chunks() -> None:
    ids = [f"c{n}" for n in range(7)]
    chunks = split(ids, 3)
    assert [len(c) for c in chunks] == [3, 2, 2]
    assert [i for c in chunks for i in c] == ids
    assert split(ids[:1], 2) == [["c0"]]


def test_a_generated_config_loads_with_the_overrides_applied(tmp_path: Path) -> None:
    spec = ChargerSpec(host="127.0.0.1", port=1884, evses=3, telemetry_s=20.0,
                       overrides=dict([parse_override("pilot.sample_interval_s=0.02")]))
    path = tmp_path / "c.toml"
    path.write_text(config_text("fleet-0042", tmp_path / "state", spec))
    config = load_config(path)
    assert config.charger.id == "fleet-0042"
    assert config.mqtt.port == 1884
    assert [e.id for e in config.evses] == [1, 2, 3]
    assert config.telemetry.meter_interval_s == 20.0
    assert config.pilot.sample_interval_s == 0.02
    with pytest.raises(ValueError, match="section.key=value"):
        parse_override("sample_interval_s=0.02")


def test_random_days_are_seeded_ordered_and_never_overlap() -> None:
    days = [random_day(random.Random(f"s/{n}")) for n in range(200)]
    assert days[0] == random_day(random.Random("s/0"))
    assert {v.kind for day in days for v in day} == set(KINDS)
    for day in days:
        for before, after in zip(day, day[1:], strict=False):
            assert before.start_h + before.stay_h <= after.start_h


def test_a_script_is_read_in_order_and_a_wrong_visit_is_named(tmp_path: Path) -> None:
    path = tmp_path / "day.json"
    path.write_text(json.dumps(list(reversed(SCRIPT))))
    assert [v.start_h for v in load_script(path)] == sorted(v["start_h"] for v in SCRIPT)  # type: ignore[type-var]
    path.write_text(json.dumps([{"start_h": 8, "stay_h": 1, "kind": "teleport"}]))
    with pytest.raises(ValueError, match="visit 0: kind 'teleport'"):
        load_script(path)
    with pytest.raises(ValueError, match="stay_h"):
        Visit(start_h=8.0, stay_h=0.0, kind="walk_in")


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(n) for n in range(1, 101)], 99) == 99.0
