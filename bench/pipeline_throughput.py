"""End-to-end throughput of the pipeline on the embedded runtime: events/s from first publish until
every event is stored in ClickHouse, and the worker's peak memory.

Each round gets a fresh home (so a fresh broker: Tansu keeps every record in memory) and streams a
synthetic org through a real worker process. Run it as

    .venv/bin/python bench/pipeline_throughput.py --events 200000 --batch 200 --batch 1

``--batch`` is events per Kafka message (repeat it to compare); 1 is the one-event-per-message
wire format, which Faust caps near 10k messages/s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from schemas.settings import Settings
from sinks.clickhouse import connect
from streams.kafka import EventPublisher, start_producer, wait_until_consumed
from streams.orchestration import running_pipeline
from streams.synthetic import OrgSpec, generate_org, iter_events


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def publish_and_wait(settings: Settings, spec: OrgSpec, events: int) -> tuple[float, float, int]:
    org = generate_org(spec)
    source = list(islice(iter_events(org, spec), events + 1))
    producer = await start_producer(settings)
    try:
        publisher = EventPublisher(producer, settings)
        # Warm-up: the worker's start and group join are not part of the measurement.
        await publisher.publish(source.pop(0))
        await publisher.flush()
        await wait_until_consumed(settings, settings.topics.consumed, timeout_s=120, poll_s=0.1)
        began = time.perf_counter()
        await publisher.publish_many(source)
        await publisher.flush()
        published = time.perf_counter()
        messages = publisher.stats.messages
    finally:
        await producer.stop()
    await wait_until_consumed(settings, settings.topics.consumed, timeout_s=1800, poll_s=0.1)
    stored = time.perf_counter()
    return published - began, stored - began, messages


def one_round(events: int, batch: int, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="salespulse-bench-") as home:
        settings = Settings(home=Path(home), batch_max_events=batch, batch_linger_ms=1000)
        days = 60
        spec = OrgSpec(
            reps=reps,
            teams=max(1, reps // 8),
            days=days,
            start=(datetime.now(UTC) - timedelta(days=days)).replace(
                hour=0, minute=0, second=0, microsecond=0
            ),
            activity_scale=max(1.0, events / (reps * days * 45)),
        )
        with running_pipeline(settings) as pipeline:
            assert pipeline.worker is not None
            publish_s, total_s, messages = asyncio.run(publish_and_wait(pipeline.settings, spec, events))
            client = connect(pipeline.settings)
            try:
                database = pipeline.settings.clickhouse_database
                stored = client.execute(f"SELECT count() FROM {database}.events FINAL")[0][0] - 1
            finally:
                client.disconnect()
            rss = peak_rss_mib(pipeline.worker.pid)
    if stored != events:
        raise SystemExit(f"stored {stored} events of {events}: the pipeline lost or double-counted some")
    return {
        "events/s": events / total_s,
        "publish_s": publish_s,
        "total_s": total_s,
        "messages": messages,
        "rss": rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--batch", type=int, action="append", help="events per message (repeatable)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    batches = args.batch or [200]
    print(f"{args.events:,} events, {args.reps} reps, {args.rounds} round(s) each, into ClickHouse")
    header = (
        "events/msg",
        "messages",
        "events/s (min/median/max)",
        "publish s",
        "total s",
        "worker peak RSS",
    )
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (10, 9, 28, 9, 8, 16), strict=True)))
    for batch in batches:
        results = [one_round(args.events, batch, args.reps) for _ in range(args.rounds)]
        rates = sorted(r["events/s"] for r in results)
        print(
            f"{batch:>10} {int(results[0]['messages']):>9,} "
            f"{f'{rates[0]:,.0f} / {statistics.median(rates):,.0f} / {rates[-1]:,.0f}':>28} "
            f"{statistics.median(r['publish_s'] for r in results):>9.1f} "
            f"{statistics.median(r['total_s'] for r in results):>8.1f} "
            f"{max(r['rss'] for r in results):>12.0f} MiB"
        )


if __name__ == "__main__":
    main()
