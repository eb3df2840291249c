"""API tokens in ClickHouse (``ingest_tokens``): hashes only, never the secret."""

from __future__ import annotations

from datetime import UTC, datetime

from clickhouse_driver import Client

from schemas.ingest import TokenRecord, TokenScope
from sinks.migrate import validate_database_name

_COLUMNS = "token_id, name, token_hash, scopes, rep_id, created_at, revoked_at"


def save_token(client: Client, database: str, record: TokenRecord, *, updated_at: datetime) -> None:
    """Write ``record`` (a new token, or a revocation of one); the newest write of a token wins."""
    validate_database_name(database)
    client.execute(
        f"INSERT INTO {database}.ingest_tokens ({_COLUMNS}, updated_at) VALUES",
        [
            (
                record.token_id,
                record.name,
                record.token_hash,
                [scope.value for scope in record.scopes],
                record.rep_id,
                record.created_at,
                record.revoked_at,
                updated_at,
            )
        ],
    )


def load_tokens(client: Client, database: str) -> list[TokenRecord]:
    """Every token, revoked ones too, in creation order."""
    validate_database_name(database)
    rows = client.execute(
        f"SELECT {_COLUMNS} FROM {database}.ingest_tokens FINAL ORDER BY created_at, token_id"
    )
    return [
        TokenRecord(
            token_id=token_id,
            name=name,
            token_hash=token_hash,
            scopes=tuple(TokenScope(scope) for scope in scopes),
            rep_id=rep_id,
            created_at=created_at.replace(tzinfo=UTC),
            revoked_at=revoked_at.replace(tzinfo=UTC) if revoked_at is not None else None,
        )
        for token_id, name, token_hash, scopes, rep_id, created_at, revoked_at in rows
    ]
