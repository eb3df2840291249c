"""Every Prometheus metric a worker exports, declared once, on an injectable registry.

:class:`PipelineMetrics` owns the declarations (name, help, labels, buckets) and offers one method
per thing that happens; callers never touch a metric object. A worker gets a fresh registry of its
own (:func:`worker_registry`, with the process and Python collectors); tests pass their own and
read the values back with ``registry.get_sample_value``.

Labels are bounded by construction: topics (the handful a worker consumes), event types (the
contract's closed set), dead-letter reasons (an enum), ClickHouse tables, Kafka partitions of the
worker's assignment, and the receivers and rule names of the alerting configuration. There are no
per-rep, per-team or per-event labels.
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections import Counter as Tally
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.settings import Settings
from streams.processor import BatchOutcome, RawMessage

logger = logging.getLogger(__name__)

# Event time to stored. Event time can be hours or days old (a backfill, a replay, a producer
# that was offline), so the buckets reach an hour; older events land in +Inf and still count.
EVENT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
BATCH_MESSAGES_BUCKETS: tuple[float, ...] = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
CLICKHOUSE_ROWS_BUCKETS: tuple[float, ...] = (
    1, 10, 100, 500, 1000, 5000, 10_000, 50_000, 100_000, 250_000, 500_000,
)  # fmt: skip
CLICKHOUSE_SECONDS_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip


def salespulse_version() -> str:
    try:
        return version("salespulse")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def worker_registry() -> CollectorRegistry:
    """A fresh registry with the process (CPU, memory, file descriptors), platform and garbage
    collector metrics that prometheus_client otherwise puts on its global registry."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def start_metrics_server(settings: Settings, registry: CollectorRegistry) -> WSGIServer | None:
    """Serve ``registry`` on ``/metrics`` at ``SALESPULSE_METRICS_HOST:SALESPULSE_METRICS_PORT`` with
    prometheus_client's own HTTP server (a daemon thread); ``None`` when turned off or not possible.

    A port that is taken is logged, not fatal: several workers on one host would otherwise take each
    other down over their metrics. Prometheus then shows the target down, which is the right alarm.
    Stop it with ``server.shutdown()``.
    """
    host, port = settings.metrics_host, settings.metrics_port
    if port == 0:
        logger.info("metrics endpoint turned off (SALESPULSE_METRICS_PORT=0)")
        return None
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.error(
            "cannot serve metrics on %s:%d (%s); running on without /metrics. Give each process "
            "on a host its own SALESPULSE_METRICS_PORT, or 0 to turn it off",
            host,
            port,
            exc,
        )
        return None
    logger.info("serving Prometheus metrics on http://%s:%d/metrics", host, server.server_port)
    return server


def _bucket_label(bound: float) -> str:
    """An ``le`` label as prometheus_client's own histograms write it (``1.0``, ``0.05``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class BatchHistogram(Collector):
    """A label-free histogram fed a whole batch of observations at once.

    The end-to-end latency is observed once per stored event, up to 100,000 per batch; a
    ``prometheus_client.Histogram`` costs about 1 µs per ``observe`` (a lock and a linear bucket
    scan), this about 0.15 µs (one bisect), and takes its lock once per batch. It exposes the same
    samples (``_bucket`` with cumulative ``le`` counts, ``_count``, ``_sum``).
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(sorted(float(b) for b in buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        counts = [0] * len(self._counts)
        total = 0.0
        bounds = self._bounds
        locate = bisect.bisect_left  # the first bound >= value: value <= le
        for value in values:
            if math.isnan(value):
                continue
            total += value
            counts[locate(bounds, value)] += 1
        with self._lock:
            self._counts = [mine + new for mine, new in zip(self._counts, counts, strict=True)]
            self._sum += total

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self._name, self._documentation)]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*self._bounds, math.inf), counts, strict=True):
            cumulative += count
            buckets.append((_bucket_label(bound), cumulative))
        return [HistogramMetricFamily(self._name, self._documentation, buckets=buckets, sum_value=total)]


