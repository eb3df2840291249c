"""Real events through the real embedded broker, a real worker process and the real ClickHouse."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.events import SALES_EVENT_ADAPTER, CallEvent, DealCreatedEvent, DealWonEvent, EmailEvent
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import Event
from sinks.clickhouse import connect
from streams.kafka import EventPublisher, start_producer, wait_until_consumed
from streams.orchestration import pipeline_env, prepare_storage_and_topics, start_worker_process
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


@contextmanager
def isolated_pipeline(runtime: EmbeddedRuntime, **overrides: object) -> Iterator[Settings]:
    """Fresh topics, consumer group and database on the session's servers, dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    settings = runtime.settings_for_children().model_copy(
        update={
            "topic_prefix": f"t{tag}.",
            "consumer_group": f"g{tag}",
            "clickhouse_database": f"db_{tag}",
            "kafka_embedded_compat": runtime.started_broker,
            **overrides,
        }
    )
    prepare_storage_and_topics(settings)
    try:
        yield settings
    finally:
        client = connect(settings)
        try:
            client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database}")
        finally:
            client.disconnect()


@pytest.fixture
def isolated(runtime: EmbeddedRuntime) -> Iterator[Settings]:
    with isolated_pipeline(runtime) as settings:
        yield settings


def start_worker(
    runtime: EmbeddedRuntime, settings: Settings, name: str, extra: dict[str, str] | None = None
) -> ManagedProcess:
    return start_worker_process(runtime, name=name, extra_env=pipeline_env(settings) | (extra or {}))


def sample_events(reps: int, per_rep: int) -> list[Event]:
    events: list[Event] = []
    for r in range(reps):
        for i in range(per_rep):
            at = T0 + timedelta(hours=i * 5)
            if i % 3 == 0:
                events.append(
                    EmailEvent(event_id=f"r{r}-{i}", rep_id=f"rep{r}", type="email", occurred_at=at)
                )
            else:
                events.append(
                    CallEvent(
                        event_id=f"r{r}-{i}",
                        rep_id=f"rep{r}",
                        type="call",
                        occurred_at=at,
                        outcome="connected",
                    )
                )
    events.append(
        DealCreatedEvent(
            event_id="d1", rep_id="rep0", type="deal_created", occurred_at=T0, deal_id="D1", amount=500
        )
    )
    events.append(
        DealWonEvent(
            event_id="d2",
            rep_id="rep0",
            type="deal_won",
            occurred_at=T0 + timedelta(days=1),
            deal_id="D1",
            amount=500,
        )
    )
    return events


async def publish(settings: Settings, events: list[Event], raw: list[tuple[str, bytes, bytes]]) -> None:
    producer = await start_producer(settings)
    try:
        publisher = EventPublisher(producer, settings)
        await publisher.publish_many(events)
        await publisher.flush()
        for topic, key, value in raw:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


def expected_daily(events: list[Event]) -> Counter[tuple[str, str, str]]:
    """Distinct events per rep, UTC day and type, plus connected calls as their own counter."""
    distinct = {e.event_id: e for e in events}
    counts: Counter[tuple[str, str, str]] = Counter()
    for e in distinct.values():
        day = e.occurred_at.date().isoformat()
        counts[(e.rep_id, day, e.type)] += 1
        if isinstance(e, CallEvent) and e.outcome == "connected":
            counts[(e.rep_id, day, "call_connected")] += 1
    return counts


def stored_daily(settings: Settings) -> Counter[tuple[str, str, str]]:
    client = connect(settings)
    try:
        database = settings.clickhouse_database
        rows = client.execute(
            f"SELECT rep_id, toString(day), type, events FROM {database}.rep_daily_activity FINAL"
        )
    finally:
        client.disconnect()
    return Counter({(r, d, t): n for r, d, t, n in rows if n})


