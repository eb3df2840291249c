"""The early-warning rules: per-rep views and an evaluation time in, alert candidates out. Pure.

:func:`evaluate` looks at every rep (and every team and territory) once and returns an
:class:`~streams.alerts.model.AlertCandidate` for each condition that holds at ``now``. It keeps
no state: what was firing before comes in as a set of fingerprints (``firing``), which is what
gives the ratio rules their hysteresis: an alert fires below ``fire_below`` but, once firing,
holds until the value recovers past ``resolve_above``. An alert that holds no more is simply
absent from the result; the lifecycle (``streams.alerts.lifecycle``) turns that into a resolve.

Time is data: ``now`` is passed in and nothing reads a clock, so a live timer, a backtest and a
test run the same code. Daily counters are whole UTC days; every window ends with the last
complete day before ``now`` (a partial today would read as a drop every morning). Working hours
and working days follow each team's calendar in its own time zone.

Rules (names are the ``rule`` of their candidates; team and territory versions share the name
with another scope):

* ``activity_drop``: 7-day activity per type and as a weighted score against the rep's previous
  28 days scaled to 7, or the score far below the team's median.
* ``conversion_drop``: a funnel step's conversion over 28 days against the previous 56.
* ``no_activity``: nothing logged for N working hours.
* ``pipeline_coverage_low``: open pipeline below k x this month's quota still to close.
* ``pacing_forecast``: this month's projected revenue at the current pace and own rates.
* ``stalled_deals``: open deals that have not moved for a multiple of the rep's typical cycle.

A rep rule alerts at its configured severity when it is in the focus of the rep's management mode
(activity rules for developing reps, outcome rules for seasoned ones; see ``streams.alerts.modes``)
and at its off-focus severity (informational) otherwise. Team and territory rules alert at their
own severity. Every setting lives in ``schemas.alert_rules.AlertRulesConfig``.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from schemas.accounts import Account
from schemas.alert_rules import (
    SCORE,
    ActivityWindows,
    AlertRulesConfig,
    CoverageThresholds,
    GroupActivityDropRule,
    GroupPipelineCoverageRule,
    RuleConfig,
    WorkingCalendar,
)
from schemas.events import DealCreatedEvent, DealStageChangedEvent
from schemas.reps import ManagementMode, Rep
from streams.alerts.model import AlertCandidate, Scope, Severity, alert_fingerprint
from streams.alerts.modes import (
    ModeDecision,
    effective_mode,
    month_of,
    month_quota,
    rule_severity,
    won_revenue,
)
from streams.kpi.deals import SECONDS_PER_DAY, Deal, DealStatus
from streams.kpi.metrics import Window
from streams.visits.book import VisitRecord
from streams.visits.geo import VisitStatus

ACTIVITY_DROP = "activity_drop"
CONVERSION_DROP = "conversion_drop"
NO_ACTIVITY = "no_activity"
PIPELINE_COVERAGE_LOW = "pipeline_coverage_low"
PACING_FORECAST = "pacing_forecast"
STALLED_DEALS = "stalled_deals"
FIELD_ACTIVITY_DROP = "field_activity_drop"
LOW_VERIFIED_SHARE = "low_verified_share"
KEY_ACCOUNTS_NOT_VISITED = "key_accounts_not_visited"
NO_CHECK_IN = "no_check_in"
RULES: tuple[str, ...] = (
    ACTIVITY_DROP,
    CONVERSION_DROP,
    NO_ACTIVITY,
    PIPELINE_COVERAGE_LOW,
    PACING_FORECAST,
    STALLED_DEALS,
    FIELD_ACTIVITY_DROP,
    LOW_VERIFIED_SHARE,
    KEY_ACCOUNTS_NOT_VISITED,
    NO_CHECK_IN,
)

ONE_DAY = timedelta(days=1)
# A baseline is judged only when the data reaches into its first week.
HISTORY_SLACK_DAYS = 7
ZERO = Decimal("0.00")
Daily = Mapping[date, Mapping[str, int]]

COUNTER_LABELS: dict[str, str] = {
    "call": "Calls",
    "call_connected": "Connected calls",
    "email": "Emails",
    "meeting_scheduled": "Meetings booked",
    "meeting_held": "Meetings held",
    "visit": "Visits",
    "demo": "Demos",
    "proposal_sent": "Proposals sent",
    "deal_created": "Deals created",
    "deal_stage_changed": "Stage changes",
    "deal_won": "Deals won",
    "deal_lost": "Deals lost",
    SCORE: "Weighted activity score",
}
STEP_LABELS: dict[str, str] = {
    "call_to_meeting_scheduled": "Meetings booked per call",
    "scheduled_to_held": "Meetings held per meeting booked",
    "held_to_proposal": "Proposals per meeting held",
    "proposal_to_won": "Deals won per proposal",
    "created_to_won": "Deals won per deal created",
}
# What a manager can do about a falling step, in the rep's own funnel.
STEP_ACTIONS: dict[str, str] = {
    "call_to_meeting_scheduled": "listen to a few recent calls together and rework the opener and the ask",
    "scheduled_to_held": "check confirmations and reminders, and how far ahead meetings are booked",
    "held_to_proposal": "review recent meetings: discovery depth, next steps agreed, who was in the room",
    "proposal_to_won": "review open proposals together: pricing, decision makers, competition",
    "created_to_won": "review qualification: which new deals are real, and which went dark and why",
}


@dataclass(frozen=True)
class RepView:
    """What the rules know about one rep at evaluation time.

    ``daily`` holds UTC-day counters (event types and ``call_connected``) reaching at least
    ``config.history_days`` back; ``deals`` the rep's open deals and those closed within
    ``config.deal_history_days``. ``last_activity_at`` is the newest activity event of any type.
    """

    rep_id: str
    rep: Rep | None
    daily: Daily
    last_activity_at: datetime | None
    deals: Sequence[Deal]
    # Field visits checked into within ``config.visit_history_days`` (orphan check-outs left out),
    # and the accounts assigned to the rep (their owner).
    visits: Sequence[VisitRecord] = ()
    accounts: Sequence[Account] = ()


# --- Small pure helpers -------------------------------------------------------------------------------


def window_totals(daily: Daily, first: date, last: date) -> dict[str, int]:
    """Every counter summed over the days ``first`` to ``last`` (inclusive)."""
    totals: dict[str, int] = {}
    day = first
    while day <= last:
        counts = daily.get(day)
        if counts:
            for counter, count in counts.items():
                totals[counter] = totals.get(counter, 0) + count
        day += ONE_DAY
    return totals


def activity_score(counts: Mapping[str, int], weights: Mapping[str, float]) -> float:
    return math.fsum(weight * counts.get(counter, 0) for counter, weight in weights.items())


def working_days(calendar: WorkingCalendar, first: date, last: date) -> int:
    """Working days of ``calendar`` among the dates ``first`` to ``last`` (inclusive)."""
    count = 0
    day = first
    while day <= last:
        count += calendar.is_working_day(day)
        day += ONE_DAY
    return count


def working_hours_between(start: datetime, end: datetime, calendar: WorkingCalendar) -> float:
    """Working hours of ``calendar`` (in its time zone) between two instants."""
    if end <= start:
        return 0.0
    zone = ZoneInfo(calendar.timezone)
    seconds = 0.0
    day = start.astimezone(zone).date()
    last = end.astimezone(zone).date()
    while day <= last:
        if calendar.is_working_day(day):
            opens = datetime.combine(day, calendar.start, tzinfo=zone)
            closes = datetime.combine(day, calendar.end, tzinfo=zone)
            # Subtract in UTC: aware datetimes sharing a tzinfo subtract as wall time, across DST too.
            low, high = max(opens, start).astimezone(UTC), min(closes, end).astimezone(UTC)
            if high > low:
                seconds += (high - low).total_seconds()
        day += ONE_DAY
    return seconds / 3600


def binomial_cdf(successes: int, trials: int, probability: float) -> float:
    """P(X <= successes) for X ~ Binomial(trials, probability), in log space (no underflow)."""
    if successes >= trials or probability <= 0:
        return 1.0
    if successes < 0:
        return 0.0
    if probability >= 1:
        return 0.0
    log_p, log_q = math.log(probability), math.log1p(-probability)
    base = math.lgamma(trials + 1)
    logs = [
        base - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p + (trials - k) * log_q
        for k in range(successes + 1)
    ]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(value - top) for value in logs))


def rate_drop_p_value(above: int, below: int, base_above: int, base_below: int) -> float:
    """How likely a window rate this low is if nothing changed: given all the numerator events of
    window and baseline together, each falls in the window in proportion to its share of the
    denominators (the exact conditional test of two Poisson rates)."""
    share = below / (below + base_below)
    return binomial_cdf(above, above + base_above, share)


def _breached(value: float, reference: float, fire_below: float, resolve_above: float, firing: bool) -> bool:
    """Hysteresis: below ``fire_below`` x reference starts an alert; a firing one holds until the
    value reaches ``resolve_above`` x reference."""
    return value < (resolve_above if firing else fire_below) * reference


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value - round(value)) < 0.05 or abs(value) >= 100 else f"{value:,.1f}"


def _whole(value: float) -> int:
    """Rounded up to a whole count, without float dust turning 450.0000001 into 451."""
    return math.ceil(round(value, 6))


def _money(value: Decimal | float, currency: str) -> str:
    return f"{float(value):,.0f} {currency}"


def _per(days: int) -> str:
    return "week" if days == 7 else f"{days} days"


def _drop_percent(value: float, reference: float) -> int:
    return round(100 * (1 - value / reference)) if reference else 0


def _name(view: RepView) -> str:
    return view.rep.name if view.rep is not None else view.rep_id


def _label(counter: str) -> str:
    return COUNTER_LABELS.get(counter, counter.replace("_", " ").capitalize())


def _rep_labels(view: RepView, mode: ManagementMode) -> dict[str, str]:
    labels = {"mode": mode.value}
    rep = view.rep
    if rep is not None:
        labels.update(team=rep.team, territory=rep.territory, rep_name=rep.name)
        if rep.manager:
            labels["manager"] = rep.manager
    return labels


# --- Evaluation context ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Now:
    at: datetime
    config: AlertRulesConfig
    firing: Set[str]

    @property
    def today(self) -> date:
        return self.at.date()

    @property
    def yesterday(self) -> date:
        return self.today - ONE_DAY

    def was_firing(self, rule: str, scope: Scope, key: str, detail: str = "") -> bool:
        return alert_fingerprint(rule, scope, key, detail) in self.firing


@dataclass(frozen=True, slots=True)
class _Group:
    scope: Scope
    key: str
    views: tuple[RepView, ...]
    labels: dict[str, str]
    calendar: WorkingCalendar
    manager: str | None


def evaluate(
    views: Sequence[RepView],
    now: datetime,
    config: AlertRulesConfig,
    firing: Set[str],
) -> list[AlertCandidate]:
    """Every alert condition that holds at ``now``, for every rep, team and territory.

    ``firing`` holds the fingerprints firing after the previous evaluation; conditions judged with
    hysteresis use it to decide between the firing and the resolve threshold. The result is
    sorted by (rule, scope, key, detail).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC), e.g. datetime.now(UTC)")
    context = _Now(now.astimezone(UTC), config, firing)
    modes = modes_of(views, context.at, config)
    team_scores = _team_scores(views, context)
    candidates: list[AlertCandidate] = []
    for view in views:
        decision = modes[view.rep_id]
        candidates.extend(_rep_activity_drop(view, decision, team_scores, context))
        candidates.extend(_conversion_drop(view, decision, context))
        candidates.extend(_no_activity(view, decision, context))
        candidates.extend(_rep_pipeline_coverage(view, decision, context))
        candidates.extend(_pacing_forecast(view, decision, context))
        candidates.extend(_stalled_deals(view, decision, context))
        candidates.extend(_field_activity_drop(view, decision, context))
        candidates.extend(_low_verified_share(view, decision, context))
        candidates.extend(_key_accounts_not_visited(view, decision, context))
        candidates.extend(_no_check_in(view, decision, context))
    for group in _groups(views, config):
        rules = (
            (config.team_activity_drop, config.team_pipeline_coverage_low)
            if group.scope is Scope.TEAM
            else (config.territory_activity_drop, config.territory_pipeline_coverage_low)
        )
        candidates.extend(_group_activity_drop(group, rules[0], context))
        candidates.extend(_group_pipeline_coverage(group, rules[1], context))
    return sorted(candidates, key=lambda c: (c.rule, c.scope.value, c.key, c.detail))


