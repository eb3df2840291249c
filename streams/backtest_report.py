"""The backtest's HTML report: one self-contained page (inline SVG, no external files) with the
scores, a table per rep, and one plot per alerted rep.

Each plot has three panels over the history, sharing the date axis: the ``activity_drop`` rule's
weighted activity score over its window against its own baseline (the leading indicator, as the
rule computes it), the won revenue over the revenue-drop window against the baseline it fell from
(the outcome), and the rep's alerts, one row per rule, from firing to resolved. The day revenue
fell is marked on all three.

The page and SVG helpers are shared with the sales report (``streams.html_report``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from streams.backtest import AlertOccurrence, BacktestResult, RepOutcome, Scores, rep_series
from streams.html_report import escape as _e
from streams.html_report import figure_svg, page, rule_colour
from streams.html_report import naive_utc as _as_day

REPORT_FILE = "index.html"
REVENUE_COLOUR = "#2ca02c"
# The day revenue fell and the first warning: vertical lines across all three panels.
FELL_COLOUR = "#1a5e1a"
WARNED_COLOUR = "#d62728"


def write_report(result: BacktestResult, directory: Path) -> Path:
    """Write ``index.html`` into ``directory`` (created if missing) and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    path.write_text(render_report(result), encoding="utf-8")
    return path


def alerted_reps(result: BacktestResult) -> list[RepOutcome]:
    """The reps with at least one rep alert (of any rule): the ones the report plots, warned
    falls first, then by rep id."""
    alerted = [rep for rep in result.reps if rep.alerts]
    return sorted(alerted, key=lambda rep: (rep.lead_days is None, rep.rep_id))


def render_report(result: BacktestResult) -> str:
    parts = [
        "<h1>salespulse backtest: early warnings against revenue</h1>",
        _period(result),
        _scores_table(result),
        _definition_note(result),
        _reps_table(result),
    ]
    plotted = alerted_reps(result)
    parts.append(f"<p class='note'>{len(plotted)} alerted rep(s), one plot each.</p>")
    for rep in plotted:
        parts.append(f"<section id='rep-{_e(rep.rep_id)}'><h2>{_e(_rep_title(result, rep))}</h2>")
        parts.append(f"<p class='note'>{_e(_rep_sentence(rep))}</p>")
        parts.append(f"<figure>{rep_plot_svg(result, rep)}</figure></section>")
    return page("salespulse backtest", parts)


# --- Tables --------------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return f"{value:.0%}" if value is not None else "-"


def _days(value: float | None) -> str:
    return f"{value:.0f}" if value is not None else "-"


def _period(result: BacktestResult) -> str:
    if result.first_event_at is None or result.last_event_at is None:
        return "<p>No events.</p>"
    hours = result.cadence.every / timedelta(hours=1)
    return (
        f"<p>{result.events:,} events from {result.first_event_at:%Y-%m-%d} to "
        f"{result.last_event_at:%Y-%m-%d}, {len(result.reps)} reps; rules evaluated {result.steps:,} times "
        f"(every {hours:g} h), {len(result.alerts):,} alert occurrences.</p>"
    )


def _scores_row(label: str, scores: Scores) -> str:
    cells = (
        _percent(scores.precision),
        _percent(scores.recall),
        _days(scores.median_lead_days),
        scores.alerted_reps,
        scores.alerted_reps_fell,
        scores.reps_fell,
        scores.reps_fell_warned,
    )
    return f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>"


def _scores_table(result: BacktestResult) -> str:
    header = (
        "<tr><th>early warnings</th><th>precision</th><th>recall</th><th>median lead (days)</th>"
        "<th>alerted reps</th><th>of which revenue fell</th><th>reps whose revenue fell</th>"
        "<th>of which warned</th></tr>"
    )
    rows = [_scores_row(", ".join(result.scores.rules), result.scores)]
    rows += [_scores_row(f"{rule} alone", scores) for rule, scores in result.rule_scores.items()]
    return f"<table><caption>Scores</caption>{header}{''.join(rows)}</table>"


