"""Security through the CLI as a user runs it: hostile rep and team names through `reps load`,
`replay`, `kpis`, the alerter and `alerts list` (stored and shown verbatim, never run as SQL), and
secrets (a receiver's webhook URL, an HMAC secret, the ClickHouse password) never in any output,
log or metric."""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import signal
import socket
import subprocess
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from .conftest import SALESPULSE, Cli, CliResult, WebhookReceiver, clickhouse_of

pytestmark = pytest.mark.e2e

HOSTILE_REP = "'; DROP TABLE events; --"
HOSTILE_TEAM = "Robert'); DROP TABLE reps;--"
HOSTILE_NAME = 'Zoë "{db}" %(since)s \\ ☃'
PLAIN_REP, PLAIN_TEAM = "plain-1", "Plain Team"
SECRET_PATH = "T0SECRET/B0SECRET/XyZsecretToken42"
HMAC_SECRET = "hmac-Very-Secret-42"
DB_PASSWORD = "Pa55-db-Secret-42"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, result.describe()
    return result


def write_inputs(folder: Path) -> tuple[Path, Path, int]:
    """Two reps who were busy every day until a week ago, then went silent (a no_activity alert
    each); one has hostile names."""
    reps = folder / "reps.csv"
    with reps.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rep_id", "name", "team", "territory"])
        writer.writerow([HOSTILE_REP, HOSTILE_NAME, HOSTILE_TEAM, HOSTILE_TEAM])
        writer.writerow([PLAIN_REP, "Plain Rep", PLAIN_TEAM, "North"])
    today = datetime.now(UTC).replace(hour=10, minute=0, second=0, microsecond=0)
    days = range(7, 35)
    events = folder / "events.jsonl"
    lines = [
        orjson.dumps({
            "event_id": f"{rep}/{day}", "type": "call", "rep_id": rep,
            "occurred_at": (today - timedelta(days=day)).isoformat(),
        })
        for rep in (HOSTILE_REP, PLAIN_REP)
        for day in days
    ]  # fmt: skip
    events.write_bytes(b"\n".join(lines) + b"\n")
    return reps, events, len(days)


def routing_file(folder: Path, hook: WebhookReceiver) -> Path:
    """The hostile team's alerts go to the local hook (signed); the plain team's to a Slack-like
    URL holding a secret token, on a port where nothing listens (its delivery fails)."""
    path = folder / "routing.yaml"
    path.write_text(
        "receivers:\n"
        "  - name: ops\n"
        f"    webhook: {{url: '{hook.url}', hmac_secret: '{HMAC_SECRET}'}}\n"
        "  - name: plain-slack\n"
        f"    slack: {{webhook_url: 'http://127.0.0.1:{closed_port()}/services/{SECRET_PATH}'}}\n"
        "route:\n"
        "  receiver: ops\n"
        "  group_by: [team]\n"
        "  group_wait: 0s\n"
        "  routes:\n"
        f"    - matchers: ['team=\"{PLAIN_TEAM}\"']\n"
        "      receiver: plain-slack\n",
        encoding="utf-8",
    )
    return path


def logs_of(cli: Cli) -> str:
    return "\n".join(
        path.read_text(encoding="utf-8", errors="replace") for path in (cli.home / "logs").glob("*.log")
    )


