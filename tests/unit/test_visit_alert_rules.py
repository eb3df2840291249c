"""The field-visit alert rules on constructed visit histories: each fires when its condition holds
and not otherwise, with hysteresis where it has it; no_check_in follows the team calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from schemas.accounts import Account
from schemas.alert_rules import AlertRulesConfig
from schemas.reps import ManagementMode, Rep
from streams.alerts.model import Scope, alert_fingerprint
from streams.alerts.rules import (
    FIELD_ACTIVITY_DROP,
    KEY_ACCOUNTS_NOT_VISITED,
    LOW_VERIFIED_SHARE,
    NO_CHECK_IN,
    RULES,
    RepView,
    evaluate,
)
from streams.visits.book import VisitRecord
from streams.visits.geo import VisitStatus

# Wednesday 20 May 2026; windows end with Tuesday 19 May.
NOW = datetime(2026, 5, 20, 6, 0, tzinfo=UTC)
VISIT_RULES = (FIELD_ACTIVITY_DROP, LOW_VERIFIED_SHARE, KEY_ACCOUNTS_NOT_VISITED, NO_CHECK_IN)
REP = Rep(rep_id="r1", name="Ana Lopez", team="North", territory="South", mode=ManagementMode.DEVELOPING)


def config(*enabled: str, **changes: dict[str, Any]) -> AlertRulesConfig:
    data: dict[str, Any] = {rule: {"enabled": rule in enabled} for rule in RULES if rule != "no_activity"}
    data["no_activity"] = {"enabled": False}
    for rule, settings in changes.items():
        data[rule] = {**data[rule], **settings}
    return AlertRulesConfig.model_validate(data)


def visit(
    when: datetime, status: VisitStatus = VisitStatus.VERIFIED, account: str = "a1", n: int = 0
) -> VisitRecord:
    return VisitRecord(
        visit_id=f"v-{when.isoformat()}-{n}",
        rep_id="r1",
        account_id=account,
        checked_in_at=when,
        checked_out_at=when + timedelta(minutes=30),
        status=status,
        distance_m=None,
        radius_m=None,
        lat=None,
        lon=None,
        accuracy_m=None,
    )


def weekdays(first: date, last: date, per_day: int, hour: int = 10, **kwargs: Any) -> list[VisitRecord]:
    visits = []
    day = first
    while day <= last:
        if day.weekday() < 5:
            visits += [
                visit(datetime.combine(day, time(hour + n), tzinfo=UTC), n=n, **kwargs)
                for n in range(per_day)
            ]
        day += timedelta(days=1)
    return visits


def view(visits: list[VisitRecord], accounts: list[Account] | None = None) -> RepView:
    return RepView("r1", REP, {}, None, [], visits=visits, accounts=accounts or [])


def fired(
    views: list[RepView], cfg: AlertRulesConfig, now: datetime = NOW, firing: set[str] | None = None
) -> dict[str, Any]:
    return {c.rule: c for c in evaluate(views, now, cfg, firing or set()) if c.rule in VISIT_RULES}


def test_field_activity_drop_against_the_reps_own_baseline() -> None:
    cfg = config(FIELD_ACTIVITY_DROP)
    baseline = weekdays(date(2026, 4, 15), date(2026, 5, 12), per_day=3)  # 20 days x 3 = 15 a week
    steady = baseline + weekdays(date(2026, 5, 13), date(2026, 5, 19), per_day=3)
    assert fired([view(steady)], cfg) == {}
    faded = baseline + weekdays(date(2026, 5, 13), date(2026, 5, 19), per_day=1)  # 5 vs 15
    candidate = fired([view(faded)], cfg)[FIELD_ACTIVITY_DROP]
    assert (candidate.value, candidate.baseline) == (5, 15.0)
    assert "Verified visits" in candidate.summary
    # Unverified visits do not count as field activity.
    faked = faded + weekdays(
        date(2026, 5, 13), date(2026, 5, 19), 2, hour=14, status=VisitStatus.OUT_OF_RANGE
    )
    assert FIELD_ACTIVITY_DROP in fired([view(faked)], cfg)
    # Hysteresis: at 10 of 15 (0.67) a new alert does not fire, a firing one holds.
    partly = baseline + weekdays(date(2026, 5, 13), date(2026, 5, 19), per_day=2)
    assert fired([view(partly)], cfg) == {}
    holding = {alert_fingerprint(FIELD_ACTIVITY_DROP, Scope.REP, "r1")}
    assert FIELD_ACTIVITY_DROP in fired([view(partly)], cfg, firing=holding)


def test_no_field_activity_drop_for_a_rep_who_barely_visits() -> None:
    sparse = [visit(datetime(2026, 4, 20, 10, tzinfo=UTC)), visit(datetime(2026, 5, 1, 10, tzinfo=UTC))]
    assert fired([view(sparse)], config(FIELD_ACTIVITY_DROP)) == {}


def test_low_verified_share() -> None:
    cfg = config(LOW_VERIFIED_SHARE)
    good = weekdays(date(2026, 5, 6), date(2026, 5, 19), per_day=1)  # 10 verified
    assert fired([view(good)], cfg) == {}
    bad = good + weekdays(date(2026, 5, 6), date(2026, 5, 19), 1, hour=15, status=VisitStatus.OUT_OF_RANGE)
    candidate = fired([view(bad)], cfg)[LOW_VERIFIED_SHARE]
    assert candidate.value == 0.5
    assert "10 out of range, 0 without a position" in candidate.summary
    # Too few visits to judge.
    assert fired([view(bad[:4] + bad[-4:])], cfg) == {}


def test_key_accounts_not_visited() -> None:
    accounts = [
        Account(account_id="k1", name="K1", segment="key", owner_rep_id="r1"),
        Account(account_id="k2", name="K2", segment="key", owner_rep_id="r1"),
        Account(account_id="s1", name="S1", segment="standard", owner_rep_id="r1"),
    ]
    cfg = config(KEY_ACCOUNTS_NOT_VISITED)
    visits = [
        visit(datetime(2026, 5, 4, 10, tzinfo=UTC), account="k1"),
        visit(datetime(2026, 5, 5, 10, tzinfo=UTC), VisitStatus.OUT_OF_RANGE, account="k2"),
        visit(datetime(2026, 4, 1, 10, tzinfo=UTC), account="k2"),  # more than 30 days ago
    ]
    candidate = fired([view(visits, accounts)], cfg)[KEY_ACCOUNTS_NOT_VISITED]
    assert (candidate.value, candidate.baseline) == (1, 2)
    assert "K2 (k2)" in candidate.summary and "k1" not in candidate.summary
    visits.append(visit(datetime(2026, 5, 18, 10, tzinfo=UTC), account="k2"))
    assert fired([view(visits, accounts)], cfg) == {}


def test_no_check_in_by_the_hour_on_a_working_day_for_a_field_rep() -> None:
    cfg = config(NO_CHECK_IN, no_check_in={"by": "11:00"})
    history = weekdays(date(2026, 5, 4), date(2026, 5, 19), per_day=1, hour=9)
    wednesday = datetime(2026, 5, 20, tzinfo=UTC)
    assert fired([view(history)], cfg, now=wednesday.replace(hour=10, minute=59)) == {}
    candidate = fired([view(history)], cfg, now=wednesday.replace(hour=11, minute=1))[NO_CHECK_IN]
    assert candidate.detail == "2026-05-20"
    assert "in the field 10 of the last 10 working days" in candidate.summary
    checked_in = [*history, visit(wednesday.replace(hour=11, minute=30))]
    assert fired([view(checked_in)], cfg, now=wednesday.replace(hour=12)) == {}
    # Not on a Saturday, and not for a rep who is rarely in the field.
    assert fired([view(history)], cfg, now=datetime(2026, 5, 23, 12, tzinfo=UTC)) == {}
    rare = [visit(datetime(2026, 5, 12, 9, tzinfo=UTC)), visit(datetime(2026, 5, 14, 9, tzinfo=UTC))]
    assert fired([view(rare)], cfg, now=wednesday.replace(hour=12)) == {}


def test_no_check_in_uses_the_team_calendar() -> None:
    cfg = config(
        NO_CHECK_IN,
        no_check_in={"by": "11:00"},
    ).model_copy(update={"team_calendars": {}})
    berlin = AlertRulesConfig.model_validate(
        {**cfg.model_dump(), "team_calendars": {"North": {"timezone": "Europe/Berlin"}}}
    )
    history = weekdays(date(2026, 5, 4), date(2026, 5, 19), per_day=1, hour=7)
    # 09:30 UTC is 11:30 in Berlin (CEST): late there, early in UTC.
    at = datetime(2026, 5, 20, 9, 30, tzinfo=UTC)
    assert fired([view(history)], cfg, now=at) == {}
    assert NO_CHECK_IN in fired([view(history)], berlin, now=at)
