"""``salespulse report``: the sales report as one self-contained HTML page, from ClickHouse."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True)
out = Console(soft_wrap=True)

DEFAULT_REPORT_DIR = Path("salespulse-report")


def report(
    since: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="First UTC day (default: first day of data)."),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last UTC day, inclusive (default: last day of data)."),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", file_okay=False, help="Directory to write index.html into (created if missing)."
        ),
    ] = DEFAULT_REPORT_DIR,
) -> None:
    """Write the sales report (team leaderboard, leading vs lagging per rep, funnel, alerts, management
    modes, field visits) as one HTML page with its charts inline: it opens offline in any browser.

    Prints the path of the page. On the embedded default it starts ClickHouse itself unless the
    settings name a server.
    """
    from streams.cli import configure_logging, load_settings, no_data_message
    from streams.runtime.supervisor import EmbeddedRuntime
    from streams.sales_report import report_from_clickhouse

    if since is not None and until is not None and until < since:
        err.print(f"[red]error:[/] --until {until.date()} is before --since {since.date()}")
        raise typer.Exit(2)
    settings = load_settings()
    configure_logging(settings)
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        with err.status("reading ClickHouse and drawing the charts"):
            written = report_from_clickhouse(
                live,
                out_dir,
                since=since.date() if since else None,
                until=until.date() if until else None,
            )
    if written is None:
        err.print(escape(no_data_message(live.clickhouse_database, "report")))
        raise typer.Exit(1)
    err.print(f"report written for database {escape(live.clickhouse_database)}")
    out.print(str(written.resolve()), markup=False, highlight=False)


__all__ = ["report"]
