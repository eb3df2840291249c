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
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import ClassVar

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


class CounterLayout:
    """The counters a state holds, in slot order, shared by every state with the same counters.

    A rep's activity stream has eight counters and its deal stream four; each state gets the layout
    of what it has seen, and a counter seen for the first time moves it to a wider one."""

    _interned: ClassVar[dict[tuple[str, ...], CounterLayout]] = {}

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.slot = {name: index for index, name in enumerate(names)}
        self.width = len(names)

    @classmethod
    def of(cls, names: tuple[str, ...]) -> CounterLayout:
        layout = cls._interned.get(names)
        if layout is None:
            layout = cls._interned[names] = cls(names)
        return layout

    def with_counter(self, name: str) -> CounterLayout:
        return CounterLayout.of((*self.names, name))


_NO_COUNTERS = CounterLayout.of(())
# Counts start as two-byte integers; a state whose count passes this becomes four-byte.
_MAX_SHORT_COUNT = 0xFFFF


def _zeros(typecode: str, length: int) -> array[int]:
    return array(typecode, bytes(array(typecode).itemsize * length))


@dataclass(slots=True)
class RepActivityState:
    """One rep's daily counts and remembered event fingerprints, from ``horizon_start`` on.

    ``horizon_start`` is the first day whose data is complete in this state: days before it were
    either never loaded or already dropped.

    The counts are one flat array of 2-byte integers (4-byte once a count passes 65535), a row of
    ``layout.width`` counters per day from day ordinal ``first_day`` on: about 0.6 KiB for a 35-day
    horizon of a rep's activities, where dicts of dicts took about 10 KiB per rep. ``seen`` maps a
    fingerprint to its day; the day objects are shared per day (``_days``), not one per event.
    """

    rep_id: str
    horizon_start: date
    newest_event_at: datetime | None = None
    seen: dict[int, date] = field(default_factory=dict)
    layout: CounterLayout = _NO_COUNTERS
    first_day: int = 0
    counts: array[int] = field(default_factory=lambda: array("H"))
    _days: dict[int, date] = field(default_factory=dict)

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
            state.seen[fingerprint] = state.shared_day(day)
            for counter in counters_of(past.type, past.outcome):
                state.add(day, counter)
        return state

    def shared_day(self, day: date) -> date:
        return self._days.setdefault(day.toordinal(), day)

    def add(self, day: date, counter: str) -> int:
        """Count one more ``counter`` on ``day``; returns the new count."""
        slot = self.layout.slot.get(counter)
        if slot is not None:
            # The common case, kept short: a known counter on a day already in the array.
            index = (day.toordinal() - self.first_day) * self.layout.width + slot
            if 0 <= index < len(self.counts):
                value = self.counts[index] + 1
                if value <= _MAX_SHORT_COUNT or self.counts.typecode == "I":
                    self.counts[index] = value
                    return value
        return self._add_growing(day, counter)

    def _add_growing(self, day: date, counter: str) -> int:
        slot = self.layout.slot.get(counter)
        if slot is None:
            self._widen(counter)
            slot = self.layout.slot[counter]
        width = self.layout.width
        ordinal = day.toordinal()
        if not self.counts:
            self.first_day = ordinal
            self.counts = _zeros(self.counts.typecode, width)
        elif ordinal < self.first_day:
            self.counts[0:0] = _zeros(self.counts.typecode, width * (self.first_day - ordinal))
            self.first_day = ordinal
        rows = len(self.counts) // width
        if ordinal >= self.first_day + rows:
            self.counts.extend(_zeros(self.counts.typecode, width * (ordinal - self.first_day - rows + 1)))
        index = (ordinal - self.first_day) * width + slot
        value = self.counts[index] + 1
        if value > _MAX_SHORT_COUNT and self.counts.typecode == "H":
            self.counts = array("I", self.counts)  # a count past 65535: four bytes per count from now on
        self.counts[index] = value
        return value

    def _widen(self, counter: str) -> None:
        old, new = self.layout, self.layout.with_counter(counter)
        if self.counts:
            rows = len(self.counts) // old.width
            widened = _zeros(self.counts.typecode, new.width * rows)
            for row in range(rows):
                widened[row * new.width : row * new.width + old.width] = self.counts[
                    row * old.width : (row + 1) * old.width
                ]
            self.counts = widened
        self.layout = new

    def count(self, day: date, event_type: str) -> int:
        slot = self.layout.slot.get(event_type)
        row = day.toordinal() - self.first_day
        if slot is None or not self.counts or not 0 <= row < len(self.counts) // self.layout.width:
            return 0
        return self.counts[row * self.layout.width + slot]

    @property
    def daily_counts(self) -> dict[date, dict[str, int]]:
        """The non-zero counts per day and counter (a copy)."""
        width = self.layout.width
        days: dict[date, dict[str, int]] = {}
        for row in range(len(self.counts) // width if width else 0):
            row_counts = self.counts[row * width : (row + 1) * width]
            per_type = {name: n for name, n in zip(self.layout.names, row_counts, strict=True) if n}
            if per_type:
                days[date.fromordinal(self.first_day + row)] = per_type
        return days

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
    shared_days = state._days
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
        day = shared_days.setdefault(day.toordinal(), day)  # state.shared_day, inline: it runs per event
        state.seen[fingerprint] = day
        for counter in event_counters(event):
            result.changed[(day, counter)] = state.add(day, counter)
        result.accepted.append(event)
    if state.newest_event_at is not None:
        _drop_days_before(state, horizon_for(state.newest_event_at, late_grace))
    return result


def _drop_days_before(state: RepActivityState, first_kept_day: date) -> None:
    if first_kept_day <= state.horizon_start:
        return
    state.horizon_start = first_kept_day
    first_kept = first_kept_day.toordinal()
    if state.counts and first_kept > state.first_day:
        rows = len(state.counts) // state.layout.width
        drop = min(rows, first_kept - state.first_day)
        del state.counts[: drop * state.layout.width]
        state.first_day = first_kept
    for ordinal in [o for o in state._days if o < first_kept]:
        del state._days[ordinal]
    for fingerprint in [f for f, d in state.seen.items() if d < first_kept_day]:
        del state.seen[fingerprint]