def rows(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    client = connect(settings)
    try:
        return list(client.execute(sql.format(db=settings.clickhouse_database)))
    finally:
        client.disconnect()


def scalar(settings: Settings, sql: str) -> int:
    client = connect(settings)
    try:
        return int(client.execute(sql.format(db=settings.clickhouse_database))[0][0])
    finally:
        client.disconnect()


async def read_dead_letters(settings: Settings, expected: int) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(
        settings.topics.dead_letters,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[dict[str, object]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while len(found) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                found.extend(orjson.loads(record.value) for record in records)
    finally:
        await consumer.stop()
    return found


def test_events_duplicates_and_malformed_input_give_exact_counts(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    settings = isolated
    events = sample_events(reps=5, per_rep=40)
    # The same event again in a later message of its own (a producer retry), and one straight
    # duplicate inside a batch: neither may count twice.
    duplicate = events[7]
    batch_with_bad = orjson.dumps(
        [
            duplicate.model_dump(mode="json"),
            {
                "event_id": "naive",
                "type": "call",
                "rep_id": duplicate.rep_id,
                "occurred_at": "2026-05-04T10:00:00",
            },
            {
                "event_id": "ok-extra",
                "type": "demo",
                "rep_id": duplicate.rep_id,
                "occurred_at": "2026-05-05T10:00:00Z",
            },
            {
                "event_id": "nope",
                "type": "teleport",
                "rep_id": duplicate.rep_id,
                "occurred_at": "2026-05-05T10:00:00Z",
            },
        ]
    )
    single_event = orjson.dumps(
        {
            "event_id": "single",
            "type": "meeting_held",
            "rep_id": "rep2",
            "occurred_at": "2026-05-06T10:00:00+02:00",
        }
    )
    raw = [
        (
            settings.topics.activities,
            duplicate.rep_id.encode(),
            orjson.dumps(duplicate.model_dump(mode="json")),
        ),
        (settings.topics.activities, duplicate.rep_id.encode(), batch_with_bad),
        (settings.topics.activities, b"rep3", b'{"event_id": "trunc", "type": "call"'),
        (settings.topics.activities, b"rep2", single_event),
    ]
    # Everything valid that was sent, duplicates included; counts must equal its distinct events.
    all_valid = [
        *events,
        duplicate,
        SALES_EVENT_ADAPTER.validate_json(single_event),
        SALES_EVENT_ADAPTER.validate_python(orjson.loads(batch_with_bad)[2]),
    ]

    worker = start_worker(runtime, settings, "worker-exact")
    try:
        asyncio.run(publish(settings, events, raw))
        asyncio.run(wait_until_consumed(settings, settings.topics.consumed, timeout_s=90))
    finally:
        worker.stop()

    distinct_ids = {e.event_id for e in all_valid}
    assert scalar(settings, "SELECT count() FROM {db}.events FINAL") == len(distinct_ids)
    assert stored_daily(settings) == expected_daily(all_valid)
    stored_reasons = rows(settings, "SELECT reason FROM {db}.dead_letters FINAL ORDER BY reason")
    assert stored_reasons == [("invalid",), ("not_json",), ("unknown_type",)]
    letters = asyncio.run(read_dead_letters(settings, 3))
    reasons = sorted(str(letter["reason"]) for letter in letters)
    assert reasons == ["invalid", "not_json", "unknown_type"]
    naive = next(letter for letter in letters if letter["reason"] == "invalid")
    assert naive["index"] == 1 and naive["source"] == settings.topics.activities
    assert naive["offset"] is not None and naive["partition"] is not None


def test_worker_kill_and_a_second_pass_over_everything_count_nothing_twice(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    settings = isolated
    events = sample_events(reps=8, per_rep=300)
    first = start_worker(runtime, settings, "worker-killed")
    try:
        asyncio.run(publish(settings, events[: len(events) // 2], []))
        # Let it get going, then kill it without any chance to commit or flush.
        asyncio.run(_wait_for_some_rows(settings))
    finally:
        first.kill_hard()
    second = start_worker(runtime, settings, "worker-restarted")
    try:
        asyncio.run(publish(settings, events[len(events) // 2 :], []))
        asyncio.run(wait_until_consumed(settings, settings.topics.consumed, timeout_s=120))
    finally:
        second.stop()
    assert rows(settings, "SELECT reason, count() FROM {db}.dead_letters GROUP BY reason") == []
    assert scalar(settings, "SELECT count() FROM {db}.events FINAL") == len(events)
    assert stored_daily(settings) == expected_daily(events)
    assert rows(settings, "SELECT deal_id, status, amount, cycle_days FROM {db}.deals FINAL") == [
        ("D1", "won", 500, 1.0)
    ]

    # A new consumer group re-reads the topics from the start (like replaying the same file):
    # the state rebuilt from ClickHouse recognises every event, so nothing changes.
    again = settings.model_copy(update={"consumer_group": settings.consumer_group + "-again"})
    third = start_worker(runtime, again, "worker-again")
    try:
        asyncio.run(wait_until_consumed(again, again.topics.consumed, timeout_s=120))
    finally:
        third.stop()
    assert scalar(settings, "SELECT count() FROM {db}.events FINAL") == len(events)
    assert stored_daily(settings) == expected_daily(events)


async def _wait_for_some_rows(settings: Settings) -> None:
    for _ in range(200):
        if await asyncio.to_thread(scalar, settings, "SELECT count() FROM {db}.events") > 0:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the worker stored nothing within 20 s")


def test_reps_are_stored_and_bad_rep_records_dead_lettered(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    settings = isolated
    reps = [Rep(rep_id=f"rep{i}", name=f"Rep {i}", team="North", territory="EMEA") for i in range(3)]

    async def go() -> None:
        producer = await start_producer(settings)
        try:
            publisher = EventPublisher(producer, settings)
            for rep in reps:
                await publisher.publish_rep(rep)
            await publisher.flush()
            await producer.send_and_wait(settings.topics.reps, key=b"x", value=b'{"rep_id": "x"}')
        finally:
            await producer.stop()

    worker = start_worker(runtime, settings, "worker-reps")
    try:
        asyncio.run(go())
        asyncio.run(wait_until_consumed(settings, settings.topics.consumed, timeout_s=60))
    finally:
        worker.stop()
    assert scalar(settings, "SELECT count() FROM {db}.reps FINAL") == 3
    assert scalar(settings, "SELECT count() FROM {db}.dead_letters FINAL") == 1
