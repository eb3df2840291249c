"""``salespulse bench``: every path over the same events, side by side in one run.

Per round, on a fresh embedded runtime (a new broker each round: it keeps every record in memory):

1. **pipeline**: a real ``salespulse worker`` is started and warmed up (group joined, one rep record
   stored); then the workload's messages are produced and the clock runs from the first send until
   the group has committed the last message, which the worker does only after the events and
   their aggregates are stored in ClickHouse. The stored daily counts are then read back.
2. **ceiling** (raw aiokafka consume + JSON decode) and **quix_peer** (the same KPI job in Quix
   Streams) read the same topics from the beginning, each in its own process, in alternating order.
3. **offline**: the same messages through the worker's pure processing step, without Faust or
   Kafka, split by key over every core.

Consumer throughput is events / (first record seen -> last one processed); group joins and process
starts are outside the clock. Then, once, the **latency** phase paces events at a fixed rate
through salespulse's own publisher and records when each becomes visible in ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

import schemas
from schemas.events import DealCreatedEvent, DealLostEvent
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import MessageOrigin
from sinks.clickhouse import connect
from streams.bench.ingest import ingest_throughput
from streams.bench.lag import LagProbe, until_caught_up, until_group_stable
from streams.bench.measure import peak_rss_mib
from streams.bench.workload import DailyCounts, Workload, build_workload
from streams.kafka import EventPublisher, start_producer
from streams.offline import replay_parallel
from streams.orchestration import (
    live_settings,
    pipeline_env,
    prepare_storage_and_topics,
    start_worker_process,
)
from streams.processor import RawMessage
from streams.runtime.supervisor import EmbeddedRuntime

BENCH_DATABASE = "salespulse_bench"
BENCH_GROUP = "salespulse-bench"
PEER_PYTHON_ENV = "SALESPULSE_BENCH_PEER_PYTHON"
LATE_GRACE = timedelta(days=35)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BenchOptions:
    events: int = 200_000
    rounds: int = 1
    # More than 1: the pipeline is also measured with this many workers (one consumer group sharing
    # the 4 partitions), as the path ``pipeline_N_workers``.
    workers: int = 1
    sales_reps: int = 300
    days: int = 60
    seed: int = 7
    latency_rate: float = 1000.0
    latency_seconds: float = 20.0
    # The alerter's tick during the latency phase (SALESPULSE_ALERT_INTERVAL_S; 60 s by default).
    alert_interval_s: float = 0.25
    alert_probes: int = 40
    offline_workers: int = 2
    peer: bool = True
    # Events posted to `salespulse serve` in batches of 500 (the ``ingest_http`` path); 0 skips it.
    ingest_events: int = 50_000
    # Where each round's runtime gets its temporary home (removed afterwards); None: the system's.
    workdir: Path | None = None


@dataclass
class Measurement:
    events: int
    seconds: float
    peak_rss_mib: float | None
    messages: int = 0
    results_equal: bool | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BenchReport:
    options: BenchOptions
    workload: dict[str, Any]
    measurements: dict[str, list[Measurement]] = field(default_factory=dict)
    latency: dict[str, Any] | None = None
    # The ingest_http path: one client posting batches to `salespulse serve` (streams.bench.ingest).
    ingest: dict[str, Any] | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    def add(self, path: str, measurement: Measurement) -> None:
        self.measurements.setdefault(path, []).append(measurement)

    def median_rate(self, path: str) -> float | None:
        runs = self.measurements.get(path)
        return statistics.median(m.events_per_s for m in runs) if runs else None

    def to_dict(self) -> dict[str, Any]:
        ceiling = self.median_rate("ceiling")
        peer = self.median_rate("quix_peer")
        paths = []
        for path, runs in self.measurements.items():
            rate = statistics.median(m.events_per_s for m in runs)
            rss = [m.peak_rss_mib for m in runs if m.peak_rss_mib is not None]
            paths.append(
                {
                    "path": path,
                    "events": runs[0].events,
                    "events_processed": [m.events for m in runs],
                    "events_per_s": round(rate, 1),
                    "events_per_s_runs": [round(m.events_per_s, 1) for m in runs],
                    "ratio_to_ceiling": round(rate / ceiling, 4) if ceiling else None,
                    "peer_events_per_s": round(peer, 1) if peer else None,
                    "ratio_to_peer": round(rate / peer, 3) if peer else None,
                    "peak_rss_mib": round(max(rss), 1) if rss else None,
                    "results_equal": all(m.results_equal for m in runs)
                    if all(m.results_equal is not None for m in runs)
                    else None,
                    "latency_ms": self.latency if path == "pipeline" else None,
                    "memory": self.memory if path == "pipeline" else None,
                }
            )
        if self.ingest is not None:
            rate = self.ingest["events_per_s"]
            paths.append(
                {
                    "path": "ingest_http",
                    "events": self.ingest["events"],
                    "events_processed": [self.ingest["accepted"]],
                    "events_per_s": rate,
                    "events_per_s_runs": [rate],
                    "ratio_to_ceiling": round(rate / ceiling, 4) if ceiling else None,
                    "peer_events_per_s": round(peer, 1) if peer else None,
                    "ratio_to_peer": round(rate / peer, 3) if peer else None,
                    "peak_rss_mib": None,
                    # Every accepted event stored once (counted in ClickHouse after the last answer).
                    "results_equal": self.ingest.get("stored")
                    == self.ingest["accepted"]
                    == self.ingest["events"],
                    "latency_ms": None,
                    "memory": None,
                    "request_ms": {k: self.ingest[k] for k in ("p50_ms", "p99_ms", "max_ms")},
                    "batch": self.ingest["batch"],
                    "stored_events_per_s": self.ingest.get("stored_events_per_s"),
                }
            )
        return {
            "machine": self.machine,
            "options": {
                "events": self.options.events,
                "reps": self.options.rounds,
                "workers": self.options.workers,
                "sales_reps": self.options.sales_reps,
                "latency_rate": self.options.latency_rate,
                "latency_seconds": self.options.latency_seconds,
                "offline_workers": self.options.offline_workers,
                "ingest_events": self.options.ingest_events,
            },
            "workload": self.workload,
            "paths": paths,
            "latency_ms": self.latency,
            "memory": self.memory,
            "targets": targets(self),
        }


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def bench_settings(home: Path) -> Settings:
    return Settings(
        home=home,
        clickhouse_database=BENCH_DATABASE,
        consumer_group=BENCH_GROUP,
        metrics_port=0,
        kafka_bootstrap=None,
        clickhouse_host=None,
    )


def peer_python() -> Path | None:
    """The interpreter of the Quix Streams peer's own environment (``make install`` creates it)."""
    configured = os.environ.get(PEER_PYTHON_ENV)
    if configured:
        return Path(configured)
    candidate = Path(sys.prefix) / "peer" / "bin" / "python"
    return candidate if candidate.exists() else None


