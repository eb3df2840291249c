"""Grafana dashboards as code (grafana-foundation-sdk), and the provisioning files that load them.

Five boards: ``Sales floor``, ``Rep drill-down``, ``Pipeline health`` and ``Field visits`` read
ClickHouse through the official Grafana plugin (``grafana-clickhouse-datasource``, native protocol)
and the analytics views of migrations 0010, 0011 and 0013 (field visits), which carry the KPI definitions of
``streams/kpi/metrics.py``; ``Pipeline operations`` reads the workers' metrics from Prometheus.

Every ClickHouse query is declared once, as a :class:`Sql` with the columns its panel expects, so
the tests run each of them (macros and variables expanded) against a real ClickHouse. Nothing here
does I/O: :func:`build_all` returns JSON-ready documents, the CLI writes or uploads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Self

from grafana_foundation_sdk.builders import (
    bargauge,
    dashboard,
    geomap,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders.common import FrameGeometrySource, MapLayerOptions, ReduceDataOptions
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    FrameGeometrySourceMode,
    VizOrientation,
)

CLICKHOUSE_UID = "salespulse-clickhouse"
CLICKHOUSE_TYPE = "grafana-clickhouse-datasource"
PROMETHEUS_UID = "salespulse-prometheus"
PROMETHEUS_TYPE = "prometheus"
CLICKHOUSE = model.DataSourceRef(type_val=CLICKHOUSE_TYPE, uid=CLICKHOUSE_UID)
PROMETHEUS = model.DataSourceRef(type_val=PROMETHEUS_TYPE, uid=PROMETHEUS_UID)
# Grafana's dashboard JSON schema version these boards are written for (Grafana 10.1+).
SCHEMA_VERSION = 39
FOLDER = "salespulse"
TAGS = ["salespulse"]
# Where the compose stack mounts grafana/dashboards (docker-compose.yml, grafana service).
DASHBOARDS_MOUNT = "/etc/grafana/dashboards"

UID_FLOOR = "salespulse-floor"
UID_REP = "salespulse-rep"  # the alert routing's dashboard_url example points here (README)
UID_PIPELINE = "salespulse-pipeline"
UID_VISITS = "salespulse-visits"
UID_OPERATIONS = "salespulse-operations"

# Variables as the panels use them: multi-valued, so always `IN (...)` with single quotes.
TEAM_IN = "team IN (${team:singlequote})"
REP_IN = "rep_id IN (${rep:singlequote})"
# The dashboard's range as whole UTC days (the KPI windows' unit).
FIRST_DAY = "toDate($__fromTime)"
LAST_DAY = "toDate($__toTime)"
RANGE_DAYS = f"(dateDiff('day', {FIRST_DAY}, {LAST_DAY}) + 1)"


def quota_sql(where: str, group_by_team: bool = False) -> str:
    """The reps' monthly quota prorated over the range, day by day (``prorated_quota``)."""
    team = "team, " if group_by_team else ""
    group = " GROUP BY team" if group_by_team else ""
    return (
        f"SELECT {team}sum(toFloat64(quota_monthly) / toDayOfMonth(toLastDayOfMonth(d))) AS quota "
        f"FROM reps FINAL ARRAY JOIN arrayMap(i -> {FIRST_DAY} + i, range(toUInt32({RANGE_DAYS}))) AS d "
        f"WHERE {where}{group}"
    )


# Deals open at the end of the range: opened by then, not closed by then (Deal.open_at).
OPEN_AT_END = "opened_at <= $__toTime AND (closed_at IS NULL OR closed_at > $__toTime)"


# --- The ClickHouse query type (the SDK ships none for this plugin) ----------------------------------


class ClickHouseQuery(cogvariants.Dataquery):
    """A query of the grafana-clickhouse-datasource plugin (v4), in its SQL editor mode."""

    def __init__(self, raw_sql: str, *, time_series: bool, ref_id: str = "A") -> None:
        self.raw_sql = raw_sql
        self.time_series = time_series
        self.ref_id = ref_id

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": {"type": CLICKHOUSE_TYPE, "uid": CLICKHOUSE_UID},
            "editorType": "sql",
            # The plugin's formats: 0 time series, 1 table.
            "format": 0 if self.time_series else 1,
            "queryType": "timeseries" if self.time_series else "table",
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class ClickHouseQueryBuilder(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, sql: Sql) -> None:
        self._query = ClickHouseQuery(sql.text, time_series=sql.time_series)

    def build(self) -> ClickHouseQuery:
        return self._query

    def ref_id(self, ref_id: str) -> Self:
        self._query.ref_id = ref_id
        return self


@dataclass(frozen=True, slots=True)
class Sql:
    """One ClickHouse panel query and the columns its panel reads (in order)."""

    text: str
    columns: tuple[str, ...]
    time_series: bool = False


@dataclass(frozen=True, slots=True)
class PanelQuery:
    """Where a query is used: for the tests, and for anyone reading a board's SQL."""

    dashboard_uid: str
    panel_title: str
    sql: Sql
    kind: Literal["panel", "annotation", "variable"] = "panel"


