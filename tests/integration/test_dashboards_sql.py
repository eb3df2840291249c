"""Every ClickHouse query of every Grafana board (panels, template variables, annotations), with
the plugin's macros and the board's variables expanded for a concrete range, run against the real
embedded ClickHouse loaded with the demo generator's data: each returns the columns its panel reads,
and rows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from analytics_data import DemoDatabase, demo_database
from clickhouse_driver import Client

from streams.dashboards import UID_REP, PanelQuery, clickhouse_queries
from streams.runtime.supervisor import EmbeddedRuntime

pytestmark = pytest.mark.integration

QUERIES = list(clickhouse_queries())


def expand_macros(sql: str, start: datetime, end: datetime, variables: dict[str, list[str]]) -> str:
    """What grafana-clickhouse-datasource (v4) sends for ``sql`` over ``start``..``end``: its
    macros (pkg/macros) and Grafana's ``${name:singlequote}`` variable format."""
    first, last = int(start.timestamp()), int(end.timestamp())

    def time_filter(match: re.Match[str]) -> str:
        column = match.group(1).strip()
        return f"{column} >= toDateTime({first}) AND {column} <= toDateTime({last})"

    def date_filter(match: re.Match[str]) -> str:
        column = match.group(1).strip()
        return f"{column} >= toDate('{start:%Y-%m-%d}') AND {column} <= toDate('{end:%Y-%m-%d}')"

    sql = re.sub(r"\$__timeFilter\(([^()]*)\)", time_filter, sql)
    sql = re.sub(r"\$__dateFilter\(([^()]*)\)", date_filter, sql)
    sql = sql.replace("$__fromTime", f"toDateTime({first})").replace("$__toTime", f"toDateTime({last})")
    for name, values in variables.items():
        quoted = ",".join("'" + value.replace("'", "\\'") + "'" for value in values)
        sql = sql.replace(f"${{{name}:singlequote}}", quoted)
    assert "$" not in sql, f"unexpanded macro or variable in: {sql}"
    return sql


@pytest.fixture(scope="module")
def demo(runtime: EmbeddedRuntime, tmp_path_factory: pytest.TempPathFactory) -> DemoDatabase:
    return demo_database(runtime, tmp_path_factory.mktemp("analytics-alerter"))


@pytest.fixture(scope="module")
def client(demo: DemoDatabase) -> Iterator[Client]:
    """Bound to the demo database, as the datasource is to its default database."""
    settings = demo.settings
    client = Client(
        settings.clickhouse_host or "127.0.0.1",
        port=settings.clickhouse_port,
        database=demo.database,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
    )
    try:
        yield client
    finally:
        client.disconnect()


@pytest.fixture(scope="module")
def variables(client: Client) -> dict[str, dict[str, list[str]]]:
    """The boards' variables as a user would pick them: every team ("All"), and on the rep board a
    rep with alerts and mode changes, and that rep's team."""
    teams = [team for (team,) in client.execute("SELECT DISTINCT team FROM reps FINAL ORDER BY team")]
    ((rep_id, team),) = client.execute(
        "SELECT a.rep_id, any(a.team) FROM v_alerts AS a WHERE a.rep_id IN (SELECT rep_id FROM rep_modes) "
        "GROUP BY a.rep_id ORDER BY count() DESC, a.rep_id LIMIT 1"
    )
    return {"all": {"team": teams}, UID_REP: {"team": [team], "rep": [rep_id]}}


def test_every_board_query_is_here() -> None:
    kinds = {query.kind for query in QUERIES}
    assert kinds == {"panel", "variable", "annotation"}
    assert len(QUERIES) >= 40


@pytest.mark.parametrize(
    "query", QUERIES, ids=[f"{q.dashboard_uid}:{q.kind}:{q.panel_title}" for q in QUERIES]
)
def test_the_query_returns_its_columns_and_rows(
    query: PanelQuery, demo: DemoDatabase, client: Client, variables: dict[str, dict[str, list[str]]]
) -> None:
    values = variables.get(query.dashboard_uid, variables["all"])
    # The range a user would look at: the last four weeks of the data (so the baseline panels have
    # the four weeks before), to the last second of its last day.
    sql = expand_macros(
        query.sql.text, demo.end - timedelta(days=28), demo.end - timedelta(seconds=1), values
    )
    rows, columns = client.execute(sql, with_column_types=True)
    assert tuple(name for name, _ in columns) == query.sql.columns, sql
    assert rows, f"no rows: {sql}"
    # A panel of one value must have one (a NULL here is a division by zero: no data).
    if len(query.sql.columns) == 1 and query.kind == "panel":
        assert len(rows) == 1 and rows[0][0] is not None, (rows, sql)
    if query.sql.time_series:
        assert query.sql.columns[0] == "time"
        times = [row[0] for row in rows]
        assert times == sorted(times), "a time series must come in time order"
