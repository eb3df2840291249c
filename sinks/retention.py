"""How long raw data is kept: TTLs set from settings whenever the schema is prepared.

``SALESPULSE_EVENTS_TTL_DAYS``: a TTL on ``events`` for activity events only. Deal events stay,
because ``salespulse kpis`` and the report rebuild every deal from them; the per-day counters
(``rep_daily_activity``), the hourly roll-up (``activity_hourly``) and the visits table are not
touched either, so every KPI over any period still adds up after the raw rows are gone. What goes
with them: the drill-down to single activities older than the TTL.

``SALESPULSE_VISIT_LOCATION_RETENTION_DAYS``: the reported position of a field visit is personal
data. After this many days the raw ``visit`` and ``visit_check_out`` events are deleted (a second
TTL rule on ``events``) and the ``lat``, ``lon`` and ``accuracy_m`` columns of ``visits`` are
emptied (column TTLs); the verification status, distance, times and flags remain.

TTLs live in the tables, not in migrations (migrations are immutable and the same for everyone):
this applies the settings whenever the schema is prepared, and does nothing when the tables already
have them. Unset (the default) keeps the data for ever and removes a TTL an earlier setting applied.
"""

from __future__ import annotations

import logging
import re

from clickhouse_driver import Client

from schemas.events import ACTIVITY_TYPES
from sinks.migrate import validate_database_name

logger = logging.getLogger(__name__)

VISIT_EVENT_TYPES: tuple[str, ...] = ("visit", "visit_check_out")
VISIT_LOCATION_COLUMNS: tuple[str, ...] = ("lat", "lon", "accuracy_m")

# One TTL rule as ClickHouse shows it in create_table_query.
_TTL_RULE = re.compile(
    r"toDateTime\(occurred_at\) \+ toIntervalDay\((\d+)\)(?: DELETE)? WHERE type IN \(([^)]*)\)"
)
_COLUMN_TTL = re.compile(
    r"`?(\w+)`? Nullable\(Float64\) TTL toDateTime\(checked_in_at\) \+ toIntervalDay\((\d+)\)"
)


def _types_list(types: tuple[str, ...]) -> str:
    return ", ".join(f"'{event_type}'" for event_type in types)


def events_ttl_expression(days: int, types: tuple[str, ...] = ACTIVITY_TYPES) -> str:
    return f"toDateTime(occurred_at) + toIntervalDay({int(days)}) DELETE WHERE type IN ({_types_list(types)})"


def _create_query(client: Client, database: str, table: str) -> str:
    validate_database_name(database)
    rows = client.execute(
        "SELECT create_table_query FROM system.tables WHERE database = %(database)s AND name = %(table)s",
        {"database": database, "table": table},
    )
    if not rows:
        raise LookupError(f"table {database}.{table} does not exist: run `salespulse db migrate` first")
    return str(rows[0][0])


def _current_rules(client: Client, database: str) -> dict[frozenset[str], int]:
    rules: dict[frozenset[str], int] = {}
    for days, types in _TTL_RULE.findall(_create_query(client, database, "events")):
        rules[frozenset(t.strip().strip("'") for t in types.split(","))] = int(days)
    return rules


def current_events_ttl_days(client: Client, database: str) -> int | None:
    """The days of the activity-events TTL this module set on ``events``, or None."""
    return _current_rules(client, database).get(frozenset(ACTIVITY_TYPES))


def current_visit_location_days(client: Client, database: str) -> int | None:
    """The days after which visit positions are dropped, or None when they are kept."""
    return _current_rules(client, database).get(frozenset(VISIT_EVENT_TYPES))


def apply_events_ttl(
    client: Client, database: str, days: int | None, visit_location_days: int | None = None
) -> bool:
    """Make the TTLs of ``events`` (and the position columns of ``visits``) be the settings'
    (None: no TTL). Returns whether anything changed.

    Changing a TTL rewrites the expiry of every stored part in the background (ClickHouse's
    ``materialize_ttl_after_modify``), so it is done only when a setting differs from the table.
    """
    wanted: dict[frozenset[str], int] = {}
    if days is not None:
        wanted[frozenset(ACTIVITY_TYPES)] = days
    if visit_location_days is not None:
        wanted[frozenset(VISIT_EVENT_TYPES)] = visit_location_days
    changed = False
    if _current_rules(client, database) != wanted:
        changed = True
        if not wanted:
            client.execute(f"ALTER TABLE {database}.events REMOVE TTL")
            logger.info("raw events of %s are kept for ever (TTL removed)", database)
        else:
            rules = []
            if days is not None:
                rules.append(events_ttl_expression(days))
            if visit_location_days is not None:
                rules.append(events_ttl_expression(visit_location_days, VISIT_EVENT_TYPES))
            client.execute(f"ALTER TABLE {database}.events MODIFY TTL {', '.join(rules)}")
            logger.info(
                "raw activity events of %s expire after %s days, visit events after %s days",
                database,
                days if days is not None else "no",
                visit_location_days if visit_location_days is not None else "no",
            )
    return _apply_visit_location_ttl(client, database, visit_location_days) or changed


def _apply_visit_location_ttl(client: Client, database: str, days: int | None) -> bool:
    current = dict(_COLUMN_TTL.findall(_create_query(client, database, "visits")))
    changed = False
    for column in VISIT_LOCATION_COLUMNS:
        now = int(current[column]) if column in current else None
        if now == days:
            continue
        changed = True
        if days is None:
            client.execute(f"ALTER TABLE {database}.visits MODIFY COLUMN {column} REMOVE TTL")
        else:
            client.execute(
                f"ALTER TABLE {database}.visits MODIFY COLUMN {column} Nullable(Float64) "
                f"TTL toDateTime(checked_in_at) + toIntervalDay({int(days)})"
            )
    if changed:
        logger.info("visit positions of %s are kept %s", database, f"{days} days" if days else "for ever")
    return changed
