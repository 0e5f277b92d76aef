"""Instant (firmware/core/instant.py): one point in time on both clocks, validated, and shifted."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from firmware.core.instant import Instant

UTC0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
AT = Instant(mono=1000.0, utc=UTC0)


def test_a_naive_utc_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        Instant(mono=0.0, utc=datetime(2026, 11, 21, 8, 0))


def test_any_aware_time_is_taken_as_it_is() -> None:
    cet = datetime(2026, 11, 21, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    assert Instant(mono=5.0, utc=cet).utc == UTC0


def test_an_instant_is_a_frozen_value() -> None:
    assert Instant(mono=1000.0, utc=UTC0) == AT
    with pytest.raises(dataclasses.FrozenInstanceError):
        AT.mono = 1.0  # type: ignore[misc]


def test_later_shifts_both_clocks() -> None:
    assert AT.later(90.5) == Instant(mono=1090.5, utc=UTC0 + timedelta(seconds=90.5))
    assert AT.later(-10) == Instant(mono=990.0, utc=UTC0 - timedelta(seconds=10))


def test_utc_at_and_mono_at_convert_from_the_instant() -> None:
    assert AT.utc_at(1060.0) == UTC0 + timedelta(minutes=1)
    assert AT.mono_at(UTC0 + timedelta(hours=1)) == 4600.0
    assert AT.mono_at(AT.utc_at(1234.5)) == 1234.5
