"""The accounts and visits tables on the real ClickHouse: the newest account record wins, a rep's
assigned accounts are those their newest record gives them; the history reads visit events, check-ins
and the newest verification back."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_driver import Client

from schemas.accounts import Account
from schemas.events import CallEvent, VisitCheckOutEvent, VisitEvent
from schemas.wire import MessageOrigin
from sinks.base import IngestedEvent, SinkBatch, VisitRow
from sinks.clickhouse import ClickHouseHistory, ClickHouseSink, write_accounts
from sinks.migrate import apply_migrations
from sinks.queries import assigned_accounts, stored_accounts

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
def migrated(clickhouse_client: Client) -> Iterator[str]:
    name = f"visitstest_{uuid.uuid4().hex[:12]}"
    apply_migrations(clickhouse_client, name)
    yield name
    clickhouse_client.execute(f"DROP DATABASE IF EXISTS {name}")


def test_the_newest_account_record_wins_and_decides_the_owner(
    clickhouse_client: Client, migrated: str
) -> None:
    first = [
        Account(
            account_id="a1", name="Acme", lat=48.1, lon=11.5, radius_m=200, segment="key", owner_rep_id="r1"
        ),
        Account(account_id="a2", name="Beta", lat=52.5, lon=13.4, owner_rep_id="r1"),
        Account(account_id="a3", name="Gamma", owner_rep_id="r2"),
    ]
    write_accounts(clickhouse_client, migrated, first, T0)
    # a2 moves to r2; the same import written twice changes nothing.
    moved = Account(account_id="a2", name="Beta GmbH", lat=52.5, lon=13.4, owner_rep_id="r2")
    write_accounts(clickhouse_client, migrated, [moved], T0 + timedelta(hours=1))
    write_accounts(clickhouse_client, migrated, [moved], T0 + timedelta(hours=1))

    assert stored_accounts(clickhouse_client, migrated) == {"a1": first[0], "a2": moved, "a3": first[2]}
    assert assigned_accounts(clickhouse_client, migrated, "r1") == [first[0]]
    assert assigned_accounts(clickhouse_client, migrated, "r2") == [moved, first[2]]
    assert assigned_accounts(clickhouse_client, migrated, "nobody") == []


def test_the_history_reads_visit_events_check_ins_and_verifications(
    clickhouse_client: Client, migrated: str
) -> None:
    check_in = VisitEvent(event_id="v1", type="visit", rep_id="r1", occurred_at=T0, lat=48.0, lon=11.0)
    check_out = VisitCheckOutEvent(
        event_id="c1", type="visit_check_out", rep_id="r1", occurred_at=T0 + timedelta(hours=1), visit_id="v1"
    )
    call = CallEvent(event_id="k1", type="call", rep_id="r1", occurred_at=T0)
    other = VisitEvent(event_id="v2", type="visit", rep_id="r2", occurred_at=T0)
    origin = MessageOrigin("activities", 0, 1)
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(
        SinkBatch(events=[IngestedEvent(e, origin, T0) for e in (check_in, check_out, call, other, check_in)])
    )
    sink.flush()
    history = ClickHouseHistory(clickhouse_client, migrated)
    assert history.rep_visit_events(["r1", "r3"], T0) == {"r1": [check_in, check_out], "r3": []}
    assert history.rep_visit_events(["r1"], T0 + timedelta(minutes=1)) == {"r1": [check_out]}
    assert history.visit_check_ins(["v1", "c1", "k1", "nope"]) == [check_in]
    assert history.visit_verifications(["v1"]) == {}
    row = VisitRow(
        visit_id="v1",
        rep_id="r1",
        account_id=None,
        checked_in_at=T0,
        checked_out_at=None,
        duration_s=None,
        status="out_of_range",
        distance_m=812.5,
        radius_m=150.0,
        lat=48.0,
        lon=11.0,
        accuracy_m=None,
        check_in_missing=False,
        overlaps=False,
        impossible_travel=False,
        travel_speed_kmh=None,
        updated_at=T0,
    )
    sink.write(
        SinkBatch(visits=[row, replace(row, status="verified", distance_m=3.0, updated_at=T0 + timedelta(1))])
    )
    sink.flush()
    assert history.visit_verifications(["v1", "v9"]) == {"v1": ("verified", 3.0)}
