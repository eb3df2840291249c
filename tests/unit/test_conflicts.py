"""A re-sent event_id with different content: the first copy counts, the other becomes a `conflict`
dead letter; a plain redelivery (same content, in any JSON spelling) stays a quiet duplicate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from schemas.deadletter import DeadLetterReason
from schemas.events import CallEvent, EmailEvent
from schemas.wire import Event, MessageOrigin, encode_batch
from sinks.memory import InMemoryHistory, InMemorySink
from streams.processor import BatchProcessor, RawMessage

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
NOW = datetime(2026, 3, 20, tzinfo=UTC)
ACTIVITIES = "activities"


def step(sink: InMemorySink, grace_days: int = 35) -> BatchProcessor:
    return BatchProcessor(
        history=InMemoryHistory(sink),
        late_grace=timedelta(days=grace_days),
        clock=lambda: NOW,
        rep_topic="reps",
        max_message_bytes=1_000_000,
    )


def message(events: list[Event], offset: int) -> RawMessage:
    return RawMessage(b"r1", encode_batch(events), MessageOrigin(ACTIVITIES, 0, offset))


def call(event_id: str, days: float = 0, outcome: str = "connected") -> CallEvent:
    return CallEvent(
        event_id=event_id, rep_id="r1", type="call", occurred_at=T0 + timedelta(days=days), outcome=outcome
    )


def run(processor: BatchProcessor, sink: InMemorySink, *messages: RawMessage) -> list[tuple[str, str | None]]:
    outcome = processor.process(list(messages))
    sink.write(outcome.sink_batch)
    sink.flush()
    return [(letter.reason.value, letter.event_id) for letter in outcome.dead_letters]


def test_a_plain_redelivery_is_a_duplicate_not_a_conflict() -> None:
    sink = InMemorySink()
    processor = step(sink)
    assert run(processor, sink, message([call("c1")], 0)) == []
    # The same event spelled differently on the wire (offset notation, key order) is the same event.
    respelled = orjson.dumps(
        [
            {
                "outcome": "connected",
                "occurred_at": "2026-03-02T10:00:00+01:00",
                "type": "call",
                "rep_id": "r1",
                "event_id": "c1",
            }
        ]
    )
    outcome = processor.process([RawMessage(b"r1", respelled, MessageOrigin(ACTIVITIES, 0, 1))])
    assert outcome.dead_letters == [] and outcome.duplicates == 1 and outcome.accepted == 0


def test_a_different_event_under_a_counted_id_is_a_conflict_and_the_first_copy_counts() -> None:
    sink = InMemorySink()
    processor = step(sink)
    run(processor, sink, message([call("c1")], 0))
    # A fresh processor has to find the counted copy in the store, as a restarted worker would.
    for current in (processor, step(sink)):
        outcome = current.process([message([call("c1", outcome="busy"), call("c2")], 1)])
        assert [(d.reason, d.event_id) for d in outcome.dead_letters] == [(DeadLetterReason.CONFLICT, "c1")]
        assert "outcome differ" in outcome.dead_letters[0].detail
        assert outcome.accepted == 1 and outcome.duplicates == 0
    assert sink.stored_events()["c1"].event.outcome == "connected"


def test_two_contents_for_one_id_in_one_batch_keep_the_first() -> None:
    sink = InMemorySink()
    processor = step(sink)
    email = EmailEvent(event_id="x", rep_id="r1", type="email", occurred_at=T0)
    letters = run(processor, sink, message([call("x"), email, call("x")], 0))
    assert letters == [("conflict", "x")]
    assert sink.stored_events()["x"].event.type == "call"
    assert {(day, kind): row.events for (_, day, kind), row in sink.stored_daily_activity().items()} == {
        (T0.date(), "call"): 1,
        (T0.date(), "call_connected"): 1,
    }


def test_a_conflicting_copy_behind_the_horizon_is_a_conflict_not_too_late() -> None:
    sink = InMemorySink()
    processor = step(sink, grace_days=10)
    run(processor, sink, message([call("old", 0)], 0))
    run(processor, sink, message([call("new", 30)], 1))
    letters = run(processor, sink, message([call("old", 0, outcome="voicemail"), call("late", 1)], 2))
    assert sorted(letters) == [("conflict", "old"), ("too_late", "late")]
