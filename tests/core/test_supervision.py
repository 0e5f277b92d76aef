"""Tests of firmware/core/supervision.py: the input, relay, PP, meter and link
decisions that the shell made before issue 9, now in the core with time passed in.

Tables give the rules scenario by scenario; every grace, debounce and deadline is
tested with `now` on either side (to the ulp where the comparison is exact).
Hypothesis properties compare each part with a transcription of the shell code it
replaces (firmware/app.py at f49614c: `_supervise_inputs`, `_sample_pilot`,
`_first_meter_readings` + `_meter_task`, `_arm_fallback` + `_dispatch`), so the shell
can switch to these classes without a change in behaviour. No asyncio, sleeps, mocks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.core.events import Fault, FaultCleared, FaultRaised, PpChanged
from firmware.core.supervision import (
    LINK_TRANSITIONS,
    METER_TRANSITIONS,
    PP_DEBOUNCE_S,
    RELAY_FEEDBACK_GRACE_S,
    Fallback,
    LinkState,
    MeterState,
    MeterWatch,
    PpDebounce,
    RelayFeedback,
    SafetyInputs,
    Supervisor,
    same_pp,
)
from firmware.core.supervision_events import (
    FallbackChanged,
    InputsSensed,
    LinkDown,
    LinkUp,
    LockSensed,
    MeterReadFailed,
    MeterReadSucceeded,
    MeterRejected,
    OnlineChanged,
    Output,
    OutputFailed,
    PpSampled,
    RelaySensed,
)

CID = 1
T = 1000.0  # a monotonic time base well away from 0
EPS = 1e-3
G = RELAY_FEEDBACK_GRACE_S
D = PP_DEBOUNCE_S
STALE_S = 5.0  # config.py default meter_stale_after_s
FALLBACK_S = 60.0  # config.py default mqtt.fallback_after_s
FALLBACK_A = 6.0  # config.py default mqtt.fallback_current_a
W, S = Fault.RELAY_WELDED, Fault.RELAY_STUCK_OPEN
RCD, HOT, LOST = Fault.RCD_TRIPPED, Fault.OVERTEMPERATURE, Fault.METER_LOST


def up(fault: Fault, cid: int = CID) -> FaultRaised:
    return FaultRaised(cid=cid, fault=fault)


def down(fault: Fault, cid: int = CID) -> FaultCleared:
    return FaultCleared(cid=cid, fault=fault)


def first_due(since: float, span: float) -> float:
    """The smallest float `now` with `now - since >= span` (the exact edge)."""
    now = since + span
    while now - since < span:
        now = math.nextafter(now, math.inf)
    while math.nextafter(now, -math.inf) - since >= span:
        now = math.nextafter(now, -math.inf)
    return now


def before(now: float) -> float:
    return math.nextafter(now, -math.inf)


# --- events ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: InputsSensed(cid=0, rcd_tripped=False, overtemperature=False),
        lambda: RelaySensed(cid=True, commanded_closed=False, feedback_closed=None),
        lambda: PpSampled(cid=-1, ohms=None),
        lambda: PpSampled(cid=CID, ohms=-1.0),
        lambda: PpSampled(cid=CID, ohms=math.nan),
        lambda: PpSampled(cid=CID, ohms=math.inf),  # PpChanged would refuse it too
        lambda: MeterReadSucceeded(cid=0),
        lambda: MeterReadFailed(cid=1.5),  # type: ignore[arg-type]
    ],
)
def test_malformed_inputs_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each message is the field's own
        make()


def test_inputs_are_frozen_keyword_only_values() -> None:
    a = PpSampled(cid=2, ohms=0.0)
    assert a == PpSampled(cid=2, ohms=0.0)
    assert LinkUp() == LinkUp()
    with pytest.raises(AttributeError):
        a.ohms = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        PpSampled(2, 0.0)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "make",
    [
        lambda: RelayFeedback(CID, grace_s=-0.1),
        lambda: PpDebounce(CID, debounce_s=math.nan),
        lambda: MeterWatch(CID, stale_after_s=-1.0, now=T),
        lambda: Fallback(after_s=math.inf, current_a=6.0),
        lambda: Fallback(after_s=60.0, current_a=-6.0),
    ],
)
def test_bad_settings_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        make()


# --- RCD and over-temperature ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rounds", "expected"),
    [
        ([(False, False)], [[]]),
        ([(True, True)], [[up(RCD), up(HOT)]]),  # RCD first, as the shell's round
        ([(True, False), (True, False), (False, False)], [[up(RCD)], [], [down(RCD)]]),
        (
            [(False, True), (True, True), (False, False)],
            [[up(HOT)], [up(RCD)], [down(RCD), down(HOT)]],
        ),
    ],
)
def test_rcd_and_overtemperature_change_on_change(
    rounds: list[tuple[bool, bool]], expected: list[list[Output]]
) -> None:
    inputs = SafetyInputs(CID)
    got = [
        inputs.handle(InputsSensed(cid=CID, rcd_tripped=r, overtemperature=o), T + i)
        for i, (r, o) in enumerate(rounds)
    ]
    assert got == expected


# --- relay feedback -------------------------------------------------------------------

#: (name, [(now, commanded_closed, feedback_closed, expected)])
RELAY_SCENARIOS: list[
    tuple[str, list[tuple[float, bool, bool | None, list[Output]]]]
] = [
    (
        "welded after the grace",
        [
            (T, False, True, []),
            (T + G - EPS, False, True, []),
            (T + G + EPS, False, True, [up(W)]),
        ],
    ),
    (
        "stuck open after the grace",
        [
            (T, True, False, []),
            (T + G - EPS, True, False, []),
            (T + G + EPS, True, False, [up(S)]),
        ],
    ),
    (
        "welded stays while commanded closed and closed",
        [
            (T, False, True, []),
            (T + 1, False, True, [up(W)]),
            (T + 2, True, True, []),
            (T + 3, True, True, []),
        ],
    ),
    (
        "welded clears when it opens while commanded open",
        [
            (T, False, True, []),
            (T + 1, False, True, [up(W)]),
            (T + 2, False, False, [down(W)]),
        ],
    ),
    (
        "welded clears when it opens while commanded closed; then stuck open",
        [
            (T, False, True, []),
            (T + 1, False, True, [up(W)]),
            (T + 2, True, True, []),
            (T + 3, True, False, [down(W)]),
            (T + 3 + G - EPS, True, False, []),
            (T + 3 + G + EPS, True, False, [up(S)]),
        ],
    ),
    (
        "welded clears when the feedback reads None (today's rule)",
        [
            (T, False, True, []),
            (T + 1, False, True, [up(W)]),
            (T + 2, False, None, [down(W)]),
        ],
    ),
    (
        "stuck open clears once commanded open (today's latch changes nothing)",
        [
            (T, True, False, []),
            (T + 1, True, False, [up(S)]),
            (T + 1.05, False, False, [down(S)]),
            (T + 2, False, False, []),
        ],
    ),
    (
        "stuck open clears when it closes",
        [
            (T, True, False, []),
            (T + 1, True, False, [up(S)]),
            (T + 2, True, True, [down(S)]),
        ],
    ),
    (
        "stuck open clears when the feedback reads None",
        [
            (T, True, False, []),
            (T + 1, True, False, [up(S)]),
            (T + 2, True, None, [down(S)]),
        ],
    ),
    (
        "a mismatch shorter than the grace is the contactor moving",
        [
            (T, True, False, []),
            (T + 0.2, True, True, []),
            (T + 0.25, True, False, []),
            (T + 0.25 + G - EPS, True, False, []),
            (T + 0.25 + G + EPS, True, False, [up(S)]),
        ],
    ),
    (
        "a mismatch that changes kind keeps its start (the shell's setdefault)",
        [(T, False, True, []), (T + G + EPS, True, False, [up(S)])],
    ),
    (
        "feedback not wired never faults",
        [
            (T, True, None, []),
            (T + 10, True, None, []),
            (T + 11, False, None, []),
            (T + 20, False, None, []),
        ],
    ),
    (
        "agreement never faults",
        [(T, True, True, []), (T + 10, False, False, []), (T + 20, True, True, [])],
    ),
]


@pytest.mark.parametrize(
    ("name", "steps"), RELAY_SCENARIOS, ids=[s[0] for s in RELAY_SCENARIOS]
)
def test_relay_feedback(
    name: str, steps: list[tuple[float, bool, bool | None, list[Output]]]
) -> None:
    relay = RelayFeedback(CID)
    for now, commanded, feedback, expected in steps:
        assert (
            relay.handle(
                RelaySensed(
                    cid=CID, commanded_closed=commanded, feedback_closed=feedback
                ),
                now,
            )
            == expected
        ), (name, now)


@pytest.mark.parametrize(
    ("commanded", "feedback", "fault"), [(False, True, W), (True, False, S)]
)
def test_relay_grace_edge_to_the_ulp(
    commanded: bool, feedback: bool, fault: Fault
) -> None:
    edge = first_due(T, G)
    for now, expected in ((before(edge), []), (edge, [up(fault)])):
        relay = RelayFeedback(CID)
        sensed = RelaySensed(
            cid=CID, commanded_closed=commanded, feedback_closed=feedback
        )
        relay.handle(sensed, T)
        assert relay.handle(sensed, now) == expected


def test_a_zero_grace_faults_on_the_first_mismatching_round_only() -> None:
    relay = RelayFeedback(CID, grace_s=0.0)
    assert (
        relay.handle(
            RelaySensed(cid=CID, commanded_closed=True, feedback_closed=None), T
        )
        == []
    )
    assert relay.handle(
        RelaySensed(cid=CID, commanded_closed=True, feedback_closed=False), T
    ) == [up(S)]


# --- PP debounce ----------------------------------------------------------------------

#: (name, [(now, ohms, expected)])
PP_SCENARIOS: list[tuple[str, list[tuple[float, float | None, list[PpChanged]]]]] = [
    ("the first reading at once", [(T, 220.0, [PpChanged(cid=CID, ohms=220.0)])]),
    ("the first reading open at once", [(T, None, [PpChanged(cid=CID, ohms=None)])]),
    (
        "within 5 % is the same cable",
        [(T, 220.0, [PpChanged(cid=CID, ohms=220.0)]), (T + 1, 230.0, [])],
    ),
    (
        "a new cable after the debounce, with the latest reading",
        [
            (T, 220.0, [PpChanged(cid=CID, ohms=220.0)]),
            (T + 1, 680.0, []),
            (T + 1 + D - EPS, 690.0, []),
            (T + 1 + D + EPS, 700.0, [PpChanged(cid=CID, ohms=700.0)]),
        ],
    ),
    (
        "a glitch back to the cable cancels the candidate",
        [
            (T, 220.0, [PpChanged(cid=CID, ohms=220.0)]),
            (T + 1, 680.0, []),
            (T + 1.05, 221.0, []),
            (T + 1.1, 680.0, []),
            (T + 1.1 + D - EPS, 680.0, []),
            (T + 1.1 + D + EPS, 680.0, [PpChanged(cid=CID, ohms=680.0)]),
        ],
    ),
    (
        "a different candidate restarts the debounce",
        [
            (T, 220.0, [PpChanged(cid=CID, ohms=220.0)]),
            (T + 1, 680.0, []),
            (T + 1.05, 1500.0, []),
            (T + 1 + D + EPS, 1500.0, []),
            (T + 1.05 + D + EPS, 1500.0, [PpChanged(cid=CID, ohms=1500.0)]),
        ],
    ),
    (
        "the candidate is judged against its first reading, so a drift restarts it",
        [
            (T, 220.0, [PpChanged(cid=CID, ohms=220.0)]),
            (T + 1, 680.0, []),
            (T + 1.05, 710.0, []),
            (T + 1 + D + EPS, 740.0, []),
            (T + 1 + 2 * D + EPS, 740.0, [PpChanged(cid=CID, ohms=740.0)]),
        ],
    ),
    (
        "an unplug reads open after the debounce",
        [
            (T, 220.0, [PpChanged(cid=CID, ohms=220.0)]),
            (T + 1, None, []),
            (T + 1 + D - EPS, None, []),
            (T + 1 + D + EPS, None, [PpChanged(cid=CID, ohms=None)]),
        ],
    ),
    (
        "a cable after open",
        [
            (T, None, [PpChanged(cid=CID, ohms=None)]),
            (T + 1, 100.0, []),
            (T + 1 + D + EPS, 100.0, [PpChanged(cid=CID, ohms=100.0)]),
        ],
    ),
    (
        "5 % of the reported cable: 105.2 is a new one after 100 (not 100 after 105.2)",
        [
            (T, 100.0, [PpChanged(cid=CID, ohms=100.0)]),
            (T + 1, 105.0, []),
            (T + 2, 105.2, []),
            (T + 2 + D + EPS, 105.2, [PpChanged(cid=CID, ohms=105.2)]),
            (T + 3, 100.0, []),
        ],
    ),
    (
        "5 % of the candidate's first reading",
        [
            (T, 1500.0, [PpChanged(cid=CID, ohms=1500.0)]),
            (T + 1, 100.0, []),
            (T + 1 + D + EPS, 105.2, []),
            (T + 1 + 2 * D + EPS, 105.2, [PpChanged(cid=CID, ohms=105.2)]),
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "steps"), PP_SCENARIOS, ids=[s[0] for s in PP_SCENARIOS]
)
def test_pp_debounce(
    name: str, steps: list[tuple[float, float | None, list[PpChanged]]]
) -> None:
    pp = PpDebounce(CID)
    for now, ohms, expected in steps:
        assert pp.handle(PpSampled(cid=CID, ohms=ohms), now) == expected, (name, now)
        if expected:
            assert pp.ohms == ohms
            assert not pp.settling


def test_pp_debounce_edge_to_the_ulp_and_settling() -> None:
    edge = first_due(T, D)
    for now, expected in ((before(edge), []), (edge, [PpChanged(cid=CID, ohms=680.0)])):
        pp = PpDebounce(CID)
        pp.handle(PpSampled(cid=CID, ohms=220.0), T - 1)
        assert not pp.settling
        assert pp.ohms == 220.0
        pp.handle(PpSampled(cid=CID, ohms=680.0), T)
        assert pp.settling
        assert pp.handle(PpSampled(cid=CID, ohms=680.0), now) == expected
        assert pp.settling is not bool(expected)


def test_pp_nothing_reported_yet() -> None:
    pp = PpDebounce(CID)
    assert pp.ohms is None
    assert not pp.settling


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (None, None, True),
        (None, 0.0, False),
        (0.0, None, False),
        (105.0, 100.0, True),  # 5 % of b, inclusive
        (95.0, 100.0, True),
        (105.5, 100.0, False),
        (100.0, 105.2, True),  # asymmetric: 5 % of the second argument
        (105.2, 100.0, False),
        (0.05, 0.0, True),  # at least 5 % of 1 Ohm
        (0.06, 0.0, False),
        (1500.0, 220.0, False),
    ],
)
def test_same_pp(a: float | None, b: float | None, same: bool) -> None:
    assert same_pp(a, b) is same


# --- meter staleness ------------------------------------------------------------------

OK, FAIL, TICK = "ok", "fail", "tick"

#: (name, [(now, what, expected)]); the watch starts at T.
METER_SCENARIOS: list[tuple[str, list[tuple[float, str, list[Output]]]]] = [
    ("the first reading in time", [(T + 1, OK, []), (T + STALE_S + 1, TICK, [])]),
    (
        "a failed first reading is lost at once",
        [(T + 0.1, FAIL, [up(LOST)]), (T + 1, OK, [down(LOST)])],
    ),
    (
        "a first reading that never comes is lost at the deadline",
        [
            (T + STALE_S - EPS, TICK, []),
            (T + STALE_S, TICK, [up(LOST)]),
            (T + STALE_S + 1, FAIL, []),
            (T + STALE_S + 2, TICK, []),
            (T + STALE_S + 3, OK, [down(LOST)]),
        ],
    ),
    (
        "a failure before stale_after_s since the last good read is nothing",
        [(T + 1, OK, []), (T + 1 + STALE_S - EPS, FAIL, [])],
    ),
    (
        "a failure stale_after_s after the last good read loses it, once",
        [
            (T + 1, OK, []),
            (T + 2, FAIL, []),
            (T + 1 + STALE_S + EPS, FAIL, [up(LOST)]),
            (T + 1 + STALE_S + 2, FAIL, []),
            (T + 20, OK, [down(LOST)]),
            (T + 21, OK, []),
        ],
    ),
    (
        "a good read restarts the staleness",
        [
            (T + 1, OK, []),
            (T + 4, OK, []),
            (T + 1 + STALE_S + EPS, FAIL, []),
            (T + 4 + STALE_S + EPS, FAIL, [up(LOST)]),
        ],
    ),
    (
        "after a reading, silence alone is no loss (today: failures decide)",
        [(T + 1, OK, []), (T + 100, TICK, [])],
    ),
]


def meter_step(
    watch: MeterWatch, now: float, what: str
) -> list[FaultRaised | FaultCleared]:
    if what == TICK:
        return watch.tick(now)
    return watch.handle(
        MeterReadSucceeded(cid=CID) if what == OK else MeterReadFailed(cid=CID), now
    )


@pytest.mark.parametrize(
    ("name", "steps"), METER_SCENARIOS, ids=[s[0] for s in METER_SCENARIOS]
)
def test_meter_watch(name: str, steps: list[tuple[float, str, list[Output]]]) -> None:
    watch = MeterWatch(CID, STALE_S, T)
    for now, what, expected in steps:
        assert meter_step(watch, now, what) == expected, (name, now)


def test_first_reading_deadline_with_now_on_either_side() -> None:
    watch = MeterWatch(CID, STALE_S, T)
    deadline = watch.next_deadline()
    assert deadline == T + STALE_S
    assert watch.tick(before(deadline)) == []
    assert watch.next_deadline() == deadline
    assert watch.tick(deadline) == [up(LOST)]
    assert watch.next_deadline() is None
    assert watch.state is MeterState.LOST


@pytest.mark.parametrize("first", [OK, FAIL])
def test_any_first_outcome_ends_the_deadline(first: str) -> None:
    watch = MeterWatch(CID, STALE_S, T)
    meter_step(watch, T + 1, first)
    assert watch.next_deadline() is None


def test_staleness_edge_to_the_ulp() -> None:
    edge = first_due(T + 1, STALE_S)
    for now, expected in ((before(edge), []), (edge, [up(LOST)])):
        watch = MeterWatch(CID, STALE_S, T)
        watch.handle(MeterReadSucceeded(cid=CID), T + 1)
        assert watch.handle(MeterReadFailed(cid=CID), now) == expected


# --- backend link fallback ------------------------------------------------------------

UP, DOWN = "up", "down"

#: (name, [(now, what, expected)]); the boot ends at T with LinkDown (today's
#: `_arm_fallback()` in `_boot`).
LINK_SCENARIOS: list[tuple[str, list[tuple[float, str, list[Output]]]]] = [
    (
        "no link at all: the fallback at the deadline",
        [
            (T, DOWN, []),
            (T + FALLBACK_S - EPS, TICK, []),
            (T + FALLBACK_S, TICK, [FallbackChanged(current_a=FALLBACK_A)]),
            (T + FALLBACK_S + 1, TICK, []),
            (T + FALLBACK_S + 2, DOWN, []),
            (
                T + FALLBACK_S + 3,
                UP,
                [OnlineChanged(online=True), FallbackChanged(current_a=None)],
            ),
        ],
    ),
    (
        "the link up in time: online, no fallback",
        [
            (T, DOWN, []),
            (T + 1, UP, [OnlineChanged(online=True)]),
            (T + FALLBACK_S, TICK, []),
            (T + 2, UP, []),
        ],
    ),
    (
        "a repeated LinkDown keeps the first deadline",
        [
            (T, DOWN, []),
            (T + 30, DOWN, []),
            (T + FALLBACK_S, TICK, [FallbackChanged(current_a=FALLBACK_A)]),
        ],
    ),
    (
        "a drop after being online: offline at once, the fallback after_s later",
        [
            (T, DOWN, []),
            (T + 1, UP, [OnlineChanged(online=True)]),
            (T + 100, DOWN, [OnlineChanged(online=False)]),
            (T + 100 + FALLBACK_S - EPS, TICK, []),
            (T + 100 + FALLBACK_S, TICK, [FallbackChanged(current_a=FALLBACK_A)]),
        ],
    ),
    (
        "a flap restarts the deadline",
        [
            (T, DOWN, []),
            (T + 50, UP, [OnlineChanged(online=True)]),
            (T + 51, DOWN, [OnlineChanged(online=False)]),
            (T + FALLBACK_S, TICK, []),
            (T + 51 + FALLBACK_S, TICK, [FallbackChanged(current_a=FALLBACK_A)]),
        ],
    ),
    ("up before boot reported down: online", [(T, UP, [OnlineChanged(online=True)])]),
]


def link_step(
    link: Fallback, now: float, what: str
) -> list[OnlineChanged | FallbackChanged]:
    if what == TICK:
        return link.tick(now)
    return link.handle(LinkUp() if what == UP else LinkDown(), now)


@pytest.mark.parametrize(
    ("name", "steps"), LINK_SCENARIOS, ids=[s[0] for s in LINK_SCENARIOS]
)
def test_fallback(name: str, steps: list[tuple[float, str, list[Output]]]) -> None:
    link = Fallback(FALLBACK_S, FALLBACK_A)
    for now, what, expected in steps:
        assert link_step(link, now, what) == expected, (name, now)


def test_fallback_deadline_with_now_on_either_side() -> None:
    link = Fallback(FALLBACK_S, FALLBACK_A)
    assert link.next_deadline() is None
    assert not link.online
    assert link.current_a is None
    assert link.tick(T + 1e6) == []  # nothing is due before the link was reported
    link.handle(LinkDown(), T)
    deadline = link.next_deadline()
    assert deadline == T + FALLBACK_S
    assert link.tick(before(deadline)) == []
    assert link.current_a is None
    assert link.tick(deadline) == [FallbackChanged(current_a=FALLBACK_A)]
    assert link.current_a == FALLBACK_A
    assert link.next_deadline() is None
    assert not link.online
    assert link.state is LinkState.FALLBACK


def test_link_up_queued_before_a_fired_fallback_timer_gives_no_fallback() -> None:
    """Today's shell: the timer's FallbackDue can sit in the queue behind
    LinkChanged(up=True); the core then applies the fallback while online (until the
    next drop). Here the deadline dies with
    LinkUp, so a tick at the old deadline does nothing."""
    link = Fallback(FALLBACK_S, FALLBACK_A)
    link.handle(LinkDown(), T)
    link.handle(LinkUp(), T + FALLBACK_S - EPS)
    assert link.tick(T + FALLBACK_S) == []
    assert link.online
    assert link.current_a is None


def test_a_zero_fallback_current_pauses() -> None:
    link = Fallback(FALLBACK_S, 0.0)
    link.handle(LinkDown(), T)
    assert link.tick(T + FALLBACK_S) == [FallbackChanged(current_a=0.0)]


# --- transition tables ----------------------------------------------------------------


def test_transition_tables_cover_every_state_and_input() -> None:
    assert set(METER_TRANSITIONS) == set(
        itertools.product(MeterState, [MeterReadSucceeded, MeterReadFailed, None])
    )
    assert set(LINK_TRANSITIONS) == set(
        itertools.product(LinkState, [LinkUp, LinkDown, None])
    )


times = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 80).map(lambda n: n * 0.05), st.floats(0, 8)),
        st.sampled_from([OK, FAIL, TICK]),
    ),
    max_size=40,
)


@given(steps=times, stale_s=st.sampled_from([0.3, 1.0, STALE_S]))
def test_meter_steps_follow_the_table_and_report_lost_changes(
    steps: list[tuple[float, str]], stale_s: float
) -> None:
    watch, now = MeterWatch(CID, stale_s, T), T
    for dt, what in steps:
        now += dt
        old = watch.state
        out = meter_step(watch, now, what)
        key = (
            None
            if what == TICK
            else (MeterReadSucceeded if what == OK else MeterReadFailed)
        )
        assert watch.state in METER_TRANSITIONS[(old, key)]
        lost_changed = (old is MeterState.LOST) != (watch.state is MeterState.LOST)
        assert out == (
            [(up if watch.state is MeterState.LOST else down)(LOST)]
            if lost_changed
            else []
        )


@given(
    steps=st.lists(
        st.tuples(st.floats(0, 100), st.sampled_from([UP, DOWN, TICK])), max_size=40
    )
)
def test_link_steps_follow_the_table_and_report_changes(
    steps: list[tuple[float, str]],
) -> None:
    link, now = Fallback(FALLBACK_S, FALLBACK_A), T
    for dt, what in steps:
        now += dt
        old, was_online, had = link.state, link.online, link.current_a
        out = link_step(link, now, what)
        key = None if what == TICK else (LinkUp if what == UP else LinkDown)
        assert link.state in LINK_TRANSITIONS[(old, key)]
        expected: list[Output] = []
        if link.online != was_online:
            expected.append(OnlineChanged(online=link.online))
        if link.current_a != had:
            expected.append(FallbackChanged(current_a=link.current_a))
        assert out == expected
        assert (link.next_deadline() is not None) is (link.state is LinkState.OFFLINE)


# --- the same decisions as the shell (firmware/app.py at f49614c) --------------------


@dataclass
class ShellInputs:
    """`Controller._supervise_inputs`, one EVSE's round, as written in the shell."""

    active: dict[tuple[int, Fault], bool] = field(default_factory=dict)
    mismatch_since: dict[int, float] = field(default_factory=dict)

    def round(
        self,
        cid: int,
        rcd: bool,
        hot: bool,
        commanded: bool,
        feedback: bool | None,
        now: float,
    ) -> list[Output]:
        out: list[Output] = []
        states = {Fault.RCD_TRIPPED: rcd, Fault.OVERTEMPERATURE: hot}
        if feedback is None or feedback == commanded:
            self.mismatch_since.pop(cid, None)
        else:
            self.mismatch_since.setdefault(cid, now)
        late = now - self.mismatch_since.get(cid, now) >= RELAY_FEEDBACK_GRACE_S
        states[Fault.RELAY_WELDED] = late and bool(feedback) and not commanded
        states[Fault.RELAY_STUCK_OPEN] = late and not feedback and commanded
        for fault, is_active in states.items():
            if (
                fault is Fault.RELAY_WELDED
                and self.active.get((cid, fault))
                and feedback
            ):
                is_active = True
            if (
                fault is Fault.RELAY_STUCK_OPEN
                and self.active.get((cid, fault))
                and not commanded
            ):
                is_active = bool(feedback is False and commanded)
            if is_active != self.active.get((cid, fault), False):
                self.active[(cid, fault)] = is_active
                event = FaultRaised if is_active else FaultCleared
                out.append(event(cid=cid, fault=fault))
        return out


