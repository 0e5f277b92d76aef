"""`tools/bench/run.py --smoke` runs every benchmark and writes every figure (no timing thresholds: figures
depend on the host; this checks that the suite runs against the current code and reports what it promises)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import mosquitto_path
from tests.support.program import REPO
from tools.bench.run import SMOKE, planned_keys

RUN = REPO / "tools" / "bench" / "run.py"


@pytest.mark.integration
@pytest.mark.slow
def test_smoke_profile_writes_every_figure_with_finite_ordered_numbers(tmp_path: Path) -> None:
    mosquitto_path()  # fails (never skips) when mosquitto is missing, saying how to install it
    out = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(RUN), "--smoke", "--json", str(out)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["profile"] == "smoke"
    figures = report["figures"]
    assert sorted(figures) == sorted(planned_keys(SMOKE))
    for key, figure in figures.items():
        numbers = [figure["median"], figure["p99"], figure["max"]]
        assert all(isinstance(x, int | float) and math.isfinite(x) for x in numbers), (key, figure)
        assert figure["median"] <= figure["p99"] <= figure["max"], (key, figure)
        assert figure["n"] >= 1, (key, figure)
        if figure["baseline"] is not None:  # a ratio to a figure measured in the same run
            assert figure["baseline"] in figures, (key, figure)
            ratio = figure["ratio_median"]
            assert (math.isfinite(ratio) if ratio is not None else figures[figure["baseline"]]["median"] == 0), figure
    printed = run.stdout.splitlines()
    for figure in figures.values():  # the table shows every figure
        assert any(line.startswith(figure["label"]) for line in printed), figure["label"]
    assert "[bench" not in run.stdout  # progress goes to stderr, the table to stdout
    assert "[bench" in run.stderr
