"""The accounts and visits tables on the real ClickHouse: the newest account record wins, a rep's
assigned accounts are those their newest record gives them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_driver import Client

from schemas.accounts import Account
from sinks.clickhouse import write_accounts
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
