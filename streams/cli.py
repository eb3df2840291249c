"""The ``salespulse`` command line."""

from __future__ import annotations

import asyncio
import csv
import gzip
import logging
import sys
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from schemas.accounts import Account
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import DecodedMessage, Event, MessageOrigin, decode_message

if TYPE_CHECKING:
    from schemas.alert_rules import AlertRulesConfig
    from streams.backtest import AlertOccurrence, BacktestResult

app = typer.Typer(
    name="salespulse",
    help="Real-time sales-performance pipeline: leading indicators from activity and deal events.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
reps_app = typer.Typer(
    help="Rep records: who is on which team and territory, with quotas.", no_args_is_help=True
)
db_app = typer.Typer(help="ClickHouse schema management.", no_args_is_help=True)
import_app = typer.Typer(
    help="Import CRM exports (CSV) with your own column names, through the pipeline.", no_args_is_help=True
)
app.add_typer(reps_app, name="reps")
app.add_typer(db_app, name="db")
app.add_typer(import_app, name="import")

console = Console(stderr=True)
out = Console()
logger = logging.getLogger("salespulse")

NOISY_LOGGERS = ("faust", "aiokafka", "mode", "kafka", "clickhouse_driver", "asyncio")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        # Escaped: pydantic's "[type=..., input_value=...]" would otherwise vanish as rich markup.
        console.print(f"[red]invalid configuration:[/]\n{escape(str(exc))}")
        raise typer.Exit(2) from exc


def configure_logging(settings: Settings, *, quiet_libraries: bool = True) -> None:
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(
        level=settings.log_level.upper(), handlers=[handler], format="%(message)s", force=True
    )
    if quiet_libraries:
        for name in NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/] {escape(message)}")  # a path may hold "[...]"
    return typer.Exit(code)


# ---------------------------------------------------------------------------------------- worker


@app.command()
def worker() -> None:
    """Run the stream agents (validation, KPI state, ClickHouse writes) against the configured servers.

    With no SALESPULSE_KAFKA_BOOTSTRAP / SALESPULSE_CLICKHOUSE_HOST it starts the embedded ones first.
    Run several workers with the same SALESPULSE_CONSUMER_GROUP to share the partitions.
    """
    from faust.worker import Worker

    from streams.app import create_app, tune_gc_for_worker
    from streams.orchestration import live_settings, prepare_storage_and_topics
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = load_settings()
    configure_logging(settings)
    with EmbeddedRuntime(settings) as runtime:
        live = live_settings(runtime)
        prepare_storage_and_topics(live)
        runtime.note_pipeline(live, worker=True)
        faust_app = create_app(live)
        faust_worker = Worker(faust_app, loglevel=live.log_level, quiet=True, redirect_stdouts=False)
        tune_gc_for_worker()
        # Faust's Worker ends the process with SystemExit; the runtime above still stops cleanly.
        faust_worker.execute_from_commandline()


# ------------------------------------------------------------------------------------------ demo


DEMO_DATABASE = "salespulse_demo"


def no_data_message(database: str, command: str) -> str:
    message = (
        f"no data yet in database {database}: load events with `salespulse replay` or `salespulse import`"
    )
    if database != DEMO_DATABASE:
        # The commonest way to get here: `make demo`, then a command on the default database.
        message += (
            f"; the demo keeps its own: SALESPULSE_CLICKHOUSE_DATABASE={DEMO_DATABASE} salespulse {command}"
        )
    return message


