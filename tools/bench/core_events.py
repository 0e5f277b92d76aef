"""Benchmark: the latency of one `Charger.handle(event, at)` call of the sans-I/O core.

What is measured. A `Charger` with 8 EVSEs (cid 1..8, max_current_a alternating 16 / 32 A, 32 A cables)
is driven into charging with real events (PP 220 Ohm, CP samples at B, a token, CP samples at C). Then
N mixed events (default 20 000) are fed one at a time, round-robin over the EVSEs, and each
`Charger.handle` call is timed on its own with `time.perf_counter_ns`:

* `PilotSampled` at IEC 61851-1 Table A.4 nominal volts (B +9 V, C +6 V, low plateau -12 V with PWM on):
  each charging EVSE alternates C and B, so the pilot monitor debounces and the machine opens and
  closes its relay; whatever the EVSE state calls for to get back to charging (unplug A, plug B, -12 V
  while F is driven) is sent as samples too;
* `MeterSampled` with rising energy registers and per-phase currents below the offered current;
* `CurrentLimitChanged` alternating between the EVSE's maximum and half of it (the duty may change
  once per 5 s, so some changes wait for a deadline);
* occasionally a `FaultRaised` / `FaultCleared` pair (overtemperature), which ends the session; the
  EVSE is then unplugged, plugged in and authorized again (`AuthorizationGranted`).

`Charger.tick(at)` is called whenever `next_deadline()` is due; those calls are timed separately.
The core gets injected time: one `Instant` per event, whose monotonic time advances by 0.01 s (its UTC
is the Unix epoch plus that time); it is built before the timed call, as the shell builds one per step.
The real clock is read only to measure. The garbage collector stays enabled (as on the device), so it
shows in the maximum.
Figures are printed, never asserted: they depend on the machine.

Usage: .venv/bin/python tools/bench/core_events.py [--events N]
"""

from __future__ import annotations

import argparse
import collections
import gc
import itertools
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's firmware, not an installed one

from firmware.core.charger import Charger  # noqa: E402
from firmware.core.events import (  # noqa: E402
    AuthorizationGranted,
    CurrentLimitChanged,
    EmitSessionEvent,
    Event,
    Fault,
    FaultCleared,
    FaultRaised,
    MeterSampled,
    PilotSampled,
    PpChanged,
)
from firmware.core.evse import EvseConfig, EvseMachine, State  # noqa: E402
from firmware.core.instant import Instant  # noqa: E402
from tools.bench.stats import Figure, percentile, summarise  # noqa: E402

EVSES = 8
DEFAULT_EVENTS = 20_000
T0 = 1000.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the UTC of monotonic time 0
STEP_S = 0.01  # injected time between two events
PP_32A_OHMS = 220.0  # IEC 61851-1 Table B.2
PILOT_RUN = 6  # samples of one CP state before a charging EVSE switches C <-> B
FAULT_EVERY = 300  # per EVSE: one fault every FAULT_EVERY of its events ...
FAULT_FOR = 12  # ... cleared FAULT_FOR of its events later
#: Nominal high plateau per CP state, IEC 61851-1 Table A.4.
VOLTS_HI = {"A": 12.0, "B": 9.0, "C": 6.0, "F": -12.0}


@dataclass
class Lane:
    """The bench's script for one EVSE: what to send it next."""

    cid: int
    max_a: float
    n: int = 0  # events sent to this EVSE
    energy_wh: float = 0.0
    pilot_runs: int = 0
    limit_high: bool = True
    fault_clear_at: int | None = None
    token: int = 0


def instant(now: float) -> Instant:
    return Instant(mono=now, utc=EPOCH + timedelta(seconds=now))


def sample(cid: int, cp: str, pwm_on: bool) -> PilotSampled:
    hi = VOLTS_HI[cp]
    lo = -12.0 if pwm_on and cp in "ABC" else hi  # A.2.2: -12 V low plateau while oscillating
    return PilotSampled(cid=cid, volts_hi=hi, volts_lo=lo)