def _definition_note(result: BacktestResult) -> str:
    d = result.definition
    return (
        "<p class='note'>Revenue fell on day D when the revenue won in the "
        f"{d.window_days} days ending D was below {d.fall_below:.0%} of the rep's baseline (the up to "
        f"{d.baseline_days} days before, scaled; at least {d.min_baseline_wins} won deals in it)"
        f"{', and so were the deals won,' if d.wins_fall_too else ''} and stayed so for {d.persist_days} "
        f"days. A fall is warned when an early warning fired in the {d.lookahead_days} days before it; "
        "the lead time is from that first warning to the fall.</p>"
    )


def _reps_table(result: BacktestResult) -> str:
    header = (
        "<tr><th>rep</th><th>team</th><th>alerts</th><th>early warnings</th><th>first warning</th>"
        "<th>revenue fell on</th><th>warned by</th><th>lead (days)</th></tr>"
    )
    rows = []
    for rep in result.reps:
        drop = rep.revenue_drop
        cells = (
            rep.team or "-",
            rep.alerts,
            rep.early_warnings,
            f"{rep.first_warning_at:%Y-%m-%d}" if rep.first_warning_at else "-",
            drop.fell_on.isoformat() if drop else "-",
            rep.warning_rule or "-",
            _days(rep.lead_days),
        )
        link = f"<a href='#rep-{_e(rep.rep_id)}'>{_e(rep.rep_id)}</a>" if rep.alerts else _e(rep.rep_id)
        rows.append(f"<tr><td>{link}</td>" + "".join(f"<td>{_e(cell)}</td>" for cell in cells) + "</tr>")
    return f"<table><caption>Reps</caption>{header}{''.join(rows)}</table>"


def _rep_title(result: BacktestResult, rep: RepOutcome) -> str:
    record = result.rep_records.get(rep.rep_id)
    name = f"{record.name} ({rep.rep_id})" if record is not None else rep.rep_id
    return f"{name}, {rep.team}" if rep.team else name


def _rep_sentence(rep: RepOutcome) -> str:
    drop = rep.revenue_drop
    if drop is None:
        return f"{rep.alerts} alert(s); revenue did not fall in this history."
    fell = (
        f"revenue fell on {drop.fell_on} ({drop.window_revenue:,.0f} won against a usual "
        f"{drop.baseline_revenue:,.0f})"
    )
    if rep.lead_days is None or rep.warned_at is None:
        return f"{rep.alerts} alert(s); {fell}, without an early warning in the days before."
    return (
        f"{fell}; first warned by {rep.warning_rule} on {rep.warned_at:%Y-%m-%d}, "
        f"{rep.lead_days} days before."
    )


# --- Plots ---------------------------------------------------------------------------------------------


def _nan(values: Iterable[float | None]) -> list[float]:
    return [math.nan if value is None else value for value in values]


def _rep_alerts(alerts: Iterable[AlertOccurrence], rep_id: str) -> list[AlertOccurrence]:
    return [alert for alert in alerts if alert.rep_id == rep_id]