rounds = st.lists(
    st.tuples(
        st.one_of(st.just(0.05), st.floats(0, 0.5)),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.sampled_from([True, False, None]),
    ),
    max_size=60,
)


@given(rounds=rounds)
def test_inputs_and_relay_decide_as_the_shell_did(
    rounds: list[tuple[float, bool, bool, bool, bool | None]],
) -> None:
    shell, inputs, relay, now = ShellInputs(), SafetyInputs(CID), RelayFeedback(CID), T
    for dt, rcd, hot, commanded, feedback in rounds:
        now += dt
        ours: list[Output] = []
        ours += inputs.handle(
            InputsSensed(cid=CID, rcd_tripped=rcd, overtemperature=hot), now
        )
        ours += relay.handle(
            RelaySensed(cid=CID, commanded_closed=commanded, feedback_closed=feedback),
            now,
        )
        assert ours == shell.round(CID, rcd, hot, commanded, feedback, now)


@given(rounds=st.lists(st.tuples(st.floats(0, 1), st.booleans()), max_size=40))
def test_unwired_feedback_never_faults(rounds: list[tuple[float, bool]]) -> None:
    relay, now = RelayFeedback(CID), T
    for dt, commanded in rounds:
        now += dt
        assert (
            relay.handle(
                RelaySensed(cid=CID, commanded_closed=commanded, feedback_closed=None),
                now,
            )
            == []
        )