@app.command()
def demo(
    reps: Annotated[int, typer.Option(min=1, max=5000, help="Reps in the synthetic org.")] = 24,
    teams: Annotated[int, typer.Option(min=1, max=200, help="Teams.")] = 3,
    territories: Annotated[int, typer.Option(min=1, max=200, help="Territories.")] = 4,
    days: Annotated[int, typer.Option(min=1, max=3650, help="Days of history to stream, ending now.")] = 42,
    rate: Annotated[
        float | None,
        typer.Option(
            min=1,
            help="Events per second to publish (default: spread the history over the duration, else 4000/s).",
        ),
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=1, help="Stop after this many seconds (default: when all is stored).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same org and events.")] = 7,
    fading: Annotated[int, typer.Option(min=0, help="Reps whose activity falls off part-way.")] = 2,
) -> None:
    """Stream a synthetic sales org through the real pipeline and watch per-rep numbers live."""
    from streams.demo import DemoOptions, run_demo
    from streams.orchestration import running_pipeline

    settings = load_settings()
    configure_logging(settings)
    embedded = settings.kafka_bootstrap is None and settings.clickhouse_host is None
    if embedded:
        # The demo keeps its own database on the embedded servers and starts it afresh each run,
        # so its numbers are always this run's and never mix with data you loaded yourself.
        settings = settings.model_copy(update={"clickhouse_database": DEMO_DATABASE})
    options = DemoOptions(reps, teams, territories, days, rate, duration, seed, fading, run_tag=not embedded)
    console.print(f"starting the pipeline (data in {settings.home.resolve()}) ...")
    try:
        # attach=False: the demo resets its database, so it never shares another command's servers.
        with running_pipeline(settings, with_worker=None, reset_database=embedded, attach=False) as pipeline:
            if pipeline.worker is None:
                console.print("[yellow]external broker: events go to the workers of your deployment[/]")
            snapshot = asyncio.run(run_demo(pipeline.settings, options, out))
    except KeyboardInterrupt:
        console.print("stopped by Ctrl-C; everything started was shut down")
        raise typer.Exit(130) from None
    console.print(
        f"done: {snapshot.stored_events:,} events stored in ClickHouse, "
        f"{snapshot.dead_letters} dead letter(s) kept with their reasons, "
        f"{snapshot.alerts_firing} early warning(s) firing; to look again: "
        f"SALESPULSE_CLICKHOUSE_DATABASE={settings.clickhouse_database} salespulse alerts list "
        "(or kpis, report)."
    )
    console.print(f"report: {snapshot.report_path or 'not written (nothing stored)'}", soft_wrap=True)


# ---------------------------------------------------------------------------------------- replay


def _open_lines(path: Path) -> tuple[BinaryIO, BinaryIO]:
    raw = path.open("rb")
    if path.suffix == ".gz":
        return raw, gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw, raw


# What reading a file that is not what its name says raises: gzip.BadGzipFile (an OSError) for a
# .gz that is not gzip, EOFError for a truncated one, zlib.error for corrupt data.
UNREADABLE_INPUT_ERRORS = (OSError, EOFError, zlib.error)


class UnreadableFileError(Exception):
    """The input file could not be read (as opposed to a bad line in it, which is a dead letter)."""


def _check_readable(path: Path) -> None:
    """Fail with one line before anything starts when the file cannot be read at all; before,
    a .gz that was not gzip started the servers and then ended in a traceback."""
    try:
        raw, lines = _open_lines(path)
        try:
            lines.read(1)
        finally:
            raw.close()
    except UNREADABLE_INPUT_ERRORS as exc:
        raise fail(f"cannot read {path}: {exc}") from None


def _numbered_lines(path: Path, lines: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """The file's lines with their numbers; a read error (e.g. a .gz cut short) becomes
    UnreadableFileError naming the last good line."""
    number = 0
    try:
        for number, line in enumerate(lines, start=1):
            yield number, line
    except UNREADABLE_INPUT_ERRORS as exc:
        raise UnreadableFileError(f"cannot read {path} after line {number}: {exc}") from exc


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines of events (.gz ok).")],
    wait: Annotated[
        bool, typer.Option(help="Against external servers: wait until the workers stored everything.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait for processing, in seconds.")] = 600.0,
) -> None:
    """Publish a JSON Lines file of canonical events; bad lines go to the dead-letter topic."""
    from streams.orchestration import running_pipeline

    settings = load_settings()
    configure_logging(settings)
    _check_readable(file)
    try:
        with running_pipeline(settings) as pipeline:
            accepted, rejected = asyncio.run(_replay(pipeline.settings, file, file.stat().st_size))
            if pipeline.self_contained or wait:
                asyncio.run(_wait_processed(pipeline.settings, timeout_s=timeout))
    except UnreadableFileError as exc:
        raise fail(f"{exc}; fix the file and replay it again (replaying is idempotent)") from None
    table = Table(title=f"replay of {file.name}")
    table.add_column("accepted", justify="right")
    table.add_column("rejected", justify="right")
    table.add_row(f"{accepted:,}", f"{rejected:,}")
    out.print(table)


async def _replay(settings: Settings, path: Path, total: int) -> tuple[int, int]:
    from streams.kafka import EventPublisher, start_producer

    producer = await start_producer(settings)
    publisher = EventPublisher(producer, settings)
    accepted = rejected = 0
    try:
        for number, decoded in _decoded_lines(path, settings, "publishing", total):
            for dead_letter in decoded.dead_letters:
                rejected += 1
                logger.warning("line %d rejected (%s): %s", number, dead_letter.reason, dead_letter.detail)
                await publisher.publish_dead_letter(dead_letter)
            accepted += len(decoded.events)
            await publisher.publish_many(decoded.events)
        await publisher.flush()
    finally:
        await producer.stop()
    return accepted, rejected


