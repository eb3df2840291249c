"""The offline replay: the worker's processing step over messages without Faust, Kafka or ClickHouse,
against a brute-force count of the same events, in one process and split over two."""

from __future__ import annotations

import gc
from datetime import timedelta

import pytest

from schemas.wire import MessageOrigin
from streams.bench.workload import build_workload
from streams.offline import replay_messages, replay_parallel
from streams.processor import RawMessage

GRACE = timedelta(days=35)


@pytest.mark.parametrize("workers", [1, 2])
def test_replay_counts_equal_a_brute_force_count(workers: int) -> None:
    workload = build_workload(3000, reps=40, days=20)
    messages = [
        RawMessage(m.key, m.value, MessageOrigin(m.topic, 0, i)) for i, m in enumerate(workload.messages)
    ]
    thresholds = gc.get_threshold()
    result = replay_parallel(messages, late_grace=GRACE, workers=workers)
    assert gc.get_threshold() == thresholds  # the batch-job collector settings do not leak
    assert result.events == 3000 and result.dead_letters == 0 and result.duplicates == 0
    counts = {(rep, day.isoformat(), counter): n for (rep, day, counter), n in result.daily_counts.items()}
    assert counts == workload.expected


def test_a_replayed_message_again_counts_nothing_twice() -> None:
    workload = build_workload(500, reps=10, days=10)
    messages = [
        RawMessage(m.key, m.value, MessageOrigin(m.topic, 0, i)) for i, m in enumerate(workload.messages)
    ]
    result = replay_messages(messages + messages[:5], late_grace=GRACE, batch_messages=7)
    assert result.events == 500
    assert result.duplicates == sum(m.events for m in workload.messages[:5])
    counts = {(rep, day.isoformat(), counter): n for (rep, day, counter), n in result.daily_counts.items()}
    assert counts == workload.expected