OVERSIGHT_SHIFT = "oversight_shift"


def oversight_shifts(
    views: Iterable[RepView], now: datetime, config: AlertRulesConfig
) -> list[AlertCandidate]:
    """An informational alert for every seasoned rep currently watched on activity rules because
    outcomes fell short (the "freedom box" shrank): it fires when the shift starts and resolves
    when outcomes recover, so the manager hears of both in chat."""
    candidates: list[AlertCandidate] = []
    without_shifts = config.model_copy(update={"modes": config.modes.model_copy(update={"enabled": False})})
    for view in views:
        decision = effective_mode(view, now, config)
        base = effective_mode(view, now, without_shifts)
        if base.mode is not ManagementMode.SEASONED or decision.mode is base.mode:
            continue
        name = view.rep.name if view.rep is not None else view.rep_id
        candidates.append(
            AlertCandidate(
                rule=OVERSIGHT_SHIFT,
                scope=Scope.REP,
                key=view.rep_id,
                severity=Severity.INFO,
                value=0.0,
                baseline=None,
                summary=f"{name} is now managed on activity floors: {decision.reason}",
                action=f"Agree an activity plan with {name}; outcome rules return after a month on target",
                observed_at=now,
                labels=_rep_labels(view, decision.mode),
            )
        )
    return candidates


