"""Faults on the embedded runtime, each ending with exact totals in ClickHouse: nothing lost, nothing
counted twice.

Covered elsewhere, and not repeated here: a worker ``kill -9`` mid-stream and restart, then a full
re-read by a new consumer group (``test_pipeline.py``); workers dying and joining on eight partitions
(``test_scale_out.py``); the same file replayed twice through the CLI (``tests/e2e/test_cli.py``,
``test_replay_stores_every_valid_event_once_and_dead_letters_the_rest``); chat receivers answering
429/500, timing out or refusing connections, and an alerter killed mid-outage
(``test_notifiers.py``).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from reliability import (
    LatencyProxy,
    RestartableBroker,
    RestartableClickHouse,
    free_port,
    query,
    scrape,
    settle,
)
from test_pipeline import T0, expected_daily, isolated_pipeline, sample_events, start_worker, stored_daily

from schemas.events import CallEvent, DealCreatedEvent
from schemas.settings import Settings
from schemas.wire import Event
from streams.kafka import EventPublisher, consumer_progress, ensure_topics, start_producer
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration


async def publish(settings: Settings, events: list[Event]) -> None:
    producer = await start_producer(settings)
    try:
        publisher = EventPublisher(producer, settings)
        await publisher.publish_many(events)
        await publisher.flush()
    finally:
        await producer.stop()


def assert_exact(settings: Settings, events: list[Event]) -> None:
    """Every distinct event stored and counted once; the one deal of sample_events won once."""
    assert query(settings, "SELECT reason, count() FROM {db}.dead_letters GROUP BY reason") == []
    assert query(settings, "SELECT count() FROM {db}.events FINAL") == [(len({e.event_id for e in events}),)]
    assert stored_daily(settings) == expected_daily(events)
    assert query(settings, "SELECT deal_id, status, amount FROM {db}.deals FINAL") == [("D1", "won", 500)]


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


@pytest.fixture
def isolated(runtime: EmbeddedRuntime) -> Iterator[Settings]:
    with isolated_pipeline(runtime) as settings:
        yield settings


@pytest.fixture
def own_clickhouse(runtime: EmbeddedRuntime, tmp_path: Path) -> Iterator[RestartableClickHouse]:
    server = RestartableClickHouse(tmp_path / "clickhouse", runtime.log_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ------------------------------------------------------------------------------ ClickHouse down


@pytest.mark.parametrize(
    ("outage_s", "reps"), [(4, 6), pytest.param(25, 20, marks=pytest.mark.slow, id="long-outage")]
)
def test_clickhouse_down_for_a_while_pauses_consumption_and_loses_nothing(
    runtime: EmbeddedRuntime, own_clickhouse: RestartableClickHouse, outage_s: float, reps: int
) -> None:
    events = sample_events(reps=reps, per_rep=120)
    # Most reps are seen before the outage; the last two first appear during it, so the worker must also
    # read their history from the ClickHouse that is down.
    early = {f"rep{r}" for r in range(reps - 2)}
    before = [e for e in events if e.rep_id in early and e.occurred_at < T0 + timedelta(hours=300)]
    during = [e for e in events if e not in before]
    metrics_port = free_port()
    with isolated_pipeline(runtime, clickhouse_port=own_clickhouse.tcp_port) as settings:
        worker = start_worker(
            runtime,
            settings,
            "worker-clickhouse-down",
            {
                "SALESPULSE_CLICKHOUSE_PORT": str(own_clickhouse.tcp_port),
                "SALESPULSE_SINK_RETRY_MAX_SECONDS": "1",
                "SALESPULSE_METRICS_PORT": str(metrics_port),
            },
        )
        try:
            asyncio.run(publish(settings, before))
            settle(settings, worker)

            own_clickhouse.kill()
            asyncio.run(publish(settings, during))
            time.sleep(outage_s)
            progress = asyncio.run(consumer_progress(settings, settings.topics.consumed))
            assert progress.lag > 0, "the worker acknowledged messages it could not have stored"
            assert worker.is_running(), f"the worker gave up while ClickHouse was down:\n{worker.log_tail()}"

            own_clickhouse.start()
            settle(settings, worker)
            samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics", worker)
        finally:
            worker.stop()
        assert metric(samples, "salespulse_clickhouse_write_failures_total") >= 1
        assert metric(samples, "salespulse_clickhouse_write_retries_total") >= 1
        assert_exact(settings, events)


# -------------------------------------------------------------------------------- broker restart


@pytest.fixture
def own_broker(runtime: EmbeddedRuntime) -> Iterator[RestartableBroker]:
    broker = RestartableBroker(runtime.log_dir)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_a_broker_restart_loses_the_topics_and_republished_data_counts_once(
    runtime: EmbeddedRuntime, own_broker: RestartableBroker
) -> None:
    """The embedded broker keeps everything in memory: a restart loses every topic, record and
    committed offset. The worker survives it (it reconnects and rejoins), but its consumer still
    remembers how far it had read and would skip the new records below that offset, and it may
    commit those stale offsets to the new broker. So after such a restart: stop the workers,
    re-create the topics, start the workers in a fresh consumer group (or reset the group's
    offsets to the earliest), and re-send everything not known to be stored. ClickHouse's
    idempotence absorbs the overlap."""
    events = sample_events(reps=5, per_rep=80)
    half = len(events) // 2
    bootstrap = {"SALESPULSE_KAFKA_BOOTSTRAP": own_broker.bootstrap}
    with isolated_pipeline(runtime, kafka_bootstrap=own_broker.bootstrap) as settings:
        port = free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        worker = start_worker(
            runtime, settings, "worker-broker-restart", bootstrap | {"SALESPULSE_METRICS_PORT": str(port)}
        )
        try:
            asyncio.run(publish(settings, events[:half]))
            settle(settings, worker)
            rebalances = metric(scrape(metrics_url, worker), "salespulse_rebalances_total")
            own_broker.kill()
            time.sleep(1)
            own_broker.start()
            asyncio.run(ensure_topics(settings))
            # It rejoins the new broker's group (a new partition assignment) instead of crashing.
            deadline = time.monotonic() + 30
            while metric(scrape(metrics_url, worker), "salespulse_rebalances_total") <= rebalances:
                assert time.monotonic() < deadline, "the worker did not rejoin the restarted broker"
                time.sleep(0.2)
            assert worker.is_running()
        finally:
            worker.stop()

        fresh = settings.model_copy(update={"consumer_group": settings.consumer_group + "-after-restart"})
        worker = start_worker(runtime, fresh, "worker-after-broker-restart", bootstrap)
        try:
            asyncio.run(publish(fresh, events))  # everything: what was sent before the restart too
            settle(fresh, worker, timeout_s=120)
        finally:
            worker.stop()
        assert_exact(settings, events)


# ------------------------------------------------------------------------------ ClickHouse hangs


def test_a_clickhouse_that_hangs_without_closing_times_out_pauses_and_loses_nothing(
    runtime: EmbeddedRuntime,
) -> None:
    """A server that stops answering but keeps the connection open (a stuck disk, a frozen VM):
    each round trip fails after SALESPULSE_CLICKHOUSE_QUERY_TIMEOUT_S instead of the driver's five
    minutes, the worker retries with consumption paused, and once the server answers again every
    event is stored once, including inserts the hung connections delivered late."""
    events = sample_events(reps=6, per_rep=120)
    first = [e for e in events if e.occurred_at < T0 + timedelta(hours=300)]
    rest = [e for e in events if e not in first]
    metrics_port = free_port()
    with isolated_pipeline(runtime) as settings, LatencyProxy(runtime.clickhouse_port, 0) as proxy:
        worker = start_worker(
            runtime,
            settings,
            "worker-clickhouse-hangs",
            {
                "SALESPULSE_CLICKHOUSE_PORT": str(proxy.port),
                "SALESPULSE_CLICKHOUSE_QUERY_TIMEOUT_S": "1",
                "SALESPULSE_SINK_RETRY_MAX_SECONDS": "1",
                "SALESPULSE_METRICS_PORT": str(metrics_port),
            },
        )
        try:
            asyncio.run(publish(settings, first))
            settle(settings, worker)
            proxy.hang()
            asyncio.run(publish(settings, rest))
            # The driver pings an idle connection first (5 s), then every round trip times out in 1 s;
            # with the driver's default the first failure would take five minutes.
            deadline = time.monotonic() + 30
            while True:
                samples = scrape(f"http://127.0.0.1:{metrics_port}/metrics", worker)
                if metric(samples, "salespulse_clickhouse_write_failures_total") >= 2:
                    break
                assert time.monotonic() < deadline, "no ClickHouse round trip timed out within 30 s"
                time.sleep(0.5)
            progress = asyncio.run(consumer_progress(settings, settings.topics.consumed))
            assert progress.lag > 0, "the worker acknowledged messages it could not have stored"
            assert worker.is_running(), f"the worker gave up while ClickHouse hung:\n{worker.log_tail()}"
            proxy.resume()
            settle(settings, worker)
        finally:
            worker.stop()
        assert_exact(settings, events)


# ---------------------------------------------------------------------- slow ClickHouse, kill -9


def _wait_for_rows(settings: Settings, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while query(settings, "SELECT count() FROM {db}.rep_daily_activity") == [(0,)]:
        assert time.monotonic() < deadline, f"nothing stored within {timeout_s:.0f}s"
        time.sleep(0.05)


def run_slow_clickhouse_with_kills(runtime: EmbeddedRuntime, delay_s: float, kills: int, reps: int) -> None:
    """Events through a worker whose every ClickHouse round trip is delayed; ``kills`` times the
    worker is killed with SIGKILL while it is busy (most of its time goes to the slow inserts, so
    the kill lands inside a flush: some tables written, others not) and a new one takes over."""
    events = sample_events(reps=reps, per_rep=150)
    rng = random.Random(reps * 1000 + kills)
    chunks = [events[i :: kills + 1] for i in range(kills + 1)]
    with isolated_pipeline(runtime) as settings, LatencyProxy(runtime.clickhouse_port, delay_s) as proxy:
        slow = {"SALESPULSE_CLICKHOUSE_PORT": str(proxy.port), "SALESPULSE_WORKER_BATCH_MESSAGES": "5"}
        worker: ManagedProcess | None = None
        try:
            for n, chunk in enumerate(chunks):
                worker = start_worker(runtime, settings, f"worker-slow-{n}", slow)
                asyncio.run(publish(settings, chunk))
                if n < kills:
                    _wait_for_rows(settings)
                    time.sleep(rng.uniform(0.2, 1.5))
                    deadline = time.monotonic() + 10
                    while not proxy.busy():
                        assert time.monotonic() < deadline, "the worker never talked to ClickHouse"
                        time.sleep(0.001)
                    worker.kill_hard()
            assert worker is not None
            # Everything, again, in its original order: a producer re-sending after a timeout.
            asyncio.run(publish(settings, events))
            settle(settings, worker, timeout_s=180)
        finally:
            if worker is not None:
                worker.stop()
        assert proxy.chunks > 0  # the worker really went through the slow path
        assert_exact(settings, events)


def test_a_slow_clickhouse_and_a_worker_killed_mid_flush_keep_the_totals_exact(
    runtime: EmbeddedRuntime,
) -> None:
    run_slow_clickhouse_with_kills(runtime, delay_s=0.03, kills=1, reps=6)


@pytest.mark.slow
def test_repeated_kills_under_a_slow_clickhouse_keep_the_totals_exact(runtime: EmbeddedRuntime) -> None:
    run_slow_clickhouse_with_kills(runtime, delay_s=0.02, kills=4, reps=16)


# ------------------------------------------------------------------------------------ clock skew


def test_clock_skew_between_producers_is_late_within_the_grace_and_too_late_beyond_it(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    settings = isolated
    grace = timedelta(days=settings.late_grace_days)

    def calls(producer: str, rep: str, skew: timedelta, n: int = 20) -> list[Event]:
        return [
            CallEvent(
                event_id=f"{producer}-{i}",
                rep_id=rep,
                type="call",
                occurred_at=T0 + timedelta(hours=i) + skew,
            )
            for i in range(n)
        ]

    # Producer "ahead" runs a day fast: the correct producer's events of the same rep trail it by a
    # day, well within the grace, and all count (each on its own clock's day).
    ahead = calls("ahead", "rep-near", timedelta(days=1))
    correct_near = calls("correct-near", "rep-near", timedelta(0))
    # Producer "far-ahead" runs 40 days fast, past the 35-day grace: the correct producer's events
    # of that rep are too late, each one a dead letter. Its deals, another stream, are unaffected.
    far_ahead = calls("far-ahead", "rep-far", timedelta(days=40))
    correct_far = calls("correct-far", "rep-far", timedelta(0))
    deal = DealCreatedEvent(
        event_id="correct-deal",
        rep_id="rep-far",
        type="deal_created",
        occurred_at=T0,
        deal_id="D9",
        amount=10,
    )
    assert far_ahead[0].occurred_at - correct_far[-1].occurred_at > grace

    worker = start_worker(runtime, settings, "worker-clock-skew")
    try:
        # One producer after the other, so the skewed events are the rep's newest when the correct
        # ones arrive (the order within a rep's partition is the order the worker judges).
        for producer_events in (ahead, far_ahead, correct_near, correct_far, [deal]):
            asyncio.run(publish(settings, producer_events))
        settle(settings, worker)
    finally:
        worker.stop()

    counted = [*ahead, *correct_near, *far_ahead, deal]
    assert query(settings, "SELECT count() FROM {db}.events FINAL") == [(len(counted),)]
    assert stored_daily(settings) == expected_daily(counted)
    letters = query(settings, "SELECT reason, event_id FROM {db}.dead_letters FINAL ORDER BY event_id")
    assert letters == sorted(("too_late", e.event_id) for e in correct_far)
