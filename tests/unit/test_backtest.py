"""The backtest core: the replay shows the rules nothing from the future, revenue drops on
constructed series, lead times and precision/recall on hand-made cases, and the alert occurrences
of a constructed activity drop (with hysteresis)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

from schemas.alert_rules import AlertRulesConfig
from schemas.events import CallEvent, DealCreatedEvent, DealWonEvent, EventKind
from schemas.reps import Rep
from schemas.wire import Event
from streams.alerts.model import AlertCandidate, Scope
from streams.alerts.rules import RepView, evaluate
from streams.backtest import (
    AlertOccurrence,
    BacktestResult,
    Cadence,
    RevenueDrop,
    RevenueDropDefinition,
    find_revenue_drop,
    rep_series,
    replay_views,
    run_backtest,
    score,
)
from streams.backtest_report import alerted_reps, render_report
from streams.kpi.activity import event_counters, utc_day
from streams.kpi.deals import DEAL_EVENT_TYPES, DealBook, stage_ranks
from streams.synthetic import DEAL_STAGES, OrgSpec, generate_org, iter_events

SMALL = OrgSpec(reps=6, teams=2, territories=2, days=45, seed=5, fading_reps=2, fade_at=0.5)
ALERT_KEYS = {"rule", "scope", "key", "detail", "rep_id", "team", "severity", "fired_at", "resolved_at"}
ALERT_KEYS |= {"value", "baseline", "summary"}


@pytest.fixture(scope="module")
def small_org() -> tuple[list[Rep], list[Event]]:
    org = generate_org(SMALL)
    return org.reps, list(iter_events(org))


def only(*enabled: str) -> AlertRulesConfig:
    rules = (
        "activity_drop", "conversion_drop", "no_activity", "pipeline_coverage_low", "pacing_forecast",
        "stalled_deals", "team_activity_drop", "territory_activity_drop", "team_pipeline_coverage_low",
        "territory_pipeline_coverage_low",
    )  # fmt: skip
    return AlertRulesConfig.model_validate({name: {"enabled": name in enabled} for name in rules})


# --- cadence -----------------------------------------------------------------------------------------


def test_daily_steps_are_at_18_utc_from_the_first_event_on() -> None:
    first = datetime(2026, 3, 2, 19, 30, tzinfo=UTC)
    last = datetime(2026, 3, 5, 18, 0, tzinfo=UTC)
    steps = list(Cadence().steps(first, last))
    assert steps == [datetime(2026, 3, d, 18, tzinfo=UTC) for d in (3, 4, 5)]


def test_hourly_steps_are_on_the_hour() -> None:
    first = datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
    steps = list(Cadence(every=timedelta(hours=1)).steps(first, first + timedelta(hours=3)))
    assert steps == [datetime(2026, 3, 2, h, tzinfo=UTC) for h in (9, 10, 11)]


def test_a_cadence_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Cadence(every=timedelta(0))


# --- no peeking at the future ------------------------------------------------------------------------


def brute_force_daily(events: Iterable[Event], rep_id: str, now: datetime) -> dict[date, dict[str, int]]:
    daily: dict[date, dict[str, int]] = {}
    for event in events:
        if event.rep_id == rep_id and event.occurred_at <= now:
            counts = daily.setdefault(utc_day(event.occurred_at), {})
            for counter in event_counters(event):
                counts[counter] = counts.get(counter, 0) + 1
    return daily


def test_views_hold_exactly_the_events_up_to_now(small_org: tuple[list[Rep], list[Event]]) -> None:
    reps, events = small_org
    shuffled = list(events)
    random.Random(1).shuffle(shuffled)  # any order in: the replay sorts by event time
    config = AlertRulesConfig()
    steps = 0
    for now, views in replay_views(shuffled, reps, config, deal_stages=DEAL_STAGES):
        steps += 1
        assert {view.rep_id for view in views} == {rep.rep_id for rep in reps}
        for view in views:
            assert dict(view.daily) == brute_force_daily(events, view.rep_id, now), (now, view.rep_id)
            activity = [
                e.occurred_at
                for e in events
                if e.rep_id == view.rep_id and e.kind is EventKind.ACTIVITY and e.occurred_at <= now
            ]
            assert view.last_activity_at == max(activity, default=None)
            for deal in view.deals:
                assert all(event.occurred_at <= now for event in deal.events.values())
            # Every deal open at now is there, with exactly its events up to now.
            book = DealBook(stage_ranks(DEAL_STAGES))
            book.apply(
                e
                for e in events
                if isinstance(e, DEAL_EVENT_TYPES) and e.rep_id == view.rep_id and e.occurred_at <= now
            )
            expected_open = {d.deal_id for d in book.deals.values() if d.open_at(now)}
            assert {d.deal_id for d in view.deals if d.open_at(now)} == expected_open
    assert steps == SMALL.days - 1  # 18:00 of every day but the last, whose events end at 18:00


def test_the_past_does_not_change_when_the_future_is_cut_off(
    small_org: tuple[list[Rep], list[Event]],
) -> None:
    reps, events = small_org
    cut = SMALL.start + timedelta(days=30, hours=12)
    whole = run_backtest(events, reps, deal_stages=DEAL_STAGES)
    past = run_backtest([e for e in events if e.occurred_at <= cut], reps, deal_stages=DEAL_STAGES)
    last_step = datetime.combine(cut.date() - timedelta(days=1), time(18), tzinfo=UTC)
    assert past.steps and past.alerts

    def seen_by(alert: AlertOccurrence, until: datetime) -> AlertOccurrence:
        """The alert as of ``until``: one resolved later was still firing then."""
        if alert.resolved_at is not None and alert.resolved_at > until:
            return replace(alert, resolved_at=None)
        return alert

    assert [seen_by(a, last_step) for a in whole.alerts if a.fired_at <= last_step] == past.alerts


def test_evaluate_gets_the_fingerprints_firing_after_the_previous_step(
    small_org: tuple[list[Rep], list[Event]], monkeypatch: pytest.MonkeyPatch
) -> None:
    reps, events = small_org
    calls: list[tuple[set[str], list[AlertCandidate]]] = []

    def spy(
        views: Sequence[RepView], now: datetime, config: AlertRulesConfig, firing: Any
    ) -> list[AlertCandidate]:
        candidates = evaluate(views, now, config, firing)
        calls.append((set(firing), candidates))
        return candidates

    monkeypatch.setattr("streams.backtest.evaluate", spy)
    run_backtest(events, reps, deal_stages=DEAL_STAGES)
    assert calls[0][0] == set()
    for (_, before), (firing, _) in itertools.pairwise(calls):
        assert firing == {candidate.fingerprint for candidate in before}
    assert any(firing for firing, _ in calls)


# --- alert occurrences on a constructed drop ---------------------------------------------------------

START = date(2026, 1, 5)  # a Monday
_ids = itertools.count()


def calls_on(day: date, count: int, rep_id: str = "r1") -> list[Event]:
    return [
        CallEvent(
            type="call",
            event_id=f"c{next(_ids)}",
            rep_id=rep_id,
            occurred_at=datetime.combine(day, time(9), tzinfo=UTC) + timedelta(minutes=5 * n),
        )
        for n in range(count)
    ]


def weekday_calls(first: date, weeks: int, per_day: int) -> list[Event]:
    events: list[Event] = []
    for n in range(weeks * 7):
        day = first + timedelta(days=n)
        if day.weekday() < 5:
            events.extend(calls_on(day, per_day))
    return events


def test_an_activity_drop_fires_holds_between_thresholds_and_resolves() -> None:
    # Five weeks at 20 calls a weekday, one week at 10 (half: fires below 0.6), one at 13 (0.74 of
    # the baseline: between fire_below 0.6 and resolve_above 0.8, so the firing alert holds), then 20.
    events = weekday_calls(START, 5, 20)
    events += weekday_calls(START + timedelta(weeks=5), 1, 10)
    events += weekday_calls(START + timedelta(weeks=6), 1, 13)
    events += weekday_calls(START + timedelta(weeks=7), 2, 20)
    result = run_backtest(events, [], only("activity_drop"))
    calls = [a for a in result.alerts if a.detail == "call"]
    assert len(calls) == 1, calls
    [alert] = calls
    drop_week = START + timedelta(weeks=5)
    # Fired in the low week, not before it; still firing through the 13-a-day week.
    assert drop_week < utc_day(alert.fired_at) <= drop_week + timedelta(days=5)
    assert alert.resolved_at is not None
    assert utc_day(alert.resolved_at) > START + timedelta(weeks=7)
    assert alert.rep_id == "r1" and alert.team is None and alert.scope is Scope.REP
    assert alert.baseline is not None and alert.value < 0.6 * alert.baseline
    assert set(alert.to_dict()) == ALERT_KEYS


def test_a_resent_event_counts_once() -> None:
    events = weekday_calls(START, 6, 20)
    twice = run_backtest([*events, *events[:500]], [], only("activity_drop"))
    once = run_backtest(events, [], only("activity_drop"))
    assert twice.events == once.events == len(events)
    assert twice.daily == once.daily


def test_a_reassigned_deal_moves_to_its_new_rep() -> None:
    opened = datetime(2026, 3, 2, 10, tzinfo=UTC)
    created = DealCreatedEvent(
        type="deal_created",
        event_id="d1",
        rep_id="r1",
        occurred_at=opened,
        deal_id="deal-1",
        amount=Decimal(500),
    )
    won = DealWonEvent(
        type="deal_won", event_id="d2", rep_id="r2", occurred_at=opened + timedelta(days=3), deal_id="deal-1",
        amount=Decimal(450),
    )  # fmt: skip
    views = {
        now.date(): {view.rep_id: [d.deal_id for d in view.deals] for view in views}
        for now, views in replay_views([created, won, *calls_on(date(2026, 3, 6), 1, rep_id="r2")])
    }
    assert views[date(2026, 3, 2)] == {"r1": ["deal-1"], "r2": []}
    assert views[date(2026, 3, 5)] == {"r1": [], "r2": ["deal-1"]}


# --- revenue drops -------------------------------------------------------------------------------------

D0 = date(2026, 1, 1)
DEFINITION = RevenueDropDefinition(
    window_days=28, baseline_days=56, min_baseline_days=28, persist_days=14, min_baseline_wins=3
)


def wins_every(days: int, first: int, last: int, amount: float = 10_000.0) -> dict[date, tuple[float, int]]:
    """One won deal of ``amount`` every ``days`` days, from day ``first`` to day ``last``."""
    return {D0 + timedelta(days=n): (amount, 1) for n in range(first, last + 1, days)}


def test_steady_revenue_never_falls() -> None:
    assert find_revenue_drop(wins_every(7, 0, 179), D0, D0 + timedelta(days=179), DEFINITION) is None


def test_revenue_falls_on_the_first_day_the_window_is_below_half_and_stays_so() -> None:
    # A win every 7 days (4 a window, 10,000 each) on days 0, 7, ... 77, then none. The window
    # ending day D holds days D-27..D: from D = 98 on it holds day 77's win alone (day 70 left it),
    # 1 win and 10,000, below half of the baseline's 4 wins and 40,000; and it stays so.
    won = wins_every(7, 0, 83)
    drop = find_revenue_drop(won, D0, D0 + timedelta(days=179), DEFINITION)
    assert drop == RevenueDrop(D0 + timedelta(days=98), 10_000.0, 1, 40_000.0, 4.0)


def test_a_quiet_spell_shorter_than_the_persistence_is_not_a_fall() -> None:
    # Four weeks from one win (day 77) to the next (day 104): the window holds a single win on days
    # 98-103 and 105-110, two runs of six low days, shorter than the 14 the definition asks for.
    won = wins_every(7, 0, 77) | wins_every(7, 104, 179)
    assert find_revenue_drop(won, D0, D0 + timedelta(days=179), DEFINITION) is None
    longer = RevenueDropDefinition(**{**_fields(DEFINITION), "persist_days": 5})
    assert find_revenue_drop(won, D0, D0 + timedelta(days=179), longer) is not None


def test_a_fall_must_be_confirmed_inside_the_data() -> None:
    won = wins_every(7, 0, 83)
    assert find_revenue_drop(won, D0, D0 + timedelta(days=110), DEFINITION) is None
    assert find_revenue_drop(won, D0, D0 + timedelta(days=118), DEFINITION) is not None


def test_a_baseline_of_too_few_wins_is_not_judged() -> None:
    won = wins_every(20, 0, 60, amount=50_000.0)  # 56 days never hold more than three wins
    assert find_revenue_drop(won, D0, D0 + timedelta(days=179), DEFINITION) is not None
    four = RevenueDropDefinition(**{**_fields(DEFINITION), "min_baseline_wins": 4})
    assert find_revenue_drop(won, D0, D0 + timedelta(days=179), four) is None


def test_wins_must_fall_with_revenue_unless_told_otherwise() -> None:
    # As many deals as before, each a fifth of the size: revenue fell, won deals did not.
    won = wins_every(7, 0, 83) | wins_every(7, 84, 179, amount=2_000.0)
    assert find_revenue_drop(won, D0, D0 + timedelta(days=179), DEFINITION) is None
    revenue_only = RevenueDropDefinition(**{**_fields(DEFINITION), "wins_fall_too": False})
    drop = find_revenue_drop(won, D0, D0 + timedelta(days=179), revenue_only)
    assert drop is not None and drop.window_wins == 4


def test_days_before_the_data_are_not_a_baseline_of_nothing() -> None:
    # Wins from day 56 on only: days 0-55 hold no data for this rep. Counted from D0, its baseline
    # would start empty and the steady wins would never fall; from day 56 on it is judged as usual.
    won = {day: value for day, value in wins_every(7, 56, 139).items()}
    assert find_revenue_drop(won, D0 + timedelta(days=56), D0 + timedelta(days=220), DEFINITION) is not None


def _fields(definition: RevenueDropDefinition) -> dict[str, Any]:
    return {name: getattr(definition, name) for name in RevenueDropDefinition.__slots__}


# --- lead time, precision and recall -------------------------------------------------------------------

LAST_DAY = date(2026, 12, 31)


def warning(
    rep_id: str,
    fired: date,
    rule: str = "activity_drop",
    scope: Scope = Scope.REP,
    resolved: date | None = None,
) -> AlertOccurrence:
    return AlertOccurrence(
        rule=rule,
        scope=scope,
        key=rep_id,
        detail="score",
        rep_id=rep_id if scope is Scope.REP else None,
        team=None,
        severity="warning",
        fired_at=datetime.combine(fired, time(18), tzinfo=UTC),
        resolved_at=datetime.combine(resolved, time(18), tzinfo=UTC) if resolved else None,
        value=1.0,
        baseline=2.0,
        summary="",
    )


def fell(day: date) -> RevenueDrop:
    return RevenueDrop(day, 0.0, 0, 10_000.0, 2.0)


def test_lead_time_precision_and_recall_on_a_hand_made_case() -> None:
    june = date(2026, 6, 1)
    alerts = [
        warning("hit", june - timedelta(days=20)),  # warned 20 days ahead
        warning("hit", june - timedelta(days=5)),  # a later warning does not shorten the lead
        warning("early", june - timedelta(days=70), resolved=june - timedelta(days=61)),  # over before
        warning("held", june - timedelta(days=90), resolved=june - timedelta(days=59)),  # held into it
        warning("quiet", june),  # revenue never fell: a false alarm
        warning("after", june + timedelta(days=3)),  # after the fall: too late to be a warning
        warning("same-day", june),  # on the fall day itself: not before it
        warning("late", LAST_DAY - timedelta(days=10)),  # a later fall could not be seen: not judged
        warning("team-x", june - timedelta(days=10), scope=Scope.TEAM),  # names no rep
        warning("stalled", june - timedelta(days=10), rule="stalled_deals"),  # not an early warning
        warning("forecast", june - timedelta(days=30), rule="pacing_forecast"),  # not by default
    ]
    drops: dict[str, RevenueDrop | None] = {
        "hit": fell(june),
        "early": fell(june),
        "held": fell(june),
        "quiet": None,
        "after": fell(june),
        "same-day": fell(june),
        "late": None,
        "missed": fell(june + timedelta(days=40)),  # fell without a warning
        "team-x": None,
        "stalled": fell(june),
        "forecast": fell(june),
    }
    definition = RevenueDropDefinition(persist_days=28, lookahead_days=60)
    scores = score(alerts, drops, LAST_DAY, definition)
    # Alerted and judged: hit, early, held, quiet, after, same-day (late fired too close to the end).
    assert (scores.alerted_reps, scores.alerted_reps_fell, scores.unjudged_reps) == (6, 2, 1)
    # Fell: hit, early, held, after, same-day, missed, stalled, forecast; warned: hit and held.
    assert (scores.reps_fell, scores.reps_fell_warned) == (8, 2)
    assert scores.lead_days == (20, 90)  # held: from its firing, 90 days before the fall
    assert scores.precision == pytest.approx(2 / 6)
    assert scores.recall == pytest.approx(2 / 8)
    assert scores.median_lead_days == 55.0
    with_forecasts = score(alerts, drops, LAST_DAY, definition, ("activity_drop", "pacing_forecast"))
    assert (with_forecasts.reps_fell_warned, with_forecasts.lead_days) == (3, (20, 30, 90))
    assert with_forecasts.median_lead_days == 30.0


def test_nothing_to_score_is_none_not_zero() -> None:
    scores = score([], {"r1": None}, LAST_DAY)
    assert (scores.precision, scores.recall, scores.median_lead_days) == (None, None, None)


def test_unknown_early_warning_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="stalled_deals"):
        run_backtest([], [], early_warnings=("stalled_deals",))


# --- the whole backtest on a small org ---------------------------------------------------------------


@pytest.fixture(scope="module")
def small_result(small_org: tuple[list[Rep], list[Event]]) -> BacktestResult:
    reps, events = small_org
    return run_backtest(events, reps, deal_stages=DEAL_STAGES)


def test_the_result_serialises_with_the_documented_keys(small_result: BacktestResult) -> None:
    document = small_result.to_dict()
    assert set(document) == {"alerts", "reps", "summary"}
    assert document["alerts"] and all(set(alert) == ALERT_KEYS for alert in document["alerts"])
    assert {rep["rep_id"] for rep in document["reps"]} == {f"rep-{n:03d}" for n in range(1, 7)}
    assert {"precision", "recall", "median_lead_days"} <= set(document["summary"])
    for alert in document["alerts"]:
        assert alert["fired_at"].endswith("Z")
        if alert["scope"] == "rep":
            assert alert["rep_id"] == alert["key"] and alert["team"] is not None


def test_plot_series_end_each_day_and_start_with_full_windows(small_result: BacktestResult) -> None:
    series = rep_series(small_result, "rep-001")
    assert series.days[0] == SMALL.start.date() and len(series.days) == SMALL.days
    window = small_result.definition.window_days
    assert all(value is None for value in series.revenue[: window - 1])
    # As in the rule, the score is judged once the data reaches into the baseline's first week:
    # from day 28 on (a 7-day window after a 28-day baseline, 7 days of slack).
    assert all(value is None for value in series.activity[:28])
    assert all(value is not None for value in series.activity[28:])


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.external.append(value)


def test_the_report_has_one_inline_plot_per_alerted_rep(small_result: BacktestResult) -> None:
    page = render_report(small_result)
    parser = _Counter()
    parser.feed(page)
    plotted = alerted_reps(small_result)
    assert plotted and parser.tags.get("svg") == len(plotted)
    assert parser.external == []  # self-contained: nothing to fetch
    assert page.count("<section ") == len(plotted)
