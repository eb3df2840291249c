"""The Faust app: agents that feed the batch processor and acknowledge only what is stored.

Delivery is at-least-once end to end (the embedded broker has no transactions, and ClickHouse
writes are idempotent anyway). A batch of messages is acknowledged only after

1. its accepted events and aggregate rows are flushed to ClickHouse (retried with backoff for as
   long as ClickHouse is down: consumption pauses, nothing is dropped), and
2. its dead letters are acknowledged by the broker on the dead-letter topic (the worker reads that
   topic too and stores every dead letter on it, its own and those of other producers).

A worker killed at any point therefore sees the unacknowledged messages again, and the processor's
per-event deduplication makes the second pass count nothing twice.

Each worker exports its metrics (``streams.metrics``) on ``/metrics`` at
``SALESPULSE_METRICS_HOST:SALESPULSE_METRICS_PORT``, and samples its consumer lag periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any
from wsgiref.simple_server import WSGIServer

import faust
import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.deadletter import DeadLetter
from schemas.settings import Settings
from schemas.wire import MessageOrigin
from sinks.base import Sink, SinkBatch
from sinks.clickhouse import ClickHouseHistory, ClickHouseSink, connect
from sinks.errors import HistoryReadError, SinkError
from streams.metrics import PipelineMetrics, start_metrics_server
from streams.processor import BatchOutcome, BatchProcessor, RawMessage
from streams.visits.book import TravelPolicy

logger = logging.getLogger(__name__)

# How long a stopping worker waits for the batch in hand to be stored before it gives up and
# exits without acknowledging it (the batch is then redelivered to the next worker).
SHUTDOWN_GRACE_S = 20.0
# How often a worker samples its consumer lag (committed vs end offsets of its partitions).
CONSUMER_LAG_INTERVAL_S = 5.0


def utc_now() -> datetime:
    return datetime.now(UTC)


# A worker allocates several tracked objects per event (models, rows); with the collector's default
# (a young collection every 700 allocations) the cyclic GC walked every live object over and over.
WORKER_GC_GEN0_THRESHOLD = 50_000


def tune_gc_for_worker() -> None:
    """Freeze what exists at start (modules, the app) out of the collector's way and collect young
    objects every ``WORKER_GC_GEN0_THRESHOLD`` allocations. Process-wide: call it in a worker
    process, once, before it starts consuming."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(WORKER_GC_GEN0_THRESHOLD, middle, oldest)


def kafka_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


class PipelineWorker:
    """Everything the agent does per batch, separated from Faust's wiring so it can be read alone."""

    def __init__(
        self,
        settings: Settings,
        sink: Sink,
        processor: BatchProcessor,
        send_dead_letter: Callable[[DeadLetter], Any],
        *,
        metrics: PipelineMetrics | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._processor = processor
        self._send_dead_letter = send_dead_letter
        self.metrics = metrics if metrics is not None else PipelineMetrics()
        self._clock = clock
        self.events_accepted = 0
        self.messages_done = 0

    async def handle(self, messages: list[RawMessage]) -> BatchOutcome:
        self.metrics.batch_received(messages)
        outcome = await self._process_until_read(messages)
        self.metrics.batch_decoded(outcome)
        self._sink.write(outcome.sink_batch)
        await self._flush_until_stored(outcome.sink_batch)
        self.metrics.batch_stored(outcome, stored_at=self._clock())
        for dead_letter in outcome.dead_letters:
            await self._send_dead_letter(dead_letter)
        self.metrics.dead_letters_published(outcome.dead_letters)
        self.events_accepted += outcome.accepted
        self.messages_done += outcome.messages
        if outcome.dead_letters:
            logger.warning(
                "%d dead letter(s) in a batch of %d messages; first: %s: %s",
                len(outcome.dead_letters),
                outcome.messages,
                outcome.dead_letters[0].reason,
                outcome.dead_letters[0].detail,
            )
        return outcome

    def _retry_delay(self, attempt: int) -> float:
        # Full jitter keeps many workers from hammering a recovering ClickHouse in step.
        cap = min(self._settings.sink_retry_max_seconds, 0.2 * 2**attempt)
        return random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not cryptography

    async def _process_until_read(self, messages: list[RawMessage]) -> BatchOutcome:
        """Process a batch, retrying with backoff while the stored history it needs cannot be read
        (ClickHouse down): consumption pauses, as it does for a failed flush."""
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(self._processor.process, messages)
            except HistoryReadError as exc:
                # The failed pass may have moved cached rep state past events that are not stored;
                # dropped, it is rebuilt from ClickHouse (the store of record) on the next try.
                self._processor.forget_all()
                self.metrics.clickhouse_write_failed(exc.table)
                attempt += 1
                delay = self._retry_delay(attempt)
                logger.warning(
                    "reading stored history for a batch of %d messages failed (attempt %d), retrying "
                    "in %.1fs; consumption is paused: %s",
                    len(messages),
                    attempt,
                    delay,
                    exc,
                )
                self.metrics.clickhouse_write_retried()
                await asyncio.sleep(delay)

    async def _flush_until_stored(self, batch: SinkBatch) -> None:
        attempt = 0
        rows = len(batch)
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._sink.flush)
            except SinkError as exc:
                self.metrics.clickhouse_write_failed(exc.table)
                attempt += 1
                delay = self._retry_delay(attempt)
                logger.warning(
                    "storing %d rows failed (attempt %d), retrying in %.1fs; consumption is paused: %s",
                    len(batch),
                    attempt,
                    delay,
                    exc,
                )
                self.metrics.clickhouse_write_retried()
                await asyncio.sleep(delay)
            else:
                self.metrics.clickhouse_flushed(rows=rows, seconds=time.perf_counter() - started)
                return


