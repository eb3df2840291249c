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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    SALES_EVENT_ADAPTER,
    EventKind,
)
from schemas.wire import Event, MessageOrigin, decode_message, decode_rep_message, event_to_json
from sinks.base import DailyActivityRow, DealRow, EventHistory, IngestedEvent, SinkBatch
from streams.kpi.activity import (
    HistoricEvent,
    RepActivityState,
    apply_events,
    start_of_day,
    utc_day,
)
from streams.kpi.deals import DEAL_EVENT_TYPES, Deal, DealBook, DealEvent, stage_ranks

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

    @property
    def cached_reps(self) -> int:
        return len({rep_id for rep_id, _ in self._states})

    def state_of(self, rep_id: str, kind: EventKind) -> RepActivityState | None:
        return self._states.get((rep_id, kind))

    def forget_all(self) -> None:
        """Drop every cached rep state (after a rebalance another worker may have moved them on)."""
        self._states.clear()
        self._deal_books.clear()

    def deals_of(self, rep_id: str) -> DealBook | None:
        return self._deal_books.get(rep_id)

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
        self._update_deals(deal_updates, now, outcome)
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
