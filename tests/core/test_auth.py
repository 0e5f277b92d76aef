"""Token decision (API.md §5) and the local auth list, in the pure core."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from firmware.core.auth import (
    ASK_BACKEND,
    AuthStatus,
    BackendAnswer,
    LocalAuthEntry,
    LocalAuthList,
    LocalAuthStatus,
    OfflinePolicy,
    PendingRequests,
    TokenDecision,
    decide,
)
from firmware.core.reservations import Reservation, ReservationBook

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def book(*evses: tuple[str, ...]) -> ReservationBook:
    counter = itertools.count(1)
    return ReservationBook({i + 1: c for i, c in enumerate(evses)}, new_uuid=lambda: f"r-{next(counter)}")


def reserve(b: ReservationBook, **fields: object) -> None:
    fields.setdefault("expiry_utc", T0 + HOUR)
    result, _, _ = b.reserve(Reservation(**fields), T0)  # type: ignore[arg-type]
    assert result.value == "Accepted"


def local_list(*entries: LocalAuthEntry) -> LocalAuthList:
    lst = LocalAuthList()
    lst.apply(1, True, entries)
    return lst


def run(b: ReservationBook | None, token: str, evse_id: int = 1, lst: LocalAuthList | None = None,
        **kw: object) -> TokenDecision | object:
    return decide(id_token=token, evse_id=evse_id, book=b, local=lst or LocalAuthList(), now_utc=T0,
                  policy=kw.pop("policy", OfflinePolicy.LOCAL_LIST_ONLY), **kw)  # type: ignore[arg-type]


def test_step1_matching_reservation_is_accepted_locally_without_backend() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", evse_id=1)
    decision = run(b, "aa11")  # case-insensitive (U1)
    assert isinstance(decision, TokenDecision)
    assert decision.status is AuthStatus.ACCEPTED
    assert decision.source == "reservation"
    assert decision.reservation is not None
    assert decision.reservation.reservation.reservation_id == 1


def test_step1_other_token_at_a_reserved_evse_is_locked_out() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", evse_id=1)
    lst = local_list(LocalAuthEntry(id_token="BB22", status=LocalAuthStatus.ACCEPTED))
    decision = run(b, "BB22", lst=lst)  # even a token the local list accepts
    assert decision == TokenDecision(status=AuthStatus.RESERVED_FOR_OTHER, mismatch=True, source="reservation")


def test_step1_sibling_token_matches_through_the_local_list_parent() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    lst = local_list(LocalAuthEntry(id_token="CC33", status=LocalAuthStatus.ACCEPTED, parent_id_token="fleet"))
    decision = run(b, "CC33", lst=lst)
    assert isinstance(decision, TokenDecision)
    assert decision.status is AuthStatus.ACCEPTED
    assert decision.reservation is not None


def test_h03_fr_08_unknown_parent_is_looked_up_before_refusing() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    assert run(b, "DD44") is ASK_BACKEND
    sibling = run(b, "DD44", backend=BackendAnswer(status=LocalAuthStatus.ACCEPTED, parent_id_token="FLEET"))
    assert isinstance(sibling, TokenDecision)
    assert sibling.reservation is not None
    stranger = run(b, "DD44", backend=BackendAnswer(status=LocalAuthStatus.ACCEPTED, parent_id_token="OTHER"))
    assert isinstance(stranger, TokenDecision)
    assert stranger.mismatch
    blocked = run(b, "DD44", backend=BackendAnswer(status=LocalAuthStatus.BLOCKED, parent_id_token="FLEET"))
    assert isinstance(blocked, TokenDecision)
    assert blocked.mismatch
    offline = run(b, "DD44", offline=True)
    assert isinstance(offline, TokenDecision)
    assert offline.mismatch


@pytest.mark.parametrize("status", list(LocalAuthStatus))
def test_h03_fr_08_no_parent_lookup_for_a_token_the_local_list_holds_without_parent(status: LocalAuthStatus) -> None:
    """The local list says what a token's parent is, also that it has none (whatever its status):
    only a token the list does not hold is looked up. So a driver at a group reservation is
    refused at once instead of after auth.timeout_s."""
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    lst = local_list(LocalAuthEntry(id_token="DD44", status=status))
    decision = run(b, "dd44", lst=lst)
    assert decision == TokenDecision(status=AuthStatus.RESERVED_FOR_OTHER, mismatch=True, source="reservation")


@pytest.mark.parametrize(("status", "expiry", "expected"), [
    (LocalAuthStatus.ACCEPTED, None, AuthStatus.ACCEPTED),
    (LocalAuthStatus.ACCEPTED, T0, AuthStatus.RESERVED_FOR_OTHER),  # expired at now
    (LocalAuthStatus.BLOCKED, None, AuthStatus.RESERVED_FOR_OTHER),
    (LocalAuthStatus.EXPIRED, None, AuthStatus.RESERVED_FOR_OTHER),
    (LocalAuthStatus.INVALID, None, AuthStatus.RESERVED_FOR_OTHER),
])
def test_h03_fr_08_the_local_list_parent_of_a_valid_token_matches(status: LocalAuthStatus, expiry: datetime | None,
                                                                  expected: AuthStatus) -> None:
    """A token the list holds with a parent uses it to match, if the list accepts the token; a
    Blocked / Expired / Invalid one gives no parent (as a backend answer that is not Accepted) and
    is refused at once, without a lookup."""
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", parent_id_token="FLEET", evse_id=1)
    lst = local_list(LocalAuthEntry(id_token="DD44", status=status, parent_id_token="FLEET", expiry_utc=expiry))
    decision = run(b, "DD44", lst=lst)
    assert isinstance(decision, TokenDecision)
    assert decision.status is expected
    assert decision.source == "reservation"
    assert (decision.reservation is not None) is (not decision.mismatch)


def test_h03_fr_08_no_parent_lookup_at_a_g3_held_evse_for_a_local_token() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", parent_id_token="FLEET")  # global, EVSE 1 held (G3)
    assert run(b, "DD44") is ASK_BACKEND  # unknown token: its parent may match
    lst = local_list(LocalAuthEntry(id_token="DD44", status=LocalAuthStatus.ACCEPTED))
    decision = run(b, "DD44", lst=lst)
    assert decision == TokenDecision(status=AuthStatus.RESERVED_FOR_OTHER, mismatch=True, source="reservation")


def test_no_parent_lookup_when_the_reservation_has_no_parent() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", evse_id=1)
    decision = run(b, "DD44")
    assert isinstance(decision, TokenDecision)
    assert decision.mismatch


def test_g2_refuses_a_walk_in_at_a_held_evse_and_allows_it_elsewhere() -> None:
    b = book(("cCCS2",), ("cCCS2",), ("cCCS2", "sType2"))
    reserve(b, reservation_id=1, id_token="AA11", connector_type="sType2")
    lst = local_list(LocalAuthEntry(id_token="BB22", status=LocalAuthStatus.ACCEPTED))
    held = run(b, "BB22", evse_id=3, lst=lst)
    assert isinstance(held, TokenDecision)
    assert held.status is AuthStatus.RESERVED_FOR_OTHER
    assert held.mismatch
    free = run(b, "BB22", evse_id=1, lst=lst)
    assert isinstance(free, TokenDecision)
    assert free.status is AuthStatus.ACCEPTED
    assert free.source == "local_list"


@pytest.mark.parametrize(("status", "expiry", "expected"), [
    (LocalAuthStatus.ACCEPTED, None, AuthStatus.ACCEPTED),
    (LocalAuthStatus.ACCEPTED, T0 + HOUR, AuthStatus.ACCEPTED),
    (LocalAuthStatus.ACCEPTED, T0, AuthStatus.REJECTED),  # expired at now
    (LocalAuthStatus.BLOCKED, None, AuthStatus.REJECTED),
    (LocalAuthStatus.EXPIRED, None, AuthStatus.REJECTED),
    (LocalAuthStatus.INVALID, None, AuthStatus.REJECTED),
])
def test_step2_local_list(status: LocalAuthStatus, expiry: datetime | None, expected: AuthStatus) -> None:
    lst = local_list(LocalAuthEntry(id_token="BB22", status=status, expiry_utc=expiry))
    decision = run(book(("sType2",)), "bb22", lst=lst)
    assert isinstance(decision, TokenDecision)
    assert decision.status is expected
    assert decision.source == "local_list"


def test_step3_unknown_token_asks_the_backend_and_takes_its_answer() -> None:
    b = book(("sType2",))
    assert run(b, "EE55") is ASK_BACKEND
    answers = [(LocalAuthStatus.ACCEPTED, AuthStatus.ACCEPTED), (LocalAuthStatus.BLOCKED, AuthStatus.REJECTED)]
    for answer, expected in answers:
        decision = run(b, "EE55", backend=BackendAnswer(status=answer))
        assert isinstance(decision, TokenDecision)
        assert decision.status is expected
        assert decision.source == "backend"


@pytest.mark.parametrize(("policy", "expected"), [
    (OfflinePolicy.LOCAL_LIST_ONLY, AuthStatus.REJECTED),
    (OfflinePolicy.ACCEPT_ALL, AuthStatus.ACCEPTED),
])
def test_step4_offline_policy(policy: OfflinePolicy, expected: AuthStatus) -> None:
    decision = run(None, "EE55", offline=True, policy=policy)
    assert isinstance(decision, TokenDecision)
    assert decision.status is expected
    assert decision.source == "offline_policy"


def test_offline_policy_never_overrides_a_reservation_lock_out() -> None:
    b = book(("sType2",))
    reserve(b, reservation_id=1, id_token="AA11", evse_id=1)
    decision = run(b, "EE55", offline=True, policy=OfflinePolicy.ACCEPT_ALL)
    assert isinstance(decision, TokenDecision)
    assert decision.status is AuthStatus.RESERVED_FOR_OTHER


def test_local_list_full_and_differential_updates() -> None:
    lst = LocalAuthList()
    lst.apply(3, True, [LocalAuthEntry(id_token="A", status=LocalAuthStatus.ACCEPTED),
                        LocalAuthEntry(id_token="B", status=LocalAuthStatus.ACCEPTED)])
    lst.apply(4, False, [LocalAuthEntry(id_token="b", status=LocalAuthStatus.BLOCKED),
                         LocalAuthEntry(id_token="C", status=LocalAuthStatus.ACCEPTED)])
    assert lst.version == 4
    assert len(lst) == 3
    entry = lst.lookup("B")
    assert entry is not None
    assert entry.status is LocalAuthStatus.BLOCKED
    lst.apply(5, True, [LocalAuthEntry(id_token="Z", status=LocalAuthStatus.INVALID)])
    assert len(lst) == 1
    assert lst.lookup("A") is None


@pytest.mark.parametrize("version", [-1, True, 1.5])
def test_local_list_refuses_a_bad_version_and_keeps_the_old_list(version: object) -> None:
    lst = local_list(LocalAuthEntry(id_token="A", status=LocalAuthStatus.ACCEPTED))
    with pytest.raises(ValueError, match="version"):
        lst.apply(version, True, [])  # type: ignore[arg-type]
    assert lst.version == 1
    assert len(lst) == 1


@pytest.mark.parametrize(("fields", "message"), [
    ({"id_token": "", "status": LocalAuthStatus.ACCEPTED}, "id_token must be"),
    ({"id_token": "x" * 256, "status": LocalAuthStatus.ACCEPTED}, "id_token must be"),
    ({"id_token": "A", "status": "Accepted"}, "status must be one of"),
    ({"id_token": "A", "status": LocalAuthStatus.ACCEPTED, "parent_id_token": ""}, "parent_id_token must be"),
    ({"id_token": "A", "status": LocalAuthStatus.ACCEPTED, "expiry_utc": datetime(2026, 1, 1)},  # noqa: DTZ001
     "expiry must be an aware UTC time"),
])
def test_local_list_entry_validates(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalAuthEntry(**fields)  # type: ignore[arg-type]


def test_local_list_snapshot_round_trip() -> None:
    lst = LocalAuthList()
    lst.apply(7, True, [LocalAuthEntry(id_token="A", status=LocalAuthStatus.ACCEPTED, parent_id_token="P",
                                       expiry_utc=T0 + HOUR),
                        LocalAuthEntry(id_token="B", status=LocalAuthStatus.BLOCKED)])
    copy = LocalAuthList()
    copy.restore(lst.snapshot())
    assert copy.version == 7
    assert copy.lookup("a") == lst.lookup("A")
    assert copy.lookup("b") == lst.lookup("B")


@pytest.mark.parametrize(("data", "message"), [
    ({"tokens": "nope"}, "tokens must be a list"),
    ({"tokens": [1]}, "entry is not a map"),
    ({"tokens": [{"id_token": "A", "status": "Maybe"}]}, "'Maybe' is not a valid LocalAuthStatus"),
    ({"version": "x", "tokens": []}, "version must be a non-negative integer"),
])
def test_local_list_restore_refuses_garbage(data: dict[str, object], message: str) -> None:
    lst = local_list(LocalAuthEntry(id_token="A", status=LocalAuthStatus.ACCEPTED))
    with pytest.raises(ValueError, match=message):
        lst.restore(data)
    assert lst.lookup("A") is not None


def test_pending_requests_time_out_and_answer_once() -> None:
    pending = PendingRequests(timeout_s=5.0, prefix="boot7")
    first = pending.add(1, "A", "RFID", now=10.0)
    second = pending.add(2, "B", "RFID", now=11.0)
    assert first.request_id == "boot7-1"
    assert second.request_id == "boot7-2"
    assert pending.next_deadline() == 15.0
    assert pending.expired(14.99) == []
    assert pending.expired(15.0) == [first]
    assert pending.pop(first.request_id) is None  # already timed out
    assert pending.pop(second.request_id) == second
    assert len(pending) == 0
    assert pending.next_deadline() is None
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        PendingRequests(timeout_s=0)