@dataclass
class Board:
    """One dashboard under construction: the SDK builder, its panel ids and its queries."""

    uid: str
    title: str
    description: str
    builder: dashboard.Dashboard = field(init=False)
    queries: list[PanelQuery] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    _next_id: int = 1

    def __post_init__(self) -> None:
        self.builder = (
            dashboard.Dashboard(self.title)
            .uid(self.uid)
            .description(self.description)
            .tags(TAGS)
            .timezone("utc")
            .time("now-30d", "now")
            .refresh("1m")
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .link(
                dashboard.DashboardLink("salespulse boards")
                .type(model.DashboardLinkType.DASHBOARDS)
                .tags(TAGS)
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True)
            )
        )

    def add(self, panel: Any, *, width: int, height: int) -> None:
        self.builder.with_panel(panel.id(self._next_id).span(width).height(height))
        self._next_id += 1

    def row(self, title: str) -> None:
        self.builder.with_row(dashboard.Row(title).id(self._next_id))
        self._next_id += 1

    def sql(self, panel: Any, title: str, *queries: Sql) -> Any:
        """``panel`` titled ``title`` reading ``queries`` (refs A, B, ...) from ClickHouse."""
        panel.title(title).datasource(CLICKHOUSE)
        for index, query in enumerate(queries):
            panel.with_target(ClickHouseQueryBuilder(query).ref_id(chr(ord("A") + index)))
            self.queries.append(PanelQuery(self.uid, title, query))
        return panel

    def team_variable(self, *, multi: bool = True) -> None:
        query = Sql("SELECT DISTINCT team FROM reps FINAL ORDER BY team", ("team",))
        self.queries.append(PanelQuery(self.uid, "team", query, kind="variable"))
        self.builder.with_variable(
            dashboard.QueryVariable("team")
            .label("Team")
            .datasource(CLICKHOUSE)
            .query(query.text)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(multi)
            .include_all(True)
            .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )

    def rep_variable(self) -> None:
        query = Sql(f"SELECT rep_id FROM reps FINAL WHERE {TEAM_IN} ORDER BY rep_id", ("rep_id",))
        self.queries.append(PanelQuery(self.uid, "rep", query, kind="variable"))
        self.builder.with_variable(
            dashboard.QueryVariable("rep")
            .label("Rep")
            .datasource(CLICKHOUSE)
            .query(query.text)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(False)
            .include_all(False)
        )

    def annotation(self, name: str, colour: str, query: Sql) -> None:
        """A ClickHouse annotation (columns time, timeEnd, text, tags); written into the JSON by
        :meth:`to_json`, as the SDK's annotation target has no field for the plugin's SQL."""
        self.queries.append(PanelQuery(self.uid, name, query, kind="annotation"))
        self.annotations.append(
            {
                "name": name,
                "datasource": {"type": CLICKHOUSE_TYPE, "uid": CLICKHOUSE_UID},
                "enable": True,
                "hide": False,
                "iconColor": colour,
                "target": ClickHouseQuery(query.text, time_series=False).to_json(),
            }
        )

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(JSONEncoder(sort_keys=True).encode(self.builder.build()))
        document["schemaVersion"] = SCHEMA_VERSION
        document.pop("id", None)  # Grafana assigns ids; a provisioned or pushed board matches by uid
        for panel in document.get("panels", []):
            if panel.get("options") is None and panel.get("type") != "row":
                panel["options"] = {}  # the SDK writes null for panels given no option
        builtin = {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
        document["annotations"] = {"list": [builtin, *self.annotations]}
        return document


# --- Small builders ----------------------------------------------------------------------------------


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (
        dashboard.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=colour) for value, colour in steps])
    )


ATTAINMENT_STEPS = thresholds((None, "red"), (0.8, "orange"), (1.0, "green"))
CHANGE_STEPS = thresholds((None, "red"), (-0.2, "orange"), (-0.05, "green"))
COVERAGE_STEPS = thresholds((None, "red"), (2.0, "orange"), (3.0, "green"))
ALERT_STEPS = thresholds((None, "green"), (1, "orange"), (5, "red"))
IDLE_STEPS = thresholds((None, "green"), (30, "orange"), (60, "red"))


def stat_panel(unit: str = "short", steps: dashboard.ThresholdsConfig | None = None) -> stat.Panel:
    panel = stat.Panel().unit(unit).graph_mode(BigValueGraphMode.NONE)
    if steps is not None:
        panel.thresholds(steps).color_mode(BigValueColorMode.BACKGROUND)
    else:
        panel.color_mode(BigValueColorMode.NONE)
    return panel


def rep_link() -> dashboard.DashboardLink:
    """A data link from a row with team and rep_id columns to that rep's drill-down."""
    return (
        dashboard.DashboardLink("Open ${__data.fields.rep_id} in Rep drill-down")
        .url(
            f"/d/{UID_REP}?var-team=${{__data.fields.team}}&var-rep=${{__data.fields.rep_id}}"
            "&${__url_time_range}"
        )
        .type(model.DashboardLinkType.LINK)
    )


# --- Sales floor -------------------------------------------------------------------------------------


ACTIVITY_WHERE = f"$__dateFilter(day) AND {TEAM_IN}"


