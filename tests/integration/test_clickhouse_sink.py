"""The ClickHouse sink, migrations, history and read helpers against the real embedded server.

Each test gets its own database, so tests are independent and can run in any order. Every
insert below is a separate part, so "written twice" really is on disk twice until a merge: the
assertions with FINAL are what prove the deduplication, and the raw counts prove it was needed.
"""

from __future__ import annotations

import logging
import re
import socket
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from clickhouse_driver import Client
from pydantic import SecretStr

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import EVENT_TYPES, CallEvent, DealWonEvent, EmailEvent, VisitEvent
from schemas.reps import UNASSIGNED, ManagementMode, Rep
from schemas.settings import Settings
from schemas.wire import Event, MessageOrigin, event_to_json_dict
from sinks.base import DailyActivityRow, EventHistory, IngestedEvent, RepHistoryEntry, Sink, SinkBatch
from sinks.clickhouse import ClickHouseHistory, ClickHouseSink, connect
from sinks.errors import ClickHouseUnreachableError, MigrationError, SinkError
from sinks.migrate import Migration, apply_migrations, checksum, load_migrations, render, split_statements
from sinks.queries import activity_by_rep, dead_letter_count, event_totals

integration = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
INGESTED_AT = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)
ORIGIN = MessageOrigin("salespulse.activities", 3, 1200)
HOSTILE = "'; DROP TABLE x; --"
TABLES = [
    "accounts",
    "activity_hourly",
    "activity_hourly_mv",
    "alerts",
    "dead_letter_replays",
    "dead_letters",
    "deals",
    "events",
    "ingest_tokens",
    "rep_daily_activity",
    "rep_modes",
    "reps",
    "schema_migrations",
    "silences",
    "v_alerts",
    "v_deals",
    "v_field_visits",
    "v_rep_daily_activity",
    "v_rep_daily_outcomes",
    "v_rep_hourly_activity",
    "v_visits",
    "visits",
]


@pytest.fixture
def database(clickhouse_client: Client) -> Iterator[str]:
    name = f"sinktest_{uuid.uuid4().hex[:12]}"
    yield name
    clickhouse_client.execute(f"DROP DATABASE IF EXISTS {name}")


@pytest.fixture
def migrated(clickhouse_client: Client, database: str) -> str:
    apply_migrations(clickhouse_client, database)
    return database


def ingested(event: Event, origin: MessageOrigin = ORIGIN) -> IngestedEvent:
    return IngestedEvent(event, origin, INGESTED_AT)


def call(event_id: str, rep_id: str, at: datetime) -> CallEvent:
    return CallEvent(event_id=event_id, rep_id=rep_id, type="call", occurred_at=at)


def dead_letter(offset: int | None, index: int | None, rejected_at: datetime) -> DeadLetter:
    return DeadLetter(
        reason=DeadLetterReason.INVALID,
        detail="occurred_at: Field required",
        source="salespulse.activities",
        partition=None if offset is None else 1,
        offset=offset,
        index=index,
        event_id=None if offset is None else "bad-1",
        rep_id="rep-1",
        payload_excerpt='{"type": "call"}',
        payload_truncated=offset is None,
        rejected_at=rejected_at,
    )


def scalar(client: Client, sql: str) -> Any:
    ((value,),) = client.execute(sql)
    return value


# -- migrations: the pure parts ------------------------------------------------------------------