async def consumer_lag(
    consumer: Any, admin: AIOKafkaAdminClient, group: str, topics: Collection[str]
) -> dict[tuple[str, int], int]:
    """Messages behind, per partition of ``topics`` assigned to this worker: the end offset minus
    the group's committed offset, or minus the start of the partition where the group has committed
    nothing. (Faust's own internal topics in the assignment are left out.)

    The worker commits a message only after it is stored, so this is what is not stored yet.
    """
    assigned = sorted(tp for tp in consumer.assignment() if tp.topic in topics)
    if not assigned:
        return {}
    # Faust's TP and aiokafka's TopicPartition are both (topic, partition) tuples: interchangeable keys.
    partitions = [TopicPartition(tp.topic, tp.partition) for tp in assigned]
    ends: dict[Any, int] = dict(await consumer.highwaters(*assigned))
    committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
    offsets: dict[tuple[str, int], int] = {}
    never_committed = []
    for tp in partitions:
        meta = committed.get(tp)
        if meta is None or meta.offset < 0:
            never_committed.append(tp)
        else:
            offsets[(tp.topic, tp.partition)] = meta.offset
    if never_committed:
        starts = await consumer.earliest_offsets(*never_committed)
        offsets.update({(tp.topic, tp.partition): starts[tp] for tp in never_committed})
    return {key: max(ends[key] - offset, 0) for key, offset in offsets.items()}