def sales_floor() -> Board:
    board = Board(
        UID_FLOOR,
        "Sales floor",
        "Team overview: leading indicators against their baseline, funnel, revenue, quota "
        "attainment and the early warnings firing. Figures as `salespulse kpis` defines them.",
    )
    board.team_variable()
    baseline_where = f"day >= {FIRST_DAY} - toIntervalDay({RANGE_DAYS}) AND day <= {LAST_DAY} AND {TEAM_IN}"
    board.add(
        board.sql(
            stat_panel().description("Calls, emails, meetings, visits, demos, proposals, deals created."),
            "Activities",
            Sql(
                f"SELECT sum(activities) AS activities FROM v_rep_daily_activity WHERE {ACTIVITY_WHERE}",
                ("activities",),
            ),
        ),
        width=4,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("percentunit", CHANGE_STEPS).description(
                "Activities in the range against the same number of days just before it (the baseline)."
            ),
            "Activity vs baseline",
            Sql(
                "SELECT sumIf(activities, day >= toDate($__fromTime)) / "
                "nullIf(sumIf(activities, day < toDate($__fromTime)), 0) - 1 AS change "
                f"FROM v_rep_daily_activity WHERE {baseline_where}",
                ("change",),
            ),
        ),
        width=4,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("currencyUSD"),
            "Revenue won",
            Sql(
                f"SELECT sum(revenue) AS revenue FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE}",
                ("revenue",),
            ),
        ),
        width=4,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("percentunit", ATTAINMENT_STEPS).description(
                "Revenue won over the reps' quota prorated to the range, day by day."
            ),
            "Quota attainment",
            Sql(
                "SELECT (SELECT toFloat64(sum(revenue)) FROM v_rep_daily_outcomes "
                f"WHERE {ACTIVITY_WHERE}) / nullIf(({quota_sql(TEAM_IN)}), 0) AS attainment",
                ("attainment",),
            ),
        ),
        width=4,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("percentunit"),
            "Win rate",
            Sql(
                "SELECT sum(deals_won) / nullIf(sum(deals_won) + sum(deals_lost), 0) AS win_rate "
                f"FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE}",
                ("win_rate",),
            ),
        ),
        width=4,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("short", ALERT_STEPS).description("Early warnings firing now (rep, team, territory)."),
            "Alerts firing",
            Sql(
                f"SELECT count() AS firing FROM v_alerts WHERE ends_at IS NULL AND ({TEAM_IN} OR team = '')",
                ("firing",),
            ),
        ),
        width=4,
        height=4,
    )
    board.add(
        board.sql(
            timeseries.Panel().unit("short").min(0),
            "Activities per day by team",
            Sql(
                "SELECT toDateTime(day) AS time, team, sum(activities) AS activities "
                f"FROM v_rep_daily_activity WHERE {ACTIVITY_WHERE} GROUP BY time, team ORDER BY time, team",
                ("time", "team", "activities"),
                time_series=True,
            ),
        ),
        width=12,
        height=8,
    )
    board.add(
        board.sql(
            timeseries.Panel().unit("currencyUSD").min(0),
            "Revenue won per day by team",
            Sql(
                "SELECT toDateTime(day) AS time, team, sum(revenue) AS revenue "
                f"FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE} GROUP BY time, team ORDER BY time, team",
                ("time", "team", "revenue"),
                time_series=True,
            ),
        ),
        width=12,
        height=8,
    )
    board.add(
        board.sql(
            bargauge.Panel()
            .display_mode(BarGaugeDisplayMode.BASIC)
            .orientation(VizOrientation.HORIZONTAL)
            .unit("short")
            .description("Counts in the range; each step's conversion is the next bar over this one."),
            "Funnel",
            Sql(
                "SELECT sum(calls) AS calls, sum(meetings_scheduled) AS meetings_scheduled, "
                "sum(meetings_held) AS meetings_held, sum(proposals_sent) AS proposals_sent, "
                f"(SELECT sum(deals_won) FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE}) AS deals_won "
                f"FROM v_rep_daily_activity WHERE {ACTIVITY_WHERE}",
                ("calls", "meetings_scheduled", "meetings_held", "proposals_sent", "deals_won"),
            ),
        ),
        width=8,
        height=8,
    )
    board.add(
        board.sql(
            bargauge.Panel()
            .display_mode(BarGaugeDisplayMode.GRADIENT)
            .orientation(VizOrientation.HORIZONTAL)
            .unit("percentunit")
            .min(0)
            .max(1.5)
            .thresholds(ATTAINMENT_STEPS)
            .reduce_options(_all_values("attainment")),
            "Quota attainment by team",
            Sql(
                "SELECT q.team AS team, ifNull(r.revenue, 0) / nullIf(q.quota, 0) AS attainment "
                f"FROM ({quota_sql(TEAM_IN, group_by_team=True)}) AS q LEFT JOIN "
                "(SELECT team, toFloat64(sum(revenue)) AS revenue FROM v_rep_daily_outcomes "
                f"WHERE {ACTIVITY_WHERE} GROUP BY team) AS r ON r.team = q.team ORDER BY team",
                ("team", "attainment"),
            ),
        ),
        width=8,
        height=8,
    )
    board.add(
        board.sql(
            table.Panel()
            .description("Leading indicators in the range against the same number of days before it.")
            .override_by_name("change", [_unit("percentunit"), _colour_background(CHANGE_STEPS)]),
            "Leading indicators vs baseline",
            Sql(
                "SELECT team, sumIf(activities, day >= toDate($__fromTime)) AS activities_now, "
                "sumIf(activities, day < toDate($__fromTime)) AS activities_before, "
                "sumIf(meetings_held, day >= toDate($__fromTime)) AS meetings_held_now, "
                "sumIf(proposals_sent, day >= toDate($__fromTime)) AS proposals_sent_now, "
                "activities_now / nullIf(activities_before, 0) - 1 AS change "
                f"FROM v_rep_daily_activity WHERE {baseline_where} GROUP BY team ORDER BY team",
                (
                    "team",
                    "activities_now",
                    "activities_before",
                    "meetings_held_now",
                    "proposals_sent_now",
                    "change",
                ),
            ),
        ),
        width=8,
        height=8,
    )
    board.add(
        board.sql(
            timeseries.Panel().unit("short").min(0).description("From the hourly roll-up (migration 0011)."),
            "Activities per hour by team",
            Sql(
                "SELECT hour AS time, team, sum(activities) AS activities FROM v_rep_hourly_activity "
                f"WHERE $__timeFilter(hour) AND {TEAM_IN} GROUP BY time, team ORDER BY time, team",
                ("time", "team", "activities"),
                time_series=True,
            ),
        ),
        width=24,
        height=7,
    )
    board.add(
        board.sql(
            table.Panel().override_by_name("rep_id", [_links([rep_link()])]),
            "Reps",
            Sql(
                "SELECT a.rep_id AS rep_id, any(a.rep_name) AS rep_name, any(a.team) AS team, "
                "sum(a.activities) AS activities, sum(a.meetings_held) AS meetings_held, "
                "sum(a.proposals_sent) AS proposals_sent, any(o.deals_won) AS deals_won, "
                "any(o.revenue) AS revenue FROM v_rep_daily_activity AS a LEFT JOIN "
                "(SELECT rep_id, sum(deals_won) AS deals_won, sum(revenue) AS revenue "
                f"FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE} GROUP BY rep_id) AS o "
                f"ON o.rep_id = a.rep_id WHERE $__dateFilter(a.day) AND a.{TEAM_IN} "
                "GROUP BY rep_id ORDER BY revenue DESC, activities DESC",
                (
                    "rep_id",
                    "rep_name",
                    "team",
                    "activities",
                    "meetings_held",
                    "proposals_sent",
                    "deals_won",
                    "revenue",
                ),
            ),
        ),
        width=12,
        height=10,
    )
    board.add(
        board.sql(
            table.Panel(),
            "Alerts firing",
            Sql(
                "SELECT starts_at, severity, rule, scope, if(rep_name != '', rep_name, key) AS who, team, "
                f"summary FROM v_alerts WHERE ends_at IS NULL AND ({TEAM_IN} OR team = '') "
                "ORDER BY starts_at DESC",
                ("starts_at", "severity", "rule", "scope", "who", "team", "summary"),
            ),
        ),
        width=12,
        height=10,
    )
    return board


