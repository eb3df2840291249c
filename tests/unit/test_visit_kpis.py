"""Field-visit KPIs against a brute-force recount, and the definitions on hand-made cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.accounts import Account
from streams.visits.book import VisitRecord
from streams.visits.geo import VisitStatus
from streams.visits.kpis import VisitTotals, roll_up, visit_totals_by_rep

T0 = datetime(2026, 3, 2, tzinfo=UTC)
START, END = T0, T0 + timedelta(days=7)


def record(
    visit_id: str,
    rep: str,
    hours: float,
    status: VisitStatus = VisitStatus.VERIFIED,
    account: str | None = "a1",
    minutes: float | None = 30,
    **flags: bool,
) -> VisitRecord:
    checked_in = T0 + timedelta(hours=hours)
    return VisitRecord(
        visit_id=visit_id,
        rep_id=rep,
        account_id=account,
        checked_in_at=checked_in,
        checked_out_at=None if minutes is None else checked_in + timedelta(minutes=minutes),
        status=status,
        distance_m=None,
        radius_m=None,
        lat=None,
        lon=None,
        accuracy_m=None,
        **flags,
    )


ACCOUNTS = {
    "a1": Account(account_id="a1", name="A1", owner_rep_id="r1"),
    "a2": Account(account_id="a2", name="A2", owner_rep_id="r1"),
    "a3": Account(account_id="a3", name="A3", owner_rep_id="r2"),
}


def test_the_definitions_on_a_small_case() -> None:
    visits = [
        record("v1", "r1", 9, minutes=60),
        record("v2", "r1", 9.5, minutes=60, overlaps=True),  # overlaps v1 by 30 minutes
        record("v3", "r1", 30, VisitStatus.OUT_OF_RANGE, account="a2", minutes=None),
        record("v4", "r1", 40, VisitStatus.UNLOCATED, account="a9", impossible_travel=True),
        record("o1", "r1", 41, VisitStatus.UNLOCATED, check_in_missing=True, minutes=0),
        record("v5", "r1", 24 * 8, account="a2"),  # after the window
        record("v6", "r2", 10, account="a3", minutes=45),
    ]
    open_deals = {"a1": [(T0, T0 + timedelta(hours=9, minutes=15))]}  # open at v1 only
    totals = visit_totals_by_rep(visits, ACCOUNTS, open_deals, start=START, end=END, coverage_days=30)
    r1 = totals["r1"].as_row()
    assert r1 == {
        "visits_verified": 2,
        "visits_out_of_range": 1,
        "visits_unlocated": 1,
        "verified_share": 0.5,
        "unique_accounts_visited": 3,
        "assigned_accounts": 2,
        "assigned_accounts_covered": 1,  # a2 was only visited out of range
        "account_coverage": 0.5,
        "time_in_field_hours": 2.0,  # 9:00-10:30 once, plus v4's 30 minutes
        "avg_visit_minutes": 50.0,  # (60 + 60 + 30) / 3
        "visits_open_deal_accounts": 1,
        "visits_impossible_travel": 1,
        "visits_overlapping": 1,
        "check_outs_without_check_in": 1,
    }
    team = roll_up(totals, lambda rep: "team")["team"].as_row()
    assert team["visits_verified"] == 3 and team["assigned_accounts"] == 3
    assert team["account_coverage"] == pytest.approx(2 / 3, abs=1e-4)
    assert team["time_in_field_hours"] == 2.75


def test_a_rep_with_assigned_accounts_and_no_visits_has_no_coverage() -> None:
    totals = visit_totals_by_rep([], ACCOUNTS, {}, start=START, end=END, coverage_days=30)
    assert totals["r2"].as_row()["account_coverage"] == 0.0
    assert VisitTotals().as_row()["verified_share"] is None


intervals = st.lists(
    st.tuples(st.integers(0, 7 * 24 * 4 - 1), st.integers(0, 16), st.sampled_from(list(VisitStatus))),
    max_size=30,
)


@given(intervals)
def test_time_in_field_is_the_union_of_intervals(raw: list[tuple[int, int, VisitStatus]]) -> None:
    visits = [
        record(f"v{n}", "r1", quarter / 4, status, minutes=15 * length)
        for n, (quarter, length, status) in enumerate(raw)
    ]
    totals = visit_totals_by_rep(visits, {}, {}, start=START, end=END, coverage_days=7)
    covered = {q + i for q, length, _ in raw for i in range(length)}  # quarter-hours in the field
    rep = totals.get("r1", VisitTotals())
    assert rep.field_s == pytest.approx(len(covered) * 900)
    assert rep.visits == len(raw)
    assert rep.verified == sum(1 for *_, s in raw if s is VisitStatus.VERIFIED)
