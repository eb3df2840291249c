"""Notifiers and the outbox against a real HTTP receiver on 127.0.0.1 (one per test).

Each receiver type's payload is checked as the receiver would read it; then the delivery loop goes
through 429s with Retry-After, 500s, a receiver that refuses connections for a while and a
simulated crash (the outbox closed and reopened mid-outage): everything arrives exactly once, in
order. The last test pushes to a real Prometheus Alertmanager when the Debian package is installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from schemas.notification import Notification, NotifiedAlert
from schemas.routing import ReceiverConfig, RoutingConfig
from sinks.notifiers import (
    Delivery,
    NotifyError,
    OutboxLockedError,
    OutboxStatus,
    SqliteOutbox,
    build_notifier,
)
from sinks.notifiers.http import HttpPoster
from sinks.notifiers.webhook import NOTIFICATION_ID_HEADER, SIGNATURE_HEADER, WebhookNotifier
from streams.alerts.lifecycle import AlertBook
from streams.alerts.model import AlertCandidate, Scope, Severity

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SECRET_PATH = "/services/T0001/B0001/ZZtopSECRETzz"
HMAC_SECRET = "hmac-s3cret"


# --- a real local HTTP receiver -------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = tuple[int, dict[str, str], bytes]


class LocalReceiver:
    """An HTTP server in a thread: records every POST and answers from a script (then 200 ``ok``).

    ``down()`` closes the listening socket (clients get connection refused); ``up()`` listens on the
    same port again."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self.delay = 0.0
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.up()

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self._script.extend(answers)

    def _next_answer(self) -> Answer:
        with self._lock:
            return self._script.popleft() if self._script else (200, {}, b"ok")

    def _record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def up(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                if receiver.delay:
                    time.sleep(receiver.delay)
                status, headers, payload = receiver._next_answer()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    def ids(self) -> list[str]:
        return [r.headers[NOTIFICATION_ID_HEADER.lower()] for r in self.requests]


@pytest.fixture
def http_receiver() -> Iterator[LocalReceiver]:
    server = LocalReceiver()
    try:
        yield server
    finally:
        server.down()


# --- notifications to send ------------------------------------------------------------------------


def alert(key: str, *, status: str = "firing", detail: str = "calls", **overrides: Any) -> NotifiedAlert:
    fields: dict[str, Any] = {
        "fingerprint": hashlib.sha256(key.encode()).hexdigest()[:16],
        "status": status,
        "rule": "activity_drop",
        "scope": "rep",
        "key": key,
        "detail": detail,
        "severity": "warning",
        "labels": {
            "rule": "activity_drop",
            "scope": "rep",
            "key": key,
            "rep_id": key,
            "severity": "warning",
            "team": "emea",
            "rep_name": "Dana Whitfield",
            "detail": detail,
        },
        "summary": "7-day calls fell to 12, 70% below the 28-day baseline of 40",
        "action": "Ask Dana what is blocking her calls this week",
        "value": 12.0,
        "baseline": 40.0,
        "starts_at": T0 - timedelta(days=2),
        "ends_at": T0 - timedelta(hours=1) if status == "resolved" else None,
        "observed_at": T0,
        "dashboard_url": f"http://localhost:3000/d/salespulse-rep?var-rep={key}",
    }
    fields.update(overrides)
    return NotifiedAlert(**fields)


def notification(
    receiver: str, number: int = 1, alerts: tuple[NotifiedAlert, ...] | None = None
) -> Notification:
    chosen = alerts or (alert("rep-007"), alert("rep-012", status="resolved"))
    return Notification(
        id=f"n{number:04d}-{receiver}",
        receiver=receiver,
        group_key=f'0:{{team="t{number}"}}',
        group_labels={"team": f"t{number}"},
        status="firing" if any(a.status == "firing" for a in chosen) else "resolved",
        sequence=number,
        created_at=T0,
        alerts=chosen,
        external_url="http://salespulse.example",
    )


def receiver_config(name: str, kind: str, **settings: Any) -> ReceiverConfig:
    return ReceiverConfig.model_validate({"name": name, kind: settings})


def routing_dict(*receivers: dict[str, Any]) -> dict[str, Any]:
    return {
        "receivers": list(receivers),
        "route": {"receiver": receivers[0]["name"], "group_wait": "0s", "group_interval": "1m"},
        "delivery": {"backoff_initial": "1s", "backoff_max": "30s"},
        "dashboard_url": "http://localhost:3000/d/salespulse-rep?var-rep={rep_id}",
    }


def routing_for(*receivers: dict[str, Any]) -> RoutingConfig:
    return RoutingConfig.model_validate(routing_dict(*receivers))


def drain(
    delivery: Delivery, start: datetime, *, done: Callable[[], bool], max_passes: int = 500
) -> tuple[datetime, int]:
    """Call the timer like a worker would, jumping to the next due time; returns (now, passes)."""
    now = start
    for passes in range(1, max_passes + 1):
        report = delivery.deliver_due(now)
        if done():
            return now, passes
        now = max(now + timedelta(milliseconds=1), report.next_due_at or now + timedelta(seconds=1))
    raise AssertionError("delivery did not finish")


# --- payloads -------------------------------------------------------------------------------------


def test_slack_gets_block_kit_with_a_section_per_alert_and_a_board_button(
    http_receiver: LocalReceiver,
) -> None:
    notifier = build_notifier(receiver_config("chat", "slack", webhook_url=http_receiver.url()))
    notifier.send(notification("chat"))
    (request,) = http_receiver.requests
    assert request.path == SECRET_PATH
    assert request.headers["content-type"].startswith("application/json")
    payload = request.json()
    assert payload["text"] == "1 alert firing for team t1 (1 resolved)"
    blocks = payload["blocks"]
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "1 alert firing for team t1 (1 resolved)", "emoji": True},
    }
    firing, resolved = blocks[1], blocks[2]
    assert firing["type"] == resolved["type"] == "section"
    text = firing["text"]["text"]
    assert firing["text"]["type"] == "mrkdwn"
    assert text.startswith("🟠 *Activity drop (calls) · Dana Whitfield (rep-007)*")
    assert "7-day calls fell to 12, 70% below the 28-day baseline of 40" in text  # what fell, by how much
    assert "12 vs baseline 40 (−70%)" in text  # against what baseline
    assert "since 2026-02-28 09:00 UTC (2d)" in text  # since when
    assert "_Suggested action:_ Ask Dana what is blocking her calls this week" in text
    assert firing["accessory"] == {
        "type": "button",
        "text": {"type": "plain_text", "text": "Open board"},
        "url": "http://localhost:3000/d/salespulse-rep?var-rep=rep-007",
        "action_id": "open-board-0",
    }
    assert resolved["text"]["text"].startswith(
        "✅ *Resolved: Activity drop (calls) · Dana Whitfield (rep-012)*"
    )
    assert "resolved 2026-03-02 08:00 UTC after 1d 23h" in resolved["text"]["text"]
    assert blocks[-1]["type"] == "context"
    assert len(blocks) <= 50


