"""Alerts end to end through the CLI: demo data, `alerter --once` sending grouped messages to a
local webhook, `alerts list`, a second tick sending nothing twice, and a silence."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli

pytestmark = pytest.mark.e2e


class Hook:
    """A local webhook receiver that records every JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook()
    try:
        yield receiver
    finally:
        receiver.close()


def test_alerter_sends_grouped_alerts_once_and_lists_them(cli: Cli, tmp_path: Path, hook: Hook) -> None:
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
