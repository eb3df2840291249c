"""The outbox: every notification is stored durably before anyone tries to send it.

Sending happens later (``sinks.notifiers.delivery``), per receiver, oldest first, and an entry is
marked sent only after the receiver answered 2xx. So a chat outage or a crash delays messages and
loses none; and since entries are keyed by the notification id (deterministic, see
``streams.alerts.lifecycle``), a notification planned again after a restart is recognised and not
sent twice.

:class:`Outbox` is the small interface the delivery loop needs; :class:`SqliteOutbox` is the
file-backed store (one SQLite file under ``SALESPULSE_HOME``, committed with ``synchronous=FULL``,
so a committed write survives ``kill -9`` and power loss); :class:`InMemoryOutbox` is for tests.
Another store (a ClickHouse table with a ReplacingMergeTree by id, say) only has to implement
:class:`Outbox`.

One deliverer per store: :class:`SqliteOutbox` takes an exclusive lock on its file, so a second
process opening the same outbox fails at once instead of sending everything twice.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Protocol

from schemas.notification import Notification


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # the receiver refused it for good (a 4xx other than 429); see last_error


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    notification: Notification
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    enqueued_at: datetime
    settled_at: datetime | None = None  # when it was sent, or given up
    last_error: str | None = None

    @property
    def id(self) -> str:
        return self.notification.id

    @property
    def receiver(self) -> str:
        return self.notification.receiver


class OutboxLockedError(RuntimeError):
    """Another process delivers from this outbox already."""


class Outbox(Protocol):
    def enqueue(self, notifications: Iterable[Notification], now: datetime) -> int:
        """Store notifications durably before returning; ids already stored (pending, sent or
        failed) are left as they are. Returns how many were new."""
        ...

    def receivers_with_pending(self) -> list[str]: ...

    def head(self, receiver: str) -> OutboxEntry | None:
        """The oldest pending entry of a receiver (messages to one receiver go out in order)."""
        ...

    def mark_sent(self, notification_id: str, now: datetime) -> None: ...

    def mark_retry(
        self, notification_id: str, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None: ...

    def mark_failed(self, notification_id: str, now: datetime, error: str) -> None: ...

    def get(self, notification_id: str) -> OutboxEntry | None: ...

    def entries(self, status: OutboxStatus | None = None, *, limit: int = 100) -> list[OutboxEntry]:
        """Entries, newest first (what an ``alerts outbox`` command would list)."""
        ...

    def counts(self) -> dict[OutboxStatus, int]: ...

    def retry_failed(self, now: datetime) -> int:
        """Put every failed entry back in line (after fixing a receiver's configuration)."""
        ...

    def prune(self, settled_before: datetime) -> int:
        """Forget sent and failed entries settled before the given time. Keep them at least as long
        as a restarted worker may plan the same notification again (a few group intervals)."""
        ...

    def close(self) -> None: ...


class InMemoryOutbox:
    """A dict-backed :class:`Outbox` for tests: the same behaviour, no durability."""

    def __init__(self) -> None:
        self._entries: dict[str, OutboxEntry] = {}  # insertion order = enqueue order

    def enqueue(self, notifications: Iterable[Notification], now: datetime) -> int:
        added = 0
        for notification in notifications:
            if notification.id not in self._entries:
                self._entries[notification.id] = OutboxEntry(notification, OutboxStatus.PENDING, 0, now, now)
                added += 1
        return added

    def receivers_with_pending(self) -> list[str]:
        return sorted({e.receiver for e in self._entries.values() if e.status is OutboxStatus.PENDING})

    def head(self, receiver: str) -> OutboxEntry | None:
        return next(
            (
                e
                for e in self._entries.values()
                if e.receiver == receiver and e.status is OutboxStatus.PENDING
            ),
            None,
        )

    def _update_pending(self, notification_id: str, **changes: object) -> None:
        entry = self._entries.get(notification_id)
        if entry is not None and entry.status is OutboxStatus.PENDING:
            self._entries[notification_id] = replace(entry, **changes)  # type: ignore[arg-type]

    def mark_sent(self, notification_id: str, now: datetime) -> None:
        self._update_pending(notification_id, status=OutboxStatus.SENT, settled_at=now)

    def mark_retry(
        self, notification_id: str, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        self._update_pending(
            notification_id, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error
        )

    def mark_failed(self, notification_id: str, now: datetime, error: str) -> None:
        self._update_pending(notification_id, status=OutboxStatus.FAILED, settled_at=now, last_error=error)

    def get(self, notification_id: str) -> OutboxEntry | None:
        return self._entries.get(notification_id)

    def entries(self, status: OutboxStatus | None = None, *, limit: int = 100) -> list[OutboxEntry]:
        chosen = [e for e in self._entries.values() if status is None or e.status is status]
        return chosen[::-1][:limit]

    def counts(self) -> dict[OutboxStatus, int]:
        counts = dict.fromkeys(OutboxStatus, 0)
        for entry in self._entries.values():
            counts[entry.status] += 1
        return counts

    def retry_failed(self, now: datetime) -> int:
        failed = [e for e in self._entries.values() if e.status is OutboxStatus.FAILED]
        for entry in failed:
            self._entries[entry.id] = replace(
                entry, status=OutboxStatus.PENDING, attempts=0, next_attempt_at=now, settled_at=None
            )
        return len(failed)

    def prune(self, settled_before: datetime) -> int:
        gone = [
            e.id
            for e in self._entries.values()
            if e.status is not OutboxStatus.PENDING
            and e.settled_at is not None
            and e.settled_at < settled_before
        ]
        for notification_id in gone:
            del self._entries[notification_id]
        return len(gone)

    def close(self) -> None:
        pass


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order
    id              TEXT NOT NULL UNIQUE,
    receiver        TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    enqueued_at     TEXT NOT NULL,
    settled_at      TEXT,
    last_error      TEXT,
    payload         TEXT NOT NULL                        -- the Notification as JSON
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (receiver, position) WHERE status = 'pending';
"""
_SCHEMA_VERSION = 1
_COLUMNS = "payload, status, attempts, next_attempt_at, enqueued_at, settled_at, last_error"
_Row = tuple[str, str, int, str, str, str | None, str | None]


def _stored(moment: datetime) -> str:
    """One fixed text form (UTC, microseconds), so stored times also compare correctly as text."""
    if moment.utcoffset() is None:
        raise ValueError(f"outbox times must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class SqliteOutbox:
    """The outbox in one SQLite file (created with its directory if missing).

    Safe to share between the event loop and a delivery thread of one process (one connection,
    serialised by a lock); other processes are kept out by an exclusive lock on ``<path>.lock``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_process_lock(self.path.with_name(self.path.name + ".lock"))
        self._lock = threading.Lock()
        try:
            # isolation_level=None: we open transactions ourselves (BEGIN IMMEDIATE ... COMMIT).
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when it returns; WAL makes that cheap (one fsync per commit).
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, _SCHEMA_VERSION):
                raise RuntimeError(
                    f"outbox {self.path} has schema version {version}, this salespulse knows "
                    f"{_SCHEMA_VERSION}; deliver or move it with the version that wrote it"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException:
            self._lock_file.close()
            raise

    @staticmethod
    def _acquire_process_lock(lock_path: Path) -> IO[str]:
        handle = lock_path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutboxLockedError(
                f"outbox {lock_path.with_suffix('')} is in use by pid {holder}; one process delivers "
                "from an outbox at a time (stop it, or give this one its own SALESPULSE_HOME)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        return handle

    def _entry(self, row: _Row) -> OutboxEntry:
        payload, status, attempts, next_attempt_at, enqueued_at, settled_at, last_error = row
        return OutboxEntry(
            notification=Notification.model_validate_json(payload),
            status=OutboxStatus(status),
            attempts=attempts,
            next_attempt_at=datetime.fromisoformat(next_attempt_at),
            enqueued_at=datetime.fromisoformat(enqueued_at),
            settled_at=None if settled_at is None else datetime.fromisoformat(settled_at),
            last_error=last_error,
        )

    def enqueue(self, notifications: Iterable[Notification], now: datetime) -> int:
        stamp = _stored(now)
        rows = [
            (n.id, n.receiver, OutboxStatus.PENDING.value, stamp, stamp, n.model_dump_json())
            for n in notifications
        ]
        if not rows:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox"
                    " (id, receiver, status, next_attempt_at, enqueued_at, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                added = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return added

    def _write(self, sql: str, parameters: Sequence[object]) -> None:
        with self._lock:
            # Autocommit: one statement is one durable transaction.
            self._db.execute(sql, parameters)

    def receivers_with_pending(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT receiver FROM outbox WHERE status = 'pending' ORDER BY receiver"
            ).fetchall()
        return [receiver for (receiver,) in rows]

    def head(self, receiver: str) -> OutboxEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox"
                " WHERE status = 'pending' AND receiver = ? ORDER BY position LIMIT 1",
                (receiver,),
            ).fetchone()
        return None if row is None else self._entry(row)

    def mark_sent(self, notification_id: str, now: datetime) -> None:
        self._write(
            "UPDATE outbox SET status = 'sent', settled_at = ? WHERE id = ? AND status = 'pending'",
            (_stored(now), notification_id),
        )

    def mark_retry(
        self, notification_id: str, *, attempts: int, next_attempt_at: datetime, error: str
    ) -> None:
        self._write(
            "UPDATE outbox SET attempts = ?, next_attempt_at = ?, last_error = ?"
            " WHERE id = ? AND status = 'pending'",
            (attempts, _stored(next_attempt_at), error, notification_id),
        )

    def mark_failed(self, notification_id: str, now: datetime, error: str) -> None:
        self._write(
            "UPDATE outbox SET status = 'failed', settled_at = ?, last_error = ?"
            " WHERE id = ? AND status = 'pending'",
            (_stored(now), error, notification_id),
        )

    def get(self, notification_id: str) -> OutboxEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (notification_id,)
            ).fetchone()
        return None if row is None else self._entry(row)

    def entries(self, status: OutboxStatus | None = None, *, limit: int = 100) -> list[OutboxEntry]:
        with self._lock:
            if status is None:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox ORDER BY position DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE status = ? ORDER BY position DESC LIMIT ?",
                    (status.value, limit),
                ).fetchall()
        return [self._entry(row) for row in rows]

    def counts(self) -> dict[OutboxStatus, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall()
        counts = dict.fromkeys(OutboxStatus, 0)
        for status, count in rows:
            counts[OutboxStatus(status)] = count
        return counts

    def retry_failed(self, now: datetime) -> int:
        with self._lock:
            cursor = self._db.execute(
                "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = ?, settled_at = NULL "
                "WHERE status = 'failed'",
                (_stored(now),),
            )
        return cursor.rowcount

    def prune(self, settled_before: datetime) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM outbox WHERE status != 'pending' AND settled_at < ?", (_stored(settled_before),)
            )
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._lock_file.close()

    def __enter__(self) -> SqliteOutbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