def _all_values(fields: str) -> ReduceDataOptions:
    return ReduceDataOptions().values(True).fields(f"/^{fields}$/").calcs([])


def _unit(unit: str) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="unit", value=unit)


def _colour_background(steps: dashboard.ThresholdsConfig) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="thresholds", value=steps.build())


def _cell_colour() -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background"})


def _links(links: Sequence[dashboard.DashboardLink]) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="links", value=[link.build() for link in links])


# --- Rep drill-down ----------------------------------------------------------------------------------


REP_WHERE = f"$__dateFilter(day) AND {REP_IN}"


def rep_drilldown() -> Board:
    board = Board(
        UID_REP,
        "Rep drill-down",
        "One rep, leading and lagging side by side, with the alerts raised on them and their "
        "management mode (annotations).",
    )
    board.team_variable(multi=False)
    board.rep_variable()
    board.annotation(
        "Alerts",
        "red",
        Sql(
            "SELECT starts_at AS time, ifNull(ends_at, $__toTime) AS timeEnd, "
            "concat(rule, ' (', severity, '): ', summary) AS text, rule AS tags "
            f"FROM v_alerts WHERE {REP_IN} AND starts_at <= $__toTime "
            "AND (ends_at IS NULL OR ends_at >= $__fromTime) ORDER BY time",
            ("time", "timeEnd", "text", "tags"),
        ),
    )
    board.annotation(
        "Mode changes",
        "purple",
        Sql(
            "SELECT changed_at AS time, concat('managed as ', mode, ': ', reason) AS text, mode AS tags "
            f"FROM rep_modes FINAL WHERE {REP_IN} AND $__timeFilter(changed_at) ORDER BY time",
            ("time", "text", "tags"),
        ),
    )
    for title, sql, unit, steps in (
        (
            "Activities",
            f"SELECT sum(activities) AS value FROM v_rep_daily_activity WHERE {REP_WHERE}",
            "short",
            None,
        ),
        (
            "Meetings held",
            f"SELECT sum(meetings_held) AS value FROM v_rep_daily_activity WHERE {REP_WHERE}",
            "short",
            None,
        ),
        (
            "Proposals sent",
            f"SELECT sum(proposals_sent) AS value FROM v_rep_daily_activity WHERE {REP_WHERE}",
            "short",
            None,
        ),
        (
            "Revenue won",
            f"SELECT sum(revenue) AS value FROM v_rep_daily_outcomes WHERE {REP_WHERE}",
            "currencyUSD",
            None,
        ),
        (
            "Win rate",
            "SELECT sum(deals_won) / nullIf(sum(deals_won) + sum(deals_lost), 0) AS value "
            f"FROM v_rep_daily_outcomes WHERE {REP_WHERE}",
            "percentunit",
            None,
        ),
        (
            "Quota attainment",
            f"SELECT (SELECT toFloat64(sum(revenue)) FROM v_rep_daily_outcomes WHERE {REP_WHERE}) / "
            f"nullIf(({quota_sql(REP_IN)}), 0) AS value",
            "percentunit",
            ATTAINMENT_STEPS,
        ),
    ):
        board.add(board.sql(stat_panel(unit, steps), title, Sql(sql, ("value",))), width=4, height=4)
    board.add(
        board.sql(
            timeseries.Panel().unit("short").min(0).description("Leading: what the rep does, day by day."),
            "Leading: activity per day",
            Sql(
                "SELECT toDateTime(day) AS time, sum(calls) AS calls, sum(emails) AS emails, "
                "sum(meetings_held) AS meetings_held, sum(proposals_sent) AS proposals_sent, "
                f"sum(visits) AS visits FROM v_rep_daily_activity WHERE {REP_WHERE} "
                "GROUP BY time ORDER BY time",
                ("time", "calls", "emails", "meetings_held", "proposals_sent", "visits"),
                time_series=True,
            ),
        ),
        width=12,
        height=9,
    )
    board.add(
        board.sql(
            timeseries.Panel().unit("currencyUSD").min(0).description("Lagging: revenue won, by close day."),
            "Lagging: revenue won per day",
            Sql(
                "SELECT toDateTime(day) AS time, sum(revenue) AS revenue FROM v_rep_daily_outcomes "
                f"WHERE {REP_WHERE} GROUP BY time ORDER BY time",
                ("time", "revenue"),
                time_series=True,
            ),
        ),
        width=12,
        height=9,
    )
    board.add(
        board.sql(
            table.Panel(),
            "Open deals at the end of the range",
            Sql(
                "SELECT deal_id, product, stage, opened_at, amount, last_event_at, "
                "dateDiff('day', last_event_at, $__toTime) AS days_since_last_event "
                f"FROM v_deals WHERE {REP_IN} AND {OPEN_AT_END} ORDER BY last_event_at",
                (
                    "deal_id",
                    "product",
                    "stage",
                    "opened_at",
                    "amount",
                    "last_event_at",
                    "days_since_last_event",
                ),
            ),
        ),
        width=12,
        height=9,
    )
    board.add(
        board.sql(
            table.Panel(),
            "Alerts",
            Sql(
                "SELECT starts_at, ends_at, severity, rule, detail, summary FROM v_alerts "
                f"WHERE {REP_IN} AND starts_at <= $__toTime AND (ends_at IS NULL OR ends_at >= $__fromTime) "
                "ORDER BY starts_at DESC",
                ("starts_at", "ends_at", "severity", "rule", "detail", "summary"),
            ),
        ),
        width=12,
        height=9,
    )
    board.add(
        board.sql(
            table.Panel(),
            "Management mode changes",
            Sql(
                f"SELECT changed_at, mode, reason FROM rep_modes FINAL WHERE {REP_IN} "
                "ORDER BY changed_at DESC",
                ("changed_at", "mode", "reason"),
            ),
        ),
        width=24,
        height=6,
    )
    return board