@dataclass
class ShellPp:
    """`Controller._sample_pilot`'s PP part and `_same_pp`, as written in the shell."""

    pp: dict[int, float | None] = field(default_factory=dict)
    candidate: dict[int, tuple[float | None, float] | None] = field(
        default_factory=dict
    )

    @staticmethod
    def same(a: float | None, b: float | None) -> bool:
        if a is None or b is None:
            return a is b
        return abs(a - b) <= 0.05 * max(abs(b), 1.0)

    def sample(self, cid: int, ohms: float | None, now: float) -> list[PpChanged]:
        events: list[PpChanged] = []
        candidate = self.candidate.get(cid)
        if cid in self.pp and self.same(ohms, self.pp[cid]):
            candidate = None
        elif candidate is None or not self.same(ohms, candidate[0]):
            candidate = (ohms, now)
        if candidate is not None and (
            now - candidate[1] >= PP_DEBOUNCE_S or cid not in self.pp
        ):
            self.pp[cid] = ohms
            candidate = None
            events.append(PpChanged(cid=cid, ohms=ohms))
        self.candidate[cid] = candidate
        return events


ohms_values = st.one_of(
    st.none(),
    st.sampled_from([0.0, 0.5, 95.2, 100.0, 105.0, 105.2, 110.0, 220.0, 680.0, 1500.0]),
    st.floats(0, 3000),
)
pp_samples = st.lists(
    st.tuples(st.one_of(st.just(0.02), st.just(0.05), st.floats(0, 0.3)), ohms_values),
    max_size=60,
)


