"""The Faust app: agents that feed the batch processor and acknowledge only what is stored.

Delivery is at-least-once end to end (the embedded broker has no transactions, and ClickHouse
writes are idempotent anyway). A batch of messages is acknowledged only after

1. its accepted events and aggregate rows are flushed to ClickHouse (retried with backoff for as
   long as ClickHouse is down: consumption pauses, nothing is dropped), and
2. its dead letters are acknowledged by the broker on the dead-letter topic (the worker reads that
   topic too and stores every dead letter on it, its own and those of other producers).

A worker killed at any point therefore sees the unacknowledged messages again, and the processor's
per-event deduplication makes the second pass count nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson

from schemas.deadletter import DeadLetter
from schemas.settings import Settings
from schemas.wire import MessageOrigin
from sinks.base import Sink, SinkBatch
from sinks.clickhouse import ClickHouseHistory, ClickHouseSink, connect
from sinks.errors import SinkError
from streams.processor import BatchOutcome, BatchProcessor, RawMessage

logger = logging.getLogger(__name__)

# How long a stopping worker waits for the batch in hand to be stored before it gives up and
# exits without acknowledging it (the batch is then redelivered to the next worker).
SHUTDOWN_GRACE_S = 20.0


def utc_now() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self._settings = settings
        self._sink = sink
        self._processor = processor
        self._send_dead_letter = send_dead_letter
        self.events_accepted = 0
        self.messages_done = 0

    async def handle(self, messages: list[RawMessage]) -> BatchOutcome:
        outcome = await asyncio.to_thread(self._processor.process, messages)
        self._sink.write(outcome.sink_batch)
        await self._flush_until_stored(outcome.sink_batch)
        for dead_letter in outcome.dead_letters:
            await self._send_dead_letter(dead_letter)
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

    async def _flush_until_stored(self, batch: SinkBatch) -> None:
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._sink.flush)
                return
            except SinkError as exc:
                attempt += 1
                # Full jitter keeps many workers from hammering a recovering ClickHouse in step.
                cap = min(self._settings.sink_retry_max_seconds, 0.2 * 2**attempt)
                delay = random.uniform(cap / 2, cap)  # noqa: S311 - jitter, not cryptography
                logger.warning(
                    "storing %d rows failed (attempt %d), retrying in %.1fs; consumption is paused: %s",
                    len(batch),
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)


def create_app(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> faust.App:
    """Build the Faust app for ``settings``: one agent over the event and rep topics."""
    if settings.kafka_bootstrap is None:
        raise ValueError("create_app needs settings.kafka_bootstrap; start the embedded runtime first")
    if settings.kafka_embedded_compat:
        from streams.runtime.kafka_compat import install_end_offsets_fix

        install_end_offsets_fix()

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
    processor = BatchProcessor(
        history=ClickHouseHistory(client, database),
        late_grace=timedelta(days=settings.late_grace_days),
        clock=clock,
        rep_topic=topics.reps,
        max_message_bytes=settings.max_message_bytes,
        dead_letter_topic=topics.dead_letters,
        deal_stages=settings.deal_stages,
    )

    async def send_dead_letter(dead_letter: DeadLetter) -> None:
        key = (dead_letter.rep_id or "").encode("utf-8")
        value = orjson.dumps(dead_letter.model_dump(mode="json"))
        delivered = await dead_letter_topic.send(key=key, value=value)
        await delivered

    worker = PipelineWorker(settings, ClickHouseSink(client, database), processor, send_dead_letter)
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