def run_bench(options: BenchOptions, progress: Progress = lambda _: None) -> BenchReport:
    progress(f"building the workload: {options.events:,} events of {options.sales_reps} reps")
    workload = build_workload(options.events, reps=options.sales_reps, days=options.days, seed=options.seed)
    report = BenchReport(
        options=options,
        workload={
            "events": workload.event_count,
            "messages": len(workload.messages),
            "reps": workload.reps,
            "days": workload.days,
            "payload_bytes": workload.payload_bytes,
            "daily_counts": len(workload.expected),
        },
        machine=machine_info(),
    )
    python = peer_python() if options.peer else None
    if options.peer and python is None:
        raise RuntimeError(
            "the Quix Streams peer needs its environment: run `make install` (it creates .venv/peer), "
            f"or set {PEER_PYTHON_ENV}"
        )
    for round_index in range(options.rounds):
        _round(workload, options, report, round_index, python, progress, workers=1)
        if options.workers > 1:
            # The same pipeline with more workers, on servers of its own (a second pass over one
            # store would find every event already counted).
            _round(workload, options, report, round_index, None, progress, workers=options.workers)
    progress("offline replay")
    for _ in range(options.rounds):
        report.add("offline", _offline(workload, options.offline_workers))
    if options.ingest_events > 0:
        progress(f"HTTP ingest: {options.ingest_events:,} events to salespulse serve in batches of 500")
        report.ingest = ingest_throughput(
            events=options.ingest_events, batch=500, reps=100, workdir=options.workdir
        )
    report.memory = state_memory(workload)
    if options.latency_seconds > 0:
        progress(f"latency: {options.latency_rate:,.0f} events/s for {options.latency_seconds:.0f}s")
        report.latency = _latency_phase(options)
    report.machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def _round(
    workload: Workload,
    options: BenchOptions,
    report: BenchReport,
    round_index: int,
    python: Path | None,
    progress: Progress,
    *,
    workers: int,
) -> None:
    """One pipeline pass with ``workers`` workers; with one, the consumers over the same topics too."""
    with (
        tempfile.TemporaryDirectory(prefix="round-", dir=options.workdir) as home,
        EmbeddedRuntime(bench_settings(Path(home))) as runtime,
    ):
        live = live_settings(runtime)
        prepare_storage_and_topics(live)
        started = [
            runtime.manage(
                start_worker_process(
                    runtime,
                    f"worker-{index}",
                    extra_env=pipeline_env(live) | {"SALESPULSE_METRICS_PORT": "0"},
                )
            )
            for index in range(workers)
        ]
        pids = ", ".join(str(worker.pid) for worker in started)
        progress(f"round {round_index + 1}: pipeline ({workers} worker(s), pid {pids})")
        seconds = asyncio.run(_pipeline_pass(live, workload, workers))
        peaks = [rss for rss in (peak_rss_mib(worker.pid) for worker in started) if rss is not None]
        stored, events_stored = stored_daily_counts(live)
        report.add(
            "pipeline" if workers == 1 else f"pipeline_{workers}_workers",
            Measurement(
                events=events_stored,
                seconds=seconds,
                peak_rss_mib=max(peaks) if peaks else None,
                messages=len(workload.messages),
                results_equal=stored == workload.expected,
            ),
        )
        if workers > 1:
            return
        bootstrap = live.kafka_bootstrap
        if bootstrap is None:
            raise RuntimeError("the embedded runtime gave no broker address")
        topics = list(live.topics.event_topics)
        paths = ["ceiling", "quix_peer", "quix_peer_validated"]
        shift = round_index % len(paths)  # each round starts with another path
        for path in paths[shift:] + paths[:shift]:
            if path == "ceiling":
                progress(f"round {round_index + 1}: ceiling (raw aiokafka + orjson)")
                report.add("ceiling", _ceiling(bootstrap, topics, workload.event_count))
            elif python is not None:
                validated = path == "quix_peer_validated"
                what = " (salespulse's validation)" if validated else ""
                progress(f"round {round_index + 1}: Quix Streams peer{what}")
                report.add(
                    path, _quix_peer(python, bootstrap, topics, workload, stored, Path(home), validated)
                )