def test_slack_lists_twenty_alerts_at_most_and_counts_the_rest(http_receiver: LocalReceiver) -> None:
    notifier = build_notifier(receiver_config("chat", "slack", webhook_url=http_receiver.url()))
    notifier.send(notification("chat", alerts=tuple(alert(f"rep-{i:03d}") for i in range(60))))
    blocks = http_receiver.requests[0].json()["blocks"]
    assert sum(1 for b in blocks if b["type"] == "section") == 20
    assert blocks[-2] == {"type": "context", "elements": [{"type": "mrkdwn", "text": "…and 40 more alerts"}]}


def test_teams_gets_an_adaptive_card_in_the_attachments_envelope(http_receiver: LocalReceiver) -> None:
    notifier = build_notifier(receiver_config("teams", "teams", webhook_url=http_receiver.url()))
    http_receiver.answer((202, {}, b""))  # what a Workflows webhook answers
    notifier.send(notification("teams"))
    payload = http_receiver.requests[0].json()
    assert payload["type"] == "message"
    (attachment,) = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    assert card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["body"][0]["text"] == "1 alert firing for team t1 (1 resolved)"
    firing = card["body"][1]
    assert firing["type"] == "Container"
    assert firing["style"] == "warning"
    facts = next(item for item in firing["items"] if item["type"] == "FactSet")["facts"]
    assert {fact["title"]: fact["value"] for fact in facts} == {
        "Value": "12",
        "Baseline": "40",
        "Change": "−70%",
        "Since": "2026-02-28 09:00 UTC",
        "Severity": "warning",
    }
    actions = next(item for item in firing["items"] if item["type"] == "ActionSet")["actions"]
    assert actions == [
        {
            "type": "Action.OpenUrl",
            "title": "Open board",
            "url": "http://localhost:3000/d/salespulse-rep?var-rep=rep-007",
        }
    ]
    assert card["body"][2]["style"] == "good"  # the resolved one


