"""Errors the sinks raise. Each message says what failed and what to do about it."""

from __future__ import annotations


class SinkError(Exception):
    """A flush did not make its data durable. Nothing it held may be acknowledged; the data is
    still buffered in the sink, so calling ``flush()`` again retries exactly what is missing."""

    def __init__(self, table: str, cause: BaseException) -> None:
        self.table = table
        self.cause = cause
        super().__init__(f"writing to {table} failed: {type(cause).__name__}: {cause}")


class HistoryReadError(Exception):
    """Reading stored history (to rebuild per-rep state, or to judge a duplicate) failed. Nothing of
    the batch that needed it is stored or acknowledged; processing the batch again is safe once the
    reader's cached state is dropped."""

    def __init__(self, table: str, cause: BaseException) -> None:
        self.table = table
        self.cause = cause
        super().__init__(f"reading {table} failed: {type(cause).__name__}: {cause}")


class ClickHouseUnreachableError(ConnectionError):
    """ClickHouse did not answer, or refused our credentials, when we connected."""


class MigrationError(RuntimeError):
    """The database schema cannot be brought up to date safely (or a migration failed)."""