async def _pipeline_pass(
    settings: Settings, workload: Workload, workers: int, timeout_s: float = 1800.0
) -> float:
    """Seconds from the first message sent until the workers have stored and committed the last."""
    all_topics = LagProbe(settings, settings.topics.consumed)
    event_topics = LagProbe(settings, settings.topics.event_topics)
    await all_topics.start()
    await event_topics.start()
    # Every worker has joined and the rebalance is over: none starts during the measurement.
    await until_group_stable(all_topics, workers, timeout_s=120)
    producer = await start_producer(settings)
    try:
        # Warm-up outside the clock: the worker has joined its group and stored something.
        publisher = EventPublisher(producer, settings)
        await publisher.publish_rep(
            Rep(rep_id="bench-warmup", name="Bench Warm-up", team="bench", territory="bench")
        )
        await publisher.flush()
        await until_caught_up(all_topics, timeout_s=120)
        began = time.perf_counter()
        sends = [await producer.send(m.topic, value=m.value, key=m.key) for m in workload.messages]
        await asyncio.gather(*sends)
        await until_caught_up(event_topics, timeout_s=timeout_s, poll_s=0.02, at_least=len(workload.messages))
        return time.perf_counter() - began
    finally:
        await producer.stop()
        await all_topics.stop()
        await event_topics.stop()


