"""`EvseConfig`: one EVSE's settings, checked when built.

The defaults and bounds are IEC 61851-1:2017 limits (Table A.6: F for at least 300 ms, ramp-down
at most 6 s, one duty change per 5 s; A.2.3: 6..80 A). A config outside them is refused here
(ValueError), so the machine never runs with a timing the standard forbids. This module must never
relax a bound, do I/O or read a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.core.pilot import MAX_CURRENT_A, MIN_CURRENT_A


@dataclass(frozen=True, slots=True, kw_only=True)
class EvseConfig:
    """Per-EVSE settings. Times in seconds; the defaults are IEC 61851-1 Table A.6 limits."""

    cid: int
    connectors: tuple[str, ...] = ("Unknown",)  # connector types, e.g. ("sType2",); "Unknown" fits all
    max_current_a: float = 32.0
    phases: int = 3
    socket_outlet: bool = True  # False: tethered cable, PP not used
    cable_max_current_a: float | None = None  # tethered cable rating (None: max_current_a)
    ventilation_available: bool = False
    phase_switching: bool = False  # the board can switch between 1 and 3 phases
    has_meter: bool = True  # False: no energy meter; session events then carry no energy fields
    rcd_self_test: bool = False  # test the RCD (RunRcdSelfTest) at every plug-in; no charging until it passes
    connection_timeout_s: float = 60.0
    stop_timeout_s: float = 6.0
    fault_hold_s: float = 0.3
    pwm_min_interval_s: float = 5.0
    overcurrent_tolerance_pct: float = 10.0
    overcurrent_tolerance_a: float = 0.5
    overcurrent_timeout_s: float = 7.0

    def __post_init__(self) -> None:
        if isinstance(self.cid, bool) or not isinstance(self.cid, int) or self.cid < 1:
            raise ValueError(f"cid must be a positive integer, got {self.cid!r}")
        if not self.connectors or not all(isinstance(c, str) and c for c in self.connectors):
            raise ValueError(f"connectors must be a non-empty list of connector types, got {self.connectors!r}")
        if not MIN_CURRENT_A <= self.max_current_a <= MAX_CURRENT_A:
            raise ValueError(f"max_current_a must be {MIN_CURRENT_A:g}..{MAX_CURRENT_A:g}, got {self.max_current_a}")
        if self.phases not in (1, 3):
            raise ValueError(f"phases must be 1 or 3, got {self.phases}")
        if self.fault_hold_s < 0.3:
            raise ValueError("fault_hold_s must be >= 0.3 (IEC 61851-1: F for at least 300 ms)")
        if not 0 < self.stop_timeout_s <= 6.0:
            raise ValueError("stop_timeout_s must be in (0, 6] (IEC 61851-1 Table A.6)")
        if self.pwm_min_interval_s < 5.0:
            raise ValueError("pwm_min_interval_s must be >= 5 (IEC 61851-1: one duty change per 5 s)")
        for name in ("connection_timeout_s", "overcurrent_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