# --- Pipeline health ---------------------------------------------------------------------------------


def pipeline_health() -> Board:
    board = Board(
        UID_PIPELINE,
        "Pipeline health",
        "Open pipeline, coverage of the quota still to close, velocity, stalled deals, and the "
        "month's forecast against quota.",
    )
    board.team_variable()
    outcomes = (
        "SELECT sum(deals_won) AS won, sum(deals_lost) AS lost, toFloat64(sum(revenue)) AS revenue, "
        "sum(won_with_amount) AS with_amount, sum(cycle_days_sum) AS cycle "
        f"FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE}"
    )
    month_start = "toStartOfMonth(toDate($__toTime))"
    board.add(
        board.sql(
            stat_panel("currencyUSD"),
            "Open pipeline",
            Sql(
                "SELECT sum(ifNull(amount, 0)) AS open_pipeline FROM v_deals "
                f"WHERE {OPEN_AT_END} AND {TEAM_IN}",
                ("open_pipeline",),
            ),
        ),
        width=6,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("short"),
            "Open deals",
            Sql(
                f"SELECT count() AS open_deals FROM v_deals WHERE {OPEN_AT_END} AND {TEAM_IN}",
                ("open_deals",),
            ),
        ),
        width=6,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("x", COVERAGE_STEPS).description(
                "Open pipeline over the quota still to close this month (the month of the range's end)."
            ),
            "Pipeline coverage",
            Sql(
                f"SELECT (SELECT toFloat64(sum(ifNull(amount, 0))) FROM v_deals WHERE {OPEN_AT_END} "
                f"AND {TEAM_IN}) / nullIf(greatest(0, (SELECT toFloat64(sum(quota_monthly)) FROM reps FINAL "
                f"WHERE {TEAM_IN}) - (SELECT toFloat64(sum(revenue)) FROM v_rep_daily_outcomes "
                f"WHERE day >= {month_start} AND day <= toDate($__toTime) AND {TEAM_IN})), 0) AS coverage",
                ("coverage",),
            ),
        ),
        width=6,
        height=4,
    )
    board.add(
        board.sql(
            stat_panel("currencyUSD").description(
                "Expected revenue per day: open deals x win rate x average deal size / average cycle days "
                "(rates over the range)."
            ),
            "Pipeline velocity per day",
            Sql(
                "SELECT o.n * (w.won / nullIf(w.won + w.lost, 0)) * (w.revenue / nullIf(w.with_amount, 0)) "
                "/ nullIf(w.cycle / nullIf(w.won, 0), 0) AS velocity "
                f"FROM (SELECT count() AS n FROM v_deals WHERE {OPEN_AT_END} AND {TEAM_IN}) AS o "
                f"CROSS JOIN ({outcomes}) AS w",
                ("velocity",),
            ),
        ),
        width=6,
        height=4,
    )
    board.add(
        board.sql(
            table.Panel()
            .description(
                "This month: won so far, plus the open pipeline weighted by the range's win rate, "
                "against the month's quota."
            )
            .override_by_name(
                "forecast_vs_quota", [_unit("percentunit"), _colour_background(ATTAINMENT_STEPS)]
            ),
            "Forecast vs quota this month",
            Sql(
                "SELECT q.team AS team, q.quota AS quota, ifNull(w.won_mtd, 0) AS won_so_far, "
                "ifNull(p.open_value, 0) * ifNull(r.win_rate, 0) AS weighted_pipeline, "
                "won_so_far + weighted_pipeline AS forecast, "
                "forecast / nullIf(quota, 0) AS forecast_vs_quota "
                f"FROM (SELECT team, toFloat64(sum(quota_monthly)) AS quota FROM reps FINAL WHERE {TEAM_IN} "
                "GROUP BY team) AS q "
                "LEFT JOIN (SELECT team, toFloat64(sum(revenue)) AS won_mtd FROM v_rep_daily_outcomes "
                f"WHERE day >= {month_start} AND day <= toDate($__toTime) GROUP BY team) AS w "
                "ON w.team = q.team "
                "LEFT JOIN (SELECT team, toFloat64(sum(ifNull(amount, 0))) AS open_value FROM v_deals "
                f"WHERE {OPEN_AT_END} GROUP BY team) AS p ON p.team = q.team "
                "LEFT JOIN (SELECT team, "
                "sum(deals_won) / nullIf(sum(deals_won) + sum(deals_lost), 0) AS win_rate "
                f"FROM v_rep_daily_outcomes WHERE $__dateFilter(day) GROUP BY team) AS r ON r.team = q.team "
                "ORDER BY team",
                ("team", "quota", "won_so_far", "weighted_pipeline", "forecast", "forecast_vs_quota"),
            ),
        ),
        width=12,
        height=8,
    )
    board.add(
        board.sql(
            bargauge.Panel()
            .display_mode(BarGaugeDisplayMode.BASIC)
            .orientation(VizOrientation.HORIZONTAL)
            .unit("currencyUSD")
            .reduce_options(_all_values("open_value")),
            "Open pipeline by stage",
            Sql(
                "SELECT ifNull(stage, '(no stage)') AS stage, "
                "toFloat64(sum(ifNull(amount, 0))) AS open_value "
                f"FROM v_deals WHERE {OPEN_AT_END} AND {TEAM_IN} GROUP BY stage ORDER BY open_value DESC",
                ("stage", "open_value"),
            ),
        ),
        width=12,
        height=8,
    )
    board.add(
        board.sql(
            table.Panel()
            .description(
                "Open deals at the end of the range, longest without an event first; orange from 30 days, "
                "red from 60 (the stalled_deals alert uses twice the rep's own median cycle)."
            )
            .override_by_name("rep_id", [_links([rep_link()])])
            .override_by_name("days_idle", [_colour_background(IDLE_STEPS), _cell_colour()]),
            "Stalled deals: open deals, longest idle first",
            Sql(
                "SELECT deal_id, rep_id, rep_name, team, product, stage, amount, last_event_at, "
                "dateDiff('day', last_event_at, $__toTime) AS days_idle "
                f"FROM v_deals WHERE {OPEN_AT_END} AND {TEAM_IN} ORDER BY days_idle DESC LIMIT 50",
                (
                    "deal_id",
                    "rep_id",
                    "rep_name",
                    "team",
                    "product",
                    "stage",
                    "amount",
                    "last_event_at",
                    "days_idle",
                ),
            ),
        ),
        width=24,
        height=8,
    )
    board.add(
        board.sql(
            timeseries.Panel().unit("currencyUSD").min(0),
            "Revenue won per week by product",
            Sql(
                "SELECT toDateTime(toMonday(day)) AS time, product, sum(revenue) AS revenue "
                f"FROM v_rep_daily_outcomes WHERE {ACTIVITY_WHERE} "
                "GROUP BY time, product ORDER BY time, product",
                ("time", "product", "revenue"),
                time_series=True,
            ),
        ),
        width=24,
        height=8,
    )
    return board


