"""Dead letters: what we keep of an input we could not use, and why."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict

# Enough of a bad payload to recognise it in `salespulse dlq list` without storing megabytes.
PAYLOAD_EXCERPT_BYTES = 2048


class DeadLetterReason(StrEnum):
    NOT_JSON = "not_json"
    NOT_UTF8 = "not_utf8"
    TOO_LARGE = "too_large"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    KEY_MISMATCH = "key_mismatch"
    TOO_LATE = "too_late"
    # A valid event whose event_id was already counted with different content: the first copy
    # counts, and this one is kept here so the disagreement is seen instead of silently dropped.
    CONFLICT = "conflict"


class DeadLetter(BaseModel):
    """One rejected input. ``index`` is the position inside a batch message (None for a single event)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: DeadLetterReason
    detail: str
    source: str
    partition: int | None = None
    offset: int | None = None
    index: int | None = None
    event_id: str | None = None
    rep_id: str | None = None
    payload_excerpt: str
    payload_truncated: bool = False
    rejected_at: AwareDatetime

    @classmethod
    def of(
        cls,
        reason: DeadLetterReason,
        detail: str,
        payload: bytes,
        *,
        source: str,
        rejected_at: datetime,
        partition: int | None = None,
        offset: int | None = None,
        index: int | None = None,
        event_id: str | None = None,
        rep_id: str | None = None,
    ) -> DeadLetter:
        """A dead letter for ``payload``, keeping an excerpt of it (see ``excerpt``)."""
        excerpt, truncated = cls.excerpt(payload)
        return cls(
            reason=reason,
            detail=detail,
            source=source,
            partition=partition,
            offset=offset,
            index=index,
            event_id=event_id,
            rep_id=rep_id,
            payload_excerpt=excerpt,
            payload_truncated=truncated,
            rejected_at=rejected_at,
        )

    @staticmethod
    def excerpt(payload: bytes) -> tuple[str, bool]:
        """A printable excerpt of raw bytes: invalid UTF-8 is shown with replacement characters."""
        cut = payload[:PAYLOAD_EXCERPT_BYTES]
        return cut.decode("utf-8", errors="replace"), len(payload) > PAYLOAD_EXCERPT_BYTES
