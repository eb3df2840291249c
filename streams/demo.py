"""``salespulse demo``: a synthetic sales org streamed through the real pipeline, watched live."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.settings import Settings
from sinks.clickhouse import connect, write_accounts
from sinks.queries import activity_by_rep, dead_letter_count, event_totals
from streams.kafka import EventPublisher, start_producer, wait_until_consumed
from streams.synthetic import (
    OrgSpec,
    SyntheticOrg,
    estimate_total_events,
    generate_accounts,
    generate_org,
    iter_events,
)

# Malformed inputs the demo sends on purpose, so the dead-letter path is visible from the start.
DEMO_BAD_MESSAGES: tuple[tuple[bytes, bytes], ...] = (
    (b"demo-bad", b'{"event_id": "demo-bad-1", "type": "call", "rep_id": "demo-bad"'),
    (
        b"demo-bad",
        b'{"event_id": "demo-bad-2", "type": "call", "rep_id": "demo-bad", '
        b'"occurred_at": "2026-01-01T09:00:00"}',
    ),
)
SHOWN_TYPES = ("call", "email", "meeting_held", "visit", "proposal_sent", "deal_won")
TYPE_HEADERS = {
    "call": "Calls",
    "email": "Emails",
    "meeting_held": "Meetings",
    "visit": "Visits",
    "proposal_sent": "Proposals",
    "deal_won": "Won",
}
FALLBACK_RATE = 4000.0
# Where a fading rep falls off: this many days before the end of the history, so the drop shows in
# the last-7-days column against the prior 7 days.
FADE_DAYS_BEFORE_END = 9
LEADING_TYPES = ("call", "email", "meeting_scheduled", "meeting_held", "visit", "demo", "proposal_sent")


@dataclass
class DemoOptions:
    reps: int = 24
    teams: int = 3
    territories: int = 4
    days: int = 42
    # Events per second; None paces the history to end at about three quarters of ``duration``
    # (so the table moves through the weeks while you watch), or FALLBACK_RATE without a duration.
    rate: float | None = None
    duration: float | None = None
    seed: int = 7
    fading_reps: int = 2
    # Make event ids unique to this run (needed on external servers, where earlier demo runs'
    # events stay stored and the same ids would be recognised as duplicates).
    run_tag: bool = False


@dataclass
class Snapshot:
    stored_events: int = 0
    dead_letters: int = 0
    last_7d: list[dict[str, Any]] = field(default_factory=list)
    prior_7d: dict[str, dict[str, Any]] = field(default_factory=dict)
    as_of: date | None = None
    alerts_firing: int = 0
    report_path: Path | None = None


def publish_rate(options: DemoOptions, spec: OrgSpec) -> float:
    if options.rate is not None:
        return options.rate
    if options.duration is None:
        return FALLBACK_RATE
    return max(1.0, estimate_total_events(spec) / (0.75 * options.duration))


def read_snapshot(settings: Settings, as_of: date) -> Snapshot:
    client = connect(settings)
    try:
        database = settings.clickhouse_database
        last = activity_by_rep(client, database, as_of - timedelta(days=6), as_of)
        prior = activity_by_rep(client, database, as_of - timedelta(days=13), as_of - timedelta(days=7))
        return Snapshot(
            stored_events=sum(event_totals(client, database).values()),
            dead_letters=dead_letter_count(client, database),
            last_7d=last,
            prior_7d={row["rep_id"]: row for row in prior},
            as_of=as_of,
        )
    finally:
        client.disconnect()


def leading_total(row: dict[str, Any] | None) -> int:
    if row is None:
        return 0
    return sum(int(row.get(t, 0)) for t in LEADING_TYPES)


def render_table(snapshot: Snapshot, fading: set[str]) -> Table:
    title = f"Last 7 days to {snapshot.as_of} (UTC), from ClickHouse" if snapshot.as_of else "Reps"
    table = Table(title=title, expand=True, header_style="bold")
    table.add_column("Rep")
    table.add_column("Team")
    table.add_column("Territory")
    for event_type in SHOWN_TYPES:
        table.add_column(TYPE_HEADERS[event_type], justify="right")
    table.add_column("Activity", justify="right")
    table.add_column("vs prior 7d", justify="right")
    rows = sorted(snapshot.last_7d, key=lambda r: (str(r["team"]), -leading_total(r)))
    for row in rows:
        now_total = leading_total(row)
        before = leading_total(snapshot.prior_7d.get(row["rep_id"]))
        if before:
            change = (now_total - before) / before
            style = "bold red" if change <= -0.3 else ("green" if change >= 0.1 else "")
            trend = f"[{style}]{change:+.0%}[/]" if style else f"{change:+.0%}"
        else:
            trend = "new"
        name = f"{row['name']} [dim]({row['rep_id']})[/]"
        if row["rep_id"] in fading:
            name += " [yellow]fading[/]"
        table.add_row(
            name,
            str(row["team"]),
            str(row["territory"]),
            *(str(int(row.get(t, 0))) for t in SHOWN_TYPES),
            str(now_total),
            trend,
        )
    return table


async def run_demo(settings: Settings, options: DemoOptions, console: Console) -> Snapshot:
    now = datetime.now(UTC)
    start = (now - timedelta(days=options.days)).replace(hour=0, minute=0, second=0, microsecond=0)
    spec = OrgSpec(
        reps=options.reps,
        teams=options.teams,
        territories=options.territories,
        days=options.days,
        start=start,
        seed=options.seed,
        fading_reps=options.fading_reps,
        fade_at=max(0.2, 1 - FADE_DAYS_BEFORE_END / options.days),
    )
    org = generate_org(spec)
    fading = set(org.fading_rep_ids)
    # The accounts first, as `salespulse import accounts` would load them: the worker verifies the
    # demo's field visits against their positions.
    await asyncio.to_thread(_store_accounts, settings, org)
    producer = await start_producer(settings)
    publisher = EventPublisher(producer, settings)
    try:
        for rep in org.reps:
            await publisher.publish_rep(rep)
        for key, value in DEMO_BAD_MESSAGES:
            await producer.send_and_wait(settings.topics.activities, value=value, key=key)
        snapshot = await _stream_with_display(settings, options, org, spec, publisher, console, fading)
    finally:
        await producer.stop()
    snapshot.report_path = await asyncio.to_thread(write_demo_report, settings)
    return snapshot


def _store_accounts(settings: Settings, org: SyntheticOrg) -> None:
    client = connect(settings)
    try:
        write_accounts(client, settings.clickhouse_database, generate_accounts(org), datetime.now(UTC))
    finally:
        client.disconnect()


DEMO_REPORT_DIR = "demo-report"


def write_demo_report(settings: Settings) -> Path | None:
    """The sales report of what the demo stored (``salespulse report`` on the demo's database),
    under ``SALESPULSE_HOME``; None when nothing was stored."""
    from streams.sales_report import report_from_clickhouse

    return report_from_clickhouse(settings, settings.home.expanduser().resolve() / DEMO_REPORT_DIR)


# How many early warnings the demo lists (warnings first, then informational ones).
SHOWN_ALERTS = 8


class DemoAlerts:
    """The alerter, run in the demo's own process on the demo's clock: the newest published event's
    time, so the rules see the history as if it were happening now (wall-clock time would find
    weeks of not-yet-streamed history and call everyone idle)."""

    def __init__(self, settings: Settings) -> None:
        from sinks.clickhouse import connect
        from streams.alerter import Alerter, BookStore, load_rules

        state = settings.home.expanduser().resolve() / "demo-alerter"
        state.mkdir(parents=True, exist_ok=True)
        (state / "alert-book.json").unlink(missing_ok=True)  # the demo's database is new too
        self._alerter = Alerter(
            settings,
            connect(settings),
            rules=load_rules(settings),
            routing=None,
            outbox=None,
            book_store=BookStore(state / "alert-book.json"),
        )
        self.as_of: datetime | None = None
        self.firing: list[tuple[str, str, str, str]] = []  # (severity, rule, who, summary)

    def tick(self, now: datetime, names: dict[str, str]) -> None:
        self._alerter.tick(now)
        self.as_of = now
        views = [v for v in self._alerter.book.alerts(now) if v.alert.ends_at is None]
        order = {"critical": 0, "warning": 1, "info": 2}
        views.sort(key=lambda v: (order.get(str(v.alert.severity), 3), v.alert.rule, v.alert.key))
        self.firing = [
            (
                str(v.alert.severity),
                v.alert.rule,
                names.get(v.alert.key, v.alert.key) + (f" · {v.alert.detail}" if v.alert.detail else ""),
                v.alert.summary,
            )
            for v in views
        ]

    def render(self) -> Panel:
        if self.as_of is None:
            return Panel("[dim]waiting for the first weeks of history...[/]", title="Early warnings")
        lines = [
            f"[{'bold red' if severity != 'info' else 'yellow'}]{severity:<8}[/] [bold]{rule}[/] {who}: "
            f"[dim]{summary}[/]"
            for severity, rule, who, summary in self.firing[:SHOWN_ALERTS]
        ]
        if len(self.firing) > SHOWN_ALERTS:
            lines.append(f"[dim]... and {len(self.firing) - SHOWN_ALERTS} more (salespulse alerts list)[/]")
        title = f"Early warnings as of {self.as_of:%Y-%m-%d %H:%M} UTC: {len(self.firing)} firing"
        return Panel("\n".join(lines) or "[green]none[/]", title=title)


async def _stream_with_display(
    settings: Settings,
    options: DemoOptions,
    org: SyntheticOrg,
    spec: OrgSpec,
    publisher: EventPublisher,
    console: Console,
    fading: set[str],
) -> Snapshot:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} events"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )
    rate = publish_rate(options, spec)
    expected_total = estimate_total_events(spec)
    history_end = spec.start + timedelta(days=spec.days)
    published_task = progress.add_task("published", total=expected_total, rate="")
    stored_task = progress.add_task("stored in ClickHouse", total=expected_total, rate="")
    # The table shows the 7 days up to the newest published event: it walks through the history
    # as it streams, the way a manager's screen follows the days.
    as_of = spec.start.date()
    snapshot = Snapshot(as_of=as_of)
    began = time.monotonic()
    deadline = began + options.duration if options.duration else None
    events = iter_events(org, spec)
    if options.run_tag:
        tag = f"demo{int(time.time())}-"
        events = (event.model_copy(update={"event_id": tag + event.event_id}) for event in events)
    exhausted = False
    next_refresh = 0.0
    newest_event_at = spec.start
    names = {rep.rep_id: rep.name for rep in org.reps}
    alerts = await asyncio.to_thread(DemoAlerts, settings)
    next_alert_tick = 0.0

    def view() -> Group:
        header = (
            f"[bold]{len(org.reps)}[/] reps in {options.teams} teams · "
            f"dead letters: [bold]{snapshot.dead_letters}[/] · "
            f"{'history published' if exhausted else 'streaming history'} · Ctrl-C to stop"
        )
        return Group(
            Panel(header, title="salespulse demo"), progress, render_table(snapshot, fading), alerts.render()
        )

    with Live(view(), console=console, refresh_per_second=4, transient=False) as live:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if not exhausted:
                target = int(rate * (now - began))
                while publisher.stats.events + publisher.buffered_events < target:
                    event = next(events, None)
                    if event is None:
                        exhausted = True
                        as_of = (history_end - timedelta(seconds=1)).date()
                        await publisher.flush()
                        progress.update(published_task, total=publisher.stats.events)
                        progress.update(stored_task, total=publisher.stats.events)
                        break
                    as_of = max(as_of, event.occurred_at.date())
                    newest_event_at = max(newest_event_at, event.occurred_at)
                    await publisher.publish(event)
                await publisher.flush_due()
                elapsed = max(now - began, 1e-6)
                progress.update(
                    published_task,
                    completed=publisher.stats.events,
                    rate=f"{publisher.stats.events / elapsed:,.0f}/s",
                )
            if now >= next_refresh:
                next_refresh = now + 1.0
                snapshot = await asyncio.to_thread(read_snapshot, settings, as_of)
                progress.update(stored_task, completed=snapshot.stored_events)
                # Evaluate the rules once the worker has caught up with what was published (lag
                # would read as missing activity) and four weeks of history give a baseline.
                caught_up = snapshot.stored_events >= 0.99 * publisher.stats.events
                if (
                    caught_up
                    and now >= next_alert_tick
                    and newest_event_at - spec.start >= timedelta(days=28)
                ):
                    next_alert_tick = now + 3.0
                    await asyncio.to_thread(alerts.tick, newest_event_at, names)
                live.update(view())
                if exhausted and deadline is None and snapshot.stored_events >= publisher.stats.events:
                    break
            await asyncio.sleep(0.02)
        await publisher.flush()
        await wait_until_consumed(settings, settings.topics.consumed, timeout_s=60)
        snapshot = await asyncio.to_thread(read_snapshot, settings, as_of)
        progress.update(stored_task, completed=snapshot.stored_events)
        if newest_event_at - spec.start >= timedelta(days=28):
            await asyncio.to_thread(alerts.tick, newest_event_at, names)
        live.update(view())
    snapshot.alerts_firing = len(alerts.firing)
    return snapshot
