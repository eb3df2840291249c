"""ClickHouse: the connection, the sink that writes every table, and the event-history reader.

Values always travel as bound data (INSERT rows, ``%(name)s`` parameters, external tables),
never formatted into SQL text. The only thing spliced into SQL is the database name, which is an
identifier validated against a strict pattern.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from clickhouse_driver import Client
from clickhouse_driver.errors import ErrorCodes, NetworkError, ServerException, SocketTimeoutError

from schemas.accounts import Account
from schemas.deadletter import DeadLetter
from schemas.events import SALES_EVENT_ADAPTER
from schemas.reps import Rep
from schemas.settings import Settings
from schemas.wire import Event, event_to_json
from sinks.base import DailyActivityRow, DealRow, IngestedEvent, RepHistoryEntry, SinkBatch, VisitRow
from sinks.errors import ClickHouseUnreachableError, HistoryReadError, SinkError
from sinks.migrate import validate_database_name
from sinks.queries import ACCOUNT_SELECT, account_from_row

logger = logging.getLogger(__name__)

Row = tuple[Any, ...]

# Column lists in the order rows are built below; the dict's order is the flush order. Events go
# first so the store of record is never behind the roll-ups derived from it; the daily counts go
# last for the same reason.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "events": (
        "event_id",
        "type",
        "rep_id",
        "account_id",
        "deal_id",
        "occurred_at",
        "amount",
        "payload",
        "source",
        "source_partition",
        "source_offset",
        "ingested_at",
    ),
    "dead_letters": (
        "reason",
        "detail",
        "source",
        "source_partition",
        "source_offset",
        "batch_index",
        "event_id",
        "rep_id",
        "payload_excerpt",
        "payload_truncated",
        "rejected_at",
    ),
    "reps": (
        "rep_id",
        "name",
        "team",
        "territory",
        "manager",
        "hired_at",
        "quota_monthly",
        "mode",
        "updated_at",
    ),
    "rep_daily_activity": ("rep_id", "day", "type", "events", "updated_at"),
    "deals": (
        "deal_id",
        "rep_id",
        "status",
        "stage",
        "opened_at",
        "closed_at",
        "amount",
        "amount_missing",
        "account_id",
        "product",
        "cycle_days",
        "stage_advancements",
        "last_event_at",
        "events",
        "updated_at",
    ),
    "visits": (
        "visit_id",
        "rep_id",
        "account_id",
        "checked_in_at",
        "checked_out_at",
        "duration_s",
        "status",
        "distance_m",
        "radius_m",
        "lat",
        "lon",
        "accuracy_m",
        "check_in_missing",
        "overlaps",
        "impossible_travel",
        "travel_speed_kmh",
        "updated_at",
    ),
}

# Raw events go last. The worker rebuilds a rep's state from the stored events, and a redelivered
# event that is already stored counts as a duplicate and produces no aggregate row. So a stored
# event must imply that everything derived from it is stored too: if a worker dies between two
# inserts, the events of the unfinished flush are not stored yet and their redelivery writes the
# (absolute, idempotent) aggregate rows again.
FLUSH_ORDER: tuple[str, ...] = ("rep_daily_activity", "deals", "visits", "reps", "dead_letters", "events")
if set(FLUSH_ORDER) != set(TABLE_COLUMNS):  # a new table must be given its place in the order
    raise RuntimeError("FLUSH_ORDER and TABLE_COLUMNS name different tables")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_MICROSECOND = timedelta(microseconds=1)
# ClickHouse silently stores a Date32 outside this range as 1970-01-01.
DATE32_MIN = date(1900, 1, 1)
DATE32_MAX = date(2299, 12, 31)
_AUTHENTICATION_FAILED = 516  # what current servers send for any bad login; not in the driver's list
_AUTH_ERROR_CODES = frozenset(
    {ErrorCodes.UNKNOWN_USER, ErrorCodes.WRONG_PASSWORD, ErrorCodes.REQUIRED_PASSWORD, _AUTHENTICATION_FAILED}
)


def epoch_millis(moment: datetime) -> int:
    """Exact integer milliseconds for a DateTime64(3) column (the driver passes ints through
    untouched, which is both exact and faster than its float-based datetime conversion)."""
    return (moment - _EPOCH) // _MILLISECOND


def epoch_micros(moment: datetime) -> int:
    return (moment - _EPOCH) // _MICROSECOND


def event_row(item: IngestedEvent) -> Row:
    event, origin = item.event, item.origin
    # Only some event types have deal_id/amount. A model's fields live in its __dict__: reading
    # them there costs 0.05 µs, getattr() with a default 1.7 µs on a miss (pydantic builds an
    # AttributeError message), which was half the cost of building a row.
    fields = event.__dict__
    return (
        event.event_id,
        event.type,
        event.rep_id,
        event.account_id,
        fields.get("deal_id"),
        epoch_millis(event.occurred_at),
        fields.get("amount"),
        # Bytes go into a String column as they are: no decode/encode round trip.
        event_to_json(event),
        origin.source,
        origin.partition,
        origin.offset,
        epoch_millis(item.ingested_at),
    )


def dead_letter_row(letter: DeadLetter) -> Row:
    return (
        letter.reason.value,
        letter.detail,
        letter.source,
        letter.partition,
        letter.offset,
        letter.index,
        letter.event_id,
        letter.rep_id,
        letter.payload_excerpt,
        int(letter.payload_truncated),
        epoch_millis(letter.rejected_at),
    )


def rep_row(rep: Rep, updated_at: datetime) -> Row:
    hired_at = rep.hired_at
    if hired_at is not None and not DATE32_MIN <= hired_at <= DATE32_MAX:
        # Stored as unknown rather than as ClickHouse's silent 1970-01-01, and said out loud.
        logger.warning(
            "rep %s: hired_at %s is outside %s..%s; storing it as unknown",
            rep.rep_id,
            hired_at,
            DATE32_MIN,
            DATE32_MAX,
        )
        hired_at = None
    return (
        rep.rep_id,
        rep.name,
        rep.team,
        rep.territory,
        rep.manager,
        hired_at,
        rep.quota_monthly,
        rep.mode.value,
        epoch_micros(updated_at),
    )


def deal_row(row: DealRow) -> Row:
    return (
        row.deal_id,
        row.rep_id,
        row.status,
        row.stage,
        epoch_millis(row.opened_at),
        None if row.closed_at is None else epoch_millis(row.closed_at),
        row.amount,
        int(row.amount_missing),
        row.account_id,
        row.product,
        row.cycle_days,
        row.stage_advancements,
        epoch_millis(row.last_event_at),
        list(row.events),
        epoch_micros(row.updated_at),
    )


def visit_row(row: VisitRow) -> Row:
    return (
        row.visit_id,
        row.rep_id,
        row.account_id,
        epoch_millis(row.checked_in_at),
        None if row.checked_out_at is None else epoch_millis(row.checked_out_at),
        row.duration_s,
        row.status,
        row.distance_m,
        row.radius_m,
        row.lat,
        row.lon,
        row.accuracy_m,
        int(row.check_in_missing),
        int(row.overlaps),
        int(row.impossible_travel),
        row.travel_speed_kmh,
        epoch_micros(row.updated_at),
    )


def daily_activity_row(row: DailyActivityRow) -> Row:
    return (row.rep_id, row.day, row.type, row.events, epoch_micros(row.updated_at))


ACCOUNT_COLUMNS = ("account_id", "name", "lat", "lon", "radius_m", "segment", "owner_rep_id", "updated_at")


def account_row(account: Account, updated_at: datetime) -> Row:
    return (
        account.account_id,
        account.name,
        account.lat,
        account.lon,
        account.radius_m,
        account.segment,
        account.owner_rep_id,
        epoch_micros(updated_at),
    )


def write_accounts(client: Client, database: str, accounts: Iterable[Account], updated_at: datetime) -> int:
    """Store account records (the newest ``updated_at`` of an account wins); returns how many.

    Accounts are reference data loaded by ``salespulse import accounts``, not a stream: they are
    written straight to the store of record, where workers read them (``stored_accounts``)."""
    validate_database_name(database)
    rows = [account_row(account, updated_at) for account in accounts]
    if rows:
        try:
            client.execute(
                f"INSERT INTO {database}.accounts ({', '.join(ACCOUNT_COLUMNS)}) VALUES",
                rows,
                types_check=False,
            )
        except Exception as exc:
            raise SinkError(f"{database}.accounts", exc) from exc
    return len(rows)


def connect(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    connect_timeout: float = 5.0,
) -> Client:
    """A connected ``clickhouse_driver.Client`` (checked with a round trip, so a bad address or
    password fails here with a useful message, not at the first flush).

    ``host``/``port`` override the settings, for an embedded server whose port is only known once
    it runs. No database is selected: migrations create it, and every query names it.
    """
    host = host or settings.clickhouse_host
    if host is None:
        raise ValueError(
            "no ClickHouse host: set SALESPULSE_CLICKHOUSE_HOST, or start the embedded ClickHouse "
            "and pass its address"
        )
    port = port or settings.clickhouse_port
    client = Client(
        host=host,
        port=port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        secure=settings.clickhouse_secure,
        connect_timeout=connect_timeout,
        send_receive_timeout=settings.clickhouse_query_timeout_s,
        client_name="salespulse",
        settings={"use_numpy": False},
    )
    try:
        client.execute("SELECT 1")
    except ServerException as exc:
        client.disconnect()
        if exc.code in _AUTH_ERROR_CODES:
            raise ClickHouseUnreachableError(
                f"ClickHouse at {host}:{port} refused user {settings.clickhouse_user!r}: {exc.message}; "
                "check SALESPULSE_CLICKHOUSE_USER and SALESPULSE_CLICKHOUSE_PASSWORD"
            ) from exc
        raise ClickHouseUnreachableError(f"ClickHouse at {host}:{port} failed a test query: {exc}") from exc
    except (NetworkError, SocketTimeoutError, OSError, EOFError) as exc:
        client.disconnect()
        raise ClickHouseUnreachableError(
            f"cannot reach ClickHouse at {host}:{port}: {exc}; is it running? "
            "set SALESPULSE_CLICKHOUSE_HOST and SALESPULSE_CLICKHOUSE_PORT to a running server "
            "(native protocol port, usually 9000; SALESPULSE_CLICKHOUSE_SECURE for TLS), "
            "or leave SALESPULSE_CLICKHOUSE_HOST unset to use the embedded one"
        ) from exc
    return client


class ClickHouseSink:
    """Writes a worker's batches to ClickHouse, one INSERT per table per flush.

    Not thread-safe: one sink per worker. ``flush`` blocks on network I/O, so async callers run
    it in an executor.
    """

    def __init__(self, client: Client, database: str) -> None:
        self._client = client
        self._database = validate_database_name(database)
        self._insert_sql = {
            table: f"INSERT INTO {database}.{table} ({', '.join(columns)}) VALUES"
            for table, columns in TABLE_COLUMNS.items()
        }
        # Rows are built in write(), so a caller reusing its batch objects cannot change what is
        # buffered, and flush() does nothing but I/O.
        self._pending: dict[str, list[Row]] = {table: [] for table in FLUSH_ORDER}
        self._closed = False

    @property
    def pending_rows(self) -> int:
        return sum(len(rows) for rows in self._pending.values())

    def write(self, batch: SinkBatch) -> None:
        if self._closed:
            raise RuntimeError("write() on a closed ClickHouseSink")
        self._pending["events"].extend(map(event_row, batch.events))
        self._pending["dead_letters"].extend(map(dead_letter_row, batch.dead_letters))
        self._pending["reps"].extend(rep_row(rep, updated_at) for rep, updated_at in batch.reps)
        self._pending["rep_daily_activity"].extend(map(daily_activity_row, batch.daily_activity))
        self._pending["deals"].extend(map(deal_row, batch.deals))
        self._pending["visits"].extend(map(visit_row, batch.visits))

    def flush(self) -> None:
        if self._closed:
            raise RuntimeError("flush() on a closed ClickHouseSink")
        for table, rows in self._pending.items():
            if not rows:
                continue
            started = time.perf_counter()
            try:
                self._client.execute(self._insert_sql[table], rows, types_check=False)
            except Exception as exc:
                # Whatever the cause (network, server, a value the driver cannot encode), the rows
                # stay buffered and the caller decides whether and when to retry.
                raise SinkError(f"{self._database}.{table}", exc) from exc
            # A table that made it is durable: a retry after a later table fails resends only the
            # rest. (Resending it would be harmless too; every table deduplicates by key.)
            self._pending[table] = []
            logger.debug(
                "inserted %d rows into %s.%s in %.1f ms",
                len(rows),
                self._database,
                table,
                (time.perf_counter() - started) * 1000,
            )

    def close(self) -> None:
        if self._closed:
            return
        if unflushed := self.pending_rows:
            logger.warning("closing the ClickHouse sink with %d unflushed rows; they are dropped", unflushed)
        self._pending = {table: [] for table in FLUSH_ORDER}
        self._closed = True
        self._client.disconnect()


def _id_table(name: str, column: str, values: Iterable[str]) -> dict[str, Any]:
    """An external table: a list of ids sent alongside the query as data, so it is bound (never
    SQL text) and not limited by max_query_size however many ids there are."""
    return {
        "name": name,
        "structure": [(column, "String")],
        "data": [{column: value} for value in dict.fromkeys(values)],
    }


class ClickHouseHistory:
    """Reads stored events back to rebuild per-rep state (see ``sinks.base.EventHistory``)."""

    def __init__(self, client: Client, database: str) -> None:
        self._client = client
        self._database = validate_database_name(database)

    def _read(self, table: str, sql: str, params: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        try:
            return self._client.execute(sql, params, **kwargs)
        except Exception as exc:
            # Whatever the cause (network, server), the batch that needed the history is not
            # processed; the caller decides whether and when to try again.
            raise HistoryReadError(f"{self._database}.{table}", exc) from exc

    def rep_history(
        self, rep_ids: list[str], since: datetime, types: Collection[str] | None = None
    ) -> dict[str, list[RepHistoryEntry]]:
        """Every stored event of ``rep_ids`` with ``occurred_at >= since`` (of ``types``, when
        given), each once, oldest first. Every requested rep is a key, with an empty list when it
        has no events."""
        history: dict[str, list[RepHistoryEntry]] = {rep_id: [] for rep_id in rep_ids}
        if not history:
            return history
        # Stored times are whole milliseconds: ``>= since`` is ``>= since rounded up to one``.
        since_ms = -((_EPOCH - since) // _MILLISECOND)
        params: dict[str, Any] = {"since_ms": since_ms}
        # A rep's deal stream first seen after weeks of activities needs only its deal events: read
        # in ClickHouse, not thousands of activity rows dropped in Python (12% of a worker's time
        # in the bench before).
        type_filter = ""
        if types is not None:
            type_filter = "AND type IN %(types)s "
            params["types"] = sorted(types)
        rows = self._read(
            "events",
            "SELECT rep_id, event_id, type, occurred_at, "
            "if(type = 'call', JSONExtractString(payload, 'outcome'), '') "
            f"FROM {self._database}.events FINAL "
            "WHERE rep_id IN (SELECT rep_id FROM wanted_reps) "
            "AND occurred_at >= fromUnixTimestamp64Milli(toInt64(%(since_ms)s), 'UTC') "
            f"{type_filter}"
            "ORDER BY rep_id, occurred_at, event_id",
            params,
            external_tables=[_id_table("wanted_reps", "rep_id", history)],
        )
        for rep_id, event_id, event_type, occurred_at, outcome in rows:
            # The driver returns pytz UTC; normalise to the stdlib UTC used everywhere else.
            entry = RepHistoryEntry(event_id, event_type, occurred_at.replace(tzinfo=UTC), outcome or None)
            history[rep_id].append(entry)
        return history

    def rep_deal_events(self, rep_ids: list[str], closed_since: datetime) -> dict[str, list[Event]]:
        """See ``sinks.base.EventHistory.rep_deal_events``. A deal belongs to the rep its latest
        event names (the deals table's rep_id), with all its events."""
        found: dict[str, list[Event]] = {rep_id: [] for rep_id in rep_ids}
        if not found:
            return found
        rows = self._read(
            "deals",
            f"SELECT rep_id, events FROM {self._database}.deals FINAL "
            "WHERE rep_id IN (SELECT rep_id FROM wanted_reps) "
            "AND (closed_at IS NULL OR closed_at >= fromUnixTimestamp64Milli(toInt64(%(since_ms)s), 'UTC'))",
            {"since_ms": epoch_millis(closed_since)},
            external_tables=[_id_table("wanted_reps", "rep_id", found)],
        )
        for rep_id, payloads in rows:
            found[rep_id].extend(SALES_EVENT_ADAPTER.validate_json(payload) for payload in payloads)
        return found

    def deal_events(self, deal_ids: list[str]) -> list[Event]:
        """Read by the deals table's primary key: one row per deal holds all its events."""
        if not deal_ids:
            return []
        rows = self._read(
            "deals",
            f"SELECT events FROM {self._database}.deals FINAL "
            "WHERE deal_id IN (SELECT deal_id FROM wanted_deals)",
            external_tables=[_id_table("wanted_deals", "deal_id", deal_ids)],
        )
        return [SALES_EVENT_ADAPTER.validate_json(payload) for (payloads,) in rows for payload in payloads]

    def stored_payloads_unlike(self, candidates: list[tuple[str, bytes]]) -> dict[str, bytes]:
        """See ``sinks.base.EventHistory.stored_payloads_unlike``. The comparison runs in ClickHouse
        on SHA-256 digests, so only the payloads that differ travel back."""
        if not candidates:
            return {}
        rows = self._read(
            "events",
            "SELECT DISTINCT stored.event_id, stored.payload "
            "FROM (SELECT event_id, digest FROM candidate_digests) AS candidate "
            f"INNER JOIN (SELECT event_id, any(payload) AS payload FROM {self._database}.events "
            "WHERE event_id IN (SELECT event_id FROM candidate_digests) GROUP BY event_id) AS stored "
            "ON stored.event_id = candidate.event_id "
            "WHERE lower(hex(SHA256(stored.payload))) != candidate.digest",
            external_tables=[
                {
                    "name": "candidate_digests",
                    "structure": [("event_id", "String"), ("digest", "String")],
                    "data": [
                        {"event_id": event_id, "digest": hashlib.sha256(payload).hexdigest()}
                        for event_id, payload in dict.fromkeys(candidates)
                    ],
                }
            ],
        )
        return {event_id: payload.encode("utf-8") for event_id, payload in rows}

    def accounts(self) -> dict[str, Account]:
        """See ``sinks.base.VisitHistory.accounts``."""
        rows = self._read(
            "accounts",
            ACCOUNT_SELECT.format(database=self._database),
        )
        return {row[0]: account_from_row(row) for row in rows}

    def rep_visit_events(self, rep_ids: list[str], since: datetime) -> dict[str, list[Event]]:
        """See ``sinks.base.VisitHistory.rep_visit_events``."""
        found: dict[str, list[Event]] = {rep_id: [] for rep_id in rep_ids}
        if not found:
            return found
        since_ms = -((_EPOCH - since) // _MILLISECOND)
        rows = self._read(
            "events",
            f"SELECT rep_id, payload FROM {self._database}.events FINAL "
            "WHERE rep_id IN (SELECT rep_id FROM wanted_reps) AND type IN ('visit', 'visit_check_out') "
            "AND occurred_at >= fromUnixTimestamp64Milli(toInt64(%(since_ms)s), 'UTC') "
            "ORDER BY occurred_at, event_id",
            {"since_ms": since_ms},
            external_tables=[_id_table("wanted_reps", "rep_id", found)],
        )
        for rep_id, payload in rows:
            found[rep_id].append(SALES_EVENT_ADAPTER.validate_json(payload))
        return found

    def visit_check_ins(self, visit_ids: list[str]) -> list[Event]:
        """See ``sinks.base.VisitHistory.visit_check_ins``: read by the primary key."""
        if not visit_ids:
            return []
        rows = self._read(
            "events",
            f"SELECT payload FROM {self._database}.events FINAL "
            "WHERE event_id IN (SELECT event_id FROM wanted_events) AND type = 'visit'",
            external_tables=[_id_table("wanted_events", "event_id", visit_ids)],
        )
        return [SALES_EVENT_ADAPTER.validate_json(payload) for (payload,) in rows]

    def visit_verifications(self, visit_ids: list[str]) -> dict[str, tuple[str, float | None]]:
        """See ``sinks.base.VisitHistory.visit_verifications``."""
        if not visit_ids:
            return {}
        rows = self._read(
            "visits",
            f"SELECT visit_id, status, distance_m FROM {self._database}.visits FINAL "
            "WHERE visit_id IN (SELECT visit_id FROM wanted_visits)",
            external_tables=[_id_table("wanted_visits", "visit_id", visit_ids)],
        )
        return {visit_id: (status, distance) for visit_id, status, distance in rows}

    def known_event_ids(self, event_ids: list[str]) -> set[str]:
        """Which of ``event_ids`` are already stored. No FINAL: a duplicate row cannot change
        whether an id exists, and without it the primary key (event_id) narrows the read."""
        if not event_ids:
            return set()
        rows = self._read(
            "events",
            f"SELECT DISTINCT event_id FROM {self._database}.events "
            "WHERE event_id IN (SELECT event_id FROM wanted_events)",
            external_tables=[_id_table("wanted_events", "event_id", event_ids)],
        )
        return {event_id for (event_id,) in rows}
