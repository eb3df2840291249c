"""Kafka utilities at the edge: topic creation, the batching event publisher, and lag checks.

Only the Kafka protocol is spoken here, to whatever ``settings.kafka_bootstrap`` names; the code is
the same against the embedded broker and a production cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from schemas.deadletter import DeadLetter
from schemas.events import EventKind
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import Event, encode_batch

logger = logging.getLogger(__name__)

# Bounded in-flight sends: enough to keep the producer busy, little enough to bound memory.
MAX_IN_FLIGHT = 2000


class BrokerUnavailableError(RuntimeError):
    pass


def _bootstrap(settings: Settings) -> str:
    if settings.kafka_bootstrap is None:
        raise ValueError("no Kafka bootstrap servers configured (start the embedded runtime first)")
    if settings.kafka_embedded_compat:
        from streams.runtime.kafka_compat import install_end_offsets_fix

        install_end_offsets_fix()
    return settings.kafka_bootstrap


async def ensure_topics(settings: Settings) -> list[str]:
    """Create every topic the pipeline uses (idempotent). Returns the names created now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=_bootstrap(settings), request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise BrokerUnavailableError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}; is it running? "
            "(unset SALESPULSE_KAFKA_BOOTSTRAP to use the embedded broker)"
        ) from exc
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                # Explicit retention: some brokers only report configs that were set, and tools
                # that read them back (Quix Streams among them) expect the key to be present.
                topic_configs={"retention.ms": "-1", "retention.bytes": "-1"},
            )
            for name in settings.topics.all
            if name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                logger.info("topics were created concurrently by another process")
            created = [topic.name for topic in wanted]
    finally:
        await admin.close()
    return created


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        bootstrap_servers=_bootstrap(settings),
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        max_request_size=max(settings.max_message_bytes + 4096, 1_048_576),
    )
    try:
        await producer.start()
    except KafkaConnectionError as exc:
        await producer.stop()
        raise BrokerUnavailableError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    return producer


@dataclass
class PublishStats:
    events: int = 0
    messages: int = 0
    reps: int = 0
    dead_letters: int = 0