def test_mattermost_gets_markdown_text(http_receiver: LocalReceiver) -> None:
    notifier = build_notifier(
        receiver_config(
            "mm", "mattermost", webhook_url=http_receiver.url(), channel="sales", username="salespulse"
        )
    )
    notifier.send(notification("mm"))
    payload = http_receiver.requests[0].json()
    assert payload["channel"] == "sales"
    assert payload["username"] == "salespulse"
    text = payload["text"]
    assert text.startswith("#### 1 alert firing for team t1 (1 resolved)")
    assert "🟠 **Activity drop (calls) · Dana Whitfield (rep-007)**" in text
    assert "Suggested action: Ask Dana what is blocking her calls this week" in text
    assert "[Open board](http://localhost:3000/d/salespulse-rep?var-rep=rep-007)" in text


def test_google_chat_gets_a_cards_v2_card(http_receiver: LocalReceiver) -> None:
    notifier = build_notifier(receiver_config("gchat", "google_chat", webhook_url=http_receiver.url()))
    notifier.send(notification("gchat", alerts=(alert("rep-007", summary="calls <fell> & stayed low"),)))
    payload = http_receiver.requests[0].json()
    assert payload["text"] == "1 alert firing for team t1"
    (card,) = payload["cardsV2"]
    assert card["cardId"] == "salespulse-n0001-gchat"
    assert card["card"]["header"]["title"] == "1 alert firing for team t1"
    (section,) = card["card"]["sections"]
    assert section["header"] == "🟠 Activity drop (calls) · Dana Whitfield (rep-007)"
    paragraph, buttons = section["widgets"]
    assert paragraph["textParagraph"]["text"].startswith(
        "calls &lt;fell&gt; &amp; stayed low<br>12 vs baseline 40"
    )
    assert buttons["buttonList"]["buttons"][0]["onClick"]["openLink"]["url"].endswith("var-rep=rep-007")


def test_generic_webhook_gets_alertmanager_json_with_a_valid_signature(http_receiver: LocalReceiver) -> None:
    config = receiver_config("audit", "webhook", url=http_receiver.url("/hook"), hmac_secret=HMAC_SECRET)
    build_notifier(config).send(notification("audit"))
    (request,) = http_receiver.requests
    expected = "sha256=" + hmac.new(HMAC_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers[SIGNATURE_HEADER.lower()], expected)
    assert request.headers[NOTIFICATION_ID_HEADER.lower()] == "n0001-audit"
    payload = request.json()
    assert {k: v for k, v in payload.items() if k != "alerts"} == {
        "version": "4",
        "groupKey": '0:{team="t1"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "audit",
        "groupLabels": {"team": "t1"},
        "commonLabels": {
            "alertname": "activity_drop",
            "rule": "activity_drop",
            "scope": "rep",
            "severity": "warning",
            "team": "emea",
            "rep_name": "Dana Whitfield",
            "detail": "calls",
        },
        "commonAnnotations": {
            "summary": "7-day calls fell to 12, 70% below the 28-day baseline of 40",
            "action": "Ask Dana what is blocking her calls this week",
            "value": "12",
            "baseline": "40",
            "change": "-70%",
            "observed_at": "2026-03-02T09:00:00.000Z",
        },
        "externalURL": "http://salespulse.example",
    }
    firing, resolved = payload["alerts"]
    assert firing["status"] == "firing"
    assert firing["labels"]["rep_id"] == "rep-007"
    assert firing["startsAt"] == "2026-02-28T09:00:00.000Z"
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"
    assert firing["generatorURL"] == "http://localhost:3000/d/salespulse-rep?var-rep=rep-007"
    assert firing["fingerprint"] == alert("rep-007").fingerprint
    assert firing["annotations"]["dashboard_url"] == firing["generatorURL"]
    assert resolved["status"] == "resolved"
    assert resolved["endsAt"] == "2026-03-02T08:00:00.000Z"


