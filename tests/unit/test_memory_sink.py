"""The in-memory sink and history: the test doubles the stream layer's tests rely on."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import CallEvent, DealWonEvent, EmailEvent
from schemas.reps import Rep
from schemas.wire import Event, MessageOrigin
from sinks.base import DailyActivityRow, EventHistory, IngestedEvent, RepHistoryEntry, Sink, SinkBatch
from sinks.errors import SinkError
from sinks.memory import InMemoryHistory, InMemorySink

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ORIGIN = MessageOrigin("salespulse.activities", 0, 10)


def call(event_id: str, rep_id: str = "rep-1", at: datetime = T0) -> CallEvent:
    return CallEvent(event_id=event_id, rep_id=rep_id, type="call", occurred_at=at)


def ingested(event: Event) -> IngestedEvent:
    return IngestedEvent(event, ORIGIN, T0 + timedelta(minutes=1))


def batch_of(*events: Event) -> SinkBatch:
    return SinkBatch(events=[ingested(e) for e in events])


def dead_letter(offset: int | None, rejected_at: datetime = T0, detail: str = "bad") -> DeadLetter:
    return DeadLetter(
        reason=DeadLetterReason.NOT_JSON,
        detail=detail,
        source="salespulse.activities",
        partition=None if offset is None else 0,
        offset=offset,
        payload_excerpt="{oops",
        rejected_at=rejected_at,
    )


def test_both_doubles_satisfy_the_interfaces() -> None:
    sink: Sink = InMemorySink()
    history: EventHistory = InMemoryHistory()
    assert sink is not None
    assert history is not None


def test_flush_moves_the_buffer_to_flushed_in_order() -> None:
    sink = InMemorySink()
    sink.write(batch_of(call("e1")))
    sink.write(batch_of(call("e2")))
    assert sink.flushed == []
    assert len(sink.pending) == 2

    sink.flush()
    sink.flush()  # nothing buffered: no empty batch is recorded

    assert [[i.event.event_id for i in b.events] for b in sink.flushed] == [["e1", "e2"]]
    assert len(sink.pending) == 0
    assert sink.flush_attempts == 2


def test_buffer_is_a_copy_of_what_was_written() -> None:
    sink = InMemorySink()
    batch = batch_of(call("e1"))
    sink.write(batch)
    batch.events.clear()  # a caller reusing its batch object must not change what was written
    sink.flush()
    assert [i.event.event_id for i in sink.flushed[0].events] == ["e1"]


def test_injected_failures_raise_and_keep_the_buffer_for_the_retry() -> None:
    sink = InMemorySink(fail_next_flushes=2)
    sink.write(batch_of(call("e1")))

    for _ in range(2):
        with pytest.raises(SinkError, match=r"writing to memory failed: ConnectionError: injected failure"):
            sink.flush()
        assert sink.flushed == []
        assert len(sink.pending) == 1

    sink.flush()
    assert [i.event.event_id for i in sink.flushed[0].events] == ["e1"]
    assert sink.flush_attempts == 3


def test_a_custom_failure_is_the_cause() -> None:
    sink = InMemorySink()
    boom = TimeoutError("clickhouse is slow")
    sink.fail_next_flushes(1, boom)
    sink.write(batch_of(call("e1")))
    with pytest.raises(SinkError) as raised:
        sink.flush()
    assert raised.value.table == "memory"
    assert raised.value.cause is boom
    sink.flush()
    assert len(sink.flushed) == 1


def test_negative_failure_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        InMemorySink(fail_next_flushes=-1)


def test_close_drops_unflushed_rows_loudly_and_refuses_more_writes(caplog: pytest.LogCaptureFixture) -> None:
    sink = InMemorySink()
    sink.write(batch_of(call("e1"), call("e2")))
    with caplog.at_level(logging.WARNING, logger="sinks.memory"):
        sink.close()
    assert "2 unflushed rows" in caplog.text
    sink.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(batch_of(call("e3")))
    with pytest.raises(RuntimeError, match="closed"):
        sink.flush()


def test_stored_events_count_a_redelivered_event_once() -> None:
    sink = InMemorySink()
    for _ in range(2):
        sink.write(batch_of(call("e1"), call("e2")))
        sink.flush()
    assert sorted(sink.stored_events()) == ["e1", "e2"]


def test_stored_daily_activity_keeps_the_newest_absolute_count() -> None:
    day = T0.date()
    sink = InMemorySink()
    sink.write(SinkBatch(daily_activity=[DailyActivityRow("rep-1", day, "call", 3, T0)]))
    sink.write(
        SinkBatch(daily_activity=[DailyActivityRow("rep-1", day, "call", 5, T0 + timedelta(seconds=1))])
    )
    # A redelivered, older row arriving last must not win.
    sink.write(
        SinkBatch(daily_activity=[DailyActivityRow("rep-1", day, "call", 4, T0 - timedelta(seconds=1))])
    )
    sink.flush()
    assert {key: row.events for key, row in sink.stored_daily_activity().items()} == {
        ("rep-1", day, "call"): 5
    }


def test_stored_reps_keep_the_newest_version() -> None:
    old = Rep(rep_id="rep-1", name="Ann", team="east", territory="ny")
    new = Rep(rep_id="rep-1", name="Ann", team="west", territory="sf")
    sink = InMemorySink()
    sink.write(SinkBatch(reps=[(new, T0 + timedelta(days=1)), (old, T0)]))
    sink.flush()
    assert sink.stored_reps() == {"rep-1": new}


def test_stored_dead_letters_deduplicate_like_the_table() -> None:
    sink = InMemorySink()
    first = [dead_letter(None), dead_letter(7)]
    again = [dead_letter(None, T0 + timedelta(hours=1), "bad again"), dead_letter(7, T0 + timedelta(hours=1))]
    sink.write(SinkBatch(dead_letters=first))
    sink.write(SinkBatch(dead_letters=again))
    sink.flush()
    stored = sink.stored_dead_letters()
    assert sorted((d.offset or -1, d.rejected_at, d.detail) for d in stored) == [
        (-1, T0 + timedelta(hours=1), "bad again"),
        (7, T0 + timedelta(hours=1), "bad"),
    ]


def test_history_sees_flushed_events_only_oldest_first_each_once() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    later, earlier = call("e2", at=T0 + timedelta(hours=2)), call("e1", at=T0 + timedelta(hours=1))
    too_old = call("e0", at=T0 - timedelta(days=1))
    won = DealWonEvent(
        event_id="d1", rep_id="rep-2", type="deal_won", occurred_at=T0, deal_id="D1", amount=Decimal("10")
    )
    for _ in range(2):  # redelivered
        sink.write(batch_of(later, earlier, too_old, won))
        sink.flush()
    sink.write(batch_of(call("e9")))  # buffered, not durable: not history yet

    assert history.rep_history(["rep-1", "rep-2", "rep-3"], since=T0) == {
        "rep-1": [
            RepHistoryEntry("e1", "call", T0 + timedelta(hours=1)),
            RepHistoryEntry("e2", "call", T0 + timedelta(hours=2)),
        ],
        "rep-2": [RepHistoryEntry("d1", "deal_won", T0)],
        "rep-3": [],
    }
    assert history.rep_history(["rep-1", "rep-2"], since=T0, types={"deal_won"}) == {
        "rep-1": [],
        "rep-2": [RepHistoryEntry("d1", "deal_won", T0)],
    }
    assert history.known_event_ids(["e0", "e1", "e9", "nope"]) == {"e0", "e1"}


def test_history_accepts_events_added_directly() -> None:
    history = InMemoryHistory()
    email = EmailEvent(event_id="m1", rep_id="rep-1", type="email", occurred_at=T0)
    history.add([email, email])
    assert history.rep_history(["rep-1"], since=T0) == {"rep-1": [RepHistoryEntry("m1", "email", T0)]}
    assert history.rep_history([], since=T0) == {}
    assert history.known_event_ids([]) == set()
    assert history.rep_history(["rep-1"], since=T0 + timedelta(microseconds=1)) == {"rep-1": []}