class PipelineMetrics:
    """The worker's metrics. One instance per worker process (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else worker_registry()
        r = self.registry

        # --- worker -----------------------------------------------------------------------------
        self._info = Info(
            "salespulse_worker", "The running worker: version, consumer group, topics.", registry=r
        )

        # --- consumption and validation ---------------------------------------------------------
        self._messages_consumed = Counter(
            "salespulse_messages_consumed",
            "Kafka messages handed to the worker, by topic (a message holds one event or one rep's batch).",
            ["topic"],
            registry=r,
        )
        self._batch_messages = Histogram(
            "salespulse_batch_messages",
            "Kafka messages per processing batch (each batch is stored, then acknowledged, as one).",
            buckets=BATCH_MESSAGES_BUCKETS,
            registry=r,
        )
        self._events_consumed = Counter(
            "salespulse_events_consumed",
            "Valid sales events read, by topic and type, before duplicate and lateness checks.",
            ["topic", "type"],
            registry=r,
        )
        self._events_processed = Counter(
            "salespulse_events_processed",
            "New sales events stored in ClickHouse and counted in the KPIs, by topic and type.",
            ["topic", "type"],
            registry=r,
        )
        self._duplicates = Counter(
            "salespulse_duplicate_events",
            "Valid events already counted (redelivered or re-sent), dropped without counting twice.",
            registry=r,
        )
        self._dead_letters = Counter(
            "salespulse_dead_letters",
            "Inputs this worker rejected and published to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self._dead_letters_stored = Counter(
            "salespulse_dead_letters_stored",
            "Dead letters read from the dead-letter topic (from any producer) and stored in ClickHouse.",
            registry=r,
        )
        self._dead_letters_unreadable = Counter(
            "salespulse_dead_letters_unreadable",
            "Records on the dead-letter topic that are not dead letters; logged and skipped.",
            registry=r,
        )
        self._rep_records = Counter(
            "salespulse_rep_records_stored",
            "Rep records read from the reps topic and stored in ClickHouse.",
            registry=r,
        )
        self._event_latency = BatchHistogram(
            "salespulse_event_latency_seconds",
            "Time from an event's occurred_at to the moment it was stored in ClickHouse.",
            EVENT_LATENCY_BUCKETS,
            registry=r,
        )

        # --- ClickHouse -------------------------------------------------------------------------
        self._clickhouse_rows = Histogram(
            "salespulse_clickhouse_batch_rows",
            "Rows (events, aggregates, deals, reps, dead letters) made durable by one flush.",
            buckets=CLICKHOUSE_ROWS_BUCKETS,
            registry=r,
        )
        self._clickhouse_seconds = Histogram(
            "salespulse_clickhouse_write_seconds",
            "Duration of a successful flush to ClickHouse (one INSERT per table).",
            buckets=CLICKHOUSE_SECONDS_BUCKETS,
            registry=r,
        )
        self._clickhouse_failures = Counter(
            "salespulse_clickhouse_write_failures",
            "Failed ClickHouse inserts, and failed reads of the stored history a batch needs, by table. "
            "Consumption pauses until they succeed.",
            ["table"],
            registry=r,
        )
        self._clickhouse_retries = Counter(
            "salespulse_clickhouse_write_retries",
            "Flush retries scheduled after a failure (with capped, jittered backoff).",
            registry=r,
        )

        # --- Kafka consumer group ---------------------------------------------------------------
        self._consumer_lag = Gauge(
            "salespulse_consumer_lag_messages",
            "Messages between the group's committed offset and the end of each partition this "
            "worker is assigned (sampled periodically).",
            ["topic", "partition"],
            registry=r,
        )
        self._assigned_partitions = Gauge(
            "salespulse_assigned_partitions",
            "Partitions currently assigned to this worker.",
            registry=r,
        )
        self._consumer_lag_errors = Counter(
            "salespulse_consumer_lag_errors",
            "Failed attempts to sample the consumer lag (the lag series are dropped until one succeeds).",
            registry=r,
        )
        self._rebalances = Counter(
            "salespulse_rebalances",
            "Partition assignments received (one per consumer-group rebalance).",
            registry=r,
        )

        # --- alerts and notifications (called by the alerting code) ------------------------------
        self._notifications_sent = Counter(
            "salespulse_notifications_sent",
            "Alert notifications delivered, by receiver.",
            ["receiver"],
            registry=r,
        )
        self._notification_failures = Counter(
            "salespulse_notification_failures",
            "Alert notifications given up on after their retries, by receiver.",
            ["receiver"],
            registry=r,
        )
        self._notification_retries = Counter(
            "salespulse_notification_retries",
            "Retried notification attempts, by receiver.",
            ["receiver"],
            registry=r,
        )
        self._alerts_firing = Gauge(
            "salespulse_alerts_firing",
            "Alerts currently firing, by rule.",
            ["rule"],
            registry=r,
        )
        self._alert_latency = BatchHistogram(
            "salespulse_alert_latency_seconds",
            "Time from the occurred_at of the event that tripped an alert to the alert being sent.",
            EVENT_LATENCY_BUCKETS,
            registry=r,
        )

        # Series at 0 from the start, so rate() and increase() see the first occurrence.
        for reason in DeadLetterReason:
            self._dead_letters.labels(reason.value)
        self._lag_series: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------------------ worker

    def describe_worker(self, *, group: str, topics: Iterable[str], version: str | None = None) -> None:
        self._info.info(
            {
                "version": version or salespulse_version(),
                "group": group,
                "topics": ",".join(sorted(topics)),
            }
        )

    def declare_topics(self, topics: Iterable[str]) -> None:
        """Start the per-topic message counters at 0."""
        for topic in topics:
            self._messages_consumed.labels(topic)

    # ------------------------------------------------------------------------------ batches

    def batch_received(self, messages: Sequence[RawMessage]) -> None:
        self._batch_messages.observe(len(messages))
        for topic, count in Tally(message.origin.source for message in messages).items():
            self._messages_consumed.labels(topic).inc(count)

    def batch_decoded(self, outcome: BatchOutcome) -> None:
        for (topic, event_type), count in outcome.decoded_by_source_type.items():
            self._events_consumed.labels(topic, event_type).inc(count)

    def batch_stored(self, outcome: BatchOutcome, *, stored_at: datetime) -> None:
        """Everything ``outcome`` made durable, as of ``stored_at`` (end of the flush)."""
        events = outcome.sink_batch.events
        for (topic, event_type), count in Tally(
            (item.origin.source, item.event.type) for item in events
        ).items():
            self._events_processed.labels(topic, event_type).inc(count)
        # A clock a little behind a producer's gives a small negative age; that is "now".
        self._event_latency.observe_many(
            max((stored_at - item.event.occurred_at).total_seconds(), 0.0) for item in events
        )
        if outcome.duplicates:
            self._duplicates.inc(outcome.duplicates)
        if outcome.sink_batch.dead_letters:
            self._dead_letters_stored.inc(len(outcome.sink_batch.dead_letters))
        if outcome.unreadable_dead_letters:
            self._dead_letters_unreadable.inc(outcome.unreadable_dead_letters)
        if outcome.sink_batch.reps:
            self._rep_records.inc(len(outcome.sink_batch.reps))

    def dead_letters_published(self, dead_letters: Iterable[DeadLetter]) -> None:
        for reason, count in Tally(letter.reason.value for letter in dead_letters).items():
            self._dead_letters.labels(reason).inc(count)

    # ------------------------------------------------------------------------------ ClickHouse

    def clickhouse_flushed(self, *, rows: int, seconds: float) -> None:
        if rows:  # an empty flush is no write
            self._clickhouse_rows.observe(rows)
            self._clickhouse_seconds.observe(seconds)

    def clickhouse_write_failed(self, table: str) -> None:
        # SinkError names "database.table"; the database is the same for every row of a worker.
        self._clickhouse_failures.labels(table.rpartition(".")[2]).inc()

    def clickhouse_write_retried(self) -> None:
        self._clickhouse_retries.inc()

    # ------------------------------------------------------------------------------ consumer group

    def set_consumer_lag(self, lag_by_partition: Mapping[tuple[str, int], int]) -> None:
        """Replace the lag series with this sample of the worker's assignment; partitions no longer
        assigned disappear (their new owner reports them)."""
        current = {(topic, str(partition)) for topic, partition in lag_by_partition}
        for stale in self._lag_series - current:
            self._consumer_lag.remove(*stale)
        for (topic, partition), lag in lag_by_partition.items():
            self._consumer_lag.labels(topic, str(partition)).set(max(lag, 0))
        self._lag_series = current
        self._assigned_partitions.set(len(lag_by_partition))

    def consumer_lag_failed(self) -> None:
        self._consumer_lag_errors.inc()
        for stale in self._lag_series:
            self._consumer_lag.remove(*stale)
        self._lag_series = set()

    def rebalanced(self) -> None:
        self._rebalances.inc()

    # ------------------------------------------------------------------------------ alerts

    def declare_receivers(self, receivers: Iterable[str]) -> None:
        """Start the notification counters of the configured receivers at 0."""
        for receiver in receivers:
            for counter in (
                self._notifications_sent,
                self._notification_failures,
                self._notification_retries,
            ):
                counter.labels(receiver)

    def notification_sent(self, receiver: str) -> None:
        self._notifications_sent.labels(receiver).inc()

    def notification_retried(self, receiver: str) -> None:
        self._notification_retries.labels(receiver).inc()

    def notification_failed(self, receiver: str) -> None:
        """A notification given up on (after its retries)."""
        self._notification_failures.labels(receiver).inc()

    def set_alerts_firing(self, firing_by_rule: Mapping[str, int]) -> None:
        """The number of firing alerts of every configured rule (give 0 for the quiet ones)."""
        for rule, firing in firing_by_rule.items():
            self._alerts_firing.labels(rule).set(firing)

    def alerts_sent(self, event_times: Iterable[datetime], *, sent_at: datetime) -> None:
        """Alerts delivered at ``sent_at``, each with the event time of the event that tripped it."""
        self._alert_latency.observe_many(
            max((sent_at - occurred_at).total_seconds(), 0.0) for occurred_at in event_times
        )


# Request duration of the ingest service: most answers wait for the broker's acknowledgement.
INGEST_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
)  # fmt: skip


class IngestMetrics:
    """The metrics of ``salespulse serve``, on ``/metrics`` of the service itself.

    Labels are bounded: endpoints are the service's handful, statuses are HTTP codes, reasons are
    the dead-letter reasons (an enum); no token, rep or source names.
    """

    ENDPOINTS = ("events", "webhooks", "checkins", "accounts")

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else worker_registry()
        r = self.registry
        self._requests = Counter(
            "salespulse_ingest_requests",
            "Ingest requests answered, by endpoint and HTTP status.",
            ["endpoint", "status"],
            registry=r,
        )
        self._accepted = Counter(
            "salespulse_ingest_events_accepted",
            "Events accepted over HTTP and acknowledged by the broker, by endpoint.",
            ["endpoint"],
            registry=r,
        )
        self._rejected = Counter(
            "salespulse_ingest_events_rejected",
            "Events rejected over HTTP (and dead-lettered), by endpoint and reason.",
            ["endpoint", "reason"],
            registry=r,
        )
        self._seconds = Histogram(
            "salespulse_ingest_request_seconds",
            "Time to answer an ingest request, acknowledgement by the broker included, by endpoint.",
            ["endpoint"],
            buckets=INGEST_SECONDS_BUCKETS,
            registry=r,
        )
        for endpoint in self.ENDPOINTS:
            self._accepted.labels(endpoint)
            self._seconds.labels(endpoint)
            for reason in DeadLetterReason:
                self._rejected.labels(endpoint, reason.value)

    def answered(self, endpoint: str, status: int, seconds: float) -> None:
        self._requests.labels(endpoint, str(status)).inc()
        self._seconds.labels(endpoint).observe(seconds)

    def events(self, endpoint: str, *, accepted: int, rejected_reasons: Iterable[str]) -> None:
        if accepted:
            self._accepted.labels(endpoint).inc(accepted)
        for reason, count in Tally(rejected_reasons).items():
            self._rejected.labels(endpoint, reason).inc(count)
