"""The HTTP ingest service's contract: API tokens, per-event results, and check-ins.

Tokens are stored only as hashes (:class:`TokenRecord`); the secret is shown once when created.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.events import MAX_ID_LENGTH, EventTime, Identifier


class TokenScope(StrEnum):
    """What a token may do: post events (a dialer, a CRM integration) or check in (a rep's phone)."""

    EVENTS_WRITE = "events:write"
    CHECKIN = "checkin"


TokenName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class TokenRecord(BaseModel):
    """A stored API token: its id (public, part of the token), the SHA-256 of the whole token, and
    what it may do. ``rep_id`` binds a ``checkin`` token to one rep."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
    name: TokenName
    token_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    scopes: tuple[TokenScope, ...]
    rep_id: Identifier | None = None
    created_at: AwareDatetime
    revoked_at: AwareDatetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class EventResult(BaseModel):
    """The outcome of one event of a request: accepted (published and acknowledged) or rejected
    with the dead-letter reason. ``index`` is its position in the request (0 for a single object;
    the line among non-blank lines for NDJSON; the item of a webhook payload)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    status: Literal["accepted", "rejected", "ignored"]
    event_id: str | None = None
    type: str | None = None
    reason: str | None = None
    detail: str | None = None


class IngestResponse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    accepted: int
    rejected: int
    ignored: int = 0
    results: list[EventResult]


class CheckInAction(StrEnum):
    CHECK_IN = "check_in"
    CHECK_OUT = "check_out"


class CheckIn(BaseModel):
    """What the check-in page sends: one tap, with where and when it happened on the phone.

    ``client_id`` is made by the page once per tap and kept with a queued check-in, so a re-send
    after a lost answer is the same event (its ``event_id`` derives from it). ``visit_id`` of a
    check-out is the ``event_id`` of the check-in it ends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
    action: CheckInAction
    account_id: Identifier
    occurred_at: EventTime
    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None
    accuracy_m: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None = None
    visit_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)] | None = None


class CheckInResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    client_id: str
    event_id: str
    action: CheckInAction
    account_id: str
    status: Literal["verified", "out_of_range", "unlocated", "rejected"]
    distance_m: float | None = None
    radius_m: float | None = None
    detail: str | None = None
    occurred_at: datetime | None = None


__all__ = [
    "CheckIn",
    "CheckInAction",
    "CheckInResult",
    "EventResult",
    "IngestResponse",
    "TokenRecord",
    "TokenScope",
]
