"""The worker pauses (retries with backoff) while the stored history a batch needs cannot be read,
as it does for a failed flush, and the retry counts every event of the batch exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from schemas.deadletter import DeadLetter
from schemas.events import CallEvent
from schemas.settings import Settings
from schemas.wire import MessageOrigin, encode_batch
from sinks.errors import HistoryReadError
from sinks.memory import InMemoryHistory, InMemorySink
from streams.app import PipelineWorker
from streams.metrics import PipelineMetrics
from streams.processor import BatchProcessor, RawMessage

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
ACTIVITIES = "t.activities"


class FlakyHistory(InMemoryHistory):
    """Fails the next ``failures`` reads of known ids (a read made after the batch's events were
    already applied to the cached rep state)."""

    def __init__(self, sink: InMemorySink) -> None:
        super().__init__(sink)
        self.failures = 0

    def known_event_ids(self, event_ids: list[str]) -> set[str]:
        if self.failures:
            self.failures -= 1
            raise HistoryReadError("db.events", ConnectionRefusedError("ClickHouse is down"))
        return super().known_event_ids(event_ids)


def call(n: int, days: float) -> CallEvent:
    return CallEvent(event_id=f"c{n}", rep_id="r1", type="call", occurred_at=T0 + timedelta(days=days))


def test_a_history_read_failing_mid_batch_is_retried_and_nothing_is_lost_or_doubled() -> None:
    sink = InMemorySink()
    history = FlakyHistory(sink)
    processor = BatchProcessor(
        history=history,
        late_grace=timedelta(days=10),
        clock=lambda: T0,
        rep_topic="t.reps",
        max_message_bytes=10**6,
    )
    metrics = PipelineMetrics(CollectorRegistry())
    sent: list[DeadLetter] = []

    async def send(letter: DeadLetter) -> None:
        sent.append(letter)

    worker = PipelineWorker(Settings(sink_retry_max_seconds=0.01), sink, processor, send, metrics=metrics)

    def message(offset: int, *events: CallEvent) -> RawMessage:
        return RawMessage(b"r1", encode_batch(list(events)), MessageOrigin(ACTIVITIES, 0, offset))

    asyncio.run(worker.handle([message(0, call(1, 30))]))
    # The late call makes the processor ask which ids are stored, after it has counted the new ones.
    history.failures = 2
    asyncio.run(worker.handle([message(1, call(2, 30.5), call(3, 31), call(4, 1))]))

    assert sorted(sink.stored_events()) == ["c1", "c2", "c3"]
    assert [letter.event_id for letter in sent] == ["c4"]  # too late, once
    assert {(day, kind): row.events for (_, day, kind), row in sink.stored_daily_activity().items()} == {
        ((T0 + timedelta(days=30)).date(), "call"): 2,
        ((T0 + timedelta(days=31)).date(), "call"): 1,
    }
    registry = metrics.registry
    assert registry.get_sample_value("salespulse_clickhouse_write_failures_total", {"table": "events"}) == 2
    assert registry.get_sample_value("salespulse_clickhouse_write_retries_total") == 2