def modes_of(views: Iterable[RepView], now: datetime, config: AlertRulesConfig) -> dict[str, ModeDecision]:
    """Every rep's management mode at ``now`` (what :func:`evaluate` uses), by rep id."""
    return {view.rep_id: effective_mode(view, now, config) for view in views}


# --- activity_drop -----------------------------------------------------------------------------------


def is_day_worked(counts: Mapping[str, int], rule: ActivityWindows) -> bool:
    """Whether a day has any of the rep's own outreach (``rule.idle_day_counters``)."""
    return any(counts.get(counter, 0) > 0 for counter in rule.idle_day_counters)


def history_reaches(daily: Daily, first_day: date, slack_days: int) -> bool:
    """Whether the data reaches back into the ``slack_days`` days from ``first_day``: a baseline
    whose first days have no data at all belongs to a rep (or a data load) too new to judge."""
    latest_start = first_day + timedelta(days=slack_days - 1)
    return any(day <= latest_start and counts for day, counts in daily.items())


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class ActivityWindow:
    """One activity figure (a counter or the score) over the window, and the baseline scaled to it.

    ``window_days`` and ``baseline_days`` are the days compared: every day, or with
    ``skip_idle_days`` the active ones (when the window has any).
    """

    detail: str
    value: float
    baseline: float
    window_first: date
    window_last: date
    baseline_first: date
    window_days: int
    baseline_days: int

    def baseline_phrase(self, rule: ActivityWindows) -> str:
        """ "40/week", or "40 for the 3 days worked" when idle days changed the scale."""
        if self.window_days * rule.baseline_days == self.baseline_days * rule.window_days:
            return f"{_number(self.baseline)}/{_per(rule.window_days)}"
        return f"{_number(self.baseline)} for the {self.window_days} days worked"


def activity_windows(daily: Daily, last_day: date, rule: ActivityWindows) -> dict[str, ActivityWindow]:
    """Each judged type (and the score) over the ``window_days`` ending ``last_day`` against the
    previous ``baseline_days``, scaled to the window (by active days with ``skip_idle_days``).
    Figures whose scaled baseline is below the minimum volume are left out."""
    window_first = last_day - timedelta(days=rule.window_days - 1)
    baseline_last = window_first - ONE_DAY
    baseline_first = baseline_last - timedelta(days=rule.baseline_days - 1)
    window_span = _days(window_first, last_day)
    baseline_span = _days(baseline_first, baseline_last)
    if rule.skip_idle_days:
        active_window = [day for day in window_span if is_day_worked(daily.get(day, {}), rule)]
        active_baseline = [day for day in baseline_span if is_day_worked(daily.get(day, {}), rule)]
        if active_window and active_baseline:
            window_span, baseline_span = active_window, active_baseline
    window = window_totals_of(daily, window_span)
    baseline = window_totals_of(daily, baseline_span)
    scale = len(window_span) / len(baseline_span)
    figures: dict[str, tuple[float, float, float]] = {
        counter: (window.get(counter, 0), baseline.get(counter, 0) * scale, rule.min_baseline_count)
        for counter in rule.types
    }
    if rule.score_enabled:
        figures[SCORE] = (
            activity_score(window, rule.weights),
            activity_score(baseline, rule.weights) * scale,
            rule.min_baseline_score,
        )
    return {
        detail: ActivityWindow(
            detail,
            value,
            scaled,
            window_first,
            last_day,
            baseline_first,
            len(window_span),
            len(baseline_span),
        )
        for detail, (value, scaled, minimum) in figures.items()
        if scaled > 0 and scaled >= minimum
    }


def window_totals_of(daily: Daily, days: Iterable[date]) -> dict[str, int]:
    """Every counter summed over the given days."""
    totals: dict[str, int] = {}
    for day in days:
        for counter, count in daily.get(day, {}).items():
            totals[counter] = totals.get(counter, 0) + count
    return totals


def _day_value(detail: str, rule: ActivityWindows) -> Callable[[Mapping[str, int]], float]:
    if detail == SCORE:
        return lambda counts: activity_score(counts, rule.weights)
    return lambda counts: float(counts.get(detail, 0))


def drop_start(
    daily: Daily, figure: ActivityWindow, rule: ActivityWindows, calendar: WorkingCalendar
) -> date:
    """When the drop began: the working day that best splits the baseline-plus-window span into a
    higher part and a lower part (the maximum-likelihood change point of a shift in the mean).

    A running mean of the recent days would drift back as the drop goes on; the change point stays
    where the level changed. Idle days are left out with ``skip_idle_days``, as in the figures.
    """
    value_of = _day_value(figure.detail, rule)
    days = [
        day
        for day in _days(figure.baseline_first, figure.window_last)
        if calendar.is_working_day(day)
        and (not rule.skip_idle_days or is_day_worked(daily.get(day, {}), rule))
    ]
    values = [value_of(daily.get(day, {})) for day in days]
    total, count = math.fsum(values), len(values)
    best, best_day, before = 0.0, figure.window_first, 0.0
    for split in range(1, count):
        before += values[split - 1]
        mean_before = before / split
        mean_after = (total - before) / (count - split)
        if mean_after >= mean_before:
            continue
        strength = split * (count - split) / count * (mean_before - mean_after) ** 2
        if strength > best:
            best, best_day = strength, days[split]
    return best_day


def _team_scores(views: Sequence[RepView], context: _Now) -> dict[str, list[float]]:
    """Every team's reps' activity scores over the rep rule's window (for the team median)."""
    rule = context.config.activity_drop
    first = context.yesterday - timedelta(days=rule.window_days - 1)
    scores: dict[str, list[float]] = {}
    for view in views:
        if view.rep is not None:
            counts = window_totals(view.daily, first, context.yesterday)
            scores.setdefault(view.rep.team, []).append(activity_score(counts, rule.weights))
    return scores


