"""The sales report: one self-contained HTML page (inline SVG charts, no script, nothing to fetch)
that a sales leader can open without Grafana.

Every figure comes from the KPI engine (``streams.kpi``), the same code as ``salespulse kpis`` and
the worker: activity from the daily counters, deals rebuilt by ``DealBook`` from their stored
events, team figures as sums of rep figures. Alerts, management-mode changes and visit positions
are read as stored. Loading (``load_report_data``) is the only I/O; rendering is a pure function of
the loaded data, so the same data gives the same page byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from clickhouse_driver import Client
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from schemas.reps import UNASSIGNED, Rep
from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.queries import (
    ModeChange,
    StoredAlert,
    VisitPosition,
    alerts_overlapping,
    daily_counters,
    database_exists,
    mode_changes,
    stored_deal_events,
    stored_reps,
    visit_positions,
)
from streams.html_report import escape, figure_svg, naive_utc, page, rule_colour
from streams.kpi.deals import DEAL_EVENT_TYPES, Deal, DealBook, stage_ranks
from streams.kpi.metrics import DailyCount, KpiTotals, Window, compute_rep_kpis, data_window

REPORT_FILE = "index.html"
# The funnel as the report draws it: base figure -> label (the conversions are the engine's).
FUNNEL_BARS: tuple[tuple[str, str], ...] = (
    ("calls", "calls"),
    ("meetings_scheduled", "meetings scheduled"),
    ("meetings_held", "meetings held"),
    ("proposals_sent", "proposals sent"),
    ("deals_won", "deals won"),
)
TEAM_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MODE_COLOURS = {"developing": "#ff7f0e", "seasoned": "#1f77b4"}
ACTIVITY_COLOUR = "#4c72b0"
REVENUE_COLOUR = "#2ca02c"
# Alert rows listed in the table under the timeline (the newest); the chart shows them all.
ALERTS_LISTED = 60
# Reps in the weekly small multiples: the page stays readable for a floor, not a whole company.
SMALL_MULTIPLES_MAX = 48

_EXTRA_STYLE = """
.kpis { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.kpi { border: 1px solid #ddd; border-radius: 6px; padding: 0.5rem 0.9rem; min-width: 9rem; }
.kpi b { display: block; font-size: 1.3rem; }
.kpi span { color: #555; font-size: 0.85rem; }
.bad { color: #b00020; } .good { color: #1a7f37; }
nav a { margin-right: 0.8rem; }
th.t, td.t { text-align: left; }
"""


@dataclass(frozen=True, slots=True)
class SalesReportData:
    """Everything the page shows, already read and computed."""

    window: Window
    reps: Mapping[str, Rep]
    rep_totals: Mapping[str, KpiTotals]
    weekly: Sequence[tuple[Window, Mapping[str, KpiTotals]]]
    alerts: Sequence[StoredAlert] = ()
    modes: Sequence[ModeChange] = ()
    visits: Sequence[VisitPosition] = ()
    currency: str = "USD"
    # Extra lines under the title (for example where the data came from).
    notes: Sequence[str] = field(default_factory=tuple)

    def team_of(self, rep_id: str) -> str:
        rep = self.reps.get(rep_id)
        return UNASSIGNED if rep is None else rep.team

    def rep_label(self, rep_id: str) -> str:
        rep = self.reps.get(rep_id)
        return rep_id if rep is None else f"{rep.name} ({rep_id})"

    def team_totals(self) -> dict[str, KpiTotals]:
        """Team figures as the sums of their reps' (the engine's roll-up rule)."""
        teams: dict[str, KpiTotals] = {}
        for rep_id, totals in self.rep_totals.items():
            teams.setdefault(self.team_of(rep_id), KpiTotals()).add(totals)
        return dict(sorted(teams.items()))

    def org_totals(self) -> KpiTotals:
        org = KpiTotals()
        for totals in self.rep_totals.values():
            org.add(totals)
        return org


# --- Loading -------------------------------------------------------------------------------------------


def weekly_windows(window: Window) -> list[Window]:
    """Seven-day windows ending on ``window.until``, going back; the first is clipped at
    ``window.since`` (so it may be shorter)."""
    weeks: list[Window] = []
    end = window.until
    while end >= window.since:
        start = max(window.since, end - timedelta(days=6))
        weeks.append(Window(start, end))
        end = start - timedelta(days=1)
    return weeks[::-1]


def compute_report_kpis(
    daily: Sequence[DailyCount],
    deals: Sequence[Deal],
    reps: Mapping[str, Rep],
    window: Window,
) -> tuple[dict[str, KpiTotals], list[tuple[Window, dict[str, KpiTotals]]]]:
    """Per-rep totals over ``window`` and over each of its weeks, by the KPI engine."""
    totals = compute_rep_kpis(daily, deals, reps, window).totals
    seen = {row.rep_id for row in daily} | {deal.rep_id for deal in deals}
    weekly: list[tuple[Window, dict[str, KpiTotals]]] = []
    weeks = weekly_windows(window)
    # Each week is computed from its own daily rows only (the engine would skip the others
    # anyway, but a year of weeks over every row would be quadratic).
    by_week: dict[date, list[DailyCount]] = {week.since: [] for week in weeks}
    starts = [week.since for week in weeks]
    for row in daily:
        if window.since <= row.day <= window.until:
            index = _week_index(starts, row.day)
            by_week[starts[index]].append(row)
    for week in weeks:
        week_totals = compute_rep_kpis(by_week[week.since], deals, reps, week).totals
        for rep_id in seen:
            week_totals.setdefault(rep_id, KpiTotals())
        weekly.append((week, week_totals))
    return totals, weekly


def _week_index(starts: list[date], day: date) -> int:
    low, high = 0, len(starts) - 1
    while low < high:  # the last start at or before ``day``
        middle = (low + high + 1) // 2
        if starts[middle] <= day:
            low = middle
        else:
            high = middle - 1
    return low


def load_report_data(
    client: Client,
    database: str,
    *,
    since: date | None,
    until: date | None,
    deal_stages: Sequence[str],
    currency: str = "USD",
) -> SalesReportData | None:
    """Read what the report shows for ``since``..``until`` (whole UTC days, both inclusive; each
    defaults to the data's own first or last day). None when there is no data at all."""
    daily = [DailyCount(*row) for row in daily_counters(client, database)]
    book = DealBook(stage_ranks(deal_stages))
    book.apply(e for e in stored_deal_events(client, database) if isinstance(e, DEAL_EVENT_TYPES))
    deals = list(book.deals.values())
    reps = stored_reps(client, database)
    span = data_window(daily, deals)
    if span is None and (since is None or until is None):
        return None
    window = Window(
        since if since is not None else span.since,  # type: ignore[union-attr]
        until if until is not None else span.until,  # type: ignore[union-attr]
    )
    rep_totals, weekly = compute_report_kpis(daily, deals, reps, window)
    return SalesReportData(
        window=window,
        reps=reps,
        rep_totals=rep_totals,
        weekly=weekly,
        alerts=alerts_overlapping(client, database, window.start, window.end),
        modes=mode_changes(client, database, None, window.end),
        visits=visit_positions(client, database, window.start, window.end),
        currency=currency,
    )


def report_from_clickhouse(
    settings: Settings, directory: Path, *, since: date | None = None, until: date | None = None
) -> Path | None:
    """Read from the ClickHouse ``settings`` point at (a live server) and write the report into
    ``directory``; None, and nothing written, when there is no data yet."""
    client = connect(settings)
    try:
        if not database_exists(client, settings.clickhouse_database):
            return None
        data = load_report_data(
            client,
            settings.clickhouse_database,
            since=since,
            until=until,
            deal_stages=settings.deal_stages,
            currency=settings.currency,
        )
    finally:
        client.disconnect()
    return None if data is None else write_report(data, directory)


def write_report(data: SalesReportData, directory: Path) -> Path:
    """Write ``index.html`` into ``directory`` (created if missing) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    path.write_text(render_report(data), encoding="utf-8")
    return path


# --- The page ------------------------------------------------------------------------------------------


SECTIONS = (
    ("teams", "Team leaderboard"),
    ("reps", "Reps"),
    ("leading-lagging", "Leading vs lagging"),
    ("funnel", "Funnel"),
    ("alerts", "Alerts"),
    ("modes", "Management modes"),
    ("visits", "Field visits"),
)


def render_report(data: SalesReportData) -> str:
    window = data.window
    title = f"salespulse sales report, {window.since} to {window.until}"
    nav = " ".join(f"<a href='#{anchor}'>{escape(label)}</a>" for anchor, label in SECTIONS)
    body = [
        f"<h1>{escape(title)} (UTC)</h1>",
        *(f"<p class='note'>{escape(note)}</p>" for note in data.notes),
        f"<nav>{nav}</nav>",
        _headline(data),
        _teams_section(data),
        _reps_section(data),
        _leading_lagging_section(data),
        _funnel_section(data),
        _alerts_section(data),
        _modes_section(data),
        _visits_section(data),
        "<p class='note'>Definitions: README, section KPIs. Activity counts on the day it happened, "
        "deals on the day they closed; team figures are sums of their reps' figures, and every ratio "
        "is taken after summing.</p>",
    ]
    return page(title, body, _EXTRA_STYLE)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _money(value: object) -> str:
    return f"{float(value):,.0f}"  # type: ignore[arg-type]


def _count(value: int) -> str:
    return f"{value:,}"


def _table(
    caption: str, headers: Sequence[str], rows: Iterable[Sequence[str]], text: Collection[int] = (0,)
) -> str:
    """A table whose cells are already HTML; columns ``text`` hold words (left-aligned), the others
    numbers (right-aligned)."""

    def cell(tag: str, index: int, content: str) -> str:
        return f"<{tag} class='t'>{content}</{tag}>" if index in text else f"<{tag}>{content}</{tag}>"

    head = "".join(cell("th", i, escape(h)) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", i, content) for i, content in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><caption>{escape(caption)}</caption><tr>{head}</tr>{body}</table>"


def _section(anchor: str, heading: str, *parts: str) -> str:
    return f"<section id='{anchor}'><h2>{escape(heading)}</h2>{''.join(parts)}</section>"


def _figure(svg: str, label: str) -> str:
    return f"<figure role='img' aria-label='{escape(label)}'>{svg}</figure>"


def _headline(data: SalesReportData) -> str:
    org = data.org_totals()
    firing = sum(1 for alert in data.alerts if alert.ends_at is None)
    tiles = (
        (f"{_money(org.revenue)} {data.currency}", "revenue won"),
        (_percent(org.quota_attainment), "quota attainment"),
        (_percent(org.win_rate), "win rate"),
        (_count(org.activities), "activities"),
        (_count(org.meetings_held), "meetings held"),
        (_ratio(org.pipeline_coverage), "pipeline coverage"),
        (_count(firing), "alerts firing at the end"),
    )
    cells = "".join(f"<div class='kpi'><b>{escape(v)}</b><span>{escape(k)}</span></div>" for v, k in tiles)
    return (
        f"<p>{len(data.rep_totals)} reps in {len(data.team_totals())} teams, "
        f"{(data.window.until - data.window.since).days + 1} days.</p><div class='kpis'>{cells}</div>"
    )


# --- Teams and reps -------------------------------------------------------------------------------


def _team_colours(data: SalesReportData) -> dict[str, str]:
    return {team: TEAM_COLOURS[i % len(TEAM_COLOURS)] for i, team in enumerate(data.team_totals())}


def _by_attainment(items: Iterable[tuple[str, KpiTotals]]) -> list[tuple[str, KpiTotals]]:
    return sorted(items, key=lambda item: (-(item[1].quota_attainment or -1.0), -item[1].revenue, item[0]))


def _teams_section(data: SalesReportData) -> str:
    teams = _by_attainment(data.team_totals().items())
    rows = [
        (
            escape(team),
            _money(t.revenue),
            _money(t.quota),
            _percent(t.quota_attainment),
            _count(t.deals_won),
            _percent(t.win_rate),
            _count(t.activities),
            _count(t.meetings_held),
            _count(t.proposals_sent),
            _money(t.open_pipeline_value),
            _ratio(t.pipeline_coverage),
        )
        for team, t in teams
    ]
    headers = (
        "team",
        f"revenue ({data.currency})",
        "quota",
        "attainment",
        "won",
        "win rate",
        "activities",
        "meetings held",
        "proposals",
        "open pipeline",
        "coverage",
    )
    return _section(
        "teams",
        "Team leaderboard",
        _figure(team_attainment_svg(data), "quota attainment by team"),
        _table("Teams, best attainment first", headers, rows),
    )


def team_attainment_svg(data: SalesReportData) -> str:
    teams = _by_attainment(data.team_totals().items())[::-1]  # best on top
    colours = _team_colours(data)
    figure = Figure(figsize=(9, max(2.0, 0.55 * len(teams) + 1.0)), layout="constrained")
    axes = figure.subplots()
    values = [100 * (t.quota_attainment or 0.0) for _, t in teams]
    names = [team for team, _ in teams]
    bars = axes.barh(names, values, color=[colours[name] for name in names])
    for bar, (_, totals) in zip(bars, teams, strict=True):
        axes.annotate(
            f"{_percent(totals.quota_attainment)}  ({_money(totals.revenue)} of {_money(totals.quota)})",
            (bar.get_width(), bar.get_y() + bar.get_height() / 2),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    axes.axvline(100, color="#333333", linestyle="--", linewidth=1.0)
    axes.set_xlabel("quota attainment (%) - dashed: 100 %")
    axes.set_xlim(0, max([110.0, *values]) * 1.35)
    axes.grid(axis="x", alpha=0.3)
    return figure_svg(figure, salt="teams")


def _reps_section(data: SalesReportData) -> str:
    firing: dict[str, int] = {}
    for alert in data.alerts:
        if alert.scope == "rep" and alert.ends_at is None:
            firing[alert.key] = firing.get(alert.key, 0) + 1
    rows = []
    for rank, (rep_id, t) in enumerate(_by_attainment(data.rep_totals.items()), start=1):
        alerts = firing.get(rep_id, 0)
        rows.append(
            (
                str(rank),
                escape(data.rep_label(rep_id)),
                escape(data.team_of(rep_id)),
                _count(t.activities),
                _count(t.calls),
                _count(t.meetings_held),
                _count(t.proposals_sent),
                _count(t.deals_won),
                _money(t.revenue),
                _percent(t.quota_attainment),
                _ratio(t.pipeline_coverage),
                f"<span class='bad'>{alerts}</span>" if alerts else "0",
            )
        )
    headers = (
        "#",
        "rep",
        "team",
        "activities",
        "calls",
        "meetings held",
        "proposals",
        "won",
        f"revenue ({data.currency})",
        "attainment",
        "coverage",
        "alerts firing",
    )
    return _section("reps", "Reps", _table("Reps, best attainment first", headers, rows, text=(1, 2)))


# --- Leading vs lagging ---------------------------------------------------------------------------


def _leading_lagging_section(data: SalesReportData) -> str:
    return _section(
        "leading-lagging",
        "Leading vs lagging",
        "<p class='note'>Activity (the leading indicator) moves weeks before revenue (the lagging "
        "one). First, each rep's activities against quota attainment over the period; then, week by "
        "week, activities (bars) and revenue won (line) per rep.</p>",
        _figure(leading_lagging_scatter_svg(data), "activities against quota attainment per rep"),
        _figure(weekly_small_multiples_svg(data), "weekly activities and revenue per rep"),
    )


def leading_lagging_scatter_svg(data: SalesReportData) -> str:
    colours = _team_colours(data)
    figure = Figure(figsize=(9, 5.2), layout="constrained")
    axes = figure.subplots()
    by_team: dict[str, list[tuple[str, KpiTotals]]] = {}
    for rep_id, totals in sorted(data.rep_totals.items()):
        by_team.setdefault(data.team_of(rep_id), []).append((rep_id, totals))
    for team, members in sorted(by_team.items()):
        xs = [t.activities for _, t in members]
        ys = [100 * (t.quota_attainment or 0.0) for _, t in members]
        axes.scatter(xs, ys, color=colours.get(team, "#7f7f7f"), label=team, s=36, alpha=0.85)
        for (rep_id, _), x, y in zip(members, xs, ys, strict=True):
            axes.annotate(rep_id, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=6.5)
    axes.axhline(100, color="#333333", linestyle="--", linewidth=1.0)
    axes.set_xlabel("activities in the period (leading)")
    axes.set_ylabel("quota attainment, % (lagging)")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8, frameon=False)
    return figure_svg(figure, salt="scatter")


def weekly_small_multiples_svg(data: SalesReportData) -> str:
    reps = sorted(data.rep_totals, key=lambda r: (data.team_of(r), r))[:SMALL_MULTIPLES_MAX]
    columns = 4
    rows = max(1, math.ceil(len(reps) / columns))
    figure = Figure(figsize=(12, 1.9 * rows + 0.6), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False, sharex=True)
    weeks = [week for week, _ in data.weekly]
    positions = list(range(len(weeks)))
    labels = [f"{week.since:%d %b}" for week in weeks]
    peak_activity = max(
        (totals.get(r, KpiTotals()).activities for _, totals in data.weekly for r in reps), default=0
    )
    peak_revenue = max(
        (float(totals.get(r, KpiTotals()).revenue) for _, totals in data.weekly for r in reps), default=0.0
    )
    for index, axes in enumerate(grid.flat):
        if index >= len(reps):
            axes.set_visible(False)
            continue
        rep_id = reps[index]
        activity = [totals.get(rep_id, KpiTotals()).activities for _, totals in data.weekly]
        revenue = [float(totals.get(rep_id, KpiTotals()).revenue) for _, totals in data.weekly]
        axes.bar(positions, activity, color=ACTIVITY_COLOUR, alpha=0.55, width=0.8)
        axes.set_ylim(0, max(1, peak_activity) * 1.1)
        axes.set_title(f"{rep_id} · {data.team_of(rep_id)}", fontsize=8, loc="left")
        axes.tick_params(labelsize=6.5)
        money = axes.twinx()
        money.plot(positions, revenue, color=REVENUE_COLOUR, marker="o", markersize=2.5, linewidth=1.3)
        money.set_ylim(0, max(1.0, peak_revenue) * 1.1)
        money.tick_params(labelsize=6.5, colors=REVENUE_COLOUR)
        money.yaxis.set_major_formatter(FuncFormatter(_thousands))
        if index % columns == 0:
            axes.set_ylabel("activities", fontsize=7, color=ACTIVITY_COLOUR)
        if index % columns == columns - 1 or index == len(reps) - 1:
            money.set_ylabel(f"won ({data.currency})", fontsize=7, color=REVENUE_COLOUR)
    step = max(1, math.ceil(len(weeks) / 6))
    for axes in grid[-1]:
        axes.set_xticks(positions[::step], labels[::step], fontsize=6.5)
    figure.suptitle("Week by week (weeks starting on the date shown)", fontsize=9, x=0.01, ha="left")
    return figure_svg(figure, salt="weekly")


# --- Funnel ----------------------------------------------------------------------------------------


def _thousands(value: float, _position: int | None = None) -> str:
    return f"{value / 1000:,.0f}k" if abs(value) >= 1000 else f"{value:,.0f}"


def _funnel_section(data: SalesReportData) -> str:
    teams = data.team_totals()
    steps = list(KpiTotals().conversions())
    rows = [
        (escape(team), *(_percent(value) for value in t.conversions().values())) for team, t in teams.items()
    ]
    rows.append(("<b>all teams</b>", *(_percent(v) for v in data.org_totals().conversions().values())))
    return _section(
        "funnel",
        "Funnel",
        _figure(funnel_svg(data), "the funnel from calls to won deals"),
        _table("Conversions by team", ("team", *(step.replace("_", " ") for step in steps)), rows),
    )


def funnel_svg(data: SalesReportData) -> str:
    org = data.org_totals()
    counts = [int(getattr(org, key)) for key, _ in FUNNEL_BARS]
    figure = Figure(figsize=(9, 3.6), layout="constrained")
    axes = figure.subplots()
    positions = list(range(len(FUNNEL_BARS)))[::-1]
    axes.barh(positions, counts, color=["#4c72b0", "#55a868", "#8172b2", "#ccb974", "#2ca02c"])
    axes.set_yticks(positions, [label for _, label in FUNNEL_BARS])
    for position, count, previous in zip(positions, counts, [None, *counts[:-1]], strict=True):
        step = "" if not previous else f"  ({count / previous:.0%} of the step above)"
        axes.annotate(
            f"{count:,}{step}",
            (count, position),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    axes.set_xlim(0, max([1, *counts]) * 1.45)
    axes.set_xlabel("count in the period, all teams")
    axes.grid(axis="x", alpha=0.3)
    return figure_svg(figure, salt="funnel")


# --- Alerts and modes ------------------------------------------------------------------------------


def _alert_who(data: SalesReportData, alert: StoredAlert) -> str:
    who = data.rep_label(alert.key) if alert.scope == "rep" else f"{alert.scope} {alert.key}"
    return f"{who} · {alert.detail}" if alert.detail else who


def _alerts_section(data: SalesReportData) -> str:
    if not data.alerts:
        return _section("alerts", "Alerts", "<p>No alert fired in this period.</p>")
    newest = sorted(data.alerts, key=lambda a: a.starts_at, reverse=True)[:ALERTS_LISTED]
    rows = [
        (
            escape(alert.rule),
            escape(_alert_who(data, alert)),
            escape(alert.severity),
            f"{alert.starts_at:%Y-%m-%d %H:%M}",
            "<b>firing</b>" if alert.ends_at is None else f"{alert.ends_at:%Y-%m-%d %H:%M}",
            escape(alert.summary),
        )
        for alert in newest
    ]
    caption = f"{len(data.alerts)} alert(s) in the period" + (
        f", the newest {ALERTS_LISTED} listed" if len(data.alerts) > ALERTS_LISTED else ""
    )
    return _section(
        "alerts",
        "Alerts",
        _figure(alerts_timeline_svg(data), "alerts from firing to resolved"),
        _table(caption, ("rule", "who", "severity", "fired", "resolved", "summary"), rows, text=(0, 1, 2, 5)),
    )


def _timeline_axes(axes: Axes, data: SalesReportData, labels: Sequence[str]) -> None:
    axes.set_yticks(range(len(labels)), labels, fontsize=7)
    axes.set_ylim(-0.7, max(0.7, len(labels) - 0.3))
    axes.invert_yaxis()
    axes.set_xlim(_when(data.window.start), _when(data.window.end))
    axes.grid(axis="x", alpha=0.3)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # untyped in matplotlib's stubs
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes.set_xlabel("date (UTC)")


def _when(moment: datetime) -> float:
    """A matplotlib date number (days since its epoch) for ``moment``, on the UTC wall clock."""
    return float(date2num(naive_utc(moment)))  # type: ignore[no-untyped-call]  # untyped in the stubs


def alerts_timeline_svg(data: SalesReportData) -> str:
    rows = sorted({_alert_who(data, alert) for alert in data.alerts})
    row_of = {label: index for index, label in enumerate(rows)}
    figure = Figure(figsize=(11, 0.28 * len(rows) + 1.6), layout="constrained")
    axes = figure.subplots()
    end = data.window.end
    for alert in data.alerts:
        row = row_of[_alert_who(data, alert)]
        start = max(alert.starts_at, data.window.start)
        stop = min(alert.ends_at or end, end)
        colour = rule_colour(alert.rule)
        alpha = 0.45 if alert.severity == "info" else 0.95
        axes.plot(
            [_when(start), _when(stop)],
            [row, row],
            color=colour,
            alpha=alpha,
            linewidth=6,
            solid_capstyle="butt",
        )
        axes.plot([_when(start)], [row], marker="v", color=colour, markersize=5, linestyle="none")
    for rule in sorted({alert.rule for alert in data.alerts}):
        axes.plot([], [], color=rule_colour(rule), linewidth=6, label=rule)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _timeline_axes(axes, data, rows)
    axes.set_title("▼ fired; bar to resolved (or the end); pale: informational", loc="left", fontsize=9)
    return figure_svg(figure, salt="alerts")


def _modes_section(data: SalesReportData) -> str:
    if not data.modes:
        return _section("modes", "Management modes", "<p>No management mode recorded yet.</p>")
    in_window = [change for change in data.modes if change.changed_at >= data.window.start]
    rows = [
        (
            f"{change.changed_at:%Y-%m-%d %H:%M}",
            escape(data.rep_label(change.rep_id)),
            escape(change.mode),
            escape(change.reason),
        )
        for change in in_window
    ]
    return _section(
        "modes",
        "Management modes",
        "<p class='note'>Developing reps are managed on activity floors, seasoned reps on outcomes; "
        "a seasoned rep behind quota is watched on activity rules for a while.</p>",
        _figure(modes_timeline_svg(data), "management mode of each rep over time"),
        _table(
            f"{len(rows)} mode change(s) in the period",
            ("when", "rep", "mode", "why"),
            rows,
            text=(0, 1, 2, 3),
        ),
    )


def modes_timeline_svg(data: SalesReportData) -> str:
    by_rep: dict[str, list[ModeChange]] = {}
    for change in data.modes:
        by_rep.setdefault(change.rep_id, []).append(change)
    reps = sorted(by_rep, key=lambda r: (data.team_of(r), r))
    figure = Figure(figsize=(11, 0.26 * len(reps) + 1.5), layout="constrained")
    axes = figure.subplots()
    for row, rep_id in enumerate(reps):
        changes = sorted(by_rep[rep_id], key=lambda c: c.changed_at)
        for change, following in zip(changes, [*changes[1:], None], strict=True):
            start = max(change.changed_at, data.window.start)
            stop = data.window.end if following is None else min(following.changed_at, data.window.end)
            if stop <= start:
                continue
            axes.plot(
                [_when(start), _when(stop)],
                [row, row],
                color=MODE_COLOURS.get(change.mode, "#7f7f7f"),
                linewidth=6,
                solid_capstyle="butt",
            )
            if change.changed_at >= data.window.start:
                axes.plot([_when(start)], [row], marker="|", color="#222222", markersize=9)
    for mode, colour in MODE_COLOURS.items():
        axes.plot([], [], color=colour, linewidth=6, label=mode)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    _timeline_axes(axes, data, [data.rep_label(rep_id) for rep_id in reps])
    axes.set_title("| a change", loc="left", fontsize=9)
    return figure_svg(figure, salt="modes")


# --- Visits ----------------------------------------------------------------------------------------


def _visits_section(data: SalesReportData) -> str:
    if not data.visits:
        return _section("visits", "Field visits", "<p>No visit with a position in this period.</p>")
    verified = sum(1 for v in data.visits if v.status == "verified")
    out_of_range = sum(1 for v in data.visits if v.status == "out_of_range")
    return _section(
        "visits",
        "Field visits",
        f"<p class='note'>{len(data.visits):,} visits with a position, by team: {verified:,} "
        f"({verified / len(data.visits):.0%}) verified at the customer, {out_of_range:,} out of range "
        "(crosses). Longitude and latitude axes, no base map: the page must open offline.</p>",
        _figure(visits_map_svg(data), "positions of field visits"),
    )


def visits_map_svg(data: SalesReportData) -> str:
    colours = _team_colours(data)
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    axes = figure.subplots()
    by_team: dict[str, list[VisitPosition]] = {}
    for visit in data.visits:
        by_team.setdefault(data.team_of(visit.rep_id), []).append(visit)
    for team, visits in sorted(by_team.items()):
        colour = colours.get(team, "#7f7f7f")
        on_site = [v for v in visits if v.status != "out_of_range"]
        away = [v for v in visits if v.status == "out_of_range"]
        axes.scatter(
            [v.lon for v in on_site],
            [v.lat for v in on_site],
            s=9,
            alpha=0.6,
            color=colour,
            label=f"{team} ({len(visits)})",
        )
        if away:
            axes.scatter([v.lon for v in away], [v.lat for v in away], s=22, marker="x", color=colour)
    mean_lat = sum(v.lat for v in data.visits) / len(data.visits)
    # Equal distances look equal at the visits' latitude.
    axes.set_aspect(1 / max(0.1, math.cos(math.radians(mean_lat))), adjustable="datalim")
    axes.set_xlabel("longitude")
    axes.set_ylabel("latitude")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8, frameon=False)
    return figure_svg(figure, salt="visits")


# Sections drawn as charts, for callers that want to check or reuse them one by one.
CHARTS: dict[str, Callable[[SalesReportData], str]] = {
    "teams": team_attainment_svg,
    "leading_lagging": leading_lagging_scatter_svg,
    "weekly": weekly_small_multiples_svg,
    "funnel": funnel_svg,
    "alerts": alerts_timeline_svg,
    "modes": modes_timeline_svg,
    "visits": visits_map_svg,
}


__all__ = [
    "CHARTS",
    "REPORT_FILE",
    "SalesReportData",
    "compute_report_kpis",
    "load_report_data",
    "render_report",
    "report_from_clickhouse",
    "weekly_windows",
    "write_report",
]
