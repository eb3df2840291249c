"""Management modes: who is managed on activity floors and who on outcomes. Pure.

Developing reps (``mode: developing`` on the rep record, or ``auto`` with short tenure) are
managed on activity: activity rules alert at their severity, outcome rules only inform. Seasoned
reps are managed on outcomes, the other way round: the "freedom box". A seasoned rep below the
attainment floor for ``missed_months`` completed months in a row loses it and is managed on
activity again; one month at or above the floor gives it back.

The decision is a function of the rep record, their won deals and ``now`` alone, recomputed at
each evaluation, so a replay reaches the same modes as the live worker. A caller that wants
mode-change events compares each rep's decision with the one it saw last time.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, NamedTuple

from schemas.alert_rules import AlertRulesConfig, RepRuleConfig
from schemas.reps import ManagementMode, Rep
from streams.alerts.model import Severity
from streams.kpi.deals import Deal, DealStatus
from streams.kpi.metrics import Window, prorated_quota

if TYPE_CHECKING:
    from streams.alerts.rules import RepView

ZERO = Decimal("0.00")


class ModeDecision(NamedTuple):
    """How a rep is managed now (developing or seasoned), and why, in words for a manager."""

    mode: ManagementMode
    reason: str


# --- Months, quota and revenue (shared with the outcome rules) ------------------------------------------


def month_of(day: date) -> Window:
    """The calendar month holding ``day`` (UTC days, like every KPI window)."""
    last = calendar.monthrange(day.year, day.month)[1]
    return Window(day.replace(day=1), day.replace(day=last))


def previous_month(month: Window) -> Window:
    return month_of(month.since - timedelta(days=1))


def month_quota(rep: Rep, month: Window) -> Decimal:
    """The rep's quota for ``month``, prorated from the hire day for a rep hired during it."""
    since = month.since
    if rep.hired_at is not None:
        if rep.hired_at > month.until:
            return ZERO
        since = max(since, rep.hired_at)
    return prorated_quota(rep.quota_monthly, Window(since, month.until))


def won_revenue(deals: Iterable[Deal], start: datetime, end: datetime) -> Decimal:
    """Revenue of the deals won in ``[start, end)``."""
    total = ZERO
    for deal in deals:
        if deal.status is DealStatus.WON and deal.closed_at is not None and start <= deal.closed_at < end:
            total += deal.amount or ZERO
    return total


def _percent(value: float) -> str:
    return f"{value:.0%}"


# --- The decision ----------------------------------------------------------------------------------


def _base_mode(rep: Rep | None, today: date, config: AlertRulesConfig) -> ModeDecision:
    unknown = config.modes.unknown_tenure
    if rep is None:
        return ModeDecision(unknown, f"no rep record: managed as {unknown.value} until one is loaded")
    if rep.mode is not ManagementMode.AUTO:
        return ModeDecision(rep.mode, f"{rep.mode.value} on the rep record")
    if rep.hired_at is None:
        return ModeDecision(unknown, f"no hire date on the rep record: managed as {unknown.value}")
    tenure = (today - rep.hired_at).days
    limit = config.modes.developing_tenure_days
    if tenure < limit:
        return ModeDecision(
            ManagementMode.DEVELOPING, f"hired {rep.hired_at}, {tenure} days ago (under {limit} days)"
        )
    return ModeDecision(ManagementMode.SEASONED, f"hired {rep.hired_at}, {tenure} days ago")


def missed_months(rep: Rep, deals: Iterable[Deal], now: datetime, config: AlertRulesConfig) -> list[str]:
    """The last ``missed_months`` completed months as "YYYY-MM: attainment", oldest first, when the
    rep missed the attainment floor in every one of them; otherwise an empty list.

    A month without a quota (none set, or before the hire) cannot be missed: it breaks the run.
    """
    floor = config.modes.attainment_floor
    deals = list(deals)
    month = previous_month(month_of(now.astimezone(UTC).date()))
    missed: list[str] = []
    for _ in range(config.modes.missed_months):
        quota = month_quota(rep, month)
        if quota <= 0:
            return []
        attainment = float(won_revenue(deals, month.start, month.end) / quota)
        if attainment >= floor:
            return []
        missed.append(f"{month.since:%Y-%m}: {_percent(attainment)}")
        month = previous_month(month)
    return missed[::-1]


def effective_mode(view: RepView, now: datetime, config: AlertRulesConfig) -> ModeDecision:
    """How ``view``'s rep is managed at ``now``, and why.

    The rep record's mode (or, for ``auto``, tenure against ``developing_tenure_days``) decides,
    except that a seasoned rep who missed ``attainment_floor`` in each of the last
    ``missed_months`` completed months is managed as developing until a month meets it again.
    """
    today = now.astimezone(UTC).date()
    base = _base_mode(view.rep, today, config)
    if base.mode is not ManagementMode.SEASONED or view.rep is None or not config.modes.enabled:
        return base
    missed = missed_months(view.rep, view.deals, now, config)
    if not missed:
        return base
    floor = _percent(config.modes.attainment_floor)
    return ModeDecision(
        ManagementMode.DEVELOPING,
        f"seasoned ({base.reason}), but under {floor} of quota in each of the last {len(missed)} "
        f"months ({', '.join(missed)}): managed on activity until a month at {floor} or more",
    )


def rule_severity(rule: RepRuleConfig, mode: ManagementMode, config: AlertRulesConfig) -> Severity:
    """A rep rule's severity for a rep in ``mode``: its own severity when the rule is in the
    mode's focus (activity for developing reps, outcomes for seasoned ones), else the off-focus one."""
    if rule.focus == "always" or not config.modes.enabled:
        return Severity(rule.severity)
    in_focus = (rule.focus == "activity") == (mode is ManagementMode.DEVELOPING)
    return Severity(rule.severity if in_focus else rule.off_focus_severity)


__all__ = [
    "ModeDecision",
    "effective_mode",
    "missed_months",
    "month_of",
    "month_quota",
    "previous_month",
    "rule_severity",
    "won_revenue",
]
