"""Supervision of the two links: a meter that stops answering or reads nonsense (MeterLost) and the
backend that goes away
(the fallback current), decided in the core. Part of `firmware.core.supervision` (which re-exports
these names and routes the readings here; its docstring states the rules).

Never: read a clock, sleep, log, do I/O, or import the shell or the HAL. `now` is the shell's
`loop.time()`. Standard: EVerest's evse_manager (initial_meter_value_timeout, the error model) and
OCPP's offline behaviour for the fallback current.
"""

from __future__ import annotations

from enum import Enum
from typing import Final, assert_never

from firmware.core.events import Fault, FaultCleared, FaultRaised, _check_finite
from firmware.core.supervision_events import (FallbackChanged, FaultChange, LinkChange, LinkDown, LinkUp,
                                              MeterReadFailed, MeterReadSucceeded, MeterRejected, OnlineChanged)


def _change(cid: int, fault: Fault, active: bool) -> FaultChange:
    if active:
        return FaultRaised(cid=cid, fault=fault)
    return FaultCleared(cid=cid, fault=fault)


# --- Meter staleness ------------------------------------------------------------------


class MeterState(Enum):
    WAITING = "waiting"  # no good read yet; the first-reading deadline runs
    FRESH = "fresh"  # a failure stale_after_s after the last good read loses it
    LOST = "lost"  # METER_LOST is raised; a good read clears it


MeterInput = type[MeterReadSucceeded] | type[MeterReadFailed] | None  # None: tick
_M = MeterState
#: (state, input) -> the states it may lead to.
METER_TRANSITIONS: Final[dict[tuple[MeterState, MeterInput], frozenset[MeterState]]] = {
    (_M.WAITING, MeterReadSucceeded): frozenset({_M.FRESH}),
    (_M.WAITING, MeterReadFailed): frozenset({_M.LOST}),  # at once
    (_M.WAITING, None): frozenset({_M.WAITING, _M.LOST}),  # at start + stale_after_s
    (_M.FRESH, MeterReadSucceeded): frozenset({_M.FRESH}),
    (_M.FRESH, MeterReadFailed): frozenset({_M.FRESH, _M.LOST}),  # LOST once stale
    (_M.FRESH, None): frozenset({_M.FRESH}),
    (_M.LOST, MeterReadSucceeded): frozenset({_M.FRESH}),
    (_M.LOST, MeterReadFailed): frozenset({_M.LOST}),
    (_M.LOST, None): frozenset({_M.LOST}),
}


#: A phase voltage outside this range is no plausible reading of a low-voltage grid (IEC 60038: 100-127 V
#: and 220-240 V nominal, +-10 %), but a meter misconfigured, miswired (phase-to-phase) or misread (wrong
#: scale or word order). 0.0 means "not measured" (a phase the model or the wiring does not have).
VOLTAGE_RANGE_V: Final = (80.0, 300.0)
#: The import register may read this much lower than the last accepted one (float32 registers carry
#: about 7 significant digits) before it counts as going backwards.
ENERGY_BACKWARDS_TOLERANCE_WH: Final = 10.0
ENERGY_RELATIVE_TOLERANCE: Final = 2.0**-23


def implausible(event: MeterReadSucceeded, last_import_wh: float | None) -> str | None:
    """Why a meter reading cannot be right, or None: a phase voltage out of VOLTAGE_RANGE_V, or the
    import register going backwards (billed energy must never decrease)."""
    low, high = VOLTAGE_RANGE_V
    for phase, volts in enumerate(event.voltages_v, start=1):
        if volts != 0.0 and not low <= volts <= high:
            return f"L{phase} voltage {volts:g} V is outside {low:g}..{high:g} V"
    energy = event.energy_wh_import
    if energy is not None and last_import_wh is not None:
        tolerance = max(ENERGY_BACKWARDS_TOLERANCE_WH, last_import_wh * ENERGY_RELATIVE_TOLERANCE)
        if energy < last_import_wh - tolerance:
            return f"import energy went backwards from {last_import_wh:.1f} Wh to {energy:.1f} Wh"
    return None


