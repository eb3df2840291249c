"""A rep's visits from check-ins and check-outs: durations, orphans, overlaps, impossible travel,
verification that stays fixed, and rows that are returned only when they change."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.accounts import DEFAULT_RADIUS_M, Account
from schemas.events import VisitCheckOutEvent, VisitEvent
from streams.visits.book import TravelPolicy, VisitBook
from streams.visits.geo import VisitStatus

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HQ = Account(account_id="acc-hq", name="HQ", lat=48.0, lon=11.0, radius_m=100.0)
FAR = Account(account_id="acc-far", name="Far", lat=49.0, lon=11.0)  # 111 km north of HQ
ACCOUNTS = {a.account_id: a for a in (HQ, FAR)}


def check_in(
    event_id: str,
    minutes: float,
    account: str | None = "acc-hq",
    at: tuple[float, float] | None = (48.0, 11.0),
    accuracy_m: float | None = 10.0,
    check_out_minutes: float | None = None,
) -> VisitEvent:
    return VisitEvent(
        event_id=event_id,
        type="visit",
        rep_id="r1",
        occurred_at=T0 + timedelta(minutes=minutes),
        account_id=account,
        lat=at[0] if at else None,
        lon=at[1] if at else None,
        accuracy_m=accuracy_m if at else None,
        check_out_at=None if check_out_minutes is None else T0 + timedelta(minutes=check_out_minutes),
    )


def check_out(
    event_id: str, visit_id: str, minutes: float, at: tuple[float, float] | None = None
) -> VisitCheckOutEvent:
    return VisitCheckOutEvent(
        event_id=event_id,
        type="visit_check_out",
        rep_id="r1",
        occurred_at=T0 + timedelta(minutes=minutes),
        visit_id=visit_id,
        account_id="acc-hq",
        lat=at[0] if at else None,
        lon=at[1] if at else None,
    )


def test_check_in_and_later_check_out_make_one_visit_with_its_duration() -> None:
    book = VisitBook("r1")
    book.apply([check_in("v1", 0)])
    (first,) = book.changed(ACCOUNTS)
    assert first.status is VisitStatus.VERIFIED
    assert first.checked_out_at is None and first.duration_s is None
    book.apply([check_out("c1", "v1", 45)])
    (second,) = book.changed(ACCOUNTS)
    assert second.visit_id == "v1"
    assert second.duration_s == 45 * 60
    assert book.changed(ACCOUNTS) == []  # nothing new: nothing returned


def test_a_visit_with_its_own_check_out_and_a_later_one_takes_the_latest() -> None:
    book = VisitBook("r1")
    book.apply([check_in("v1", 0, check_out_minutes=30), check_out("c1", "v1", 50)])
    (record,) = book.changed(ACCOUNTS)
    assert record.duration_s == 50 * 60


def test_check_out_without_check_in_is_kept_and_flagged_then_completed() -> None:
    book = VisitBook("r1")
    book.apply([check_out("c1", "v1", 60, at=(48.0, 11.0))])
    (orphan,) = book.changed(ACCOUNTS)
    assert orphan.check_in_missing and orphan.duration_s is None
    assert orphan.status is VisitStatus.VERIFIED  # verified by the check-out's own position
    book.apply([check_in("v1", 15, at=None)])
    (whole,) = book.changed(ACCOUNTS)
    assert not whole.check_in_missing
    assert whole.duration_s == 45 * 60
    assert whole.status is VisitStatus.VERIFIED  # fixed once verified


def test_overlapping_visits_are_both_flagged() -> None:
    book = VisitBook("r1")
    book.apply(
        [
            check_in("v1", 0, check_out_minutes=60),
            check_in("v2", 30, check_out_minutes=90),
            check_in("v3", 120, check_out_minutes=150),
        ]
    )
    flags = {r.visit_id: r.overlaps for r in book.changed(ACCOUNTS)}
    assert flags == {"v1": True, "v2": True, "v3": False}


def test_a_visit_inside_a_long_one_overlaps_it() -> None:
    book = VisitBook("r1")
    book.apply(
        [
            check_in("long", 0, check_out_minutes=300),
            check_in("short", 60, check_out_minutes=70),
            check_in("after", 100, check_out_minutes=110),
        ]
    )
    flags = {r.visit_id: r.overlaps for r in book.changed(ACCOUNTS)}
    assert flags == {"long": True, "short": True, "after": True}


def test_impossible_travel_is_flagged_on_the_later_visit() -> None:
    book = VisitBook("r1", TravelPolicy(max_speed_kmh=130.0, slack_m=1_000.0))
    book.apply(
        [
            check_in("v1", 0, check_out_minutes=20),
            # 111 km 30 minutes after leaving: 222 km/h
            check_in("v2", 50, account="acc-far", at=(49.0, 11.0)),
            # and back to HQ three hours later: fine
            check_in("v3", 230, at=(48.0, 11.0)),
        ]
    )
    records = {r.visit_id: r for r in book.changed(ACCOUNTS)}
    assert not records["v1"].impossible_travel and records["v1"].travel_speed_kmh is None
    assert records["v2"].impossible_travel
    assert records["v2"].travel_speed_kmh == pytest.approx(222.4, abs=0.1)
    assert not records["v3"].impossible_travel


def test_out_of_range_and_unlocated() -> None:
    book = VisitBook("r1")
    book.apply(
        [
            check_in("far", 0, at=(48.01, 11.0)),  # 1.1 km from HQ
            check_in("no-gps", 60, at=None),
            check_in("no-account", 120, account="acc-unknown"),
            check_in("no-account-id", 180, account=None),
        ]
    )
    records = {r.visit_id: r for r in book.changed(ACCOUNTS)}
    assert records["far"].status is VisitStatus.OUT_OF_RANGE
    assert records["far"].distance_m == pytest.approx(1_111.95, abs=0.01)
    assert records["far"].radius_m == 100.0
    for visit_id in ("no-gps", "no-account", "no-account-id"):
        assert records[visit_id].status is VisitStatus.UNLOCATED
        assert records[visit_id].distance_m is None


def test_an_account_imported_later_verifies_an_unlocated_visit_and_a_move_rewrites_nothing() -> None:
    book = VisitBook("r1")
    book.apply([check_in("v1", 0, account="acc-new", at=(50.0, 8.0))])
    (first,) = book.changed(ACCOUNTS)
    assert first.status is VisitStatus.UNLOCATED
    new = Account(account_id="acc-new", name="New", lat=50.0, lon=8.0)
    (second,) = book.changed({**ACCOUNTS, "acc-new": new})
    assert second.status is VisitStatus.VERIFIED and second.radius_m == DEFAULT_RADIUS_M
    moved = Account(account_id="acc-new", name="New", lat=51.0, lon=8.0)
    assert book.changed({**ACCOUNTS, "acc-new": moved}) == []


def test_forget_before_drops_old_visits() -> None:
    book = VisitBook("r1")
    book.apply([check_in("old", 0), check_in("new", 24 * 60)])
    book.changed(ACCOUNTS)
    book.forget_before(T0 + timedelta(hours=12))
    assert len(book) == 1
    assert set(book.records(ACCOUNTS)) == {"new"}


parts = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=6),  # visit number
        st.booleans(),  # a check-out (True) or the check-in
        st.integers(min_value=0, max_value=600),  # minutes
    ),
    max_size=20,
)


@given(parts, st.randoms(use_true_random=False))
def test_rows_do_not_depend_on_arrival_order_or_batching(
    raw: list[tuple[int, bool, int]], rng: random.Random
) -> None:
    events: list[VisitEvent | VisitCheckOutEvent] = []
    for n, (visit, is_check_out, minutes) in enumerate(raw):
        if is_check_out:
            events.append(check_out(f"c{n}", f"v{visit}", minutes))
        else:
            events.append(check_in(f"v{visit}-{n}" if visit % 2 else f"v{visit}", minutes))
    # A check-in id must be unique (it is the event_id): keep the first of each.
    seen: set[str] = set()
    unique = [e for e in events if not (e.event_id in seen or seen.add(e.event_id))]  # type: ignore[func-returns-value]
    whole = VisitBook("r1")
    whole.apply(unique)
    expected = whole.records(ACCOUNTS)

    shuffled = list(unique)
    rng.shuffle(shuffled)
    stepwise = VisitBook("r1")
    returned = {}
    for event in shuffled:
        stepwise.apply([event])
        returned.update({r.visit_id: r for r in stepwise.changed(ACCOUNTS)})
    assert returned == expected
