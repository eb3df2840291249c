"""Alerts end to end through the CLI: demo data, `alerter --once` sending grouped messages to a
local webhook, `alerts list`, a second tick sending nothing twice, and a silence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Cli, WebhookReceiver

pytestmark = pytest.mark.e2e


def test_alerter_sends_grouped_alerts_once_and_lists_them(
    cli: Cli, tmp_path: Path, hook: WebhookReceiver
) -> None:
    demo = cli.run("demo", "--duration", "20", "--reps", "12", "--days", "42", "--rate", "2000", timeout=120)
    assert demo.returncode == 0, demo.describe()
    routing = tmp_path / "routing.yaml"
    routing.write_text(
        "receivers:\n"
        f"  - name: ops\n    webhook:\n      url: {hook.url}\n"
        "route:\n  receiver: ops\n  group_by: [team]\n  group_wait: 0s\n  group_interval: 5m\n"
    )
    env = {"SALESPULSE_ALERT_ROUTING_FILE": str(routing), "SALESPULSE_CLICKHOUSE_DATABASE": "salespulse_demo"}

    first = cli.run_with(env, "alerter", "--once")
    assert first.returncode == 0, first.describe()
    listed = cli.run_with(env, "alerts", "list", "--format", "json")
    assert listed.returncode == 0, listed.describe()
    alerts = json.loads(listed.stdout)
    dropped = {a["key"] for a in alerts if a["rule"] == "activity_drop" and a["scope"] == "rep"}
    assert dropped, alerts  # the demo's fading reps
    # One webhook message per team with firing alerts, Alertmanager's webhook format.
    teams = {a["labels"].get("team") for a in alerts if a["scope"] == "rep"}
    assert 1 <= len(hook.bodies) <= len(teams) + 2  # + team and territory scopes grouped apart
    assert all(body["status"] == "firing" and body["alerts"] for body in hook.bodies)
    sent = len(hook.bodies)

    again = cli.run_with(env, "alerter", "--once")
    assert again.returncode == 0, again.describe()
    assert len(hook.bodies) == sent  # nothing new, nothing sent twice

    rep = sorted(dropped)[0]
    silenced = cli.run_with(env, "alerts", "silence", f"rep_id={rep}", "--for", "1h", "--comment", "on leave")
    assert silenced.returncode == 0, silenced.describe()
    assert "silence " in silenced.stdout
    bad = cli.run_with(env, "alerts", "silence", 'team=~".*"')
    assert bad.returncode == 2 and "silence everything" in bad.output, bad.describe()