def create_app(
    settings: Settings,
    *,
    clock: Callable[[], datetime] = utc_now,
    metrics: PipelineMetrics | None = None,
) -> faust.App:
    """Build the Faust app for ``settings``: one agent over the event and rep topics.

    ``metrics`` defaults to a fresh registry for this worker; it is served on ``/metrics`` once the
    worker runs (see :func:`start_metrics_server`).
    """
    if settings.kafka_bootstrap is None:
        raise ValueError("create_app needs settings.kafka_bootstrap; start the embedded runtime first")
    if settings.kafka_embedded_compat:
        from streams.runtime.kafka_compat import install_end_offsets_fix, install_fetch_wait_cap

        install_end_offsets_fix()
        install_fetch_wait_cap()

    topics = settings.topics
    app = faust.App(
        settings.consumer_group,
        broker=kafka_urls(settings.kafka_bootstrap),
        store=settings.table_store,
        datadir=str(settings.home / "faust"),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=True,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_s,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_s,
        broker_commit_interval=0.2,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        logging_config=None,
    )
    source = app.topic(
        *topics.consumed,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    dead_letter_topic = app.topic(
        topics.dead_letters, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    client = connect(settings)
    database = settings.clickhouse_database
    history = ClickHouseHistory(client, database)
    processor = BatchProcessor(
        history=history,
        late_grace=timedelta(days=settings.late_grace_days),
        clock=clock,
        rep_topic=topics.reps,
        max_message_bytes=settings.max_message_bytes,
        dead_letter_topic=topics.dead_letters,
        deal_stages=settings.deal_stages,
        visits=history,
        accounts_refresh=timedelta(seconds=settings.accounts_refresh_s),
        travel_policy=TravelPolicy(max_speed_kmh=settings.visit_max_speed_kmh),
    )

    async def send_dead_letter(dead_letter: DeadLetter) -> None:
        key = (dead_letter.rep_id or "").encode("utf-8")
        value = orjson.dumps(dead_letter.model_dump(mode="json"))
        delivered = await dead_letter_topic.send(key=key, value=value)
        await delivered

    metrics = metrics if metrics is not None else PipelineMetrics()
    metrics.describe_worker(group=settings.consumer_group, topics=topics.consumed)
    metrics.declare_topics(topics.consumed)
    worker = PipelineWorker(
        settings, ClickHouseSink(client, database), processor, send_dead_letter, metrics=metrics, clock=clock
    )
    app.pipeline_worker = worker  # type: ignore[attr-defined]  # read by tests and the CLI

    @app.agent(source, name="salespulse.count_activity")
    async def count_activity(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for batch in stream.take_events(  # type: ignore[attr-defined]  # not in StreamT
            settings.worker_batch_messages, within=settings.worker_batch_seconds
        ):
            messages = [
                RawMessage(
                    event.message.key,
                    event.message.value,
                    MessageOrigin(event.message.topic, event.message.partition, event.message.offset),
                )
                for event in batch
            ]
            await _process_shielded(worker, messages)
            yield None

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # faust's signal typing is too narrow
    async def forget_moved_reps(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        # Another worker may own these reps now and move their state on; ours would go stale.
        if revoked:
            processor.forget_all()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def count_rebalance(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        metrics.rebalanced()

    metrics_server: WSGIServer | None = None
    lag_admin: AIOKafkaAdminClient | None = None
    lag_failing = False

    @app.task  # type: ignore[untyped-decorator]  # faust leaves its decorators untyped
    async def serve_metrics() -> None:
        nonlocal metrics_server
        metrics_server = start_metrics_server(settings, metrics.registry)

    @app.timer(CONSUMER_LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def sample_consumer_lag() -> None:
        nonlocal lag_admin, lag_failing
        try:
            if lag_admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
                try:
                    await admin.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await admin.close()
                    raise
                lag_admin = admin
            metrics.set_consumer_lag(
                await consumer_lag(app.consumer, lag_admin, settings.consumer_group, topics.consumed)
            )
            lag_failing = False
        except Exception as exc:  # noqa: BLE001 - a metrics sampler must never stop the worker
            metrics.consumer_lag_failed()
            if not lag_failing:  # once per failure streak, not every few seconds of an outage
                logger.warning(
                    "cannot sample the consumer lag (retrying every %.0fs): %r", CONSUMER_LAG_INTERVAL_S, exc
                )
            lag_failing = True

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_metrics(app: faust.App, **kwargs: Any) -> None:
        if metrics_server is not None:
            await asyncio.to_thread(metrics_server.shutdown)
            metrics_server.server_close()
        if lag_admin is not None:
            with contextlib.suppress(Exception):
                await lag_admin.close()

    @app.on_after_configured.connect  # type: ignore[arg-type]
    def _configured(app: faust.App, **kwargs: Any) -> None:
        logger.info("salespulse worker configured for %s", settings.kafka_bootstrap)

    return app


async def _process_shielded(worker: PipelineWorker, messages: list[RawMessage]) -> None:
    """Process a batch so that a shutdown cannot acknowledge it half-done.

    Faust acknowledges a ``take_events`` batch when the agent leaves it, even by cancellation. On a
    stop we therefore let the batch finish (bounded); if it cannot be stored in time we exit hard
    without committing, exactly as a crash would, and the batch is redelivered.
    """
    task = asyncio.ensure_future(worker.handle(messages))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, SHUTDOWN_GRACE_S)
        if not task.done() or task.cancelled() or task.exception() is not None:
            logger.critical("stopping with a batch that could not be stored; exiting without commit")
            os._exit(75)
        raise
    except Exception:
        # A bug, not bad input (bad input becomes dead letters). Leaving the agent would let Faust
        # acknowledge the batch; exiting without commit keeps every event for the next worker.
        logger.critical("unexpected error while processing a batch; exiting without commit", exc_info=True)
        os._exit(70)