class MeterWatch:
    """Staleness and plausibility of one meter; created when its first reading is attempted (`now`).
    An implausible reading counts as a failed read (`MeterRejected` says why)."""

    __slots__ = ("_first_deadline", "_last_import_wh", "_last_ok", "_stale_after_s", "cid", "state")

    def __init__(self, cid: int, stale_after_s: float, now: float) -> None:
        _check_finite("stale_after_s", stale_after_s, 0.0)
        self.cid, self._stale_after_s = cid, stale_after_s
        self.state = MeterState.WAITING
        self._first_deadline = now + stale_after_s
        self._last_ok = now
        self._last_import_wh: float | None = None

    def handle(
        self, event: MeterReadSucceeded | MeterReadFailed, now: float
    ) -> list[FaultChange | MeterRejected]:
        match event:
            case MeterReadSucceeded():
                reason = implausible(event, self._last_import_wh)
                if reason is not None:
                    return [*self._failed(now), MeterRejected(cid=self.cid, reason=reason)]
                self._last_ok = now
                if event.energy_wh_import is not None:
                    self._last_import_wh = event.energy_wh_import
                return list(self._enter(MeterState.FRESH))
            case MeterReadFailed():
                return list(self._failed(now))
            case _:
                assert_never(event)

    def _failed(self, now: float) -> list[FaultChange]:
        stale = now - self._last_ok >= self._stale_after_s
        if self.state is MeterState.WAITING or (self.state is MeterState.FRESH and stale):
            return self._enter(MeterState.LOST)
        return []

    def tick(self, now: float) -> list[FaultChange]:
        if self.state is MeterState.WAITING and now >= self._first_deadline:
            return self._enter(MeterState.LOST)
        return []

    def next_deadline(self) -> float | None:
        """The first-reading deadline; once a reading came, failures decide."""
        return self._first_deadline if self.state is MeterState.WAITING else None

    def _enter(self, new: MeterState) -> list[FaultChange]:
        was_lost, self.state = self.state is MeterState.LOST, new
        if was_lost == (new is MeterState.LOST):
            return []
        return [_change(self.cid, Fault.METER_LOST, not was_lost)]


# --- Backend link fallback ------------------------------------------------------------


class LinkState(Enum):
    STARTING = "starting"  # offline, not yet reported (boot)
    ONLINE = "online"
    OFFLINE = "offline"  # the fallback deadline runs from the first LinkDown
    FALLBACK = "fallback"  # offline for fallback_after_s: the fallback applies


LinkInput = type[LinkUp] | type[LinkDown] | None  # None: tick
_L = LinkState
#: (state, input) -> the states it may lead to. LinkDown while offline keeps the
#: deadline of the first one.
LINK_TRANSITIONS: Final[dict[tuple[LinkState, LinkInput], frozenset[LinkState]]] = {
    (_L.STARTING, LinkUp): frozenset({_L.ONLINE}),
    (_L.STARTING, LinkDown): frozenset({_L.OFFLINE}),
    (_L.STARTING, None): frozenset({_L.STARTING}),
    (_L.ONLINE, LinkUp): frozenset({_L.ONLINE}),
    (_L.ONLINE, LinkDown): frozenset({_L.OFFLINE}),
    (_L.ONLINE, None): frozenset({_L.ONLINE}),
    (_L.OFFLINE, LinkUp): frozenset({_L.ONLINE}),
    (_L.OFFLINE, LinkDown): frozenset({_L.OFFLINE}),
    (_L.OFFLINE, None): frozenset({_L.OFFLINE, _L.FALLBACK}),
    (_L.FALLBACK, LinkUp): frozenset({_L.ONLINE}),
    (_L.FALLBACK, LinkDown): frozenset({_L.FALLBACK}),
    (_L.FALLBACK, None): frozenset({_L.FALLBACK}),
}


class Fallback:
    """Backend link: `online`, and the fallback current after `after_s` offline."""

    __slots__ = ("_current_a", "_deadline", "after_s", "state")

    def __init__(self, after_s: float, current_a: float) -> None:
        _check_finite("after_s", after_s, 0.0)
        _check_finite("current_a", current_a, 0.0)
        self.after_s, self._current_a = after_s, current_a
        self.state = LinkState.STARTING
        self._deadline: float | None = None

    @property
    def online(self) -> bool:
        return self.state is LinkState.ONLINE

    @property
    def current_a(self) -> float | None:
        """The fallback current in force (None: none)."""
        return self._current_a if self.state is LinkState.FALLBACK else None

    def handle(self, event: LinkUp | LinkDown, now: float) -> list[LinkChange]:
        """LinkUp: OnlineChanged(True), then FallbackChanged(None) if one applied."""
        match event:
            case LinkUp():
                self._deadline = None
                return self._enter(LinkState.ONLINE)
            case LinkDown():
                if self.state in (LinkState.STARTING, LinkState.ONLINE):
                    self._deadline = now + self.after_s
                    return self._enter(LinkState.OFFLINE)
                return []
            case _:
                assert_never(event)

    def tick(self, now: float) -> list[LinkChange]:
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            return self._enter(LinkState.FALLBACK)
        return []

    def next_deadline(self) -> float | None:
        return self._deadline

    def _enter(self, new: LinkState) -> list[LinkChange]:
        old, self.state = self.state, new
        out: list[LinkChange] = []
        if (old is _L.ONLINE) != (new is _L.ONLINE):
            out.append(OnlineChanged(online=new is _L.ONLINE))
        if (old is _L.FALLBACK) != (new is _L.FALLBACK):
            out.append(FallbackChanged(current_a=self.current_a))
        return out