# --- Field visits ------------------------------------------------------------------------------------


def field_visits() -> Board:
    board = Board(
        UID_VISITS,
        "Field visits",
        "Who visited whom, and whether the visit really happened at the customer: every check-in "
        "verified by the worker against the account's position and geofence (verified, out of range "
        "with the distance, or unlocated when either side has no position).",
    )
    board.team_variable()
    visits_where = f"$__timeFilter(occurred_at) AND {TEAM_IN}"
    for title, column, unit in (
        ("Visits", "count()", "short"),
        ("Verified", "countIf(status = 'verified') / nullIf(count(), 0)", "percentunit"),
        ("Out of range", "countIf(status = 'out_of_range')", "short"),
        ("Unlocated", "countIf(status = 'unlocated')", "short"),
        ("Average visit", "ifNull(avg(minutes_in_field), 0)", "m"),
        ("Impossible travel", "countIf(impossible_travel = 1)", "short"),
    ):
        board.add(
            board.sql(
                stat_panel(unit),
                title,
                Sql(f"SELECT {column} AS value FROM v_field_visits WHERE {visits_where}", ("value",)),
            ),
            width=4,
            height=4,
        )
    board.add(
        board.sql(
            timeseries.Panel().unit("short").min(0),
            "Visits per day by team",
            Sql(
                "SELECT toDateTime(day) AS time, team, sum(visits) AS visits FROM v_rep_daily_activity "
                f"WHERE {ACTIVITY_WHERE} GROUP BY time, team ORDER BY time, team",
                ("time", "team", "visits"),
                time_series=True,
            ),
        ),
        width=12,
        height=7,
    )
    board.add(
        board.sql(
            timeseries.Panel().unit("percentunit").min(0).max(1),
            "Verified share per day by team",
            Sql(
                "SELECT toDateTime(toDate(occurred_at, 'UTC')) AS time, team, "
                "countIf(status = 'verified') / count() AS verified_share "
                f"FROM v_field_visits WHERE {visits_where} GROUP BY time, team ORDER BY time, team",
                ("time", "team", "verified_share"),
                time_series=True,
            ),
        ),
        width=12,
        height=7,
    )
    markers = (
        MapLayerOptions()
        .type("markers")
        .name("Visits")
        .location(FrameGeometrySource().mode(FrameGeometrySourceMode.COORDS).latitude("lat").longitude("lon"))
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "status", "fixed": "dark-green"},
                    "opacity": 0.6,
                    "size": {"fixed": 5, "max": 15, "min": 2},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                },
            }
        )
    )
    board.add(
        board.sql(
            geomap.Panel()
            .view(dashboard_map_view())
            .layers([markers])
            .description(
                "At most 5,000 visits with a reported position, newest first, coloured by verification "
                "status. Positions are kept for SALESPULSE_VISIT_LOCATION_RETENTION_DAYS."
            ),
            "Where visits were reported",
            Sql(
                "SELECT lat, lon, status, rep_id, rep_name, team, account_name, "
                "round(distance_m) AS distance_m, occurred_at FROM v_field_visits "
                f"WHERE {visits_where} AND lat IS NOT NULL AND lon IS NOT NULL "
                "ORDER BY occurred_at DESC LIMIT 5000",
                (
                    "lat",
                    "lon",
                    "status",
                    "rep_id",
                    "rep_name",
                    "team",
                    "account_name",
                    "distance_m",
                    "occurred_at",
                ),
            ),
        ),
        width=12,
        height=14,
    )
    board.add(
        board.sql(
            table.Panel().override_by_name("rep_id", [_links([rep_link()])]),
            "Visits by rep",
            Sql(
                "SELECT rep_id, any(rep_name) AS rep_name, any(team) AS team, count() AS visits, "
                "countIf(status = 'verified') AS verified, countIf(status = 'out_of_range') AS out_of_range, "
                "countIf(status = 'unlocated') AS unlocated, "
                "round(countIf(status = 'verified') / count(), 3) AS verified_share, "
                "uniqExact(account_id) AS accounts, round(avg(minutes_in_field), 1) AS avg_minutes, "
                "countIf(impossible_travel = 1) AS impossible_travel "
                # Filtered in a subquery: in the outer WHERE, `team` would mean any(team).
                f"FROM (SELECT * FROM v_field_visits WHERE {visits_where}) "
                "GROUP BY rep_id ORDER BY visits DESC",
                (
                    "rep_id",
                    "rep_name",
                    "team",
                    "visits",
                    "verified",
                    "out_of_range",
                    "unlocated",
                    "verified_share",
                    "accounts",
                    "avg_minutes",
                    "impossible_travel",
                ),
            ),
        ),
        width=12,
        height=14,
    )
    board.add(
        board.sql(
            table.Panel().description(
                "The newest 200 visits that were out of range or too far to have driven."
            ),
            "Visits to check",
            Sql(
                "SELECT occurred_at, rep_name, team, account_name, status, round(distance_m) AS distance_m, "
                "round(travel_speed_kmh) AS travel_speed_kmh FROM v_field_visits "
                f"WHERE {visits_where} AND (status = 'out_of_range' OR impossible_travel = 1) "
                "ORDER BY occurred_at DESC LIMIT 200",
                (
                    "occurred_at",
                    "rep_name",
                    "team",
                    "account_name",
                    "status",
                    "distance_m",
                    "travel_speed_kmh",
                ),
            ),
        ),
        width=24,
        height=8,
    )
    return board


