"""The ceiling: raw aiokafka consumption of the event topics plus JSON decoding of every message,
and nothing else. Run as a child process by the bench; prints one JSON object.

    python -m streams.bench.ceiling --bootstrap HOST:PORT --topic T [--topic T] --expect N
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.bench.measure import peak_rss_mib


async def consume(bootstrap: str, topics: list[str], expect: int, timeout_s: float) -> dict[str, object]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [
            TopicPartition(topic, partition)
            for topic in topics
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        events = messages = 0
        first_seen: float | None = None
        deadline = time.monotonic() + timeout_s
        while events < expect:
            if time.monotonic() > deadline:
                raise TimeoutError(f"read {events} of {expect} events in {timeout_s:.0f}s")
            batches = await consumer.getmany(timeout_ms=200, max_records=50_000)
            if batches and first_seen is None:
                first_seen = time.perf_counter()
            for records in batches.values():
                for record in records:
                    document = orjson.loads(record.value)
                    events += len(document) if isinstance(document, list) else 1
                    messages += 1
        seconds = time.perf_counter() - (first_seen or time.perf_counter())
    finally:
        await consumer.stop()
    return {
        "events": events,
        "messages": messages,
        "seconds": seconds,
        "events_per_s": events / seconds if seconds > 0 else None,
        "peak_rss_mib": peak_rss_mib(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    result = asyncio.run(consume(args.bootstrap, args.topic, args.expect, args.timeout))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