@given(samples=pp_samples)
def test_pp_decides_as_the_shell_did(samples: list[tuple[float, float | None]]) -> None:
    shell, pp, now = ShellPp(), PpDebounce(CID), T
    for dt, ohms in samples:
        now += dt
        assert pp.handle(PpSampled(cid=CID, ohms=ohms), now) == shell.sample(
            CID, ohms, now
        )
        assert pp.settling is (shell.candidate.get(CID) is not None)
        assert pp.ohms == shell.pp.get(CID)
        assert same_pp(ohms, 220.0) is shell.same(ohms, 220.0)


@given(samples=pp_samples, ohms=ohms_values)
def test_a_reading_held_for_the_debounce_is_reported(
    samples: list[tuple[float, float | None]], ohms: float | None
) -> None:
    pp, now = PpDebounce(CID), T
    for dt, value in samples:
        now += dt
        pp.handle(PpSampled(cid=CID, ohms=value), now)
    pp.handle(PpSampled(cid=CID, ohms=ohms), now + 1)
    pp.handle(PpSampled(cid=CID, ohms=ohms), now + 1 + D)
    assert same_pp(ohms, pp.ohms)
    assert not pp.settling


@dataclass
class ShellMeter:
    """`_first_meter_readings` then `_meter_task`, as written in the shell, for one
    meter. The task
    starts when the first reading's outcome is known (its `last_ok = loop.time()`)."""

    stale_s: float
    lost: bool = False
    last_ok: float = 0.0

    def first(
        self, outcome: str, now: float
    ) -> list[Output]:  # OK, FAIL, or TICK: the timeout
        self.last_ok = now
        if outcome == OK:
            return []
        self.lost = True
        return [FaultRaised(cid=CID, fault=Fault.METER_LOST)]

    def read(self, ok: bool, now: float) -> list[Output]:
        if not ok:
            if now - self.last_ok >= self.stale_s and not self.lost:
                self.lost = True
                return [FaultRaised(cid=CID, fault=Fault.METER_LOST)]
            return []
        self.last_ok = now
        if self.lost:
            self.lost = False
            return [FaultCleared(cid=CID, fault=Fault.METER_LOST)]
        return []


