"""The per-rep activity state against a brute-force recount of the same events."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import CallEvent, EmailEvent, VisitEvent
from schemas.wire import Event
from streams.kpi.activity import (
    HistoricEvent,
    RepActivityState,
    apply_events,
    event_fingerprint,
    horizon_for,
    utc_day,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
GRACE = timedelta(days=3)
MODELS = {"call": CallEvent, "email": EmailEvent, "visit": VisitEvent}


def make(event_id: str, kind: str, minutes: int, rep_id: str = "r1") -> Event:
    return MODELS[kind](  # type: ignore[no-any-return]
        event_id=event_id, rep_id=rep_id, type=kind, occurred_at=T0 + timedelta(minutes=minutes)
    )


events_strategy = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # id space small enough to produce duplicates
        st.sampled_from(sorted(MODELS)),
        st.integers(min_value=0, max_value=60 * 24 * 10),  # ten days of minutes
    ),
    max_size=80,
)


def build(raw: list[tuple[int, str, int]]) -> list[Event]:
    # The same id always carries the same content, as a redelivery would.
    first: dict[int, tuple[str, int]] = {}
    for n, kind, minute in raw:
        first.setdefault(n, (kind, minute))
    return [make(f"e{n}", *first[n]) for n, _, _ in raw]


def brute_force(
    batches: list[list[Event]], grace: timedelta
) -> tuple[Counter[tuple[date, str]], datetime | None]:
    """Lateness by definition: more than ``grace`` behind the newest event before it in stream order."""
    seen: set[str] = set()
    newest: datetime | None = None
    counts: Counter[tuple[date, str]] = Counter()
    for event in (e for batch in batches for e in batch):
        newest = event.occurred_at if newest is None else max(newest, event.occurred_at)
        if event.occurred_at < newest - grace or event.event_id in seen:
            continue
        seen.add(event.event_id)
        counts[(utc_day(event.occurred_at), event.type)] += 1
    return counts, newest


def state_counts(state: RepActivityState) -> Counter[tuple[date, str]]:
    return Counter({(day, t): n for day, per in state.daily_counts.items() for t, n in per.items()})


@settings(max_examples=300, deadline=None)
@given(events_strategy, st.integers(min_value=1, max_value=10))
def test_counts_equal_a_brute_force_recount(raw: list[tuple[int, str, int]], batch_size: int) -> None:
    events = build(raw)
    batches = [events[i : i + batch_size] for i in range(0, len(events), batch_size)]
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    accepted = 0
    for batch in batches:
        result = apply_events(state, batch, GRACE)
        accepted += len(result.accepted)
        assert len(result.accepted) + len(result.duplicates) + len(result.too_late) == len(batch)
    expected, newest = brute_force(batches, GRACE)
    if newest is None:
        assert state_counts(state) == Counter()
        return
    horizon = horizon_for(newest, GRACE)
    assert state_counts(state) == Counter({k: n for k, n in expected.items() if k[0] >= horizon})
    assert accepted == sum(expected.values())
    assert state.horizon_start <= horizon or state.horizon_start == horizon


@settings(max_examples=200, deadline=None)
@given(events_strategy, st.randoms(use_true_random=False))
def test_within_grace_any_order_and_batching_gives_distinct_counts(raw, rnd) -> None:
    # With a grace longer than the whole span nothing is late: counts are exactly the distinct events.
    events = build(raw)
    rnd.shuffle(events)
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    cut = rnd.randint(0, len(events))
    apply_events(state, events[:cut], timedelta(days=30))
    apply_events(state, events[cut:], timedelta(days=30))
    distinct = {e.event_id: e for e in events}
    expected = Counter((utc_day(e.occurred_at), e.type) for e in distinct.values())
    assert state_counts(state) == expected


@settings(max_examples=150, deadline=None)
@given(events_strategy, st.integers(min_value=0, max_value=80))
def test_rebuild_from_history_continues_exactly(raw, split) -> None:
    """A worker that lost its state and rebuilt it from stored events counts like one that never did."""
    events = build(raw)
    first, second = events[:split], events[split:]
    continuous = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    stored = apply_events(continuous, first, GRACE).accepted
    apply_events(continuous, second, GRACE)

    history = [HistoricEvent(e.event_id, e.type, e.occurred_at, getattr(e, "outcome", None)) for e in stored]
    horizon = date(2000, 1, 1)
    rebuilt = RepActivityState.rebuild("r1", horizon, history)
    apply_events(rebuilt, second, GRACE)
    assert state_counts(rebuilt) == state_counts(continuous)
    assert rebuilt.newest_event_at == continuous.newest_event_at


def test_redelivered_batch_counts_once() -> None:
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    batch = [make("a", "call", 0), make("b", "call", 5), make("c", "email", 10)]
    first = apply_events(state, batch, GRACE)
    again = apply_events(state, batch, GRACE)
    assert len(first.accepted) == 3
    assert again.accepted == [] and len(again.duplicates) == 3
    assert state.count(T0.date(), "call") == 2
    assert state.count(T0.date(), "email") == 1


def test_late_event_beyond_grace_is_too_late_and_old_days_are_dropped() -> None:
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    apply_events(state, [make("old", "call", 0)], GRACE)
    result = apply_events(state, [make("new", "call", 60 * 24 * 5)], GRACE)
    assert [e.event_id for e in result.accepted] == ["new"]
    # The first day is now outside the horizon and no longer held in memory.
    assert T0.date() not in state.daily_counts
    late = apply_events(state, [make("late", "visit", 60)], GRACE)
    assert [e.event_id for e in late.too_late] == ["late"]


def test_late_within_grace_lands_on_its_own_day() -> None:
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    apply_events(state, [make("new", "call", 60 * 24 * 2)], GRACE)
    result = apply_events(state, [make("late", "call", 30)], GRACE)
    assert [e.event_id for e in result.accepted] == ["late"]
    assert state.count(T0.date(), "call") == 1
    assert state.rolling_counts(T0.date() + timedelta(days=2), 7) == {"call": 2}
    assert state.rolling_counts(T0.date() + timedelta(days=2), 1) == {"call": 1}


def test_fingerprint_is_stable_and_64_bit() -> None:
    assert event_fingerprint("abc") == event_fingerprint("abc")
    assert event_fingerprint("abc") != event_fingerprint("abd")
    assert 0 <= event_fingerprint("x") < 2**64


def test_in_order_backfill_longer_than_the_grace_in_one_call_is_never_late() -> None:
    # One worker batch can hold weeks of one rep's history (a replay); in time order none is late.
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    backfill = [make(f"b{i}", "call", i * 60 * 12) for i in range(40)]  # 20 days, grace is 3
    result = apply_events(state, backfill, GRACE)
    assert len(result.accepted) == 40 and result.too_late == []
    # Only the days inside the horizon stay in memory; the rest is already stored downstream.
    assert min(state.daily_counts) == horizon_for(backfill[-1].occurred_at, GRACE)


def test_changed_counts_include_days_already_dropped_from_memory() -> None:
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    backfill = [make(f"b{i}", "call", i * 60 * 24) for i in range(10)]  # one call a day, grace 3 days
    result = apply_events(state, backfill, GRACE)
    # Every day's count is reported for writing, including the days no longer kept in memory.
    assert result.changed == {(utc_day(e.occurred_at), "call"): 1 for e in backfill}


def test_connected_calls_are_their_own_counter_also_after_a_rebuild() -> None:
    calls = [
        CallEvent(event_id=f"c{i}", rep_id="r1", type="call", occurred_at=T0, outcome=outcome)
        for i, outcome in enumerate(["connected", "voicemail", "connected", None])
    ]
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    result = apply_events(state, calls, GRACE)
    assert result.changed == {(T0.date(), "call"): 4, (T0.date(), "call_connected"): 2}
    history = [HistoricEvent(c.event_id, c.type, c.occurred_at, c.outcome) for c in calls]
    rebuilt = RepActivityState.rebuild("r1", date(2000, 1, 1), history)
    assert rebuilt.daily_counts == state.daily_counts == {T0.date(): {"call": 4, "call_connected": 2}}


def test_counts_past_two_bytes_widen_the_array_and_stay_exact() -> None:
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    day = T0.date()
    for _ in range(70_000):
        state.add(day, "call")
    state.add(day, "email")
    assert state.counts.typecode == "I"
    assert state.count(day, "call") == 70_000 and state.count(day, "email") == 1


def test_a_new_counter_and_an_earlier_day_keep_every_count_in_place() -> None:
    state = RepActivityState("r1", horizon_start=date(2000, 1, 1))
    day = T0.date()
    state.add(day, "call")
    state.add(day + timedelta(days=2), "call")
    state.add(day - timedelta(days=1), "email")  # a new counter, on a day before the first
    state.add(day + timedelta(days=2), "visit")
    assert state.daily_counts == {
        day - timedelta(days=1): {"email": 1},
        day: {"call": 1},
        day + timedelta(days=2): {"call": 1, "visit": 1},
    }
    assert state.count(day + timedelta(days=1), "call") == 0
    assert state.count(day + timedelta(days=9), "call") == 0
    assert state.count(day, "demo") == 0
