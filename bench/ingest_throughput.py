"""Ingest throughput alone: events/s through ``POST /v1/events`` in batches from one client, and the
request latency. ``salespulse bench`` measures the same as its ``ingest_http`` path; this script also
runs against a service that is already running:

    .venv/bin/python bench/ingest_throughput.py --events 50000 --batch 500
    .venv/bin/python bench/ingest_throughput.py --url https://ingest.example.com --token sp_...
"""

from __future__ import annotations

import argparse

from streams.bench.ingest import ingest_throughput


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--url", help="a running service (default: start one)")
    parser.add_argument("--token", help="its token (scope events:write)")
    parser.add_argument("--no-wait-stored", action="store_true", help="do not wait for ClickHouse")
    args = parser.parse_args()
    result = ingest_throughput(
        events=args.events,
        batch=args.batch,
        reps=args.reps,
        url=args.url,
        token=args.token,
        wait_stored=not args.no_wait_stored,
    )
    for key, value in result.items():
        print(f"{key:>20}: {value:,}" if isinstance(value, int | float) else f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