@given(
    first=st.sampled_from([OK, FAIL, TICK]),
    first_at=st.floats(0, 1),
    stale_s=st.sampled_from([0.3, STALE_S]),
    reads=st.lists(
        st.tuples(st.one_of(st.floats(0, 12), st.just(1.0)), st.booleans()), max_size=40
    ),
)
def test_meter_decides_as_the_shell_did(
    first: str, first_at: float, stale_s: float, reads: list[tuple[float, bool]]
) -> None:
    shell, watch = ShellMeter(stale_s), MeterWatch(CID, stale_s, T)
    now = (
        T + stale_s if first == TICK else T + first_at * stale_s * 0.99
    )  # a timeout comes at the deadline
    assert meter_step(watch, now, first) == shell.first(first, now)
    for dt, ok in reads:
        now += dt
        assert watch.tick(now) == []  # after the first outcome only reads decide
        assert meter_step(watch, now, OK if ok else FAIL) == shell.read(ok, now)


@dataclass
class ShellLink:
    """The shell's link handling: `charger.online`, `_arm_fallback` at the end of
    boot, the `LinkChanged` and `FallbackDue` cases of `_dispatch`. The timer's
    FallbackDue is taken in time order (for the queue race see
    `test_link_up_queued_before_a_fired_fallback_timer_gives_no_fallback`)."""

    online: bool = False
    fallback_a: float | None = None
    timer: float | None = None

    def arm(self, now: float) -> None:
        if self.timer is None:
            self.timer = now + FALLBACK_S

    def fire_due(self, now: float) -> None:
        if self.timer is not None and now >= self.timer:
            self.fallback_a = (
                FALLBACK_A  # FallbackDue; the fired handle stays in _fallback_timer
            )
            self.timer = math.inf

    def link(self, up: bool, now: float) -> None:
        self.online = up
        if up:
            self.timer = None
            self.fallback_a = None
        else:
            self.arm(now)


