"""The ``kpis`` report: stored data in, one row of KPIs per rep, team or territory out.

The figures come from the same pure engine the worker runs (``streams.kpi``): activity from the
worker's daily counters, deals rebuilt by ``DealBook`` from their stored events, and roll-ups as
sums of per-rep base figures. Only the reads happen here.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from clickhouse_driver import Client

from schemas.reps import UNASSIGNED, Rep
from sinks.base import VisitRow
from sinks.queries import daily_counters, stored_accounts, stored_deal_events, stored_reps, stored_visits
from streams.kpi.deals import DEAL_EVENT_TYPES, DealBook, stage_ranks
from streams.kpi.metrics import DailyCount, KpiTotals, Window, compute_rep_kpis, data_window, deal_kpis_by
from streams.visits.book import VisitRecord
from streams.visits.geo import VisitStatus
from streams.visits.kpis import EMPTY_ROW, OpenSpan, VisitTotals, roll_up, visit_totals_by_rep

GROUPINGS = ("rep", "team", "territory", "product", "account")
# Groupings that only deals carry: their rows hold the deal figures, activity counts stay zero.
DEAL_GROUPINGS = {"product": "product", "account": "account_id"}
# Account coverage looks at this many days up to the end of the window (--coverage-days).
DEFAULT_COVERAGE_DAYS = 30


@dataclass(frozen=True, slots=True)
class KpiReport:
    by: str
    window: Window | None
    rows: list[dict[str, Any]]


def build_report(
    client: Client,
    database: str,
    *,
    by: str,
    since: date | None,
    until: date | None,
    deal_stages: Sequence[str],
    last_days: int | None = None,
    coverage_days: int = DEFAULT_COVERAGE_DAYS,
) -> KpiReport:
    """KPIs grouped ``by`` over ``since``..``until`` (each defaulting to the data's own first and
    last day), or over the ``last_days`` days ending ``until`` (a rolling 7- or 28-day view).

    Rows by rep, team or territory also carry the field-visit figures (``streams.visits.kpis``),
    with account coverage over the ``coverage_days`` ending with the window."""
    if by not in GROUPINGS:
        raise ValueError(f"--by must be one of {', '.join(GROUPINGS)}, not {by!r}")
    daily = [DailyCount(*row) for row in daily_counters(client, database)]
    book = DealBook(stage_ranks(deal_stages))
    book.apply(e for e in stored_deal_events(client, database) if isinstance(e, DEAL_EVENT_TYPES))
    reps = stored_reps(client, database)
    # Default range: all data. An open end takes the data's own first or last day.
    span = data_window(daily, book.deals.values())
    if span is None and (since is None or until is None):
        return KpiReport(by=by, window=None, rows=[])
    end = until if until is not None else span.until  # type: ignore[union-attr]
    if last_days is not None:
        since = end - timedelta(days=last_days - 1)
    window = Window(since if since is not None else span.since, end)  # type: ignore[union-attr]
    if by in DEAL_GROUPINGS:
        groups = deal_kpis_by(book.deals.values(), window, DEAL_GROUPINGS[by])
        rows = [{by: key, **totals.as_row()} for key, totals in groups.items()]
        return KpiReport(by=by, window=window, rows=rows)
    groups = compute_rep_kpis(daily, book.deals.values(), reps, window).rollup(by)
    visits = _visit_totals(client, database, book, window, coverage_days)
    key_of = _group_key(by, reps)
    visit_groups = roll_up(visits, key_of)
    # Reps known only from visits or assigned accounts still get a row.
    for key in visit_groups.keys() - groups.keys():
        groups[key] = KpiTotals()
    rows = [
        {by: key, **totals.as_row(), **(visit_groups[key].as_row() if key in visit_groups else EMPTY_ROW)}
        for key, totals in sorted(groups.items())
    ]
    return KpiReport(by=by, window=window, rows=rows)


def _group_key(by: str, reps: Mapping[str, Rep]) -> Callable[[str], str]:
    if by == "rep":
        return lambda rep_id: rep_id
    return lambda rep_id: str(getattr(reps[rep_id], by)) if rep_id in reps else UNASSIGNED


def _visit_totals(
    client: Client, database: str, book: DealBook, window: Window, coverage_days: int
) -> dict[str, VisitTotals]:
    earliest = min(window.start, window.end - timedelta(days=coverage_days))
    visits = [visit_record(row) for row in stored_visits(client, database, earliest, window.end)]
    open_deals: dict[str, list[OpenSpan]] = defaultdict(list)
    for deal in book.deals.values():
        if deal.account_id is not None and deal.opened_at is not None:
            open_deals[deal.account_id].append((deal.opened_at, deal.closed_at))
    return visit_totals_by_rep(
        visits,
        stored_accounts(client, database),
        open_deals,
        start=window.start,
        end=window.end,
        coverage_days=coverage_days,
    )


def visit_record(row: VisitRow) -> VisitRecord:
    return VisitRecord(
        visit_id=row.visit_id,
        rep_id=row.rep_id,
        account_id=row.account_id,
        checked_in_at=row.checked_in_at,
        checked_out_at=row.checked_out_at,
        status=VisitStatus(row.status),
        distance_m=row.distance_m,
        radius_m=row.radius_m,
        lat=row.lat,
        lon=row.lon,
        accuracy_m=row.accuracy_m,
        check_in_missing=row.check_in_missing,
        overlaps=row.overlaps,
        impossible_travel=row.impossible_travel,
        travel_speed_kmh=row.travel_speed_kmh,
    )


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()
