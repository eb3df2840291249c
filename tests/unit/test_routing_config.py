"""The routing file: parsing, inheritance, matching, and errors that point at the line (never at a secret)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from schemas.routing import (
    DEFAULT_INHIBIT_RULES,
    RateLimit,
    RoutingError,
    load_routing,
    parse_duration,
    parse_matcher,
)

SECRET = "T0001/B0001/ZZtopSECRETzz"

EXAMPLE = f"""
dashboard_url: "http://localhost:3000/d/salespulse-rep?var-rep={{rep_id}}"
external_url: "http://salespulse.example"
receivers:
  - name: emea-slack
    slack: {{webhook_url: "https://hooks.slack.com/services/{SECRET}"}}
  - name: nordics-teams
    teams: {{webhook_url: "https://prod.westeurope.logic.azure.com/workflows/{SECRET}"}}
  - name: mm
    mattermost: {{webhook_url: "https://chat.example/hooks/{SECRET}", channel: sales, username: salespulse}}
  - name: gchat
    google_chat: {{webhook_url: "https://chat.googleapis.com/v1/spaces/AAA/messages?key={SECRET}"}}
  - name: audit
    webhook: {{url: "https://audit.example/hook", hmac_secret: "{SECRET}"}}
    rate_limit: {{per_second: 5, burst: 10}}
  - name: am
    alertmanager: {{url: "http://127.0.0.1:9093"}}
    timeout: 3s
route:
  receiver: audit
  group_by: [team]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['team="emea"', 'severity=~"warning|critical"']
      receiver: emea-slack
      continue: true
    - matchers: [team=nordics]
      receiver: nordics-teams
      group_interval: 10m
      routes:
        - matchers: [rule=no_activity]
          receiver: mm
    - matchers: ['rule!~"pacing_.*"']
      receiver: am
      repeat_interval: 1h
inhibit_rules:
  - source_matchers: [rule=no_activity]
    target_matchers: [rule=activity_drop]
    equal: [scope, key]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RoutingError) as caught:
        load_routing(write(tmp_path, text))
    assert SECRET not in str(caught.value)
    return caught.value.problems


def test_the_example_loads_with_inheritance_and_defaults(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, EXAMPLE))
    assert [r.kind for r in config.receivers] == [
        "slack",
        "teams",
        "mattermost",
        "google_chat",
        "webhook",
        "alertmanager",
    ]
    limits = {r.name: r.effective_rate_limit for r in config.receivers}
    assert limits["emea-slack"] == RateLimit(per_second=1.0, burst=1)  # Slack: about one message a second
    assert limits["audit"] == RateLimit(per_second=5, burst=10)
    assert limits["am"] is None
    assert config.receivers[5].timeout == timedelta(seconds=3)
    assert config.inhibit_rules == DEFAULT_INHIBIT_RULES

    nested = config.match({"team": "nordics", "rule": "no_activity", "severity": "info"})
    assert [(t.route_id, t.receiver, t.group_interval, t.group_wait, t.group_by) for t in nested] == [
        ("0.1.0", "mm", timedelta(minutes=10), timedelta(seconds=30), ("team",))
    ]
    both = config.match({"team": "emea", "severity": "critical", "rule": "activity_drop"})
    assert [(t.receiver, t.repeat_interval) for t in both] == [
        ("emea-slack", timedelta(hours=4)),
        ("am", timedelta(hours=1)),
    ]
    assert [
        t.receiver for t in config.match({"team": "emea", "severity": "info", "rule": "pacing_forecast"})
    ] == ["audit"]


def test_secrets_never_show_in_repr_or_str(tmp_path: Path) -> None:
    config = load_routing(write(tmp_path, EXAMPLE))
    assert SECRET not in repr(config)
    assert SECRET not in str(config)
    assert SECRET not in config.model_dump_json()
    assert SECRET in config.receivers[0].destination.model_dump()["webhook_url"].get_secret_value()