def _decoded_lines(
    path: Path, settings: Settings, verb: str, total: int | None = None
) -> Iterator[tuple[int, DecodedMessage]]:
    """Every non-blank line of a JSON Lines file (.gz too), decoded like any message (the wire
    format's one boundary), with its line number and a progress bar over the file's bytes."""
    source = f"file:{path.name}"
    size = total if total is not None else path.stat().st_size
    raw, lines = _open_lines(path)
    try:
        with _byte_progress() as progress:
            task = progress.add_task(f"{verb} {path.name}", total=size)
            for number, line in _numbered_lines(path, lines):
                stripped = line.strip()
                if stripped:
                    origin = MessageOrigin(source, None, number)
                    yield (
                        number,
                        decode_message(None, stripped, origin, datetime.now(UTC), settings.max_message_bytes),
                    )
                if number % 2000 == 0:
                    progress.update(task, completed=raw.tell())
            progress.update(task, completed=size)
    finally:
        raw.close()


def _byte_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


async def _wait_processed(settings: Settings, timeout_s: float) -> None:
    from streams.kafka import ConsumerProgress, wait_until_consumed

    with Progress(
        TextColumn("[bold]waiting for the worker"),
        BarColumn(),
        # Not "{task.total:,}": the total is None until the first poll, and formatting None with ","
        # raised TypeError, so every self-contained replay / reps load crashed right after publishing.
        TextColumn("{task.fields[stored]} messages stored"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("wait", total=None, stored="…")

        def show(state: ConsumerProgress) -> None:
            progress.update(
                task,
                completed=state.consumed,
                total=state.total,
                stored=f"{state.consumed:,}/{state.total:,}",
            )

        try:
            await wait_until_consumed(
                settings,
                settings.topics.consumed,
                timeout_s=timeout_s,
                on_progress=show,
            )
        except TimeoutError as exc:
            raise fail(str(exc)) from exc


# ------------------------------------------------------------------------------------------ reps


def _read_rep_rows(
    path: Path,
) -> Iterator[tuple[int, dict[str, Any] | None, tuple[DeadLetterReason, str] | None]]:
    """(line number, row, (reason, error) or None) for every record of a CSV or JSON Lines file."""
    if path.suffix.lower() == ".csv":
        # utf-8-sig: Excel's "CSV UTF-8" starts with a BOM, which would otherwise become part of the
        # first column's name and make every row fail with "rep_id: Field required".
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                if None in row:
                    # DictReader files surplus values under the key None; dropping them silently
                    # would load a shifted row (an unquoted comma in a name moves every column).
                    surplus = len(row[None])
                    problem = f"{surplus} more value(s) than the header has columns (an unquoted comma?)"
                    yield reader.line_num, None, (DeadLetterReason.INVALID, problem)
                    continue
                cleaned = {k.strip(): (v.strip() if v is not None else None) for k, v in row.items() if k}
                yield reader.line_num, {k: v for k, v in cleaned.items() if v not in ("", None)}, None
        return
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                document = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield number, None, (DeadLetterReason.NOT_JSON, f"not JSON: {exc}")
                continue
            if not isinstance(document, dict):
                # Its own reason, as for events: it is JSON, just not a record.
                yield number, None, (DeadLetterReason.NOT_AN_OBJECT, "a rep record must be a JSON object")
                continue
            yield number, document, None


@dataclass(frozen=True)
class RepRecord:
    """One record of a reps file: the validated rep, or why it is not one."""

    line: int
    row: dict[str, Any] | None
    rep: Rep | None
    reason: DeadLetterReason = DeadLetterReason.INVALID
    problem: str = ""


def _rep_records(path: Path) -> list[RepRecord]:
    """Every record of a reps file (.csv or .jsonl), validated; a file that is not UTF-8 fails."""
    records: list[RepRecord] = []
    try:
        for number, row, error in _read_rep_rows(path):
            reason, problem = error or (DeadLetterReason.INVALID, "")
            if row is not None:
                try:
                    records.append(RepRecord(number, row, Rep.model_validate(row)))
                    continue
                except ValidationError as exc:
                    problem = "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors()
                    )
            records.append(RepRecord(number, row, None, reason, problem))
    except UnicodeDecodeError as exc:
        # Only a CSV can get here (JSON Lines are read as bytes); before, a traceback.
        raise fail(
            f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8 (in Excel: CSV UTF-8)"
        ) from None
    return records


@reps_app.command("load")
def reps_load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Reps as .csv or .jsonl.")],
    wait: Annotated[bool, typer.Option(help="Against external servers: wait until stored.")] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait for processing, in seconds.")] = 120.0,
) -> None:
    """Load (or update) rep records: rep_id, name, team, territory, manager, hired_at, quota_monthly, mode."""
    from streams.orchestration import running_pipeline

    settings = load_settings()
    configure_logging(settings)
    reps: list[Rep] = []
    dead_letters: list[DeadLetter] = []
    for record in _rep_records(file):
        if record.rep is not None:
            reps.append(record.rep)
            continue
        # Escaped: a file name or message holding "[...]" would otherwise be read as rich markup.
        console.print(f"[yellow]{escape(file.name)}:{record.line}: rejected: {escape(record.problem)}[/]")
        dead_letters.append(
            DeadLetter.of(
                record.reason,
                f"invalid rep record: {record.problem}",
                orjson.dumps(record.row) if record.row is not None else b"",
                source=f"file:{file.name}",
                offset=record.line,
                rejected_at=datetime.now(UTC),
            )
        )
    with running_pipeline(settings) as pipeline:
        asyncio.run(_publish_reps(pipeline.settings, reps, dead_letters))
        if pipeline.self_contained or wait:
            asyncio.run(_wait_processed(pipeline.settings, timeout_s=timeout))
    out.print(f"loaded {len(reps)} rep(s); rejected {len(dead_letters)}")
    if dead_letters and not reps:
        raise typer.Exit(1)