def test_generic_webhook_without_a_secret_is_not_signed(http_receiver: LocalReceiver) -> None:
    build_notifier(receiver_config("audit", "webhook", url=http_receiver.url("/hook"))).send(
        notification("audit")
    )
    assert SIGNATURE_HEADER.lower() not in http_receiver.requests[0].headers


def test_alertmanager_push_posts_v2_alerts(http_receiver: LocalReceiver) -> None:
    config = receiver_config("am", "alertmanager", url=http_receiver.url("/am/"), firing_ttl="2h")
    build_notifier(config).send(notification("am"))
    (request,) = http_receiver.requests
    assert request.path == "/am/api/v2/alerts"
    firing, resolved = request.json()
    assert set(firing) == {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    assert firing["labels"]["alertname"] == "activity_drop"
    assert firing["endsAt"] == "2026-03-02T11:00:00.000Z"  # sent at T0, lapses after the ttl unless refreshed
    assert resolved["endsAt"] == "2026-03-02T08:00:00.000Z"


# --- failures -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after", "status"),
    [
        ((404, {}, f"Cannot POST {SECRET_PATH}".encode()), False, None, 404),
        ((400, {}, b"invalid_payload"), False, None, 400),
        ((410, {}, b"channel_is_archived"), False, None, 410),
        ((302, {"Location": "http://elsewhere.example/"}, b""), False, None, 302),
        ((429, {"Retry-After": "7"}, b"rate_limited"), True, 7.0, 429),
        ((500, {}, b"oops"), True, None, 500),
        ((503, {"Retry-After": "2"}, b""), True, 2.0, 503),
    ],
)
def test_http_failures_are_sorted_and_never_show_the_url(
    http_receiver: LocalReceiver, answer: Answer, retryable: bool, retry_after: float | None, status: int
) -> None:
    http_receiver.answer(answer)
    notifier = build_notifier(receiver_config("chat", "slack", webhook_url=http_receiver.url()))
    with pytest.raises(NotifyError) as caught:
        notifier.send(notification("chat"))
    error = caught.value
    assert (error.retryable, error.retry_after, error.status) == (retryable, retry_after, status)
    assert str(error).startswith(f"receiver chat: HTTP {status}")
    assert "ZZtopSECRETzz" not in str(error)
    assert str(http_receiver.port) not in str(error)
    assert error.__cause__ is None and error.__suppress_context__


def test_retry_after_as_an_http_date(http_receiver: LocalReceiver) -> None:
    http_receiver.answer(
        (429, {"Retry-After": format_datetime(datetime.fromtimestamp(1_000_030, UTC), usegmt=True)}, b"")
    )
    config = receiver_config("chat", "slack", webhook_url=http_receiver.url())
    notifier = build_notifier(config, poster=HttpPoster(clock=lambda: 1_000_000.0))
    with pytest.raises(NotifyError) as caught:
        notifier.send(notification("chat"))
    assert caught.value.retry_after == 30.0


