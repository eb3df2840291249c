"""Request bodies of ``POST /v1/events``: one event, a JSON array, or NDJSON, into per-event results.
Pure.

Every event goes through the wire format's one boundary (:func:`schemas.wire.decode_message`), so
an event is valid over HTTP exactly when it is valid on the broker; a bad event gets its dead letter
(source ``http``, its index) and never holds back the good ones beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import orjson

from schemas.deadletter import DeadLetter
from schemas.ingest import EventResult
from schemas.wire import Event, MessageOrigin, decode_message

HTTP_SOURCE = "http"
JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset(
    {"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"}
)


class BodyFormat(StrEnum):
    JSON = "json"
    NDJSON = "ndjson"


def body_format(content_type: str | None) -> BodyFormat | None:
    """The format a Content-Type names (parameters such as ``charset`` ignored), or None."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return BodyFormat.JSON
    if media in NDJSON_TYPES:
        return BodyFormat.NDJSON
    return None


class TooManyEventsError(ValueError):
    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"the body holds {count} events; the limit is {limit} per request")
        self.count = count
        self.limit = limit


class UnreadableBodyError(ValueError):
    """The body as a whole is not JSON (or not UTF-8): no event can be told apart from another."""


@dataclass(slots=True)
class DecodedBody:
    """Results in request order; ``events`` are the accepted ones, ``dead_letters`` the rejected."""

    results: list[EventResult] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add(self, index: int, decoded_events: list[Event], dead_letters: list[DeadLetter]) -> None:
        for event in decoded_events:
            self.events.append(event)
            self.results.append(
                EventResult(index=index, status="accepted", event_id=event.event_id, type=event.type)
            )
        for letter in dead_letters:
            letter = letter.model_copy(update={"index": index})
            self.dead_letters.append(letter)
            self.results.append(
                EventResult(
                    index=index,
                    status="rejected",
                    event_id=letter.event_id,
                    reason=letter.reason.value,
                    detail=letter.detail,
                )
            )


def _items_of_array(body: bytes) -> list[bytes] | None:
    """The items of a top-level JSON array, each re-encoded, or None when the body is no array."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnreadableBodyError(f"the body is not JSON: {exc}") from None
    if not isinstance(document, list):
        return None
    return [orjson.dumps(item) for item in document]


def decode_body(
    body: bytes, fmt: BodyFormat, *, now: datetime, max_events: int, max_event_bytes: int
) -> DecodedBody:
    """Decode every event of ``body``; raises TooManyEventsError past ``max_events`` (nothing is
    accepted then) and UnreadableBodyError when a JSON body is not JSON at all."""
    origin = MessageOrigin(HTTP_SOURCE)
    decoded = DecodedBody()
    if fmt is BodyFormat.NDJSON:
        lines = [line.strip() for line in body.split(b"\n")]
        items = [line for line in lines if line]
    else:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UnreadableBodyError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
        array = _items_of_array(body)
        items = array if array is not None else [body]
    if len(items) > max_events:
        raise TooManyEventsError(len(items), max_events)
    for index, item in enumerate(items):
        message = decode_message(None, item, origin, now, max_event_bytes)
        decoded.add(index, message.events, message.dead_letters)
    return decoded