async def _publish_reps(settings: Settings, reps: list[Rep], dead_letters: list[DeadLetter]) -> None:
    from streams.kafka import EventPublisher, start_producer

    producer = await start_producer(settings)
    try:
        publisher = EventPublisher(producer, settings)
        for rep in reps:
            await publisher.publish_rep(rep)
        for dead_letter in dead_letters:
            await publisher.publish_dead_letter(dead_letter)
        await publisher.flush()
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------------------- import

DEALS_MAP_HELP = (
    "Columns of your export: deal_id=COL,rep=COL,stage=COL,opened_at=COL,closed_at=COL,amount=COL"
    "[,account=COL,product=COL]"
)
REPS_MAP_HELP = (
    "Columns of your export: rep=COL,team=COL,territory=COL"
    "[,name=COL,manager=COL,quota_monthly=COL,hired_at=COL,mode=COL]"
)
ACCOUNTS_MAP_HELP = (
    "Columns of your export: account=COL,lat=COL,lon=COL[,radius_m=COL,segment=COL,name=COL,owner=COL]"
)


@dataclass
class ImportTally:
    rows: int = 0
    imported: int = 0
    events: int = 0
    rejected: int = 0
    warnings: int = 0


def _open_csv(path: Path) -> TextIO:
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}") from None


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def _run_import(
    path: Path,
    rows: Iterator[Any],
    publish_row: Callable[[Any, Any], Awaitable[int]],
    wait: bool,
    timeout: float,
    settings: Settings,
    finish: Callable[[Any], Awaitable[None]] | None = None,
) -> ImportTally:
    """Publish every good row through the pipeline and every bad one as a dead letter, showing
    progress; on the embedded default (or with --wait) return once the worker stored it all."""
    from streams.crm import RowError, to_dead_letter
    from streams.kafka import EventPublisher, start_producer
    from streams.orchestration import running_pipeline

    total_lines = max(0, _count_lines(path) - 1)
    tally = ImportTally()

    async def publish(live: Settings) -> None:
        producer = await start_producer(live)
        try:
            publisher = EventPublisher(producer, live)
            with Progress(
                TextColumn(f"[bold]importing {escape(path.name)}"),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} lines"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("import", total=total_lines)
                for row in rows:
                    tally.rows += 1
                    if isinstance(row, RowError):
                        tally.rejected += 1
                        console.print(f"{escape(path.name)}:{row.line}: rejected: {escape(row.message)}")
                        await publisher.publish_dead_letter(
                            to_dead_letter(row, rejected_at=datetime.now(UTC))
                        )
                    else:
                        tally.imported += 1
                        tally.warnings += len(row.warnings)
                        for warning in row.warnings:
                            logger.info("%s:%d: %s", path.name, row.line, warning)
                        tally.events += await publish_row(publisher, row)
                    progress.update(task, completed=min(total_lines, row.line - 1))
                progress.update(task, completed=total_lines)
                if finish is not None:
                    await finish(publisher)
                await publisher.flush()
        finally:
            await producer.stop()

    try:
        with running_pipeline(settings) as pipeline:
            asyncio.run(publish(pipeline.settings))
            if pipeline.self_contained or wait:
                asyncio.run(_wait_processed(pipeline.settings, timeout_s=timeout))
    except UnicodeDecodeError as exc:
        raise fail(
            f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8 (in Excel: CSV UTF-8)"
        ) from None
    return tally


def _import_summary(path: Path, tally: ImportTally, what: str) -> None:
    table = Table(title=f"import of {path.name}")
    for header in ("rows", what, "events", "rejected", "warnings"):
        table.add_column(header, justify="right")
    table.add_row(
        *(f"{n:,}" for n in (tally.rows, tally.imported, tally.events, tally.rejected, tally.warnings))
    )
    out.print(table)
    if tally.rejected and not tally.imported:
        raise typer.Exit(1)


