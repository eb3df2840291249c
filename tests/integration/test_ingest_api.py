"""The ingest API over real HTTP (httpx) against the real service, the real embedded broker, a real
worker and the real ClickHouse: what is accepted is stored exactly once; what is refused is refused
with the right status; a broker that is down or frozen is a 503 and never a silent drop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from ingest_service import bearer, create_token, revoke_token, running_service, wait_for
from pydantic import SecretStr
from reliability import RestartableBroker, free_port, query, settle
from test_pipeline import isolated_pipeline, start_worker

from schemas.ingest import TokenScope
from schemas.settings import Settings
from streams.ingest.webhooks import sign_generic, sign_hubspot_v3
from streams.kafka import ensure_topics
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration

HUBSPOT_DIR = Path(__file__).resolve().parents[2] / "deploy" / "webhooks"
NOW = datetime.now(UTC).replace(microsecond=0)


def calls(prefix: str, count: int, reps: int = 5) -> list[dict[str, object]]:
    return [
        {
            "event_id": f"{prefix}-{i}",
            "type": "call",
            "rep_id": f"rep-{i % reps}",
            "occurred_at": (NOW - timedelta(minutes=i)).isoformat(),
            "outcome": "connected" if i % 2 else "no_answer",
            "duration_s": 30 + i,
        }
        for i in range(count)
    ]


def stored_calls(settings: Settings, prefix: str) -> tuple[int, int]:
    """(rows in events FINAL, distinct event ids) of the events whose id starts with ``prefix``."""
    ((rows, distinct),) = query(
        settings,
        "SELECT count(), uniqExact(event_id) FROM {db}.events FINAL WHERE startsWith(event_id, %(p)s)",
        {"p": prefix + "-"},
    )
    return int(rows), int(distinct)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def pipeline(runtime: EmbeddedRuntime) -> Iterator[tuple[Settings, ManagedProcess]]:
    with isolated_pipeline(runtime) as settings:
        worker = start_worker(runtime, settings, "worker-ingest")
        try:
            yield settings, worker
        finally:
            worker.stop()


def test_a_dialer_posts_calls_with_a_token_and_they_are_stored_exactly_once(
    pipeline: tuple[Settings, ManagedProcess],
) -> None:
    settings, worker = pipeline
    token = create_token(settings, TokenScope.EVENTS_WRITE, name="dialer")
    batch = calls("dial", 600)
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").status_code == 200
        spec = http.get("/openapi.json").json()
        assert spec["openapi"] == "3.1.0"
        assert {"/v1/events", "/v1/webhooks/{source}", "/v1/checkins", "/healthz", "/readyz"} <= spec[
            "paths"
        ].keys()
        assert set(spec["paths"]["/v1/events"]["post"]["responses"]) >= {
            "200",
            "207",
            "401",
            "413",
            "429",
            "503",
        }
        assert "CallEvent" in spec["components"]["schemas"]
        assert "/v1/events" in http.get("/docs").text
        first = http.post("/v1/events", json=batch[:400], headers=bearer(token))
        assert first.status_code == 200, first.text
        assert first.json()["accepted"] == 400 and first.json()["rejected"] == 0
        assert [r["index"] for r in first.json()["results"]] == list(range(400))
        ndjson = b"\n".join(orjson.dumps(e) for e in batch[400:]) + b"\n"
        second = http.post(
            "/v1/events", content=ndjson, headers=bearer(token) | {"Content-Type": "application/x-ndjson"}
        )
        assert second.status_code == 200 and second.json()["accepted"] == 200
        # A client that did not see the answer retries the same events: harmless.
        retry = http.post("/v1/events", json=batch[:400], headers=bearer(token))
        assert retry.status_code == 200
        single = http.post("/v1/events", json=batch[0], headers=bearer(token))
        assert single.json()["results"] == [
            {"index": 0, "status": "accepted", "event_id": "dial-0", "type": "call"}
        ]
        metrics = http.get("/metrics").text
    settle(settings, worker)
    assert stored_calls(settings, "dial") == (600, 600)
    ((daily,),) = query(
        settings,
        "SELECT sum(events) FROM {db}.rep_daily_activity FINAL "
        "WHERE type = 'call' AND startsWith(rep_id, 'rep-')",
    )
    assert daily == 600
    assert 'salespulse_ingest_events_accepted_total{endpoint="events"} 1001.0' in metrics
    assert 'salespulse_ingest_requests_total{endpoint="events",status="200"} 4.0' in metrics
    assert "salespulse_ingest_request_seconds_bucket" in metrics
    # Published grouped by rep in the batch wire format: one message per rep and request, not per event.
    messages = asyncio.run(_messages(settings, settings.topics.activities))
    dial = [
        (key, value) for key, value in messages if any(str(e["event_id"]).startswith("dial-") for e in value)
    ]
    assert sum(len(value) for _, value in dial) == 1001
    assert len(dial) <= 4 * 5 + 5  # 4 requests x 5 reps (a single-event request is one message)
    assert all(isinstance(value, list) and {e["rep_id"] for e in value} == {key} for key, value in dial)


async def _messages(settings: Settings, topic: str) -> list[tuple[str, list[dict[str, object]]]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[tuple[str, list[dict[str, object]]]] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch:
                return found
            for records in batch.values():
                for record in records:
                    value = orjson.loads(record.value)
                    found.append((record.key.decode(), value if isinstance(value, list) else [value]))
    finally:
        await consumer.stop()


def test_refusals_401_403_413_415_and_422_per_event(pipeline: tuple[Settings, ManagedProcess]) -> None:
    base, worker = pipeline
    settings = base.model_copy(update={"ingest_max_body_bytes": 20_000, "ingest_max_events": 50})
    writer = create_token(settings, TokenScope.EVENTS_WRITE, name="writer")
    phone = create_token(settings, TokenScope.CHECKIN, rep_id="rep-1", name="phone")
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        one = calls("ref", 1)
        assert http.post("/v1/events", json=one).status_code == 401
        assert http.post("/v1/events", json=one).headers["WWW-Authenticate"].startswith("Bearer")
        assert (
            http.post("/v1/events", json=one, headers=bearer("sp_0123456789abcdef_" + "x" * 43)).status_code
            == 401
        )
        assert http.post("/v1/events", json=one, headers={"Authorization": "Basic abc"}).status_code == 401
        assert http.post("/v1/events", json=one, headers=bearer(phone)).status_code == 403
        plain = http.post(
            "/v1/events", content=b"hello", headers=bearer(writer) | {"Content-Type": "text/plain"}
        )
        assert plain.status_code == 415
        big = http.post("/v1/events", json=calls("big", 40) * 5, headers=bearer(writer))  # ~ 30 kB
        assert big.status_code == 413 and "limit" in big.json()["error"]
        many = http.post("/v1/events", json=[{"x": i} for i in range(51)], headers=bearer(writer))
        assert many.status_code == 413 and "51 events" in many.json()["error"]
        broken = http.post(
            "/v1/events", content=b"[{", headers=bearer(writer) | {"Content-Type": "application/json"}
        )
        assert broken.status_code == 400
        bad = [
            {"event_id": "ref-bad-1", "type": "call", "rep_id": "rep-1", "occurred_at": "yesterday"},
            {"type": "?"},
        ]
        rejected = http.post("/v1/events", json=bad, headers=bearer(writer))
        assert rejected.status_code == 422
        assert [(r["index"], r["status"], r["reason"]) for r in rejected.json()["results"]] == [
            (0, "rejected", "invalid"),
            (1, "rejected", "unknown_type"),
        ]
        mixed = http.post("/v1/events", json=[*calls("ref", 2), bad[0]], headers=bearer(writer))
        assert mixed.status_code == 207
        assert [r["status"] for r in mixed.json()["results"]] == ["accepted", "accepted", "rejected"]
        # A revoked token stops working once the service re-reads the tokens.
        revoke_token(settings, writer)
        wait_for(
            lambda: http.post("/v1/events", json=one, headers=bearer(writer)).status_code == 401,
            timeout=settings.ingest_token_refresh_s + 10,
            what="the revocation to apply",
        )
    settle(settings, worker)
    assert stored_calls(settings, "ref") == (2, 2)
    letters = query(
        settings,
        "SELECT reason, batch_index, event_id FROM {db}.dead_letters "
        "WHERE source = 'http' AND event_id = 'ref-bad-1' ORDER BY rejected_at",
    )
    assert [(reason, index) for reason, index, _ in letters] == [("invalid", 0), ("invalid", 2)]
    ((not_json,),) = query(
        settings, "SELECT count() FROM {db}.dead_letters WHERE source = 'http' AND reason = 'not_json'"
    )
    assert not_json >= 1


def test_429_with_retry_after_past_a_tokens_rate(pipeline: tuple[Settings, ManagedProcess]) -> None:
    base, _ = pipeline
    settings = base.model_copy(update={"ingest_rate_per_s": 0.5, "ingest_rate_burst": 2})
    token = create_token(settings, TokenScope.EVENTS_WRITE, name="greedy")
    other = create_token(settings, TokenScope.EVENTS_WRITE, name="polite")
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        answers = [http.post("/v1/events", json=calls("rate", 1), headers=bearer(token)) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert int(answers[2].headers["Retry-After"]) == 2
        assert http.post("/v1/events", json=calls("rate", 1), headers=bearer(other)).status_code == 200


def test_503_with_retry_after_when_the_broker_is_unreachable(
    pipeline: tuple[Settings, ManagedProcess],
) -> None:
    base, _ = pipeline
    settings = base.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{free_port()}", "ingest_publish_timeout_s": 3}
    )
    token = create_token(settings, TokenScope.EVENTS_WRITE, name="nobroker")
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        answer = http.post("/v1/events", json=calls("down", 3), headers=bearer(token))
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
        assert http.get("/readyz").status_code == 503
        assert http.get("/healthz").status_code == 200


@pytest.fixture
def own_broker(runtime: EmbeddedRuntime) -> Iterator[RestartableBroker]:
    broker = RestartableBroker(runtime.log_dir)
    broker.start()
    try:
        yield broker
    finally:
        if broker.process is not None and broker.process.is_running():
            os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()


def test_a_full_buffer_and_a_frozen_broker_are_503_and_a_restart_loses_no_acknowledged_event(
    runtime: EmbeddedRuntime, own_broker: RestartableBroker
) -> None:
    """Batches posted one after another; the broker is frozen while one is in flight (it cannot be
    acknowledged), a second request finds the producer's buffer full (503 at once), then the broker
    is killed and restarted. The client retries what got 503; every acknowledged event is stored once.

    The embedded broker is memory-only, so its restart follows the documented procedure (README,
    Reliability): topics re-created, a worker in a fresh consumer group."""
    overrides = {
        "kafka_bootstrap": own_broker.bootstrap,
        "ingest_publish_timeout_s": 4.0,
        "ingest_max_pending_events": 150,
    }
    env = {"SALESPULSE_KAFKA_BOOTSTRAP": own_broker.bootstrap}
    batches = [calls(f"rst{b}", 100) for b in range(6)]
    with isolated_pipeline(runtime, **overrides) as settings:
        token = create_token(settings, TokenScope.EVENTS_WRITE, name="restart")
        worker = start_worker(runtime, settings, "worker-ingest-restart", env)
        with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
            post = lambda events: http.post("/v1/events", json=events, headers=bearer(token))  # noqa: E731
            for batch in batches[:3]:
                assert post(batch).status_code == 200
            settle(settings, worker)
            assert all(stored_calls(settings, f"rst{b}") == (100, 100) for b in range(3))

            assert own_broker.process is not None
            os.kill(own_broker.process.pid, signal.SIGSTOP)  # frozen: connected, never answering
            in_flight: list[httpx.Response] = []
            sender = threading.Thread(target=lambda: in_flight.append(post(batches[3])))
            sender.start()
            wait_for(
                lambda: service.context.pending_events == 100, timeout=10, what="the batch to be in flight"
            )
            busy = post(batches[4])
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "1"
            own_broker.kill()  # during the batch
            sender.join(timeout=30)
            assert in_flight[0].status_code == 503 and int(in_flight[0].headers["Retry-After"]) > 0
            worker.stop()

            own_broker.start()
            asyncio.run(ensure_topics(settings))
            fresh = settings.model_copy(update={"consumer_group": settings.consumer_group + "-after"})
            worker = start_worker(runtime, fresh, "worker-ingest-after-restart", env)
            try:
                for batch in batches[3:]:
                    deadline = time.monotonic() + 60
                    while (answer := post(batch)).status_code == 503:
                        assert time.monotonic() < deadline, answer.text
                        time.sleep(min(float(answer.headers["Retry-After"]), 1.0))
                    assert answer.status_code == 200, answer.text
                settle(fresh, worker)
            finally:
                worker.stop()
        for b in range(6):
            assert stored_calls(settings, f"rst{b}") == (100, 100), b


# ------------------------------------------------------------------------------------------ webhooks


def hubspot_items(*kinds: tuple[int, str, str | None]) -> list[dict[str, object]]:
    at = int((NOW - timedelta(hours=1)).timestamp() * 1000)
    return [
        {
            "eventId": event_id,
            "subscriptionId": 1,
            "portalId": 4242,
            "appId": 7,
            "occurredAt": at + event_id,
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": 9001,
            "changeSource": "CRM_UI",
            "sourceId": "userId:77",
            **({"propertyName": "dealstage", "propertyValue": stage} if stage else {}),
        }
        for event_id, kind, stage in kinds
    ]


def test_a_signed_hubspot_webhook_becomes_deal_events_and_bad_signatures_are_refused(
    pipeline: tuple[Settings, ManagedProcess],
) -> None:
    base, worker = pipeline
    secret = "hubspot-client-secret"
    settings = base.model_copy(
        update={
            "webhook_dir": HUBSPOT_DIR,
            "webhook_secrets": {"hubspot": SecretStr(secret), "dialer": SecretStr("generic-secret")},
        }
    )
    body = orjson.dumps(
        hubspot_items(
            (1, "deal.creation", None),
            (2, "deal.propertyChange", "presentationscheduled"),
            (3, "deal.propertyChange", "closedwon"),
        )
    )
    uri = settings.ingest_public_url + "/v1/webhooks/hubspot"

    def signed(payload: bytes, stamp_ms: int, key: str = secret) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "X-HubSpot-Signature-v3": sign_hubspot_v3(key.encode(), "POST", uri, payload, stamp_ms),
            "X-HubSpot-Request-Timestamp": str(stamp_ms),
        }

    now_ms = int(time.time() * 1000)
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        forged = http.post("/v1/webhooks/hubspot", content=body, headers=signed(body, now_ms, "wrong"))
        assert forged.status_code == 401 and "signature" in forged.json()["error"]
        tampered = http.post("/v1/webhooks/hubspot", content=body + b" ", headers=signed(body, now_ms))
        assert tampered.status_code == 401
        stale_ms = now_ms - 10 * 60 * 1000
        stale = http.post("/v1/webhooks/hubspot", content=body, headers=signed(body, stale_ms))
        assert stale.status_code == 401 and "tolerance" in stale.json()["error"]
        assert (
            http.post("/v1/webhooks/salesforce", content=body, headers=signed(body, now_ms)).status_code
            == 404
        )
        good = http.post("/v1/webhooks/hubspot", content=body, headers=signed(body, now_ms))
        assert good.status_code == 200, good.text
        assert [r["type"] for r in good.json()["results"]] == [
            "deal_created",
            "deal_stage_changed",
            "deal_won",
        ]
        # HubSpot retries a delivery it did not see answered: the same events, stored once.
        again = http.post("/v1/webhooks/hubspot", content=body, headers=signed(body, now_ms + 1000))
        assert again.status_code == 200
        # The generic scheme (no mapping for "dialer" shipped: 404 before any signature work).
        stamp = int(time.time())
        generic = http.post(
            "/v1/webhooks/dialer",
            content=b"{}",
            headers={
                "X-Salespulse-Signature": sign_generic(b"generic-secret", b"{}", stamp),
                "X-Salespulse-Timestamp": str(stamp),
                "Content-Type": "application/json",
            },
        )
        assert generic.status_code == 404
    settle(settings, worker)
    stored = query(
        settings,
        "SELECT event_id, type, rep_id, deal_id FROM {db}.events FINAL "
        "WHERE startsWith(event_id, 'hubspot:4242:') ORDER BY event_id",
    )
    assert stored == [
        ("hubspot:4242:1", "deal_created", "77", "hubspot:9001"),
        ("hubspot:4242:2", "deal_stage_changed", "77", "hubspot:9001"),
        ("hubspot:4242:3", "deal_won", "77", "hubspot:9001"),
    ]
    deal = query(settings, "SELECT status, rep_id FROM {db}.deals FINAL WHERE deal_id = 'hubspot:9001'")
    assert deal == [("won", "77")]


def test_checkins_belong_to_the_tokens_rep_and_bad_ones_are_rejected_one_by_one(
    pipeline: tuple[Settings, ManagedProcess],
) -> None:
    settings, worker = pipeline
    writer = create_token(settings, TokenScope.EVENTS_WRITE, name="not a phone")
    phone = create_token(settings, TokenScope.CHECKIN, rep_id="rep-zoe", name="zoe phone")
    at = (NOW - timedelta(minutes=5)).isoformat()
    taps = [
        {"client_id": "tap-00000001", "action": "check_in", "account_id": "nowhere", "occurred_at": at,
         "lat": 45.0, "lon": 5.0, "accuracy_m": 12},
        {"client_id": "tap-00000002", "action": "check_out", "account_id": "nowhere", "occurred_at": at},
        {"client_id": "x", "action": "check_in", "account_id": "nowhere", "occurred_at": at},
    ]  # fmt: skip
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.post("/v1/checkins", json=taps, headers=bearer(writer)).status_code == 403
        assert http.get("/v1/checkin/accounts", headers=bearer(writer)).status_code == 403
        assert http.get("/v1/checkin/accounts", headers=bearer(phone)).json() == {
            "rep_id": "rep-zoe",
            "accounts": [],
        }
        answer = http.post("/v1/checkins", json=taps, headers=bearer(phone))
        assert answer.status_code == 200, answer.text
        results = answer.json()
        assert [(r["client_id"], r["status"]) for r in results] == [
            ("tap-00000001", "unlocated"),
            ("tap-00000002", "rejected"),
            ("x", "rejected"),
        ]
        assert "visit_id" in results[1]["detail"] and "client_id" in results[2]["detail"]
        page = http.get("/checkin")
        assert page.status_code == 200 and "used only at check-in" in page.text
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    settle(settings, worker)
    stored = query(settings, "SELECT event_id, type, rep_id FROM {db}.events FINAL WHERE rep_id = 'rep-zoe'")
    assert stored == [("checkin:tap-00000001", "visit", "rep-zoe")]
    ((letters,),) = query(
        settings, "SELECT count() FROM {db}.dead_letters WHERE source = 'http' AND rep_id = 'rep-zoe'"
    )
    assert letters == 2


def test_503_when_the_token_store_was_never_readable(pipeline: tuple[Settings, ManagedProcess]) -> None:
    base, _ = pipeline
    settings = base.model_copy(update={"clickhouse_port": free_port()})
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        answer = http.post(
            "/v1/events", json=calls("nostore", 1), headers=bearer("sp_0123456789abcdef_" + "x" * 43)
        )
        assert answer.status_code == 503 and int(answer.headers["Retry-After"]) > 0
        assert "token store" in answer.json()["error"]


def test_a_webhook_source_has_a_rate_limit(pipeline: tuple[Settings, ManagedProcess]) -> None:
    base, _ = pipeline
    settings = base.model_copy(
        update={
            "webhook_dir": HUBSPOT_DIR,
            "webhook_secrets": {"hubspot": SecretStr("s")},
            "ingest_rate_per_s": 0.5,
            "ingest_rate_burst": 1,
        }
    )
    uri = settings.ingest_public_url + "/v1/webhooks/hubspot"
    body = b"[]"
    with running_service(settings) as service, httpx.Client(base_url=service.url, timeout=30) as http:
        statuses = []
        for _ in range(2):
            stamp = int(time.time() * 1000)
            headers = {
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": sign_hubspot_v3(b"s", "POST", uri, body, stamp),
                "X-HubSpot-Request-Timestamp": str(stamp),
            }
            statuses.append(http.post("/v1/webhooks/hubspot", content=body, headers=headers).status_code)
        assert statuses == [200, 429]