def test_refused_connections_and_timeouts_are_retryable(http_receiver: LocalReceiver) -> None:
    slow = receiver_config("chat", "slack", webhook_url=http_receiver.url())
    http_receiver.delay = 1.0
    with pytest.raises(NotifyError, match="timed out") as caught:
        build_notifier(slow.model_copy(update={"timeout": timedelta(seconds=0.2)})).send(notification("chat"))
    assert caught.value.retryable
    http_receiver.down()
    with pytest.raises(NotifyError, match="cannot connect: ConnectionRefusedError") as caught:
        build_notifier(slow).send(notification("chat"))
    assert caught.value.retryable
    assert "ZZtopSECRETzz" not in str(caught.value)


# --- delivery through the outbox ------------------------------------------------------------------


def test_429_with_retry_after_is_honoured_then_sent_once(
    http_receiver: LocalReceiver, tmp_path: Path
) -> None:
    routing = routing_for({"name": "audit", "webhook": {"url": http_receiver.url("/hook")}})
    http_receiver.answer((429, {"Retry-After": "20"}, b"slow down"))
    with SqliteOutbox(tmp_path / "outbox.sqlite3") as outbox:
        delivery = Delivery.from_routing(outbox, routing)
        assert outbox.enqueue([notification("audit")], T0) == 1
        report = delivery.deliver_due(T0)
        assert report.retrying == ["n0001-audit"]
        assert report.next_due_at is not None and report.next_due_at >= T0 + timedelta(seconds=20)
        assert delivery.deliver_due(T0 + timedelta(seconds=19)).sent == []  # not before Retry-After
        assert delivery.deliver_due(report.next_due_at).sent == ["n0001-audit"]
        assert delivery.deliver_due(report.next_due_at + timedelta(hours=1)).sent == []
        entry = outbox.get("n0001-audit")
        assert entry is not None and entry.status is OutboxStatus.SENT and entry.attempts == 1
        assert entry.last_error is not None and "HTTP 429" in entry.last_error
    assert http_receiver.ids() == ["n0001-audit", "n0001-audit"]


def test_500_twice_then_success_sends_once(http_receiver: LocalReceiver, tmp_path: Path) -> None:
    routing = routing_for({"name": "chat", "slack": {"webhook_url": http_receiver.url()}})
    http_receiver.answer((500, {}, b"oops"), (502, {}, b"bad gateway"))
    with SqliteOutbox(tmp_path / "outbox.sqlite3") as outbox:
        delivery = Delivery.from_routing(outbox, routing)
        outbox.enqueue([notification("chat")], T0)
        end, _ = drain(delivery, T0, done=lambda: outbox.counts()[OutboxStatus.SENT] == 1)
        # Backoff with full jitter: under 1 s, then under 2 s (and Slack's one message a second).
        assert end - T0 <= timedelta(seconds=1 + 2)
        assert delivery.deliver_due(end + timedelta(hours=1)).sent == []
    assert len(http_receiver.requests) == 3
    assert len({r.body for r in http_receiver.requests}) == 1  # the same message each time


def test_a_refused_message_is_recorded_and_the_next_one_goes(
    http_receiver: LocalReceiver, tmp_path: Path
) -> None:
    routing = routing_for({"name": "audit", "webhook": {"url": http_receiver.url("/hook")}})
    http_receiver.answer((404, {}, b"no_service"))
    with SqliteOutbox(tmp_path / "outbox.sqlite3") as outbox:
        delivery = Delivery.from_routing(outbox, routing)
        outbox.enqueue([notification("audit", 1), notification("audit", 2)], T0)
        report = delivery.deliver_due(T0)
        assert (report.failed, report.sent) == (["n0001-audit"], ["n0002-audit"])
        failed = outbox.get("n0001-audit")
        assert failed is not None and failed.status is OutboxStatus.FAILED
        assert failed.last_error == "receiver audit: HTTP 404 Not Found: no_service"
        # Fixed the receiver: put it back in line.
        assert outbox.retry_failed(T0 + timedelta(minutes=1)) == 1
        assert delivery.deliver_due(T0 + timedelta(minutes=1)).sent == ["n0001-audit"]


