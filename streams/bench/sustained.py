"""``salespulse bench --sustained``: a steady rate through the real pipeline for minutes, the
worker's memory and the group's lag sampled, and a verdict computed from the samples.

The synthetic org's event time runs over about a year, so each rep's state (its lateness horizon
of ``SALESPULSE_LATE_GRACE_DAYS`` days of counters and event fingerprints) is full early in the run;
from then on the worker's memory must stay flat: what is left of the state is bounded per rep, and
everything else is per batch. The verdict: after the warm-up (the first fifth of the run), the
least-squares slope of the worker's RSS is under ``RSS_SLOPE_LIMIT_MIB_PER_MIN``, and the lag never
exceeds what the worker would drain in ``LAG_LIMIT_SECONDS`` at the offered rate.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import Event
from streams.bench.lag import LagProbe, until_caught_up
from streams.bench.measure import rss_mib
from streams.bench.runner import bench_settings
from streams.kafka import EventPublisher, start_producer
from streams.orchestration import (
    live_settings,
    pipeline_env,
    prepare_storage_and_topics,
    start_worker_process,
)
from streams.runtime.supervisor import EmbeddedRuntime
from streams.synthetic import OrgSpec, estimate_total_events, generate_org, iter_events

RSS_SLOPE_LIMIT_MIB_PER_MIN = 2.0
LAG_LIMIT_SECONDS = 10.0
WARM_UP_SHARE = 0.2
EVENT_TIME_DAYS = 365


@dataclass(frozen=True)
class SustainedOptions:
    rate: float = 2000.0
    minutes: float = 5.0
    sales_reps: int = 300
    sample_s: float = 5.0
    seed: int = 11
    workdir: Path | None = None


def sustained_events(options: SustainedOptions) -> Iterator[Event]:
    total = round(options.rate * options.minutes * 60) + 1
    spec = OrgSpec(reps=options.sales_reps, teams=max(1, options.sales_reps // 10), days=EVENT_TIME_DAYS)
    spec = replace(
        spec, seed=options.seed, activity_scale=max(0.01, 1.05 * total / estimate_total_events(spec))
    )
    return iter_events(generate_org(spec), spec)


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def verdict(samples: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    duration = samples[-1]["t_s"] if samples else 0.0
    after = [s for s in samples if s["t_s"] >= WARM_UP_SHARE * duration]
    slope = slope_per_minute(
        [(s["t_s"], s["worker_rss_mib"]) for s in after if s["worker_rss_mib"] is not None]
    )
    max_lag = max((s["lag_messages"] for s in after), default=0)
    lag_limit = round(rate * LAG_LIMIT_SECONDS)
    return {
        "warm_up_s": round(WARM_UP_SHARE * duration, 1),
        "rss_slope_mib_per_min": round(slope, 3),
        "rss_slope_limit_mib_per_min": RSS_SLOPE_LIMIT_MIB_PER_MIN,
        "max_lag_messages": max_lag,
        "lag_limit_messages": lag_limit,
        "ok": slope < RSS_SLOPE_LIMIT_MIB_PER_MIN and max_lag <= lag_limit,
    }


def run_sustained(
    options: SustainedOptions, progress: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="sustained-", dir=options.workdir) as home,
        EmbeddedRuntime(bench_settings(Path(home))) as runtime,
    ):
        live = live_settings(runtime)
        prepare_storage_and_topics(live)
        worker = runtime.manage(
            start_worker_process(runtime, extra_env=pipeline_env(live) | {"SALESPULSE_METRICS_PORT": "0"})
        )
        broker = runtime.processes.get("broker")
        progress(
            f"sustained load: {options.rate:,.0f} events/s for {options.minutes} min "
            f"(worker pid {worker.pid})"
        )
        samples = asyncio.run(
            _drive(live, options, worker.pid, broker.pid if broker is not None else None, progress)
        )
    return {
        "rate": options.rate,
        "minutes": options.minutes,
        "sales_reps": options.sales_reps,
        "samples": samples,
        "verdict": verdict(samples, options.rate),
    }


async def _drive(
    settings: Settings,
    options: SustainedOptions,
    worker_pid: int,
    broker_pid: int | None,
    progress: Callable[[str], None],
) -> list[dict[str, Any]]:
    probe = LagProbe(settings, settings.topics.event_topics)
    everything = LagProbe(settings, settings.topics.consumed)
    await probe.start()
    await everything.start()
    producer = await start_producer(settings)
    samples: list[dict[str, Any]] = []
    try:
        publisher = EventPublisher(producer, settings)
        await publisher.publish_rep(
            Rep(rep_id="bench-warmup", name="Bench Warm-up", team="bench", territory="bench")
        )
        await publisher.flush()
        # Outside the clock: the worker has joined its group and stored the warm-up record.
        await until_caught_up(everything, timeout_s=120)
        events = sustained_events(options)
        duration = options.minutes * 60
        began = time.monotonic()
        next_sample = began
        sent = 0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                progress_now = await probe.progress()
                sample = {
                    "t_s": round(now - began, 1),
                    "events_sent": sent,
                    "lag_messages": progress_now.lag,
                    "worker_rss_mib": rss_mib(worker_pid),
                    "broker_rss_mib": rss_mib(broker_pid) if broker_pid else None,
                }
                samples.append(sample)
                progress(
                    f"t={sample['t_s']:>6.0f}s sent {sent:>9,} lag {sample['lag_messages']:>6,} "
                    f"worker RSS {sample['worker_rss_mib'] or 0:.1f} MiB"
                )
                next_sample += options.sample_s
            if now - began >= duration:
                break
            due = min(round((now - began) * options.rate), round(duration * options.rate))
            while sent < due:
                await publisher.publish(next(events))
                sent += 1
            await publisher.flush_due()
            await asyncio.sleep(0.01)
        await publisher.flush()
    finally:
        await producer.stop()
        await probe.stop()
        await everything.stop()
    return samples