class EventPublisher:
    """Publishes events grouped per rep: one Kafka message carries up to ``max_events`` of one rep.

    A rep's buffer is sent when it is full or when its oldest event has waited ``linger_s``
    (``flush_due``), so a busy rep fills messages and a quiet one is not held back. ``flush`` waits
    until the broker acknowledged everything sent so far.
    """

    def __init__(
        self,
        producer: AIOKafkaProducer,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._topics = settings.topics
        self._max_events = settings.batch_max_events
        self._max_bytes = settings.max_message_bytes
        self._linger_s = settings.batch_linger_ms / 1000
        self._clock = clock
        self._buffers: dict[tuple[str, str], list[Event]] = {}
        self._first_buffered_at: dict[tuple[str, str], float] = {}
        self._in_flight: list[asyncio.Future[object]] = []
        self.stats = PublishStats()
        self._buffered_events = 0

    @property
    def buffered_events(self) -> int:
        """Events handed to ``publish`` and not yet sent."""
        return self._buffered_events

    def _topic_for(self, event: Event) -> str:
        return self._topics.activities if event.kind is EventKind.ACTIVITY else self._topics.deals

    async def publish(self, event: Event) -> None:
        key = (self._topic_for(event), event.rep_id)
        buffer = self._buffers.setdefault(key, [])
        if not buffer:
            self._first_buffered_at[key] = self._clock()
        buffer.append(event)
        self._buffered_events += 1
        if len(buffer) >= self._max_events:
            await self._send_buffer(key)

    async def publish_many(self, events: Iterable[Event]) -> None:
        for event in events:
            await self.publish(event)

    async def flush_due(self) -> None:
        now = self._clock()
        due = [key for key, since in self._first_buffered_at.items() if now - since >= self._linger_s]
        for key in due:
            await self._send_buffer(key)

    async def flush(self) -> None:
        for key in list(self._buffers):
            await self._send_buffer(key)
        await self._await_in_flight()

    async def publish_rep(self, rep: Rep) -> None:
        await self._send(self._topics.reps, rep.rep_id.encode(), rep.model_dump_json().encode())
        self.stats.reps += 1

    async def publish_dead_letter(self, dead_letter: DeadLetter) -> None:
        key = (dead_letter.rep_id or "").encode()
        await self._send(self._topics.dead_letters, key, orjson.dumps(dead_letter.model_dump(mode="json")))
        self.stats.dead_letters += 1

    async def _send_buffer(self, key: tuple[str, str]) -> None:
        events = self._buffers.pop(key, [])
        self._first_buffered_at.pop(key, None)
        if not events:
            return
        self._buffered_events -= len(events)
        topic, rep_id = key
        for chunk in self._chunks_within_size(events):
            await self._send(topic, rep_id.encode(), encode_batch(chunk))
            self.stats.events += len(chunk)
            self.stats.messages += 1

    def _chunks_within_size(self, events: list[Event]) -> Iterable[list[Event]]:
        """Split a batch whose encoding would exceed the message size limit (large attributes)."""
        pending = [events]
        while pending:
            chunk = pending.pop()
            if len(chunk) == 1 or len(encode_batch(chunk)) <= self._max_bytes:
                yield chunk
            else:
                middle = len(chunk) // 2
                pending.extend([chunk[middle:], chunk[:middle]])

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        try:
            future = await self._producer.send(topic, value=value, key=key)
        except KafkaError as exc:
            raise BrokerUnavailableError(f"could not publish to {topic}: {exc}") from exc
        self._in_flight.append(future)
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._await_in_flight()

    async def _await_in_flight(self) -> None:
        in_flight, self._in_flight = self._in_flight, []
        if in_flight:
            try:
                await asyncio.gather(*in_flight)
            except KafkaError as exc:
                raise BrokerUnavailableError(f"the broker did not acknowledge a publish: {exc}") from exc


@dataclass(frozen=True)
class ConsumerProgress:
    consumed: int
    total: int

    @property
    def lag(self) -> int:
        return self.total - self.consumed


async def consumer_progress(settings: Settings, topics: Iterable[str]) -> ConsumerProgress:
    """How far the pipeline's consumer group has committed on ``topics`` versus their end offsets.

    The worker commits a message only after everything it produced is stored, so committed equals
    processed-and-stored.
    """
    bootstrap = _bootstrap(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        await consumer.topics()  # refreshes metadata so partitions_for_topic knows every topic
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or set())
        ]
        if not partitions:
            return ConsumerProgress(0, 0)
        end_offsets = await consumer.end_offsets(partitions)
        committed = await admin.list_consumer_group_offsets(settings.consumer_group, partitions=partitions)
        consumed = 0
        for tp in partitions:
            meta = committed.get(tp)
            consumed += min(max(meta.offset, 0), end_offsets[tp]) if meta is not None else 0
        return ConsumerProgress(consumed=consumed, total=sum(end_offsets.values()))
    finally:
        await consumer.stop()
        await admin.close()


async def wait_until_consumed(
    settings: Settings,
    topics: Iterable[str],
    *,
    timeout_s: float,
    on_progress: Callable[[ConsumerProgress], Awaitable[None] | None] | None = None,
    poll_s: float = 0.25,
) -> ConsumerProgress:
    """Wait until the consumer group has committed up to the end of ``topics``."""
    topic_list = list(topics)
    deadline = time.monotonic() + timeout_s
    while True:
        progress = await consumer_progress(settings, topic_list)
        if on_progress is not None:
            maybe = on_progress(progress)
            if maybe is not None:
                await maybe
        if progress.lag <= 0:
            return progress
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the worker has not processed {progress.lag} message(s) after {timeout_s:.0f}s; "
                "is a worker running? (`salespulse worker`)"
            )
        await asyncio.sleep(poll_s)
