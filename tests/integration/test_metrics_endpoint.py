"""A real worker's /metrics, scraped over HTTP after real events and bad input went through it."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_pipeline import isolated_pipeline, start_worker

from schemas.events import CallEvent, DealCreatedEvent, EmailEvent
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import Event
from streams.app import CONSUMER_LAG_INTERVAL_S
from streams.kafka import EventPublisher, start_producer, wait_until_consumed
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def isolated(runtime: EmbeddedRuntime) -> Iterator[Settings]:
    with isolated_pipeline(runtime) as settings:
        yield settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return str(response.read().decode("utf-8"))


def wait_for_scrape(url: str, worker: ManagedProcess, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return scrape(url)
        except (urllib.error.URLError, ConnectionError):
            assert worker.is_running(), f"the worker died:\n{worker.log_tail()}"
            assert time.monotonic() < deadline, f"no /metrics within {timeout_s:.0f}s:\n{worker.log_tail()}"
            time.sleep(0.2)


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"no sample {name}{labels}"
    return found[key]


def events_now(now: datetime) -> list[Event]:
    """Three reps' calls and emails from the last minute, and one deal."""
    events: list[Event] = []
    for r in range(3):
        for i in range(10):
            at = now - timedelta(seconds=60 - i)
            if i % 2:
                events.append(
                    EmailEvent(event_id=f"r{r}-{i}", rep_id=f"rep{r}", type="email", occurred_at=at)
                )
            else:
                events.append(CallEvent(event_id=f"r{r}-{i}", rep_id=f"rep{r}", type="call", occurred_at=at))
    events.append(
        DealCreatedEvent(event_id="d1", rep_id="rep0", type="deal_created", occurred_at=now, deal_id="D1")
    )
    return events


def test_scraped_counters_equal_what_was_sent(runtime: EmbeddedRuntime, isolated: Settings) -> None:
    settings = isolated
    topics = settings.topics
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    now = datetime.now(UTC)
    events = events_now(now)
    duplicate = events[0]
    bad = [
        (topics.activities, b"rep0", orjson.dumps(duplicate.model_dump(mode="json"))),  # a duplicate
        (topics.activities, b"rep0", b"{not json"),
        (topics.activities, b"rep0", b'{"event_id": "n", "type": "call", "rep_id": "rep0"}'),  # no time
        (
            topics.activities,
            b"rep0",
            orjson.dumps(
                {"event_id": "t", "type": "teleport", "rep_id": "rep0", "occurred_at": "2026-05-05T10:00:00Z"}
            ),
        ),
        (topics.activities, b"someone-else", orjson.dumps(events[1].model_dump(mode="json"))),  # key mismatch
    ]

    async def publish() -> None:
        producer = await start_producer(settings)
        try:
            publisher = EventPublisher(producer, settings)
            await publisher.publish_many(events)
            await publisher.publish_rep(Rep(rep_id="rep0", name="Dana", team="east", territory="bavaria"))
            await publisher.flush()
            # One message per (topic, rep): what the message counters must show.
            assert publisher.stats.messages == 4
            for topic, key, payload in bad:
                await producer.send_and_wait(topic, value=payload, key=key)
        finally:
            await producer.stop()

    worker = start_worker(runtime, settings, "worker-metrics", {"SALESPULSE_METRICS_PORT": str(port)})
    try:
        before = samples(wait_for_scrape(url, worker))
        assert value(before, "salespulse_messages_consumed_total", topic=topics.activities) == 0
        asyncio.run(publish())
        asyncio.run(wait_until_consumed(settings, topics.consumed, timeout_s=90))
        # The lag is sampled every few seconds: wait for a sample of the whole assignment at 0.
        deadline = time.monotonic() + 6 * CONSUMER_LAG_INTERVAL_S
        while True:
            text = scrape(url)
            found = samples(text)
            lag = {k: v for k, v in found.items() if k[0] == "salespulse_consumer_lag_messages"}
            if len(lag) == len(topics.consumed) * settings.topic_partitions and not any(lag.values()):
                break
            assert time.monotonic() < deadline, f"consumer lag not sampled at 0: {lag}"
            time.sleep(0.5)
    finally:
        worker.stop()

    partitions = len(topics.consumed) * settings.topic_partitions
    assert value(found, "salespulse_assigned_partitions") == partitions
    assert value(found, "salespulse_rebalances_total") >= 1
    info = next(labels for name, labels in found if name == "salespulse_worker_info")
    assert dict(info)["group"] == settings.consumer_group
    assert dict(info)["topics"] == ",".join(sorted(topics.consumed))

    # Messages: 3 reps' activity batches + 5 raw ones, 1 deal batch, 1 rep, 4 dead letters read back.
    assert value(found, "salespulse_messages_consumed_total", topic=topics.activities) == 8
    assert value(found, "salespulse_messages_consumed_total", topic=topics.deals) == 1
    assert value(found, "salespulse_messages_consumed_total", topic=topics.reps) == 1
    assert value(found, "salespulse_messages_consumed_total", topic=topics.dead_letters) == 4
    # Events: the duplicate is consumed but not processed twice.
    act = topics.activities
    assert value(found, "salespulse_events_consumed_total", topic=act, type="call") == 16
    assert value(found, "salespulse_events_consumed_total", topic=act, type="email") == 15
    assert value(found, "salespulse_events_processed_total", topic=act, type="call") == 15
    assert value(found, "salespulse_events_processed_total", topic=act, type="email") == 15
    assert value(found, "salespulse_events_processed_total", topic=topics.deals, type="deal_created") == 1
    assert value(found, "salespulse_duplicate_events_total") == 1
    for reason, count in {
        "not_json": 1,
        "invalid": 1,
        "unknown_type": 1,
        "key_mismatch": 1,
        "too_late": 0,
    }.items():
        assert value(found, "salespulse_dead_letters_total", reason=reason) == count, reason
    assert value(found, "salespulse_dead_letters_stored_total") == 4
    assert value(found, "salespulse_dead_letters_unreadable_total") == 0
    assert value(found, "salespulse_rep_records_stored_total") == 1
    # Latency: every stored event within the hour, none under 50 ms (they are a minute old).
    assert value(found, "salespulse_event_latency_seconds_count") == 31
    assert value(found, "salespulse_event_latency_seconds_bucket", le="3600.0") == 31
    assert value(found, "salespulse_event_latency_seconds_bucket", le="0.05") == 0
    # ClickHouse: every batch written at the first attempt.
    assert value(found, "salespulse_clickhouse_write_seconds_count") >= 1
    assert value(found, "salespulse_clickhouse_batch_rows_count") >= 1
    assert value(found, "salespulse_clickhouse_write_retries_total") == 0
    assert not [k for k in found if k[0] == "salespulse_clickhouse_write_failures_total"]
    assert value(found, "process_resident_memory_bytes") > 0

    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt: prometheus): the scrape's lint was not checked")
    checked = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_a_taken_metrics_port_does_not_stop_the_worker(runtime: EmbeddedRuntime, isolated: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start_worker(runtime, isolated, "worker-port-taken", {"SALESPULSE_METRICS_PORT": str(port)})
        try:
            deadline = time.monotonic() + 60
            while "cannot serve metrics" not in worker.log_tail(200):
                assert worker.is_running(), worker.log_tail()
                assert time.monotonic() < deadline, worker.log_tail()
                time.sleep(0.2)
            time.sleep(1)
            assert worker.is_running(), worker.log_tail()
        finally:
            worker.stop()