@import_app.command("deals")
def import_deals(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV export of opportunities.")],
    mapping: Annotated[str, typer.Option("--map", help=DEALS_MAP_HELP)],
    timezone: Annotated[
        str, typer.Option(help="Time zone of dates without an offset (e.g. Europe/Berlin).")
    ] = "UTC",
    wait: Annotated[
        bool, typer.Option(help="With external servers, wait until the workers stored it.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait for the worker, in seconds.")] = 600.0,
) -> None:
    """Turn a CRM opportunity export into deal events (created, won, lost) and send them through
    the pipeline. Re-importing the same file is idempotent."""
    from streams.crm import RowEvents, parse_mapping, read_deals

    settings = load_settings()
    configure_logging(settings)
    zone = _zone(timezone)
    try:
        columns = parse_mapping(mapping, "deals")
    except ValueError as exc:
        raise fail(f"--map: {exc}", 2) from None
    handle = _open_csv(file)
    try:
        try:
            rows = read_deals(
                handle,
                columns,
                source_name=file.name,
                as_of=datetime.now(UTC),
                default_tz=zone,
                currency=settings.currency,
            )
        except ValueError as exc:
            raise fail(f"{file}: {exc}", 2) from None

        # An export lists deals in any order, but each rep's deal stream must arrive in time order,
        # or events more than the late grace behind a rep's newest would be judged too late. So
        # the events are collected and published oldest first.
        collected: list[Event] = []

        async def publish_row(publisher: Any, row: RowEvents) -> int:
            collected.extend(row.events)
            return len(row.events)

        async def publish_in_time_order(publisher: Any) -> None:
            collected.sort(key=lambda event: (event.occurred_at, event.event_id))
            await publisher.publish_many(collected)

        tally = _run_import(file, rows, publish_row, wait, timeout, settings, finish=publish_in_time_order)
    finally:
        handle.close()
    _import_summary(file, tally, "deals")


@import_app.command("reps")
def import_reps(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV export of users/reps.")],
    mapping: Annotated[str, typer.Option("--map", help=REPS_MAP_HELP)],
    wait: Annotated[
        bool, typer.Option(help="With external servers, wait until the workers stored it.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait for the worker, in seconds.")] = 600.0,
) -> None:
    """Load rep records (team, territory, quota) from a CRM export with your own column names."""
    from streams.crm import RowRep, parse_mapping, read_reps

    settings = load_settings()
    configure_logging(settings)
    try:
        columns = parse_mapping(mapping, "reps")
    except ValueError as exc:
        raise fail(f"--map: {exc}", 2) from None
    handle = _open_csv(file)
    try:
        try:
            rows = read_reps(handle, columns, source_name=file.name, currency=settings.currency)
        except ValueError as exc:
            raise fail(f"{file}: {exc}", 2) from None

        async def publish_row(publisher: Any, row: RowRep) -> int:
            await publisher.publish_rep(row.rep)
            return 0

        tally = _run_import(file, rows, publish_row, wait, timeout, settings)
    finally:
        handle.close()
    _import_summary(file, tally, "reps")


@import_app.command("accounts")
def import_accounts(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV export of accounts.")],
    mapping: Annotated[str, typer.Option("--map", help=ACCOUNTS_MAP_HELP)],
) -> None:
    """Load customer accounts with their position (and geofence radius, segment, owner) from a CRM
    export. Field visits are verified against them. Re-importing is idempotent; a later import of an
    account replaces its record."""
    from sinks.base import SinkBatch
    from sinks.clickhouse import ClickHouseSink, connect, write_accounts
    from sinks.migrate import apply_migrations
    from streams.crm import RowError, parse_mapping, read_accounts, to_dead_letter
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = load_settings()
    configure_logging(settings)
    try:
        columns = parse_mapping(mapping, "accounts")
    except ValueError as exc:
        raise fail(f"--map: {exc}", 2) from None
    tally = ImportTally()
    accounts: dict[str, Account] = {}
    dead_letters: list[DeadLetter] = []
    handle = _open_csv(file)
    try:
        try:
            rows = read_accounts(handle, columns, source_name=file.name)
            for row in rows:
                tally.rows += 1
                if isinstance(row, RowError):
                    tally.rejected += 1
                    console.print(f"{escape(file.name)}:{row.line}: rejected: {escape(row.message)}")
                    dead_letters.append(to_dead_letter(row, rejected_at=datetime.now(UTC)))
                    continue
                tally.imported += 1
                tally.warnings += len(row.warnings)
                for warning in row.warnings:
                    logger.info("%s:%d: %s", file.name, row.line, warning)
                accounts[row.account.account_id] = row.account  # a later row replaces an earlier one
        except ValueError as exc:
            raise fail(f"{file}: {exc}", 2) from None
        except UnicodeDecodeError as exc:
            raise fail(
                f"{file} is not UTF-8 text ({exc.reason}); save it as UTF-8 (in Excel: CSV UTF-8)"
            ) from None
    finally:
        handle.close()
    # Accounts are reference data, not a stream: they go straight to the store of record, where
    # workers pick them up (SALESPULSE_ACCOUNTS_REFRESH_S). Rejected rows are kept as dead letters.
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            apply_migrations(client, live.clickhouse_database)
            write_accounts(client, live.clickhouse_database, accounts.values(), datetime.now(UTC))
            if dead_letters:
                sink = ClickHouseSink(client, live.clickhouse_database)
                sink.write(SinkBatch(dead_letters=dead_letters))
                sink.flush()
        finally:
            client.disconnect()
    _import_summary(file, tally, "accounts")


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise fail(
            f"--timezone: unknown time zone {name!r} (use an IANA name like Europe/Berlin)", 2
        ) from None


