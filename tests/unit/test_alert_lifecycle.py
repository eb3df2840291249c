"""Alert lifecycle (pure): firing and resolved transitions, grouping and its timings, repeats,
silences, inhibition, state round-trips and notification ids; and a property over any sequence of
evaluations against the rules the lifecycle promises (alternation, intervals, nothing left hanging)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.notification import Notification
from schemas.routing import RoutingConfig, parse_matcher
from streams.alerts.lifecycle import (
    AlertBook,
    Silence,
    Transition,
    alert_labels,
    group_key,
    render_dashboard_url,
)
from streams.alerts.model import AlertCandidate, AlertStatus, Scope, Severity

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
RULES = {"activity_drop", "no_activity"}
TEAM_OF = {"r1": "emea", "r2": "emea", "r3": "emea", "r4": "nordics"}


def routing(**overrides: Any) -> RoutingConfig:
    data: dict[str, Any] = {
        "dashboard_url": "http://localhost:3000/d/salespulse-rep?var-rep={rep_id}",
        "receivers": [
            {"name": "chat", "slack": {"webhook_url": "https://hooks.example/T/B/secret"}},
            {"name": "audit", "webhook": {"url": "https://audit.example/hook"}},
        ],
        "route": {
            "receiver": "chat",
            "group_by": ["team"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
        },
    }
    data.update(overrides)
    return RoutingConfig.model_validate(data)


def cand(
    rep: str,
    rule: str = "activity_drop",
    *,
    at: datetime = T0,
    detail: str = "",
    severity: Severity = Severity.WARNING,
    value: float = 12,
    baseline: float | None = 40,
    team: str | None = None,
) -> AlertCandidate:
    return AlertCandidate(
        rule=rule,
        scope=Scope.REP,
        key=rep,
        severity=severity,
        value=value,
        baseline=baseline,
        summary=f"7-day calls of {rep} fell to {value:g}",
        action=f"Call {rep} today",
        observed_at=at,
        detail=detail,
        labels={"team": team or TEAM_OF.get(rep, "emea"), "territory": "bavaria", "rep_name": f"Rep {rep}"},
    )


def step(book: AlertBook, candidates: list[AlertCandidate], now: datetime) -> list[Notification]:
    book.observe(candidates, now, RULES)
    return book.plan_notifications(now)


def keys_of(notification: Notification) -> list[tuple[str, str]]:
    return [(alert.key, alert.status) for alert in notification.alerts]


# --- transitions ----------------------------------------------------------------------------------


def test_new_candidate_fires_and_a_missing_one_of_an_evaluated_rule_resolves() -> None:
    book = AlertBook(routing())
    fired = book.observe([cand("r1"), cand("r2")], T0, RULES)
    assert [(t.status, t.alert.key, t.alert.starts_at) for t in fired] == [
        (AlertStatus.FIRING, "r1", T0),
        (AlertStatus.FIRING, "r2", T0),
    ]
    assert book.observe([cand("r1"), cand("r2")], T0 + MINUTE, RULES) == []  # still firing: no news

    resolved = book.observe([cand("r2")], T0 + 2 * MINUTE, RULES)
    assert len(resolved) == 1
    assert resolved[0].status is AlertStatus.RESOLVED
    assert resolved[0].alert.key == "r1"
    assert resolved[0].alert.starts_at == T0
    assert resolved[0].alert.ends_at == T0 + 2 * MINUTE
    assert book.get(cand("r1").fingerprint) is None
    assert book.get(cand("r2").fingerprint) is not None


def test_alerts_of_rules_not_evaluated_stay_firing() -> None:
    book = AlertBook(routing())
    book.observe([cand("r1", "no_activity"), cand("r2")], T0, RULES)
    transitions = book.observe([], T0 + MINUTE, {"activity_drop"})
    assert [(t.status, t.alert.rule) for t in transitions] == [(AlertStatus.RESOLVED, "activity_drop")]
    assert book.get(cand("r1", "no_activity").fingerprint) is not None


def test_evaluated_keys_limit_resolution_to_the_reps_evaluated() -> None:
    book = AlertBook(routing())
    book.observe([cand("r1"), cand("r2")], T0, RULES)
    transitions = book.observe([], T0 + MINUTE, RULES, evaluated_keys={(Scope.REP, "r1")})
    assert [t.alert.key for t in transitions] == ["r1"]
    assert book.get(cand("r2").fingerprint) is not None


def test_latest_figures_are_kept_and_start_is_the_first_observation() -> None:
    book = AlertBook(routing())
    book.observe([cand("r1", value=12, at=T0 - 5 * MINUTE)], T0, RULES)
    book.observe([cand("r1", value=9, severity=Severity.CRITICAL, at=T0 + MINUTE)], T0 + MINUTE, RULES)
    alert = book.get(cand("r1").fingerprint)
    assert alert is not None
    assert alert.starts_at == T0 - 5 * MINUTE  # when the rule saw it, not when we were told
    assert alert.value == 9
    assert alert.severity is Severity.CRITICAL
    assert alert.labels["severity"] == "critical"


def test_labels_carry_rule_scope_key_and_the_scopes_own_label() -> None:
    labels = alert_labels(cand("r1", detail="calls"))
    assert labels["rule"] == "activity_drop"
    assert labels["scope"] == "rep"
    assert labels["key"] == labels["rep_id"] == "r1"
    assert labels["detail"] == "calls"
    assert labels["team"] == "emea"
    team_alert = AlertCandidate(
        rule="activity_drop",
        scope=Scope.TEAM,
        key="nordics",
        severity=Severity.INFO,
        value=1,
        baseline=2,
        summary="s",
        action="a",
        observed_at=T0,
        labels={"team": "wrong", "rule": "spoofed"},
    )
    team_labels = alert_labels(team_alert)
    assert team_labels["team"] == "nordics"
    assert team_labels["rule"] == "activity_drop"


def test_naive_times_are_refused() -> None:
    book = AlertBook(routing())
    with pytest.raises(ValueError, match="timezone-aware"):
        book.observe([], datetime(2026, 3, 2, 9, 0), RULES)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        book.plan_notifications(datetime(2026, 3, 2, 9, 0))  # noqa: DTZ001


# --- grouping and timings -------------------------------------------------------------------------


def test_one_message_per_team_after_group_wait_not_one_per_alert() -> None:
    book = AlertBook(routing())
    candidates = [cand(f"e{i}", team="emea") for i in range(50)] + [
        cand(f"n{i}", team="nordics") for i in range(3)
    ]
    assert step(book, candidates, T0) == []  # group_wait: alerts arriving together go out together
    assert book.plan_notifications(T0 + 29 * SECOND) == []
    sent = book.plan_notifications(T0 + 30 * SECOND)
    assert sorted((n.group_labels["team"], len(n.alerts)) for n in sent) == [("emea", 50), ("nordics", 3)]
    assert all(n.receiver == "chat" and n.status == "firing" for n in sent)
    assert {n.group_key for n in sent} == {
        group_key("0", {"team": "emea"}),
        group_key("0", {"team": "nordics"}),
    }
    # Nothing new: nothing more, however often the timer asks.
    for minutes in range(1, 60):
        assert book.plan_notifications(T0 + 30 * SECOND + minutes * MINUTE) == []


def test_alerts_joining_a_group_wait_for_the_group_interval() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1")], T0)
    assert len(book.plan_notifications(T0 + 30 * SECOND)) == 1
    # r2 joins one minute later: it goes out at the next group interval (5 m after the last flush),
    # together with anything else that arrives meanwhile.
    r2, r3 = cand("r2", at=T0 + 90 * SECOND), cand("r3", at=T0 + 4 * MINUTE)
    assert step(book, [cand("r1"), r2], T0 + 90 * SECOND) == []
    assert step(book, [cand("r1"), r2, r3], T0 + 4 * MINUTE) == []
    sent = book.plan_notifications(T0 + 30 * SECOND + 5 * MINUTE)
    assert len(sent) == 1
    assert [(a.key, a.is_new) for a in sent[0].alerts] == [("r2", True), ("r3", True), ("r1", False)]


def test_resolution_is_notified_at_the_next_interval() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1"), cand("r2")], T0)
    book.plan_notifications(T0 + 30 * SECOND)
    assert step(book, [cand("r2")], T0 + MINUTE) == []
    sent = book.plan_notifications(T0 + 30 * SECOND + 5 * MINUTE)
    assert [keys_of(n) for n in sent] == [[("r1", "resolved"), ("r2", "firing")]]
    resolved = sent[0].alerts[0]
    assert resolved.ends_at == T0 + MINUTE
    assert resolved.starts_at == T0
    # Last one resolved: an all-clear message, then the group is gone.
    step(book, [], T0 + 6 * MINUTE)
    sent = book.plan_notifications(T0 + 30 * SECOND + 10 * MINUTE)
    assert [(n.status, keys_of(n)) for n in sent] == [("resolved", [("r2", "resolved")])]
    # The empty group lives one more interval (an alert firing again at once still waits), then goes.
    assert book.plan_notifications(T0 + 30 * SECOND + 15 * MINUTE) == []
    assert book.to_dict()["groups"] == []
    assert book.to_dict()["resolved"] == []


def test_an_alert_that_ends_before_its_group_speaks_is_never_mentioned() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1")], T0)
    step(book, [], T0 + 10 * SECOND)
    for seconds in (30, 60, 600, 6000):
        assert book.plan_notifications(T0 + seconds * SECOND) == []
    assert book.to_dict()["groups"] == []


def test_a_flap_nobody_heard_of_continues_the_same_alert() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1")], T0)
    book.plan_notifications(T0 + 30 * SECOND)  # firing notified
    step(book, [], T0 + MINUTE)  # resolved, not told yet (next flush at 5m30s)
    again = book.observe([cand("r1", at=T0 + 2 * MINUTE)], T0 + 2 * MINUTE, RULES)
    assert [(t.status, t.alert.starts_at) for t in again] == [(AlertStatus.FIRING, T0)]
    assert book.plan_notifications(T0 + 30 * SECOND + 5 * MINUTE) == []  # nothing changed for the receiver


def test_a_new_episode_after_a_told_resolution_gets_its_own_start() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1")], T0)
    book.plan_notifications(T0 + 30 * SECOND)
    step(book, [], T0 + MINUTE)
    told = book.plan_notifications(T0 + 30 * SECOND + 5 * MINUTE)
    assert [keys_of(n) for n in told] == [[("r1", "resolved")]]
    later = T0 + 10 * MINUTE
    transitions = book.observe([cand("r1", at=later)], later, RULES)
    assert [(t.status, t.alert.starts_at) for t in transitions] == [(AlertStatus.FIRING, later)]
    sent = book.plan_notifications(later + 30 * SECOND)
    assert [keys_of(n) for n in sent] == [[("r1", "firing")]]
    assert sent[0].alerts[0].starts_at == later


def test_still_firing_alerts_are_repeated_after_the_repeat_interval() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1")], T0)
    first = book.plan_notifications(T0 + 30 * SECOND)
    times = [T0 + 30 * SECOND + k * MINUTE for k in range(1, 4 * 60 + 6)]
    repeats = [(t, n) for t in times for n in step(book, [cand("r1", at=t)], t)]
    assert len(repeats) == 1
    repeated_at, repeat = repeats[0]
    assert repeated_at - (T0 + 30 * SECOND) >= 4 * HOUR
    assert repeated_at - (T0 + 30 * SECOND) <= 4 * HOUR + 5 * MINUTE  # at the first flush after it
    assert repeat.alerts[0].is_new is False
    assert repeat.id != first[0].id
    assert repeat.sequence == first[0].sequence + 1


def test_routes_send_matching_alerts_to_their_receivers_and_continue_to_more() -> None:
    config = routing(
        route={
            "receiver": "chat",
            "group_wait": "0s",
            "routes": [
                {
                    "matchers": ['severity="critical"'],
                    "receiver": "audit",
                    "group_by": ["..."],
                    "continue": True,
                },
                {"matchers": ['team=~"nord.*"'], "receiver": "audit", "group_by": ["rep_id"]},
                {"matchers": ['team="emea"'], "receiver": "chat"},
            ],
        }
    )
    book = AlertBook(config)
    sent = step(book, [cand("r1", severity=Severity.CRITICAL), cand("r4"), cand("r2")], T0)
    by_receiver = sorted((n.receiver, tuple(a.key for a in n.alerts), n.group_key) for n in sent)
    critical_group = group_key("0.0", alert_labels(cand("r1", severity=Severity.CRITICAL)))
    assert by_receiver == [
        ("audit", ("r1",), critical_group),  # every label is a group label: one alert per group
        ("audit", ("r4",), group_key("0.1", {"rep_id": "r4"})),
        ("chat", ("r1", "r2"), group_key("0.2", {"team": "emea"})),  # the critical one continued here
    ]


# --- silences -------------------------------------------------------------------------------------


def silence(*matchers: str, start: datetime = T0, end: datetime = T0 + HOUR) -> Silence:
    return Silence.create(
        [parse_matcher(m) for m in matchers],
        starts_at=start,
        ends_at=end,
        created_by="lena",
        comment="on leave",
    )


def test_a_silence_mutes_matching_alerts_until_it_expires() -> None:
    book = AlertBook(routing())
    book.add_silence(silence("rep_id=r1", end=T0 + 10 * MINUTE))
    sent = step(book, [cand("r1"), cand("r2")], T0) + book.plan_notifications(T0 + 30 * SECOND)
    assert [keys_of(n) for n in sent] == [[("r2", "firing")]]
    views = {view.alert.key: view for view in book.alerts(T0 + MINUTE)}
    assert views["r1"].state == "suppressed"
    assert views["r1"].silenced_by == (book.silences(T0)[0].id,)
    assert views["r2"].state == "active"
    # Expired: r1 is news at the next interval.
    assert book.plan_notifications(T0 + 5 * MINUTE + 30 * SECOND) == []
    sent = book.plan_notifications(T0 + 10 * MINUTE + 30 * SECOND)
    assert [[(a.key, a.is_new) for a in n.alerts] for n in sent] == [[("r1", True), ("r2", False)]]


def test_silence_matchers_use_regex_anchored_and_labels_like_rule_and_key() -> None:
    book = AlertBook(routing(route={"receiver": "chat", "group_wait": "0s", "group_by": ["rep_id"]}))
    book.add_silence(silence('rule=~"activity_.*"', 'key!~"r[3-9]"'))
    book.add_silence(silence('team=~"nord"'))  # anchored: "nord" does not match "nordics"
    sent = step(book, [cand("r1"), cand("r3"), cand("r4"), cand("r2", "no_activity")], T0)
    assert sorted(keys_of(n)[0] for n in sent) == [("r2", "firing"), ("r3", "firing"), ("r4", "firing")]


def test_an_expired_silence_ends_muting_and_is_listed_then_dropped() -> None:
    book = AlertBook(routing(), silence_retention=timedelta(days=1))
    created = book.add_silence(silence("rep_id=r1", end=T0 + 3 * HOUR))
    assert book.add_silence(silence("rep_id=r1", end=T0 + 3 * HOUR)) == created  # same content, same silence
    step(book, [cand("r1")], T0)
    assert book.plan_notifications(T0 + 30 * SECOND) == []
    expired = book.expire_silence(created.id, T0 + MINUTE)
    assert expired.ends_at == T0 + MINUTE
    assert book.silences(T0 + 2 * MINUTE) == []
    assert [s.id for s in book.silences(T0 + 2 * MINUTE, include_expired=True)] == [created.id]
    # Its group is new now, so it waits group_wait like any new group.
    assert book.plan_notifications(T0 + 5 * MINUTE + 30 * SECOND) == []
    assert [keys_of(n) for n in book.plan_notifications(T0 + 6 * MINUTE)] == [[("r1", "firing")]]
    book.plan_notifications(T0 + 2 * timedelta(days=1))
    assert book.silences(T0, include_expired=True) == []
    with pytest.raises(KeyError):
        book.expire_silence("nope", T0)


def test_a_pending_silence_starts_muting_at_its_start() -> None:
    book = AlertBook(routing(route={"receiver": "chat", "group_wait": "0s"}))
    book.add_silence(silence("rep_id=r1", start=T0 + HOUR, end=T0 + 2 * HOUR))
    assert [keys_of(n) for n in step(book, [cand("r1")], T0)] == [[("r1", "firing")]]
    assert book.alerts(T0 + 90 * MINUTE)[0].state == "suppressed"


@pytest.mark.parametrize(
    ("matchers", "problem"),
    [
        ((), "at least one matcher"),
        (('team=~".*"',), "silence everything"),
        (("team!=emea",), "silence everything"),
    ],
)
def test_silences_that_would_mute_everything_are_refused(matchers: tuple[str, ...], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        silence(*matchers)


def test_silence_needs_an_end_after_its_start_an_author_and_a_reason() -> None:
    with pytest.raises(ValueError, match="end after"):
        silence("rep_id=r1", end=T0)
    with pytest.raises(ValueError, match="created_by"):
        Silence.create(
            [parse_matcher("rep_id=r1")], starts_at=T0, ends_at=T0 + HOUR, created_by=" ", comment="x"
        )
    with pytest.raises(ValueError, match="comment"):
        Silence.create(
            [parse_matcher("rep_id=r1")], starts_at=T0, ends_at=T0 + HOUR, created_by="x", comment=""
        )


def test_the_resolution_of_an_alert_muted_after_it_was_notified_is_still_told() -> None:
    book = AlertBook(routing())
    step(book, [cand("r1")], T0)
    book.plan_notifications(T0 + 30 * SECOND)
    book.add_silence(silence("rep_id=r1", end=T0 + 10 * HOUR))
    assert step(book, [cand("r1")], T0 + MINUTE) == []
    assert book.plan_notifications(T0 + 5 * MINUTE + 30 * SECOND) == []  # muted: nothing new to say
    assert book.plan_notifications(T0 + 5 * HOUR) == []  # and no repeats of a muted alert
    sent = step(book, [], T0 + 6 * HOUR)
    assert [keys_of(n) for n in sent] == [[("r1", "resolved")]]


# --- inhibition -----------------------------------------------------------------------------------


def test_no_activity_inhibits_activity_drop_of_the_same_rep_only() -> None:
    book = AlertBook(routing(route={"receiver": "chat", "group_wait": "0s"}))
    candidates = [
        cand("r1", "no_activity"),
        cand("r1", detail="calls"),
        cand("r1", detail="emails"),
        cand("r2"),
    ]
    sent = step(book, candidates, T0)
    assert [sorted((a.rule, a.key) for a in n.alerts) for n in sent] == [
        [("activity_drop", "r2"), ("no_activity", "r1")]
    ]
    views = {(v.alert.rule, v.alert.key, v.alert.detail): v for v in book.alerts(T0)}
    assert views[("activity_drop", "r1", "calls")].inhibited_by == (cand("r1", "no_activity").fingerprint,)
    assert views[("no_activity", "r1", "")].state == "active"
    # The rep is active again: the inhibition lifts and the drops are news.
    step(book, candidates[1:], T0 + MINUTE)
    sent = book.plan_notifications(T0 + 5 * MINUTE)
    assert [sorted((a.rule, a.key, a.detail, a.status) for a in n.alerts) for n in sent] == [
        [
            ("activity_drop", "r1", "calls", "firing"),
            ("activity_drop", "r1", "emails", "firing"),
            ("activity_drop", "r2", "", "firing"),
            ("no_activity", "r1", "", "resolved"),
        ]
    ]


def test_inhibit_rules_come_from_the_routing_file() -> None:
    config = routing(
        route={"receiver": "chat", "group_wait": "0s"},
        inhibit_rules=[
            {
                "source_matchers": ['severity="critical"'],
                "target_matchers": ['severity="warning"'],
                "equal": ["team"],
            }
        ],
    )
    book = AlertBook(config)
    candidates = [
        cand("r1", "pipeline_coverage_low", severity=Severity.CRITICAL),
        cand("r2", severity=Severity.WARNING),  # same team: muted
        cand("r4", severity=Severity.WARNING),  # other team: not
        cand("r3", "no_activity", severity=Severity.INFO),  # the default rule is gone: mutes nothing
        cand("r3", detail="calls", severity=Severity.INFO),
    ]
    sent = step(book, candidates, T0)
    assert sorted(a.key + ":" + a.rule for n in sent for a in n.alerts) == [
        "r1:pipeline_coverage_low",
        "r3:activity_drop",
        "r3:no_activity",
        "r4:activity_drop",
    ]


# --- state and ids --------------------------------------------------------------------------------


def test_state_round_trips_through_json_and_behaves_the_same() -> None:
    config = routing()
    book = AlertBook(config)
    book.add_silence(silence("rep_id=r3", end=T0 + 10 * HOUR))
    step(book, [cand("r1"), cand("r2"), cand("r3"), cand("r4", "no_activity")], T0)
    book.plan_notifications(T0 + 30 * SECOND)
    step(book, [cand("r2"), cand("r3"), cand("r4", "no_activity")], T0 + MINUTE)  # r1 resolved, not told
    state = book.to_dict()
    copy = AlertBook.from_dict(json.loads(json.dumps(state)), config)
    assert copy.to_dict() == state
    for minutes in (2, 6, 20, 300):
        now = T0 + minutes * MINUTE
        candidates = [cand("r2", at=now), cand("r4", "no_activity", at=now)]
        assert step(book, candidates, now) == step(copy, candidates, now)
    assert copy.to_dict() == book.to_dict()


def test_state_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        AlertBook.from_dict({"version": 99}, routing())


def test_notification_ids_are_deterministic_and_distinct() -> None:
    def run() -> list[Notification]:
        book = AlertBook(routing())
        out = step(book, [cand("r1"), cand("r4")], T0)
        out += book.plan_notifications(T0 + 30 * SECOND)
        out += step(book, [cand("r4")], T0 + MINUTE)
        out += book.plan_notifications(T0 + 6 * MINUTE)
        out += book.plan_notifications(T0 + 5 * HOUR)
        return out

    first, second = run(), run()
    assert [n.id for n in first] == [n.id for n in second]
    assert len({n.id for n in first}) == len(first) == 4


def test_a_book_restored_from_before_a_crash_plans_the_same_message_with_the_same_id() -> None:
    """The worker writes planned messages to the outbox, then persists the book. Killed in between,
    it restarts from the older state and plans again: same id, so the outbox sends it once."""
    config = routing()
    book = AlertBook(config)
    step(book, [cand("r1"), cand("r2")], T0)
    saved = json.loads(json.dumps(book.to_dict()))
    planned = book.plan_notifications(T0 + 30 * SECOND)  # written to the outbox, then: kill -9
    restored = AlertBook.from_dict(saved, config)
    replanned = step(
        restored, [cand("r1", at=T0 + 40 * SECOND), cand("r2", at=T0 + 40 * SECOND)], T0 + 40 * SECOND
    )
    assert [n.id for n in replanned] == [n.id for n in planned]


def test_dashboard_url_is_filled_from_labels_and_quoted() -> None:
    template = "http://localhost:3000/d/salespulse-rep?var-rep={rep_id}&var-team={team}"
    assert render_dashboard_url(template, {"rep_id": "rep 7/a&b", "team": "emea"}) == (
        "http://localhost:3000/d/salespulse-rep?var-rep=rep%207%2Fa%26b&var-team=emea"
    )
    assert render_dashboard_url(template, {"team": "emea"}) is None  # a team alert has no rep board
    assert render_dashboard_url(None, {"rep_id": "r1"}) is None
    book = AlertBook(routing(route={"receiver": "chat", "group_wait": "0s"}))
    sent = step(book, [cand("r1")], T0)
    assert sent[0].alerts[0].dashboard_url == "http://localhost:3000/d/salespulse-rep?var-rep=r1"


# --- the property ---------------------------------------------------------------------------------

PROPERTY_ROUTING = routing(
    route={
        "receiver": "chat",
        "group_by": ["team"],
        "group_wait": "30s",
        "group_interval": "5m",
        "repeat_interval": "1h",
        "routes": [
            {
                "matchers": ['team="emea"'],
                "receiver": "audit",
                "group_by": ["rep_id"],
                "group_wait": "0s",
                "group_interval": "1m",
                "repeat_interval": "20m",
                "continue": True,
            }
        ],
    }
)
TIMINGS = {
    "0": (timedelta(minutes=5), timedelta(hours=1)),
    "0.0": (timedelta(minutes=1), timedelta(minutes=20)),
}
POOL = [(rep, rule) for rep in ("r1", "r2", "r4") for rule in ("activity_drop", "no_activity")]
ADVANCES = [0, 1, 10, 30, 45, 60, 120, 299, 300, 301, 900, 1200, 3600, 5400]

steps_strategy = st.lists(
    st.tuples(
        st.sampled_from(ADVANCES),
        st.sets(st.integers(min_value=0, max_value=len(POOL) - 1)),
        st.sampled_from([frozenset(RULES), frozenset({"activity_drop"}), frozenset({"no_activity"})]),
        st.booleans(),  # persist and restore the book at this step
        st.booleans(),  # call the timer once more in between
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy)
def test_any_sequence_of_evaluations_keeps_the_lifecycle_promises(
    steps: list[tuple[int, set[int], frozenset[str], bool, bool]],
) -> None:
    book = AlertBook(PROPERTY_ROUTING)
    now = T0
    notifications: list[Notification] = []
    transitions: list[Transition] = []

    def evaluate(active: set[int], rules: frozenset[str]) -> None:
        candidates = [cand(POOL[i][0], POOL[i][1], at=now) for i in sorted(active) if POOL[i][1] in rules]
        transitions.extend(book.observe(candidates, now, rules))
        notifications.extend(book.plan_notifications(now))

    for advance, active, rules, reload, extra_tick in steps:
        now += timedelta(seconds=advance)
        evaluate(active, rules)
        if reload:
            book = AlertBook.from_dict(json.loads(json.dumps(book.to_dict())), PROPERTY_ROUTING)
        if extra_tick:
            now += timedelta(seconds=17)
            notifications.extend(book.plan_notifications(now))
    # Everything ends; enough time passes for every group to say so.
    now += timedelta(days=1)
    evaluate(set(), frozenset(RULES))
    now += timedelta(days=1)
    notifications.extend(book.plan_notifications(now))

    # Transitions alternate per fingerprint, starting with firing.
    last_transition: dict[str, AlertStatus] = {}
    for transition in transitions:
        previous = last_transition.get(transition.alert.fingerprint, AlertStatus.RESOLVED)
        assert transition.status is not previous
        last_transition[transition.alert.fingerprint] = transition.status

    assert len({n.id for n in notifications}) == len(notifications), "notification ids must be unique"
    told: dict[tuple[str, str], tuple[str, datetime]] = {}  # (group, fingerprint) -> (status, starts_at)
    times: dict[str, list[datetime]] = defaultdict(list)
    for notification in notifications:
        route_id = notification.group_key.split(":")[0]
        group_interval, repeat_interval = TIMINGS[route_id]
        previous_times = times[notification.group_key]
        if previous_times:
            gap = notification.created_at - previous_times[-1]
            assert gap >= group_interval, "a group speaks at most once per group interval"
        assert notification.alerts, "no empty messages"
        news = [a for a in notification.alerts if a.is_new]
        if not news:
            assert previous_times
            assert notification.created_at - previous_times[-1] >= repeat_interval, "repeats wait"
        times[notification.group_key].append(notification.created_at)
        # Per group and fingerprint: firing (repeated while it fires), then resolved, then firing again.
        for alert in sorted(notification.alerts, key=lambda a: a.status != "resolved"):
            key = (notification.group_key, alert.fingerprint)
            before = told.get(key)
            if alert.status == "resolved":
                assert before == ("firing", alert.starts_at), "resolved only what was told firing"
                assert alert.ends_at is not None and alert.ends_at >= alert.starts_at
            else:
                if before is not None and before[0] == "firing":
                    assert before[1] == alert.starts_at, "a new episode comes after the old one's resolution"
                    assert not alert.is_new
                else:
                    assert alert.is_new
                    if before is not None:
                        assert alert.starts_at > before[1]
            told[key] = (alert.status, alert.starts_at)
    assert all(status == "resolved" for status, _ in told.values()), "nothing is left firing for a receiver"
    event(f"messages: {min(len(notifications) // 5 * 5, 20)}+")
    event(f"repeats: {any(not any(a.is_new for a in n.alerts) for n in notifications)}")
    event(f"resolutions: {sum(len(n.resolved) for n in notifications) > 0}")
    assert book.to_dict()["groups"] == []
    assert book.to_dict()["firing"] == []
