"""One processing step: a batch of raw messages in, rows for the sinks and dead letters out.

This is the whole of what a worker does with data, without Faust: decode and validate every
event (the wire format's one boundary), keep each rep's activity state, and produce the rows to
write. The Faust agent (``streams.app``) only feeds it batches and acknowledges them after the
sink has flushed; tests and replays drive it directly with in-memory sinks.

Lateness is judged per rep *and per stream* (activities, deals): the two come from different
topics with no order between them, so a rep's deals may trail its activities by weeks during a
backfill without being late on their own stream.

The per-rep state is a cache of what is already stored: when a rep is first seen (after a start,
a rebalance or a new broker) its recent history is read back from the store of record, so the
state is exact even when the stream's own state was lost. Every accepted event is written before
its message is acknowledged, so a crash at any point is repaired by redelivery plus this rebuild.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.accounts import Account
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    SALES_EVENT_ADAPTER,
    EventKind,
    VisitCheckOutEvent,
    VisitEvent,
)
from schemas.wire import Event, MessageOrigin, decode_message, decode_rep_message, event_to_json
from sinks.base import (
    DailyActivityRow,
    DealRow,
    EventHistory,
    IngestedEvent,
    SinkBatch,
    VisitHistory,
    VisitRow,
)
from streams.kpi.activity import (
    HistoricEvent,
    RepActivityState,
    apply_events,
    start_of_day,
    utc_day,
)
from streams.kpi.deals import DEAL_EVENT_TYPES, Deal, DealBook, DealEvent, stage_ranks
from streams.visits.book import TravelPolicy, VisitBook, VisitPart, VisitRecord
from streams.visits.directory import AccountDirectory
from streams.visits.geo import Verification, VisitStatus

logger = logging.getLogger(__name__)


def deal_row(deal: Deal, now: datetime) -> DealRow:
    if deal.opened_at is None or deal.updated_at is None:
        raise ValueError(f"deal {deal.deal_id} has no events")
    return DealRow(
        deal_id=deal.deal_id,
        rep_id=deal.rep_id,
        status=deal.status.value,
        stage=deal.stage,
        opened_at=deal.opened_at,
        closed_at=deal.closed_at,
        amount=deal.amount,
        amount_missing=deal.amount_missing,
        account_id=deal.account_id,
        product=deal.product,
        cycle_days=deal.cycle_days,
        stage_advancements=len(deal.advanced_at),
        last_event_at=deal.updated_at,
        events=tuple(
            event_to_json(e) for e in sorted(deal.events.values(), key=lambda e: (e.occurred_at, e.event_id))
        ),
        updated_at=now,
    )


def visit_row(record: VisitRecord, now: datetime) -> VisitRow:
    return VisitRow(
        visit_id=record.visit_id,
        rep_id=record.rep_id,
        account_id=record.account_id,
        checked_in_at=record.checked_in_at,
        checked_out_at=record.checked_out_at,
        duration_s=record.duration_s,
        status=record.status.value,
        distance_m=record.distance_m,
        radius_m=record.radius_m,
        lat=record.lat,
        lon=record.lon,
        accuracy_m=record.accuracy_m,
        check_in_missing=record.check_in_missing,
        overlaps=record.overlaps,
        impossible_travel=record.impossible_travel,
        travel_speed_kmh=record.travel_speed_kmh,
        updated_at=now,
    )


# A rep's state is kept per stream: lateness is only meaningful within one ordered stream.
StateKey = tuple[str, EventKind]
_TYPES_OF_KIND: dict[EventKind, frozenset[str]] = {
    EventKind.ACTIVITY: frozenset(ACTIVITY_TYPES),
    EventKind.DEAL: frozenset(DEAL_TYPES),
}


@dataclass(frozen=True, slots=True)
class RawMessage:
    key: bytes | None
    value: bytes | None
    origin: MessageOrigin


@dataclass(slots=True)
class BatchOutcome:
    sink_batch: SinkBatch = field(default_factory=SinkBatch)
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_letters: list[DeadLetter] = field(default_factory=list)
    accepted_by_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # Valid events read per (topic, type), before the duplicate and lateness checks (for metrics).
    decoded_by_source_type: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    reps_touched: set[str] = field(default_factory=set)
    unreadable_dead_letters: int = 0


class BatchProcessor:
    def __init__(
        self,
        *,
        history: EventHistory,
        late_grace: timedelta,
        clock: Callable[[], datetime],
        rep_topic: str,
        max_message_bytes: int,
        dead_letter_topic: str | None = None,
        deal_stages: Sequence[str] = (),
        visits: VisitHistory | None = None,
        accounts_refresh: timedelta = timedelta(seconds=60),
        travel_policy: TravelPolicy | None = None,
    ) -> None:
        self._history = history
        self._late_grace = late_grace
        self._clock = clock
        self._rep_topic = rep_topic
        self._dead_letter_topic = dead_letter_topic
        self._max_message_bytes = max_message_bytes
        self._states: dict[StateKey, RepActivityState] = {}
        self._stage_rank = stage_ranks(deal_stages)
        self._deal_books: dict[str, DealBook] = {}
        # Field visits are assembled only with a source of accounts and stored visits.
        self._visit_history = visits
        self._accounts = AccountDirectory(visits.accounts, accounts_refresh) if visits is not None else None
        self._travel_policy = travel_policy or TravelPolicy()
        self._visit_books: dict[str, VisitBook] = {}

    @property
    def cached_reps(self) -> int:
        return len({rep_id for rep_id, _ in self._states})

    def state_of(self, rep_id: str, kind: EventKind) -> RepActivityState | None:
        return self._states.get((rep_id, kind))

    def forget_all(self) -> None:
        """Drop every cached rep state (after a rebalance another worker may have moved them on)."""
        self._states.clear()
        self._deal_books.clear()
        self._visit_books.clear()

    def deals_of(self, rep_id: str) -> DealBook | None:
        return self._deal_books.get(rep_id)

    def visits_of(self, rep_id: str) -> VisitBook | None:
        return self._visit_books.get(rep_id)

    def process(self, messages: Sequence[RawMessage]) -> BatchOutcome:
        now = self._clock()
        outcome = BatchOutcome(messages=len(messages))
        events_by_rep: dict[StateKey, list[tuple[Event, MessageOrigin]]] = defaultdict(list)
        for message in messages:
            if message.origin.source == self._rep_topic:
                self._decode_rep(message, now, outcome)
                continue
            if message.origin.source == self._dead_letter_topic:
                self._store_dead_letter(message, outcome)
                continue
            decoded = decode_message(message.key, message.value, message.origin, now, self._max_message_bytes)
            outcome.dead_letters.extend(decoded.dead_letters)
            for event in decoded.events:
                events_by_rep[(event.rep_id, event.kind)].append((event, message.origin))
                outcome.decoded_by_source_type[(message.origin.source, event.type)] += 1

        self._load_unseen_reps(events_by_rep)
        too_late: list[tuple[Event, MessageOrigin]] = []
        duplicates: list[tuple[Event, MessageOrigin]] = []
        deal_updates: list[tuple[str, list[Event], RepActivityState]] = []
        visit_updates: dict[str, list[VisitPart]] = {}
        for key, items in events_by_rep.items():
            rep_id = key[0]
            origin_of = {id(event): origin for event, origin in items}
            state = self._states[key]
            applied = apply_events(state, (event for event, _ in items), self._late_grace)
            outcome.duplicates += len(applied.duplicates)
            duplicates.extend((event, origin_of[id(event)]) for event in applied.duplicates)
            too_late.extend((event, origin_of[id(event)]) for event in applied.too_late)
            for event in applied.accepted:
                outcome.sink_batch.events.append(IngestedEvent(event, origin_of[id(event)], now))
                outcome.accepted_by_type[event.type] += 1
            outcome.accepted += len(applied.accepted)
            if applied.accepted:
                outcome.reps_touched.add(rep_id)
            outcome.sink_batch.daily_activity.extend(
                DailyActivityRow(rep_id, day, event_type, count, now)
                for (day, event_type), count in sorted(applied.changed.items())
            )
            if key[1] is EventKind.DEAL and applied.accepted:
                deal_updates.append((rep_id, applied.accepted, state))
            parts = [e for e in applied.accepted if isinstance(e, VisitEvent | VisitCheckOutEvent)]
            if parts:
                visit_updates[rep_id] = parts
        self._update_deals(deal_updates, now, outcome)
        self._update_visits(visit_updates, now, outcome)
        duplicates.extend(self._classify_too_late(too_late, now, outcome))
        self._record_conflicts(duplicates, now, outcome)
        # The dead letters found here are not stored directly: they are published to the
        # dead-letter topic, and stored when read back from it, like those of every other producer.
        return outcome

    def _load_unseen_reps(self, events_by_rep: dict[StateKey, list[tuple[Event, MessageOrigin]]]) -> None:
        unseen = [key for key in events_by_rep if key not in self._states]
        if not unseen:
            return
        # One read for every new rep of the batch, far enough back to cover the grace period of
        # the oldest event among them; everything from that day on is then complete in the state.
        oldest = min(event.occurred_at for key in unseen for event, _ in events_by_rep[key])
        horizon_start = utc_day(oldest - self._late_grace)
        rep_ids = sorted({rep_id for rep_id, _ in unseen})
        types = frozenset().union(*(_TYPES_OF_KIND[kind] for _, kind in unseen))
        history = self._history.rep_history(rep_ids, start_of_day(horizon_start), types)
        for rep_id, kind in unseen:
            types = _TYPES_OF_KIND[kind]
            past = (
                HistoricEvent(entry.event_id, entry.type, entry.occurred_at, entry.outcome)
                for entry in history.get(rep_id, [])
                if entry.type in types
            )
            self._states[(rep_id, kind)] = RepActivityState.rebuild(rep_id, horizon_start, past)
        deal_reps = sorted(rep_id for rep_id, kind in unseen if kind is EventKind.DEAL)
        if deal_reps:
            stored = self._history.rep_deal_events(deal_reps, start_of_day(horizon_start))
            for rep_id in deal_reps:
                book = self._deal_books[rep_id] = DealBook(self._stage_rank)
                book.apply(e for e in stored[rep_id] if isinstance(e, DEAL_EVENT_TYPES))
        logger.debug("rebuilt state of %d rep streams from stored history", len(unseen))

    def _update_deals(
        self,
        updates: list[tuple[str, list[Event], RepActivityState]],
        now: datetime,
        outcome: BatchOutcome,
    ) -> None:
        if not updates:
            return
        by_rep = [
            (rep_id, [e for e in accepted if isinstance(e, DEAL_EVENT_TYPES)], state)
            for rep_id, accepted, state in updates
        ]
        # Deals a rep's book does not hold (new, closed long ago and forgotten, or moved here from
        # another rep) are looked up once for the whole batch; stored ones come back whole.
        missing = sorted(
            {e.deal_id for rep_id, events, _ in by_rep for e in events}
            - {deal_id for rep_id, _, _ in by_rep for deal_id in self._deal_books[rep_id].deals}
        )
        stored: dict[str, list[DealEvent]] = defaultdict(list)
        for event in self._history.deal_events(missing) if missing else ():
            if isinstance(event, DEAL_EVENT_TYPES):
                stored[event.deal_id].append(event)
        for rep_id, events, state in by_rep:
            book = self._deal_books[rep_id]
            for deal_id in {e.deal_id for e in events} - book.deals.keys():
                book.apply(stored.get(deal_id, ()))
            changed = book.apply(events)
            outcome.sink_batch.deals.extend(deal_row(book.deals[deal_id], now) for deal_id in sorted(changed))
            # A deal closed further back than the grace leaves memory (it is stored, and a later
            # event of it loads it again, as above).
            if state.newest_event_at is not None:
                book.forget_closed_before(state.newest_event_at - self._late_grace)

    def _update_visits(
        self, updates: dict[str, list[VisitPart]], now: datetime, outcome: BatchOutcome
    ) -> None:
        """Assemble the batch's check-ins and check-outs into visits and write the rows that
        changed. After the accounts changed, every visit in memory is looked at again (a visit
        left unlocated for want of its account's position is verified once it has one)."""
        if self._visit_history is None or self._accounts is None:
            return
        accounts, accounts_changed = self._accounts.current(now)
        if not updates and not accounts_changed:
            return
        self._load_unseen_visit_books(self._visit_history, updates, accounts)
        for rep_id, parts in updates.items():
            self._visit_books[rep_id].apply(parts)
        self._recall_check_ins(self._visit_history, updates)
        for rep_id in sorted(self._visit_books if accounts_changed else updates):
            book = self._visit_books[rep_id]
            outcome.sink_batch.visits.extend(visit_row(record, now) for record in book.changed(accounts))
            state = self._states.get((rep_id, EventKind.ACTIVITY))
            if state is not None and state.newest_event_at is not None:
                book.forget_before(state.newest_event_at - self._late_grace)

    def _recall_check_ins(self, history: VisitHistory, updates: dict[str, list[VisitPart]]) -> None:
        """A check-out whose check-in left memory (older than the horizon) must complete the
        stored visit, not replace it with an orphan row: its check-in is read back by id."""
        wanted = {
            part.visit_id: rep_id
            for rep_id, parts in updates.items()
            for part in parts
            if isinstance(part, VisitCheckOutEvent)
            and not self._visit_books[rep_id].has_check_in(part.visit_id)
        }
        if not wanted:
            return
        found = [e for e in history.visit_check_ins(sorted(wanted)) if wanted[e.event_id] == e.rep_id]
        if not found:
            return
        verifications = history.visit_verifications([e.event_id for e in found])
        for event in found:
            book = self._visit_books[event.rep_id]
            if isinstance(event, VisitEvent):
                book.apply([event])
            if event.event_id in verifications:
                status, distance = verifications[event.event_id]
                book.keep_verifications({event.event_id: Verification(VisitStatus(status), distance)})

    def _load_unseen_visit_books(
        self, history: VisitHistory, updates: dict[str, list[VisitPart]], accounts: Mapping[str, Account]
    ) -> None:
        """Rebuild the visits of reps not in memory from their stored visit events (as far back as
        the late grace reaches), keeping the verifications already stored."""
        unseen = sorted(rep_id for rep_id in updates if rep_id not in self._visit_books)
        if not unseen:
            return
        oldest = min(part.occurred_at for rep_id in unseen for part in updates[rep_id])
        since = start_of_day(utc_day(oldest - self._late_grace))
        stored = history.rep_visit_events(unseen, since)
        check_in_ids = [e.event_id for events in stored.values() for e in events if isinstance(e, VisitEvent)]
        check_in_ids += [
            e.visit_id for events in stored.values() for e in events if isinstance(e, VisitCheckOutEvent)
        ]
        verifications = history.visit_verifications(sorted(set(check_in_ids)))
        stored_status = {visit_id: VisitStatus(status) for visit_id, (status, _) in verifications.items()}
        for rep_id in unseen:
            book = self._visit_books[rep_id] = VisitBook(rep_id, self._travel_policy)
            book.apply(e for e in stored[rep_id] if isinstance(e, VisitEvent | VisitCheckOutEvent))
            book.keep_verifications(
                {
                    visit_id: Verification(VisitStatus(status), distance)
                    for visit_id, (status, distance) in verifications.items()
                }
            )
            book.mark_returned(accounts, stored_status)

    def _classify_too_late(
        self, too_late: list[tuple[Event, MessageOrigin]], now: datetime, outcome: BatchOutcome
    ) -> list[tuple[Event, MessageOrigin]]:
        """An event behind the horizon is either a re-sent old event (already stored: a duplicate,
        dropped quietly, and returned) or genuinely late (a dead letter, so it is kept and can be
        replayed)."""
        if not too_late:
            return []
        known = self._history.known_event_ids([event.event_id for event, _ in too_late])
        duplicates = []
        for event, origin in too_late:
            if event.event_id in known:
                outcome.duplicates += 1
                duplicates.append((event, origin))
                continue
            payload = event.model_dump_json(exclude_none=True).encode("utf-8")
            outcome.dead_letters.append(
                DeadLetter.of(
                    DeadLetterReason.TOO_LATE,
                    f"occurred_at {event.occurred_at.isoformat()} is more than "
                    f"{self._late_grace.days} days behind rep {event.rep_id}'s newest event",
                    payload,
                    source=origin.source,
                    partition=origin.partition,
                    offset=origin.offset,
                    event_id=event.event_id,
                    rep_id=event.rep_id,
                    rejected_at=now,
                )
            )
        return duplicates

    def _record_conflicts(
        self, duplicates: list[tuple[Event, MessageOrigin]], now: datetime, outcome: BatchOutcome
    ) -> None:
        """A duplicate whose content differs from the copy that counted is a conflict: the first
        copy stays counted (the event_id is the idempotency key), and the other is kept as a
        dead letter, so a producer reusing ids is seen instead of silently dropped.

        The copy that counted was accepted earlier in this batch, or is stored (everything
        accepted by an earlier batch was stored before that batch was acknowledged). Contents are
        compared as validated events, so the same event sent with another offset or key order is
        still a plain duplicate."""
        if not duplicates:
            return
        counted_now = {item.event.event_id: item.event for item in outcome.sink_batch.events}
        earlier = [
            (event.event_id, event_to_json(event))
            for event, _ in duplicates
            if event.event_id not in counted_now
        ]
        stored = self._history.stored_payloads_unlike(earlier) if earlier else {}
        for event, origin in duplicates:
            first = counted_now.get(event.event_id)
            if first is None and event.event_id in stored:
                first = SALES_EVENT_ADAPTER.validate_json(stored[event.event_id])
            if first is None or first == event:
                continue
            differing = sorted(
                name
                for name in set(type(first).model_fields) | set(type(event).model_fields)
                if getattr(first, name, None) != getattr(event, name, None)
            )
            outcome.duplicates -= 1
            outcome.dead_letters.append(
                DeadLetter.of(
                    DeadLetterReason.CONFLICT,
                    f"event_id {event.event_id!r} was already counted with different content "
                    f"({', '.join(differing)} differ); the first copy counts",
                    event_to_json(event),
                    source=origin.source,
                    partition=origin.partition,
                    offset=origin.offset,
                    event_id=event.event_id,
                    rep_id=event.rep_id,
                    rejected_at=now,
                )
            )

    def _store_dead_letter(self, message: RawMessage, outcome: BatchOutcome) -> None:
        try:
            dead_letter = DeadLetter.model_validate_json(message.value or b"")
        except ValueError as exc:
            # A dead letter of a dead letter would loop; this is logged and counted instead.
            outcome.unreadable_dead_letters += 1
            logger.error(
                "unreadable record on the dead-letter topic at %s/%s offset %s, skipped: %s",
                message.origin.source,
                message.origin.partition,
                message.origin.offset,
                exc,
            )
            return
        outcome.sink_batch.dead_letters.append(dead_letter)

    def _decode_rep(self, message: RawMessage, now: datetime, outcome: BatchOutcome) -> None:
        decoded = decode_rep_message(message.value, message.origin, now)
        if isinstance(decoded, DeadLetter):
            outcome.dead_letters.append(decoded)
        else:
            outcome.sink_batch.reps.append((decoded, now))
