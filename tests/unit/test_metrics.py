"""The worker's metrics: every value read back from a registry the test owns."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import CallEvent, EmailEvent
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import Event, MessageOrigin, encode_batch
from sinks.memory import InMemoryHistory, InMemorySink
from streams.app import PipelineWorker
from streams.metrics import (
    EVENT_LATENCY_BUCKETS,
    BatchHistogram,
    PipelineMetrics,
    start_metrics_server,
    worker_registry,
)
from streams.processor import BatchProcessor, RawMessage

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
ACTIVITIES, DEALS, REPS, DEAD = "t.activities", "t.deals", "t.reps", "t.deadletter"


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def processor(history: InMemoryHistory | None = None) -> BatchProcessor:
    return BatchProcessor(
        history=history or InMemoryHistory(InMemorySink()),
        late_grace=timedelta(days=35),
        clock=lambda: NOW,
        rep_topic=REPS,
        max_message_bytes=1_000_000,
        dead_letter_topic=DEAD,
    )


def call(n: int, ago: timedelta, rep: str = "r1") -> CallEvent:
    return CallEvent(event_id=f"c{n}", rep_id=rep, type="call", occurred_at=NOW - ago)


def email(n: int, ago: timedelta, rep: str = "r1") -> EmailEvent:
    return EmailEvent(event_id=f"e{n}", rep_id=rep, type="email", occurred_at=NOW - ago)


def message(topic: str, events: list[Event], offset: int) -> RawMessage:
    return RawMessage(events[0].rep_id.encode(), encode_batch(events), MessageOrigin(topic, 0, offset))


def raw(topic: str, key: bytes, payload: bytes, offset: int) -> RawMessage:
    return RawMessage(key, payload, MessageOrigin(topic, 0, offset))


def worker(metrics: PipelineMetrics, sink: InMemorySink, sent: list[DeadLetter]) -> PipelineWorker:
    async def send(letter: DeadLetter) -> None:
        sent.append(letter)

    settings = Settings(sink_retry_max_seconds=0.01)
    return PipelineWorker(settings, sink, processor(), send, metrics=metrics, clock=lambda: NOW)


def test_a_batch_through_the_worker_gives_exact_counts_by_topic_type_and_reason() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    r = metrics.registry
    sent: list[DeadLetter] = []
    pipeline = worker(metrics, InMemorySink(), sent)
    first = call(1, timedelta(seconds=0.2))
    rep = Rep(rep_id="r1", name="Dana", team="east", territory="bavaria")
    stored_letter = DeadLetter(
        reason=DeadLetterReason.NOT_JSON,
        detail="x",
        source="file.jsonl",
        payload_excerpt="x",
        rejected_at=NOW,
    )
    messages = [
        message(ACTIVITIES, [first, call(2, timedelta(seconds=3)), email(1, timedelta(minutes=20))], 0),
        message(ACTIVITIES, [first], 1),  # redelivered: a duplicate
        raw(ACTIVITIES, b"r1", b"{not json", 2),
        raw(ACTIVITIES, b"r1", orjson.dumps({"event_id": "n", "type": "call", "rep_id": "r1"}), 3),
        raw(ACTIVITIES, b"r2", first.model_dump_json().encode(), 4),  # key says r2, event says r1
        message(DEALS, [email(9, timedelta(days=3), rep="r3")], 0),  # wrong topic is still an event
        raw(REPS, b"r1", rep.model_dump_json().encode(), 0),
        raw(DEAD, b"", stored_letter.model_dump_json().encode(), 0),
        raw(DEAD, b"", b"garbage", 1),
    ]
    asyncio.run(pipeline.handle(messages))

    assert value(r, "salespulse_messages_consumed_total", topic=ACTIVITIES) == 5
    assert value(r, "salespulse_messages_consumed_total", topic=DEALS) == 1
    assert value(r, "salespulse_messages_consumed_total", topic=REPS) == 1
    assert value(r, "salespulse_messages_consumed_total", topic=DEAD) == 2
    assert value(r, "salespulse_batch_messages_count") == 1
    assert value(r, "salespulse_batch_messages_sum") == 9
    # Consumed: every valid event read, the duplicate included.
    assert value(r, "salespulse_events_consumed_total", topic=ACTIVITIES, type="call") == 3
    assert value(r, "salespulse_events_consumed_total", topic=ACTIVITIES, type="email") == 1
    assert value(r, "salespulse_events_consumed_total", topic=DEALS, type="email") == 1
    # Processed: new events stored.
    assert value(r, "salespulse_events_processed_total", topic=ACTIVITIES, type="call") == 2
    assert value(r, "salespulse_events_processed_total", topic=ACTIVITIES, type="email") == 1
    assert value(r, "salespulse_events_processed_total", topic=DEALS, type="email") == 1
    assert value(r, "salespulse_duplicate_events_total") == 1
    assert value(r, "salespulse_dead_letters_total", reason="not_json") == 1
    assert value(r, "salespulse_dead_letters_total", reason="invalid") == 1
    assert value(r, "salespulse_dead_letters_total", reason="key_mismatch") == 1
    assert value(r, "salespulse_dead_letters_total", reason="too_late") == 0
    assert len(sent) == 3
    assert value(r, "salespulse_dead_letters_stored_total") == 1
    assert value(r, "salespulse_dead_letters_unreadable_total") == 1
    assert value(r, "salespulse_rep_records_stored_total") == 1
    # Latency, event time to stored: 0.2 s, 3 s, 20 min and 3 days.
    assert value(r, "salespulse_event_latency_seconds_count") == 4
    assert value(r, "salespulse_event_latency_seconds_bucket", le="0.25") == 1
    assert value(r, "salespulse_event_latency_seconds_bucket", le="5.0") == 2
    assert value(r, "salespulse_event_latency_seconds_bucket", le="1800.0") == 3
    assert value(r, "salespulse_event_latency_seconds_bucket", le="3600.0") == 3
    assert value(r, "salespulse_event_latency_seconds_bucket", le="+Inf") == 4
    assert value(r, "salespulse_event_latency_seconds_sum") == pytest.approx(0.2 + 3 + 1200 + 3 * 86400)
    # One successful flush of every row the batch produced, nothing failed.
    assert value(r, "salespulse_clickhouse_batch_rows_count") == 1
    assert value(r, "salespulse_clickhouse_write_seconds_count") == 1
    assert value(r, "salespulse_clickhouse_write_retries_total") == 0


def test_clickhouse_failures_are_counted_per_table_and_every_retry_once() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    r = metrics.registry
    sink = InMemorySink(fail_next_flushes=2)
    asyncio.run(worker(metrics, sink, []).handle([message(ACTIVITIES, [call(1, timedelta(seconds=1))], 0)]))
    assert sink.flush_attempts == 3
    assert value(r, "salespulse_clickhouse_write_failures_total", table="memory") == 2
    assert value(r, "salespulse_clickhouse_write_retries_total") == 2
    assert value(r, "salespulse_clickhouse_write_seconds_count") == 1
    # Rows: the event and its daily aggregate rows (call).
    assert value(r, "salespulse_clickhouse_batch_rows_sum") == len(sink.flushed[0])


def test_a_database_qualified_table_is_labelled_by_table_only() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    metrics.clickhouse_write_failed("salespulse.events")
    assert value(metrics.registry, "salespulse_clickhouse_write_failures_total", table="events") == 1


def test_an_empty_flush_is_not_a_write() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    metrics.clickhouse_flushed(rows=0, seconds=0.001)
    assert value(metrics.registry, "salespulse_clickhouse_write_seconds_count") == 0


def test_a_clock_behind_the_producer_counts_as_no_latency() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    history = InMemoryHistory(InMemorySink())
    outcome = processor(history).process([message(ACTIVITIES, [call(1, timedelta(seconds=-2))], 0)])
    metrics.batch_stored(outcome, stored_at=NOW)
    assert value(metrics.registry, "salespulse_event_latency_seconds_bucket", le="0.05") == 1
    assert value(metrics.registry, "salespulse_event_latency_seconds_sum") == 0


def test_every_dead_letter_reason_starts_at_zero() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    for reason in DeadLetterReason:
        assert value(metrics.registry, "salespulse_dead_letters_total", reason=reason.value) == 0


def test_worker_info_and_declared_topics() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    metrics.describe_worker(group="g1", topics=[DEALS, ACTIVITIES], version="1.2.3")
    metrics.declare_topics([ACTIVITIES])
    labels = {"version": "1.2.3", "group": "g1", "topics": f"{ACTIVITIES},{DEALS}"}
    assert value(metrics.registry, "salespulse_worker_info", **labels) == 1
    assert value(metrics.registry, "salespulse_messages_consumed_total", topic=ACTIVITIES) == 0


def test_consumer_lag_follows_the_assignment_and_is_dropped_when_unknown() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    r = metrics.registry
    metrics.set_consumer_lag({(ACTIVITIES, 0): 5, (ACTIVITIES, 1): 0, (DEALS, 0): -3})
    assert value(r, "salespulse_consumer_lag_messages", topic=ACTIVITIES, partition="0") == 5
    assert value(r, "salespulse_consumer_lag_messages", topic=DEALS, partition="0") == 0
    assert value(r, "salespulse_assigned_partitions") == 3
    # Partition 1 moved to another worker: its series goes, the new owner reports it.
    metrics.set_consumer_lag({(ACTIVITIES, 0): 2, (DEALS, 0): 0})
    assert (
        r.get_sample_value("salespulse_consumer_lag_messages", {"topic": ACTIVITIES, "partition": "1"})
        is None
    )
    assert value(r, "salespulse_consumer_lag_messages", topic=ACTIVITIES, partition="0") == 2
    assert value(r, "salespulse_assigned_partitions") == 2
    metrics.consumer_lag_failed()
    assert (
        r.get_sample_value("salespulse_consumer_lag_messages", {"topic": ACTIVITIES, "partition": "0"})
        is None
    )
    assert value(r, "salespulse_consumer_lag_errors_total") == 1


def test_notifier_and_alert_methods() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    r = metrics.registry
    metrics.declare_receivers(["team-chat", "email"])
    for name in ("sent", "failures", "retries"):
        family = "notifications_sent" if name == "sent" else f"notification_{name}"
        assert value(r, f"salespulse_{family}_total", receiver="email") == 0
    metrics.notification_sent("team-chat")
    metrics.notification_retried("team-chat")
    metrics.notification_retried("team-chat")
    metrics.notification_failed("email")
    assert value(r, "salespulse_notifications_sent_total", receiver="team-chat") == 1
    assert value(r, "salespulse_notification_retries_total", receiver="team-chat") == 2
    assert value(r, "salespulse_notification_failures_total", receiver="email") == 1
    metrics.set_alerts_firing({"activity_floor": 3, "stalled_pipeline": 0})
    assert value(r, "salespulse_alerts_firing", rule="activity_floor") == 3
    assert value(r, "salespulse_alerts_firing", rule="stalled_pipeline") == 0
    metrics.alerts_sent([NOW - timedelta(seconds=30), NOW - timedelta(hours=2)], sent_at=NOW)
    assert value(r, "salespulse_alert_latency_seconds_bucket", le="30.0") == 1
    assert value(r, "salespulse_alert_latency_seconds_count") == 2


def test_metrics_with_their_own_registries_do_not_collide() -> None:
    first, second = PipelineMetrics(CollectorRegistry()), PipelineMetrics(CollectorRegistry())
    first.rebalanced()
    assert value(first.registry, "salespulse_rebalances_total") == 1
    assert value(second.registry, "salespulse_rebalances_total") == 0


def test_a_worker_registry_carries_process_metrics() -> None:
    registry = worker_registry()
    PipelineMetrics(registry)
    assert value(registry, "process_resident_memory_bytes") > 0
    assert value(registry, "python_info", **_python_info_labels(registry)) == 1


def _python_info_labels(registry: CollectorRegistry) -> dict[str, str]:
    for family in registry.collect():
        if family.name == "python_info":
            return dict(family.samples[0].labels)
    raise AssertionError("no python_info")


@given(st.lists(st.floats(min_value=-10, max_value=10_000, allow_nan=False), max_size=60))
def test_a_batch_histogram_exposes_what_a_prometheus_histogram_would(values: list[float]) -> None:
    ours, reference = CollectorRegistry(), CollectorRegistry()
    histogram = BatchHistogram("x_seconds", "x", EVENT_LATENCY_BUCKETS, registry=ours)
    expected = Histogram("x_seconds", "x", buckets=EVENT_LATENCY_BUCKETS, registry=reference)
    half = len(values) // 2
    histogram.observe_many(values[:half])
    histogram.observe_many(values[half:])
    for v in values:
        expected.observe(v)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    got, want = samples(ours), samples(reference)
    assert got.keys() == want.keys()
    for key, number in want.items():
        assert got[key] == pytest.approx(number), key


def test_every_family_has_help_and_the_exposition_parses() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    text = generate_latest(metrics.registry).decode()
    families = list(text_string_to_metric_families(text))
    assert all(family.documentation for family in families)
    names = {family.name for family in families}
    assert {
        "salespulse_event_latency_seconds",
        "salespulse_consumer_lag_messages",
        "salespulse_worker_info",
    } <= names
    assert not [name for name in names if not name.startswith("salespulse_")]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt: prometheus)")
def test_promtool_accepts_the_exposition() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    metrics.describe_worker(group="g", topics=[ACTIVITIES])
    metrics.declare_receivers(["chat"])
    metrics.set_alerts_firing({"floor": 1})
    metrics.set_consumer_lag({(ACTIVITIES, 0): 1})
    metrics.clickhouse_flushed(rows=10, seconds=0.01)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=generate_latest(metrics.registry), capture_output=True
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


def test_the_metrics_server_serves_the_registry_on_loopback() -> None:
    metrics = PipelineMetrics(CollectorRegistry())
    metrics.rebalanced()
    server = start_metrics_server(Settings(metrics_port=_free_port()), metrics.registry)
    assert server is not None
    try:
        assert server.server_address[0] == "127.0.0.1"
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        assert "salespulse_rebalances_total 1.0" in body
    finally:
        server.shutdown()
        server.server_close()


def test_port_zero_turns_the_metrics_server_off() -> None:
    assert start_metrics_server(Settings(metrics_port=0), CollectorRegistry()) is None


def test_a_taken_port_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="streams.metrics"):
            assert start_metrics_server(Settings(metrics_port=port), CollectorRegistry()) is None
    assert f"cannot serve metrics on 127.0.0.1:{port}" in caplog.text
    assert "SALESPULSE_METRICS_PORT" in caplog.text


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the README's metrics table ----------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_START, TABLE_END = "<!-- metrics-table:start -->", "<!-- metrics-table:end -->"
EXPOSED_SUFFIX = {"counter": "_total", "info": "_info"}


def metrics_table() -> str:
    """The README's metrics table, generated from ``PipelineMetrics``: paste it when it drifts."""
    metrics = PipelineMetrics(CollectorRegistry())
    # A child for every labelled family, so its label names show in the samples.
    metrics.describe_worker(group="g", topics=["t"])
    metrics.batch_received([raw("t", b"k", b"v", 0)])
    metrics.declare_receivers(["r"])
    metrics.set_alerts_firing({"rule": 0})
    metrics.set_consumer_lag({("t", 0): 0})
    metrics.clickhouse_write_failed("db.events")
    outcome = processor().process([message("t", [call(1, timedelta(seconds=1))], 0)])
    metrics.batch_decoded(outcome)
    metrics.batch_stored(outcome, stored_at=NOW)
    lines = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for family in metrics.registry.collect():
        labels = sorted({key for sample in family.samples for key in sample.labels if key != "le"})
        name = family.name + EXPOSED_SUFFIX.get(family.type, "")
        shown = ", ".join(f"`{label}`" for label in labels) or "-"
        lines.append(f"| `{name}` | {family.type} | {shown} | {family.documentation} |")
    return "\n".join(lines)


def test_the_readme_lists_every_metric_as_declared() -> None:
    readme = README.read_text(encoding="utf-8")
    assert TABLE_START in readme and TABLE_END in readme, "README has no metrics-table markers"
    block = readme.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0].strip()
    wanted = metrics_table()
    assert block == wanted, (
        f"the README's metrics table differs from streams/metrics.py; replace it with:\n{wanted}"
    )