def pilot_event(lane: Lane, evse: EvseMachine) -> Event:
    """The CP sample an EV following this script produces, or the token it needs next."""
    state = evse.state
    if state in (State.FAULTED, State.REPLUGGING):
        return sample(lane.cid, "F", False)  # we drive F: the ADC reads our own -12 V
    if state is State.FINISHING:
        return sample(lane.cid, "A", evse.pwm_on)  # the driver unplugs
    if state in (State.AVAILABLE, State.WAITING_FOR_EV):
        return sample(lane.cid, "B", evse.pwm_on)  # ... and plugs in again
    if state is State.WAITING_FOR_AUTH:
        lane.token += 1
        return AuthorizationGranted(cid=lane.cid, id_token=f"TOKEN{lane.cid:02d}{lane.token:05d}")
    lane.pilot_runs += 1
    cp = "C" if (lane.pilot_runs // PILOT_RUN) % 2 == 0 else "B"
    return sample(lane.cid, cp, evse.pwm_on)


def next_event(lane: Lane, evse: EvseMachine) -> Event:
    k = lane.n
    lane.n += 1
    if lane.fault_clear_at is not None and k >= lane.fault_clear_at:
        lane.fault_clear_at = None
        return FaultCleared(cid=lane.cid, fault=Fault.OVERTEMPERATURE)
    if k % FAULT_EVERY == FAULT_EVERY - 1 and lane.fault_clear_at is None:
        lane.fault_clear_at = k + FAULT_FOR
        return FaultRaised(cid=lane.cid, fault=Fault.OVERTEMPERATURE)
    slot = k % 8
    if slot in (5, 6):
        if evse.relay_closed:
            lane.energy_wh += 0.5
        current_a = 0.9 * evse.offered_a if evse.relay_closed else 0.0
        return MeterSampled(cid=lane.cid, energy_wh_import=lane.energy_wh, currents_a=(current_a,) * 3)
    if slot == 7:
        lane.limit_high = not lane.limit_high
        return CurrentLimitChanged(cid=lane.cid, current_a=lane.max_a if lane.limit_high else lane.max_a / 2)
    return pilot_event(lane, evse)


def build() -> tuple[Charger, list[Lane], float]:
    """A charger with every EVSE charging, and the injected time reached."""
    counter = itertools.count(1)
    configs = [EvseConfig(cid=cid, max_current_a=16.0 if cid % 2 else 32.0) for cid in range(1, EVSES + 1)]
    charger = Charger(configs, new_session_id=lambda: f"bench-{next(counter)}")
    now = T0
    charger.start(instant(now))
    lanes = [Lane(cid=c.cid, max_a=c.max_current_a) for c in configs]
    for lane in lanes:
        evse = charger.evses[lane.cid]
        # The meter's first reading: an EVSE with a meter offers nothing before it (issue 8).
        script: list[Event] = [MeterSampled(cid=lane.cid, energy_wh_import=lane.energy_wh),
                               PpChanged(cid=lane.cid, ohms=PP_32A_OHMS)]
        script += [sample(lane.cid, "B", False)] * 5
        script += [AuthorizationGranted(cid=lane.cid, id_token=f"TOKEN{lane.cid:02d}")]
        script += [sample(lane.cid, "C", True)] * 5
        for event in script:
            now += STEP_S
            charger.handle(event, instant(now))
        if evse.state is not State.CHARGING:
            raise SystemExit(f"setup failed: EVSE {lane.cid} is {evse.state.name}, not CHARGING")
    return charger, lanes, now


def us(ns: float) -> str:
    return f"{ns / 1000:.1f} us"


@dataclass
class Measured:
    """What one run of the bench saw: each timed call (ns), the events sent and the session events emitted."""

    charger: Charger
    handle_ns: list[int]
    tick_ns: list[int]
    kinds: collections.Counter[str]
    emitted: collections.Counter[str]
    wall_ns: int


def measure(n_events: int) -> Measured:
    charger, lanes, now = build()
    handle_ns: list[int] = []
    tick_ns: list[int] = []
    kinds: collections.Counter[str] = collections.Counter()
    emitted: collections.Counter[str] = collections.Counter()
    clock = time.perf_counter_ns
    handle, tick = charger.handle, charger.tick

    def count(actions: Sequence[object]) -> None:
        for action in actions:
            if isinstance(action, EmitSessionEvent):
                emitted[action.event.value] += 1

    gc.collect()
    wall_start = clock()
    for i in range(n_events):
        now = T0 + (i + 1000) * STEP_S
        at = instant(now)
        deadline = charger.next_deadline()
        if deadline is not None and deadline <= now:
            start = clock()
            actions = tick(at)
            tick_ns.append(clock() - start)
            count(actions)
        lane = lanes[i % EVSES]
        event = next_event(lane, charger.evses[lane.cid])
        kinds[type(event).__name__] += 1
        start = clock()
        actions = handle(event, at)
        handle_ns.append(clock() - start)
        count(actions)
    return Measured(charger, handle_ns, tick_ns, kinds, emitted, clock() - wall_start)


def figures(n_events: int) -> list[Figure]:
    """The core's figures for tools/bench/run.py (us per call)."""
    m = measure(n_events)
    internal = [cid for cid, evse in m.charger.evses.items() if Fault.INTERNAL in evse.faults]
    if internal:  # the machine caught an exception of its own: a bug, not a figure
        raise SystemExit(f"core_events: internal fault (a crash inside the machine) on EVSE {internal}")
    out = [summarise("core.handle_event", f"core: one event, Charger.handle ({EVSES} EVSEs)", "us",
                     [ns / 1000 for ns in m.handle_ns])]
    if m.tick_ns:
        out.append(summarise("core.tick", f"core: Charger.tick when a deadline is due ({EVSES} EVSEs)", "us",
                             [ns / 1000 for ns in m.tick_ns]))
    return out


def run(n_events: int) -> int:
    m = measure(n_events)
    charger, handle_ns, tick_ns, kinds, emitted, wall_ns = (m.charger, m.handle_ns, m.tick_ns, m.kinds, m.emitted,
                                                            m.wall_ns)
    handle_ns.sort()
    total_ns = sum(handle_ns)
    print(f"core_events: Charger.handle, {EVSES} EVSEs, {n_events} events")
    print(f"python: {platform.python_implementation()} {platform.python_version()} "
          f"on {platform.system()} {platform.machine()}")
    print("events: " + ", ".join(f"{name} {n}" for name, n in kinds.most_common()))
    print(f"handle: median {us(percentile(handle_ns, 50))}, p99 {us(percentile(handle_ns, 99))}, "
          f"max {us(handle_ns[-1])}, mean {us(total_ns / len(handle_ns))}")
    print(f"throughput: {n_events / (total_ns / 1e9):,.0f} events/s in handle "
          f"({n_events / (wall_ns / 1e9):,.0f} events/s wall, bench overhead included)")
    if tick_ns:
        tick_ns.sort()
        print(f"tick: {len(tick_ns)} calls, median {us(percentile(tick_ns, 50))}, "
              f"p99 {us(percentile(tick_ns, 99))}, max {us(tick_ns[-1])}")
    else:
        print("tick: 0 calls")
    print("session events: " + ", ".join(f"{name} {n}" for name, n in sorted(emitted.items())))
    states = collections.Counter(evse.state.name for evse in charger.evses.values())
    print("final states: " + ", ".join(f"{name} {n}" for name, n in sorted(states.items())))
    internal = [cid for cid, evse in charger.evses.items() if Fault.INTERNAL in evse.faults]
    if internal:  # the machine caught an exception of its own: a bug, not a figure
        print(f"ERROR: internal fault (a crash inside the machine) on EVSE {internal}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, metavar="N",
                        help=f"number of timed events (default {DEFAULT_EVENTS})")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be >= 1")
    return run(args.events)


if __name__ == "__main__":
    raise SystemExit(main())