# -------------------------------------------------------------------------------------------- db


@db_app.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the ClickHouse schema (versioned, idempotent migrations)."""
    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations
    from sinks.retention import apply_events_ttl
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = load_settings()
    configure_logging(settings)
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            applied = apply_migrations(client, live.clickhouse_database)
            # The raw-event TTL is a setting, not a migration: applied (or changed) on every run.
            apply_events_ttl(
                client, live.clickhouse_database, live.events_ttl_days, live.visit_location_retention_days
            )
        finally:
            client.disconnect()
    if applied:
        for migration in applied:
            # Not f"{migration}": that printed the dataclass repr (checksum, datetime and all).
            out.print(f"applied {migration.version:04d} {migration.name}")
    else:
        out.print("schema is up to date")


# ------------------------------------------------------------------------------------------ kpis


class KpiGrouping(StrEnum):
    rep = "rep"
    team = "team"
    territory = "territory"
    product = "product"
    account = "account"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


# Columns of the terminal table (every figure is in --format json/csv).
TABLE_COLUMNS = (
    ("deals_won", "won"),
    ("deals_lost", "lost"),
    ("win_rate", "win rate"),
    ("revenue", "revenue"),
    ("avg_deal_size", "avg deal"),
    ("avg_cycle_days", "cycle d"),
    ("open_deals", "open"),
    ("open_pipeline_value", "pipeline"),
    ("calls", "calls"),
    ("calls_connected", "conn."),
    ("emails", "emails"),
    ("meetings_held", "meetings"),
    ("visits", "visits"),
    ("verified_share", "verified"),
    ("proposals_sent", "proposals"),
    ("quota_attainment", "quota %"),
)


@app.command()
def kpis(
    by: Annotated[
        KpiGrouping,
        typer.Option(help="Group by rep, team, territory, or (deal figures only) product or account."),
    ] = KpiGrouping.rep,
    since: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="First UTC day (default: first day of data)."),
    ] = None,
    until: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="Last UTC day, inclusive (default: last day of data)."),
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--format", help="table, json or csv.")
    ] = OutputFormat.table,
    days: Annotated[
        int | None,
        typer.Option(min=1, max=3660, help="Rolling window: the N days ending --until (e.g. 7 or 28)."),
    ] = None,
    coverage_days: Annotated[
        int,
        typer.Option(
            min=1,
            max=3660,
            help="Account coverage: assigned accounts with a verified visit in the N days ending --until.",
        ),
    ] = 30,
) -> None:
    """Leading and lagging KPIs per rep, team, territory, product or account, read from ClickHouse."""
    from sinks.clickhouse import connect
    from sinks.queries import database_exists
    from streams.kpis import build_report, to_csv
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = load_settings()
    configure_logging(settings)
    if since is not None and until is not None and until < since:
        raise fail(f"--until {until.date()} is before --since {since.date()}", 2)
    if days is not None and since is not None:
        raise fail("--days and --since both set the window's start: give one of them", 2)
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = connect(live)
        try:
            report = None
            if database_exists(client, live.clickhouse_database):
                report = build_report(
                    client,
                    live.clickhouse_database,
                    by=by.value,
                    since=since.date() if since else None,
                    until=until.date() if until else None,
                    deal_stages=settings.deal_stages,
                    last_days=days,
                    coverage_days=coverage_days,
                )
        finally:
            client.disconnect()
    rows = report.rows if report is not None else []
    if output is OutputFormat.json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if output is OutputFormat.csv:
        sys.stdout.write(to_csv(rows))
        return
    if report is None or report.window is None:
        out.print(no_data_message(live.clickhouse_database, "kpis"))
        return
    table = Table(title=f"KPIs by {by.value}, {report.window.since} to {report.window.until} (UTC)")
    table.add_column(by.value)
    for _, header in TABLE_COLUMNS:
        table.add_column(header, justify="right")
    for row in report.rows:
        table.add_row(str(row[by.value]), *(_cell(key, row.get(key)) for key, _ in TABLE_COLUMNS))
    out.print(table)


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if key in ("win_rate", "quota_attainment", "verified_share") and isinstance(value, float):
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"{value:,.0f}" if key != "avg_cycle_days" else f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


# ---------------------------------------------------------------------------------------- alerts

from streams.cli_alerts import alerter, alerts_app  # noqa: E402 - registered with the app here

app.command()(alerter)
app.add_typer(alerts_app, name="alerts")

from streams.cli_dashboards import dashboards_app  # noqa: E402
from streams.cli_dlq import dlq_app  # noqa: E402
from streams.cli_report import report  # noqa: E402

app.command()(report)
app.add_typer(dashboards_app, name="dashboards")

from streams.cli_bench import bench  # noqa: E402

app.command()(bench)
app.add_typer(dlq_app, name="dlq")

from streams.cli_serve import serve, tokens_app  # noqa: E402

app.command()(serve)
app.add_typer(tokens_app, name="tokens")


# -------------------------------------------------------------------------------------- backtest


class BacktestFormat(StrEnum):
    table = "table"
    json = "json"


# Rejected lines printed one by one before only the count is kept.
BACKTEST_REJECTS_SHOWN = 10


@app.command()
def backtest(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines of canonical events (.gz ok).")
    ],
    reps: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="Rep records (.csv or .jsonl, as for `reps load`): teams, quotas.",
        ),
    ] = None,
    rules: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="Alert rules YAML (default: the built-in settings)."),
    ] = None,
    output: Annotated[BacktestFormat, typer.Option("--format", help="table or json.")] = BacktestFormat.table,
    report: Annotated[
        Path | None,
        typer.Option(
            file_okay=False, help="Write an HTML report (index.html, one plot per alerted rep) here."
        ),
    ] = None,
    every: Annotated[
        int,
        typer.Option(
            min=1, max=168, help="Hours between evaluations (24: daily at 18:00 UTC; 1: hourly, ~20x slower)."
        ),
    ] = 24,
    warnings: Annotated[
        str | None,
        typer.Option(
            help="Rules scored as early warnings, comma-separated (default: activity_drop,conversion_drop,"
            "no_activity; also pacing_forecast, pipeline_coverage_low)."
        ),
    ] = None,
) -> None:
    """Run the alert rules in event time over a history of events and score them: every alert, and
    for each rep whether and when revenue fell and how long before it the first early warning came.

    Offline: reads the files, starts no servers.
    """
    from schemas.alert_rules import AlertRulesConfig
    from streams.backtest import EARLY_WARNING_RULES, Cadence, run_backtest

    settings = load_settings()
    configure_logging(settings)
    _check_readable(file)
    config = _backtest_rules(rules) if rules is not None else AlertRulesConfig()
    early_warnings = (
        tuple(name.strip() for name in warnings.split(",") if name.strip())
        if warnings is not None
        else EARLY_WARNING_RULES
    )
    records = _backtest_reps(reps) if reps is not None else []
    try:
        events = _read_backtest_events(file, settings)
    except UnreadableFileError as exc:
        raise fail(str(exc)) from None
    if not events:
        raise fail(f"{file} holds no valid events: nothing to backtest")
    with Progress(
        TextColumn("[bold]evaluating the rules"),
        BarColumn(),
        # Not "{task.total:,}": the total is None until the first step, and None cannot format with ",".
        TextColumn("{task.fields[steps]} steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("evaluate", total=None, steps="…")

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, steps=f"{done:,}/{total:,}")

        try:
            result = run_backtest(
                events,
                records,
                config,
                cadence=Cadence(every=timedelta(hours=every)),
                deal_stages=settings.deal_stages,
                early_warnings=early_warnings,
                on_step=step,
            )
        except ValueError as exc:  # an unknown rule in --warnings
            raise fail(f"--warnings: {exc}", 2) from None
    if report is not None:
        from streams.backtest_report import alerted_reps, write_report

        with console.status("writing the report"):
            written = write_report(result, report)
        console.print(f"report: {written} ({len(alerted_reps(result))} alerted reps plotted)")
    if output is BacktestFormat.json:
        sys.stdout.write(orjson.dumps(result.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    _print_backtest(result)


def _backtest_rules(path: Path) -> AlertRulesConfig:
    import yaml

    from schemas.alert_rules import AlertRulesConfig

    try:
        return AlertRulesConfig.from_yaml(path.read_text(encoding="utf-8"))
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as exc:
        # pydantic's ValidationError is a ValueError; escaped, as its "[type=...]" reads as markup.
        raise fail(f"--rules {path}: {exc}", 2) from None


def _backtest_reps(path: Path) -> list[Rep]:
    """The file's valid rep records; bad rows are printed with their line number and skipped."""
    records: list[Rep] = []
    for record in _rep_records(path):
        if record.rep is not None:
            records.append(record.rep)
        else:
            console.print(
                f"[yellow]{escape(path.name)}:{record.line}: rep record skipped: {escape(record.problem)}[/]"
            )
    if not records:
        raise fail(f"--reps {path}: no valid rep records")
    return records


