"""Read helpers for the CLI and reports. Every query that counts reads with FINAL, because
the tables deduplicate only when parts merge (see the comments in sinks/migrations)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from clickhouse_driver import Client

from schemas.accounts import Account
from schemas.events import DEAL_TYPES, EVENT_TYPES, SALES_EVENT_ADAPTER
from schemas.reps import UNASSIGNED, Rep
from schemas.wire import Event
from sinks.base import VisitRow
from sinks.migrate import validate_database_name


def database_exists(client: Client, database: str) -> bool:
    """The database is there (nothing was ever stored or migrated in it when it is not)."""
    validate_database_name(database)
    ((exists,),) = client.execute(f"EXISTS DATABASE {database}")
    return bool(exists)


def _day_range(column: str, since: date | None, until: date | None) -> tuple[str, dict[str, date]]:
    conditions: list[str] = []
    params: dict[str, date] = {}
    if since is not None:
        conditions.append(f"{column} >= %(since)s")
        params["since"] = since
    if until is not None:
        conditions.append(f"{column} <= %(until)s")
        params["until"] = until
    return (" WHERE " + " AND ".join(conditions)) if conditions else "", params


def activity_by_rep(
    client: Client, database: str, since: date | None = None, until: date | None = None
) -> list[dict[str, Any]]:
    """Activity per rep over the UTC days ``since``..``until`` (both inclusive; None = open).

    One dict per rep, ordered by rep_id, with the keys ``rep_id``, ``name``, ``team``,
    ``territory``, ``total_events``, one count per event type (every type in
    ``schemas.events.EVENT_TYPES``, activity types first, zero when none) and ``last_event_at``
    (a UTC datetime, None when the rep has no events in the range).

    Every known rep is listed, with zeros if idle: an idle rep is what a manager most needs to
    see. A rep with events but no rep record yet has ``name`` None and team and territory
    ``"unassigned"`` (schemas.reps.UNASSIGNED).
    """
    validate_database_name(database)
    day_filter, params = _day_range("day", since, until)
    counts = client.execute(
        f"SELECT rep_id, type, sum(events) FROM {database}.rep_daily_activity FINAL{day_filter} "
        "GROUP BY rep_id, type",
        params,
    )
    reps = client.execute(f"SELECT rep_id, name, team, territory FROM {database}.reps FINAL")
    # max() cannot be changed by a duplicate row, so this one needs no FINAL.
    event_filter, event_params = _day_range("toDate(occurred_at, 'UTC')", since, until)
    latest = client.execute(
        f"SELECT rep_id, max(occurred_at) FROM {database}.events{event_filter} GROUP BY rep_id",
        event_params,
    )

    rows: dict[str, dict[str, Any]] = {}

    def row_for(rep_id: str) -> dict[str, Any]:
        if rep_id not in rows:
            rows[rep_id] = {
                "rep_id": rep_id,
                "name": None,
                "team": UNASSIGNED,
                "territory": UNASSIGNED,
                "total_events": 0,
                **dict.fromkeys(EVENT_TYPES, 0),
                "last_event_at": None,
            }
        return rows[rep_id]

    for rep_id, name, team, territory in reps:
        row_for(rep_id).update(name=name, team=team, territory=territory)
    for rep_id, event_type, total in counts:
        row = row_for(rep_id)
        # A type this version does not know (written by a newer one) still counts and shows.
        row[event_type] = row.get(event_type, 0) + total
        row["total_events"] += total
    for rep_id, last_event_at in latest:
        row_for(rep_id)["last_event_at"] = last_event_at.replace(tzinfo=UTC)
    return [rows[rep_id] for rep_id in sorted(rows)]


def event_totals(client: Client, database: str) -> dict[str, int]:
    """Distinct stored events per type: every known type (zero if none), then any other stored."""
    validate_database_name(database)
    totals = dict.fromkeys(EVENT_TYPES, 0)
    for event_type, count in client.execute(
        f"SELECT type, count() FROM {database}.events FINAL GROUP BY type ORDER BY type"
    ):
        totals[event_type] = count
    return totals


def dead_letter_count(client: Client, database: str) -> int:
    validate_database_name(database)
    ((count,),) = client.execute(f"SELECT count() FROM {database}.dead_letters FINAL")
    return int(count)


def daily_counters(client: Client, database: str) -> list[tuple[str, date, str, int]]:
    """Every (rep, UTC day, counter, count) row of ``rep_daily_activity``, deduplicated."""
    validate_database_name(database)
    rows = client.execute(
        f"SELECT rep_id, day, type, events FROM {database}.rep_daily_activity FINAL WHERE events > 0"
    )
    return [(rep_id, day, counter, int(count)) for rep_id, day, counter, count in rows]


def stored_deal_events(client: Client, database: str) -> list[Event]:
    """Every stored deal event, each once, oldest first."""
    validate_database_name(database)
    rows = client.execute(
        f"SELECT payload FROM {database}.events FINAL WHERE type IN %(types)s ORDER BY occurred_at, event_id",
        {"types": list(DEAL_TYPES)},
    )
    return [SALES_EVENT_ADAPTER.validate_json(payload) for (payload,) in rows]


def stored_reps(client: Client, database: str) -> dict[str, Rep]:
    """The current record of every rep."""
    validate_database_name(database)
    rows = client.execute(
        "SELECT rep_id, name, team, territory, manager, hired_at, quota_monthly, mode "
        f"FROM {database}.reps FINAL"
    )
    return {
        rep_id: Rep(
            rep_id=rep_id,
            name=name,
            team=team,
            territory=territory,
            manager=manager,
            hired_at=hired_at,
            quota_monthly=quota,
            mode=mode,
        )
        for rep_id, name, team, territory, manager, hired_at, quota, mode in rows
    }


def _moment_range(
    column: str, start: datetime | None, end: datetime | None
) -> tuple[list[str], dict[str, int]]:
    """Conditions ``start <= column < end`` in epoch milliseconds (the stored precision)."""
    conditions: list[str] = []
    params: dict[str, int] = {}
    if start is not None:
        conditions.append(f"{column} >= fromUnixTimestamp64Milli(toInt64(%(start_ms)s), 'UTC')")
        params["start_ms"] = int(start.timestamp() * 1000)
    if end is not None:
        conditions.append(f"{column} < fromUnixTimestamp64Milli(toInt64(%(end_ms)s), 'UTC')")
        params["end_ms"] = int(end.timestamp() * 1000)
    return conditions, params


@dataclass(frozen=True, slots=True)
class StoredAlert:
    rule: str
    scope: str
    key: str
    detail: str
    status: str
    severity: str
    summary: str
    labels: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None


def alerts_overlapping(
    client: Client, database: str, start: datetime | None = None, end: datetime | None = None
) -> list[StoredAlert]:
    """Every alert occurrence that was firing at some moment in ``start``..``end`` (end exclusive;
    None = open), in its newest state, oldest first."""
    validate_database_name(database)
    conditions, params = _moment_range("starts_at", None, end)
    if start is not None:
        conditions.append(
            "(ends_at IS NULL OR ends_at >= fromUnixTimestamp64Milli(toInt64(%(start_ms)s), 'UTC'))"
        )
        params["start_ms"] = int(start.timestamp() * 1000)
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    rows = client.execute(
        "SELECT rule, scope, key, detail, status, severity, summary, labels, starts_at, ends_at "
        f"FROM {database}.alerts FINAL{where} ORDER BY starts_at, rule, key, detail",
        params,
    )
    return [
        StoredAlert(
            rule=rule,
            scope=scope,
            key=key,
            detail=detail,
            status=status,
            severity=severity,
            summary=summary,
            labels=dict(labels),
            starts_at=starts_at.replace(tzinfo=UTC),
            ends_at=None if ends_at is None else ends_at.replace(tzinfo=UTC),
        )
        for rule, scope, key, detail, status, severity, summary, labels, starts_at, ends_at in rows
    ]


@dataclass(frozen=True, slots=True)
class ModeChange:
    rep_id: str
    mode: str
    reason: str
    changed_at: datetime


def mode_changes(
    client: Client, database: str, start: datetime | None = None, end: datetime | None = None
) -> list[ModeChange]:
    """Management-mode changes of reps in ``start``..``end`` (end exclusive), oldest first."""
    validate_database_name(database)
    conditions, params = _moment_range("changed_at", start, end)
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    rows = client.execute(
        f"SELECT rep_id, mode, reason, changed_at FROM {database}.rep_modes FINAL{where} "
        "ORDER BY changed_at, rep_id",
        params,
    )
    return [
        ModeChange(rep_id, mode, reason, changed_at.replace(tzinfo=UTC))
        for rep_id, mode, reason, changed_at in rows
    ]


@dataclass(frozen=True, slots=True)
class VisitPosition:
    rep_id: str
    occurred_at: datetime
    lat: float
    lon: float
    # verified | out_of_range | unlocated, as the worker verified the visit (None: not known)
    status: str | None = None


def visit_positions(
    client: Client, database: str, start: datetime | None = None, end: datetime | None = None
) -> list[VisitPosition]:
    """Field visits that reported a position (kept for SALESPULSE_VISIT_LOCATION_RETENTION_DAYS),
    each once, with the worker's verification status, oldest first."""
    validate_database_name(database)
    conditions, params = _moment_range("checked_in_at", start, end)
    conditions += ["check_in_missing = 0", "lat IS NOT NULL", "lon IS NOT NULL"]
    rows = client.execute(
        "SELECT rep_id, checked_in_at, lat, lon, status "
        f"FROM (SELECT * FROM {database}.visits FINAL) WHERE {' AND '.join(conditions)} "
        "ORDER BY checked_in_at, visit_id",
        params,
    )
    return [
        VisitPosition(rep_id, occurred_at.replace(tzinfo=UTC), float(lat), float(lon), status)
        for rep_id, occurred_at, lat, lon, status in rows
    ]