def stored_daily_counts(settings: Settings) -> tuple[DailyCounts, int]:
    client = connect(settings)
    try:
        database = settings.clickhouse_database
        rows = client.execute(
            f"SELECT rep_id, toString(day), type, events FROM {database}.rep_daily_activity FINAL "
            "WHERE events > 0"
        )
        events = client.execute(f"SELECT count() FROM {database}.events FINAL")[0][0]
    finally:
        client.disconnect()
    return {(rep, day, counter): int(n) for rep, day, counter, n in rows}, int(events)


def _child_json(argv: Sequence[str], timeout_s: float = 1800.0) -> dict[str, Any]:
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{argv[1:3]} exited with {completed.returncode}: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def _ceiling(bootstrap: str, topics: list[str], expect: int) -> Measurement:
    argv = [sys.executable, "-m", "streams.bench.ceiling", "--bootstrap", bootstrap, "--expect", str(expect)]
    for topic in topics:
        argv += ["--topic", topic]
    result = _child_json(argv)
    return Measurement(
        events=result["events"],
        seconds=result["seconds"],
        peak_rss_mib=result["peak_rss_mib"],
        messages=result["messages"],
    )


def _quix_peer(
    python: Path,
    bootstrap: str,
    topics: list[str],
    workload: Workload,
    ours: DailyCounts,
    home: Path,
    validated: bool,
) -> Measurement:
    out = home / f"quix-peer-{int(validated)}.json"
    script = Path(__file__).with_name("quix_peer.py")
    argv = [str(python), str(script), "--bootstrap", bootstrap, "--expect", str(workload.event_count)]
    argv += ["--out", str(out), "--group", f"salespulse-bench-quix-{time.monotonic_ns()}"]
    for topic in topics:
        argv += ["--topic", topic]
    if validated:
        # The peer imports salespulse's pure `schemas` (pydantic only) from the source tree.
        argv += ["--contract", str(Path(schemas.__file__).resolve().parent.parent)]
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if completed.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"the Quix Streams peer exited with {completed.returncode}: {completed.stderr[-2000:]}"
        )
    result = json.loads(out.read_text())
    theirs = {(rep, day, counter): n for rep, day, counter, n in result["daily_counts"]}
    return Measurement(
        events=result["events"],
        seconds=result["seconds"],
        peak_rss_mib=result["peak_rss_mib"],
        messages=result["messages"],
        results_equal=theirs == ours and theirs == workload.expected,
    )


def _offline(workload: Workload, workers: int) -> Measurement:
    messages = [
        RawMessage(m.key, m.value, MessageOrigin(m.topic, 0, offset))
        for offset, m in enumerate(workload.messages)
    ]
    result = replay_parallel(messages, late_grace=LATE_GRACE, workers=workers)
    got = {(rep, day.isoformat(), counter): n for (rep, day, counter), n in result.daily_counts.items()}
    return Measurement(
        events=result.events,
        seconds=result.seconds,
        peak_rss_mib=max(result.peak_rss_mib) if result.peak_rss_mib else None,
        messages=result.messages,
        results_equal=got == workload.expected,
    )


# --- memory per rep --------------------------------------------------------------------------------


def deep_size(value: object, seen: set[int] | None = None) -> int:
    """Bytes held by ``value`` and everything it references (sys.getsizeof, each object once)."""
    seen = seen if seen is not None else set()
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        size += sum(deep_size(item, seen) for item in value)
    elif hasattr(value, "__slots__"):
        size += sum(deep_size(getattr(value, name), seen) for name in value.__slots__ if hasattr(value, name))
    return size


