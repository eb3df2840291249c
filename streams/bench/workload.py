"""The benchmark's event mix: a seeded synthetic org, cut to ``events`` events and packed into
Kafka messages exactly as salespulse's own publishers pack them (one rep's events per message, up
to ``batch_max_events``, in event-time order), plus the expected KPI result counted by brute force.

Everything is a function of the arguments: two runs with the same ones produce the same bytes.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date

from schemas.events import EventKind
from schemas.settings import TopicNames
from schemas.wire import Event, encode_batch
from streams.kpi.activity import event_counters
from streams.synthetic import OrgSpec, estimate_total_events, generate_org, iter_events

# The expected result of the per-rep KPI job every path runs: events per (rep, UTC day, counter).
DailyCounts = dict[tuple[str, str, str], int]


@dataclass(frozen=True, slots=True)
class BenchMessage:
    topic: str
    key: bytes
    value: bytes
    events: int


@dataclass(frozen=True)
class Workload:
    messages: tuple[BenchMessage, ...]
    events: tuple[Event, ...]
    expected: DailyCounts
    reps: int
    days: int

    @property
    def event_count(self) -> int:
        return len(self.events)

    @property
    def payload_bytes(self) -> int:
        return sum(len(message.value) for message in self.messages)


def daily_counts(events: list[Event] | tuple[Event, ...]) -> DailyCounts:
    """The brute-force answer: every event once (by id), counted on its UTC day."""
    counts: Counter[tuple[str, str, str]] = Counter()
    seen: set[str] = set()
    for event in events:
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        day = event.occurred_at.astimezone(UTC).date().isoformat()
        for counter in event_counters(event):
            counts[(event.rep_id, day, counter)] += 1
    return dict(counts)


def build_workload(
    events: int,
    *,
    reps: int = 300,
    days: int = 60,
    seed: int = 7,
    batch_max_events: int = 200,
    topics: TopicNames | None = None,
    start: date | None = None,
) -> Workload:
    if events < 1:
        raise ValueError("events must be at least 1")
    topics = topics if topics is not None else TopicNames("salespulse.")
    spec_start = (
        OrgSpec().start
        if start is None
        else OrgSpec().start.replace(year=start.year, month=start.month, day=start.day)
    )
    spec = OrgSpec(reps=reps, teams=max(1, reps // 10), days=days, seed=seed, start=spec_start)
    # A little more than needed, so that the cut at ``events`` falls near the end of the period.
    scale = 1.05 * events / max(1, estimate_total_events(spec))
    spec = replace(spec, activity_scale=min(1000.0, max(0.01, scale)))
    org = generate_org(spec)
    chosen = tuple(itertools.islice(iter_events(org, spec), events))
    return Workload(
        messages=tuple(pack_messages(chosen, topics, batch_max_events)),
        events=chosen,
        expected=daily_counts(chosen),
        reps=len({event.rep_id for event in chosen}),
        days=days,
    )


def pack_messages(events: tuple[Event, ...], topics: TopicNames, batch_max_events: int) -> list[BenchMessage]:
    """Per (topic, rep) buffers sent when full, the rest at the end: what ``EventPublisher`` does
    when events arrive faster than its linger time."""
    buffers: dict[tuple[str, str], list[Event]] = {}
    messages: list[BenchMessage] = []
    for event in events:
        topic = topics.activities if event.kind is EventKind.ACTIVITY else topics.deals
        buffer = buffers.setdefault((topic, event.rep_id), [])
        buffer.append(event)
        if len(buffer) >= batch_max_events:
            messages.append(BenchMessage(topic, event.rep_id.encode(), encode_batch(buffer), len(buffer)))
            buffers[(topic, event.rep_id)] = []
    for (topic, rep_id), buffer in buffers.items():
        if buffer:
            messages.append(BenchMessage(topic, rep_id.encode(), encode_batch(buffer), len(buffer)))
    return messages
