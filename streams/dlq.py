"""What ``salespulse dlq replay`` may send again, and why the rest cannot be: pure, no I/O.

A dead letter keeps the first 2 KiB of what was rejected. Once the cause is fixed (a grace period
raised for a backfill, a size limit raised, a producer's key corrected), the stored excerpt can go
through the pipeline again, but only when it *is* the whole input and it passes the very checks the
worker applies: the wire format's one boundary (``schemas.wire.decode_message``) and the lateness
rule against the rep's newest stored event on the same stream. Anything else would only be rejected
again, or, worse, be a different input than the one that was rejected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from pydantic import ValidationError

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import EventKind
from schemas.reps import Rep
from schemas.settings import TopicNames
from schemas.wire import Event, MessageOrigin, decode_message

# Dead letters written for rep records start their detail with this (the worker's reps topic and
# `salespulse reps load` alike).
REP_RECORD_DETAIL: Final = "invalid rep record"
CRM_ROW_DETAIL: Final = "invalid CRM "

WHY_TRUNCATED: Final = (
    "only the first 2 KiB of the input were kept; re-send the whole input from its producer"
)
WHY_NOT_UTF8: Final = (
    "the input was not UTF-8 and its excerpt shows the bad bytes as U+FFFD, so it is not the "
    "original; fix the producer's encoding and re-send"
)
WHY_CONFLICT: Final = (
    "the first event with this event_id is stored and counts (first wins); send a correction "
    "as a new event with its own event_id"
)
WHY_CRM_ROW: Final = "a CRM export row, not an event: fix the export and run `salespulse import` again"


@dataclass(frozen=True, slots=True)
class Republish:
    """Send ``value`` to ``topic`` keyed by ``key``: the dead letter's excerpt, verbatim."""

    topic: str
    key: bytes
    value: bytes
    event: Event | None = None  # None for a rep record


@dataclass(frozen=True, slots=True)
class Skip:
    """Not replayable; ``why`` says what to do instead."""

    why: str


def plan_replay(
    letter: DeadLetter, topics: TopicNames, max_message_bytes: int, now: datetime
) -> Republish | Skip:
    """Whether the stored excerpt of ``letter`` is a whole input that is valid today, and where it
    goes. Lateness is judged separately (:func:`lateness`), with the stored history at hand."""
    if letter.reason is DeadLetterReason.CONFLICT:
        return Skip(WHY_CONFLICT)
    if letter.payload_truncated:
        return Skip(WHY_TRUNCATED)
    if letter.reason is DeadLetterReason.NOT_UTF8:
        return Skip(WHY_NOT_UTF8)
    if letter.detail.startswith(CRM_ROW_DETAIL):
        return Skip(WHY_CRM_ROW)
    payload = letter.payload_excerpt.encode("utf-8")
    if letter.source == topics.reps or letter.detail.startswith(REP_RECORD_DETAIL):
        try:
            rep = Rep.model_validate_json(payload)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "record"
            return Skip(f"still not a valid rep record ({where}: {first['msg']}); fix the record and load it")
        return Republish(topics.reps, rep.rep_id.encode("utf-8"), payload)
    # Decoded without a key: the key is the event's own rep_id, which is also what mends a
    # key_mismatch (the event goes to its rep's partition).
    decoded = decode_message(None, payload, MessageOrigin(letter.source), now, max_message_bytes)
    if decoded.dead_letters:
        again = decoded.dead_letters[0]
        return Skip(f"still {again.reason.value}: {again.detail}")
    if len(decoded.events) != 1:
        return Skip(f"holds {len(decoded.events)} events, not one; re-send them from their producer")
    event = decoded.events[0]
    topic = topics.activities if event.kind is EventKind.ACTIVITY else topics.deals
    return Republish(topic, event.rep_id.encode("utf-8"), payload, event)


def lateness(
    event: Event, newest: Mapping[tuple[str, EventKind], datetime], late_grace: timedelta
) -> Skip | None:
    """A Skip when ``event`` is still more than ``late_grace`` behind its rep's newest stored event
    on its stream (the worker would dead-letter it as too_late again), else None."""
    latest = newest.get((event.rep_id, event.kind))
    if latest is None or event.occurred_at >= latest - late_grace:
        return None
    behind = latest - event.occurred_at
    # Whole days, rounded up: the grace that would let it through.
    needed = behind.days + (1 if behind % timedelta(days=1) else 0)
    return Skip(
        f"still too late: {behind.total_seconds() / 86400:.1f} days behind rep {event.rep_id}'s newest "
        f"{event.kind.value} event ({latest.isoformat()}); run with SALESPULSE_LATE_GRACE_DAYS={needed} "
        "or more (the workers too) and replay again"
    )
