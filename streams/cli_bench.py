"""``salespulse bench``: the benchmark harness (ceiling, pipeline, Quix Streams peer, offline,
latency, memory) side by side in one run, and ``--sustained`` for a load run over minutes."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console()


class BenchFormat(StrEnum):
    table = "table"
    json = "json"


def bench(
    events: Annotated[int, typer.Option(min=100, max=50_000_000, help="Events in the workload.")] = 200_000,
    reps: Annotated[int, typer.Option(min=1, max=20, help="Repetitions (rounds) of every path.")] = 1,
    output: Annotated[BenchFormat, typer.Option("--format", help="table or json.")] = BenchFormat.table,
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=64, help="Also measure the pipeline with this many workers (default 1: not)."
        ),
    ] = 1,
    sales_reps: Annotated[
        int, typer.Option(min=1, max=100_000, help="Sales reps in the synthetic org.")
    ] = 300,
    latency_rate: Annotated[
        float, typer.Option(min=1, max=100_000, help="Events/s of the latency phase.")
    ] = 1000.0,
    latency_seconds: Annotated[
        float, typer.Option(min=0, max=3600, help="Length of the latency phase (0: skip it).")
    ] = 20.0,
    alert_interval: Annotated[
        float, typer.Option(min=0.05, max=60, help="Alerter tick (seconds) during the latency phase.")
    ] = 0.25,
    offline_workers: Annotated[
        int, typer.Option(min=0, max=64, help="Processes of the offline replay (default: every core).")
    ] = 0,
    peer: Annotated[bool, typer.Option(help="Run the Quix Streams peer (needs .venv/peer).")] = True,
    ingest_events: Annotated[
        int,
        typer.Option(
            min=0, max=10_000_000, help="Events posted to `salespulse serve` in batches of 500 (0: skip)."
        ),
    ] = 50_000,
    sustained: Annotated[
        bool, typer.Option(help="Instead: a sustained-load run at --rate for --minutes, RSS and lag sampled.")
    ] = False,
    rate: Annotated[float, typer.Option(min=1, max=100_000, help="Events/s of --sustained.")] = 2000.0,
    minutes: Annotated[float, typer.Option(min=0.1, max=600, help="Length of --sustained.")] = 5.0,
) -> None:
    """Measure every path over the same deterministic events on this machine, in one run: the raw
    consume ceiling, the live pipeline into ClickHouse, a Quix Streams peer of the same KPI job,
    the offline replay, HTTP ingest through `salespulse serve`, latency at a fixed rate, and memory
    per rep.

    Starts its own embedded broker and ClickHouse (fresh ones per round) in a temporary directory.
    """
    import os

    from streams.cli import configure_logging, load_settings

    settings = load_settings()
    configure_logging(settings)
    # Every round's servers live in a temporary home under this one, removed when the round ends.
    workdir = settings.home / "bench"
    workdir.mkdir(parents=True, exist_ok=True)
    if sustained:
        from streams.bench.sustained import SustainedOptions, run_sustained

        result = run_sustained(
            SustainedOptions(rate=rate, minutes=minutes, sales_reps=sales_reps, workdir=workdir),
            progress=_progress,
        )
        if output is BenchFormat.json:
            sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            _print_sustained(result)
        if not result["verdict"]["ok"]:
            raise typer.Exit(1)
        return

    from streams.bench.runner import BenchOptions, run_bench

    options = BenchOptions(
        events=events,
        rounds=reps,
        workers=workers,
        sales_reps=sales_reps,
        latency_rate=latency_rate,
        latency_seconds=latency_seconds,
        alert_interval_s=alert_interval,
        offline_workers=offline_workers or os.cpu_count() or 1,
        peer=peer,
        ingest_events=ingest_events,
        workdir=workdir,
    )
    try:
        report = run_bench(options, progress=_progress).to_dict()
    except RuntimeError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None
    if output is BenchFormat.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print_report(report)
    if any(path["results_equal"] is False for path in report["paths"]):
        err.print("[red]a path's KPI results differ from the expected counts[/]")
        raise typer.Exit(1)


def _progress(message: str) -> None:
    err.print(f"[dim]{message}[/]")


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def print_report(report: dict[str, Any]) -> None:
    workload = report["workload"]
    machine = report["machine"]
    table = Table(
        title=f"{workload['events']:,} events ({workload['messages']:,} messages, {workload['reps']} reps), "
        f"{report['options']['reps']} round(s)"
    )
    for header in ("path", "events/s", "x ceiling", "x Quix peer", "peak RSS MiB", "results equal"):
        table.add_column(header, justify="left" if header == "path" else "right")
    for path in report["paths"]:
        table.add_row(
            path["path"],
            _num(path["events_per_s"]),
            _num(path["ratio_to_ceiling"], 3),
            _num(path["ratio_to_peer"], 2),
            _num(path["peak_rss_mib"]),
            "-" if path["results_equal"] is None else ("yes" if path["results_equal"] else "NO"),
        )
    out.print(table)
    latency = report["latency_ms"]
    if latency:
        out.print(
            f"latency at {latency['rate_events_per_s']:,.0f} events/s: event to KPI visible in ClickHouse "
            f"p50 {_num(latency['event_to_kpi_p50'])} ms, p99 {_num(latency['event_to_kpi_p99'])} ms "
            f"(max {_num(latency['event_to_kpi_max'])} ms, "
            f"{latency['visible']:,}/{latency['events']:,} seen, "
            f"polled every {latency['poll_interval_ms']:.0f} ms); "
            f"event to alert p50 {_num(latency['event_to_alert_p50'])} ms, "
            f"p99 {_num(latency['event_to_alert_p99'])} ms (max {_num(latency['event_to_alert_max'])} ms, "
            f"{latency['alerts_seen']}/{latency['alert_probes']} alerts, "
            f"alerter ticking every {latency['alert_interval_ms']:.0f} ms, a tick taking "
            f"p50 {_num(latency['alerter_tick_p50'])} ms, p99 {_num(latency['alerter_tick_p99'])} ms)"
        )
    ingest = next((path for path in report["paths"] if path["path"] == "ingest_http"), None)
    if ingest:
        request = ingest["request_ms"]
        out.print(
            f"HTTP ingest: one client, batches of {ingest['batch']}, each answered after the broker's "
            f"acknowledgement: request p50 {_num(request['p50_ms'], 1)} ms, "
            f"p99 {_num(request['p99_ms'], 1)} ms (max {_num(request['max_ms'], 1)} ms); "
            f"stored end to end {_num(ingest['stored_events_per_s'])} events/s"
        )
    memory = report["memory"]
    out.print(
        f"memory per active rep ({memory['active_reps']} reps): "
        f"KPI state {_num(memory['kpi_state_bytes_per_rep'])} B, "
        f"duplicate detection {_num(memory['dedupe_bytes_per_rep'])} B "
        f"({memory['remembered_event_ids_per_rep']} event ids, "
        f"{memory['dedupe_bytes_per_remembered_event']} B each)"
    )
    targets = Table(title="targets")
    for header in ("target", "value", "goal", "met"):
        targets.add_column(header)
    for target in report["targets"]:
        met = target["met"]
        targets.add_row(
            target["target"],
            _num(target["value"], 3),
            target["goal"],
            "-" if met is None else ("yes" if met else "no"),
        )
    out.print(targets)
    out.print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}; "
        f"load average {machine['load_average']} at start, {machine['load_average_end']} at end"
    )


def _print_sustained(result: dict[str, Any]) -> None:
    table = Table(title=f"sustained load: {result['rate']:,.0f} events/s for {result['minutes']} min")
    for header in ("t s", "events sent", "lag messages", "worker RSS MiB"):
        table.add_column(header, justify="right")
    for sample in result["samples"]:
        table.add_row(
            f"{sample['t_s']:.0f}",
            f"{sample['events_sent']:,}",
            f"{sample['lag_messages']:,}",
            _num(sample["worker_rss_mib"], 1),
        )
    out.print(table)
    verdict = result["verdict"]
    out.print(
        f"after warm-up: RSS slope {verdict['rss_slope_mib_per_min']:+.2f} MiB/min "
        f"(limit {verdict['rss_slope_limit_mib_per_min']}), max lag {verdict['max_lag_messages']:,} messages "
        f"(limit {verdict['lag_limit_messages']:,}): {'OK' if verdict['ok'] else 'FAILED'}"
    )


__all__ = ["bench"]
