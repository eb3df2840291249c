"""Versioned, idempotent ClickHouse migrations.

Migrations are the ``NNNN_name.sql`` files shipped in ``sinks/migrations`` (package data). Each
file may hold several statements separated by ``;`` and refers to the database as
``{database}``. They are applied in version order and recorded in ``schema_migrations`` with a
checksum; an applied file must never change (add a new migration instead), and the runner
refuses to continue if one did.

Every statement is written to be re-runnable (``IF NOT EXISTS``), because ClickHouse DDL is not
transactional: a run interrupted between a statement and its record, or two workers starting at
once, simply applies the same statements again.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from importlib.resources.abc import Traversable

from clickhouse_driver import Client

from sinks.errors import MigrationError

logger = logging.getLogger(__name__)

# The same rule Settings.clickhouse_database enforces. Checked again here because the name is
# spliced into DDL as an identifier (identifiers cannot be bound parameters).
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
PLACEHOLDER = "{database}"

# The runner's own bookkeeping lives here rather than in a migration file: the runner must read
# it before it can know which migrations are applied, so no migration may change it.
_SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS {database}.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str
    checksum: str

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


def _utc_now() -> datetime:
    return datetime.now(UTC)


def validate_database_name(database: str) -> str:
    if not DATABASE_NAME.fullmatch(database):
        raise ValueError(
            f"invalid ClickHouse database name {database!r}: use letters, digits and underscores, "
            "not starting with a digit"
        )
    return database


def checksum(sql: str) -> str:
    # Line endings are normalised so a checkout with CRLF does not look like an edited migration.
    return hashlib.sha256(sql.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migrations shipped with the package (or in ``directory``), in version order."""
    root = directory if directory is not None else resources.files("sinks") / "migrations"
    migrations: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = MIGRATION_FILE.fullmatch(entry.name)
        if match is None:
            # A misnamed file would otherwise be skipped without anyone noticing.
            raise MigrationError(
                f"migration file {entry.name!r} is not named NNNN_lowercase_name.sql; rename it"
            )
        sql = entry.read_text(encoding="utf-8")
        migration = Migration(int(match["version"]), match["name"], sql, checksum(sql))
        if migration.version in migrations:
            raise MigrationError(
                f"two migrations have version {migration.version:04d}: "
                f"{migrations[migration.version].filename} and {migration.filename}"
            )
        migrations[migration.version] = migration
    return [migrations[version] for version in sorted(migrations)]


def split_statements(sql: str) -> list[str]:
    """Split a script on ``;`` that are outside quotes and comments; drop comment-only pieces."""
    statements: list[str] = []
    current: list[str] = []
    has_code = False
    i, n = 0, len(sql)
    while i < n:
        char = sql[i]
        if char in "'\"`":
            # A quoted string or identifier: backslash escapes the next char, a doubled quote is
            # a literal quote; either way the closing quote is the first unescaped single one.
            j = i + 1
            while j < n:
                if sql[j] == "\\":
                    j += 2
                elif sql[j] == char:
                    if j + 1 < n and sql[j + 1] == char:
                        j += 2
                    else:
                        break
                else:
                    j += 1
            if j >= n:
                raise MigrationError(f"unterminated {char} quote in migration SQL")
            current.append(sql[i : j + 1])
            has_code = True
            i = j + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = n if end == -1 else end
            current.append(sql[i:end])
            i = end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            if end == -1:
                raise MigrationError("unterminated /* comment in migration SQL")
            current.append(sql[i : end + 2])
            i = end + 2
        elif char == ";":
            if has_code:
                statements.append("".join(current).strip())
            current, has_code = [], False
            i += 1
        else:
            current.append(char)
            has_code = has_code or not char.isspace()
            i += 1
    if has_code:
        statements.append("".join(current).strip())
    return statements


def render(sql: str, database: str) -> str:
    # str.replace, not str.format: SQL may legitimately contain braces ({name:Type} parameters).
    return sql.replace(PLACEHOLDER, validate_database_name(database))


def _applied(client: Client, database: str) -> dict[int, tuple[str, str]]:
    rows = client.execute(f"SELECT version, name, checksum FROM {database}.schema_migrations FINAL")
    return {int(version): (name, digest) for version, name, digest in rows}


def apply_migrations(
    client: Client,
    database: str,
    *,
    migrations: list[Migration] | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> list[AppliedMigration]:
    """Create ``database`` if needed and apply every pending migration, in order.

    Returns what this call applied (empty when the schema was already current). Raises
    ``MigrationError`` before applying anything if an applied migration's file has changed.
    ``client`` is a ``clickhouse_driver.Client`` not bound to ``database`` (it may not exist yet).
    """
    validate_database_name(database)
    available = load_migrations() if migrations is None else sorted(migrations, key=lambda m: m.version)

    client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    client.execute(render(_SCHEMA_MIGRATIONS_DDL, database))
    applied = _applied(client, database)

    known = {migration.version: migration for migration in available}
    for version, (name, digest) in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            # The database is ahead of this code (a newer release migrated it). Additive
            # migrations keep older code working, so this is worth a warning, not a refusal.
            logger.warning(
                "database %s has migration %04d_%s applied, which this version does not ship",
                database,
                version,
                name,
            )
        elif migration.checksum != digest:
            raise MigrationError(
                f"migration {migration.filename} was changed after it was applied to database "
                f"{database} (recorded checksum {digest[:12]}, file now {migration.checksum[:12]}). "
                "Applied migrations are immutable: restore the file and add a new migration "
                "for the change."
            )

    done: list[AppliedMigration] = []
    for migration in available:
        if migration.version in applied:
            continue
        statements = split_statements(render(migration.sql, database))
        for position, statement in enumerate(statements, start=1):
            try:
                client.execute(statement)
            except Exception as exc:
                raise MigrationError(
                    f"migration {migration.filename} failed at statement {position} of "
                    f"{len(statements)}: {exc}. Earlier statements may have run; they are "
                    "idempotent, so fix the cause and run the migration again."
                ) from exc
        record = AppliedMigration(migration.version, migration.name, migration.checksum, clock())
        client.execute(
            f"INSERT INTO {database}.schema_migrations (version, name, checksum, applied_at) VALUES",
            [(record.version, record.name, record.checksum, record.applied_at)],
        )
        logger.info("applied migration %s to database %s", migration.filename, database)
        done.append(record)
    if not done:
        logger.debug("database %s is up to date (%d migrations)", database, len(applied))
    return done
