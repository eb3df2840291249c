"""Scale-out is Kafka partitions plus more workers in one consumer group: three workers share eight
partitions, one is killed mid-stream and another joins, and the totals stay exact."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from test_pipeline import expected_daily, isolated_pipeline, sample_events, start_worker, stored_daily

from schemas.settings import Settings
from schemas.wire import Event
from sinks.clickhouse import connect
from streams.kafka import EventPublisher, start_producer, wait_until_consumed
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration

PARTITIONS = 8


@pytest.fixture
def partitioned(runtime: EmbeddedRuntime) -> Iterator[Settings]:
    with isolated_pipeline(runtime, topic_partitions=PARTITIONS) as settings:
        yield settings


def stored_events(settings: Settings) -> int:
    client = connect(settings)
    try:
        return int(client.execute(f"SELECT count() FROM {settings.clickhouse_database}.events FINAL")[0][0])
    finally:
        client.disconnect()


def test_workers_joining_and_dying_mid_stream_keep_the_totals_exact(
    runtime: EmbeddedRuntime, partitioned: Settings
) -> None:
    settings = partitioned
    extra = {"SALESPULSE_TOPIC_PARTITIONS": str(PARTITIONS)}
    events = sample_events(reps=24, per_rep=150)
    workers: list[ManagedProcess] = []

    async def publish(chunk: list[Event]) -> None:
        producer = await start_producer(settings)
        try:
            publisher = EventPublisher(producer, settings)
            await publisher.publish_many(chunk)
            await publisher.flush()
        finally:
            await producer.stop()

    try:
        for n in range(3):
            workers.append(start_worker(runtime, settings, f"scale-{n}", extra))
        third = len(events) // 3
        asyncio.run(publish(events[:third]))
        deadline = time.monotonic() + 60
        while stored_events(settings) == 0:
            assert time.monotonic() < deadline, "nothing stored within 60 s"
            time.sleep(0.2)
        workers[1].kill_hard()  # mid-stream, no chance to commit or flush
        asyncio.run(publish(events[third : 2 * third]))
        workers.append(start_worker(runtime, settings, "scale-late", extra))
        asyncio.run(publish(events[2 * third :]))
        asyncio.run(wait_until_consumed(settings, settings.topics.consumed, timeout_s=180))
    finally:
        for worker in workers:
            worker.stop()

    assert stored_events(settings) == len({e.event_id for e in events})
    assert stored_daily(settings) == expected_daily(events)
