"""The processing step without Faust: raw messages in, rows and dead letters out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from schemas.deadletter import DeadLetterReason
from schemas.events import CallEvent, DealCreatedEvent, EventKind
from schemas.wire import Event, MessageOrigin, encode_batch
from sinks.memory import InMemoryHistory, InMemorySink
from streams.processor import BatchProcessor, RawMessage

T0 = datetime(2026, 1, 5, 9, tzinfo=UTC)
NOW = datetime(2026, 11, 26, tzinfo=UTC)
ACTIVITIES, DEALS, REPS = "activities", "deals", "reps"


def processor(history: InMemoryHistory, grace_days: int = 35) -> BatchProcessor:
    return BatchProcessor(
        history=history,
        late_grace=timedelta(days=grace_days),
        clock=lambda: NOW,
        rep_topic=REPS,
        max_message_bytes=1_000_000,
    )


def message(topic: str, events: list[Event], offset: int) -> RawMessage:
    return RawMessage(events[0].rep_id.encode(), encode_batch(events), MessageOrigin(topic, 0, offset))


def call(n: int, days: float) -> CallEvent:
    return CallEvent(event_id=f"c{n}", rep_id="r1", type="call", occurred_at=T0 + timedelta(days=days))


def test_deals_trailing_activities_by_more_than_the_grace_are_not_late() -> None:
    # Activities and deals come from different topics with no order between them: during a
    # backfill a rep's activities can run 60 days ahead of its deals. Neither stream is late.
    sink = InMemorySink()
    step = processor(InMemoryHistory(sink))
    calls = [call(i, i) for i in range(60)]
    deal = DealCreatedEvent(event_id="d1", rep_id="r1", type="deal_created", occurred_at=T0, deal_id="D1")
    outcome = step.process([message(ACTIVITIES, calls, 0), message(DEALS, [deal], 0)])
    assert outcome.accepted == 61 and outcome.dead_letters == []
    assert step.state_of("r1", EventKind.DEAL) is not None


def test_an_event_far_behind_its_own_stream_is_a_too_late_dead_letter_unless_already_stored() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    step = processor(history)
    stored = call(1, 0)
    history.add([stored])
    late_new = call(2, 1)
    outcome = step.process(
        [message(ACTIVITIES, [call(3, 60)], 0), message(ACTIVITIES, [stored, late_new], 1)]
    )
    # The stored one is a re-sent duplicate; the new one is genuinely late and kept as a dead letter.
    assert outcome.accepted == 1 and outcome.duplicates == 1
    assert [(d.reason, d.event_id, d.offset) for d in outcome.dead_letters] == [
        (DeadLetterReason.TOO_LATE, "c2", 1)
    ]


def test_malformed_items_in_a_batch_do_not_take_good_events_with_them() -> None:
    step = processor(InMemoryHistory(InMemorySink()))
    good = call(1, 0).model_dump(mode="json")
    value = orjson.dumps([good, {"event_id": "x", "type": "call", "rep_id": "r1"}, "not an object"])
    outcome = step.process([RawMessage(b"r1", value, MessageOrigin(ACTIVITIES, 2, 7))])
    assert outcome.accepted == 1
    assert sorted((d.reason.value, d.index) for d in outcome.dead_letters) == [
        ("invalid", 1),
        ("not_an_object", 2),
    ]
    assert all(d.partition == 2 and d.offset == 7 for d in outcome.dead_letters)


def test_state_rebuilt_from_history_after_forget_counts_nothing_twice() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    step = processor(history)
    batch = [message(ACTIVITIES, [call(i, i / 10) for i in range(20)], 0)]
    first = step.process(batch)
    sink.write(first.sink_batch)
    sink.flush()
    step.forget_all()  # a rebalance: the partition may come back with its messages redelivered
    again = step.process(batch)
    assert first.accepted == 20 and again.accepted == 0 and again.duplicates == 20
    assert sum(row.events for row in sink.stored_daily_activity().values()) == 20


def test_dead_letters_are_stored_from_the_dead_letter_topic_and_never_looped() -> None:
    step = BatchProcessor(
        history=InMemoryHistory(InMemorySink()),
        late_grace=timedelta(days=35),
        clock=lambda: NOW,
        rep_topic=REPS,
        max_message_bytes=1_000_000,
        dead_letter_topic="dlq",
    )
    found = step.process([RawMessage(b"r1", b"{not json", MessageOrigin(ACTIVITIES, 0, 3))])
    # What the worker finds is published (by the caller), not stored directly...
    assert [d.reason for d in found.dead_letters] == [DeadLetterReason.NOT_JSON]
    assert found.sink_batch.dead_letters == []
    # ...and stored when read back from the topic, like a dead letter of any other producer.
    letter = found.dead_letters[0]
    stored = step.process(
        [
            RawMessage(b"r1", letter.model_dump_json().encode(), MessageOrigin("dlq", 0, 0)),
            RawMessage(b"r1", b"garbage", MessageOrigin("dlq", 0, 1)),
        ]
    )
    assert stored.sink_batch.dead_letters == [letter]
    assert stored.dead_letters == []  # an unreadable dead letter is counted, not dead-lettered again
    assert stored.unreadable_dead_letters == 1


def deal_processor(sink: InMemorySink) -> BatchProcessor:
    return BatchProcessor(
        history=InMemoryHistory(sink),
        late_grace=timedelta(days=35),
        clock=lambda: NOW,
        rep_topic=REPS,
        max_message_bytes=1_000_000,
        deal_stages=("qualification", "proposal"),
    )


def flushed(sink: InMemorySink, outcome) -> None:  # type: ignore[no-untyped-def]
    sink.write(outcome.sink_batch)
    sink.flush()


def test_deal_rows_follow_the_deal_and_survive_a_state_rebuild() -> None:
    from schemas.events import DealStageChangedEvent, DealWonEvent

    sink = InMemorySink()
    step = deal_processor(sink)
    opened = DealCreatedEvent(
        event_id="d1",
        rep_id="r1",
        type="deal_created",
        occurred_at=T0,
        deal_id="D1",
        amount=900,
        stage="qualification",
    )
    flushed(sink, step.process([message(DEALS, [opened], 0)]))
    assert sink.stored_deals()["D1"].status == "open"
    step.forget_all()  # restart: the next events must find the deal's history
    moved = DealStageChangedEvent(
        event_id="d2", rep_id="r1", type="deal_stage_changed", deal_id="D1", stage="proposal",
        occurred_at=T0 + timedelta(days=3),
    )  # fmt: skip
    won = DealWonEvent(
        event_id="d3",
        rep_id="r1",
        type="deal_won",
        occurred_at=T0 + timedelta(days=10),
        deal_id="D1",
        amount=1000,
    )
    flushed(sink, step.process([message(DEALS, [moved, won], 1)]))
    row = sink.stored_deals()["D1"]
    assert (row.status, row.amount, row.cycle_days, row.stage_advancements) == ("won", 1000, 10.0, 1)
    assert row.opened_at == T0


def test_an_event_for_a_deal_closed_long_ago_reloads_the_deal_instead_of_starting_a_new_one() -> None:
    from schemas.events import DealStageChangedEvent, DealWonEvent

    sink = InMemorySink()
    step = deal_processor(sink)
    deal = [
        DealCreatedEvent(event_id="d1", rep_id="r1", type="deal_created", occurred_at=T0, deal_id="D1"),
        DealWonEvent(event_id="d2", rep_id="r1", type="deal_won", occurred_at=T0, deal_id="D1", amount=50),
    ]
    later = DealCreatedEvent(
        event_id="d3", rep_id="r1", type="deal_created", occurred_at=T0 + timedelta(days=90), deal_id="D2"
    )
    flushed(sink, step.process([message(DEALS, deal, 0), message(DEALS, [later], 1)]))
    book = step.deals_of("r1")
    assert book is not None and "D1" not in book.deals  # closed 90 days back: out of memory
    reopened = DealStageChangedEvent(
        event_id="d4", rep_id="r1", type="deal_stage_changed", deal_id="D1", stage="proposal",
        occurred_at=T0 + timedelta(days=91),
    )  # fmt: skip
    flushed(sink, step.process([message(DEALS, [reopened], 2)]))
    row = sink.stored_deals()["D1"]
    assert row.opened_at == T0 and row.status == "won"  # still the same deal, with its whole history
