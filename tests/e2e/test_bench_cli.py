"""``salespulse bench`` as CI runs it: a small workload (seconds), every path side by side.

Checks what the numbers rest on, not the numbers (they belong to a quiet machine, the README's
Performance table): the JSON has one object per path with its measured fields, every path processed
every event of the workload, and the KPI results of the pipeline (read back from ClickHouse), the
Quix Streams peer and the offline replay equal the brute-force counts of the same events.
"""

from __future__ import annotations

import json

import pytest

from streams.bench.workload import build_workload

from .conftest import Cli

pytestmark = pytest.mark.e2e

EVENTS = 2000
INGEST_EVENTS = 1200  # three requests of 500, 500 and 200 events
PATH_FIELDS = {
    "path",
    "events",
    "events_processed",
    "events_per_s",
    "events_per_s_runs",
    "ratio_to_ceiling",
    "peer_events_per_s",
    "ratio_to_peer",
    "peak_rss_mib",
    "results_equal",
    "latency_ms",
    "memory",
}


def test_bench_smoke_measures_every_path_over_the_same_events(cli: Cli) -> None:
    result = cli.run(
        "bench",
        "--events",
        str(EVENTS),
        "--format",
        "json",
        "--latency-seconds",
        "2",
        "--latency-rate",
        "500",
        "--ingest-events",
        str(INGEST_EVENTS),
        timeout=600,
    )
    assert result.returncode == 0, result.describe()
    report = json.loads(result.stdout)

    expected = build_workload(EVENTS)
    assert report["workload"]["events"] == EVENTS
    assert report["workload"]["daily_counts"] == len(expected.expected)
    paths = {path["path"]: path for path in report["paths"]}
    assert set(paths) == {"ceiling", "pipeline", "quix_peer", "quix_peer_validated", "offline", "ingest_http"}

    # HTTP ingest: its own synthetic events posted to `salespulse serve`, every one accepted and
    # stored once in ClickHouse, with the request latency of each answer.
    ingest = paths.pop("ingest_http")
    assert set(ingest) == PATH_FIELDS | {"request_ms", "batch", "stored_events_per_s"}
    assert ingest["events"] == INGEST_EVENTS and ingest["events_processed"] == [INGEST_EVENTS]
    assert ingest["batch"] == 500
    assert ingest["results_equal"] is True
    assert ingest["events_per_s"] > 0 and ingest["stored_events_per_s"] > 0
    request = ingest["request_ms"]
    assert 0 < request["p50_ms"] <= request["p99_ms"] <= request["max_ms"]
    assert ingest["ratio_to_ceiling"] == pytest.approx(
        ingest["events_per_s"] / paths["ceiling"]["events_per_s"], abs=1e-4
    )

    for name, path in paths.items():
        assert set(path) == PATH_FIELDS, name
        assert path["events_processed"] == [EVENTS], name
        assert path["events_per_s"] > 0, name
        assert path["peak_rss_mib"] is not None and path["peak_rss_mib"] > 0, name
        assert path["peer_events_per_s"] == paths["quix_peer"]["events_per_s"], name
    assert paths["ceiling"]["ratio_to_ceiling"] == 1.0
    # The peer's per-rep daily counts equal ours read back from ClickHouse and the brute force.
    for name in ("pipeline", "quix_peer", "quix_peer_validated", "offline"):
        assert paths[name]["results_equal"] is True, name

    latency = report["latency_ms"]
    assert latency["events"] == 1000
    assert latency["visible"] == latency["events"]
    assert 0 < latency["event_to_kpi_p50"] <= latency["event_to_kpi_p99"] <= latency["event_to_kpi_max"]
    # Every alert probe's lost deal raised its pipeline_coverage_low alert through the real alerter.
    assert latency["alert_probes"] > 0
    assert latency["alerts_seen"] == latency["alert_probes"]
    assert 0 < latency["event_to_alert_p50"] <= latency["event_to_alert_p99"] <= latency["event_to_alert_max"]
    memory = report["memory"]
    assert memory["active_reps"] == report["workload"]["reps"]
    assert memory["kpi_state_bytes_per_rep"] > 0
    assert {target["target"] for target in report["targets"]} >= {"pipeline / ceiling", "offline events/s"}
