"""The accounts a worker verifies visits against: a copy of the store of record's ``accounts``
table, read again every ``refresh`` (accounts are imported while workers run)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from schemas.accounts import Account


class AccountDirectory:
    def __init__(self, load: Callable[[], Mapping[str, Account]], refresh: timedelta) -> None:
        self._load = load
        self._refresh = refresh
        self._accounts: Mapping[str, Account] = {}
        self._loaded_at: datetime | None = None

    def current(self, now: datetime) -> tuple[Mapping[str, Account], bool]:
        """The accounts as of ``now`` (read again when the last read is ``refresh`` old), and
        whether they changed since the previous call (the first read counts as a change only when
        it found accounts)."""
        if self._loaded_at is not None and now - self._loaded_at < self._refresh:
            return self._accounts, False
        loaded = dict(self._load())
        self._loaded_at = now
        changed = loaded != self._accounts
        self._accounts = loaded
        return self._accounts, changed