def state_memory(workload: Workload) -> dict[str, Any]:
    """Bytes of per-rep state after the whole workload, split into the KPI state (daily counters and
    the newest event time) and the duplicate-detection memory (one fingerprint per event inside
    the lateness horizon)."""
    from streams.offline import EmptyHistory
    from streams.processor import BatchProcessor

    processor = BatchProcessor(
        history=EmptyHistory(),
        late_grace=LATE_GRACE,
        clock=_bench_clock,
        rep_topic="",
        max_message_bytes=1 << 62,
    )
    messages = [
        RawMessage(m.key, m.value, MessageOrigin(m.topic, 0, i)) for i, m in enumerate(workload.messages)
    ]
    for first in range(0, len(messages), 2000):
        processor.process(messages[first : first + 2000])
    states = list(processor._states.values())  # a measurement reads the processor's own state
    reps = processor.cached_reps
    # The counter layouts are shared by every state (a handful in the whole process): not per rep.
    kpi = sum(
        sys.getsizeof(s) + deep_size(s.counts) + deep_size(s.newest_event_at) + deep_size(s.horizon_start)
        for s in states
    )
    dedupe = sum(deep_size(s.seen) + deep_size(s._days) for s in states)
    remembered = sum(len(s.seen) for s in states)
    return {
        "active_reps": reps,
        "kpi_state_bytes_per_rep": round(kpi / reps) if reps else None,
        "dedupe_bytes_per_rep": round(dedupe / reps) if reps else None,
        "remembered_event_ids_per_rep": round(remembered / reps) if reps else None,
        "dedupe_bytes_per_remembered_event": round(dedupe / remembered, 1) if remembered else None,
    }


def _bench_clock() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# --- latency ---------------------------------------------------------------------------------------


def _latency_phase(options: BenchOptions) -> dict[str, Any]:
    total = max(1, round(options.latency_rate * options.latency_seconds))
    workload = build_workload(total, reps=options.sales_reps, days=options.days, seed=options.seed + 1)
    with (
        tempfile.TemporaryDirectory(prefix="latency-", dir=options.workdir) as home,
        EmbeddedRuntime(bench_settings(Path(home))) as runtime,
    ):
        live = live_settings(runtime)
        prepare_storage_and_topics(live)
        runtime.manage(
            start_worker_process(runtime, extra_env=pipeline_env(live) | {"SALESPULSE_METRICS_PORT": "0"})
        )
        timings = asyncio.run(_paced(live, workload, options))
    latencies = sorted(
        (timings.visible[event_id] - at) * 1000
        for event_id, at in timings.produced.items()
        if event_id in timings.visible
    )
    ticks = sorted(seconds * 1000 for seconds in timings.ticks)
    alerts = sorted(
        (timings.alerted[rep_id] - at) * 1000
        for rep_id, at in timings.triggered.items()
        if rep_id in timings.alerted
    )
    return {
        "rate_events_per_s": options.latency_rate,
        "events": len(timings.produced),
        "visible": len(latencies),
        "event_to_kpi_p50": _percentile(latencies, 0.50),
        "event_to_kpi_p99": _percentile(latencies, 0.99),
        "event_to_kpi_max": round(latencies[-1], 1) if latencies else None,
        "poll_interval_ms": LATENCY_POLL_S * 1000,
        "alert_probes": len(timings.triggered),
        "alerts_seen": len(alerts),
        "alert_interval_ms": options.alert_interval_s * 1000,
        "event_to_alert_p50": _percentile(alerts, 0.50),
        "event_to_alert_p99": _percentile(alerts, 0.99),
        "event_to_alert_max": round(alerts[-1], 1) if alerts else None,
        "alerter_ticks": len(ticks),
        "alerter_tick_p50": _percentile(ticks, 0.50),
        "alerter_tick_p99": _percentile(ticks, 0.99),
    }


LATENCY_POLL_S = 0.05
ALERT_PROBE_QUOTA = Decimal("10000")
ALERT_PROBE_DEAL = Decimal("100000")


