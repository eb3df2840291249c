"""``salespulse alerter`` and ``salespulse alerts ...``: the alerting service and its commands."""

from __future__ import annotations

import getpass
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import FrameType
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.routing import RoutingError, parse_duration, parse_matcher
from schemas.settings import Settings

alerts_app = typer.Typer(help="Early-warning alerts: list them, silence them.", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True)


class StatusFilter(StrEnum):
    firing = "firing"
    resolved = "resolved"
    all = "all"


class ListFormat(StrEnum):
    table = "table"
    json = "json"


def _settings() -> Settings:
    from streams.cli import configure_logging, load_settings

    settings = load_settings()
    configure_logging(settings)
    return settings


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


def alerter(
    once: Annotated[
        bool, typer.Option(help="Evaluate and deliver once, then exit (for cron or a check).")
    ] = False,
) -> None:
    """Evaluate the alert rules on a timer and send the alerts to the routing file's receivers.

    Run exactly one per deployment. On the embedded default it starts ClickHouse itself unless the
    settings name a server."""
    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations
    from streams.alerter import Alerter, run_forever
    from streams.metrics import PipelineMetrics, start_metrics_server
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = _settings()
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    with EmbeddedRuntime(settings, need_broker=False, handle_signals=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        apply_migrations(client, live.clickhouse_database)  # idempotent: the alerter may start first
        metrics = PipelineMetrics()
        try:
            service = Alerter.from_settings(live, client, metrics)
        except RoutingError as exc:
            raise _fail(f"routing file: {exc}", 2) from None
        if once:
            try:
                result = service.tick(datetime.now(UTC))
            finally:
                service.close()
            out.print(
                f"evaluated {result.views} reps: {result.candidates} conditions hold, "
                f"{len(result.transitions)} alert(s) changed, {result.notifications} notification(s) queued"
            )
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop)
        server = start_metrics_server(
            live.model_copy(update={"metrics_port": live.alerter_metrics_port}), metrics.registry
        )
        try:
            run_forever(
                service,
                interval_s=live.alert_interval_s,
                clock=lambda: datetime.now(UTC),
                stop=stopping.is_set,
            )
        finally:
            service.close()
            if server is not None:
                server.shutdown()


def _query_alerts(settings: Settings, status: StatusFilter) -> list[dict[str, Any]] | str:
    """The alerts, or (a database where nothing was ever stored) the message that says so."""
    from sinks.clickhouse import connect
    from sinks.queries import database_exists
    from streams.cli import no_data_message
    from streams.runtime.supervisor import EmbeddedRuntime

    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            if not database_exists(client, live.clickhouse_database):
                return no_data_message(live.clickhouse_database, "alerts list")
            where = "" if status is StatusFilter.all else "WHERE status = %(status)s"
            rows = client.execute(
                "SELECT rule, scope, key, detail, status, severity, value, baseline, summary, action, "
                "labels, "
                f"starts_at, ends_at FROM {live.clickhouse_database}.alerts FINAL {where} "
                "ORDER BY starts_at DESC, rule, key",
                {"status": status.value},
            )
        finally:
            client.disconnect()
    keys = [
        "rule",
        "scope",
        "key",
        "detail",
        "status",
        "severity",
        "value",
        "baseline",
        "summary",
        "action",
        "labels",
        "starts_at",
        "ends_at",
    ]
    result = []
    for row in rows:
        item = dict(zip(keys, row, strict=True))
        for moment in ("starts_at", "ends_at"):
            if item[moment] is not None:
                item[moment] = item[moment].replace(tzinfo=UTC).isoformat()
        result.append(item)
    return result


@alerts_app.command("list")
def alerts_list(
    status: Annotated[StatusFilter, typer.Option(help="firing, resolved or all.")] = StatusFilter.firing,
    output: Annotated[ListFormat, typer.Option("--format", help="table or json.")] = ListFormat.table,
) -> None:
    """The alerts the alerter raised (stored in ClickHouse), newest first."""
    alerts = _query_alerts(_settings(), status)
    if isinstance(alerts, str):
        if output is ListFormat.json:
            sys.stdout.write("[]\n")
        else:
            out.print(alerts)
        return
    if output is ListFormat.json:
        sys.stdout.write(orjson.dumps(alerts, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if not alerts:
        out.print(f"no {status.value if status is not StatusFilter.all else ''} alerts".replace("  ", " "))
        return
    table = Table(title=f"alerts ({status.value})")
    for header in ("since", "status", "severity", "rule", "who", "what"):
        table.add_column(header)
    for alert in alerts:
        table.add_row(
            alert["starts_at"][:16].replace("T", " "),
            alert["status"],
            alert["severity"],
            alert["rule"],
            f"{alert['key']}" + (f" ({alert['detail']})" if alert["detail"] else ""),
            escape(alert["summary"]),
        )
    out.print(table)


@alerts_app.command("silence")
def alerts_silence(
    matchers: Annotated[
        list[str], typer.Argument(help='Label matchers, e.g. team=North rep_id=rep-007 rule=~"activity_.*".')
    ],
    duration: Annotated[str, typer.Option("--for", help="How long, e.g. 2h, 3d.")] = "2h",
    comment: Annotated[str, typer.Option(help="Why (shown to everyone).")] = "",
    author: Annotated[str | None, typer.Option("--by", help="Who (default: your user name).")] = None,
) -> None:
    """Mute matching alerts for a while; the alerter applies it at its next tick."""
    from sinks.clickhouse import connect
    from streams.alerter import store_silence
    from streams.alerts.lifecycle import Silence
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = _settings()
    now = datetime.now(UTC)
    try:
        length = parse_duration(duration)
        silence = Silence.create(
            [parse_matcher(text) for text in matchers],
            starts_at=now,
            ends_at=now + length,
            created_by=author or getpass.getuser(),
            comment=comment or "silenced from the command line",
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from None
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            store_silence(client, live.clickhouse_database, silence, expired=False, now=now)
        finally:
            client.disconnect()
    out.print(f"silence {silence.id} until {silence.ends_at:%Y-%m-%d %H:%M} UTC")


@alerts_app.command("unsilence")
def alerts_unsilence(
    silence_id: Annotated[str, typer.Argument(help="The id `alerts silence` printed.")],
) -> None:
    """End a silence now."""
    from sinks.clickhouse import connect
    from streams.alerter import store_silence
    from streams.alerts.lifecycle import Silence
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = _settings()
    now = datetime.now(UTC)
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            rows = client.execute(
                "SELECT matchers, starts_at, ends_at, created_by, comment "
                f"FROM {live.clickhouse_database}.silences FINAL WHERE id = %(id)s",
                {"id": silence_id},
            )
            if not rows:
                raise _fail(f"no silence {silence_id}")
            matchers, starts_at, ends_at, created_by, comment = rows[0]
            silence = Silence(
                id=silence_id,
                matchers=tuple(parse_matcher(text) for text in orjson.loads(matchers)),
                starts_at=starts_at.replace(tzinfo=UTC),
                ends_at=min(ends_at.replace(tzinfo=UTC), now + timedelta(milliseconds=1)),
                created_by=created_by,
                comment=comment,
            )
            store_silence(client, live.clickhouse_database, silence, expired=True, now=now)
        finally:
            client.disconnect()
    out.print(f"silence {silence_id} ended")
