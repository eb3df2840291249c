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
        timeout=600,
    )
    assert result.returncode == 0, result.describe()
    report = json.loads(result.stdout)

    expected = build_workload(EVENTS)
    assert report["workload"]["events"] == EVENTS
    assert report["workload"]["daily_counts"] == len(expected.expected)
    paths = {path["path"]: path for path in report["paths"]}
    assert set(paths) == {"ceiling", "pipeline", "quix_peer", "quix_peer_validated", "offline"}
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
