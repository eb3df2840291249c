"""The sales report's pure parts: weeks that partition the period, and a page that is
self-contained, escaped and the same for the same data."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from schemas.reps import Rep
from sinks.queries import ModeChange, StoredAlert, VisitPosition
from streams.kpi.metrics import DailyCount, Window
from streams.sales_report import CHARTS, SalesReportData, compute_report_kpis, render_report, weekly_windows

DAY = date(2026, 3, 2)


@given(st.integers(min_value=0, max_value=400), st.integers(min_value=0, max_value=3000))
def test_weeks_partition_the_period_and_end_on_its_last_day(length: int, offset: int) -> None:
    window = Window(DAY + timedelta(days=offset), DAY + timedelta(days=offset + length))
    weeks = weekly_windows(window)
    assert weeks[0].since == window.since and weeks[-1].until == window.until
    for before, after in itertools.pairwise(weeks):
        assert after.since == before.until + timedelta(days=1)
    assert all((w.until - w.since).days + 1 == 7 for w in weeks[1:])
    assert 1 <= (weeks[0].until - weeks[0].since).days + 1 <= 7


def _data(name: str = "Ada <b>Lovelace</b>", *, with_events: bool = True) -> SalesReportData:
    reps = {
        "rep-1": Rep(
            rep_id="rep-1", name=name, team="Team <North>", territory="t1", quota_monthly=Decimal(9000)
        ),
        "rep-2": Rep(
            rep_id="rep-2", name="Bo", team="Team South", territory="t2", quota_monthly=Decimal(9000)
        ),
    }
    daily = [
        DailyCount(rep, DAY + timedelta(days=d), counter, 3 + d % 4)
        for rep in reps
        for d in range(20)
        for counter in ("call", "meeting_scheduled", "meeting_held", "proposal_sent", "visit")
    ]
    window = Window(DAY, DAY + timedelta(days=19))
    totals, weekly = compute_report_kpis(daily, [], reps, window)
    at = datetime(2026, 3, 10, 18, tzinfo=UTC)
    alerts = [
        StoredAlert(
            "activity_drop", "rep", "rep-1", "call", "firing", "warning", "calls fell <50%", {}, at, None
        )
    ]
    modes = [ModeChange("rep-1", "developing", "developing on the rep record", at)]
    visits = [
        VisitPosition("rep-2", at, 48.1, 11.5, "verified"),
        VisitPosition("rep-1", at, 48.2, 11.6, "out_of_range"),
        VisitPosition("rep-1", at, 48.3, 11.7, "verified"),
    ]
    return SalesReportData(
        window=window,
        reps=reps,
        rep_totals=totals,
        weekly=weekly,
        alerts=alerts if with_events else (),
        modes=modes if with_events else (),
        visits=visits if with_events else (),
    )


def test_the_page_is_self_contained_escaped_and_reproducible() -> None:
    page = render_report(_data())
    assert page == render_report(_data())  # no clock, no random ids
    assert page.count("<svg") == len(CHARTS)
    assert "<script" not in page and 'src="http' not in page
    assert "Ada &lt;b&gt;Lovelace&lt;/b&gt;" in page and "<b>Lovelace</b>" not in page
    assert "Team &lt;North&gt;" in page and "calls fell &lt;50%" in page
    assert '<meta charset="utf-8">' in page
    assert "3 visits with a position, by team: 2 (67%) verified at the customer, 1 out of range" in page


def test_sections_without_data_say_so_instead_of_drawing_an_empty_chart() -> None:
    page = render_report(_data(with_events=False))
    assert "No alert fired in this period." in page
    assert "No management mode recorded yet." in page
    assert "No visit with a position in this period." in page
    assert page.count("<svg") == len(CHARTS) - 3
