"""Backtest of the early-warning rules: replay a history in event time, then check that the warnings
came before revenue fell. Pure: events, rep records and settings in, alerts and scores out.

**Replay.** The events are sorted by event time (duplicates by ``event_id`` count once, as in the
worker) and walked through at a fixed cadence (every 24 hours at 18:00 UTC by default). At each step
``now`` the per-rep state holds exactly the events with ``occurred_at <= now`` and is shaped as the
live engine shapes it: daily counters from :func:`streams.kpi.activity.event_counters` on UTC days,
each rep's deal book (open deals and deals closed within ``config.deal_history_days``), the newest
activity time. :func:`streams.alerts.rules.evaluate` is called with the fingerprints firing after
the previous step, so hysteresis works as live. A fingerprint present at a step starts an alert
occurrence (``fired_at``); its first absence ends it (``resolved_at``). These are the rules' raw
occurrences, before the lifecycle's grouping, silences and inhibition, which change who is told,
not what the rules saw. The first evaluation comes a warm-up after the first event (the 7-day
``activity_drop`` window): a live worker starts from stored history, a replay from nothing.

**Revenue drop** (the outcome the warnings are scored against, defined from won deals alone,
independently of the rules; see :class:`RevenueDropDefinition`). For each rep and UTC day D:

* window: the ``window_days`` (42) days ending D; the revenue and the number of deals won in it
  (a deal counts on the day of its final win, with its won amount, for the rep it ends with);
* baseline: the up to ``baseline_days`` (84) days before the window, from the first day of data
  (or the rep's first event, or hire day) on and at least ``min_baseline_days`` (42) long, scaled
  to one window; it must hold ``min_baseline_wins`` (3) won deals: a usual needs a few deals,
  not one lucky one;
* D is *low* when the window's revenue is below ``fall_below`` (50%) of the baseline's and so are
  its won deals (one large deal or a run of small ones alone is not a fall);
* revenue **fell on** the first low D that stays low against the baseline frozen at D for
  ``persist_days`` (28) days in a row.

Wins are lumpy (a rep may close one or two deals a month), so the windows are long: with four-week
windows a healthy quiet month before a real fall dates the fall too early, and more healthy reps
fall (measured in the README's "Early warnings: backtest").

**Scores.** The early warnings are the rep-scope alerts of ``early_warnings``: by default
:data:`EARLY_WARNING_RULES`, the rules that read leading indicators only (``activity_drop``,
``conversion_drop``, ``no_activity``). ``pacing_forecast`` and ``pipeline_coverage_low`` also read
won revenue and quota, the very outcome being predicted; they may be chosen (:data:`WARNING_RULES`)
and are scored on their own either way. ``stalled_deals`` is about single deals, and team and
territory alerts name no rep. A rep's revenue drop was **warned** when an early warning fired
before the fall day and was firing on one of the ``lookahead_days`` (60) days before it (it fired
in them, or still fired when they began: a warning that holds for months is still a warning); the
**lead time** is the fall day minus the day the first such warning fired. Then

* precision = alerted reps whose revenue fell while a warning held (as above) / alerted reps,
  counting only warnings fired while a later fall could still be seen in the data (on days up to
  the last day minus ``persist_days``); later ones are reported, not scored;
* recall = reps whose revenue fell and was warned / reps whose revenue fell;
* the median lead time over the warned falls.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from schemas.alert_rules import SCORE, AlertRulesConfig
from schemas.events import EventKind
from schemas.reps import Rep
from schemas.wire import Event
from streams.alerts.model import AlertCandidate, Scope
from streams.alerts.rules import (
    ACTIVITY_DROP,
    CONVERSION_DROP,
    HISTORY_SLACK_DAYS,
    NO_ACTIVITY,
    PACING_FORECAST,
    PIPELINE_COVERAGE_LOW,
    RepView,
    activity_windows,
    evaluate,
    history_reaches,
)
from streams.kpi.activity import event_counters, utc_day
from streams.kpi.deals import DEAL_EVENT_TYPES, DealBook, DealEvent, DealStatus, stage_ranks

__all__ = [
    "EARLY_WARNING_RULES",
    "WARNING_RULES",
    "AlertOccurrence",
    "BacktestResult",
    "Cadence",
    "RepOutcome",
    "RepSeries",
    "RevenueDrop",
    "RevenueDropDefinition",
    "Scores",
    "find_revenue_drop",
    "rep_series",
    "replay_views",
    "run_backtest",
    "score",
]

# The rules that read leading indicators alone (activity and funnel conversion): the default early
# warnings. The forecast rules also read won revenue and quota; they are scored on their own.
EARLY_WARNING_RULES: tuple[str, ...] = (ACTIVITY_DROP, CONVERSION_DROP, NO_ACTIVITY)
# Every rep rule that may count as an early warning (``stalled_deals`` is about single deals).
WARNING_RULES: tuple[str, ...] = (
    ACTIVITY_DROP,
    CONVERSION_DROP,
    NO_ACTIVITY,
    PACING_FORECAST,
    PIPELINE_COVERAGE_LOW,
)


# --- Settings ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cadence:
    """When the rules are evaluated: every ``every``, on a grid through ``at`` (UTC) of each day."""

    every: timedelta = timedelta(hours=24)
    at: time = time(18, 0)

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise ValueError(f"the cadence must be positive, got {self.every}")
        if self.at.tzinfo is not None:
            raise ValueError("Cadence.at is a UTC time of day: give it without an offset")

    def steps(self, first: datetime, last: datetime) -> Iterator[datetime]:
        """The grid's instants from the first at or after ``first`` to the last at or before ``last``."""
        origin = datetime.combine(first.astimezone(UTC).date(), self.at, tzinfo=UTC)
        step = origin + math.ceil((first - origin) / self.every) * self.every
        while step <= last:
            yield step
            step += self.every