def test_errors_name_file_line_key_path_and_problem(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        f"""receivers:
  - name: emea-slack
    slack: {{webhook_url: "ftp://{SECRET}"}}
  - name: twice
    teams: {{webhook_url: "https://x.example/{SECRET}"}}
    slack: {{webhook_url: "https://y.example/{SECRET}"}}
route:
  receiver: emea-slack
  group_wait: soon
  routes:
    - matchers: ['team=~"(("']
    - matchers: ['team = emea']
      recevier: x
""",
    )
    path = tmp_path / "routing.yml"
    assert found == [
        f"{path}:3: receivers[0].slack.webhook_url: must be an http:// or https:// URL with a host "
        "(value not shown: URLs are secrets)",
        f"{path}:4: receivers[1]: a receiver needs exactly one of slack, teams, mattermost, google_chat, "
        "webhook, alertmanager; got slack, teams",
        f"{path}:9: route.group_wait: must be a duration such as 30s, 5m, 4h or 1h30m",
        f"{path}:11: route.routes[0].matchers[0]: invalid regular expression '((': "
        "missing ), unterminated subpattern at position 4",
        f"{path}:13: route.routes[1].recevier: Extra inputs are not permitted",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("receivers: [\n  a: b\n", ":3:1: not valid YAML: expected ',' or ']'"),
        ("route: {}\nroute: {}\n", ":2:1: not valid YAML: found duplicate key 'route'"),
        ("- just\n- a list\n", "must be a mapping with receivers and route, got list"),
        ("", "must be a mapping with receivers and route, got NoneType"),
    ],
)
def test_unreadable_files_are_reported_with_position(tmp_path: Path, text: str, expected: str) -> None:
    (problem,) = problems(tmp_path, text)
    assert expected in problem


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ("{receiver: nope}", "2: route.receiver: receiver 'nope' is not defined (known: a, am)"),
        ("{}", "2: route: the root route needs a receiver"),
        ("{receiver: a, matchers: [team=x]}", "2: route.matchers: the root route matches every alert"),
        (
            "{receiver: a, routes: [{matchers: [team=x], receiver: am, repeat_interval: 6h}]}",
            "2: route.routes[0]: repeat_interval 6h must be shorter than the firing_ttl 5h of receiver 'am'",
        ),
    ],
)
def test_cross_references_are_checked(tmp_path: Path, route: str, expected: str) -> None:
    text = (
        f"receivers: [{{name: a, slack: {{webhook_url: 'https://h.example/{SECRET}'}}}},"
        " {name: am, alertmanager: {url: 'http://127.0.0.1:9093'}}]\n"
        f"route: {route}\n"
    )
    (problem,) = problems(tmp_path, text)
    assert problem.startswith(f"{tmp_path / 'routing.yml'}:{expected}")


def test_receiver_names_are_unique_and_a_missing_file_is_clear(tmp_path: Path) -> None:
    (problem,) = problems(
        tmp_path,
        "receivers: [{name: a, webhook: {url: 'http://h.example'}}, {name: a, webhook: {url: 'http://h.example'}}]\n"
        "route: {receiver: a}\n",
    )
    assert problem.endswith("receivers[1].name: receiver name 'a' is used twice")
    with pytest.raises(RoutingError, match="cannot read: No such file"):
        load_routing(tmp_path / "missing.yml")


@pytest.mark.parametrize(
    ("text", "name", "op", "value"),
    [
        ('team="emea"', "team", "=", "emea"),
        ("team=emea", "team", "=", "emea"),
        (" rep_id != rep-007 ", "rep_id", "!=", "rep-007"),
        ('rule=~"activity_.*"', "rule", "=~", "activity_.*"),
        ("severity!~'info'", "severity", "!~", "info"),
        ('summary="say \\"hi\\""', "summary", "=", 'say "hi"'),
        ('team=""', "team", "=", ""),
    ],
)
def test_matchers_parse_like_amtool(text: str, name: str, op: str, value: str) -> None:
    matcher = parse_matcher(text)
    assert (matcher.name, matcher.op.value, matcher.value) == (name, op, value)
    assert parse_matcher(str(matcher)) == matcher


def test_matchers_match_like_alertmanager() -> None:
    assert parse_matcher("team=~emea|nordics").matches({"team": "nordics"})
    assert not parse_matcher("team=~emea").matches({"team": "emea-north"})  # anchored
    assert parse_matcher('team=""').matches({})  # a missing label is the empty string
    assert parse_matcher("team!=emea").matches({})
    assert not parse_matcher("team!~.+").matches({"team": "x"})
    for bad in ("team", "1team=x", "=x", 'team=~"("'):
        with pytest.raises(ValueError, match=r"team|name"):
            parse_matcher(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("4h", 14_400), ("1h30m", 5_400), ("1d", 86_400), ("500ms", 0.5), (90, 90)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-5m", "m", True])
def test_bad_durations(text: str | bool) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_dashboard_template_must_use_plain_label_placeholders(tmp_path: Path) -> None:
    base = "receivers: [{name: a, webhook: {url: 'http://h.example'}}]\nroute: {receiver: a}\n"
    (problem,) = problems(tmp_path, base + "dashboard_url: 'http://g.example/d?rep={rep_id.upper}'\n")
    assert "placeholder {rep_id.upper} must be a plain label name" in problem
    (problem,) = problems(tmp_path, base + "dashboard_url: 'http://g.example/d?rep={rep_id'\n")
    assert "dashboard_url: is not a valid template" in problem