def rep_plot_svg(result: BacktestResult, rep: RepOutcome) -> str:
    """One rep's plot as an ``<svg>`` element (without the XML prologue), ready to inline."""
    series = rep_series(result, rep.rep_id)
    alerts = _rep_alerts(result.alerts, rep.rep_id)
    rules = sorted({alert.rule for alert in alerts})
    figure = Figure(figsize=(11, 6.2), layout="constrained")
    activity_axes, revenue_axes, alert_axes = figure.subplots(
        3, 1, sharex=True, height_ratios=[3, 3, max(1.2, 0.45 * len(rules) + 0.6)]
    )
    days = list(series.days)
    window = result.config.activity_drop.window_days
    activity_axes.plot(
        days, _nan(series.activity), color="#333333", linewidth=1.4, label=f"{window}-day activity score"
    )
    activity_axes.plot(
        days,
        _nan(series.activity_baseline),
        color="#333333",
        linestyle="--",
        linewidth=1.0,
        label=f"baseline (previous {result.config.activity_drop.baseline_days} days, scaled)",
    )
    activity_axes.set_ylabel("weighted activity")
    activity_axes.set_title("Leading indicator: activity score vs its baseline", loc="left", fontsize=10)

    definition = result.definition
    revenue_axes.plot(
        days,
        _nan(series.revenue),
        color=REVENUE_COLOUR,
        linewidth=1.4,
        label=f"won revenue, last {definition.window_days} days",
    )
    drop = rep.revenue_drop
    if drop is not None and series.revenue_baseline is not None:
        # The baseline the fall was measured against, over the days it was compared with.
        compared = (
            datetime.combine(drop.fell_on, time.min),
            datetime.combine(drop.fell_on + timedelta(days=definition.persist_days), time.min),
        )
        revenue_axes.hlines(
            series.revenue_baseline,
            *compared,
            color=REVENUE_COLOUR,
            linestyle="--",
            linewidth=1.0,
            label="baseline at the fall",
        )
        revenue_axes.hlines(
            definition.fall_below * series.revenue_baseline,
            *compared,
            color=REVENUE_COLOUR,
            linestyle=":",
            linewidth=1.0,
            label=f"{definition.fall_below:.0%} of baseline",
        )
    revenue_axes.set_ylabel(f"revenue ({result.config.currency})")
    revenue_axes.set_title("Outcome: won revenue", loc="left", fontsize=10)

    last_moment = datetime.combine(days[-1] + timedelta(days=1), time.min, tzinfo=UTC) if days else None
    for row, rule in enumerate(rules):
        colour = rule_colour(rule)
        for alert in (a for a in alerts if a.rule == rule):
            end = alert.resolved_at or last_moment or alert.fired_at
            start_day, end_day = _as_day(alert.fired_at), _as_day(end)
            alert_axes.plot(
                [start_day, end_day], [row, row], color=colour, linewidth=6, solid_capstyle="butt"
            )
            alert_axes.plot([start_day], [row], marker="v", color=colour, markersize=6, linestyle="none")
            if alert.resolved_at is not None:
                alert_axes.plot([end_day], [row], marker="|", color="#222222", markersize=9, linestyle="none")
    alert_axes.set_yticks(range(len(rules)), rules)
    alert_axes.set_ylim(-0.7, max(0.7, len(rules) - 0.3))
    alert_axes.invert_yaxis()
    alert_axes.set_title("Alerts (▼ fired, | resolved)", loc="left", fontsize=10)
    alert_axes.set_xlabel("date (UTC)")

    if drop is not None:
        for axes in (activity_axes, revenue_axes, alert_axes):
            axes.axvline(
                datetime.combine(drop.fell_on, time.min), color=FELL_COLOUR, linewidth=2.0, alpha=0.7
            )
        revenue_axes.plot(
            [], [], color=FELL_COLOUR, linewidth=2.0, alpha=0.7, label=f"revenue fell ({drop.fell_on})"
        )
    if rep.warned_at is not None:
        for axes in (activity_axes, revenue_axes, alert_axes):
            axes.axvline(
                _as_day(rep.warned_at), color=WARNED_COLOUR, linewidth=1.0, linestyle="-.", alpha=0.8
            )
        activity_axes.plot(
            [], [], color=WARNED_COLOUR, linewidth=1.0, linestyle="-.", label="first early warning"
        )
    for axes in (activity_axes, revenue_axes):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
        axes.set_ylim(bottom=0)
    alert_axes.grid(axis="x", alpha=0.3)
    if days:  # the whole history, also where a figure is not defined yet
        alert_axes.set_xlim(datetime.combine(days[0], time.min), datetime.combine(days[-1], time.max))
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # untyped in matplotlib's stubs
    alert_axes.xaxis.set_major_locator(locator)
    alert_axes.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    return figure_svg(figure, salt=rep.rep_id)


__all__ = ["REPORT_FILE", "alerted_reps", "render_report", "rep_plot_svg", "write_report"]