ACCOUNT_SELECT = (
    "SELECT account_id, name, lat, lon, radius_m, segment, owner_rep_id FROM {database}.accounts FINAL"
)


def account_from_row(row: tuple[Any, ...]) -> Account:
    account_id, name, lat, lon, radius_m, segment, owner_rep_id = row
    return Account(
        account_id=account_id,
        name=name,
        lat=lat,
        lon=lon,
        radius_m=radius_m,
        segment=segment,
        owner_rep_id=owner_rep_id,
    )


def stored_accounts(client: Client, database: str) -> dict[str, Account]:
    """The current record of every account (``salespulse import accounts``), by account_id."""
    validate_database_name(database)
    rows = client.execute(ACCOUNT_SELECT.format(database=database))
    return {row[0]: account_from_row(row) for row in rows}


def assigned_accounts(client: Client, database: str, rep_id: str) -> list[Account]:
    """The accounts whose current owner is ``rep_id`` (a rep's assigned accounts), by account_id."""
    validate_database_name(database)
    # Filtered outside FINAL: an account's newest record decides its owner, not any older one.
    rows = client.execute(
        f"SELECT * FROM ({ACCOUNT_SELECT.format(database=database)}) "
        "WHERE owner_rep_id = %(rep_id)s ORDER BY account_id",
        {"rep_id": rep_id},
    )
    return [account_from_row(row) for row in rows]


