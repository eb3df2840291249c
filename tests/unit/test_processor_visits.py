"""Field visits in the processing step: verified in the stream against the stored accounts,
check-outs joined to their check-ins, nothing written twice on redelivery, and the same rows after
a rebuild from stored events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.accounts import Account
from schemas.events import VisitCheckOutEvent, VisitEvent
from schemas.wire import Event, MessageOrigin, encode_batch
from sinks.base import SinkBatch
from sinks.memory import InMemoryHistory, InMemorySink
from streams.processor import BatchProcessor, RawMessage

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
ACTIVITIES, REPS = "activities", "reps"
HQ = Account(account_id="acc-hq", name="HQ", lat=48.0, lon=11.0, radius_m=100.0, owner_rep_id="r1")


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now


def processor(history: InMemoryHistory, clock: Clock) -> BatchProcessor:
    return BatchProcessor(
        history=history,
        late_grace=timedelta(days=35),
        clock=clock,
        rep_topic=REPS,
        max_message_bytes=1_000_000,
        visits=history,
        accounts_refresh=timedelta(seconds=60),
    )


def message(events: list[Event], offset: int) -> RawMessage:
    return RawMessage(events[0].rep_id.encode(), encode_batch(events), MessageOrigin(ACTIVITIES, 0, offset))


def visit(event_id: str, minutes: int, account: str = "acc-hq", lat: float = 48.0) -> VisitEvent:
    return VisitEvent(
        event_id=event_id,
        type="visit",
        rep_id="r1",
        occurred_at=T0 + timedelta(minutes=minutes),
        account_id=account,
        lat=lat,
        lon=11.0,
        accuracy_m=10.0,
    )


def check_out(event_id: str, visit_id: str, minutes: int) -> VisitCheckOutEvent:
    return VisitCheckOutEvent(
        event_id=event_id,
        type="visit_check_out",
        rep_id="r1",
        occurred_at=T0 + timedelta(minutes=minutes),
        visit_id=visit_id,
    )


def run(step: BatchProcessor, sink: InMemorySink, events: list[Event], offset: int) -> SinkBatch:
    outcome = step.process([message(events, offset)])
    sink.write(outcome.sink_batch)
    sink.flush()
    return outcome.sink_batch


def test_visits_are_verified_and_completed_by_their_check_out_exactly_once() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    history.set_accounts([HQ])
    step = processor(history, Clock())
    first = run(step, sink, [visit("v1", 0), visit("v2", 120, lat=48.01)], 0)
    assert {(r.visit_id, r.status, r.duration_s) for r in first.visits} == {
        ("v1", "verified", None),
        ("v2", "out_of_range", None),
    }
    second = run(step, sink, [check_out("c1", "v1", 45)], 1)
    # v1 ends; v2's travel speed is now measured from v1's check-out (1.1 km in 75 minutes).
    assert [(r.visit_id, r.duration_s) for r in second.visits] == [("v1", 2700.0), ("v2", None)]
    assert (
        second.visits[1].travel_speed_kmh is not None and round(second.visits[1].travel_speed_kmh, 2) == 0.89
    )
    # Redelivery of both batches: duplicates, no rows.
    again = run(step, sink, [visit("v1", 0), visit("v2", 120, lat=48.01), check_out("c1", "v1", 45)], 0)
    assert again.visits == [] and again.events == []
    stored = sink.stored_visits()
    assert {v: (r.status, r.duration_s) for v, r in stored.items()} == {
        "v1": ("verified", 2700.0),
        "v2": ("out_of_range", None),
    }
    assert stored["v2"].distance_m is not None and round(stored["v2"].distance_m) == 1112


def test_a_rebuilt_worker_writes_the_same_rows_and_completes_stored_visits() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    history.set_accounts([HQ])
    run(processor(history, Clock()), sink, [visit("v1", 0)], 0)
    # A new worker (after a restart): the check-out of a visit stored by the old one.
    fresh = processor(history, Clock())
    rows = run(fresh, sink, [check_out("c1", "v1", 30)], 1).visits
    assert [(r.visit_id, r.status, r.duration_s) for r in rows] == [("v1", "verified", 1800.0)]


def test_an_account_imported_later_verifies_visits_in_memory_at_the_next_refresh() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    clock = Clock()
    step = processor(history, clock)
    (row,) = run(step, sink, [visit("v1", 0, account="acc-new")], 0).visits
    assert row.status == "unlocated"
    history.set_accounts([Account(account_id="acc-new", name="New", lat=48.0, lon=11.0)])
    clock.now += timedelta(seconds=30)  # not yet refreshed
    assert run(step, sink, [visit("v2", 60, account="acc-hq")], 1).visits[0].status == "unlocated"
    clock.now += timedelta(seconds=31)
    rows = run(step, sink, [check_out("c9", "v-none", 90)], 2).visits
    assert {(r.visit_id, r.status, r.check_in_missing) for r in rows} == {
        ("v1", "verified", False),
        ("v-none", "unlocated", True),
    }


def test_without_a_visit_history_no_visit_rows_are_made() -> None:
    sink = InMemorySink()
    step = BatchProcessor(
        history=InMemoryHistory(sink),
        late_grace=timedelta(days=35),
        clock=Clock(),
        rep_topic=REPS,
        max_message_bytes=1_000_000,
    )
    batch = run(step, sink, [visit("v1", 0)], 0)
    assert batch.visits == [] and len(batch.events) == 1


def test_a_check_out_of_a_visit_older_than_the_horizon_completes_it_instead_of_replacing_it() -> None:
    sink = InMemorySink()
    history = InMemoryHistory(sink)
    history.set_accounts([HQ])
    clock = Clock()
    clock.now = T0 + timedelta(days=40)
    step = processor(history, clock)
    run(step, sink, [visit("v-old", 0)], 0)
    # 36 days on: the old visit leaves memory; a new worker (after a restart) does not load it.
    later = 36 * 24 * 60
    run(step, sink, [visit("v-new", later)], 1)
    assert step.visits_of("r1") is not None and not step.visits_of("r1").has_check_in("v-old")  # type: ignore[union-attr]
    for worker in (step, processor(history, clock)):
        rows = run(worker, sink, [check_out(f"c-{id(worker)}", "v-old", later - 60)], 2).visits
        (row,) = [r for r in rows if r.visit_id == "v-old"]
        assert (row.check_in_missing, row.status) == (False, "verified")
        assert row.duration_s == (later - 60) * 60
    assert not sink.stored_visits()["v-old"].check_in_missing