@given(
    events=st.lists(
        st.tuples(
            st.one_of(st.floats(0, 90), st.just(FALLBACK_S)),
            st.sampled_from([UP, DOWN, TICK]),
        ),
        max_size=30,
    )
)
def test_link_decides_as_the_shell_did(events: list[tuple[float, str]]) -> None:
    shell, link, now = ShellLink(), Fallback(FALLBACK_S, FALLBACK_A), T
    charger_online, charger_fallback = False, None
    shell.arm(now)
    assert link.handle(LinkDown(), now) == []
    for dt, what in events:
        now += dt
        shell.fire_due(now)
        out = link.tick(now)
        if what != TICK:
            shell.link(what == UP, now)
            out += link_step(link, now, what)
        for change in out:
            if isinstance(change, OnlineChanged):
                charger_online = change.online
            else:
                charger_fallback = change.current_a
        assert (charger_online, charger_fallback) == (shell.online, shell.fallback_a)
        assert (link.online, link.current_a) == (shell.online, shell.fallback_a)


# --- the aggregate --------------------------------------------------------------------


def supervisor(now: float = T) -> Supervisor:
    return Supervisor(
        [1, 2],
        meter_stale_after_s={2: STALE_S},
        fallback_after_s=FALLBACK_S,
        fallback_current_a=FALLBACK_A,
        now=now,
    )


