"""Functional smoke tests of the scripts in tools/ (no timing assertions: figures depend on the host)."""

from __future__ import annotations

import runpy
import sys

import pytest

from tests.support.program import REPO

BENCH = REPO / "tools" / "bench" / "core_events.py"


def test_core_events_bench_runs_and_prints_its_figures(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--events", "400"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("median" in line and "p99" in line for line in lines), out
    assert "400 events" in out
    assert "events/s" in out


def test_core_events_bench_refuses_a_non_positive_count(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCH), "--events", "0"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(BENCH), run_name="__main__")
    assert exit_info.value.code == 2
    assert "--events" in capsys.readouterr().err


RESERVATIONS_BENCH = REPO / "tools" / "bench" / "reservations.py"


def test_reservations_bench_quick_runs_and_prints_its_figures(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", [str(RESERVATIONS_BENCH), "--quick"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(RESERVATIONS_BENCH), run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("median" in line and "p99" in line for line in lines), out
    for subject in ("G1 global_room  8 EVSEs /  8 globals", "G1 global_room 16 EVSEs / 16 globals",
                    "G1 global_room 16 EVSEs /  8 globals", "G1 brute force", "reserve with", "exists with"):
        assert any(line.startswith(subject) and "median" in line and "p99" in line for line in lines), subject
    assert "agrees with global_room on" in out


FUZZ_RSS_BENCH = REPO / "tools" / "bench" / "fuzz_rss.py"


def test_fuzz_rss_bench_runs_and_prints_its_figures() -> None:
    import subprocess

    result = subprocess.run([sys.executable, str(FUZZ_RSS_BENCH), "--messages", "2000"], cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "2000 malformed messages" in out, out
    assert "RSS before:" in out, out
    assert "RSS during the run:" in out, out
    assert "messages/s" in out, out
    assert "  escaped: 0" in out.splitlines(), out  # exactly 0: no exception left the request path
    assert "controller: still running" in out, out


@pytest.mark.integration
@pytest.mark.parametrize(("script", "args", "expected"), [
    ("roundtrip.py", ["--count", "5"], ["command -> reply (controller)", "bare aiomqtt echo", "x baseline"]),
    ("store.py", ["--events", "200"], ["commit with fsync", "fsync cost per event", "WAL checkpoint"]),
    ("reaction.py", ["--cycles", "1", "--scenarios", "idle"], ["after debounce -> relay open", "state doc relay open"]),
    ("meter_poll.py", ["--polls", "3", "--models", "SDM630,EM24"], ["RTU bytes", "9600 bd bound ms", "EM24"]),
])
def test_bench_scripts_run(script: str, args: list[str], expected: list[str]) -> None:
    """The other benchmarks run against the current code (an API change breaks them loudly here)."""
    import subprocess

    run = subprocess.run([sys.executable, str(REPO / "tools" / "bench" / script), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for text in expected:
        assert text in run.stdout, run.stdout
