"""One point in time as the core sees it: the loop's monotonic seconds and the wall clock's UTC, together.

What it is for: the shell reads both clocks once per step (`firmware.aio.loop_time()` and `utc_now()`) and
hands the charger one `Instant` (its parameter `at`). Machine timers and deadlines use `mono`; reservation
expiry, the local list's expiry and the book use `utc` (absolute times from the backend, API.md §7).
Where the core needs the UTC of another monotonic time, or the monotonic time of a UTC deadline, it asks
the instant (`utc_at`, `mono_at`), which assumes both clocks run at the same rate from this point on.

What it must never do: read a clock (the shell does; DESIGN.md principle 1), or hold a naive datetime
(`utc` must be aware: ValueError otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class Instant:
    """`mono`: monotonic seconds (the shell's `loop.time()`); `utc`: the same moment as an aware datetime."""

    mono: float
    utc: datetime

    def __post_init__(self) -> None:
        if self.utc.utcoffset() is None:
            raise ValueError("utc must be an aware datetime")

    def later(self, seconds: float) -> Instant:
        """The instant `seconds` after this one (before it when negative), on both clocks."""
        return Instant(mono=self.mono + seconds, utc=self.utc + timedelta(seconds=seconds))

    def utc_at(self, mono: float) -> datetime:
        """The UTC time of monotonic time `mono`, counted from this instant."""
        return self.utc + timedelta(seconds=mono - self.mono)

    def mono_at(self, utc: datetime) -> float:
        """The monotonic time of UTC time `utc` (e.g. a reservation's expiry), counted from this instant."""
        return self.mono + (utc - self.utc).total_seconds()
