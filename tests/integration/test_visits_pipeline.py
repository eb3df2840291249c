"""Check-ins and check-outs through the real broker, a real worker and the real ClickHouse: the
exact verified / out-of-range / unlocated counts, durations and flags read back, nothing counted
twice on redelivery or on a second pass, and the visit-location retention emptying positions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from test_pipeline import isolated_pipeline, publish, rows, scalar, start_worker

from schemas.accounts import Account
from schemas.events import VisitCheckOutEvent, VisitEvent
from schemas.settings import Settings
from schemas.wire import Event
from sinks.clickhouse import connect, write_accounts
from sinks.retention import apply_events_ttl, current_events_ttl_days, current_visit_location_days
from streams.kafka import wait_until_consumed
from streams.runtime.supervisor import EmbeddedRuntime

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
ACCOUNTS = [
    Account(account_id="acc-a", name="Alpha", lat=48.0, lon=11.0, radius_m=100.0, owner_rep_id="rep-a"),
    Account(account_id="acc-b", name="Beta", lat=48.5, lon=11.0, owner_rep_id="rep-a"),  # 55.6 km north
    Account(account_id="acc-c", name="Gamma"),  # no position
]


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def check_in(
    event_id: str,
    rep: str,
    minutes: int,
    account: str,
    position: tuple[float, float] | None,
    check_out_minutes: int | None = None,
) -> VisitEvent:
    return VisitEvent(
        event_id=event_id,
        type="visit",
        rep_id=rep,
        occurred_at=at(minutes),
        account_id=account,
        lat=position[0] if position else None,
        lon=position[1] if position else None,
        accuracy_m=10.0 if position else None,
        check_out_at=None if check_out_minutes is None else at(check_out_minutes),
    )


def check_out(event_id: str, rep: str, visit_id: str, minutes: int) -> VisitCheckOutEvent:
    return VisitCheckOutEvent(
        event_id=event_id, type="visit_check_out", rep_id=rep, occurred_at=at(minutes), visit_id=visit_id
    )


def scenario() -> list[Event]:
    return [
        # rep-a: a round of four visits and a check-out whose check-in never came
        check_in("v1", "rep-a", 0, "acc-a", (48.0, 11.0)),
        check_out("c1", "rep-a", "v1", 45),
        check_in("v2", "rep-a", 90, "acc-b", (48.5, 11.0), check_out_minutes=120),  # 74 km/h: fine
        check_in("v3", "rep-a", 180, "acc-a", (48.01, 11.0)),  # 1.1 km off: out of range
        check_out("c3", "rep-a", "v3", 200),
        check_in("v4", "rep-a", 240, "acc-c", (48.0, 11.02)),  # the account has no position
        check_out("c9", "rep-a", "v-missing", 300),
        # rep-b: two overlapping visits 55.6 km apart 15 minutes apart, and one without GPS
        check_in("w1", "rep-b", 0, "acc-a", (48.0, 11.0), check_out_minutes=60),
        check_in("w2", "rep-b", 15, "acc-b", (48.5, 11.0), check_out_minutes=50),
        check_in("w3", "rep-b", 120, "acc-a", None),
    ]


EXPECTED = [
    # visit_id, status, duration_s, check_in_missing, overlaps, impossible_travel
    ("c9-orphan", "unlocated", None, 1, 0, 0),
    ("v1", "verified", 2700.0, 0, 0, 0),
    ("v2", "verified", 1800.0, 0, 0, 0),
    ("v3", "out_of_range", 1200.0, 0, 0, 0),
    ("v4", "unlocated", None, 0, 0, 0),
    ("w1", "verified", 3600.0, 0, 1, 0),
    ("w2", "verified", 2100.0, 0, 1, 1),
    ("w3", "unlocated", None, 0, 0, 0),
]
STORED = (
    "SELECT if(check_in_missing = 1, 'c9-orphan', visit_id), status, duration_s, check_in_missing, "
    "overlaps, impossible_travel FROM {db}.visits FINAL ORDER BY 1"
)


def test_check_ins_and_check_outs_give_exact_visits_in_clickhouse(runtime: EmbeddedRuntime) -> None:
    with isolated_pipeline(runtime) as settings:
        client = connect(settings)
        try:
            write_accounts(client, settings.clickhouse_database, ACCOUNTS, datetime.now(UTC))
        finally:
            client.disconnect()
        events = scenario()
        worker = start_worker(runtime, settings, "worker-visits")
        try:
            # Everything twice (a producer retry of the whole lot): no visit may count twice.
            asyncio.run(publish(settings, events, []))
            asyncio.run(publish(settings, events, []))
            asyncio.run(wait_until_consumed(settings, settings.topics.consumed, timeout_s=90))
        finally:
            worker.stop()
        assert rows(settings, STORED) == EXPECTED
        assert rows(
            settings,
            "SELECT status, count() FROM {db}.v_field_visits GROUP BY status ORDER BY status",
        ) == [("out_of_range", 1), ("unlocated", 2), ("verified", 4)]  # the orphan check-out is no visit
        (distance,) = rows(settings, "SELECT round(distance_m) FROM {db}.visits FINAL WHERE visit_id = 'v3'")
        assert distance == (1112.0,)
        (speed,) = rows(
            settings, "SELECT round(travel_speed_kmh) FROM {db}.visits FINAL WHERE visit_id = 'w2'"
        )
        assert speed == (222.0,)
        assert rows(settings, "SELECT account_name, team FROM {db}.v_field_visits WHERE visit_id = 'v2'") == [
            ("Beta", "unassigned")
        ]

        # A second pass over the topics by a new consumer group: the rebuilt worker writes the same.
        again = settings.model_copy(update={"consumer_group": settings.consumer_group + "-again"})
        second = start_worker(runtime, again, "worker-visits-again")
        try:
            asyncio.run(wait_until_consumed(again, again.topics.consumed, timeout_s=90))
        finally:
            second.stop()
        assert rows(settings, STORED) == EXPECTED
        assert scalar(settings, "SELECT count() FROM {db}.events FINAL WHERE type LIKE 'visit%'") == 10

        _positions_expire_and_verification_stays(settings)


def _positions_expire_and_verification_stays(settings: Settings) -> None:
    client = connect(settings)
    db = settings.clickhouse_database
    try:
        # These visits are months old: a 40-day retention expires every position at the next merge.
        assert apply_events_ttl(client, db, None, 40) is True
        assert apply_events_ttl(client, db, None, 40) is False
        assert current_visit_location_days(client, db) == 40
        assert current_events_ttl_days(client, db) is None
        client.execute(f"OPTIMIZE TABLE {db}.visits FINAL")
        client.execute(f"OPTIMIZE TABLE {db}.events FINAL")
        assert client.execute(f"SELECT countIf(lat IS NOT NULL OR lon IS NOT NULL) FROM {db}.visits") == [
            (0,)
        ]
        assert client.execute(f"SELECT count() FROM {db}.events WHERE type LIKE 'visit%'") == [(0,)]
        assert sorted(
            client.execute(f"SELECT visit_id, status FROM {db}.visits FINAL WHERE visit_id LIKE 'v%'")
        ) == [
            ("v-missing", "unlocated"),
            ("v1", "verified"),
            ("v2", "verified"),
            ("v3", "out_of_range"),
            ("v4", "unlocated"),
        ]
        assert apply_events_ttl(client, db, None, None) is True
        assert current_visit_location_days(client, db) is None
    finally:
        client.disconnect()
