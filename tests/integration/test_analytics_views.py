"""The analytics layer (migrations 0010 and 0011) on the real embedded ClickHouse, loaded with the
demo generator's data: the views give the KPI engine's figures, the hourly roll-up ignores
redelivered events, and the raw-event TTL expires activity only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from analytics_data import DemoDatabase, demo_database
from clickhouse_driver import Client
from test_pipeline import isolated_pipeline

from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.retention import apply_events_ttl, current_events_ttl_days
from streams.kpis import build_report
from streams.runtime.supervisor import EmbeddedRuntime

pytestmark = pytest.mark.integration

LEADING = ("calls", "calls_connected", "emails", "meetings_scheduled", "meetings_held", "visits")
LEADING += ("demos", "proposals_sent", "deals_created", "activities")


@pytest.fixture(scope="module")
def demo(runtime: EmbeddedRuntime, tmp_path_factory: pytest.TempPathFactory) -> DemoDatabase:
    return demo_database(runtime, tmp_path_factory.mktemp("analytics-alerter"))


@pytest.fixture
def client(demo: DemoDatabase) -> Iterator[Client]:
    client = connect(demo.settings)
    try:
        yield client
    finally:
        client.disconnect()


def test_the_views_give_the_kpi_engines_figures_per_rep(demo: DemoDatabase, client: Client) -> None:
    since, until = demo.last_day - timedelta(days=20), demo.last_day - timedelta(days=3)
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    engine = {
        row["rep"]: row
        for row in build_report(
            client, demo.database, by="rep", since=since, until=until, deal_stages=demo.settings.deal_stages
        ).rows
    }
    db, window = demo.database, {"since": since, "until": until}
    leading = client.execute(
        f"SELECT rep_id, {', '.join(f'sum({c})' for c in LEADING)} FROM {db}.v_rep_daily_activity "
        "WHERE day BETWEEN %(since)s AND %(until)s GROUP BY rep_id",
        window,
    )
    outcomes = client.execute(
        f"SELECT rep_id, sum(deals_won), sum(deals_lost), sum(revenue) FROM {db}.v_rep_daily_outcomes "
        "WHERE day BETWEEN %(since)s AND %(until)s GROUP BY rep_id",
        window,
    )
    open_at_end = client.execute(
        f"SELECT rep_id, count(), sum(ifNull(amount, 0)) FROM {db}.v_deals "
        "WHERE opened_at < %(end)s AND (closed_at IS NULL OR closed_at >= %(end)s) GROUP BY rep_id",
        {"end": end},
    )
    assert leading and outcomes and open_at_end
    for rep_id, *counts in leading:
        assert dict(zip(LEADING, counts, strict=True)) == {c: engine[rep_id][c] for c in LEADING}, rep_id
    for rep_id, won, lost, revenue in outcomes:
        row = engine[rep_id]
        assert (won, lost, float(revenue)) == (row["deals_won"], row["deals_lost"], row["revenue"]), rep_id
    for rep_id, deals, value in open_at_end:
        assert (deals, float(value)) == (engine[rep_id]["open_deals"], engine[rep_id]["open_pipeline_value"])
    # Reps without a row in a view had nothing of it in the window.
    for rep_id in set(engine) - {row[0] for row in leading}:
        assert engine[rep_id]["activities"] == 0


def test_the_hourly_roll_up_adds_up_to_the_days_and_ignores_redelivered_events(
    demo: DemoDatabase, client: Client
) -> None:
    db = demo.database
    by_day = f"SELECT rep_id, day, activities, calls_connected FROM {db}.v_rep_daily_activity ORDER BY 1, 2"
    hourly_by_day = (
        f"SELECT rep_id, toDate(hour) AS day, sum(activities), sum(calls_connected) "
        f"FROM {db}.v_rep_hourly_activity GROUP BY rep_id, day ORDER BY 1, 2"
    )
    daily = client.execute(by_day)
    assert client.execute(hourly_by_day) == daily
    # A redelivered batch: the same events written again, as a worker restarted mid-flush does.
    ((rep_id,),) = client.execute(f"SELECT any(rep_id) FROM {db}.events")
    client.execute(
        f"INSERT INTO {db}.events SELECT * FROM {db}.events WHERE rep_id = %(rep)s", {"rep": rep_id}
    )
    assert client.execute(hourly_by_day) == daily


@pytest.fixture
def fresh(runtime: EmbeddedRuntime) -> Iterator[Settings]:
    with isolated_pipeline(runtime) as settings:
        yield settings


def test_the_events_ttl_expires_old_activity_and_keeps_deal_events(fresh: Settings) -> None:
    client = connect(fresh)
    db = fresh.clickhouse_database
    now = datetime.now(UTC)
    rows = [
        ("old-call", "call", now - timedelta(days=90)),
        ("old-deal", "deal_created", now - timedelta(days=90)),
        ("new-call", "call", now - timedelta(days=2)),
    ]
    try:
        client.execute(
            f"INSERT INTO {db}.events "
            "(event_id, type, rep_id, occurred_at, amount, payload, source, ingested_at) VALUES",
            [(i, t, "rep-1", at, Decimal("1.00"), "{}", "test", now) for i, t, at in rows],
        )
        assert current_events_ttl_days(client, db) is None
        assert apply_events_ttl(client, db, 60) is True
        assert apply_events_ttl(client, db, 60) is False  # already so: no ALTER, no rewrite
        assert current_events_ttl_days(client, db) == 60
        client.execute(f"OPTIMIZE TABLE {db}.events FINAL")  # TTLs are applied when parts merge
        kept = {event_id for (event_id,) in client.execute(f"SELECT event_id FROM {db}.events")}
        assert kept == {"old-deal", "new-call"}
        assert apply_events_ttl(client, db, None) is True
        assert current_events_ttl_days(client, db) is None
    finally:
        client.disconnect()


def test_a_ttl_within_the_grace_period_is_refused() -> None:
    with pytest.raises(ValueError, match="must be more than SALESPULSE_LATE_GRACE_DAYS"):
        Settings(_env_file=None, events_ttl_days=30, late_grace_days=35)  # type: ignore[call-arg]
