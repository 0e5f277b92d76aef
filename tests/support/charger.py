"""Builders for tests of the charger (firmware/core/charger.py), shared by every core test that drives one.

* `Clock`: monotonic seconds -> `Instant`, with a fixed UTC for one monotonic time and both clocks running
  at the same rate. `at` is the clock of the reservation tests: monotonic `M0` is `UTC0`. A charger test
  that gives no UTC of its own uses `Clock()`: UTC is the Unix epoch plus the monotonic time.
* `build(configs)`: a started charger with deterministic session ids whose meters have given their first
  reading; `charger(*connectors)`: the same for EVSEs 1.. with those connector types.
* `plug`, `charging` (plug -> token -> charging), `reserve`, and readers of the outputs (`events`,
  `decided`).

Real parts only: no mocks, no clock, no sleeps (STYLE.md B7).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from firmware.core.auth import AuthSettings
from firmware.core.charger import Charger, Output
from firmware.core.events import AuthDecided, EmitSessionEvent, MeterSampled, PilotChanged, PpChanged, SessionEvent
from firmware.core.evse import EvseConfig
from firmware.core.instant import Instant
from firmware.core.pilot import Cp
from firmware.core.reservations import Reservation, ReservationResult

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
UTC0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
M0 = 1000.0  # monotonic time at UTC0
HOUR = timedelta(hours=1)
T2 = ("sType2",)
PP_32A_OHMS = 220.0  # IEC 61851-1 Table B.2


@dataclass(frozen=True, slots=True)
class Clock:
    """`Clock(mono0, utc0)(mono)`: the instant at monotonic `mono`, where `mono0` is `utc0`."""

    mono0: float = 0.0
    utc0: datetime = EPOCH

    def __call__(self, mono: float) -> Instant:
        return Instant(mono=mono, utc=self.utc0 + timedelta(seconds=mono - self.mono0))


at = Clock(M0, UTC0)


def build(configs: Iterable[EvseConfig], *, clock: Clock = at, start: float = M0, session_prefix: str = "s",
          energy_wh: float = 0.0, auth: AuthSettings | None = None) -> Charger:
    """A charger started at `clock(start)`, session ids `<session_prefix>-1`, `-2`, ...; every meter has
    given its first reading (`energy_wh`), so sessions can start (tests/core/test_evse_meter.py)."""
    counter = itertools.count(1)
    c = Charger(configs, new_session_id=lambda: f"{session_prefix}-{next(counter)}", auth=auth or AuthSettings())
    c.start(clock(start))
    for cid in c.evses:
        c.handle(MeterSampled(cid=cid, energy_wh_import=energy_wh), clock(start))
    return c


def charger(*connectors: tuple[str, ...], auth: AuthSettings | None = None) -> Charger:
    """EVSEs 1, 2, ... with these connector types, started at `at(M0)`."""
    return build([EvseConfig(cid=i + 1, connectors=conn) for i, conn in enumerate(connectors)], auth=auth)


def plug(c: Charger, cid: int, cp: Cp, when: Instant) -> list[Output]:
    """A 32 A cable, then the EV's CP state (debounced already)."""
    out = c.handle(PpChanged(cid=cid, ohms=PP_32A_OHMS), when)
    return out + c.handle(PilotChanged(cid=cid, cp=cp), when)


def charging(c: Charger, cid: int, when: Instant, id_token: str = "AA11") -> None:
    """Plug in (B), present a token the charger accepts, the EV asks for power (C): the relay closes."""
    plug(c, cid, Cp.B, when)
    c.present_token(cid, id_token, when)
    c.handle(PilotChanged(cid=cid, cp=Cp.C), when)
    assert c.evses[cid].relay_closed


def reserve(c: Charger, when: Instant | None = None, **fields: object) -> list[Output]:
    """An accepted `reserve_now` (at `at(M0)` unless told; expiry UTC0 + 1 h unless told)."""
    fields.setdefault("expiry_utc", UTC0 + HOUR)
    result, uuid, out = c.reserve_now(Reservation(**fields), at(M0) if when is None else when)  # type: ignore[arg-type]
    assert result is ReservationResult.ACCEPTED
    assert uuid
    return out


def events(out: list[Output], kind: SessionEvent) -> list[EmitSessionEvent]:
    return [a for a in out if isinstance(a, EmitSessionEvent) and a.event is kind]


def decided(out: list[Output]) -> AuthDecided:
    (decision,) = [a for a in out if isinstance(a, AuthDecided)]
    return decision
