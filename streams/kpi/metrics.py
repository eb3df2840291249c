"""The KPIs a sales leader manages by, from daily activity counts and deal states. Pure.

Everything is built in two steps so that roll-ups can never disagree with the per-rep figures:

1. :class:`KpiTotals` holds only *additive* base figures (counts and sums) for one rep over a
   window. Totals of a team or a territory are the sums of their reps' totals.
2. Ratios (win rate, averages, conversions, velocity, coverage) are derived from a totals object
   on demand, after summing, never averaged across reps.

Windows are whole UTC days, ``since`` and ``until`` inclusive.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from schemas.reps import UNASSIGNED, Rep
from streams.kpi.deals import Deal, DealStatus

# Output name -> the daily counter it sums (an event type, or a derived counter).
ACTIVITY_COUNTERS: dict[str, str] = {
    "calls": "call",
    "calls_connected": "call_connected",
    "emails": "email",
    "meetings_scheduled": "meeting_scheduled",
    "meetings_held": "meeting_held",
    "visits": "visit",
    "demos": "demo",
    "proposals_sent": "proposal_sent",
    "deals_created": "deal_created",
}
# Funnel steps: name -> (numerator, denominator) among the base figures.
FUNNEL_STEPS: dict[str, tuple[str, str]] = {
    "call_to_meeting_scheduled": ("meetings_scheduled", "calls"),
    "scheduled_to_held": ("meetings_held", "meetings_scheduled"),
    "held_to_proposal": ("proposals_sent", "meetings_held"),
    "proposal_to_won": ("deals_won", "proposals_sent"),
    "created_to_won": ("deals_won", "deals_created"),
}
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Window:
    since: date
    until: date

    def __post_init__(self) -> None:
        if self.until < self.since:
            raise ValueError(f"window ends ({self.until}) before it starts ({self.since})")

    @property
    def start(self) -> datetime:
        return datetime.combine(self.since, time.min, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the window."""
        return datetime.combine(self.until + timedelta(days=1), time.min, tzinfo=UTC)

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