def test_split_statements_ignores_semicolons_in_strings_and_comments() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory;
    /* block; comment */
    INSERT INTO a VALUES ('it''s; fine'), ('back\\'slash;');
    SELECT "odd;name", `odd;too` FROM a
    ;
    -- trailing comment only; nothing to run
    """
    assert split_statements(script) == [
        "-- a comment; with a semicolon\n    CREATE TABLE a (s String DEFAULT 'x;y') ENGINE = Memory",
        "/* block; comment */\n    INSERT INTO a VALUES ('it''s; fine'), ('back\\'slash;')",
        'SELECT "odd;name", `odd;too` FROM a',
    ]


def test_split_statements_refuses_unterminated_quotes() -> None:
    with pytest.raises(MigrationError, match="unterminated ' quote"):
        split_statements("SELECT 'oops;")


# Every migration this version ships, in order (a shipped file never changes; new ones are added).
SHIPPED_MIGRATIONS = [
    (1, "events"),
    (2, "rep_daily_activity"),
    (3, "reps"),
    (4, "dead_letters"),
    (5, "deals"),
    (6, "alerts"),
    (7, "rep_modes"),
    (8, "silences"),
    (9, "dead_letter_replays"),
    (10, "analytics_views"),
    (11, "activity_hourly"),
    (12, "accounts"),
    (13, "visits"),
    (20, "ingest_tokens"),
]


def test_shipped_migrations_are_ordered_and_use_the_placeholder() -> None:
    migrations = load_migrations()
    assert [(m.version, m.name) for m in migrations] == SHIPPED_MIGRATIONS
    for migration in migrations:
        assert "{database}." in migration.sql
        # Re-runnable: DDL says IF NOT EXISTS; a backfill INSERT must be idempotent by construction
        # (0011 inserts sets of event ids, which a second run cannot change).
        for statement in split_statements(migration.sql):
            code = re.sub(r"^\s*--.*$", "", statement, flags=re.MULTILINE).strip()
            assert "IF NOT EXISTS" in code or code.startswith("INSERT INTO"), statement


def test_render_refuses_a_database_name_that_is_not_an_identifier() -> None:
    with pytest.raises(ValueError, match="invalid ClickHouse database name"):
        render("CREATE DATABASE {database}", "x; DROP DATABASE y")


# -- migrations against the server -------------------------------------------------------------------


@integration
def test_migrations_apply_once_then_nothing(clickhouse_client: Client, database: str) -> None:
    first = apply_migrations(clickhouse_client, database)
    assert [(m.version, m.name) for m in first] == SHIPPED_MIGRATIONS
    assert [m.checksum for m in first] == [m.checksum for m in load_migrations()]
    assert apply_migrations(clickhouse_client, database) == []
    assert sorted(t for (t,) in clickhouse_client.execute(f"SHOW TABLES FROM {database}")) == TABLES
    assert (
        clickhouse_client.execute(
            f"SELECT version, name FROM {database}.schema_migrations FINAL ORDER BY version"
        )
        == SHIPPED_MIGRATIONS
    )


@integration
def test_a_new_migration_applies_alone_and_may_hold_several_statements(
    clickhouse_client: Client, database: str
) -> None:
    apply_migrations(clickhouse_client, database)
    sql = (
        "CREATE TABLE IF NOT EXISTS {database}.notes (note String) ENGINE = MergeTree ORDER BY note;\n"
        "-- a second statement; the splitter must not cut here\n"
        "ALTER TABLE {database}.notes ADD COLUMN IF NOT EXISTS tag String DEFAULT 'a;b';\n"
    )
    next_version = len(load_migrations()) + 1
    extra = Migration(next_version, "notes", sql, checksum(sql))
    applied = apply_migrations(clickhouse_client, database, migrations=[*load_migrations(), extra])
    assert [(m.version, m.name) for m in applied] == [(next_version, "notes")]
    assert clickhouse_client.execute(
        f"SELECT name, default_expression FROM system.columns "
        f"WHERE database = '{database}' AND table = 'notes' ORDER BY position"
    ) == [
        ("note", ""),
        ("tag", "'a;b'"),
    ]


@integration
def test_a_changed_applied_migration_is_refused_before_anything_runs(
    clickhouse_client: Client, database: str
) -> None:
    apply_migrations(clickhouse_client, database)
    shipped = load_migrations()
    edited_sql = shipped[1].sql + "\n-- an innocent-looking edit\n"
    edited = replace(shipped[1], sql=edited_sql, checksum=checksum(edited_sql))
    pending_sql = "CREATE TABLE IF NOT EXISTS {database}.later (x UInt8) ENGINE = MergeTree ORDER BY x"
    pending = Migration(len(shipped) + 1, "later", pending_sql, checksum(pending_sql))

    with pytest.raises(
        MigrationError, match=r"0002_rep_daily_activity\.sql was changed after it was applied"
    ):
        apply_migrations(clickhouse_client, database, migrations=[shipped[0], edited, *shipped[2:], pending])
    assert "later" not in {t for (t,) in clickhouse_client.execute(f"SHOW TABLES FROM {database}")}


@integration
def test_a_failing_migration_names_the_file_and_is_not_recorded(
    clickhouse_client: Client, database: str
) -> None:
    broken_sql = "CREATE TABLE IF NOT EXISTS {database}.t (x UInt8) ENGINE = MergeTree ORDER BY x;\nSELEC 1;"
    broken = Migration(1, "broken", broken_sql, checksum(broken_sql))
    with pytest.raises(MigrationError, match=r"0001_broken\.sql failed at statement 2 of 2"):
        apply_migrations(clickhouse_client, database, migrations=[broken])
    assert clickhouse_client.execute(f"SELECT count() FROM {database}.schema_migrations") == [(0,)]


# -- connecting ----------------------------------------------------------------------------------


@integration
def test_connect_reaches_the_server_without_selecting_a_database(
    clickhouse_endpoint: tuple[str, int],
) -> None:
    host, port = clickhouse_endpoint
    client = connect(
        Settings(clickhouse_host=host, clickhouse_port=port, clickhouse_database="not_created_yet")
    )
    try:
        assert client.execute("SELECT currentDatabase() != 'not_created_yet'") == [(1,)]
    finally:
        client.disconnect()


def test_connect_to_nothing_says_what_to_do_and_hides_the_password() -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        clickhouse_host="127.0.0.1", clickhouse_port=port, clickhouse_password=SecretStr("hunter2")
    )
    with pytest.raises(ClickHouseUnreachableError) as raised:
        connect(settings, connect_timeout=2)
    message = str(raised.value)
    assert message.startswith(f"cannot reach ClickHouse at 127.0.0.1:{port}: ")
    assert "is it running? set SALESPULSE_CLICKHOUSE_HOST" in message
    assert "hunter2" not in message


def test_connect_needs_a_host() -> None:
    with pytest.raises(ValueError, match="no ClickHouse host"):
        connect(Settings(clickhouse_host=None))


# -- the sink --------------------------------------------------------------------------------------


@integration
def test_both_adapters_satisfy_the_interfaces(clickhouse_client: Client, migrated: str) -> None:
    sink: Sink = ClickHouseSink(clickhouse_client, migrated)
    history: EventHistory = ClickHouseHistory(clickhouse_client, migrated)
    assert sink is not None
    assert history is not None


@integration
def test_events_are_stored_verbatim(clickhouse_client: Client, migrated: str) -> None:
    won = DealWonEvent(
        event_id="d-1",
        rep_id="rep-1",
        type="deal_won",
        occurred_at=datetime(2026, 3, 2, 10, 30, 15, 123456, tzinfo=UTC),
        account_id="acct-9",
        deal_id="D-1",
        amount=Decimal("1234.50"),
    )
    unplaced = call("c-1", "rep-2", T0)
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(SinkBatch(events=[ingested(won), ingested(unplaced, MessageOrigin("file:demo.jsonl"))]))
    sink.flush()

    rows = clickhouse_client.execute(f"SELECT * FROM {migrated}.events FINAL ORDER BY event_id")
    assert rows == [
        (
            "c-1",
            "call",
            "rep-2",
            None,
            None,
            T0,
            None,
            orjson.dumps(event_to_json_dict(unplaced)).decode(),
            "file:demo.jsonl",
            None,
            None,
            INGESTED_AT,
        ),
        (
            "d-1",
            "deal_won",
            "rep-1",
            "acct-9",
            "D-1",
            datetime(2026, 3, 2, 10, 30, 15, 123000, tzinfo=UTC),  # DateTime64(3): milliseconds
            Decimal("1234.50"),
            orjson.dumps(event_to_json_dict(won)).decode(),
            "salespulse.activities",
            3,
            1200,
            INGESTED_AT,
        ),
    ]


@integration
def test_a_redelivered_batch_counts_once(clickhouse_client: Client, migrated: str) -> None:
    events: list[Event] = [call(f"c-{i}", f"rep-{i % 3}", T0 + timedelta(minutes=i)) for i in range(30)]
    events += [EmailEvent(event_id=f"m-{i}", rep_id="rep-0", type="email", occurred_at=T0) for i in range(5)]
    batch = SinkBatch(events=[ingested(e) for e in events])
    sink = ClickHouseSink(clickhouse_client, migrated)
    for _ in range(2):  # the worker crashed after the flush and before the commit: same batch again
        sink.write(batch)
        sink.flush()

    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.events") == 70
    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.events FINAL") == 35
    assert scalar(clickhouse_client, f"SELECT uniqExact(event_id) FROM {migrated}.events") == 35
    assert event_totals(clickhouse_client, migrated) == {
        **dict.fromkeys(EVENT_TYPES, 0),
        "call": 30,
        "email": 5,
    }


@integration
def test_daily_activity_rows_are_replaced_by_newer_absolute_counts(
    clickhouse_client: Client, migrated: str
) -> None:
    day = date(2026, 3, 2)
    sink = ClickHouseSink(clickhouse_client, migrated)
    for count, written_at in [(3, T0), (5, T0 + timedelta(microseconds=1)), (4, T0 - timedelta(hours=1))]:
        # The last write is a stale redelivery: an older updated_at must lose however late it lands.
        sink.write(
            SinkBatch(
                daily_activity=[
                    DailyActivityRow("rep-1", day, "call", count, written_at),
                    DailyActivityRow("rep-1", day, "email", 1, written_at),
                ]
            )
        )
        sink.flush()

    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.rep_daily_activity") == 6
    assert clickhouse_client.execute(
        f"SELECT rep_id, day, type, events, updated_at FROM {migrated}.rep_daily_activity FINAL ORDER BY type"
    ) == [
        ("rep-1", day, "call", 5, T0 + timedelta(microseconds=1)),
        ("rep-1", day, "email", 1, T0 + timedelta(microseconds=1)),
    ]


@integration
def test_hostile_strings_are_stored_and_read_back_verbatim(clickhouse_client: Client, migrated: str) -> None:
    odd = "back\\slash \"quote\" 'single' \t tab \n newline ünïcødé 🚀 {database} %(x)s"
    rep = Rep(rep_id=HOSTILE, name=HOSTILE, team=HOSTILE, territory=odd, manager=odd)
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(
        SinkBatch(
            events=[ingested(call("e-1", HOSTILE, T0))],
            daily_activity=[DailyActivityRow(HOSTILE, T0.date(), "call", 1, T0)],
            reps=[(rep, T0)],
        )
    )
    sink.flush()

    assert clickhouse_client.execute(
        f"SELECT rep_id, name, team, territory, manager FROM {migrated}.reps FINAL"
    ) == [(HOSTILE, HOSTILE, HOSTILE, odd, odd)]
    [row] = activity_by_rep(clickhouse_client, migrated)
    assert (row["rep_id"], row["name"], row["team"], row["territory"], row["call"]) == (
        HOSTILE,
        HOSTILE,
        HOSTILE,
        odd,
        1,
    )
    history = ClickHouseHistory(clickhouse_client, migrated)
    assert history.rep_history([HOSTILE], T0) == {HOSTILE: [RepHistoryEntry("e-1", "call", T0)]}
    assert history.known_event_ids(["e-1", HOSTILE]) == {"e-1"}
    assert sorted(t for (t,) in clickhouse_client.execute(f"SHOW TABLES FROM {migrated}")) == TABLES


@integration
def test_reps_newest_version_wins_and_every_field_round_trips(
    clickhouse_client: Client, migrated: str
) -> None:
    old = Rep(rep_id="rep-1", name="Ann Lee", team="east", territory="ny")
    new = Rep(
        rep_id="rep-1",
        name="Ann Lee",
        team="west",
        territory="sf",
        manager="Bo Chen",
        hired_at=date(1968, 9, 1),  # before 1970: why the column is Date32
        quota_monthly=Decimal("25000.00"),
        mode=ManagementMode.SEASONED,
    )
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(SinkBatch(reps=[(new, T0 + timedelta(days=1))]))
    sink.flush()
    sink.write(SinkBatch(reps=[(old, T0)]))  # an older version arriving late
    sink.flush()

    assert clickhouse_client.execute(f"SELECT * FROM {migrated}.reps FINAL") == [
        (
            "rep-1",
            "Ann Lee",
            "west",
            "sf",
            "Bo Chen",
            date(1968, 9, 1),
            Decimal("25000.00"),
            "seasoned",
            T0 + timedelta(days=1),
        )
    ]


@integration
def test_a_hire_date_clickhouse_cannot_hold_is_stored_as_unknown_with_a_warning(
    clickhouse_client: Client, migrated: str, caplog: pytest.LogCaptureFixture
) -> None:
    rep = Rep(rep_id="rep-1", name="Old Timer", team="east", territory="ny", hired_at=date(1850, 1, 1))
    sink = ClickHouseSink(clickhouse_client, migrated)
    with caplog.at_level(logging.WARNING, logger="sinks.clickhouse"):
        sink.write(SinkBatch(reps=[(rep, T0)]))
    sink.flush()
    assert "hired_at 1850-01-01 is outside" in caplog.text
    assert clickhouse_client.execute(f"SELECT hired_at FROM {migrated}.reps FINAL") == [(None,)]


@integration
def test_a_redelivered_dead_letter_is_stored_once(clickhouse_client: Client, migrated: str) -> None:
    sink = ClickHouseSink(clickhouse_client, migrated)
    first = [dead_letter(41, 0, T0), dead_letter(41, 1, T0), dead_letter(None, None, T0)]
    again = [dead_letter(41, 0, T0 + timedelta(hours=1)), dead_letter(None, None, T0 + timedelta(hours=1))]
    for letters in (first, again):
        sink.write(SinkBatch(dead_letters=letters))
        sink.flush()

    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.dead_letters") == 5
    assert dead_letter_count(clickhouse_client, migrated) == 3
    assert clickhouse_client.execute(
        f"SELECT reason, source, source_partition, source_offset, batch_index, event_id, rep_id, "
        f"payload_excerpt, payload_truncated, rejected_at FROM {migrated}.dead_letters FINAL "
        "ORDER BY source_offset NULLS LAST, batch_index"
    ) == [
        (
            "invalid",
            "salespulse.activities",
            1,
            41,
            0,
            "bad-1",
            "rep-1",
            '{"type": "call"}',
            0,
            T0 + timedelta(hours=1),
        ),
        ("invalid", "salespulse.activities", 1, 41, 1, "bad-1", "rep-1", '{"type": "call"}', 0, T0),
        (
            "invalid",
            "salespulse.activities",
            None,
            None,
            None,
            None,
            "rep-1",
            '{"type": "call"}',
            1,
            T0 + timedelta(hours=1),
        ),
    ]


@integration
def test_a_failed_flush_keeps_what_was_not_written_and_the_retry_completes_it(
    clickhouse_client: Client, migrated: str
) -> None:
    clickhouse_client.execute(f"DROP TABLE {migrated}.dead_letters")  # an outage of one table
    batch = SinkBatch(
        events=[ingested(call("c-1", "rep-1", T0))],
        dead_letters=[dead_letter(7, None, T0)],
        daily_activity=[DailyActivityRow("rep-1", T0.date(), "call", 1, T0)],
    )
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(batch)

    with pytest.raises(
        SinkError, match=rf"writing to {migrated}\.dead_letters failed: ServerException"
    ) as raised:
        sink.flush()
    assert raised.value.table == f"{migrated}.dead_letters"
    # The aggregate row made it before the failure; the dead letter and the raw events, which go
    # last because a stored event tells a restarted worker that its aggregates are stored, wait.
    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.rep_daily_activity") == 1
    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.events") == 0
    assert sink.pending_rows == 2

    for statement in split_statements(render(load_migrations()[3].sql, migrated)):
        clickhouse_client.execute(statement)
    sink.flush()

    assert sink.pending_rows == 0
    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.events") == 1
    assert dead_letter_count(clickhouse_client, migrated) == 1
    assert scalar(clickhouse_client, f"SELECT count() FROM {migrated}.rep_daily_activity") == 1


@integration
def test_close_drops_the_buffer_and_disconnects(clickhouse_endpoint: tuple[str, int], migrated: str) -> None:
    host, port = clickhouse_endpoint
    client = connect(Settings(clickhouse_host=host, clickhouse_port=port))
    sink = ClickHouseSink(client, migrated)
    sink.write(SinkBatch(events=[ingested(call("c-1", "rep-1", T0))]))
    sink.close()
    assert sink.pending_rows == 0
    assert not client.connection.connected
    with pytest.raises(RuntimeError, match="closed"):
        sink.write(SinkBatch())


# -- history -----------------------------------------------------------------------------------


@integration
def test_rep_history_is_one_copy_per_event_since_the_cutoff(clickhouse_client: Client, migrated: str) -> None:
    cutoff = T0 + timedelta(milliseconds=5)
    events: list[Event] = [
        call("before", "rep-1", T0 + timedelta(milliseconds=4)),
        call("at", "rep-1", cutoff),
        VisitEvent(event_id="later", rep_id="rep-1", type="visit", occurred_at=T0 + timedelta(days=40)),
        call("other", "rep-2", T0 + timedelta(hours=1)),
        call("not-asked", "rep-3", T0 + timedelta(hours=1)),
    ]
    sink = ClickHouseSink(clickhouse_client, migrated)
    for _ in range(2):
        sink.write(SinkBatch(events=[ingested(e) for e in events]))
        sink.flush()

    history = ClickHouseHistory(clickhouse_client, migrated)
    assert history.rep_history(["rep-1", "rep-2", "rep-9"], cutoff) == {
        "rep-1": [
            RepHistoryEntry("at", "call", cutoff),
            RepHistoryEntry("later", "visit", T0 + timedelta(days=40)),
        ],
        "rep-2": [RepHistoryEntry("other", "call", T0 + timedelta(hours=1))],
        "rep-9": [],
    }
    # Stored times are whole milliseconds: a cutoff a microsecond later excludes "at".
    assert [
        e.event_id for e in history.rep_history(["rep-1"], cutoff + timedelta(microseconds=1))["rep-1"]
    ] == ["later"]
    assert history.rep_history([], cutoff) == {}
    # Only the types asked for (a rep's deal stream needs no activity rows).
    assert history.rep_history(["rep-1", "rep-2"], cutoff, types={"visit"}) == {
        "rep-1": [RepHistoryEntry("later", "visit", T0 + timedelta(days=40))],
        "rep-2": [],
    }


@integration
def test_known_event_ids_handles_many_ids_in_one_query(clickhouse_client: Client, migrated: str) -> None:
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(SinkBatch(events=[ingested(call(f"c-{i}", "rep-1", T0)) for i in range(0, 50_000, 2)]))
    sink.flush()
    asked = [f"c-{i}" for i in range(50_000)]  # far more text than max_query_size would allow inline
    assert ClickHouseHistory(clickhouse_client, migrated).known_event_ids(asked) == {
        f"c-{i}" for i in range(0, 50_000, 2)
    }
    assert ClickHouseHistory(clickhouse_client, migrated).known_event_ids([]) == set()


# -- read helpers ------------------------------------------------------------------------------------


@integration
def test_activity_by_rep_is_exact(clickhouse_client: Client, migrated: str) -> None:
    ann = Rep(rep_id="rep-ann", name="Ann Lee", team="east", territory="ny")
    bo = Rep(rep_id="rep-bo", name="Bo Chen", team="west", territory="sf")  # idle: listed with zeros
    march_2, march_3, march_9 = date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 9)
    daily = [
        DailyActivityRow("rep-ann", march_2, "call", 2, T0),
        DailyActivityRow("rep-ann", march_2, "call", 4, T0 + timedelta(seconds=1)),  # replaces 2
        DailyActivityRow("rep-ann", march_3, "call", 1, T0),
        DailyActivityRow("rep-ann", march_3, "deal_won", 1, T0),
        DailyActivityRow("rep-new", march_3, "email", 3, T0),  # no rep record yet
        DailyActivityRow("rep-new", march_9, "email", 2, T0),
    ]
    events: list[Event] = [
        call("a1", "rep-ann", datetime(2026, 3, 2, 8, 0, tzinfo=UTC)),
        call("a2", "rep-ann", datetime(2026, 3, 3, 17, 45, 1, 250000, tzinfo=UTC)),
        EmailEvent(
            event_id="n1", rep_id="rep-new", type="email", occurred_at=datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
        ),
        EmailEvent(
            event_id="n2", rep_id="rep-new", type="email", occurred_at=datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
        ),
    ]
    sink = ClickHouseSink(clickhouse_client, migrated)
    for _ in range(2):  # everything delivered twice
        sink.write(
            SinkBatch(events=[ingested(e) for e in events], daily_activity=daily, reps=[(ann, T0), (bo, T0)])
        )
        sink.flush()

    zeros = dict.fromkeys(EVENT_TYPES, 0)
    assert activity_by_rep(clickhouse_client, migrated) == [
        {
            "rep_id": "rep-ann",
            "name": "Ann Lee",
            "team": "east",
            "territory": "ny",
            "total_events": 6,
            **zeros,
            "call": 5,
            "deal_won": 1,
            "last_event_at": datetime(2026, 3, 3, 17, 45, 1, 250000, tzinfo=UTC),
        },
        {
            "rep_id": "rep-bo",
            "name": "Bo Chen",
            "team": "west",
            "territory": "sf",
            "total_events": 0,
            **zeros,
            "last_event_at": None,
        },
        {
            "rep_id": "rep-new",
            "name": None,
            "team": UNASSIGNED,
            "territory": UNASSIGNED,
            "total_events": 5,
            **zeros,
            "email": 5,
            "last_event_at": datetime(2026, 3, 9, 9, 0, tzinfo=UTC),
        },
    ]

    # Both ends inclusive, in UTC days.
    only_march_3 = activity_by_rep(clickhouse_client, migrated, since=march_3, until=march_3)
    assert [
        (r["rep_id"], r["team"], r["total_events"], r["call"], r["email"], r["last_event_at"])
        for r in only_march_3
    ] == [
        ("rep-ann", "east", 2, 1, 0, datetime(2026, 3, 3, 17, 45, 1, 250000, tzinfo=UTC)),
        ("rep-bo", "west", 0, 0, 0, None),
        ("rep-new", UNASSIGNED, 3, 0, 3, datetime(2026, 3, 3, 9, 0, tzinfo=UTC)),
    ]
    assert [
        (r["rep_id"], r["total_events"]) for r in activity_by_rep(clickhouse_client, migrated, since=march_9)
    ] == [
        ("rep-ann", 0),
        ("rep-bo", 0),
        ("rep-new", 2),
    ]


@integration
def test_an_unknown_rep_moves_to_its_team_once_the_record_arrives(
    clickhouse_client: Client, migrated: str
) -> None:
    sink = ClickHouseSink(clickhouse_client, migrated)
    sink.write(SinkBatch(daily_activity=[DailyActivityRow("rep-x", T0.date(), "visit", 2, T0)]))
    sink.flush()
    [before] = activity_by_rep(clickhouse_client, migrated)
    assert (before["name"], before["team"], before["territory"], before["visit"]) == (
        None,
        "unassigned",
        "unassigned",
        2,
    )

    sink.write(SinkBatch(reps=[(Rep(rep_id="rep-x", name="Xi", team="north", territory="mn"), T0)]))
    sink.flush()
    [after] = activity_by_rep(clickhouse_client, migrated)
    assert (after["name"], after["team"], after["territory"], after["visit"]) == ("Xi", "north", "mn", 2)


@integration
def test_empty_database_reads_as_empty(clickhouse_client: Client, migrated: str) -> None:
    assert activity_by_rep(clickhouse_client, migrated) == []
    assert event_totals(clickhouse_client, migrated) == dict.fromkeys(EVENT_TYPES, 0)
    assert dead_letter_count(clickhouse_client, migrated) == 0
