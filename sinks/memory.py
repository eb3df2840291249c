"""A list-backed sink and history for tests: a whole flow runs in a unit test, and the
``stored_*`` views answer what the same queries against ClickHouse (with FINAL) would."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import date, datetime

from schemas.accounts import Account
from schemas.deadletter import DeadLetter
from schemas.events import DEAL_TYPES
from schemas.reps import Rep
from schemas.wire import Event, event_to_json
from sinks.base import DailyActivityRow, DealRow, IngestedEvent, RepHistoryEntry, SinkBatch, VisitRow
from sinks.errors import SinkError

logger = logging.getLogger(__name__)

VISIT_TYPES = frozenset({"visit", "visit_check_out"})
DeadLetterKey = tuple[str, int | None, int | None, int | None, str, str]


class InMemorySink:
    """Keeps every flushed batch in ``flushed``, in order.

    ``fail_next_flushes(n)`` makes the next ``n`` flushes raise ``SinkError`` and keep the buffer,
    as a ClickHouse outage would, so retry paths can be tested.
    """

    def __init__(self, *, fail_next_flushes: int = 0) -> None:
        self.flushed: list[SinkBatch] = []
        self.flush_attempts = 0
        self.closed = False
        self._pending = SinkBatch()
        self._failures_left = 0
        self._failure: BaseException = ConnectionError("injected failure")
        self.fail_next_flushes(fail_next_flushes)

    def fail_next_flushes(self, count: int, error: BaseException | None = None) -> None:
        if count < 0:
            raise ValueError("count must not be negative")
        self._failures_left = count
        if error is not None:
            self._failure = error

    @property
    def pending(self) -> SinkBatch:
        """A copy of what is buffered and not yet flushed."""
        copy = SinkBatch()
        copy.extend(self._pending)
        return copy

    def write(self, batch: SinkBatch) -> None:
        if self.closed:
            raise RuntimeError("write() on a closed InMemorySink")
        # extend() copies the items into our own lists: the caller may reuse its batch.
        self._pending.extend(batch)

    def flush(self) -> None:
        if self.closed:
            raise RuntimeError("flush() on a closed InMemorySink")
        self.flush_attempts += 1
        if self._failures_left:
            self._failures_left -= 1
            raise SinkError("memory", self._failure)
        if len(self._pending):
            self.flushed.append(self._pending)
            self._pending = SinkBatch()

    def close(self) -> None:
        if self.closed:
            return
        if unflushed := len(self._pending):
            logger.warning("closing the in-memory sink with %d unflushed rows; they are dropped", unflushed)
        self._pending = SinkBatch()
        self.closed = True

    # What ClickHouse would return with FINAL: one row per table key, the newest version winning
    # (and, as in ReplacingMergeTree, the last written among equal versions).

    def stored_events(self) -> dict[str, IngestedEvent]:
        stored: dict[str, IngestedEvent] = {}
        for batch in self.flushed:
            for item in batch.events:
                stored[item.event.event_id] = item
        return stored

    def stored_daily_activity(self) -> dict[tuple[str, date, str], DailyActivityRow]:
        stored: dict[tuple[str, date, str], DailyActivityRow] = {}
        for batch in self.flushed:
            for row in batch.daily_activity:
                key = (row.rep_id, row.day, row.type)
                if key not in stored or row.updated_at >= stored[key].updated_at:
                    stored[key] = row
        return stored

    def stored_deals(self) -> dict[str, DealRow]:
        stored: dict[str, DealRow] = {}
        for batch in self.flushed:
            for row in batch.deals:
                if row.deal_id not in stored or row.updated_at >= stored[row.deal_id].updated_at:
                    stored[row.deal_id] = row
        return stored

    def stored_visits(self) -> dict[str, VisitRow]:
        stored: dict[str, VisitRow] = {}
        for batch in self.flushed:
            for row in batch.visits:
                if row.visit_id not in stored or row.updated_at >= stored[row.visit_id].updated_at:
                    stored[row.visit_id] = row
        return stored

    def stored_reps(self) -> dict[str, Rep]:
        stored: dict[str, tuple[Rep, datetime]] = {}
        for batch in self.flushed:
            for rep, updated_at in batch.reps:
                if rep.rep_id not in stored or updated_at >= stored[rep.rep_id][1]:
                    stored[rep.rep_id] = (rep, updated_at)
        return {rep_id: rep for rep_id, (rep, _) in stored.items()}

    def stored_dead_letters(self) -> list[DeadLetter]:
        """Deduplicated like the dead_letters table: by origin, reason and excerpt."""
        stored: dict[DeadLetterKey, DeadLetter] = {}
        for batch in self.flushed:
            for letter in batch.dead_letters:
                key = (
                    letter.source,
                    letter.partition,
                    letter.offset,
                    letter.index,
                    letter.reason.value,
                    letter.payload_excerpt,
                )
                if key not in stored or letter.rejected_at >= stored[key].rejected_at:
                    stored[key] = letter
        return list(stored.values())


class InMemoryHistory:
    """``EventHistory`` over the events an ``InMemorySink`` has flushed (what ClickHouseHistory
    would read back), plus any added directly with ``add``."""

    def __init__(self, sink: InMemorySink | None = None) -> None:
        self._sink = sink
        self._added: dict[str, Event] = {}
        self._accounts: dict[str, Account] = {}

    def set_accounts(self, accounts: Iterable[Account]) -> None:
        """Store account records (as ``salespulse import accounts`` would); later ones win."""
        for account in accounts:
            self._accounts[account.account_id] = account

    def accounts(self) -> dict[str, Account]:
        return dict(self._accounts)

    def rep_visit_events(self, rep_ids: list[str], since: datetime) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {rep_id: [] for rep_id in rep_ids}
        for event in sorted(self._events().values(), key=lambda e: (e.occurred_at, e.event_id)):
            if event.rep_id in found and event.type in VISIT_TYPES and event.occurred_at >= since:
                found[event.rep_id].append(event)
        return found

    def visit_check_ins(self, visit_ids: list[str]) -> list[Event]:
        events = self._events()
        return [events[v] for v in visit_ids if v in events and events[v].type == "visit"]

    def visit_verifications(self, visit_ids: list[str]) -> dict[str, tuple[str, float | None]]:
        stored = self._sink.stored_visits() if self._sink is not None else {}
        return {v: (stored[v].status, stored[v].distance_m) for v in visit_ids if v in stored}

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            self._added[event.event_id] = event

    def _events(self) -> dict[str, Event]:
        events = dict(self._added)
        if self._sink is not None:
            events.update((event_id, item.event) for event_id, item in self._sink.stored_events().items())
        return events

    def rep_history(
        self, rep_ids: list[str], since: datetime, types: Collection[str] | None = None
    ) -> dict[str, list[RepHistoryEntry]]:
        history: dict[str, list[RepHistoryEntry]] = {rep_id: [] for rep_id in rep_ids}
        for event in self._events().values():
            if types is not None and event.type not in types:
                continue
            if event.rep_id in history and event.occurred_at >= since:
                outcome = getattr(event, "outcome", None)
                history[event.rep_id].append(
                    RepHistoryEntry(event.event_id, event.type, event.occurred_at, outcome and str(outcome))
                )
        for entries in history.values():
            entries.sort(key=lambda entry: (entry.occurred_at, entry.event_id))
        return history

    def rep_deal_events(self, rep_ids: list[str], closed_since: datetime) -> dict[str, list[Event]]:
        wanted = set(rep_ids)
        deals = self._sink.stored_deals() if self._sink is not None else {}
        live = {
            deal_id: row.rep_id
            for deal_id, row in deals.items()
            if row.rep_id in wanted and (row.closed_at is None or row.closed_at >= closed_since)
        }
        found: dict[str, list[Event]] = {rep_id: [] for rep_id in rep_ids}
        events = sorted(self._events().values(), key=lambda e: (e.occurred_at, e.event_id))
        for event in events:
            deal_id = getattr(event, "deal_id", None)
            if event.type in DEAL_TYPES and deal_id in live:
                found[live[deal_id]].append(event)
        return found

    def deal_events(self, deal_ids: list[str]) -> list[Event]:
        wanted = set(deal_ids)
        found = [
            e
            for e in self._events().values()
            if e.type in DEAL_TYPES and getattr(e, "deal_id", None) in wanted
        ]
        return sorted(found, key=lambda e: (e.occurred_at, e.event_id))

    def stored_payloads_unlike(self, candidates: list[tuple[str, bytes]]) -> dict[str, bytes]:
        events = self._events()
        stored = {
            event_id: event_to_json(events[event_id]) for event_id, _ in candidates if event_id in events
        }
        return {
            event_id: stored[event_id]
            for event_id, payload in candidates
            if event_id in stored and stored[event_id] != payload
        }

    def known_event_ids(self, event_ids: list[str]) -> set[str]:
        return set(event_ids) & self._events().keys()