def dashboard_map_view() -> geomap.MapViewConfig:
    return geomap.MapViewConfig().id("fit").lat(0).lon(0).zoom(2).all_layers(True)


# --- Pipeline operations (Prometheus) ----------------------------------------------------------------


def _promql(expr: str, legend: str) -> prom.Dataquery:
    return prom.Dataquery().expr(expr).legend_format(legend)


def pipeline_operations() -> Board:
    board = Board(
        UID_OPERATIONS,
        "Pipeline operations",
        "The pipeline itself, from the workers' and the alerter's Prometheus metrics: throughput, "
        "consumer lag, dead letters, ClickHouse writes, alerts and notifications.",
    )
    panels: list[tuple[str, str, list[tuple[str, str]], int]] = [
        (
            "Events stored per second",
            "ops",
            [("sum by (type) (rate(salespulse_events_processed_total[$__rate_interval]))", "{{type}}")],
            12,
        ),
        (
            "Consumer lag (messages)",
            "short",
            [("sum by (topic) (salespulse_consumer_lag_messages)", "{{topic}}")],
            12,
        ),
        (
            "Dead letters per minute",
            "short",
            [("sum by (reason) (rate(salespulse_dead_letters_total[$__rate_interval])) * 60", "{{reason}}")],
            12,
        ),
        (
            "ClickHouse write latency",
            "s",
            [
                (
                    "histogram_quantile(0.5, sum by (le) (rate(salespulse_clickhouse_write_seconds_bucket"
                    "[$__rate_interval])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (le) (rate(salespulse_clickhouse_write_seconds_bucket"
                    "[$__rate_interval])))",
                    "p95",
                ),
            ],
            12,
        ),
        (
            "ClickHouse write failures per minute",
            "short",
            [
                (
                    "sum by (table) (rate(salespulse_clickhouse_write_failures_total"
                    "[$__rate_interval])) * 60",
                    "{{table}}",
                )
            ],
            8,
        ),
        (
            "Event to storage latency (p95)",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (le) (rate(salespulse_event_latency_seconds_bucket"
                    "[$__rate_interval])))",
                    "p95",
                )
            ],
            8,
        ),
        ("Workers up", "short", [('sum(up{job="salespulse-worker"})', "workers")], 8),
        ("Alerts firing by rule", "short", [("sum by (rule) (salespulse_alerts_firing)", "{{rule}}")], 12),
        (
            "Notifications per minute",
            "short",
            [
                (
                    "sum by (receiver) (rate(salespulse_notifications_sent_total[$__rate_interval])) * 60",
                    "sent {{receiver}}",
                ),
                (
                    "sum by (receiver) (rate(salespulse_notification_failures_total[$__rate_interval])) * 60",
                    "failed {{receiver}}",
                ),
            ],
            12,
        ),
    ]
    for title, unit, queries, width in panels:
        panel = timeseries.Panel().title(title).unit(unit).min(0).datasource(PROMETHEUS)
        for index, (expr, legend) in enumerate(queries):
            panel.with_target(_promql(expr, legend).ref_id(chr(ord("A") + index)))
        board.add(panel, width=width, height=8)
    return board