@dataclass(slots=True)
class KpiTotals:
    """Additive base figures of one rep (or a sum of reps) over one window."""

    calls: int = 0
    calls_connected: int = 0
    emails: int = 0
    meetings_scheduled: int = 0
    meetings_held: int = 0
    visits: int = 0
    demos: int = 0
    proposals_sent: int = 0
    deals_created: int = 0
    stage_advancements: int = 0
    deals_won: int = 0
    deals_lost: int = 0
    revenue: Decimal = Decimal("0.00")
    won_with_amount: int = 0
    cycle_days_sum: float = 0.0
    open_deals: int = 0
    open_pipeline_value: Decimal = Decimal("0.00")
    open_deals_advanced: int = 0
    quota: Decimal = Decimal("0.00")

    def add(self, other: KpiTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    # -- derived ratios (None where the denominator is zero: "no data", not 0 %) ------------------

    @property
    def activities(self) -> int:
        """All leading activities (connected calls are already among the calls)."""
        return sum(getattr(self, name) for name in ACTIVITY_COUNTERS if name not in ("calls_connected",))

    @property
    def win_rate(self) -> float | None:
        closed = self.deals_won + self.deals_lost
        return self.deals_won / closed if closed else None

    @property
    def avg_deal_size(self) -> Decimal | None:
        return (self.revenue / self.won_with_amount).quantize(CENT) if self.won_with_amount else None

    @property
    def avg_cycle_days(self) -> float | None:
        return self.cycle_days_sum / self.deals_won if self.deals_won else None

    @property
    def pipeline_velocity(self) -> Decimal | None:
        """Expected revenue per day from the open pipeline: open deals x win rate x average deal
        size / average cycle days."""
        win_rate, size, cycle = self.win_rate, self.avg_deal_size, self.avg_cycle_days
        if win_rate is None or size is None or not cycle:
            return None
        return (Decimal(self.open_deals) * Decimal(str(win_rate)) * size / Decimal(str(cycle))).quantize(CENT)

    @property
    def quota_attainment(self) -> float | None:
        return float(self.revenue / self.quota) if self.quota else None

    @property
    def remaining_quota(self) -> Decimal:
        return max(Decimal("0.00"), self.quota - self.revenue)

    @property
    def pipeline_coverage(self) -> float | None:
        """Open pipeline value over the quota still to close in the window (None once it is met)."""
        remaining = self.remaining_quota
        return float(self.open_pipeline_value / remaining) if remaining else None

    @property
    def open_deals_advanced_share(self) -> float | None:
        return self.open_deals_advanced / self.open_deals if self.open_deals else None

    def conversions(self) -> dict[str, float | None]:
        result: dict[str, float | None] = {}
        for step, (numerator, denominator) in FUNNEL_STEPS.items():
            below = getattr(self, denominator)
            result[step] = getattr(self, numerator) / below if below else None
        return result

    def as_row(self) -> dict[str, Any]:
        """Every figure, base and derived, as plain JSON-ready values."""
        row: dict[str, Any] = {
            "deals_won": self.deals_won,
            "deals_lost": self.deals_lost,
            "win_rate": _rounded(self.win_rate),
            "revenue": float(self.revenue),
            "avg_deal_size": _money(self.avg_deal_size),
            "avg_cycle_days": _rounded(self.avg_cycle_days),
            "open_deals": self.open_deals,
            "open_pipeline_value": float(self.open_pipeline_value),
        }
        row.update({name: getattr(self, name) for name in ACTIVITY_COUNTERS})
        row["stage_advancements"] = self.stage_advancements
        row["open_deals_advanced_share"] = _rounded(self.open_deals_advanced_share)
        row["activities"] = self.activities
        row.update({step: _rounded(value) for step, value in self.conversions().items()})
        row["pipeline_velocity_per_day"] = _money(self.pipeline_velocity)
        row["quota"] = float(self.quota)
        row["quota_attainment"] = _rounded(self.quota_attainment)
        row["pipeline_coverage"] = _rounded(self.pipeline_coverage)
        return row


def _rounded(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _money(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def prorated_quota(monthly: Decimal, window: Window) -> Decimal:
    """The monthly quota spread over the window's days, month by month (a day of February is worth
    more than a day of March)."""
    if not monthly:
        return Decimal("0.00")
    total = Decimal(0)
    day = window.since
    while day <= window.until:
        days_in_month = calendar.monthrange(day.year, day.month)[1]
        month_end = date(day.year, day.month, days_in_month)
        last = min(month_end, window.until)
        total += monthly * Decimal((last - day).days + 1) / Decimal(days_in_month)
        day = last + timedelta(days=1)
    return total.quantize(CENT)


@dataclass(frozen=True, slots=True)
class DailyCount:
    rep_id: str
    day: date
    counter: str
    count: int


@dataclass(slots=True)
class RepKpis:
    """Per-rep totals over one window, and the rep records to roll them up by."""

    window: Window
    totals: dict[str, KpiTotals] = field(default_factory=dict)
    reps: Mapping[str, Rep] = field(default_factory=dict)

    def rollup(self, by: str) -> dict[str, KpiTotals]:
        """Sum the reps' totals by ``rep``, ``team`` or ``territory`` (reps without a record roll
        up into ``unassigned``)."""
        key_of = _group_key(by, self.reps)
        grouped: dict[str, KpiTotals] = {}
        for rep_id, totals in self.totals.items():
            grouped.setdefault(key_of(rep_id), KpiTotals()).add(totals)
        return dict(sorted(grouped.items()))


def _group_key(by: str, reps: Mapping[str, Rep]) -> Callable[[str], str]:
    if by == "rep":
        return lambda rep_id: rep_id
    if by not in ("team", "territory"):
        raise ValueError(f"cannot group by {by!r}: use rep, team or territory")

    def key(rep_id: str) -> str:
        rep = reps.get(rep_id)
        return UNASSIGNED if rep is None else str(getattr(rep, by))

    return key


def data_window(daily: Iterable[DailyCount], deals: Iterable[Deal]) -> Window | None:
    """The smallest window holding every day with activity and every deal event."""
    days = [row.day for row in daily]
    for deal in deals:
        days.extend(e.occurred_at.astimezone(UTC).date() for e in deal.events.values())
    return Window(min(days), max(days)) if days else None


def compute_rep_kpis(
    daily: Iterable[DailyCount],
    deals: Iterable[Deal],
    reps: Mapping[str, Rep],
    window: Window,
) -> RepKpis:
    """Per-rep totals over ``window`` from daily counters and deal states.

    Activities count on the day they happened; deals won and lost on the day they closed (revenue
    and cycle time with them); open deals and pipeline value as of the end of the window; a stage
    advancement on the day it happened. Every rep with a record or with data gets a row.
    """
    result = RepKpis(window=window, reps=reps)
    totals = result.totals
    for rep_id in reps:
        totals[rep_id] = KpiTotals()
    counter_to_name = {counter: name for name, counter in ACTIVITY_COUNTERS.items()}
    for row in daily:
        # A rep seen anywhere in the data gets a row, even if all zero in this window.
        rep_totals = totals.setdefault(row.rep_id, KpiTotals())
        name = counter_to_name.get(row.counter)
        if name is None or not window.since <= row.day <= window.until:
            continue
        setattr(rep_totals, name, getattr(rep_totals, name) + row.count)
    for deal in deals:
        _add_deal(totals.setdefault(deal.rep_id, KpiTotals()), deal, window)
    for rep_id, rep in reps.items():
        totals[rep_id].quota = prorated_quota(rep.quota_monthly, window)
    return result


def deal_kpis_by(deals: Iterable[Deal], window: Window, attribute: str) -> dict[str, KpiTotals]:
    """Deal figures (won, lost, revenue, cycle, pipeline, advancements) grouped by a deal's
    ``product`` or ``account_id``; deals without one group under ``unassigned``. Activities carry
    no product, so only the deal figures are filled in."""
    if attribute not in ("product", "account_id"):
        raise ValueError(f"cannot group deals by {attribute!r}: use product or account_id")
    grouped: dict[str, KpiTotals] = {}
    for deal in deals:
        key = getattr(deal, attribute) or UNASSIGNED
        _add_deal(grouped.setdefault(key, KpiTotals()), deal, window)
    return dict(sorted(grouped.items()))


def _add_deal(totals: KpiTotals, deal: Deal, window: Window) -> None:
    advanced_in_window = sum(1 for moment in deal.advanced_at if window.contains(moment))
    totals.stage_advancements += advanced_in_window
    if deal.closed_at is not None and window.contains(deal.closed_at):
        if deal.status is DealStatus.WON:
            totals.deals_won += 1
            totals.revenue += deal.amount or Decimal("0.00")
            totals.won_with_amount += 0 if deal.amount_missing else 1
            totals.cycle_days_sum += deal.cycle_days or 0.0
        elif deal.status is DealStatus.LOST:
            totals.deals_lost += 1
    if deal.open_at(window.end - timedelta(microseconds=1)):
        totals.open_deals += 1
        totals.open_pipeline_value += deal.amount or Decimal("0.00")
        totals.open_deals_advanced += 1 if advanced_in_window else 0
