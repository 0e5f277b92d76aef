"""Tokens at the charger (API.md §5): from a presented token to the EVSE's authorization.

What it is for: `TokenDesk` holds the token state of one charger (the local auth list, whether the
backend is reachable, the backend requests in flight and the tokens that `authorize` without an EVSE
holds for the next plug-in) and carries a decision out on the EVSE machines and the reservation book:

* `auth.decide` decides (reservation > local list > backend > offline policy); while the backend is
  asked, the EVSE gets nothing and a `RequestBackendAuth` goes out, answered by `answer` or, at its
  timeout, decided offline by `expire`.
* Accepted: the machine gets `AuthorizationGranted` (with the reservation's id); a reservation the
  token matched is used, and its ReservationEnd(UsedToStartCharging) belongs to the new session.
  Refused: `AuthorizationRefused` (a reservation's mismatch gives ReservationAuthtokenMismatch); the
  relay never closes for it. Either way one `AuthDecided` answers the request.
* A held token goes to the next EV that plugs in and waits for authorization, in the same step (no
  AuthRequired for it), or lapses silently after `connection_timeout_s`.

What it must never do: settle a step (the charger tells the book the EVSEs' live state and fixes the
LEDs once per step, with everything the step produced), route events, read a clock or do I/O (it is
part of the sans-I/O core: DESIGN.md principle 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from firmware.core.auth import (
    ASK_BACKEND,
    AuthSettings,
    AuthStatus,
    BackendAnswer,
    LocalAuthList,
    Pending,
    PendingRequests,
    TokenDecision,
    decide,
)
from firmware.core.events import (
    Action,
    AuthDecided,
    AuthorizationGranted,
    AuthorizationRefused,
    EmitSessionEvent,
    Event,
    RequestBackendAuth,
    SessionEvent,
)
from firmware.core.evse import TRANSITIONS, EvseMachine, State
from firmware.core.instant import Instant
from firmware.core.reservations import BookOutput, ReservationBook, ReservationEndReason

#: What one step of the charger returns: the machines' actions and the book's outputs, in order.
Output = Action | BookOutput
#: The charger's step of one machine (`event` None: a tick), which also resets its pilot monitor.
Step = Callable[[EvseMachine, float, Event | None], list[Action]]


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldToken:
    """`authorize` without an EVSE and no EV waiting: the token waits for the next plug-in."""

    id_token: str
    token_type: str
    deadline: float  # monotonic; lapses silently


class TokenDesk:
    """The token side of one charger (see the module docstring). Outputs are returned unsettled."""

    def __init__(self, evses: Mapping[int, EvseMachine], book: ReservationBook, settings: AuthSettings,
                 step: Step) -> None:
        self.evses = evses
        self.book = book
        self.settings = settings
        self.local_list = LocalAuthList()
        self.online = True  # the shell clears it while the backend link is down
        self._step = step
        self._pending = PendingRequests(settings.timeout_s, settings.request_prefix)
        self._held: list[HeldToken] = []

    @property
    def held(self) -> tuple[HeldToken, ...]:
        """The tokens `authorize` without an EVSE holds for the next plug-in (lapsed ones go at the next step)."""
        return tuple(self._held)

    def pending(self, cid: int) -> list[Pending]:
        """The backend requests in flight for tokens presented at EVSE `cid`."""
        return self._pending.for_evse(cid)

    def next_deadline(self) -> float | None:
        """The earliest backend timeout or held token's lapse (monotonic), if any."""
        deadlines = [h.deadline for h in self._held]
        pending = self._pending.next_deadline()
        if pending is not None:
            deadlines.append(pending)
        return min(deadlines) if deadlines else None

    def present(self, cid: int, id_token: str, at: Instant,
                token_type: str) -> tuple[TokenDecision | None, list[Output]]:
        """API.md §5 for a token at an EVSE that takes one; None while the backend is asked."""
        decision = decide(id_token=id_token, evse_id=cid, book=self.book, local=self.local_list, now_utc=at.utc,
                          policy=self.settings.offline_policy, offline=not self.online)
        if decision is ASK_BACKEND:
            pending = self._pending.add(cid, id_token, token_type, at.mono)
            return None, [RequestBackendAuth(cid=cid, request_id=pending.request_id, id_token=id_token,
                                             token_type=token_type)]
        assert isinstance(decision, TokenDecision)  # noqa: S101 - narrowed above
        return decision, self._apply(cid, id_token, decision, at, None)

    def answer(self, request_id: str, answer: BackendAnswer, at: Instant) -> list[Output] | None:
        """The backend answered `R/auth/request`; None for a late or unknown answer (ignored)."""
        pending = self._pending.pop(request_id)
        if pending is None:
            return None
        decision = decide(id_token=pending.id_token, evse_id=pending.evse_id, book=self.book,
                          local=self.local_list, now_utc=at.utc, policy=self.settings.offline_policy,
                          backend=answer)
        assert isinstance(decision, TokenDecision)  # noqa: S101 - with an answer, decide never asks
        return self._apply(pending.evse_id, pending.id_token, decision, at, request_id)

    def waiting_longest(self) -> int | None:
        """The EVSE whose EV has waited longest for authorization, if any."""
        waiting = [
            (evse.session.started_at, cid)
            for cid, evse in self.evses.items()
            if evse.state is State.WAITING_FOR_AUTH and evse.session is not None
        ]
        return min(waiting)[1] if waiting else None

    def hold(self, id_token: str, token_type: str, at: Instant) -> TokenDecision:
        """`authorize` without an EVSE and no EV waiting: hold the token for the next plug-in if an
        Available EVSE could take it (a reservation it matches, or a walk-in), else NoEvseAvailable."""
        when = at.utc
        could = [
            cid
            for cid, evse in self.evses.items()
            if evse.state is State.AVAILABLE
            and (
                self.book.match(cid, id_token, self.local_list.parent(id_token, when), when) is not None
                or (self.book.specific(cid, when) is None and self.book.walk_in_allowed(cid, when))
            )
        ]
        if not could:
            return TokenDecision(status=AuthStatus.NO_EVSE_AVAILABLE, source="reservation")
        self._held.append(HeldToken(id_token=id_token, token_type=token_type,
                                    deadline=at.mono + self.settings.connection_timeout_s))
        return TokenDecision(status=AuthStatus.ACCEPTED, source="held")

    def give_held(self, evse: EvseMachine, out: list[Output], at: Instant) -> list[Output]:
        """After a step of `evse`: a held token goes to its EV if it now waits for authorization; the
        plug-in then needs none, so its AuthRequired is dropped (API.md §5). `out` is the step's."""
        self._held = [h for h in self._held if h.deadline > at.mono]
        if not self._held or evse.state is not State.WAITING_FOR_AUTH:
            return out
        held = self._held.pop(0)
        given = self.present(evse.cid, held.id_token, at, held.token_type)[1]
        if not given:
            return out
        return [a for a in out if not (isinstance(a, EmitSessionEvent) and a.cid == evse.cid
                                       and a.event is SessionEvent.AUTH_REQUIRED)] + given

    def expire(self, at: Instant) -> list[Output]:
        """A tick: held tokens lapse; a backend request that timed out is decided offline."""
        self._held = [h for h in self._held if h.deadline > at.mono]
        out: list[Output] = []
        for pending in self._pending.expired(at.mono):
            decision = decide(id_token=pending.id_token, evse_id=pending.evse_id, book=self.book,
                              local=self.local_list, now_utc=at.utc, policy=self.settings.offline_policy,
                              offline=True)
            assert isinstance(decision, TokenDecision)  # noqa: S101 - offline never asks
            out.extend(self._apply(pending.evse_id, pending.id_token, decision, at, pending.request_id))
        return out

    def _apply(self, cid: int, id_token: str, decision: TokenDecision, at: Instant,
               request_id: str | None) -> list[Output]:
        evse = self.evses[cid]
        status = decision.status
        out: list[Output] = []
        if (evse.state, AuthorizationGranted) not in TRANSITIONS:
            status = AuthStatus.REJECTED  # the EVSE moved on while the backend was asked
        elif status is AuthStatus.ACCEPTED:
            entry = decision.reservation
            reservation_id = entry.reservation.reservation_id if entry is not None else None
            out.extend(self._step(evse, at.mono, AuthorizationGranted(cid=cid, id_token=id_token,
                                                                      reservation_id=reservation_id)))
            if entry is not None and self.book.get(*entry.key) is entry:
                uuid = evse.session.uuid if evse.session is not None else ""
                for item in self.book.use(entry, cid, at.utc):
                    out.append(_with_session(item, cid, uuid))
        else:
            out.extend(self._step(evse, at.mono, AuthorizationRefused(cid=cid, id_token=id_token,
                                                                      reservation_mismatch=decision.mismatch)))
        reservation_id = decision.reservation.reservation.reservation_id if decision.reservation else None
        out.append(AuthDecided(cid=cid, id_token=id_token, status=status.value,
                               reservation_id=reservation_id if status is AuthStatus.ACCEPTED else None,
                               request_id=request_id))
        return out


def _with_session(item: BookOutput, cid: int, uuid: str) -> BookOutput:
    """ReservationEnd(UsedToStartCharging) belongs to the session the reservation started."""
    if (
        isinstance(item, EmitSessionEvent)
        and item.cid == cid
        and item.event is SessionEvent.RESERVATION_END
        and item.reason == ReservationEndReason.USED_TO_START_CHARGING.value
    ):
        return replace(item, uuid=uuid)
    return item
