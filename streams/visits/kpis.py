"""Field-visit KPIs per rep over a window, as additive totals that roll up to teams and
territories by summing (and, for the sets of accounts, by union). Pure.

Definitions (README, section Field visits):

- ``visits_verified`` / ``visits_out_of_range`` / ``visits_unlocated``: visits (check-ins) in the
  window by status; ``verified_share`` is verified over all three.
- ``unique_accounts_visited``: distinct accounts with a visit in the window.
- ``account_coverage``: of the accounts assigned to the rep (their owner), the share with a
  *verified* visit in the ``coverage_days`` ending with the window.
- ``time_in_field_hours``: the union of the rep's visit intervals (check-in to check-out), so
  overlapping visits count once; ``avg_visit_minutes`` over the visits with a check-out.
- ``visits_open_deal_accounts``: visits to an account that had an open deal at the check-in.
- ``visits_impossible_travel``, ``visits_overlapping``, ``check_outs_without_check_in``: the
  problems found while assembling visits, counted so they are seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any

from schemas.accounts import Account
from streams.visits.book import VisitRecord
from streams.visits.geo import VisitStatus

# When a deal was open: from its opening to its close (None: still open).
OpenSpan = tuple[datetime, datetime | None]


@dataclass(slots=True)
class VisitTotals:
    verified: int = 0
    out_of_range: int = 0
    unlocated: int = 0
    impossible_travel: int = 0
    overlapping: int = 0
    check_outs_without_check_in: int = 0
    with_duration: int = 0
    duration_s: float = 0.0
    field_s: float = 0.0
    open_deal_visits: int = 0
    accounts_visited: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)
    assigned_covered: set[str] = field(default_factory=set)

    def add(self, other: VisitTotals) -> None:
        for f in fields(self):
            mine = getattr(self, f.name)
            if isinstance(mine, set):
                mine |= getattr(other, f.name)
            else:
                setattr(self, f.name, mine + getattr(other, f.name))

    @property
    def visits(self) -> int:
        return self.verified + self.out_of_range + self.unlocated

    @property
    def verified_share(self) -> float | None:
        return self.verified / self.visits if self.visits else None

    @property
    def account_coverage(self) -> float | None:
        return len(self.assigned_covered) / len(self.assigned) if self.assigned else None

    def as_row(self) -> dict[str, Any]:
        return {
            "visits_verified": self.verified,
            "visits_out_of_range": self.out_of_range,
            "visits_unlocated": self.unlocated,
            "verified_share": _rounded(self.verified_share),
            "unique_accounts_visited": len(self.accounts_visited),
            "assigned_accounts": len(self.assigned),
            "assigned_accounts_covered": len(self.assigned_covered),
            "account_coverage": _rounded(self.account_coverage),
            "time_in_field_hours": round(self.field_s / 3600, 2),
            "avg_visit_minutes": round(self.duration_s / self.with_duration / 60, 1)
            if self.with_duration
            else None,
            "visits_open_deal_accounts": self.open_deal_visits,
            "visits_impossible_travel": self.impossible_travel,
            "visits_overlapping": self.overlapping,
            "check_outs_without_check_in": self.check_outs_without_check_in,
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


EMPTY_ROW: dict[str, Any] = VisitTotals().as_row()


def _union_seconds(intervals: Iterable[tuple[datetime, datetime]]) -> float:
    total = 0.0
    current: tuple[datetime, datetime] | None = None
    for start, end in sorted(intervals):
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            total += (current[1] - current[0]).total_seconds()
        current = (start, end)
    if current is not None:
        total += (current[1] - current[0]).total_seconds()
    return total


def _had_open_deal(spans: Sequence[OpenSpan], moment: datetime) -> bool:
    return any(opened <= moment and (closed is None or moment < closed) for opened, closed in spans)


def visit_totals_by_rep(
    visits: Iterable[VisitRecord],
    accounts: Mapping[str, Account],
    open_deals: Mapping[str, Sequence[OpenSpan]],
    *,
    start: datetime,
    end: datetime,
    coverage_days: int,
) -> dict[str, VisitTotals]:
    """Totals per rep for visits checked into in ``start``..``end`` (end exclusive). Coverage
    looks at the ``coverage_days`` before ``end``. ``open_deals`` are the open spans of the deals
    of each account. Every rep with a visit or an assigned account gets a row."""
    totals: dict[str, VisitTotals] = {}
    for account in accounts.values():
        if account.owner_rep_id is not None:
            totals.setdefault(account.owner_rep_id, VisitTotals()).assigned.add(account.account_id)
    coverage_start = end - timedelta(days=coverage_days)
    intervals: dict[str, list[tuple[datetime, datetime]]] = {}
    for visit in visits:
        moment = visit.checked_in_at
        rep = totals.setdefault(visit.rep_id, VisitTotals())
        if (
            coverage_start <= moment < end
            and visit.status is VisitStatus.VERIFIED
            and not visit.check_in_missing
            and visit.account_id in rep.assigned
        ):
            rep.assigned_covered.add(visit.account_id)
        if not start <= moment < end:
            continue
        if visit.check_in_missing:
            rep.check_outs_without_check_in += 1
            continue
        if visit.status is VisitStatus.VERIFIED:
            rep.verified += 1
        elif visit.status is VisitStatus.OUT_OF_RANGE:
            rep.out_of_range += 1
        else:
            rep.unlocated += 1
        rep.impossible_travel += visit.impossible_travel
        rep.overlapping += visit.overlaps
        if visit.account_id is not None:
            rep.accounts_visited.add(visit.account_id)
            rep.open_deal_visits += _had_open_deal(open_deals.get(visit.account_id, ()), moment)
        if visit.duration_s is not None and visit.checked_out_at is not None:
            rep.with_duration += 1
            rep.duration_s += visit.duration_s
            intervals.setdefault(visit.rep_id, []).append((moment, visit.checked_out_at))
    for rep_id, spans in intervals.items():
        totals[rep_id].field_s = _union_seconds(spans)
    return totals


def roll_up(totals: Mapping[str, VisitTotals], key_of: Callable[[str], str]) -> dict[str, VisitTotals]:
    grouped: dict[str, VisitTotals] = {}
    for rep_id, rep_totals in totals.items():
        grouped.setdefault(key_of(rep_id), VisitTotals()).add(rep_totals)
    return grouped