def _rep_activity_drop(
    view: RepView, decision: ModeDecision, team_scores: Mapping[str, list[float]], context: _Now
) -> list[AlertCandidate]:
    rule = context.config.activity_drop
    if not rule.enabled:
        return []
    calendar = context.config.calendar_for(view.rep.team if view.rep else None)
    window_first = context.yesterday - timedelta(days=rule.window_days - 1)
    baseline_first = window_first - timedelta(days=rule.baseline_days)
    figures = (
        activity_windows(view.daily, context.yesterday, rule) if _judged_from(view, baseline_first) else {}
    )
    team_median = _team_median(view, team_scores, context)
    window = window_totals(view.daily, window_first, context.yesterday)
    severity = rule_severity(rule, decision.mode, context.config)
    name = _name(view)
    team = view.rep.team if view.rep else ""
    candidates: list[AlertCandidate] = []
    for detail in (*rule.types, SCORE) if rule.score_enabled else rule.types:
        value = activity_score(window, rule.weights) if detail == SCORE else float(window.get(detail, 0))
        firing = context.was_firing(ACTIVITY_DROP, Scope.REP, view.rep_id, detail)
        own = figures.get(detail)
        own_low = own is not None and _breached(
            value, own.baseline, rule.fire_below, rule.resolve_above, firing
        )
        team_low = (
            detail == SCORE
            and team_median is not None
            and rule.team_median_fraction is not None
            and _breached(
                value, team_median[0], rule.team_median_fraction, rule.team_median_resolve_above, firing
            )
        )
        if not (own_low or team_low):
            continue
        label = _label(detail)
        if own is not None and own_low:
            baseline = own.baseline
            percent = _drop_percent(value, baseline)
            since = drop_start(view.daily, own, rule, calendar)
            summary = (
                f"{label} over the last {rule.window_days} days: {_number(value)}, down {percent}% from the "
                f"{rule.baseline_days}-day baseline of {own.baseline_phrase(rule)} (since {since})"
            )
            if team_low and team_median is not None:
                summary += f"; the median of {team} is {_number(team_median[0])}"
            what = "activity" if detail == SCORE else label.lower()
            action = (
                f"Check in with {name}: {what} fell {percent}% over {(context.today - since).days} days; "
                "review their calendar, pipeline and blockers"
            )
        elif team_median is not None:  # team_low: always so here, as it needs a median
            baseline, team_size = team_median
            summary = (
                f"{label} over the last {rule.window_days} days: {_number(value)}, "
                f"{_drop_percent(value, baseline)}% below the median of {team} ({_number(baseline)}, "
                f"{team_size} reps)"
            )
            action = (
                f"Check in with {name}: their activity is far below their teammates'; review their "
                "calendar, territory and blockers"
            )
        else:
            continue
        candidates.append(
            AlertCandidate(
                rule=ACTIVITY_DROP,
                scope=Scope.REP,
                key=view.rep_id,
                severity=severity,
                value=value,
                baseline=baseline,
                summary=summary,
                action=action,
                observed_at=context.at,
                detail=detail,
                labels=_rep_labels(view, decision.mode),
            )
        )
    return candidates


def _judged_from(view: RepView, baseline_first: date) -> bool:
    """Whether the rep's history covers a baseline starting on ``baseline_first``: hired by then
    (else the baseline holds days before they started) and with data from its first days on."""
    rep = view.rep
    if rep is not None and rep.hired_at is not None and rep.hired_at > baseline_first:
        return False
    return history_reaches(view.daily, baseline_first, HISTORY_SLACK_DAYS)


def _team_median(
    view: RepView, team_scores: Mapping[str, list[float]], context: _Now
) -> tuple[float, int] | None:
    rule = context.config.activity_drop
    if view.rep is None or rule.team_median_fraction is None:
        return None
    scores = team_scores.get(view.rep.team, [])
    if len(scores) < rule.min_team_reps:
        return None
    median = statistics.median(scores)
    if median <= 0 or median < rule.min_baseline_score:
        return None
    return median, len(scores)


# --- Team and territory groups -----------------------------------------------------------------------


def _groups(views: Sequence[RepView], config: AlertRulesConfig) -> list[_Group]:
    """Teams and territories of the reps with a record (unassigned activity is nobody's team)."""
    by_team: dict[str, list[RepView]] = {}
    by_territory: dict[str, list[RepView]] = {}
    for view in views:
        if view.rep is not None:
            by_team.setdefault(view.rep.team, []).append(view)
            by_territory.setdefault(view.rep.territory, []).append(view)
    groups: list[_Group] = []
    for team, members in sorted(by_team.items()):
        manager = _common_manager(members)
        labels = {"team": team} | ({"manager": manager} if manager else {})
        groups.append(_Group(Scope.TEAM, team, tuple(members), labels, config.calendar_for(team), manager))
    for territory, members in sorted(by_territory.items()):
        groups.append(
            _Group(
                Scope.TERRITORY,
                territory,
                tuple(members),
                {"territory": territory},
                config.calendar,
                _common_manager(members),
            )
        )
    return groups


def _common_manager(views: Iterable[RepView]) -> str | None:
    managers = Counter(view.rep.manager for view in views if view.rep is not None and view.rep.manager)
    return managers.most_common(1)[0][0] if managers else None


def _merged_daily(views: Iterable[RepView], first: date, last: date) -> dict[date, dict[str, int]]:
    merged: dict[date, dict[str, int]] = {}
    for view in views:
        for day, counts in view.daily.items():
            if first <= day <= last:
                into = merged.setdefault(day, {})
                for counter, count in counts.items():
                    into[counter] = into.get(counter, 0) + count
    return merged


def _group_name(group: _Group) -> str:
    return group.key if group.scope is Scope.TEAM else f"territory {group.key}"


def _group_severity(rule: RuleConfig) -> Severity:
    return Severity(rule.severity)


