"""The canonical event contract.

Every event that enters salespulse, from a file, the broker or HTTP, is one of the models below,
selected by its ``type`` field (a pydantic discriminated union). The models are strict about the
things that would make numbers lie later: timestamps must carry an offset, amounts are decimals,
counts and coordinates are range-checked. Unknown fields are rejected so that a typo in a producer
shows up as a dead letter instead of a silently ignored value.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    model_validator,
)

# Absurd timestamps are almost always a unit bug (seconds vs milliseconds) or an unset clock on a
# device. Rejecting them at the boundary keeps them out of every window and roll-up.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2100, 1, 1, tzinfo=UTC)

MAX_ID_LENGTH = 128
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_STRING = 1024
# Decimal(18, 2) in ClickHouse: 16 integer digits.
MAX_AMOUNT = Decimal("9999999999999999.99")


# What an RFC 3339 timestamp starts with. Pydantic alone would also take numbers (and numeric
# strings) as Unix seconds *or* milliseconds, guessing the unit: exactly the bug the range check
# below exists to catch, and not what the contract promises.
_RFC3339_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339_text(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339_START.match(value):
        return value
    raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-05-04T09:30:00+02:00")


def _within_event_time_range(value: datetime) -> datetime:
    if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
        raise ValueError(
            f"timestamp {value.isoformat()} is outside the accepted range "
            f"[{EARLIEST_EVENT_TIME.year}, {LATEST_EVENT_TIME.year}); check the clock and the units"
        )
    return value.astimezone(UTC)


def _valid_amount(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("amount must be a finite number")
    if value < 0:
        raise ValueError("amount must not be negative")
    if value > MAX_AMOUNT:
        raise ValueError(f"amount must be at most {MAX_AMOUNT}")
    # Stored as Decimal(18, 2): round half-even to cents once, here, so every layer agrees.
    # copy_abs: "-0" passes the sign check above and would otherwise be stored and shown as "-0.00".
    return value.copy_abs().quantize(Decimal("0.01"))


def _bounded_attributes(value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes are allowed, got {len(value)}")
    for key, item in value.items():
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"attribute {key!r} must be a finite number")
        if isinstance(item, str) and len(item) > MAX_ATTRIBUTE_STRING:
            raise ValueError(f"attribute {key!r} is longer than {MAX_ATTRIBUTE_STRING} characters")
    return value


Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)]
EventTime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text), AfterValidator(_within_event_time_range)]
Amount = Annotated[Decimal, AfterValidator(_valid_amount)]
AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Attributes = Annotated[dict[AttributeKey, str | int | float | bool], AfterValidator(_bounded_attributes)]


class CallOutcome(StrEnum):
    CONNECTED = "connected"
    NO_ANSWER = "no_answer"
    VOICEMAIL = "voicemail"
    BUSY = "busy"


class EmailDirection(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class EventKind(StrEnum):
    """Which topic an event belongs on: activities feed the leading indicators, deals the lagging ones."""

    ACTIVITY = "activity"
    DEAL = "deal"


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_max_length=MAX_ATTRIBUTE_STRING)

    event_id: Identifier
    rep_id: Identifier
    occurred_at: EventTime
    account_id: Identifier | None = None
    attributes: Attributes | None = None

    # Not a field: the topic an event type belongs on is a property of the type, not of the payload.
    kind: ClassVar[EventKind] = EventKind.ACTIVITY


class CallEvent(_EventBase):
    type: Literal["call"]
    outcome: CallOutcome | None = None
    duration_s: Annotated[float, Field(ge=0, le=86_400, allow_inf_nan=False)] | None = None


class EmailEvent(_EventBase):
    type: Literal["email"]
    direction: EmailDirection | None = None


class MeetingScheduledEvent(_EventBase):
    type: Literal["meeting_scheduled"]
    scheduled_for: EventTime | None = None


class MeetingHeldEvent(_EventBase):
    type: Literal["meeting_held"]


class VisitEvent(_EventBase):
    type: Literal["visit"]
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    accuracy_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None = None
    check_out_at: EventTime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> VisitEvent:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        if self.check_out_at is not None and self.check_out_at < self.occurred_at:
            raise ValueError("check_out_at must not be before occurred_at (the check-in)")
        return self


class VisitCheckOutEvent(_EventBase):
    """The end of a visit sent apart from its check-in (a mobile app checks in on arrival and out
    on leaving). ``visit_id`` is the ``event_id`` of the check-in (a ``visit`` event); ``occurred_at``
    is the check-out time. Its own ``event_id`` makes it idempotent like every event; when a visit
    gets several check-outs, the latest one counts."""

    type: Literal["visit_check_out"]
    visit_id: Identifier
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    accuracy_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> VisitCheckOutEvent:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        return self


class DemoEvent(_EventBase):
    type: Literal["demo"]


class ProposalSentEvent(_EventBase):
    type: Literal["proposal_sent"]
    deal_id: Identifier | None = None
    amount: Amount | None = None


class DealCreatedEvent(_EventBase):
    kind: ClassVar[EventKind] = EventKind.DEAL
    type: Literal["deal_created"]
    deal_id: Identifier
    amount: Amount | None = None
    stage: Identifier | None = None
    product: Identifier | None = None


class DealStageChangedEvent(_EventBase):
    kind: ClassVar[EventKind] = EventKind.DEAL
    type: Literal["deal_stage_changed"]
    deal_id: Identifier
    stage: Identifier


class DealWonEvent(_EventBase):
    kind: ClassVar[EventKind] = EventKind.DEAL
    type: Literal["deal_won"]
    deal_id: Identifier
    amount: Amount


class DealLostEvent(_EventBase):
    kind: ClassVar[EventKind] = EventKind.DEAL
    type: Literal["deal_lost"]
    deal_id: Identifier
    reason: Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_STRING)] | None = None


ActivityEvent: TypeAlias = (
    CallEvent
    | EmailEvent
    | MeetingScheduledEvent
    | MeetingHeldEvent
    | VisitEvent
    | VisitCheckOutEvent
    | DemoEvent
    | ProposalSentEvent
)
DealEvent: TypeAlias = DealCreatedEvent | DealStageChangedEvent | DealWonEvent | DealLostEvent
SalesEvent: TypeAlias = Annotated[ActivityEvent | DealEvent, Field(discriminator="type")]

EVENT_MODELS: tuple[type[_EventBase], ...] = (
    CallEvent,
    EmailEvent,
    MeetingScheduledEvent,
    MeetingHeldEvent,
    VisitEvent,
    VisitCheckOutEvent,
    DemoEvent,
    ProposalSentEvent,
    DealCreatedEvent,
    DealStageChangedEvent,
    DealWonEvent,
    DealLostEvent,
)
EVENT_TYPES: tuple[str, ...] = tuple(
    model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
    for model in EVENT_MODELS
)
ACTIVITY_TYPES: tuple[str, ...] = tuple(
    t for t, m in zip(EVENT_TYPES, EVENT_MODELS, strict=True) if m.kind is EventKind.ACTIVITY
)
DEAL_TYPES: tuple[str, ...] = tuple(
    t for t, m in zip(EVENT_TYPES, EVENT_MODELS, strict=True) if m.kind is EventKind.DEAL
)

SALES_EVENT_ADAPTER: TypeAdapter[ActivityEvent | DealEvent] = TypeAdapter(SalesEvent)

__all__ = [
    "ACTIVITY_TYPES",
    "DEAL_TYPES",
    "EVENT_MODELS",
    "EVENT_TYPES",
    "SALES_EVENT_ADAPTER",
    "ActivityEvent",
    "CallEvent",
    "CallOutcome",
    "DealCreatedEvent",
    "DealEvent",
    "DealLostEvent",
    "DealStageChangedEvent",
    "DealWonEvent",
    "DemoEvent",
    "EmailDirection",
    "EmailEvent",
    "EventKind",
    "MeetingHeldEvent",
    "MeetingScheduledEvent",
    "ProposalSentEvent",
    "SalesEvent",
    "VisitCheckOutEvent",
    "VisitEvent",
]