def test_slack_is_held_to_one_message_per_second(http_receiver: LocalReceiver, tmp_path: Path) -> None:
    routing = routing_for({"name": "chat", "slack": {"webhook_url": http_receiver.url()}})
    with SqliteOutbox(tmp_path / "outbox.sqlite3") as outbox:
        delivery = Delivery.from_routing(outbox, routing)
        outbox.enqueue([notification("chat", n) for n in range(1, 6)], T0)
        assert len(delivery.deliver_due(T0).sent) == 1
        report = delivery.deliver_due(T0 + timedelta(milliseconds=500))
        assert report.sent == []
        assert report.next_due_at == T0 + timedelta(seconds=1)
        end, _ = drain(delivery, T0 + timedelta(seconds=1), done=lambda: not outbox.receivers_with_pending())
        assert end == T0 + timedelta(seconds=4)  # five messages: at 0, 1, 2, 3 and 4 s
    headlines = [r.json()["text"] for r in http_receiver.requests]
    assert headlines == [f"1 alert firing for team t{n} (1 resolved)" for n in range(1, 6)]


# A worker in miniature: enqueue, then deliver once a second; killed with SIGKILL by the test.
CRASHING_WORKER = """
import json, sys, time
from datetime import datetime, timedelta
from schemas.notification import Notification
from schemas.routing import RoutingConfig
from sinks.notifiers import Delivery, SqliteOutbox

spec = json.loads(open(sys.argv[1], encoding="utf-8").read())
now = datetime.fromisoformat(spec["start"])
outbox = SqliteOutbox(spec["path"])
outbox.enqueue([Notification.model_validate(n) for n in spec["planned"]], now)
delivery = Delivery.from_routing(outbox, RoutingConfig.model_validate(spec["routing"]))
for _ in range(spec["passes"]):
    delivery.deliver_due(now)
    now += timedelta(seconds=1)
print(now.isoformat(), flush=True)
time.sleep(600)
"""


