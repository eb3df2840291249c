"""The peer: the same per-rep KPI job written in Quix Streams, for ``salespulse bench``.

The job: for every rep, events per UTC day and counter (the event's type, plus ``call_connected``
for a connected call), kept in Quix state keyed by rep (RocksDB, changelogged), days more than the
grace behind the rep's newest event dropped, the new absolute count of every changed (rep, day,
counter) emitted per message (what salespulse writes to ``rep_daily_activity``). It decodes the
same messages (a JSON array of one rep's events, or one event) but does not validate them against
the contract, deduplicate them or write them anywhere: less work than salespulse does, so a
comparison with it is conservative.

With ``--contract SOURCE_ROOT`` it validates every message as salespulse does instead, with
salespulse's own boundary (``schemas.wire.decode_message``: the event contract, the key check),
and counts the validated events: the same work per event as salespulse's decode, for an
apples-to-apples view of what the framework costs.

This file runs in its own virtual environment (quixstreams pins an older pydantic than salespulse
does) and imports nothing of salespulse, except ``schemas`` (pure pydantic) with ``--contract``.

    python quix_peer.py --bootstrap HOST:PORT --topic T [--topic T] --expect N --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from quixstreams import Application, State  # type: ignore[import-not-found,unused-ignore]

GRACE = timedelta(days=35)


def peak_rss_mib() -> float | None:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


class KpiJob:
    def __init__(self, expect: int, stop: Any, decode: Any = None) -> None:
        self.decode = decode
        self.expect = expect
        self.stop = stop
        self.events = 0
        self.messages = 0
        self.first_seen: float | None = None
        self.last_done: float | None = None
        # What a sink would hold: the newest absolute count per (rep, day, counter).
        self.stored: dict[tuple[str, str, str], int] = {}

    def count(self, value: Any, key: Any, timestamp: int, headers: Any, state: State) -> None:
        if self.first_seen is None:
            self.first_seen = time.perf_counter()
        rep_id = key.decode() if isinstance(key, bytes) else str(key)
        if self.decode is not None:
            items = self.decode(key, value)
        else:
            raw = value if isinstance(value, list) else [value]
            items = [
                (
                    item["type"],
                    datetime.fromisoformat(item["occurred_at"]).astimezone(UTC),
                    item.get("outcome"),
                )
                for item in raw
            ]
        days: dict[str, dict[str, int]] = state.get("days", {})
        newest: str | None = state.get("newest")
        changed: dict[tuple[str, str], int] = {}
        for event_type, occurred, outcome in items:
            if newest is None or occurred.isoformat() > newest:
                newest = occurred.isoformat()
            day = occurred.date().isoformat()
            per_day = days.setdefault(day, {})
            counters = [event_type]
            if event_type == "call" and outcome == "connected":
                counters.append("call_connected")
            for counter in counters:
                per_day[counter] = per_day.get(counter, 0) + 1
                changed[(day, counter)] = per_day[counter]
        if newest is not None:
            first_kept = (datetime.fromisoformat(newest) - GRACE).date().isoformat()
            for day in [d for d in days if d < first_kept]:
                del days[day]
        state.set("days", days)
        state.set("newest", newest)
        for (day, counter), n in changed.items():
            self.stored[(rep_id, day, counter)] = n
        self.events += len(items)
        self.messages += 1
        self.last_done = time.perf_counter()
        if self.events >= self.expect:
            self.stop()


def contract_decoder(source_root: Path) -> Any:
    """Raw message -> the JSON objects of its valid events, through salespulse's own boundary."""
    import sys

    sys.path.insert(0, str(source_root))
    from schemas.wire import MessageOrigin, decode_message

    origin = MessageOrigin("quix-peer")
    now = datetime.now(UTC)

    def decode(key: bytes, value: bytes) -> list[tuple[str, datetime, str | None]]:
        decoded = decode_message(key, value, origin, now)
        return [(e.type, e.occurred_at, e.__dict__.get("outcome")) for e in decoded.events]

    return decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", action="append", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--group", default="salespulse-bench-quix")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--contract", type=Path, help="salespulse's source root: validate as salespulse does")
    args = parser.parse_args(argv)
    decode = contract_decoder(args.contract) if args.contract else None
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state_dir:
        app = Application(
            broker_address=args.bootstrap,
            consumer_group=args.group,
            auto_offset_reset="earliest",
            state_dir=state_dir,
            loglevel="WARNING",
            processing_guarantee="at-least-once",
            # The embedded broker makes a group join wait about half the session timeout.
            consumer_extra_config={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
        )
        job = KpiJob(args.expect, app.stop, decode)
        for name in args.topic:
            topic = app.topic(
                name, value_deserializer="bytes" if decode else "json", key_deserializer="bytes"
            )
            app.dataframe(topic).update(job.count, stateful=True, metadata=True)
        app.run()
    seconds = (job.last_done or 0.0) - (job.first_seen or 0.0)
    result = {
        "events": job.events,
        "messages": job.messages,
        "seconds": seconds,
        "events_per_s": job.events / seconds if seconds > 0 else None,
        "peak_rss_mib": peak_rss_mib(),
        "daily_counts": [[rep, day, counter, n] for (rep, day, counter), n in sorted(job.stored.items())],
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