def _group_activity_drop(group: _Group, rule: GroupActivityDropRule, context: _Now) -> list[AlertCandidate]:
    if not rule.enabled:
        return []
    first = context.yesterday - timedelta(days=rule.window_days + rule.baseline_days - 1)
    daily = _merged_daily(group.views, first, context.yesterday)
    if not history_reaches(daily, first, HISTORY_SLACK_DAYS):
        return []
    figures = activity_windows(daily, context.yesterday, rule)
    candidates: list[AlertCandidate] = []
    for detail, figure in sorted(figures.items()):
        firing = context.was_firing(ACTIVITY_DROP, group.scope, group.key, detail)
        if not _breached(figure.value, figure.baseline, rule.fire_below, rule.resolve_above, firing):
            continue
        since = drop_start(daily, figure, rule, group.calendar)
        label = _label(detail)
        percent = _drop_percent(figure.value, figure.baseline)
        who = _group_name(group)
        lead = f"with {group.manager}" if group.manager and group.scope is Scope.TEAM else "with its managers"
        candidates.append(
            AlertCandidate(
                rule=ACTIVITY_DROP,
                scope=group.scope,
                key=group.key,
                severity=_group_severity(rule),
                value=figure.value,
                baseline=figure.baseline,
                summary=(
                    f"{label} of {who} ({len(group.views)} reps) over the last {rule.window_days} days: "
                    f"{_number(figure.value)}, down {percent}% from the {rule.baseline_days}-day baseline "
                    f"of {figure.baseline_phrase(rule)} (since {since})"
                ),
                action=(
                    f"Raise it {lead}: {who}'s {'activity' if detail == SCORE else label.lower()} fell "
                    f"{percent}% across its reps; look for a shared cause (lead flow, tooling, a holiday, "
                    "a reorganisation) before coaching reps one by one"
                ),
                observed_at=context.at,
                detail=detail,
                labels=dict(group.labels),
            )
        )
    return candidates


# --- conversion_drop ---------------------------------------------------------------------------------