def stored_visits(
    client: Client, database: str, start: datetime | None = None, end: datetime | None = None
) -> list[VisitRow]:
    """Every stored visit row (orphan check-outs included) checked into in ``start``..``end``
    (end exclusive; None = open), in its newest state, oldest first."""
    validate_database_name(database)
    conditions, params = _moment_range("checked_in_at", start, end)
    where = (" WHERE " + " AND ".join(conditions)) if conditions else ""
    rows = client.execute(
        "SELECT visit_id, rep_id, account_id, checked_in_at, checked_out_at, duration_s, status, "
        "distance_m, radius_m, lat, lon, accuracy_m, check_in_missing, overlaps, impossible_travel, "
        f"travel_speed_kmh, updated_at FROM (SELECT * FROM {database}.visits FINAL){where} "
        "ORDER BY checked_in_at, visit_id",
        params,
    )
    return [
        VisitRow(
            visit_id=visit_id,
            rep_id=rep_id,
            account_id=account_id,
            checked_in_at=checked_in_at.replace(tzinfo=UTC),
            checked_out_at=None if checked_out_at is None else checked_out_at.replace(tzinfo=UTC),
            duration_s=duration_s,
            status=status,
            distance_m=distance_m,
            radius_m=radius_m,
            lat=lat,
            lon=lon,
            accuracy_m=accuracy_m,
            check_in_missing=bool(check_in_missing),
            overlaps=bool(overlaps),
            impossible_travel=bool(impossible_travel),
            travel_speed_kmh=travel_speed_kmh,
            updated_at=updated_at.replace(tzinfo=UTC),
        )
        for (
            visit_id,
            rep_id,
            account_id,
            checked_in_at,
            checked_out_at,
            duration_s,
            status,
            distance_m,
            radius_m,
            lat,
            lon,
            accuracy_m,
            check_in_missing,
            overlaps,
            impossible_travel,
            travel_speed_kmh,
            updated_at,
        ) in rows
    ]
