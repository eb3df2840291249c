"""``salespulse dlq list`` and ``salespulse dlq replay``: the dead letters stored in ClickHouse.

``list`` reads the ``dead_letters`` table (FINAL: one entry per dead letter however often it was
redelivered). ``replay`` sends the stored excerpts that are whole inputs and valid today back
through the pipeline, after the cause was fixed, and records each in ``dead_letter_replays`` so a
second replay skips it; what it cannot replay it lists with the reason (``streams.dlq``).
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import DEAL_TYPES, EventKind
from schemas.settings import Settings
from streams.dlq import Republish, Skip, lateness, plan_replay

if TYPE_CHECKING:
    from clickhouse_driver import Client

dlq_app = typer.Typer(
    help="Dead letters: the inputs the pipeline rejected, with why; replay them after a fix.",
    no_args_is_help=True,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

# The identity of a dead letter: the sort key of the dead_letters table (see migration 0009).
DEAD_LETTER_ID_SQL = (
    "cityHash64(source, ifNull(source_partition, -1), ifNull(source_offset, -1), "
    "ifNull(batch_index, -1), reason, cityHash64(payload_excerpt))"
)
EXCERPT_SHOWN = 60
DETAIL_SHOWN = 70


class ListFormat(StrEnum):
    table = "table"
    json = "json"


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """A dead letter as stored, with its id and, once replayed, when and where to."""

    id: int
    letter: DeadLetter
    replayed_at: datetime | None = None
    replayed_to: str | None = None

    @property
    def id_hex(self) -> str:
        return f"{self.id:016x}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id_hex,
            **self.letter.model_dump(mode="json"),
            "replayed_at": self.replayed_at.isoformat() if self.replayed_at else None,
            "replayed_to": self.replayed_to,
        }


def _settings() -> Settings:
    from streams.cli import configure_logging, load_settings

    settings = load_settings()
    configure_logging(settings)
    return settings


def _filters(reason: DeadLetterReason | None, source: str | None) -> tuple[str, dict[str, Any]]:
    conditions, params = [], {}
    if reason is not None:
        conditions.append("reason = %(reason)s")
        params["reason"] = reason.value
    if source is not None:
        conditions.append("source = %(source)s")
        params["source"] = source
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)


def read_dead_letters(
    client: Client,
    database: str,
    *,
    reason: DeadLetterReason | None = None,
    source: str | None = None,
    limit: int | None = None,
    newest_first: bool = True,
) -> list[StoredDeadLetter]:
    """Stored dead letters (one per identity), with their replay record when there is one."""
    where, params = _filters(reason, source)
    order = "DESC" if newest_first else "ASC"
    rows = client.execute(
        "SELECT d.id, d.reason, d.detail, d.source, d.source_partition, d.source_offset, d.batch_index, "
        "d.event_id, d.rep_id, d.payload_excerpt, d.payload_truncated, d.rejected_at, "
        "r.replayed_at, r.replayed_to "
        f"FROM (SELECT *, {DEAD_LETTER_ID_SQL} AS id FROM {database}.dead_letters FINAL{where}) AS d "
        "LEFT JOIN (SELECT dead_letter_id, replayed_at, replayed_to "
        f"FROM {database}.dead_letter_replays FINAL) AS r ON r.dead_letter_id = d.id "
        f"ORDER BY d.rejected_at {order}, d.source, d.source_partition, d.source_offset, d.batch_index, "
        "d.reason, d.id" + (" LIMIT %(limit)s" if limit is not None else "") + " SETTINGS join_use_nulls = 1",
        {**params, "limit": limit},
    )
    found = []
    for (
        letter_id,
        letter_reason,
        detail,
        letter_source,
        partition,
        offset,
        index,
        event_id,
        rep_id,
        excerpt,
        truncated,
        rejected_at,
        replayed_at,
        replayed_to,
    ) in rows:
        letter = DeadLetter(
            reason=DeadLetterReason(letter_reason),
            detail=detail,
            source=letter_source,
            partition=partition,
            offset=offset,
            index=index,
            event_id=event_id,
            rep_id=rep_id,
            payload_excerpt=excerpt,
            payload_truncated=bool(truncated),
            rejected_at=rejected_at.astimezone(UTC),
        )
        found.append(StoredDeadLetter(int(letter_id), letter, _utc(replayed_at), replayed_to))
    return found


def count_dead_letters(
    client: Client, database: str, *, reason: DeadLetterReason | None = None, source: str | None = None
) -> int:
    where, params = _filters(reason, source)
    return int(client.execute(f"SELECT count() FROM {database}.dead_letters FINAL{where}", params)[0][0])


def _connect_migrated(settings: Settings) -> Client:
    from sinks.clickhouse import connect
    from sinks.migrate import apply_migrations

    client = connect(settings)
    # Idempotent; a home last used by an older salespulse may not have the replay table yet.
    apply_migrations(client, settings.clickhouse_database)
    return client


# ------------------------------------------------------------------------------------------- list


def _position(letter: DeadLetter) -> str:
    parts = [
        f"{name}{value}"
        for name, value in (("p", letter.partition), ("@", letter.offset), ("#", letter.index))
        if value is not None
    ]
    return " ".join(parts) or "-"


def _shorten(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[DeadLetterReason | None, typer.Option(help="Only this reason.")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source (a topic, or file:NAME).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
    output: Annotated[ListFormat, typer.Option("--format", help="table or json.")] = ListFormat.table,
) -> None:
    """The dead letters stored in ClickHouse, newest first: why, from where, and what."""
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = _settings()
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = _connect_migrated(live)
        try:
            letters = read_dead_letters(
                client, live.clickhouse_database, reason=reason, source=source, limit=limit
            )
            total = count_dead_letters(client, live.clickhouse_database, reason=reason, source=source)
        finally:
            client.disconnect()
    if output is ListFormat.json:
        sys.stdout.write(orjson.dumps([s.to_json() for s in letters], option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return
    if not letters:
        out.print("no dead letters" + (f" with reason {reason.value}" if reason else ""))
        return
    table = Table(title=f"dead letters: {len(letters)} of {total}, newest first")
    for header in ("rejected (UTC)", "reason", "source", "position", "rep", "event", "detail", "payload"):
        table.add_column(header, overflow="fold")
    table.add_column("replayed")
    for stored in letters:
        letter = stored.letter
        excerpt = _shorten(letter.payload_excerpt, EXCERPT_SHOWN) + (
            " [cut]" if letter.payload_truncated else ""
        )
        table.add_row(
            f"{letter.rejected_at:%Y-%m-%d %H:%M:%S}",
            letter.reason.value,
            escape(letter.source),
            _position(letter),
            escape(letter.rep_id or "-"),
            escape(letter.event_id or "-"),
            escape(_shorten(letter.detail, DETAIL_SHOWN)),
            escape(excerpt),
            f"{stored.replayed_at:%Y-%m-%d %H:%M}" if stored.replayed_at else "-",
        )
    out.print(table)


# ----------------------------------------------------------------------------------------- replay


@dataclass
class ReplayPlan:
    sends: list[tuple[StoredDeadLetter, Republish]] = field(default_factory=list)
    skips: list[tuple[StoredDeadLetter, Skip]] = field(default_factory=list)
    already_replayed: int = 0


def _newest_stored(
    client: Client, database: str, rep_ids: Sequence[str]
) -> dict[tuple[str, EventKind], datetime]:
    """The newest stored occurred_at per rep and stream: max() needs no FINAL (copies agree)."""
    if not rep_ids:
        return {}
    rows = client.execute(
        f"SELECT rep_id, type IN %(deal_types)s AS is_deal, max(occurred_at) FROM {database}.events "
        "WHERE rep_id IN (SELECT rep_id FROM wanted_reps) GROUP BY rep_id, is_deal",
        {"deal_types": tuple(DEAL_TYPES)},
        external_tables=[
            {
                "name": "wanted_reps",
                "structure": [("rep_id", "String")],
                "data": [{"rep_id": r} for r in rep_ids],
            }
        ],
    )
    return {
        (rep_id, EventKind.DEAL if is_deal else EventKind.ACTIVITY): newest.astimezone(UTC)
        for rep_id, is_deal, newest in rows
    }


def plan(
    client: Client,
    settings: Settings,
    *,
    reason: DeadLetterReason | None,
    source: str | None,
    now: datetime,
) -> ReplayPlan:
    from sinks.clickhouse import ClickHouseHistory

    database = settings.clickhouse_database
    result = ReplayPlan()
    candidates: list[tuple[StoredDeadLetter, Republish]] = []
    for stored in read_dead_letters(client, database, reason=reason, source=source, newest_first=False):
        if stored.replayed_at is not None:
            result.already_replayed += 1
            continue
        decision = plan_replay(stored.letter, settings.topics, settings.max_message_bytes, now)
        if isinstance(decision, Skip):
            result.skips.append((stored, decision))
        else:
            candidates.append((stored, decision))
    events = [decision.event for _, decision in candidates if decision.event is not None]
    known = ClickHouseHistory(client, database).known_event_ids([e.event_id for e in events])
    newest = _newest_stored(client, database, sorted({e.rep_id for e in events}))
    grace = timedelta(days=settings.late_grace_days)
    for stored, decision in candidates:
        event = decision.event
        if event is not None and event.event_id in known:
            result.skips.append((stored, Skip("already stored: an event with this event_id counts already")))
            continue
        late = lateness(event, newest, grace) if event is not None else None
        if late is not None:
            result.skips.append((stored, late))
            continue
        result.sends.append((stored, decision))
    # Rep records first, then each rep's events in event time: replayed events are never late
    # against each other.
    result.sends.sort(
        key=lambda item: (item[1].event is not None, item[1].event.occurred_at if item[1].event else now)
    )
    return result


async def _publish(settings: Settings, sends: Sequence[Republish]) -> None:
    from streams.kafka import start_producer

    producer = await start_producer(settings)
    try:
        pending = [await producer.send(send.topic, value=send.value, key=send.key) for send in sends]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def _mark_replayed(
    client: Client, database: str, sends: Sequence[tuple[StoredDeadLetter, Republish]], now: datetime
) -> None:
    from sinks.clickhouse import epoch_millis

    client.execute(
        f"INSERT INTO {database}.dead_letter_replays "
        "(dead_letter_id, reason, source, replayed_to, replayed_at) VALUES",
        [
            (stored.id, stored.letter.reason.value, stored.letter.source, send.topic, epoch_millis(now))
            for stored, send in sends
        ],
        types_check=False,
    )


@dlq_app.command("replay")
def dlq_replay(
    reason: Annotated[DeadLetterReason | None, typer.Option(help="Only this reason.")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source (a topic, or file:NAME).")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would be replayed; send nothing.")] = False,
    wait: Annotated[
        bool, typer.Option(help="Against external servers: wait until the workers stored everything.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Longest wait for processing, in seconds.")] = 300.0,
    output: Annotated[ListFormat, typer.Option("--format", help="table or json.")] = ListFormat.table,
) -> None:
    """Send dead letters back through the pipeline after the cause was fixed (for example after
    raising SALESPULSE_LATE_GRACE_DAYS for too_late ones).

    Only whole inputs that pass validation and the lateness rule today are sent, each to the topic of
    its type, keyed by its rep_id; each is recorded as replayed and skipped by later replays. The
    rest is listed with the reason it cannot be replayed: excerpts cut at 2 KiB, input that is not
    UTF-8 or not JSON, conflicts (the first event with an id counts), CRM export rows, and events
    still invalid or too late. Replaying is idempotent: an event that gets through counts once.
    """
    from streams.runtime.supervisor import EmbeddedRuntime

    settings = _settings()
    now = datetime.now(UTC)
    # Planned first with ClickHouse alone: when nothing can be sent, no broker or worker starts.
    with EmbeddedRuntime(settings, need_broker=False) as runtime:
        live = runtime.settings_for_children()
        client = _connect_migrated(live)
        try:
            replay_plan = plan(client, live, reason=reason, source=source, now=now)
        finally:
            client.disconnect()
    stored_events: int | None = None
    if replay_plan.sends and not dry_run:
        replay_plan, stored_events = _replay(
            settings, reason=reason, source=source, now=now, wait=wait, timeout=timeout
        )
    if output is ListFormat.json:
        sys.stdout.write(
            orjson.dumps(_plan_json(replay_plan, dry_run, stored_events), option=orjson.OPT_INDENT_2).decode()
        )
        sys.stdout.write("\n")
        return
    _print_plan(replay_plan, dry_run=dry_run)
    if stored_events is not None:
        sent_events = sum(1 for _, send in replay_plan.sends if send.event is not None)
        out.print(f"stored now: {stored_events} of {sent_events} replayed event(s)")
        if stored_events < sent_events:
            out.print("the others were rejected again: see `salespulse dlq list`")


def _replay(
    settings: Settings,
    *,
    reason: DeadLetterReason | None,
    source: str | None,
    now: datetime,
    wait: bool,
    timeout: float,
) -> tuple[ReplayPlan, int | None]:
    from sinks.clickhouse import ClickHouseHistory, connect
    from streams.kafka import wait_until_consumed
    from streams.orchestration import running_pipeline

    with running_pipeline(settings) as pipeline:
        live = pipeline.settings
        database = live.clickhouse_database
        client = connect(live)
        try:
            replay_plan = plan(client, live, reason=reason, source=source, now=now)
            if not replay_plan.sends:
                return replay_plan, None
            asyncio.run(_publish(live, [send for _, send in replay_plan.sends]))
            # Recorded once the broker has acknowledged every send; a crash before this line only
            # means the next replay sends them again, which counts nothing twice.
            _mark_replayed(client, database, replay_plan.sends, now)
            if not (pipeline.self_contained or wait):
                return replay_plan, None
            try:
                asyncio.run(wait_until_consumed(live, live.topics.consumed, timeout_s=timeout))
            except TimeoutError as exc:
                err.print(f"[red]error:[/] {escape(str(exc))}")
                raise typer.Exit(1) from None
            ids = [send.event.event_id for _, send in replay_plan.sends if send.event is not None]
            return replay_plan, len(ClickHouseHistory(client, database).known_event_ids(ids))
        finally:
            client.disconnect()


def _plan_json(replay_plan: ReplayPlan, dry_run: bool, stored_events: int | None) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "replayed": [
            {
                "id": stored.id_hex,
                "reason": stored.letter.reason.value,
                "source": stored.letter.source,
                "topic": send.topic,
                "event_id": send.event.event_id if send.event else None,
            }
            for stored, send in replay_plan.sends
        ],
        "skipped": [
            {
                "id": stored.id_hex,
                "reason": stored.letter.reason.value,
                "source": stored.letter.source,
                "offset": stored.letter.offset,
                "why": skip.why,
            }
            for stored, skip in replay_plan.skips
        ],
        "replayed_before": replay_plan.already_replayed,
        # Replayed events found stored once the worker caught up (null when not waited for).
        "stored": stored_events,
    }


def _print_plan(replay_plan: ReplayPlan, *, dry_run: bool) -> None:
    verb = "would replay" if dry_run else "replayed"
    by_reason = Counter(stored.letter.reason.value for stored, _ in replay_plan.sends)
    summary = ", ".join(f"{n} {r}" for r, n in sorted(by_reason.items()))
    out.print(f"{verb} {len(replay_plan.sends)} dead letter(s)" + (f": {summary}" if summary else ""))
    if replay_plan.already_replayed:
        out.print(f"{replay_plan.already_replayed} replayed before (skipped)")
    if not replay_plan.skips:
        return
    table = Table(title=f"{len(replay_plan.skips)} dead letter(s) cannot be replayed")
    for header in ("id", "reason", "source", "position", "why"):
        table.add_column(header, overflow="fold")
    for stored, skip in replay_plan.skips:
        table.add_row(
            stored.id_hex,
            stored.letter.reason.value,
            escape(stored.letter.source),
            _position(stored.letter),
            escape(skip.why),
        )
    out.print(table)