def test_supervisor_routes_each_input_to_its_evse() -> None:
    sup = supervisor()
    assert sup.handle(
        InputsSensed(cid=2, rcd_tripped=True, overtemperature=False), T
    ) == [up(RCD, 2)]
    sup.handle(RelaySensed(cid=1, commanded_closed=False, feedback_closed=True), T)
    assert sup.handle(
        RelaySensed(cid=1, commanded_closed=False, feedback_closed=True), T + 1
    ) == [up(W, 1)]
    assert sup.handle(PpSampled(cid=2, ohms=220.0), T) == [PpChanged(cid=2, ohms=220.0)]
    assert sup.pp[2].ohms == 220.0
    assert sup.pp[1].ohms is None
    assert sup.handle(MeterReadFailed(cid=2), T) == [up(LOST, 2)]
    assert sup.handle(MeterReadSucceeded(cid=2), T + 1) == [down(LOST, 2)]
    assert not sup.online
    assert sup.handle(LinkUp(), T) == [OnlineChanged(online=True)]
    assert sup.online
    assert sup.handle(LinkDown(), T + 1) == [OnlineChanged(online=False)]
    assert not sup.online


def test_supervisor_deadlines_are_the_earliest_part() -> None:
    sup = supervisor()
    assert (
        sup.next_deadline() == T + STALE_S
    )  # the meter's first reading; the link is not reported yet
    assert sup.tick(before(T + STALE_S)) == []
    sup.handle(LinkDown(), T + 1)  # the end of boot
    assert sup.tick(T + STALE_S) == [up(LOST, 2)]
    assert sup.next_deadline() == T + 1 + FALLBACK_S
    assert sup.tick(T + 1 + FALLBACK_S) == [FallbackChanged(current_a=FALLBACK_A)]
    assert sup.next_deadline() is None


def test_supervisor_ticks_meters_in_evse_order_then_the_link() -> None:
    sup = Supervisor(
        [3, 1],
        meter_stale_after_s={1: 1.0, 3: 1.0},
        fallback_after_s=1.0,
        fallback_current_a=FALLBACK_A,
        now=T,
    )
    sup.handle(LinkDown(), T)
    assert sup.tick(T + 1) == [
        up(LOST, 3),
        up(LOST, 1),
        FallbackChanged(current_a=FALLBACK_A),
    ]


@pytest.mark.parametrize(
    "event",
    [
        InputsSensed(cid=3, rcd_tripped=False, overtemperature=False),
        RelaySensed(cid=3, commanded_closed=False, feedback_closed=None),
        PpSampled(cid=3, ohms=None),
        MeterReadSucceeded(cid=1),  # EVSE 1 has no meter
        MeterReadFailed(cid=3),
    ],
)
def test_supervisor_refuses_an_evse_it_does_not_supervise(event: InputsSensed) -> None:
    with pytest.raises(ValueError, match="no EVSE"):
        supervisor().handle(event, T)