def test_an_outage_and_a_kill_9_lose_nothing_and_send_nothing_twice(tmp_path: Path) -> None:
    chat, audit = LocalReceiver(), LocalReceiver()
    try:
        routing = routing_dict(
            {"name": "audit", "webhook": {"url": audit.url("/hook")}},
            {"name": "chat", "slack": {"webhook_url": chat.url()}},
        )
        planned = [notification(name, n) for n in range(1, 11) for name in ("audit", "chat")]
        path = tmp_path / "home" / "outbox.sqlite3"
        spec = tmp_path / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "routing": routing,
                    "path": str(path),
                    "start": T0.isoformat(),
                    "passes": 6,
                    "planned": [n.model_dump(mode="json") for n in planned],
                }
            ),
            encoding="utf-8",
        )
        audit.down()  # the webhook endpoint is down from the start
        worker = subprocess.Popen(
            [sys.executable, "-c", CRASHING_WORKER, str(spec)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert worker.stdout is not None
            now = datetime.fromisoformat(worker.stdout.readline().strip())
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        assert len(chat.requests) == 6  # chat carried on during the other's outage, one message a second

        with SqliteOutbox(path) as restarted:
            head = restarted.get("n0001-audit")
            assert head is not None and head.attempts >= 2  # retried with backoff meanwhile
            assert "ConnectionRefusedError" in (head.last_error or "")
            assert restarted.counts()[OutboxStatus.SENT] == 6
            assert restarted.enqueue(planned, now) == 0  # the restarted worker plans the same ids again
            delivery = Delivery.from_routing(restarted, RoutingConfig.model_validate(routing))
            audit.up()
            drain(delivery, now + timedelta(seconds=60), done=lambda: not restarted.receivers_with_pending())
            assert restarted.counts() == {
                OutboxStatus.PENDING: 0,
                OutboxStatus.SENT: 20,
                OutboxStatus.FAILED: 0,
            }
    finally:
        chat.down()
        audit.down()
    assert audit.ids() == [f"n{n:04d}-audit" for n in range(1, 11)]  # each once, in order
    chat_headlines = [r.json()["text"] for r in chat.requests]
    assert chat_headlines == [f"1 alert firing for team t{n} (1 resolved)" for n in range(1, 11)]


def test_one_process_per_outbox_and_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    with SqliteOutbox(path) as outbox:
        outbox.enqueue([notification("chat", 1), notification("chat", 2)], T0)
        outbox.mark_sent("n0001-chat", T0 + timedelta(seconds=1))
        with pytest.raises(OutboxLockedError, match="in use by pid"):
            SqliteOutbox(path)
    with SqliteOutbox(path) as reopened:
        first, second = reopened.get("n0001-chat"), reopened.get("n0002-chat")
        assert first is not None and first.status is OutboxStatus.SENT
        assert first.settled_at == T0 + timedelta(seconds=1)
        assert second is not None and second.status is OutboxStatus.PENDING
        assert second.notification == notification("chat", 2)  # the whole message, unchanged
        assert reopened.head("chat") == second
        assert [e.id for e in reopened.entries()] == ["n0002-chat", "n0001-chat"]
        assert reopened.prune(T0 + timedelta(days=1)) == 1
        assert reopened.get("n0001-chat") is None


def test_the_async_loop_delivers_until_stopped(http_receiver: LocalReceiver, tmp_path: Path) -> None:
    routing = routing_for({"name": "audit", "webhook": {"url": http_receiver.url("/hook")}})
    http_receiver.answer((503, {"Retry-After": "0.2"}, b""))

    async def main(outbox: SqliteOutbox) -> None:
        delivery = Delivery.from_routing(outbox, routing)
        stop = asyncio.Event()
        task = asyncio.create_task(delivery.run(stop, poll_interval=0.05))
        outbox.enqueue([notification("audit", 1), notification("audit", 2)], datetime.now(UTC))
        for _ in range(200):
            if outbox.counts()[OutboxStatus.SENT] == 2:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, timeout=5)

    with SqliteOutbox(tmp_path / "outbox.sqlite3") as outbox:
        asyncio.run(main(outbox))
        assert outbox.counts()[OutboxStatus.SENT] == 2
    assert http_receiver.ids() == ["n0001-audit", "n0001-audit", "n0002-audit"]


# --- from the alert book to the receiver ----------------------------------------------------------


def candidate(rep: str, at: datetime, team: str = "emea") -> AlertCandidate:
    return AlertCandidate(
        rule="activity_drop",
        scope=Scope.REP,
        key=rep,
        severity=Severity.WARNING,
        value=10,
        baseline=40,
        summary="7-day activity fell 75% below the 28-day baseline",
        action="Review the week's plan together",
        observed_at=at,
        labels={"team": team, "rep_name": rep.title()},
    )


def test_fifty_alerts_make_one_message_and_a_crash_replay_sends_nothing_twice(
    http_receiver: LocalReceiver, tmp_path: Path
) -> None:
    routing = RoutingConfig.model_validate(
        {
            "receivers": [{"name": "chat", "slack": {"webhook_url": http_receiver.url()}}],
            "route": {"receiver": "chat", "group_wait": "30s", "group_interval": "5m"},
            "dashboard_url": "http://localhost:3000/d/salespulse-rep?var-rep={rep_id}",
        }
    )
    reps = [f"rep-{i:02d}" for i in range(50)]
    path = tmp_path / "outbox.sqlite3"
    book = AlertBook(routing)
    with SqliteOutbox(path) as outbox:
        delivery = Delivery.from_routing(outbox, routing)

        def tick(now: datetime, active: list[str]) -> None:
            book.observe([candidate(rep, now) for rep in active], now, {"activity_drop"})
            outbox.enqueue(book.plan_notifications(now), now)
            delivery.deliver_due(now)

        for seconds in range(0, 300, 10):
            tick(T0 + timedelta(seconds=seconds), reps)
        assert len(http_receiver.requests) == 1
        first = http_receiver.requests[0].json()
        assert first["text"] == "50 alerts firing for team emea"

        saved = json.loads(json.dumps(book.to_dict()))
        tick(T0 + timedelta(minutes=6), reps[:49])  # rep-49 recovered: planned, enqueued, sent...
        assert len(http_receiver.requests) == 2
    # ...and the worker dies before persisting the book. The restart replans from the saved state.
    book = AlertBook.from_dict(saved, routing)
    with SqliteOutbox(path) as outbox:
        delivery = Delivery.from_routing(outbox, routing)
        now = T0 + timedelta(minutes=6, seconds=10)
        book.observe([candidate(rep, now) for rep in reps[:49]], now, {"activity_drop"})
        replanned = book.plan_notifications(now)
        assert len(replanned) == 1
        assert outbox.enqueue(replanned, now) == 0  # the same id: already sent
        delivery.deliver_due(now + timedelta(minutes=1))
    assert len(http_receiver.requests) == 2
    second = http_receiver.requests[1].json()
    assert second["text"] == "49 alerts firing for team emea (1 resolved)"
    assert "Resolved: Activity drop · Rep-49 (rep-49)" in second["blocks"][1]["text"]["text"]


# --- a real Alertmanager --------------------------------------------------------------------------

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting")


@pytest.mark.skipif(
    ALERTMANAGER is None,
    reason="needs the prometheus-alertmanager binary (Debian: apt-get install prometheus-alertmanager)",
)
def test_pushes_to_a_real_alertmanager_which_speaks_our_webhook_format(
    http_receiver: LocalReceiver, tmp_path: Path
) -> None:
    assert ALERTMANAGER is not None
    port = free_port()
    config = tmp_path / "am.yml"
    config.write_text(
        "route: {receiver: hook, group_by: [alertname, team], group_wait: 0s, group_interval: 1s, "
        "repeat_interval: 1h}\n"
        "receivers:\n"
        "  - name: hook\n"
        f"    webhook_configs: [{{url: '{http_receiver.url('/from-am')}', send_resolved: true}}]\n",
        encoding="utf-8",
    )
    log = (tmp_path / "am.log").open("wb")
    process = subprocess.Popen(
        [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: get_json(base + "/api/v2/status"))
        notifier = build_notifier(receiver_config("am", "alertmanager", url=base))
        firing = alert("rep-007", starts_at=datetime.now(UTC) - timedelta(minutes=5))
        notifier.send(
            notification("am", alerts=(firing,)).model_copy(update={"created_at": datetime.now(UTC)})
        )

        (stored,) = wait_for(lambda: get_json(base + "/api/v2/alerts"))
        assert stored["labels"]["alertname"] == "activity_drop"
        assert stored["labels"]["rep_id"] == "rep-007"
        assert stored["annotations"]["summary"] == firing.summary
        assert stored["status"]["state"] == "active"

        # What Alertmanager itself sends to a webhook has the shape our generic webhook sends.
        from_am = wait_for(lambda: [r.json() for r in http_receiver.requests if r.path == "/from-am"])[0]
        ours = WebhookNotifier(receiver_config("x", "webhook", url="http://unused.example"))
        mine = ours.render(notification("x", alerts=(firing,)))
        assert set(mine) == set(from_am)
        assert set(mine["alerts"][0]) == set(from_am["alerts"][0])
        assert from_am["version"] == mine["version"] == "4"
        assert from_am["alerts"][0]["labels"] == mine["alerts"][0]["labels"]
        assert from_am["status"] == "firing"

        resolved = firing.model_copy(update={"status": "resolved", "ends_at": datetime.now(UTC)})
        notifier.send(notification("am", 2, alerts=(resolved,)))
        wait_for(lambda: not get_json(base + "/api/v2/alerts?active=true&silenced=true&inhibited=true"))
        statuses = wait_for(
            lambda: [r.json()["status"] for r in http_receiver.requests if r.json()["status"] == "resolved"]
        )
        assert statuses == ["resolved"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert Counter(r.path for r in http_receiver.requests)["/from-am"] >= 2
