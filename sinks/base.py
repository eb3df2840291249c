"""The one interface every destination implements, and the rows that travel through it.

A worker hands a sink everything one processing batch produced, then flushes before it
acknowledges the batch's messages: a flush that returns means the data is durable at the
destination; a flush that raises means nothing may be acknowledged and the caller retries.
Every write is idempotent (keyed by ``event_id`` or by the aggregate's key), so a retried or
redelivered batch never counts twice.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Protocol

from schemas.accounts import Account
from schemas.deadletter import DeadLetter
from schemas.reps import Rep
from schemas.wire import Event, MessageOrigin


@dataclass(frozen=True, slots=True)
class IngestedEvent:
    """A validated event with where it was read from and when."""

    event: Event
    origin: MessageOrigin
    ingested_at: datetime


@dataclass(frozen=True, slots=True)
class DailyActivityRow:
    """The absolute count of one rep's events of one type on one (UTC) day, as of ``updated_at``.

    Absolute, not a delta: writing the same row twice is harmless, and the newest
    ``updated_at`` wins (ReplacingMergeTree), so redelivery cannot double a count."""

    rep_id: str
    day: date
    type: str
    events: int
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DealRow:
    """One deal's whole current state (absolute: the newest ``updated_at`` wins)."""

    deal_id: str
    rep_id: str
    status: str
    stage: str | None
    opened_at: datetime
    closed_at: datetime | None
    amount: Decimal | None
    amount_missing: bool
    account_id: str | None
    product: str | None
    cycle_days: float | None
    stage_advancements: int
    last_event_at: datetime
    events: tuple[bytes, ...]  # the deal's events as canonical JSON, oldest first
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class VisitRow:
    """One field visit as assembled and verified by the worker (absolute: the newest
    ``updated_at`` of a ``visit_id`` wins). See ``streams.visits.book.VisitRecord``."""

    visit_id: str
    rep_id: str
    account_id: str | None
    checked_in_at: datetime
    checked_out_at: datetime | None
    duration_s: float | None
    status: str
    distance_m: float | None
    radius_m: float | None
    lat: float | None
    lon: float | None
    accuracy_m: float | None
    check_in_missing: bool
    overlaps: bool
    impossible_travel: bool
    travel_speed_kmh: float | None
    updated_at: datetime


@dataclass(slots=True)
class SinkBatch:
    events: list[IngestedEvent] = field(default_factory=list)
    daily_activity: list[DailyActivityRow] = field(default_factory=list)
    reps: list[tuple[Rep, datetime]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    deals: list[DealRow] = field(default_factory=list)
    visits: list[VisitRow] = field(default_factory=list)

    def __len__(self) -> int:
        return (
            len(self.events)
            + len(self.daily_activity)
            + len(self.reps)
            + len(self.dead_letters)
            + len(self.deals)
            + len(self.visits)
        )

    def extend(self, other: SinkBatch) -> None:
        self.events.extend(other.events)
        self.daily_activity.extend(other.daily_activity)
        self.reps.extend(other.reps)
        self.dead_letters.extend(other.dead_letters)
        self.deals.extend(other.deals)
        self.visits.extend(other.visits)


class Sink(Protocol):
    def write(self, batch: SinkBatch) -> None:
        """Buffer a batch. Cheap; does no I/O that can fail."""

    def flush(self) -> None:
        """Make everything buffered durable, or raise (and keep it buffered for the next try)."""

    def close(self) -> None:
        """Release connections. Buffered data not flushed is dropped: flush first."""


@dataclass(frozen=True, slots=True)
class RepHistoryEntry:
    """What a worker needs of a stored event to rebuild a rep's state: see ``EventHistory``."""

    event_id: str
    type: str
    occurred_at: datetime
    outcome: str | None = None  # a call's outcome (it feeds the connected-calls counter)


class EventHistory(Protocol):
    """Read access to stored events, used to rebuild per-rep state when the stream state is gone
    (a new embedded broker, or a changelog lost to retention)."""

    def rep_history(
        self, rep_ids: list[str], since: datetime, types: Collection[str] | None = None
    ) -> dict[str, list[RepHistoryEntry]]:
        """Every stored event of ``rep_ids`` with ``occurred_at >= since`` (and a type among
        ``types``, when given), each once, oldest first; every requested rep is a key."""
        ...

    def known_event_ids(self, event_ids: list[str]) -> set[str]: ...

    def stored_payloads_unlike(self, candidates: list[tuple[str, bytes]]) -> dict[str, bytes]:
        """For (event_id, canonical JSON) pairs, the stored canonical JSON of every event_id that is
        stored with a different one (an id may be paired with several payloads). Ids stored with
        the same JSON, or not stored, are absent: a plain redelivery costs no payload transfer."""
        ...

    def rep_deal_events(self, rep_ids: list[str], closed_since: datetime) -> dict[str, list[Event]]:
        """Every stored event of the deals of ``rep_ids`` that are open, or closed at or after
        ``closed_since`` (what a worker keeps in memory). Every requested rep is a key."""
        ...

    def deal_events(self, deal_ids: list[str]) -> list[Event]:
        """Every stored event of the given deals (for deals a worker does not hold in memory);
        deals never stored contribute nothing."""
        ...


class VisitHistory(Protocol):
    """Read access for field visits: the accounts to verify against, and a rep's stored visit
    events and verifications to rebuild their visits after a restart or rebalance."""

    def accounts(self) -> dict[str, Account]:
        """The current record of every account."""
        ...

    def rep_visit_events(self, rep_ids: list[str], since: datetime) -> dict[str, list[Event]]:
        """Every stored ``visit`` and ``visit_check_out`` event of ``rep_ids`` with ``occurred_at >=
        since``, each once, oldest first. Every requested rep is a key."""
        ...

    def visit_check_ins(self, visit_ids: list[str]) -> list[Event]:
        """The stored ``visit`` events with these event ids (a check-out's check-in that is no
        longer in memory); ids not stored contribute nothing."""
        ...

    def visit_verifications(self, visit_ids: list[str]) -> dict[str, tuple[str, float | None]]:
        """The stored (status, distance_m) of those visits that have a row."""
        ...
