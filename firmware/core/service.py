"""When a technician's service test (console `service`: relay, LED, lock) may drive an EVSE's outputs.

What it is for: one pure decision, `service_refusal(charger, cid, test)`, which the console asks before
it drives a board output by hand and again right before each step. A test is allowed only while the EVSE
cannot charge and nothing is connected to it: disabled (`set_enabled` false), no session, no EV seen
plugged in, CP measured and in state A (the disabled EVSE drives X1, so an EV would read B..E), the
relay commanded open. A relay test is refused further while a fault says that closing a contactor is
unsafe now (a residual current seen, over-temperature).

What it must never do: read a clock, do I/O, change the charger, or decide anything about charging.

Standard: IEC 61851-1:2017 Annex A (CP state A: no EV connected; X1 while no power is offered).
"""

from __future__ import annotations

from typing import Final

from firmware.core.catalogue import Fault
from firmware.core.charger import Charger
from firmware.core.pilot import Cp

TESTS: Final = ("relay", "led", "lock")
#: Faults during which a contactor must not be closed, even by hand for a test.
RELAY_UNSAFE: Final = frozenset({Fault.RCD_TRIPPED, Fault.OVERTEMPERATURE})


def service_refusal(charger: Charger, cid: int, test: str | None = None) -> str | None:
    """Why a service test on EVSE `cid` is unsafe now (one sentence naming the fix), or None when it may
    run. `test` is one of TESTS (None: what every test needs). Raises KeyError for an unknown EVSE and
    ValueError for an unknown test."""
    if test is not None and test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    evse = charger.evses[cid]
    if evse.enabled:
        return f"EVSE {cid} is enabled: disable it first (set_enabled {cid} false)"
    if evse.session is not None:
        return f"EVSE {cid} has a session: stop it and unplug the EV first"
    if evse.plugged:
        return f"an EV is plugged in at EVSE {cid}: unplug it first"
    if evse.cp is None:
        return f"the CP of EVSE {cid} is not measured yet: cannot tell whether an EV is connected"
    if evse.cp is not Cp.A:
        return f"the CP of EVSE {cid} reads {evse.cp.value}, not A: something is connected"
    if evse.relay_closed:
        return f"the relay of EVSE {cid} is commanded closed"
    if test == "relay":
        unsafe = sorted(f.value for f in evse.faults & RELAY_UNSAFE)
        if unsafe:
            return f"EVSE {cid} has {', '.join(unsafe)}: a contactor must not be closed now"
    return None
