"""The offline path: the live worker's pure processing step (:class:`streams.processor.BatchProcessor`)
run over stored messages without Faust, Kafka or ClickHouse, in large batches, on every core.

Messages are split by key over ``workers`` processes as Kafka splits them over partitions (a rep's
messages all go to one process, in order), so each process owns its reps' state outright and the
results simply add up. The store starts empty: this is a replay from nothing, so an event that is
too late is a dead letter here (the live worker would first ask ClickHouse whether it is a re-sent
duplicate).
"""

from __future__ import annotations

import gc
import multiprocessing
import resource
import time
import zlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from multiprocessing.connection import Connection

from schemas.wire import Event
from sinks.base import RepHistoryEntry, SinkBatch
from streams.processor import BatchProcessor, RawMessage

DailyKey = tuple[str, date, str]


class EmptyHistory:
    """``EventHistory`` of an empty store: a replay from nothing."""

    def rep_history(
        self, rep_ids: list[str], since: datetime, types: Collection[str] | None = None
    ) -> dict[str, list[RepHistoryEntry]]:
        return {rep_id: [] for rep_id in rep_ids}

    def known_event_ids(self, event_ids: list[str]) -> set[str]:
        return set()

    def stored_payloads_unlike(self, candidates: list[tuple[str, bytes]]) -> dict[str, bytes]:
        return {}

    def rep_deal_events(self, rep_ids: list[str], closed_since: datetime) -> dict[str, list[Event]]:
        return {rep_id: [] for rep_id in rep_ids}

    def deal_events(self, deal_ids: list[str]) -> list[Event]:
        return []


@dataclass
class OfflineResult:
    events: int = 0
    messages: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    daily_counts: dict[DailyKey, int] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mib: list[float] = field(default_factory=list)

    def merge(self, other: OfflineResult) -> None:
        self.events += other.events
        self.messages += other.messages
        self.dead_letters += other.dead_letters
        self.duplicates += other.duplicates
        self.daily_counts.update(other.daily_counts)
        self.peak_rss_mib.extend(other.peak_rss_mib)


@contextmanager
def batch_job_gc(gen0_threshold: int = 100_000) -> Iterator[None]:
    """The cyclic garbage collector tuned for a batch job: what exists now is frozen out of its
    way, and it runs after ``gen0_threshold`` allocations instead of 700. A replay allocates
    several tracked objects per event, so the default collector walked every live object (the
    events, the states) again and again: it was half the replay's time (100,000 events in one
    process, same run: 45k events/s by default, 91k frozen and with this threshold, 102k with the
    collector off). The previous settings come back afterwards."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(gen0_threshold, thresholds[1], thresholds[2])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def replay_messages(
    messages: Sequence[RawMessage],
    *,
    late_grace: timedelta,
    batch_messages: int = 2000,
    deal_stages: Sequence[str] = (),
    clock: datetime | None = None,
) -> OfflineResult:
    """Every message through one processor, ``batch_messages`` at a time; the daily counts kept
    are the newest absolute value per (rep, day, counter), as ClickHouse keeps them."""
    now = clock if clock is not None else datetime.now(UTC)
    processor = BatchProcessor(
        history=EmptyHistory(),
        late_grace=late_grace,
        clock=lambda: now,
        rep_topic="",
        max_message_bytes=1 << 62,
        deal_stages=deal_stages,
    )
    result = OfflineResult()
    started = time.perf_counter()
    with batch_job_gc():
        _replay_into(result, processor, messages, batch_messages)
    result.seconds = time.perf_counter() - started
    return result


def _replay_into(
    result: OfflineResult, processor: BatchProcessor, messages: Sequence[RawMessage], batch_messages: int
) -> None:
    for first in range(0, len(messages), batch_messages):
        outcome = processor.process(messages[first : first + batch_messages])
        batch: SinkBatch = outcome.sink_batch
        for row in batch.daily_activity:
            result.daily_counts[(row.rep_id, row.day, row.type)] = row.events
        result.events += outcome.accepted
        result.messages += outcome.messages
        result.dead_letters += len(outcome.dead_letters)
        result.duplicates += outcome.duplicates


def partition_of(key: bytes | None, partitions: int) -> int:
    return zlib.crc32(key or b"") % partitions


def _child(
    messages: Sequence[RawMessage], part: int, workers: int, late_grace: timedelta, out: Connection
) -> None:
    mine = [message for message in messages if partition_of(message.key, workers) == part]
    result = replay_messages(mine, late_grace=late_grace)
    # Peak resident set size of this process (KiB on Linux), shared pages from the fork included.
    result.peak_rss_mib = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]
    out.send(result)
    out.close()


def replay_parallel(messages: Sequence[RawMessage], *, late_grace: timedelta, workers: int) -> OfflineResult:
    """``replay_messages`` split by key over ``workers`` forked processes; wall time in ``seconds``."""
    if workers <= 1:
        return replay_messages(messages, late_grace=late_grace)
    context = multiprocessing.get_context("fork")
    started = time.perf_counter()
    children = []
    for part in range(workers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(messages, part, workers, late_grace, send))
        process.start()
        send.close()
        children.append((process, receive))
    total = OfflineResult()
    for process, receive in children:
        total.merge(receive.recv())
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"an offline replay worker exited with {process.exitcode}")
    total.seconds = time.perf_counter() - started
    return total


__all__ = ["EmptyHistory", "OfflineResult", "replay_messages", "replay_parallel"]