def test_hostile_names_end_to_end_and_no_secret_anywhere(
    cli: Cli, tmp_path: Path, hook: WebhookReceiver
) -> None:
    reps, events, per_rep = write_inputs(tmp_path)
    outputs: list[str] = []
    outputs.append(ok(cli.run("reps", "load", str(reps))).output)
    outputs.append(ok(cli.run("replay", str(events))).output)

    kpis = ok(cli.run("kpis", "--by", "team", "--format", "json"))
    outputs.append(kpis.output)
    by_team = {row["team"]: row["calls"] for row in json.loads(kpis.stdout)}
    assert by_team == {HOSTILE_TEAM: per_rep, PLAIN_TEAM: per_rep}
    by_rep = ok(cli.run("kpis", "--by", "rep", "--format", "json"))
    assert {row["rep"] for row in json.loads(by_rep.stdout)} == {HOSTILE_REP, PLAIN_REP}
    outputs.append(ok(cli.run("kpis", "--by", "team")).output)  # the table, rich markup and all

    env = {
        "SALESPULSE_ALERT_ROUTING_FILE": str(routing_file(tmp_path, hook)),
        "SALESPULSE_ALERTER_METRICS_PORT": "0",
    }
    outputs.append(ok(cli.run_with(env, "alerter", "--once")).output)
    listed = ok(cli.run_with(env, "alerts", "list", "--format", "json"))
    outputs.append(listed.output)
    silent = {
        (a["key"], a["labels"].get("team")) for a in json.loads(listed.stdout) if a["rule"] == "no_activity"
    }
    assert silent == {(HOSTILE_REP, HOSTILE_TEAM), (PLAIN_REP, PLAIN_TEAM)}
    outputs.append(ok(cli.run_with(env, "alerts", "list")).output)

    # The hook got the hostile names verbatim, signed with the secret (which it never saw sent).
    assert len(hook.received) == 1
    body, signature = hook.received[0]
    assert signature == "sha256=" + hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    message = json.loads(body)
    assert {(a["labels"]["rep_id"], a["labels"]["team"]) for a in message["alerts"]} == {
        (HOSTILE_REP, HOSTILE_TEAM)
    }
    assert HMAC_SECRET.encode() not in body

    # The alerter as a service: its /metrics has receiver names, never their URLs.
    port = closed_port()
    with (tmp_path / "alerter.out").open("wb") as out, (tmp_path / "alerter.err").open("wb") as err:
        service = subprocess.Popen(
            [str(SALESPULSE), "alerter"],
            cwd=cli.cwd,
            env=cli.env() | env | {"SALESPULSE_ALERTER_METRICS_PORT": str(port)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        metrics = _scrape_when_up(f"http://127.0.0.1:{port}/metrics", service)
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(30)
    assert 'receiver="plain-slack"' in metrics
    outputs += [metrics, (tmp_path / "alerter.out").read_text(), (tmp_path / "alerter.err").read_text()]

    everything = "\n".join([*outputs, logs_of(cli)])
    assert "plain-slack" in everything  # its failed delivery is reported, by name
    for secret in (SECRET_PATH, "XyZsecretToken42", HMAC_SECRET):
        assert secret not in everything, f"{secret!r} leaked"
    with clickhouse_of(cli.home) as ch:
        tables = {str(name) for (name,) in ch.rows("SHOW TABLES FROM {db}")}
        assert {"events", "reps", "rep_daily_activity", "alerts"} <= tables
        assert ch.scalar("SELECT count() FROM {db}.events FINAL") == 2 * per_rep


def _scrape_when_up(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return str(response.read().decode("utf-8"))
        except OSError:
            assert process.poll() is None, "the alerter exited"
            assert time.monotonic() < deadline, "no alerter /metrics"
            time.sleep(0.2)


@pytest.mark.parametrize(
    "command",
    [
        ("kpis",),
        ("db", "migrate"),
        ("alerts", "list"),
        ("dlq", "list"),
        ("reps", "load", "reps.csv"),
        ("worker",),
    ],
)
def test_a_refused_clickhouse_password_never_shows(
    cli: Cli, tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "reps.csv").write_text("rep_id,name,team,territory\nr1,A,B,C\n", encoding="utf-8")
    # The embedded ClickHouse's default user has no password, so this one is refused.
    result = cli.run_with({"SALESPULSE_CLICKHOUSE_PASSWORD": DB_PASSWORD}, *command, timeout=90)
    assert result.returncode != 0, result.describe()
    assert "SALESPULSE_CLICKHOUSE_PASSWORD" in result.output, result.describe()
    assert DB_PASSWORD not in result.output + logs_of(cli)