def _conversion_drop(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.conversion_drop
    if not rule.enabled:
        return []
    window_first = context.yesterday - timedelta(days=rule.window_days - 1)
    baseline_last = window_first - ONE_DAY
    baseline_first = baseline_last - timedelta(days=rule.baseline_days - 1)
    if not _judged_from(view, baseline_first):
        return []
    window = window_totals(view.daily, window_first, context.yesterday)
    baseline = window_totals(view.daily, baseline_first, baseline_last)
    severity = rule_severity(rule, decision.mode, context.config)
    candidates: list[AlertCandidate] = []
    for step_name, step in rule.steps.items():
        below, above = window.get(step.denominator, 0), window.get(step.numerator, 0)
        base_below, base_above = baseline.get(step.denominator, 0), baseline.get(step.numerator, 0)
        if below < step.min_denominator or base_below < step.min_baseline_denominator or not base_above:
            continue
        rate, base_rate = above / below, base_above / base_below
        firing = context.was_firing(CONVERSION_DROP, Scope.REP, view.rep_id, step_name)
        if not _breached(rate, base_rate, rule.fire_below, rule.resolve_above, firing):
            continue
        # A new alert also needs the drop to be unlikely at the old rate; a firing one resolves
        # on the rate alone.
        if (
            not firing
            and rule.max_p_value is not None
            and rate_drop_p_value(above, below, base_above, base_below) > rule.max_p_value
        ):
            continue
        label = STEP_LABELS.get(step_name, step_name.replace("_", " ").capitalize())
        percent = _drop_percent(rate, base_rate)
        candidates.append(
            AlertCandidate(
                rule=CONVERSION_DROP,
                scope=Scope.REP,
                key=view.rep_id,
                severity=severity,
                value=rate,
                baseline=base_rate,
                summary=(
                    f"{label} over the last {rule.window_days} days: {rate:.1%} ({above} of {below}), "
                    f"down {percent}% from the {rule.baseline_days}-day baseline of {base_rate:.1%} "
                    f"({base_above} of {base_below}) (since {window_first})"
                ),
                action=(
                    f"Coach {_name(view)} on {label.lower()}: "
                    f"{STEP_ACTIONS.get(step_name, 'review the step together')}"
                ),
                observed_at=context.at,
                detail=step_name,
                labels=_rep_labels(view, decision.mode),
            )
        )
    return candidates


# --- no_activity -------------------------------------------------------------------------------------


def _no_activity(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.no_activity
    if not rule.enabled:
        return []
    calendar = context.config.calendar_for(view.rep.team if view.rep else None)
    zone = ZoneInfo(calendar.timezone)
    since = view.last_activity_at
    never = since is None
    if since is None:
        if not rule.alert_without_history or view.rep is None or view.rep.hired_at is None:
            return []
        since = datetime.combine(view.rep.hired_at, calendar.start, tzinfo=zone)
    idle = working_hours_between(since, context.at, calendar)
    if idle < rule.working_hours:
        return []
    local = since.astimezone(zone)
    days = _weekday_span(calendar)
    what = "since starting on" if never else "since"
    return [
        AlertCandidate(
            rule=NO_ACTIVITY,
            scope=Scope.REP,
            key=view.rep_id,
            severity=rule_severity(rule, decision.mode, context.config),
            value=idle,
            baseline=None,
            summary=(
                f"No activity logged for {_number(idle)} working hours ({what} {local:%a %Y-%m-%d %H:%M} "
                f"{calendar.timezone}; working hours {days} {calendar.start:%H:%M}-{calendar.end:%H:%M})"
            ),
            action=(
                f"Reach {_name(view)}: nothing logged {what} {local:%a %d %b %H:%M}; check they are not off "
                "sick or on leave, and that their calls and meetings reach the CRM"
            ),
            observed_at=context.at,
            labels=_rep_labels(view, decision.mode),
        )
    ]


def _weekday_span(calendar: WorkingCalendar) -> str:
    names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    days = sorted(calendar.working_days)
    if days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        return f"{names[days[0]]}-{names[days[-1]]}"
    return ",".join(names[day] for day in days)


# --- pipeline_coverage_low ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coverage:
    """Open pipeline against this month's quota still to close, at one moment."""

    month: Window
    quota: Decimal
    won: Decimal
    pipeline: Decimal

    @property
    def remaining(self) -> Decimal:
        return max(ZERO, self.quota - self.won)

    @property
    def ratio(self) -> float | None:
        """None when there is no quota or it is already met: nothing to cover."""
        return float(self.pipeline / self.remaining) if self.remaining > 0 else None


def coverage_at(reps: Iterable[tuple[Rep, Sequence[Deal]]], moment: datetime) -> Coverage:
    """Coverage of one rep or a sum of reps at ``moment`` (sums first, ratio after)."""
    month = month_of(moment.astimezone(UTC).date())
    quota, won, pipeline = ZERO, ZERO, ZERO
    for rep, deals in reps:
        quota += month_quota(rep, month)
        won += won_revenue(deals, month.start, moment + timedelta(microseconds=1))
        pipeline += sum((deal.amount or ZERO for deal in deals if deal.open_at(moment)), ZERO)
    return Coverage(month, quota, won, pipeline)


def _coverage_since(reps: Sequence[tuple[Rep, Sequence[Deal]]], now: datetime, k: float) -> date:
    """The first day of this month's current run of days ending below ``k`` coverage."""
    today = now.date()
    since = today
    day = today - ONE_DAY
    month_start = today.replace(day=1)
    while day >= month_start:
        end_of_day = datetime.combine(day + ONE_DAY, datetime.min.time(), tzinfo=UTC) - timedelta(
            microseconds=1
        )
        ratio = coverage_at(reps, end_of_day).ratio
        if ratio is None or ratio >= k:
            break
        since = day
        day -= ONE_DAY
    return since


def _coverage_candidate(
    reps: Sequence[tuple[Rep, Sequence[Deal]]],
    rule: CoverageThresholds,
    scope: Scope,
    key: str,
    who: str,
    severity: Severity,
    labels: dict[str, str],
    context: _Now,
) -> AlertCandidate | None:
    coverage = coverage_at(reps, context.at)
    ratio = coverage.ratio
    if ratio is None:
        return None
    firing = context.was_firing(PIPELINE_COVERAGE_LOW, scope, key)
    if not _breached(ratio, 1.0, rule.min_coverage, rule.resolve_above, firing):
        return None
    currency = context.config.currency
    since = _coverage_since(reps, context.at, rule.min_coverage)
    missing = Decimal(str(rule.min_coverage)) * coverage.remaining - coverage.pipeline
    month = f"{coverage.month.since:%B %Y}"
    subject = f"{who}'s open pipeline" if scope is not Scope.REP else "Open pipeline"
    if missing > 0:
        action = (
            f"Build pipeline with {who}: about {_money(missing, currency)} more open pipeline reaches "
            f"{rule.min_coverage:.1f}x; review prospecting and the deals in qualification"
        )
    else:  # held by hysteresis
        action = (
            f"Keep building pipeline with {who}: coverage is back to {ratio:.1f}x but not yet at the "
            f"{rule.resolve_above:.1f}x that clears this alert"
        )
    return AlertCandidate(
        rule=PIPELINE_COVERAGE_LOW,
        scope=scope,
        key=key,
        severity=severity,
        value=ratio,
        baseline=rule.min_coverage,
        summary=(
            f"{subject} of {_money(coverage.pipeline, currency)} covers {ratio:.1f}x the "
            f"{_money(coverage.remaining, currency)} of {month} quota still to close (quota "
            f"{_money(coverage.quota, currency)}, won {_money(coverage.won, currency)}); target "
            f"{rule.min_coverage:.1f}x (below since {since})"
        ),
        action=action,
        observed_at=context.at,
        labels=labels,
    )


def _rep_pipeline_coverage(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.pipeline_coverage_low
    if not rule.enabled or view.rep is None:
        return []
    candidate = _coverage_candidate(
        [(view.rep, view.deals)],
        rule,
        Scope.REP,
        view.rep_id,
        _name(view),
        rule_severity(rule, decision.mode, context.config),
        _rep_labels(view, decision.mode),
        context,
    )
    return [candidate] if candidate else []


def _group_pipeline_coverage(
    group: _Group, rule: GroupPipelineCoverageRule, context: _Now
) -> list[AlertCandidate]:
    if not rule.enabled:
        return []
    reps = [(view.rep, view.deals) for view in group.views if view.rep is not None]
    candidate = _coverage_candidate(
        reps,
        rule,
        group.scope,
        group.key,
        _group_name(group),
        _group_severity(rule),
        dict(group.labels),
        context,
    )
    return [candidate] if candidate else []


# --- pacing_forecast ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PacingForecast:
    """This month's revenue projected from the activity pace and the rep's own funnel."""

    month: Window
    quota: Decimal
    won: Decimal
    top_counter: str
    pace_per_working_day: float
    remaining_working_days: int
    # The funnel counters over the rates window, top first, deal_won last.
    funnel_counts: tuple[tuple[str, int], ...]
    average_deal: float

    @property
    def revenue_per_top(self) -> float:
        """Revenue one unit at the top of the funnel brings, at the rep's rates (the step rates
        multiply out to wins / top)."""
        top, wins = self.funnel_counts[0][1], self.funnel_counts[-1][1]
        return wins / top * self.average_deal

    @property
    def projected(self) -> float:
        return (
            float(self.won) + self.pace_per_working_day * self.remaining_working_days * self.revenue_per_top
        )

    @property
    def shortfall(self) -> float:
        return float(self.quota) - self.projected

    def extra_needed(self) -> list[tuple[str, float]]:
        """The reverse funnel: how many more of each step close the shortfall, wins first."""
        wins = max(0.0, self.shortfall) / self.average_deal
        needed = [(self.funnel_counts[-1][0], wins)]
        for (counter, count), (_, next_count) in zip(
            reversed(self.funnel_counts[:-1]), reversed(self.funnel_counts[1:]), strict=True
        ):
            needed.append((counter, needed[-1][1] * count / next_count))
        return needed


def pacing_forecast(view: RepView, now: datetime, config: AlertRulesConfig) -> PacingForecast | None:
    """The rep's forecast at ``now``, or None without a quota or enough history for rates."""
    rule = config.pacing_forecast
    rep = view.rep
    if rep is None:
        return None
    now = now.astimezone(UTC)
    today = now.date()
    yesterday = today - ONE_DAY
    month = month_of(today)
    quota = month_quota(rep, month)
    if quota <= 0:
        return None
    rates_first = yesterday - timedelta(days=rule.rates_days - 1)
    rates = window_totals(view.daily, rates_first, yesterday)
    counts = tuple((counter, rates.get(counter, 0)) for counter in rule.funnel)
    if counts[0][1] < rule.min_top_count or counts[-1][1] < rule.min_wins or any(n == 0 for _, n in counts):
        return None
    rates_start = datetime.combine(rates_first, datetime.min.time(), tzinfo=UTC)
    sizes = [
        float(deal.amount)
        for deal in view.deals
        if deal.status is DealStatus.WON
        and deal.amount is not None
        and not deal.amount_missing
        and deal.closed_at is not None
        and rates_start <= deal.closed_at <= now
    ]
    if not sizes:
        return None
    calendar = config.calendar_for(rep.team)
    pace_first = yesterday - timedelta(days=rule.pace_days - 1)
    pace_working_days = working_days(calendar, pace_first, yesterday)
    if not pace_working_days:
        return None
    top = rule.funnel[0]
    pace = window_totals(view.daily, pace_first, yesterday).get(top, 0) / pace_working_days
    return PacingForecast(
        month=month,
        quota=quota,
        won=won_revenue(view.deals, month.start, now + timedelta(microseconds=1)),
        top_counter=top,
        pace_per_working_day=pace,
        remaining_working_days=working_days(calendar, today, month.until),
        funnel_counts=counts,
        average_deal=statistics.fmean(sizes),
    )


def _pacing_forecast(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.pacing_forecast
    if not rule.enabled:
        return []
    forecast = pacing_forecast(view, context.at, context.config)
    if forecast is None:
        return []
    quota = float(forecast.quota)
    firing = context.was_firing(PACING_FORECAST, Scope.REP, view.rep_id)
    if not _breached(forecast.projected, quota, rule.fire_below, rule.resolve_above, firing):
        return []
    currency = context.config.currency
    name = _name(view)
    top_label = _label(forecast.top_counter).lower()
    days_left = forecast.remaining_working_days
    top, wins = forecast.funnel_counts[0][1], forecast.funnel_counts[-1][1]
    month = f"{forecast.month.since:%B %Y}"
    summary = (
        f"At the last {rule.pace_days} days' pace ({forecast.pace_per_working_day:.1f} {top_label} a working "
        f"day) and own conversion (1 deal won per {top / wins:.0f} {top_label}, "
        f"{_money(forecast.average_deal, currency)} average), {month} projects to "
        f"{_money(forecast.projected, currency)} against a quota of {_money(quota, currency)}"
    )
    if forecast.shortfall > 0:
        summary += (
            f": {_money(forecast.shortfall, currency)} short (won so far {_money(forecast.won, currency)}, "
            f"{days_left} working days left)"
        )
        needed = forecast.extra_needed()
        wins_needed = needed[0][1]
        steps = ", ".join(f"{_whole(n):,} more {_label(c).lower()}" for c, n in needed[1:])
        extra = f"about {wins_needed:.1f} more deals won: {steps}"
        if days_left:
            per_day = needed[-1][1] / days_left
            extra += f" ({_whole(per_day):,} more {top_label} a working day)"
            action = (
                f"Plan the rest of {month} with {name}: {_whole(per_day):,} more {top_label} a working "
                "day at their own conversion rates, or move late-stage deals forward"
            )
        else:
            action = f"No working days left in {month}: plan next month's pipeline with {name}"
        summary += f". Closing the gap takes {extra}"
    else:
        summary += f", {_money(-forecast.shortfall, currency)} above it but not yet clear of the margin"
        action = f"Keep the pace with {name}: the forecast is recovering"
    return [
        AlertCandidate(
            rule=PACING_FORECAST,
            scope=Scope.REP,
            key=view.rep_id,
            severity=rule_severity(rule, decision.mode, context.config),
            value=forecast.projected,
            baseline=quota,
            summary=summary,
            action=action,
            observed_at=context.at,
            labels=_rep_labels(view, decision.mode),
        )
    ]


# --- stalled_deals -----------------------------------------------------------------------------------


def typical_cycle_days(deals: Iterable[Deal], now: datetime, config: AlertRulesConfig) -> tuple[float, int]:
    """The median cycle of the rep's deals won in the lookback (at least a day), and how many deals
    it is from; the configured default (and 0) when there are too few."""
    rule = config.stalled_deals
    since = now - timedelta(days=rule.cycle_lookback_days)
    cycles = [
        deal.cycle_days
        for deal in deals
        if deal.status is DealStatus.WON
        and deal.closed_at is not None
        and since <= deal.closed_at <= now
        and deal.cycle_days is not None
    ]
    if len(cycles) < rule.min_won_deals:
        return rule.default_cycle_days, 0
    return max(1.0, statistics.median(cycles)), len(cycles)


def last_moved_at(deal: Deal, now: datetime, measure: str) -> datetime | None:
    """When the deal last moved by ``now``: its latest stage change (or creation), or its latest event."""
    if measure == "any_event":
        moments = [event.occurred_at for event in deal.events.values() if event.occurred_at <= now]
    else:
        moments = [
            event.occurred_at
            for event in deal.events.values()
            if isinstance(event, DealCreatedEvent | DealStageChangedEvent) and event.occurred_at <= now
        ]
    if moments:
        return max(moments)
    return deal.opened_at


def _stalled_deals(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.stalled_deals
    if not rule.enabled:
        return []
    typical, sample = typical_cycle_days(view.deals, context.at, context.config)
    limit_days = rule.cycle_multiple * typical
    currency = context.config.currency
    name = _name(view)
    whose = f"{name}'s typical {typical:.0f}-day cycle" + (
        f" (median of {sample} won deals)" if sample else " (default: too few won deals to measure)"
    )
    severity = rule_severity(rule, decision.mode, context.config)
    candidates: list[AlertCandidate] = []
    for deal in view.deals:
        if not deal.open_at(context.at):
            continue
        moved = last_moved_at(deal, context.at, rule.measure)
        if moved is None:
            continue
        idle_days = (context.at - moved).total_seconds() / SECONDS_PER_DAY
        if idle_days <= limit_days:
            continue
        facts = ", ".join(
            part
            for part in (
                deal.account_id,
                _money(deal.amount, currency) if deal.amount is not None else None,
                f"stage {deal.stage}" if deal.stage else None,
            )
            if part
        )
        candidates.append(
            AlertCandidate(
                rule=STALLED_DEALS,
                scope=Scope.REP,
                key=view.rep_id,
                severity=severity,
                value=idle_days,
                baseline=typical,
                summary=(
                    f"Deal {deal.deal_id}{f' ({facts})' if facts else ''} has not moved for {idle_days:.0f} "
                    f"days (since {moved.date()}): {idle_days / typical:.1f}x {whose}"
                ),
                action=(
                    f"Review {deal.deal_id} with {name}: agree a dated next step with the buyer, or close "
                    "it as lost to keep the pipeline honest"
                ),
                observed_at=context.at,
                detail=deal.deal_id,
                labels=_rep_labels(view, decision.mode),
            )
        )
    return candidates


# --- Field visits ------------------------------------------------------------------------------------


def _utc_days_ago(context: _Now, days: int) -> datetime:
    """The start of the UTC day ``days`` before today (windows end with yesterday, complete)."""
    return datetime.combine(context.today - timedelta(days=days), datetime.min.time(), tzinfo=UTC)


def _verified_between(view: RepView, start: datetime, end: datetime) -> int:
    return sum(
        1
        for v in view.visits
        if start <= v.checked_in_at < end and v.status is VisitStatus.VERIFIED and not v.check_in_missing
    )


def _field_activity_drop(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.field_activity_drop
    if not rule.enabled or not view.visits:
        return []
    window_start = _utc_days_ago(context, rule.window_days)
    window_end = _utc_days_ago(context, 0)
    baseline_start = _utc_days_ago(context, rule.window_days + rule.baseline_days)
    recent = _verified_between(view, window_start, window_end)
    baseline = _verified_between(view, baseline_start, window_start) * rule.window_days / rule.baseline_days
    if baseline < rule.min_baseline_visits:
        return []
    firing = context.was_firing(FIELD_ACTIVITY_DROP, Scope.REP, view.rep_id)
    if not _breached(recent, baseline, rule.fire_below, rule.resolve_above, firing):
        return []
    return [
        AlertCandidate(
            rule=FIELD_ACTIVITY_DROP,
            scope=Scope.REP,
            key=view.rep_id,
            severity=rule_severity(rule, decision.mode, context.config),
            value=recent,
            baseline=baseline,
            summary=(
                f"Verified visits {_per(rule.window_days)}: {recent} vs {_number(baseline)} before "
                f"(-{_drop_percent(recent, baseline)}%)"
            ),
            action=(
                f"Ride along with {_name(view)} or review their week's route: which customers were "
                "dropped, and is it the plan, the territory or the rep"
            ),
            observed_at=context.at,
            labels=_rep_labels(view, decision.mode),
        )
    ]


def _low_verified_share(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.low_verified_share
    if not rule.enabled or not view.visits:
        return []
    start, end = _utc_days_ago(context, rule.window_days), _utc_days_ago(context, 0)
    visits = [v for v in view.visits if start <= v.checked_in_at < end and not v.check_in_missing]
    if len(visits) < rule.min_visits:
        return []
    verified = sum(1 for v in visits if v.status is VisitStatus.VERIFIED)
    share = verified / len(visits)
    firing = context.was_firing(LOW_VERIFIED_SHARE, Scope.REP, view.rep_id)
    if not _breached(share, 1.0, rule.fire_below, rule.resolve_above, firing):
        return []
    out_of_range = sum(1 for v in visits if v.status is VisitStatus.OUT_OF_RANGE)
    return [
        AlertCandidate(
            rule=LOW_VERIFIED_SHARE,
            scope=Scope.REP,
            key=view.rep_id,
            severity=rule_severity(rule, decision.mode, context.config),
            value=share,
            baseline=rule.fire_below,
            summary=(
                f"Only {share:.0%} of {len(visits)} visits {_per(rule.window_days)} verified at the customer "
                f"({out_of_range} out of range, {len(visits) - verified - out_of_range} without a position)"
            ),
            action=(
                f"Look at {_name(view)}'s unverified visits on the Field visits board: a wrong account "
                "position, check-ins from the car park, location turned off, or visits that did not happen"
            ),
            observed_at=context.at,
            labels=_rep_labels(view, decision.mode),
        )
    ]


def _key_accounts_not_visited(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.key_accounts_not_visited
    key_accounts = {a.account_id: a.name for a in view.accounts if a.segment in rule.segments}
    if not rule.enabled or not key_accounts:
        return []
    since = context.at - timedelta(days=rule.days)
    visited = {
        v.account_id
        for v in view.visits
        if since <= v.checked_in_at <= context.at
        and v.status is VisitStatus.VERIFIED
        and not v.check_in_missing
    }
    missing = [account_id for account_id in sorted(key_accounts) if account_id not in visited]
    if not missing:
        return []
    named = [key_accounts[a] if key_accounts[a] == a else f"{key_accounts[a]} ({a})" for a in missing]
    shown = ", ".join(named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
    return [
        AlertCandidate(
            rule=KEY_ACCOUNTS_NOT_VISITED,
            scope=Scope.REP,
            key=view.rep_id,
            severity=rule_severity(rule, decision.mode, context.config),
            value=len(missing),
            baseline=len(key_accounts),
            summary=(
                f"{len(missing)} of {len(key_accounts)} key accounts without a verified visit in "
                f"{rule.days} days: {shown}"
            ),
            action=f"Plan visits to {shown} with {_name(view)} this week",
            observed_at=context.at,
            labels=_rep_labels(view, decision.mode),
        )
    ]


def _no_check_in(view: RepView, decision: ModeDecision, context: _Now) -> list[AlertCandidate]:
    rule = context.config.no_check_in
    if not rule.enabled or not view.visits:
        return []
    calendar = context.config.calendar_for(view.rep.team if view.rep else None)
    zone = ZoneInfo(calendar.timezone)
    local_now = context.at.astimezone(zone)
    today = local_now.date()
    if not calendar.is_working_day(today) or local_now.time() < rule.by:
        return []
    check_in_days = {v.checked_in_at.astimezone(zone).date() for v in view.visits if not v.check_in_missing}
    if today in check_in_days:
        return []
    lookback: list[date] = []
    day = today - ONE_DAY
    while len(lookback) < rule.lookback_working_days and day > today - timedelta(
        days=4 * rule.lookback_working_days
    ):
        if calendar.is_working_day(day):
            lookback.append(day)
        day -= ONE_DAY
    days_in_field = sum(1 for d in lookback if d in check_in_days)
    if days_in_field < rule.field_rep_days:
        return []  # not a field rep (or not lately)
    return [
        AlertCandidate(
            rule=NO_CHECK_IN,
            scope=Scope.REP,
            key=view.rep_id,
            severity=rule_severity(rule, decision.mode, context.config),
            value=0,
            baseline=days_in_field,
            summary=(
                f"No check-in by {rule.by:%H:%M} {calendar.timezone} today "
                f"(in the field {days_in_field} of the last {len(lookback)} working days)"
            ),
            action=f"Call {_name(view)}: is the day's route on, and does their app check in?",
            observed_at=context.at,
            detail=today.isoformat(),
            labels=_rep_labels(view, decision.mode),
        )
    ]


__all__ = [
    "ACTIVITY_DROP",
    "CONVERSION_DROP",
    "FIELD_ACTIVITY_DROP",
    "KEY_ACCOUNTS_NOT_VISITED",
    "LOW_VERIFIED_SHARE",
    "NO_ACTIVITY",
    "NO_CHECK_IN",
    "PACING_FORECAST",
    "PIPELINE_COVERAGE_LOW",
    "RULES",
    "STALLED_DEALS",
    "ActivityWindow",
    "Coverage",
    "ModeDecision",
    "PacingForecast",
    "RepView",
    "activity_score",
    "activity_windows",
    "binomial_cdf",
    "coverage_at",
    "drop_start",
    "effective_mode",
    "evaluate",
    "history_reaches",
    "is_day_worked",
    "last_moved_at",
    "modes_of",
    "pacing_forecast",
    "rate_drop_p_value",
    "typical_cycle_days",
    "window_totals",
    "working_days",
    "working_hours_between",
]