@dataclass
class LatencyTimings:
    """Wall-clock seconds: each event's production and first sighting in ClickHouse; each alert
    probe's trigger event and the alert it raised, read from the alerts topic."""

    produced: dict[str, float] = field(default_factory=dict)
    visible: dict[str, float] = field(default_factory=dict)
    triggered: dict[str, float] = field(default_factory=dict)
    alerted: dict[str, float] = field(default_factory=dict)
    # How long each alerter tick took (read ClickHouse, evaluate, store, publish), in seconds.
    ticks: list[float] = field(default_factory=list)


def _probe_reps(count: int) -> list[Rep]:
    return [
        Rep(
            rep_id=f"bench-alert-{index:02d}",
            name=f"Alert Probe {index:02d}",
            team="bench-alert-probes",
            territory="bench",
            quota_monthly=ALERT_PROBE_QUOTA,
        )
        for index in range(count)
    ]


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return round(sorted_values[index], 1)


async def _paced(settings: Settings, workload: Workload, options: BenchOptions) -> LatencyTimings:
    """Publish the workload's events at the rate through salespulse's publisher (its linger included),
    poll ClickHouse for every event's first sighting, and, with the alerter ticking, lose the one
    open deal of each alert probe rep (a 10x-covered quota drops to no pipeline, so
    ``pipeline_coverage_low`` fires) at points spread over the run."""
    from streams.alerter import Alerter, run_forever

    probe = LagProbe(settings, settings.topics.consumed)
    await probe.start()
    producer = await start_producer(settings)
    timings = LatencyTimings()
    client = connect(settings)
    database = settings.clickhouse_database
    probes = _probe_reps(options.alert_probes)
    alerts_consumer = AIOKafkaConsumer(
        settings.topics.alerts, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest"
    )
    stop_alerter = threading.Event()
    alerter_thread: threading.Thread | None = None
    try:
        publisher = EventPublisher(producer, settings)
        opened = datetime.now(UTC) - timedelta(hours=1)
        for rep in [
            Rep(rep_id="bench-warmup", name="Bench Warm-up", team="bench", territory="bench"),
            *probes,
        ]:
            await publisher.publish_rep(rep)
        for rep in probes:
            await publisher.publish(
                DealCreatedEvent(
                    event_id=f"{rep.rep_id}-deal-created",
                    type="deal_created",
                    rep_id=rep.rep_id,
                    occurred_at=opened,
                    deal_id=f"{rep.rep_id}-deal",
                    amount=ALERT_PROBE_DEAL,
                    stage="qualification",
                )
            )
        await publisher.flush()
        await until_caught_up(probe, timeout_s=120)
        await alerts_consumer.start()
        alerter = Alerter.from_settings(
            settings.model_copy(update={"alert_interval_s": options.alert_interval_s}), connect(settings)
        )
        untimed_tick = alerter.tick

        def timed_tick(now: datetime) -> Any:
            started = time.perf_counter()
            try:
                return untimed_tick(now)
            finally:
                timings.ticks.append(time.perf_counter() - started)

        alerter.tick = timed_tick  # type: ignore[method-assign]  # measured, otherwise the same tick
        alerter_thread = threading.Thread(
            target=run_forever,
            args=(alerter,),
            kwargs={
                "interval_s": options.alert_interval_s,
                "clock": lambda: datetime.now(UTC),
                "stop": stop_alerter.is_set,
            },
            name="bench-alerter",
            daemon=True,
        )
        alerter_thread.start()
        await asyncio.sleep(max(1.0, 3 * options.alert_interval_s))  # a few ticks: the probes are covered
        stop_polling = asyncio.Event()

        async def poll() -> None:
            while True:
                rows = await asyncio.to_thread(
                    client.execute,
                    f"SELECT event_id FROM {database}.events WHERE ingested_at >= now64(3) - 30",
                )
                seen_at = time.time()
                for (event_id,) in rows:
                    timings.visible.setdefault(event_id, seen_at)
                # Every timed event, by id: the probes' deal events are seen too and are not timed,
                # so comparing counts stopped early with some timed events not yet stored.
                if stop_polling.is_set() and timings.produced.keys() <= timings.visible.keys():
                    return
                await asyncio.sleep(LATENCY_POLL_S)

        async def watch_alerts() -> None:
            async for record in alerts_consumer:
                alert = json.loads(record.value)
                if (
                    alert["rule"] == "pipeline_coverage_low"
                    and alert["scope"] == "rep"
                    and alert["status"] == "firing"
                ):
                    timings.alerted.setdefault(alert["key"], time.time())
                if len(timings.alerted) >= len(probes):
                    return

        poller = asyncio.ensure_future(poll())
        watcher = asyncio.ensure_future(watch_alerts())
        total = len(workload.events)
        trigger_at = {round((k + 1) * total / (len(probes) + 1)): rep for k, rep in enumerate(probes)}
        began = time.monotonic()
        for index, event in enumerate(workload.events):
            due = began + index / options.latency_rate
            wait = due - time.monotonic()
            if wait > 0:
                await publisher.flush_due()
                await asyncio.sleep(wait)
            losing = trigger_at.get(index)
            if losing is not None:
                timings.triggered[losing.rep_id] = time.time()
                await publisher.publish(
                    DealLostEvent(
                        event_id=f"{losing.rep_id}-deal-lost",
                        type="deal_lost",
                        rep_id=losing.rep_id,
                        occurred_at=datetime.now(UTC),
                        deal_id=f"{losing.rep_id}-deal",
                        reason="bench alert probe",
                    )
                )
            timings.produced[event.event_id] = time.time()
            await publisher.publish(event)
        await publisher.flush()
        stop_polling.set()
        await asyncio.wait_for(poller, timeout=120)
        # A probe whose alert never came is reported as such (alerts_seen < alert_probes).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher, timeout=max(30.0, 10 * options.alert_interval_s))
    finally:
        stop_alerter.set()
        if alerter_thread is not None:
            alerter_thread.join(timeout=30)
        client.disconnect()
        await alerts_consumer.stop()
        await producer.stop()
        await probe.stop()
    return timings