@dataclass(frozen=True, slots=True)
class RevenueDropDefinition:
    """When a rep's revenue counts as fallen, and how far ahead a warning may look (module doc)."""

    window_days: int = 42
    baseline_days: int = 84
    min_baseline_days: int = 42
    fall_below: float = 0.5
    persist_days: int = 28
    min_baseline_wins: int = 3
    # Baseline revenue per window below this is too little to fall from (0: any amount).
    min_baseline_revenue: float = 0.0
    # Whether won deals must fall too, not only revenue.
    wins_fall_too: bool = True
    lookahead_days: int = 60

    def __post_init__(self) -> None:
        for name in ("window_days", "baseline_days", "min_baseline_days", "persist_days", "lookahead_days"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"RevenueDropDefinition.{name} must be at least 1, got {getattr(self, name)}"
                )
        if self.min_baseline_days > self.baseline_days:
            raise ValueError("min_baseline_days must not exceed baseline_days")
        if not 0 < self.fall_below < 1:
            raise ValueError(f"fall_below is a fraction in (0, 1), got {self.fall_below}")
        if self.min_baseline_wins < 1 or self.min_baseline_revenue < 0:
            raise ValueError("min_baseline_wins must be at least 1 and min_baseline_revenue not negative")


# --- Results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertOccurrence:
    """One alert from its first evaluation to the first evaluation without it.

    ``value``, ``baseline`` and ``summary`` are the ones it fired with (what a message would say);
    ``resolved_at`` is None when it still fired at the last step.
    """

    rule: str
    scope: Scope
    key: str
    detail: str
    rep_id: str | None
    team: str | None
    severity: str
    fired_at: datetime
    resolved_at: datetime | None
    value: float
    baseline: float | None
    summary: str

    @classmethod
    def start(cls, candidate: AlertCandidate, team: str | None) -> AlertOccurrence:
        rep_id = candidate.key if candidate.scope is Scope.REP else None
        if candidate.scope is Scope.TEAM:
            team = candidate.key
        return cls(
            rule=candidate.rule,
            scope=candidate.scope,
            key=candidate.key,
            detail=candidate.detail,
            rep_id=rep_id,
            team=team,
            severity=str(candidate.severity),
            fired_at=candidate.observed_at,
            resolved_at=None,
            value=candidate.value,
            baseline=candidate.baseline,
            summary=candidate.summary,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as RFC 3339 UTC strings."""
        return {
            "rule": self.rule,
            "scope": str(self.scope),
            "key": self.key,
            "detail": self.detail,
            "rep_id": self.rep_id,
            "team": self.team,
            "severity": self.severity,
            "fired_at": _iso(self.fired_at),
            "resolved_at": _iso(self.resolved_at) if self.resolved_at is not None else None,
            "value": self.value,
            "baseline": self.baseline,
            "summary": self.summary,
        }


@dataclass(frozen=True, slots=True)
class RevenueDrop:
    """The day a rep's revenue fell, and the figures that said so (per window of the definition)."""

    fell_on: date
    window_revenue: float
    window_wins: int
    baseline_revenue: float
    baseline_wins: float


@dataclass(frozen=True, slots=True)
class RepOutcome:
    """One rep: the early warnings, whether and when revenue fell, and the lead time."""

    rep_id: str
    team: str | None
    alerts: int
    early_warnings: int
    first_warning_at: datetime | None
    revenue_drop: RevenueDrop | None
    # The first early warning still firing in the lookahead before the fall, and its lead in days.
    warned_at: datetime | None
    warning_rule: str | None
    lead_days: int | None

    def to_dict(self) -> dict[str, Any]:
        drop = self.revenue_drop
        return {
            "rep_id": self.rep_id,
            "team": self.team,
            "alerts": self.alerts,
            "early_warnings": self.early_warnings,
            "first_warning_at": _iso(self.first_warning_at) if self.first_warning_at else None,
            "revenue_fell": drop is not None,
            "revenue_fell_on": drop.fell_on.isoformat() if drop else None,
            "window_revenue": drop.window_revenue if drop else None,
            "window_wins": drop.window_wins if drop else None,
            "baseline_revenue": drop.baseline_revenue if drop else None,
            "baseline_wins": drop.baseline_wins if drop else None,
            "warned_at": _iso(self.warned_at) if self.warned_at else None,
            "warning_rule": self.warning_rule,
            "lead_days": self.lead_days,
        }


@dataclass(frozen=True, slots=True)
class Scores:
    """Precision, recall and median lead time of a set of early-warning rules (module doc)."""

    rules: tuple[str, ...]
    alerted_reps: int
    alerted_reps_fell: int
    reps_fell: int
    reps_fell_warned: int
    unjudged_reps: int
    lead_days: tuple[int, ...]

    @property
    def precision(self) -> float | None:
        return self.alerted_reps_fell / self.alerted_reps if self.alerted_reps else None

    @property
    def recall(self) -> float | None:
        return self.reps_fell_warned / self.reps_fell if self.reps_fell else None

    @property
    def median_lead_days(self) -> float | None:
        return float(statistics.median(self.lead_days)) if self.lead_days else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": list(self.rules),
            "precision": _rounded(self.precision),
            "recall": _rounded(self.recall),
            "median_lead_days": self.median_lead_days,
            "alerted_reps": self.alerted_reps,
            "alerted_reps_revenue_fell": self.alerted_reps_fell,
            "reps_revenue_fell": self.reps_fell,
            "reps_revenue_fell_warned": self.reps_fell_warned,
            "reps_alerted_too_late_to_judge": self.unjudged_reps,
            "lead_days": list(self.lead_days),
        }


