"""How long raw activity events are kept: a TTL on ``events``, set from ``SALESPULSE_EVENTS_TTL_DAYS``.

Only activity events expire. Deal events stay, because ``salespulse kpis`` and the report rebuild
every deal from them; the per-day counters (``rep_daily_activity``) and the hourly roll-up
(``activity_hourly``) are not touched either, so every KPI over any period still adds up after the
raw rows are gone. What goes with them: the field-visit positions and the drill-down to single
activities older than the TTL.

The TTL lives in the table, not in a migration (migrations are immutable and the same for
everyone): this applies the setting whenever the schema is prepared, and does nothing when the
table already has it. Unset (the default) keeps raw events for ever and removes a TTL that an
earlier setting applied.
"""

from __future__ import annotations

import logging
import re

from clickhouse_driver import Client

from schemas.events import ACTIVITY_TYPES
from sinks.migrate import validate_database_name

logger = logging.getLogger(__name__)

_TTL_DAYS = re.compile(r"TTL toDateTime\(occurred_at\) \+ toIntervalDay\((\d+)\)")


def events_ttl_expression(days: int) -> str:
    types = ", ".join(f"'{event_type}'" for event_type in ACTIVITY_TYPES)
    return f"toDateTime(occurred_at) + toIntervalDay({int(days)}) DELETE WHERE type IN ({types})"


def current_events_ttl_days(client: Client, database: str) -> int | None:
    """The days of the TTL this module set on ``events``, or None when it has none."""
    validate_database_name(database)
    rows = client.execute(
        "SELECT create_table_query FROM system.tables WHERE database = %(database)s AND name = 'events'",
        {"database": database},
    )
    if not rows:
        raise LookupError(f"table {database}.events does not exist: run `salespulse db migrate` first")
    match = _TTL_DAYS.search(rows[0][0])
    return int(match.group(1)) if match else None


def apply_events_ttl(client: Client, database: str, days: int | None) -> bool:
    """Make the TTL of ``events`` be ``days`` (None: no TTL). Returns whether anything changed.

    Changing it rewrites the expiry of every stored part in the background (ClickHouse's
    ``materialize_ttl_after_modify``), so it is done only when the setting differs from the table.
    """
    current = current_events_ttl_days(client, database)
    if current == days:
        return False
    if days is None:
        client.execute(f"ALTER TABLE {database}.events REMOVE TTL")
        logger.info("raw events of %s are kept for ever (TTL removed)", database)
    else:
        client.execute(f"ALTER TABLE {database}.events MODIFY TTL {events_ttl_expression(days)}")
        logger.info("raw activity events of %s expire after %d days", database, days)
    return True