# --- verdicts --------------------------------------------------------------------------------------


def targets(report: BenchReport) -> list[dict[str, Any]]:
    ceiling = report.median_rate("ceiling")
    pipeline = report.median_rate("pipeline")
    peer = report.median_rate("quix_peer")
    offline = report.median_rate("offline")
    latency = report.latency or {}
    kpi_bytes = report.memory.get("kpi_state_bytes_per_rep")

    def verdict(name: str, value: float | None, target: str, met: bool | None) -> dict[str, Any]:
        return {
            "target": name,
            "value": None if value is None else round(value, 3),
            "goal": target,
            "met": met,
        }

    return [
        verdict(
            "pipeline / ceiling",
            pipeline / ceiling if pipeline and ceiling else None,
            ">= 0.25",
            pipeline / ceiling >= 0.25 if pipeline and ceiling else None,
        ),
        verdict(
            "pipeline / Quix Streams peer",
            pipeline / peer if pipeline and peer else None,
            ">= 1.0",
            pipeline >= peer if pipeline and peer else None,
        ),
        verdict("offline events/s", offline, ">= 200000", offline >= 200_000 if offline else None),
        verdict(
            "p99 event to KPI visible, ms",
            latency.get("event_to_kpi_p99"),
            "(reported)",
            None,
        ),
        verdict(
            "p99 event to alert, ms",
            latency.get("event_to_alert_p99"),
            f"< 1000 (alerter tick {latency.get('alert_interval_ms', 0):.0f} ms)",
            None if latency.get("event_to_alert_p99") is None else latency["event_to_alert_p99"] < 1000,
        ),
        verdict("KPI state bytes per rep", kpi_bytes, "< 2048", kpi_bytes < 2048 if kpi_bytes else None),
    ]
