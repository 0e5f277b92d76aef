"""The figures of the benchmarks: samples summarised as median, p99 and max, a ratio to a baseline, a table.

What it is for: every benchmark of tools/bench reports through `Figure` (tools/bench/run.py prints them
as one table and writes them to JSON), and every script that prints figures alone uses `percentile`
from here.

What it must never do: judge a figure (no threshold, no pass/fail): a `target` is a note for the
reader, never compared.

Standard: nearest-rank percentiles (the smallest sample with at least q % of the samples at or below
it); with fewer than 100 samples p99 is the maximum.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile `q` (0..100) of `values` (any order)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no samples")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Figure:
    """One figure: the summary of `n` samples in `unit`, and its ratio to a baseline figure if it has one."""

    key: str
    label: str
    unit: str
    median: float
    p99: float
    max: float
    n: int
    baseline: str | None = None  # the key of the figure this one is compared with (measured in the same run)
    ratio_median: float | None = None
    ratio_p99: float | None = None
    target: str | None = None  # what the lead reports against; printed, never checked
    note: str | None = None

    def as_json(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "key"}


def summarise(key: str, label: str, unit: str, samples: Sequence[float], *, target: str | None = None,
              note: str | None = None) -> Figure:
    if not samples:
        raise ValueError(f"{key}: no samples")
    return Figure(key=key, label=label, unit=unit, median=statistics.median(samples), p99=percentile(samples, 99),
                  max=max(samples), n=len(samples), target=target, note=note)


def compared(figure: Figure, baseline: Figure) -> Figure:
    """`figure` with its ratio to `baseline` (medians, and p99s)."""
    def ratio(a: float, b: float) -> float | None:
        return a / b if b > 0 else None
    return Figure(**{**asdict(figure), "baseline": baseline.key, "ratio_median": ratio(figure.median, baseline.median),
                     "ratio_p99": ratio(figure.p99, baseline.p99)})


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 10_000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def table(figures: Sequence[Figure]) -> str:
    """The figures as one fixed-width text table (one line each)."""
    head = ("figure", "unit", "n", "median", "p99", "max", "x baseline (med/p99)", "target")
    rows = []
    for f in figures:
        ratio = "" if f.ratio_median is None else f"{f.ratio_median:.2f} / {f.ratio_p99 or 0:.2f}"
        rows.append((f.label, f.unit, str(f.n), _number(f.median), _number(f.p99), _number(f.max), ratio,
                     f.target or ""))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    right = {2, 3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                strict=True))).rstrip()
    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])
