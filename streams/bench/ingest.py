"""Ingest throughput: events/s through ``POST /v1/events`` in batches of 500 from one client, and the
request latency (p50, p99, max), each answer coming after the broker acknowledged the batch.

By default it starts ``salespulse serve`` (embedded broker, ClickHouse and a worker) in a fresh home,
creates a token with ``salespulse tokens create``, posts a synthetic org's events one batch after
another, and also reports how fast the worker stored them (first post until all are in ClickHouse).
Against a running service, pass ``url`` and ``token`` (then nothing is started and nothing is
counted in ClickHouse). ``salespulse bench`` runs it as its ``ingest_http`` path;
``bench/ingest_throughput.py`` runs it alone (and against a running service).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import httpx
import orjson

from schemas.settings import Settings
from schemas.wire import event_to_json_dict
from sinks.clickhouse import connect
from streams.runtime.supervisor import EmbeddedRuntime
from streams.synthetic import OrgSpec, generate_org, iter_events

SALESPULSE = Path(sys.executable).parent / "salespulse"


def synthetic_bodies(events: int, batch: int, reps: int) -> list[bytes]:
    """``events`` canonical events of a synthetic org, as JSON array bodies of ``batch`` events."""
    days = 30
    spec = OrgSpec(
        reps=reps,
        teams=max(1, reps // 8),
        days=days,
        start=(datetime.now(UTC) - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0),
        activity_scale=max(1.0, events / (reps * days * 45)),
    )
    source = [event_to_json_dict(e) for e in islice(iter_events(generate_org(spec), spec), events)]
    if len(source) < events:
        raise SystemExit(f"the generator made only {len(source)} events")
    return [orjson.dumps(source[i : i + batch]) for i in range(0, len(source), batch)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _served(home: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """``salespulse serve`` in ``home``: (url, token, environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESPULSE_")}
    # The bench measures the service, not the per-token limiter.
    env |= {
        "SALESPULSE_HOME": str(home),
        "SALESPULSE_INGEST_RATE_PER_S": "100000",
        "SALESPULSE_LOG_LEVEL": "WARNING",
    }
    port = _free_port()
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(SALESPULSE), "serve", "--port", str(port)], env=env, stdout=log, stderr=log, cwd=home
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise SystemExit(f"serve exited: see {home / 'serve.log'}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("serve did not become ready in 120 s")
            time.sleep(0.3)
        created = subprocess.run(
            [str(SALESPULSE), "tokens", "create", "--name", "bench", "--scopes", "events:write"],
            env=env, cwd=home, capture_output=True, text=True, check=True,
        )  # fmt: skip
        yield url, created.stdout.strip().splitlines()[-1], env
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()


def _stored(home: Path) -> int:
    """Events in ClickHouse, through the running runtime of ``home`` (attached, nothing started)."""
    settings = Settings(_env_file=None, home=home)
    with EmbeddedRuntime(settings, need_broker=False, handle_signals=False) as runtime:
        client = connect(runtime.settings_for_children())
        try:
            return int(
                client.execute(f"SELECT count() FROM {settings.clickhouse_database}.events FINAL")[0][0]
            )
        finally:
            client.disconnect()


def _post_all(url: str, token: str, bodies: list[bytes]) -> tuple[float, list[float], int]:
    """Post every body in turn (retrying 503s after Retry-After); (seconds, latencies, accepted)."""
    latencies: list[float] = []
    accepted = 0
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        began = time.perf_counter()
        for body in bodies:
            while True:
                sent = time.perf_counter()
                answer = client.post("/v1/events", content=body)
                latencies.append(time.perf_counter() - sent)
                if answer.status_code != 503:
                    break
                time.sleep(float(answer.headers.get("Retry-After", "1")))
            if answer.status_code not in (200, 207):
                raise SystemExit(f"POST /v1/events answered {answer.status_code}: {answer.text[:300]}")
            accepted += int(answer.json()["accepted"])
        return time.perf_counter() - began, latencies, accepted


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def ingest_throughput(
    *,
    events: int = 50_000,
    batch: int = 500,
    reps: int = 100,
    url: str | None = None,
    token: str | None = None,
    wait_stored: bool = True,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Events/s through ``POST /v1/events`` in batches of ``batch`` from one client, with request
    latency percentiles (ms). Without ``url`` it runs ``salespulse serve`` itself in a fresh home and,
    with ``wait_stored``, also measures until the worker stored every event (``stored_events_per_s``).
    The fresh home is a temporary directory under ``workdir`` (default: the system's)."""
    bodies = synthetic_bodies(events, batch, reps)
    result: dict[str, Any] = {"events": events, "batch": batch, "requests": len(bodies), "reps": reps}
    if url is not None:
        if token is None:
            raise ValueError("give the token of the service at url (scope events:write)")
        seconds, latencies, accepted = _post_all(url, token, bodies)
    else:
        with tempfile.TemporaryDirectory(prefix="ingest-", dir=workdir) as directory:
            home = Path(directory)
            with _served(home) as (served_url, served_token, _):
                # Warm-up (connections, the worker's first batch), not measured.
                warm = synthetic_bodies(1, 1, 1)[0].replace(b'"event_id":"', b'"event_id":"warmup-', 1)
                _post_all(served_url, served_token, [warm])
                deadline = time.monotonic() + 120
                while (before := _stored(home)) < 1 and time.monotonic() < deadline:
                    time.sleep(0.1)
                began = time.perf_counter()
                seconds, latencies, accepted = _post_all(served_url, served_token, bodies)
                if wait_stored:
                    deadline = time.monotonic() + 600
                    while (stored := _stored(home) - before) < accepted and time.monotonic() < deadline:
                        time.sleep(0.1)
                    # First post until the last event is in ClickHouse (to within the 0.1 s polling).
                    result["stored"] = stored
                    result["stored_events_per_s"] = round(stored / (time.perf_counter() - began), 1)
    result |= {
        "accepted": accepted,
        "seconds": round(seconds, 3),
        "events_per_s": round(accepted / seconds, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
    }
    return result
