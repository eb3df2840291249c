"""Webhook mapping files: how one source's JSON payloads become canonical events.

One YAML file per source (``<source>.yaml`` in ``SALESPULSE_WEBHOOK_DIR``) says how the source
signs its requests and which canonical event each payload item becomes: rules matched on field
values, each naming the event type and where every canonical field comes from (a dotted path into
the item, a constant, or a template), with value synonyms and timestamp formats, the same ideas as
``salespulse import --map``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A rule's ``type`` may also be this: won, lost or a stage change, decided by the stage value.
BY_STAGE = "deal_by_stage"


class SignatureScheme(StrEnum):
    """``generic``: hex HMAC-SHA256 with the shared secret over ``<timestamp>.<raw body>``, the
    timestamp (Unix seconds) in its own header. ``hubspot_v3``: HubSpot's v3 signature, base64
    HMAC-SHA256 with the app's client secret over method + URI + raw body + timestamp (ms)."""

    GENERIC = "generic"
    HUBSPOT_V3 = "hubspot_v3"


class TimestampFormat(StrEnum):
    ISO = "iso"  # RFC 3339 / ISO 8601, naive ones in the mapping's timezone
    EPOCH_MS = "epoch_ms"
    EPOCH_S = "epoch_s"


class SignatureSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: SignatureScheme = SignatureScheme.GENERIC
    header: str = "X-Salespulse-Signature"
    timestamp_header: str = "X-Salespulse-Timestamp"
    tolerance_s: Annotated[float, Field(gt=0, le=3600)] = 300.0


class FieldSpec(BaseModel):
    """Where one canonical field comes from. Exactly one of ``path``, ``value`` and ``template``.

    ``path`` is dotted (``properties.amount.value``; a number indexes a list); ``template`` holds
    ``{dotted.path}`` placeholders (``hubspot:{eventId}``). Then, in order: ``strip_prefix`` is
    removed, ``synonyms`` map the value (case-insensitive; unknown values pass unchanged), and a
    timestamp field is read with ``format``. ``default`` stands in for a missing value.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    value: str | int | float | bool | None = None
    template: str | None = None
    strip_prefix: str | None = None
    synonyms: dict[str, str] = Field(default_factory=dict)
    format: TimestampFormat | None = None
    default: str | int | float | bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_path(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        given = [n for n in ("path", "value", "template") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of path, value and template (got {given or 'none'})")
        return self


class WebhookRule(BaseModel):
    """Items whose fields equal every ``when`` value (compared as text) become a ``type`` event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, str] = Field(default_factory=dict)
    type: str
    fields: dict[str, FieldSpec]
    # For type deal_by_stage: a stage (after synonyms) that is won or lost makes deal_won / deal_lost.
    attributes: dict[str, FieldSpec] = Field(default_factory=dict)


class WebhookMapping(BaseModel):
    """A source's mapping file. ``items_path`` names the list of items in a payload (empty: the
    payload itself, a list or one object)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    signature: SignatureSpec = SignatureSpec()
    items_path: str = ""
    timezone: str = "UTC"
    rules: list[WebhookRule] = Field(min_length=1)
    stages: dict[str, str] = Field(default_factory=dict)


__all__ = [
    "BY_STAGE",
    "FieldSpec",
    "SignatureScheme",
    "SignatureSpec",
    "TimestampFormat",
    "WebhookMapping",
    "WebhookRule",
]