@pytest.mark.parametrize(
    ("cids", "meters"),
    [
        ([], {}),
        ([1, 1], {}),
        ([0], {}),
        ([1], {2: STALE_S}),
        ([1], {1: -1.0}),
    ],
)
def test_supervisor_refuses_bad_settings(
    cids: list[int], meters: dict[int, float]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Supervisor(
            cids,
            meter_stale_after_s=meters,
            fallback_after_s=FALLBACK_S,
            fallback_current_a=FALLBACK_A,
            now=T,
        )


# --- Actuators: the lock's confirmation and outputs that could not be written (issue 10) --------------


def test_a_lock_that_does_not_confirm_is_a_fault_until_a_drive_confirms() -> None:
    sup = supervisor()
    assert sup.handle(LockSensed(cid=1, locked=True, confirmed=True), T) == []
    assert sup.handle(LockSensed(cid=1, locked=True, confirmed=False), T) == [
        FaultRaised(cid=1, fault=Fault.CONNECTOR_LOCK_FAILED)]
    assert sup.handle(LockSensed(cid=1, locked=True, confirmed=False), T + 1) == []  # raised once
    assert sup.handle(LockSensed(cid=1, locked=False, confirmed=True), T + 2) == [
        FaultCleared(cid=1, fault=Fault.CONNECTOR_LOCK_FAILED)]


def test_an_output_that_cannot_be_written_is_a_latched_fault() -> None:
    sup = supervisor()
    assert sup.handle(OutputFailed(cid=1, output="pwm"), T) == [FaultRaised(cid=1, fault=Fault.OUTPUT_FAILED)]
    assert sup.handle(OutputFailed(cid=1, output="relay"), T + 1) == []
    assert FaultCleared(cid=1, fault=Fault.OUTPUT_FAILED) not in sup.tick(T + 1000)  # only a restart clears it
    assert sup.handle(LockSensed(cid=1, locked=True, confirmed=True), T + 2) == []


@pytest.mark.parametrize("grace_s", [0.1, 1.0])
def test_the_relay_feedback_time_is_the_boards(grace_s: float) -> None:
    sup = Supervisor([1], meter_stale_after_s={}, fallback_after_s=60.0, fallback_current_a=6.0, now=T,
                     relay_feedback_grace_s=grace_s)
    assert sup.handle(RelaySensed(cid=1, commanded_closed=True, feedback_closed=False), T) == []
    assert sup.handle(RelaySensed(cid=1, commanded_closed=True, feedback_closed=False), T + grace_s - 0.01) == []
    assert sup.handle(RelaySensed(cid=1, commanded_closed=True, feedback_closed=False), T + grace_s) == [
        FaultRaised(cid=1, fault=Fault.RELAY_STUCK_OPEN)]


# --- meter plausibility (issue 11): voltage out of range, energy going backwards --------------------


def ok_read(energy_wh: float | None = 1000.0, volts: tuple[float, ...] = (230.0, 231.0, 229.0)) -> MeterReadSucceeded:
    return MeterReadSucceeded(cid=CID, energy_wh_import=energy_wh, voltages_v=volts)


def test_a_plausible_reading_is_accepted() -> None:
    watch = MeterWatch(CID, STALE_S, T)
    assert watch.handle(ok_read(), T) == []
    assert watch.handle(ok_read(1000.0, (230.0, 0.0, 0.0)), T + 1) == []  # 0.0: a phase not measured
    assert watch.state is MeterState.FRESH


@pytest.mark.parametrize("volts", [(400.0, 230.0, 230.0), (230.0, 23.0, 230.0), (230.0, 230.0, 2300.0)])
def test_a_phase_voltage_out_of_range_is_refused_and_counts_as_a_failure(volts: tuple[float, ...]) -> None:
    watch = MeterWatch(CID, STALE_S, T)
    assert watch.handle(ok_read(), T) == []
    out = watch.handle(ok_read(1001.0, volts), T + 1)
    assert len(out) == 1
    assert isinstance(out[0], MeterRejected)
    assert "voltage" in out[0].reason
    out = watch.handle(ok_read(1002.0, volts), T + STALE_S + 0.5)  # still refused, now stale: lost
    assert up(LOST) in out


def test_the_first_reading_refused_is_meter_lost_at_once_like_a_failed_first_read() -> None:
    watch = MeterWatch(CID, STALE_S, T)
    out = watch.handle(ok_read(1000.0, (500.0, 230.0, 230.0)), T)
    assert out[0] == up(LOST)
    assert isinstance(out[1], MeterRejected)


def test_energy_going_backwards_is_refused_but_float_jitter_is_not() -> None:
    watch = MeterWatch(CID, STALE_S, T)
    assert watch.handle(ok_read(1_000_000.0), T) == []
    assert watch.handle(ok_read(1_000_000.0 - 5.0), T + 1) == []  # within the 10 Wh tolerance
    out = watch.handle(ok_read(999_000.0), T + 2)
    assert isinstance(out[-1], MeterRejected)
    assert "backwards" in out[-1].reason
    assert watch.handle(ok_read(1_000_100.0), T + 3) == []  # compared with the last accepted reading
    assert watch.state is MeterState.FRESH


def test_a_reading_that_is_refused_does_not_move_the_reference() -> None:
    watch = MeterWatch(CID, STALE_S, T)
    watch.handle(ok_read(5000.0), T)
    watch.handle(ok_read(1.0), T + 1)  # refused
    out = watch.handle(ok_read(4000.0), T + 2)  # still backwards from 5000, not forwards from 1
    assert isinstance(out[-1], MeterRejected)
