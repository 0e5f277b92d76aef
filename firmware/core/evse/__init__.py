"""One EVSE: its state machine, states and transition tables, settings and session records.

IEC 61851-1:2017 (Annex A control pilot, Annex B proximity pilot) governs every timing and safety
rule here; the rules themselves are written out in `machine`, which applies them. The package is
part of the sans-I/O core: it must never do I/O, read a clock, log or import the shell or `hal`.

* `states`  - `State`, its public `STATUS`, and the legality tables (`TRANSITIONS`, `TICK_SETTLES`,
  `RESTORE_SETTLES`; `ACCEPTED_IN` and `EVENT_TYPES` read off `TRANSITIONS`);
* `config`  - `EvseConfig`, one EVSE's settings, bounded by the standard;
* `session` - `Session` and its `SessionPhase`s, `StoredSession`, `Counters`: records and phase tables;
* `facts`   - `EvseFacts`: what the machine knows and derives (offer, duty, notes), no decisions;
* `inputs`  - `EvseInputs`: how each input changes those facts, one handler per event type;
* `machine` - `EvseMachine`: `handle`, `tick`, `next_deadline`, `restore_session`; the step.

Everything is re-exported here, so `from firmware.core.evse import ...` is the one import path.
"""

from firmware.core.evse.config import EvseConfig
from firmware.core.evse.facts import EvseFacts
from firmware.core.evse.machine import EvseMachine
from firmware.core.evse.session import PHASE_TRANSITIONS, Counters, Session, SessionPhase, StoredSession
from firmware.core.evse.states import (
    ACCEPTED_IN,
    EVENT_TYPES,
    RESTORE_SETTLES,
    STATUS,
    TICK_SETTLES,
    TRANSITIONS,
    State,
)

__all__ = [
    "ACCEPTED_IN",
    "EVENT_TYPES",
    "PHASE_TRANSITIONS",
    "RESTORE_SETTLES",
    "STATUS",
    "TICK_SETTLES",
    "TRANSITIONS",
    "Counters",
    "EvseConfig",
    "EvseFacts",
    "EvseMachine",
    "Session",
    "SessionPhase",
    "State",
    "StoredSession",
]
