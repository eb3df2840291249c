"""``salespulse serve`` (the HTTP ingest service) and ``salespulse tokens`` (its API tokens)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.settings import Settings

console = Console(stderr=True)
out = Console(soft_wrap=True)


def _settings() -> Settings:
    from streams.cli import configure_logging, load_settings

    settings = load_settings()
    configure_logging(settings)
    return settings


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/] {escape(message)}")
    return typer.Exit(code)


tokens_app = typer.Typer(
    help="API tokens of `salespulse serve`: created, listed and revoked (stored only as hashes).",
    no_args_is_help=True,
)


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback by default; 0.0.0.0 behind a proxy).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8080,
) -> None:
    """Run the HTTP ingest service: events from apps, CRM webhooks, and the check-in page for phones.

    On the embedded default it starts the broker, ClickHouse and a worker itself (other commands on
    the same SALESPULSE_HOME then use them); against external servers it only publishes.
    """
    import uvicorn

    from streams.ingest.checkin import checkin_routes
    from streams.ingest.service import create_app
    from streams.orchestration import running_pipeline

    settings = _settings()
    try:
        # Bound before anything starts: a taken port fails at once, not after the servers came up.
        listener = socket.create_server((host, port))
    except OSError as exc:
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port", 2
        ) from None
    try:
        with listener, running_pipeline(settings) as pipeline:
            try:
                app = create_app(pipeline.settings, extra_routes=checkin_routes(pipeline.settings))
            except ValueError as exc:  # a broken webhook mapping file
                raise fail(str(exc), 2) from None
            if pipeline.worker is None and not pipeline.runtime.attached:
                console.print("[yellow]external broker: events go to the workers of your deployment[/]")
            console.print(
                f"serving on http://{host}:{port} (API docs at /docs, check-in page at /checkin); "
                "Ctrl-C stops"
            )
            config = uvicorn.Config(
                app, host=host, port=port, log_config=None, lifespan="on", server_header=False
            )
            uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:
        console.print("stopped; everything started was shut down")
        raise typer.Exit(130) from None


# ---------------------------------------------------------------------------------------- tokens


class TokenFormat(StrEnum):
    table = "table"
    json = "json"


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Who uses it: 'dialer', 'hubspot-sync', 'ana phone'.")],
    scopes: Annotated[str, typer.Option(help="events:write and/or checkin, comma-separated.")],
    rep: Annotated[
        str | None, typer.Option(help="The rep a checkin token checks in as (required for checkin).")
    ] = None,
) -> None:
    """Create a token. It is printed once, alone on the last line; only its hash is stored.

    For a checkin token the rep's personal check-in link and its QR code are printed before it.
    """
    from schemas.ingest import TokenScope
    from sinks.tokens import save_token
    from streams.ingest.tokens import new_token, parse_scopes

    settings = _settings()
    try:
        scope_list = parse_scopes(scopes)
        token, record = new_token(name, scope_list, rep_id=rep, now=datetime.now(UTC))
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    with _token_store(settings) as (client, database):
        save_token(client, database, record, updated_at=datetime.now(UTC))
    console.print(f"created token {record.token_id} ({escape(record.name)}): {', '.join(record.scopes)}")
    if TokenScope.CHECKIN in record.scopes:
        from streams.ingest.checkin import checkin_link

        link = checkin_link(settings.ingest_public_url, token)
        out.print(f"check-in link for {escape(record.rep_id or '')} (open it on the phone; keep it private):")
        sys.stdout.write(link + "\n")
        _print_qr(link)
    console.print("the token is shown only now: store it where it is used")
    sys.stdout.write(token + "\n")


def _print_qr(text: str) -> None:
    import segno

    sys.stdout.flush()
    segno.make(text, error="m").terminal(out=sys.stdout, compact=True, border=2)
    sys.stdout.flush()


@tokens_app.command("list")
def tokens_list(
    output: Annotated[TokenFormat, typer.Option("--format", help="table or json.")] = TokenFormat.table,
) -> None:
    """Every token (never its secret): id, name, scopes, rep, created, revoked."""
    from sinks.tokens import load_tokens

    settings = _settings()
    with _token_store(settings) as (client, database):
        records = load_tokens(client, database)
    rows = [
        {
            "token_id": r.token_id,
            "name": r.name,
            "scopes": [s.value for s in r.scopes],
            "rep_id": r.rep_id,
            "created_at": r.created_at.isoformat(),
            "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
        }
        for r in records
    ]
    if output is TokenFormat.json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(title="API tokens")
    for header in ("id", "name", "scopes", "rep", "created", "revoked"):
        table.add_column(header)
    for row in rows:
        table.add_row(
            str(row["token_id"]),
            escape(str(row["name"])),
            ",".join(row["scopes"]),  # type: ignore[arg-type]
            escape(str(row["rep_id"] or "-")),
            str(row["created_at"])[:19],
            str(row["revoked_at"] or "-")[:19],
        )
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (from `tokens list`) or the token itself.")],
) -> None:
    """Revoke a token: refused by every `serve` within SALESPULSE_INGEST_TOKEN_REFRESH_S."""
    from sinks.tokens import load_tokens, save_token
    from streams.ingest.tokens import token_id_of

    settings = _settings()
    wanted = token_id_of(token_id) or token_id
    with _token_store(settings) as (client, database):
        record = next((r for r in load_tokens(client, database) if r.token_id == wanted), None)
        if record is None:
            raise fail(f"no token with id {wanted!r} (see `salespulse tokens list`)")
        if record.revoked_at is not None:
            out.print(f"token {record.token_id} was already revoked at {record.revoked_at.isoformat()}")
            return
        now = datetime.now(UTC)
        save_token(client, database, record.model_copy(update={"revoked_at": now}), updated_at=now)
    out.print(f"revoked token {record.token_id} ({escape(record.name)})")


@contextmanager
def _token_store(settings: Settings) -> Iterator[tuple[Any, str]]:
    """A ClickHouse client with the schema in place (the embedded one when none is configured, or
    the one of the runtime already running on this home)."""
    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations
    from streams.runtime.supervisor import EmbeddedRuntime

    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            apply_migrations(client, live.clickhouse_database)
            yield client, live.clickhouse_database
        finally:
            client.disconnect()