def _read_backtest_events(path: Path, settings: Settings) -> list[Event]:
    """Every valid event of the file, through the same decoder as every other input; rejected lines
    are reported (the first few each, then a count), not dead-lettered: nothing is published."""
    events: list[Event] = []
    rejected = 0
    for number, decoded in _decoded_lines(path, settings, "reading"):
        for dead_letter in decoded.dead_letters:
            rejected += 1
            if rejected <= BACKTEST_REJECTS_SHOWN:
                console.print(
                    f"[yellow]{escape(path.name)}:{number}: rejected ({dead_letter.reason}): "
                    f"{escape(dead_letter.detail)}[/]"
                )
        events.extend(decoded.events)
    if rejected:
        console.print(f"[yellow]{rejected:,} line(s) rejected; {len(events):,} events read[/]")
    return events


def _print_backtest(result: BacktestResult) -> None:
    by_rule = Table(title="alerts by rule")
    for header in ("rule", "scope", "occurrences", "keys", "median days firing", "firing at the end"):
        by_rule.add_column(header, justify="left" if header in ("rule", "scope") else "right")
    groups: dict[tuple[str, str], list[AlertOccurrence]] = {}
    for alert in result.alerts:
        groups.setdefault((alert.rule, str(alert.scope)), []).append(alert)
    for (rule, scope), alerts in sorted(groups.items()):
        durations = [
            (a.resolved_at - a.fired_at) / timedelta(days=1) for a in alerts if a.resolved_at is not None
        ]
        by_rule.add_row(
            rule,
            scope,
            f"{len(alerts):,}",
            f"{len({a.key for a in alerts}):,}",
            f"{sorted(durations)[len(durations) // 2]:.1f}" if durations else "-",
            f"{sum(1 for a in alerts if a.resolved_at is None):,}",
        )
    out.print(by_rule)

    per_rep = Table(title="reps: early warnings and revenue")
    for header in (
        "rep",
        "team",
        "alerts",
        "early warnings",
        "first warning",
        "revenue fell on",
        "warned by",
        "lead days",
    ):
        per_rep.add_column(header, justify="left" if header in ("rep", "team", "warned by") else "right")
    for rep in result.reps:
        drop = rep.revenue_drop
        per_rep.add_row(
            rep.rep_id,
            rep.team or "-",
            f"{rep.alerts:,}",
            f"{rep.early_warnings:,}",
            f"{rep.first_warning_at:%Y-%m-%d}" if rep.first_warning_at else "-",
            drop.fell_on.isoformat() if drop else "-",
            rep.warning_rule or "-",
            str(rep.lead_days) if rep.lead_days is not None else "-",
        )
    out.print(per_rep)

    scores = Table(title="early warnings against revenue drops")
    headers = ("early warnings", "precision", "recall", "median lead days", "alerted: fell", "fell: warned")
    for header in headers:
        scores.add_column(header, justify="left" if header == "early warnings" else "right")
    rows = [(", ".join(result.scores.rules), result.scores)]
    rows += [(f"{rule} alone", rule_scores) for rule, rule_scores in result.rule_scores.items()]
    for label, score in rows:
        scores.add_row(
            label,
            f"{score.precision:.0%}" if score.precision is not None else "-",
            f"{score.recall:.0%}" if score.recall is not None else "-",
            f"{score.median_lead_days:.0f}" if score.median_lead_days is not None else "-",
            f"{score.alerted_reps_fell}/{score.alerted_reps}",
            f"{score.reps_fell_warned}/{score.reps_fell}",
        )
    out.print(scores)
    out.print(
        f"{result.events:,} events, {result.steps:,} evaluations, {len(result.alerts):,} alert occurrences; "
        f"precision {_share(result.scores.precision)}, recall {_share(result.scores.recall)}, "
        f"median lead {_share_days(result.scores.median_lead_days)}"
    )


def _share(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "n/a"


def _share_days(value: float | None) -> str:
    return f"{value:.0f} days" if value is not None else "n/a"


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