@dataclass(frozen=True)
class BacktestResult:
    """Every alert occurrence, every rep's outcome, the scores, and the data behind the plots."""

    config: AlertRulesConfig
    definition: RevenueDropDefinition
    cadence: Cadence
    first_event_at: datetime | None
    last_event_at: datetime | None
    events: int
    steps: int
    alerts: list[AlertOccurrence]
    reps: list[RepOutcome]
    scores: Scores
    # Scores of each early-warning rule on its own.
    rule_scores: dict[str, Scores]
    # Per rep: the daily counters and the daily won revenue and deals, over the whole history.
    daily: dict[str, dict[date, dict[str, int]]] = field(repr=False)
    won: dict[str, dict[date, tuple[float, int]]] = field(repr=False)
    rep_records: dict[str, Rep] = field(repr=False)

    def summary_dict(self) -> dict[str, Any]:
        return {
            **self.scores.to_dict(),
            "events": self.events,
            "steps": self.steps,
            "every_hours": self.cadence.every / timedelta(hours=1),
            "first_event_at": _iso(self.first_event_at) if self.first_event_at else None,
            "last_event_at": _iso(self.last_event_at) if self.last_event_at else None,
            "revenue_drop": {
                "window_days": self.definition.window_days,
                "baseline_days": self.definition.baseline_days,
                "min_baseline_days": self.definition.min_baseline_days,
                "fall_below": self.definition.fall_below,
                "persist_days": self.definition.persist_days,
                "min_baseline_wins": self.definition.min_baseline_wins,
                "min_baseline_revenue": self.definition.min_baseline_revenue,
                "wins_fall_too": self.definition.wins_fall_too,
                "lookahead_days": self.definition.lookahead_days,
            },
            "by_rule": {rule: scores.to_dict() for rule, scores in self.rule_scores.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "alerts": [alert.to_dict() for alert in self.alerts],
            "reps": [rep.to_dict() for rep in self.reps],
            "summary": self.summary_dict(),
        }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rounded(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


# --- Replay ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Happening:
    """What the replay needs of one event: its time, counters, and the deal event itself."""

    occurred_at: datetime
    event_id: str
    rep_id: str
    counters: tuple[str, ...]
    is_activity: bool
    deal_event: DealEvent | None


def _happenings(events: Iterable[Event]) -> list[_Happening]:
    """Events in event-time order, each event id once (a re-sent event counts once, as live)."""
    seen: set[str] = set()
    happenings: list[_Happening] = []
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        happenings.append(
            _Happening(
                event.occurred_at.astimezone(UTC),
                event.event_id,
                event.rep_id,
                event_counters(event),
                event.kind is EventKind.ACTIVITY,
                event if isinstance(event, DEAL_EVENT_TYPES) else None,
            )
        )
    happenings.sort(key=lambda happening: (happening.occurred_at, happening.event_id))
    return happenings


@dataclass(slots=True)
class _ReplayState:
    """Every rep's state after the events applied so far (all of them at or before the last step)."""

    stage_rank: dict[str, int]
    daily: dict[str, dict[date, dict[str, int]]] = field(default_factory=dict)
    last_activity: dict[str, datetime] = field(default_factory=dict)
    books: dict[str, DealBook] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)
    # Every deal's events, also those the rep books have forgotten: a reassigned deal moves whole.
    deal_events: dict[str, list[DealEvent]] = field(default_factory=dict)

    def apply(self, happening: _Happening) -> None:
        rep_id = happening.rep_id
        counts = self.daily.setdefault(rep_id, {}).setdefault(utc_day(happening.occurred_at), {})
        for counter in happening.counters:
            counts[counter] = counts.get(counter, 0) + 1
        if happening.is_activity:
            self.last_activity[rep_id] = happening.occurred_at
        event = happening.deal_event
        if event is None:
            return
        history = self.deal_events.setdefault(event.deal_id, [])
        history.append(event)
        previous = self.owner.get(event.deal_id)
        if previous is not None and previous != rep_id:
            # A deal belongs to the rep its latest event names: it moves with all its events.
            self._book(previous).deals.pop(event.deal_id, None)
        book = self._book(rep_id)
        # A deal the book does not hold (moved here, or closed long ago and forgotten) comes back
        # whole, as the worker reloads it from the stored events.
        book.apply(history if event.deal_id not in book.deals else [event])
        self.owner[event.deal_id] = rep_id

    def _book(self, rep_id: str) -> DealBook:
        book = self.books.get(rep_id)
        if book is None:
            book = self.books[rep_id] = DealBook(self.stage_rank)
        return book

    def views(
        self, rep_ids: Iterable[str], reps: Mapping[str, Rep], now: datetime, deal_days: int
    ) -> list[RepView]:
        """What the rules see at ``now``: the live worker's view of each rep."""
        empty: dict[date, dict[str, int]] = {}
        views: list[RepView] = []
        for rep_id in rep_ids:
            book = self.books.get(rep_id)
            if book is not None:
                # As live: open deals and the deals closed within the rules' deal history.
                book.forget_closed_before(now - timedelta(days=deal_days))
            views.append(
                RepView(
                    rep_id=rep_id,
                    rep=reps.get(rep_id),
                    daily=self.daily.get(rep_id, empty),
                    last_activity_at=self.last_activity.get(rep_id),
                    deals=list(book.deals.values()) if book is not None else [],
                )
            )
        return views


def replay_views(
    events: Iterable[Event],
    reps: Iterable[Rep] = (),
    config: AlertRulesConfig | None = None,
    *,
    cadence: Cadence = Cadence(),
    deal_stages: Sequence[str] = (),
) -> Iterator[tuple[datetime, list[RepView]]]:
    """Each step's time and the views of every rep at it, in time order.

    A view holds the events with ``occurred_at <= now`` and nothing later. The views share state
    with the replay: use each before asking for the next.
    """
    config = config if config is not None else AlertRulesConfig()
    return _replay(_happenings(events), {rep.rep_id: rep for rep in reps}, config, cadence, deal_stages)


def _replay(
    happenings: Sequence[_Happening],
    records: Mapping[str, Rep],
    config: AlertRulesConfig,
    cadence: Cadence,
    deal_stages: Sequence[str],
    warmup: timedelta = timedelta(0),
) -> Iterator[tuple[datetime, list[RepView]]]:
    if not happenings:
        return
    rep_ids = sorted(records.keys() | {happening.rep_id for happening in happenings})
    state = _ReplayState(stage_ranks(deal_stages))
    position = 0
    for now in cadence.steps(happenings[0].occurred_at + warmup, happenings[-1].occurred_at):
        while position < len(happenings) and happenings[position].occurred_at <= now:
            state.apply(happenings[position])
            position += 1
        yield now, state.views(rep_ids, records, now, config.deal_history_days)


def run_backtest(
    events: Iterable[Event],
    reps: Iterable[Rep] = (),
    config: AlertRulesConfig | None = None,
    *,
    cadence: Cadence = Cadence(),
    definition: RevenueDropDefinition = RevenueDropDefinition(),
    deal_stages: Sequence[str] = (),
    early_warnings: Sequence[str] = EARLY_WARNING_RULES,
    warmup: timedelta | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> BacktestResult:
    """Replay ``events`` (any order) through the rules and score the warnings against revenue.

    ``early_warnings`` are the rules whose rep alerts are scored as warnings. The rules are first
    evaluated ``warmup`` after the first event (default: the ``activity_drop`` window): a live
    worker starts from stored history, while a replay starts from nothing, and a 7-day window
    reaching back before the data would read as a collapse. ``on_step(done, total)`` is called
    after every evaluation (for a progress bar).
    """
    config = config if config is not None else AlertRulesConfig()
    unknown = sorted(set(early_warnings) - set(WARNING_RULES))
    if unknown:
        raise ValueError(f"unknown early-warning rules {unknown}: use some of {', '.join(WARNING_RULES)}")
    early_warnings = tuple(early_warnings)
    warmup = warmup if warmup is not None else timedelta(days=config.activity_drop.window_days)
    records = {rep.rep_id: rep for rep in reps}
    happenings = _happenings(events)
    if not happenings:
        return _empty_result(config, definition, cadence, records, early_warnings)
    first, last = happenings[0].occurred_at, happenings[-1].occurred_at
    total = sum(1 for _ in cadence.steps(first + warmup, last))
    open_alerts: dict[str, AlertOccurrence] = {}
    closed: list[AlertOccurrence] = []
    steps = 0
    for now, views in _replay(happenings, records, config, cadence, deal_stages, warmup):
        candidates = evaluate(views, now, config, open_alerts.keys())
        holding = {candidate.fingerprint: candidate for candidate in candidates}
        for fingerprint in [f for f in open_alerts if f not in holding]:
            closed.append(replace(open_alerts.pop(fingerprint), resolved_at=now))
        for fingerprint, candidate in holding.items():
            if fingerprint not in open_alerts:
                rep = records.get(candidate.key) if candidate.scope is Scope.REP else None
                open_alerts[fingerprint] = AlertOccurrence.start(candidate, rep.team if rep else None)
        steps += 1
        if on_step is not None:
            on_step(steps, total)
    alerts = sorted(
        [*closed, *open_alerts.values()], key=lambda a: (a.fired_at, a.rule, a.scope.value, a.key, a.detail)
    )
    daily, won = _history(happenings, deal_stages)
    first_day, last_day = utc_day(first), utc_day(last)
    drops = {
        rep_id: find_revenue_drop(
            won.get(rep_id, {}),
            _baseline_start(first_day, daily.get(rep_id), records.get(rep_id)),
            last_day,
            definition,
        )
        for rep_id in sorted(records.keys() | daily.keys())
    }
    return BacktestResult(
        config=config,
        definition=definition,
        cadence=cadence,
        first_event_at=first,
        last_event_at=last,
        events=len(happenings),
        steps=steps,
        alerts=alerts,
        reps=[
            _outcome(rep_id, records.get(rep_id), alerts, drop, definition, early_warnings)
            for rep_id, drop in drops.items()
        ],
        scores=score(alerts, drops, last_day, definition, early_warnings),
        rule_scores={rule: score(alerts, drops, last_day, definition, (rule,)) for rule in WARNING_RULES},
        daily=daily,
        won=won,
        rep_records=records,
    )


def _empty_result(
    config: AlertRulesConfig,
    definition: RevenueDropDefinition,
    cadence: Cadence,
    records: dict[str, Rep],
    early_warnings: tuple[str, ...],
) -> BacktestResult:
    drops: dict[str, RevenueDrop | None] = dict.fromkeys(sorted(records))
    return BacktestResult(
        config=config,
        definition=definition,
        cadence=cadence,
        first_event_at=None,
        last_event_at=None,
        events=0,
        steps=0,
        alerts=[],
        reps=[
            _outcome(rep_id, records.get(rep_id), [], None, definition, early_warnings) for rep_id in drops
        ],
        scores=score([], drops, None, definition, early_warnings),
        rule_scores={rule: score([], drops, None, definition, (rule,)) for rule in WARNING_RULES},
        daily={},
        won={},
        rep_records=records,
    )


def _history(
    happenings: Sequence[_Happening], deal_stages: Sequence[str]
) -> tuple[dict[str, dict[date, dict[str, int]]], dict[str, dict[date, tuple[float, int]]]]:
    """The whole history per rep: daily counters, and won revenue and deals per day of the win."""
    daily: dict[str, dict[date, dict[str, int]]] = {}
    book = DealBook(stage_ranks(deal_stages))
    for happening in happenings:
        counts = daily.setdefault(happening.rep_id, {}).setdefault(utc_day(happening.occurred_at), {})
        for counter in happening.counters:
            counts[counter] = counts.get(counter, 0) + 1
    book.apply(happening.deal_event for happening in happenings if happening.deal_event is not None)
    won: dict[str, dict[date, tuple[float, int]]] = {}
    for deal in book.deals.values():
        if deal.status is DealStatus.WON and deal.closed_at is not None:
            per_day = won.setdefault(deal.rep_id, {})
            day = utc_day(deal.closed_at)
            revenue, wins = per_day.get(day, (0.0, 0))
            per_day[day] = (revenue + float(deal.amount or Decimal(0)), wins + 1)
    return daily, won


def _baseline_start(first_day: date, daily: Mapping[date, object] | None, rep: Rep | None) -> date:
    """The first day a rep's revenue baseline may use: the org's data has begun, the rep's own
    has, and the rep was hired (days before any of those would read as a rep winning nothing)."""
    if daily:
        first_day = max(first_day, min(daily))
    if rep is not None and rep.hired_at is not None:
        first_day = max(first_day, rep.hired_at)
    return first_day


# --- Revenue drop ------------------------------------------------------------------------------------


def find_revenue_drop(
    won: Mapping[date, tuple[float, int]],
    first_day: date,
    last_day: date,
    definition: RevenueDropDefinition = RevenueDropDefinition(),
) -> RevenueDrop | None:
    """The first day revenue fell by ``definition`` (module doc), or None.

    ``won`` maps a day to the revenue and number of deals won on it; ``first_day`` is the first day
    a baseline may use, ``last_day`` the last day with data.
    """
    if last_day < first_day:
        return None
    span = (last_day - first_day).days + 1
    revenue = [0.0] * span
    wins = [0] * span
    for day, (amount, count) in won.items():
        if first_day <= day <= last_day:
            revenue[(day - first_day).days] += amount
            wins[(day - first_day).days] += count
    # Prefix sums: the total of days [i, j) is cum[j] - cum[i].
    revenue_sum = [0.0]
    wins_sum = [0]
    for amount, count in zip(revenue, wins, strict=True):
        revenue_sum.append(revenue_sum[-1] + amount)
        wins_sum.append(wins_sum[-1] + count)
    w = definition.window_days

    def window(end: int) -> tuple[float, int]:
        return revenue_sum[end + 1] - revenue_sum[end + 1 - w], wins_sum[end + 1] - wins_sum[end + 1 - w]

    def is_low(end: int, base_revenue: float, base_wins: float) -> bool:
        amount, count = window(end)
        low = amount < definition.fall_below * base_revenue
        return low and (not definition.wins_fall_too or count < definition.fall_below * base_wins)

    for end in range(w - 1 + definition.min_baseline_days, span - definition.persist_days + 1):
        baseline_last = end - w  # index of the last baseline day
        baseline_first = max(0, baseline_last - definition.baseline_days + 1)
        length = baseline_last - baseline_first + 1
        base_count = wins_sum[baseline_last + 1] - wins_sum[baseline_first]
        if base_count < definition.min_baseline_wins:
            continue
        scale = w / length
        base_revenue = (revenue_sum[baseline_last + 1] - revenue_sum[baseline_first]) * scale
        base_wins = base_count * scale
        if base_revenue <= 0 or base_revenue < definition.min_baseline_revenue:
            continue
        if all(is_low(day, base_revenue, base_wins) for day in range(end, end + definition.persist_days)):
            amount, count = window(end)
            return RevenueDrop(
                fell_on=first_day + timedelta(days=end),
                window_revenue=amount,
                window_wins=count,
                baseline_revenue=base_revenue,
                baseline_wins=base_wins,
            )
    return None


# --- Scores ------------------------------------------------------------------------------------------


def _warnings(alerts: Iterable[AlertOccurrence], rep_id: str, rules: Sequence[str]) -> list[AlertOccurrence]:
    return [a for a in alerts if a.scope is Scope.REP and a.key == rep_id and a.rule in rules]


def _warned(
    warnings: Sequence[AlertOccurrence], drop: RevenueDrop, definition: RevenueDropDefinition
) -> AlertOccurrence | None:
    """The first warning that fired before the fall day and still fired in the lookahead before it."""
    opens = drop.fell_on - timedelta(days=definition.lookahead_days)
    before = [
        a
        for a in warnings
        if utc_day(a.fired_at) < drop.fell_on and (a.resolved_at is None or utc_day(a.resolved_at) > opens)
    ]
    return min(before, key=lambda a: a.fired_at) if before else None


def _outcome(
    rep_id: str,
    rep: Rep | None,
    alerts: Sequence[AlertOccurrence],
    drop: RevenueDrop | None,
    definition: RevenueDropDefinition,
    rules: Sequence[str] = EARLY_WARNING_RULES,
) -> RepOutcome:
    warnings = _warnings(alerts, rep_id, rules)
    warned = _warned(warnings, drop, definition) if drop is not None else None
    return RepOutcome(
        rep_id=rep_id,
        team=rep.team if rep is not None else None,
        alerts=sum(1 for a in alerts if a.scope is Scope.REP and a.key == rep_id),
        early_warnings=len(warnings),
        first_warning_at=min((a.fired_at for a in warnings), default=None),
        revenue_drop=drop,
        warned_at=warned.fired_at if warned else None,
        warning_rule=warned.rule if warned else None,
        lead_days=(drop.fell_on - utc_day(warned.fired_at)).days if warned and drop else None,
    )


def score(
    alerts: Sequence[AlertOccurrence],
    drops: Mapping[str, RevenueDrop | None],
    last_day: date | None,
    definition: RevenueDropDefinition = RevenueDropDefinition(),
    rules: Sequence[str] = EARLY_WARNING_RULES,
) -> Scores:
    """Precision, recall and lead times of ``rules``' rep alerts against the revenue drops.

    ``drops`` has every rep (None: revenue did not fall); ``last_day`` is the last day of data: a
    warning fired after ``last_day - persist_days`` could not be followed by a fall the data shows.
    """
    judged_until = last_day - timedelta(days=definition.persist_days) if last_day is not None else None
    alerted = alerted_fell = fell = fell_warned = unjudged = 0
    leads: list[int] = []
    for rep_id, drop in drops.items():
        warnings = _warnings(alerts, rep_id, rules)
        judged = [a for a in warnings if judged_until is not None and utc_day(a.fired_at) <= judged_until]
        if warnings and not judged:
            unjudged += 1
        warned = _warned(warnings, drop, definition) if drop is not None else None
        if judged:
            alerted += 1
            alerted_fell += warned is not None
        if drop is not None:
            fell += 1
            if warned is not None:
                fell_warned += 1
                leads.append((drop.fell_on - utc_day(warned.fired_at)).days)
    return Scores(tuple(rules), alerted, alerted_fell, fell, fell_warned, unjudged, tuple(sorted(leads)))


# --- Series for plots --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RepSeries:
    """One rep's day-by-day figures for a plot. ``None`` where a figure is not defined.

    ``activity`` and ``activity_baseline`` are the ``activity_drop`` rule's weighted activity score
    over its window ending each day and its own baseline scaled to the window (as the rule
    computes them, idle days left out); ``revenue`` the won revenue over the revenue-drop window
    ending each day (once the window is inside the data); ``revenue_baseline`` the baseline the
    fall was measured against.
    """

    days: tuple[date, ...]
    activity: tuple[float | None, ...]
    activity_baseline: tuple[float | None, ...]
    revenue: tuple[float | None, ...]
    revenue_baseline: float | None


def rep_series(result: BacktestResult, rep_id: str) -> RepSeries:
    """The figures behind a rep's plot, over the whole history."""
    if result.first_event_at is None or result.last_event_at is None:
        return RepSeries((), (), (), (), None)
    first, last = utc_day(result.first_event_at), utc_day(result.last_event_at)
    days = tuple(first + timedelta(days=n) for n in range((last - first).days + 1))
    rule = result.config.activity_drop
    daily = result.daily.get(rep_id, {})
    activity: list[float | None] = []
    baseline: list[float | None] = []
    for day in days:
        baseline_first = day - timedelta(days=rule.window_days + rule.baseline_days - 1)
        # As the rule: no figure until the data reaches into the baseline's first days.
        judged = rule.score_enabled and history_reaches(daily, baseline_first, HISTORY_SLACK_DAYS)
        figure = activity_windows(daily, day, rule).get(SCORE) if judged else None
        activity.append(figure.value if figure else None)
        baseline.append(figure.baseline if figure else None)
    won = result.won.get(rep_id, {})
    window = result.definition.window_days
    # None until the window is full: a window reaching back before the data is not a low.
    revenue = tuple(
        math.fsum(won.get(day - timedelta(days=n), (0.0, 0))[0] for n in range(window))
        if (day - first).days >= window - 1
        else None
        for day in days
    )
    outcome = next((r for r in result.reps if r.rep_id == rep_id), None)
    drop = outcome.revenue_drop if outcome else None
    return RepSeries(days, tuple(activity), tuple(baseline), revenue, drop.baseline_revenue if drop else None)