# --- All of it ---------------------------------------------------------------------------------------


def boards() -> list[Board]:
    return [sales_floor(), rep_drilldown(), pipeline_health(), field_visits(), pipeline_operations()]


def build_all() -> dict[str, dict[str, Any]]:
    """Every dashboard as Grafana JSON, by uid."""
    return {board.uid: board.to_json() for board in boards()}


def clickhouse_queries() -> Iterator[PanelQuery]:
    """Every ClickHouse query of every board (panels, variables, annotations)."""
    for board in boards():
        yield from board.queries


def dashboard_json_text(document: dict[str, Any]) -> str:
    """The file form: stable key order and indentation, so the drift test compares text."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# Provisioning files written next to the boards. The datasource files read their connection from
# the Grafana container's environment (docker-compose.yml), never from here.
CLICKHOUSE_DATASOURCE_YAML = f"""\
# Grafana datasource for the salespulse ClickHouse database (grafana-clickhouse-datasource plugin).
# The values come from the environment of the Grafana container (see docker-compose.yml).
# Written by `salespulse dashboards build`; edit streams/dashboards.py, not this file.
apiVersion: 1
datasources:
  - name: ClickHouse
    uid: {CLICKHOUSE_UID}
    type: {CLICKHOUSE_TYPE}
    isDefault: true
    jsonData:
      host: ${{CLICKHOUSE_HOST}}
      port: 9000
      protocol: native
      username: ${{CLICKHOUSE_USER}}
      defaultDatabase: ${{CLICKHOUSE_DATABASE}}
    secureJsonData:
      password: ${{CLICKHOUSE_PASSWORD}}
"""

PROMETHEUS_DATASOURCE_YAML = f"""\
# Grafana datasource for the workers' metrics (deploy/prometheus scrapes them).
# PROMETHEUS_URL comes from the environment of the Grafana container (see docker-compose.yml).
# Written by `salespulse dashboards build`; edit streams/dashboards.py, not this file.
apiVersion: 1
datasources:
  - name: Prometheus
    uid: {PROMETHEUS_UID}
    type: {PROMETHEUS_TYPE}
    access: proxy
    url: ${{PROMETHEUS_URL}}
    isDefault: false
"""

DASHBOARD_PROVIDER_YAML = f"""\
# Grafana loads the salespulse boards from the files `salespulse dashboards build` writes into
# grafana/dashboards, mounted at {DASHBOARDS_MOUNT} (see docker-compose.yml). They are code: changes
# made in the UI cannot be saved; edit streams/dashboards.py and build again.
apiVersion: 1
providers:
  - name: salespulse
    orgId: 1
    folder: {FOLDER}
    type: file
    disableDeletion: true
    allowUiUpdates: false
    updateIntervalSeconds: 30
    options:
      path: {DASHBOARDS_MOUNT}
"""


def build_files() -> dict[str, str]:
    """Every file ``dashboards build`` writes, by path relative to its output directory."""
    files = {
        "provisioning/datasources/clickhouse.yaml": CLICKHOUSE_DATASOURCE_YAML,
        "provisioning/datasources/prometheus.yaml": PROMETHEUS_DATASOURCE_YAML,
        "provisioning/dashboards/salespulse.yaml": DASHBOARD_PROVIDER_YAML,
    }
    for uid, document in build_all().items():
        files[f"dashboards/{uid}.json"] = dashboard_json_text(document)
    return files


__all__ = [
    "CLICKHOUSE_UID",
    "FOLDER",
    "PROMETHEUS_UID",
    "SCHEMA_VERSION",
    "PanelQuery",
    "Sql",
    "build_all",
    "build_files",
    "clickhouse_queries",
]
