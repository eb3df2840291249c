"""The ``kpis`` report: stored data in, one row of KPIs per rep, team or territory out.

The figures come from the same pure engine the worker runs (``streams.kpi``): activity from the
worker's daily counters, deals rebuilt by ``DealBook`` from their stored events, and roll-ups as
sums of per-rep base figures. Only the reads happen here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from clickhouse_driver import Client

from sinks.queries import daily_counters, stored_deal_events, stored_reps
from streams.kpi.deals import DEAL_EVENT_TYPES, DealBook, stage_ranks
from streams.kpi.metrics import DailyCount, Window, compute_rep_kpis, data_window, deal_kpis_by

GROUPINGS = ("rep", "team", "territory", "product", "account")
# Groupings that only deals carry: their rows hold the deal figures, activity counts stay zero.
DEAL_GROUPINGS = {"product": "product", "account": "account_id"}


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
) -> KpiReport:
    """KPIs grouped ``by`` over ``since``..``until`` (each defaulting to the data's own first and
    last day), or over the ``last_days`` days ending ``until`` (a rolling 7- or 28-day view)."""
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
    else:
        groups = compute_rep_kpis(daily, book.deals.values(), reps, window).rollup(by)
    rows = [{by: key, **totals.as_row()} for key, totals in groups.items()]
    return KpiReport(by=by, window=window, rows=rows)


def to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buffer.getvalue()
