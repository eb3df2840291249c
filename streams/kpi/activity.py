"""Per-rep daily activity counts: the first rolling KPI, as plain data and pure functions.

A rep's state holds, for every UTC day inside its *horizon*, the number of events of each type
and the fingerprints of the event ids already counted, so that a redelivered or re-sent event is
recognised and never counted twice. The horizon is ``late_grace`` behind the newest event seen
for the rep: an event older than that is *too late* (the caller decides whether it is a known
duplicate or a dead letter); days that fall out of the horizon are dropped from memory, which is
fine because every count is already stored downstream.

Nothing here reads a clock or does I/O. Callers pass event time in and take rows out, so a live
worker, a replay and a test run the very same code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from schemas.events import CallEvent
from schemas.wire import Event


def event_fingerprint(event_id: str) -> int:
    """A 64-bit fingerprint of an event id: 8 bytes per remembered event instead of the id string.

    Two different ids collide with probability ~n²/2⁶⁵ for n remembered ids of one rep: for a rep's
    35-day horizon (a few thousand ids) that is below 10⁻¹².
    """
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).digest(), "big")


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


# Counters beyond the event type itself, derived from an event's fields.
CALL_CONNECTED = "call_connected"


def counters_of(event_type: str, outcome: str | None) -> tuple[str, ...]:
    """The daily counters one event adds to: its type, plus derived ones (a connected call)."""
    if event_type == "call" and outcome == "connected":
        return (event_type, CALL_CONNECTED)
    return (event_type,)


def event_counters(event: Event) -> tuple[str, ...]:
    if isinstance(event, CallEvent):
        return counters_of(event.type, event.outcome)
    return (event.type,)


@dataclass(frozen=True, slots=True)
class HistoricEvent:
    """What the state needs of an already stored event to rebuild itself."""

    event_id: str
    type: str
    occurred_at: datetime
    outcome: str | None = None


@dataclass(slots=True)
class RepActivityState:
    """One rep's daily counts and remembered event fingerprints, from ``horizon_start`` on.

    ``horizon_start`` is the first day whose data is complete in this state: days before it were
    either never loaded or already dropped.
    """

    rep_id: str
    horizon_start: date
    newest_event_at: datetime | None = None
    daily_counts: dict[date, dict[str, int]] = field(default_factory=dict)
    seen: dict[int, date] = field(default_factory=dict)

    @classmethod
    def rebuild(cls, rep_id: str, horizon_start: date, history: Iterable[HistoricEvent]) -> RepActivityState:
        """State from stored events. ``history`` must hold every stored event of the rep from
        ``horizon_start`` on (and may hold older ones, which only raise the newest time)."""
        state = cls(rep_id=rep_id, horizon_start=horizon_start)
        for past in history:
            if state.newest_event_at is None or past.occurred_at > state.newest_event_at:
                state.newest_event_at = past.occurred_at
            day = utc_day(past.occurred_at)
            if day < horizon_start:
                continue
            fingerprint = event_fingerprint(past.event_id)
            if fingerprint in state.seen:
                continue
            state.seen[fingerprint] = day
            per_type = state.daily_counts.setdefault(day, {})
            for counter in counters_of(past.type, past.outcome):
                per_type[counter] = per_type.get(counter, 0) + 1
        return state

    def count(self, day: date, event_type: str) -> int:
        return self.daily_counts.get(day, {}).get(event_type, 0)

    def rolling_counts(self, last_day: date, window_days: int) -> dict[str, int]:
        """Events per type over the ``window_days`` days ending with ``last_day`` (inclusive)."""
        first_day = last_day - timedelta(days=window_days - 1)
        totals: dict[str, int] = {}
        for day, per_type in self.daily_counts.items():
            if first_day <= day <= last_day:
                for event_type, n in per_type.items():
                    totals[event_type] = totals.get(event_type, 0) + n
        return totals


@dataclass(slots=True)
class ApplyResult:
    accepted: list[Event] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    too_late: list[Event] = field(default_factory=list)
    # The new absolute count of every (day, type) this call changed, taken before days that fell
    # out of the horizon were dropped from memory (they still have to be written downstream).
    changed: dict[tuple[date, str], int] = field(default_factory=dict)


def horizon_for(newest_event_at: datetime, late_grace: timedelta) -> date:
    """The first day still inside the horizon when the rep's newest event is ``newest_event_at``."""
    return utc_day(newest_event_at - late_grace)


def apply_events(state: RepActivityState, events: Iterable[Event], late_grace: timedelta) -> ApplyResult:
    """Count ``events`` (all of ``state.rep_id``, in stream order) into ``state``.

    An event is *too late* when it is more than ``late_grace`` behind the newest event seen before
    it in stream order. Lateness is judged event by event, not against the newest event of the
    whole call: a backfill that arrives in time order is never late, however long a span one
    batch covers. Events that are all within the grace of each other give the same counts in any
    order and any batching.
    """
    result = ApplyResult()
    for event in events:
        if state.newest_event_at is None or event.occurred_at > state.newest_event_at:
            state.newest_event_at = event.occurred_at
        day = utc_day(event.occurred_at)
        if event.occurred_at < state.newest_event_at - late_grace or day < state.horizon_start:
            result.too_late.append(event)
            continue
        fingerprint = event_fingerprint(event.event_id)
        if fingerprint in state.seen:
            result.duplicates.append(event)
            continue
        state.seen[fingerprint] = day
        per_type = state.daily_counts.setdefault(day, {})
        for counter in event_counters(event):
            per_type[counter] = per_type.get(counter, 0) + 1
            result.changed[(day, counter)] = per_type[counter]
        result.accepted.append(event)
    if state.newest_event_at is not None:
        _drop_days_before(state, horizon_for(state.newest_event_at, late_grace))
    return result


def _drop_days_before(state: RepActivityState, first_kept_day: date) -> None:
    if first_kept_day <= state.horizon_start:
        return
    state.horizon_start = first_kept_day
    for day in [d for d in state.daily_counts if d < first_kept_day]:
        del state.daily_counts[day]
    for fingerprint in [f for f, d in state.seen.items() if d < first_kept_day]:
        del state.seen[fingerprint]
