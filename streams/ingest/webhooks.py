"""Webhook payloads into canonical events by a source's mapping file, and their signatures. Pure.

A payload's items are matched against the mapping's rules in order; the first rule whose ``when``
values all match makes the item one canonical event, validated by the same contract as every other
input. An item no rule matches is *ignored* (a CRM sends many kinds of notification; only some are
sales events) and said so in the answer; an item that matches but does not make a valid event is
*rejected* with its reason and goes to the dead-letter topic like any bad event.

Parsing reuses the CRM import's readers (:mod:`streams.crm`): stage classification (won, lost or
open), timestamps with or without an offset, and amounts.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.ingest import EventResult
from schemas.webhooks import (
    BY_STAGE,
    FieldSpec,
    SignatureScheme,
    SignatureSpec,
    TimestampFormat,
    WebhookMapping,
    WebhookRule,
)
from schemas.wire import MAX_DETAIL_PART_CHARS, MAX_ID_EXCERPT_CHARS
from streams.crm import StageOutcome, classify_stage, parse_timestamp
from streams.ingest.body import HTTP_SOURCE, DecodedBody, TooManyEventsError, UnreadableBodyError

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# Canonical fields that hold numbers; every other field is text (a numeric CRM id becomes "123").
_NUMERIC_FIELDS = frozenset({"amount", "lat", "lon", "accuracy_m", "duration_s"})
_TIMESTAMP_FIELDS = frozenset({"occurred_at", "scheduled_for", "check_out_at"})


# ---------------------------------------------------------------------------------- signatures


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def verify_signature(
    spec: SignatureSpec,
    secret: bytes,
    *,
    headers: Mapping[str, str],
    body: bytes,
    method: str,
    uri: str,
    now: datetime,
) -> str | None:
    """None when the request is signed with ``secret`` and recent; else why it is refused.

    The timestamp is part of what is signed, so an old request cannot be replayed with a new one,
    and one outside ``tolerance_s`` of ``now`` (either way) is refused. Compared in constant time.
    """
    signature = _header(headers, spec.header)
    stamp = _header(headers, spec.timestamp_header)
    if not signature or not stamp:
        return f"missing {spec.header} or {spec.timestamp_header} header"
    try:
        stamp_value = float(stamp)
    except ValueError:
        return f"{spec.timestamp_header} is not a number"
    seconds = stamp_value / 1000 if spec.scheme is SignatureScheme.HUBSPOT_V3 else stamp_value
    age = now.timestamp() - seconds
    if abs(age) > spec.tolerance_s:
        return f"timestamp is {age:+.0f} s from now; the tolerance is {spec.tolerance_s:.0f} s (a replay?)"
    if spec.scheme is SignatureScheme.HUBSPOT_V3:
        content = method.encode() + uri.encode() + body + stamp.encode()
        expected = base64.b64encode(hmac.new(secret, content, hashlib.sha256).digest()).decode()
        given = signature.strip()
    else:
        expected = hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        given = signature.strip().removeprefix("sha256=").lower()
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return "signature does not match"
    return None


def sign_generic(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``generic`` scheme's signature header value, for senders and tests."""
    return "sha256=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_hubspot_v3(secret: bytes, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    content = method.encode() + uri.encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(secret, content, hashlib.sha256).digest()).decode()


# ------------------------------------------------------------------------------------ mapping


class _MappingProblem(ValueError):
    pass


def _resolve(item: Any, path: str) -> Any:
    value = item
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _timestamp(value: Any, fmt: TimestampFormat, zone: tzinfo, name: str) -> datetime:
    if fmt is TimestampFormat.ISO:
        return parse_timestamp(_text(value), zone)
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None:
        raise _MappingProblem(f"{name}: {value!r} is not a Unix timestamp ({fmt.value})")
    seconds = number / 1000 if fmt is TimestampFormat.EPOCH_MS else number
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise _MappingProblem(f"{name}: {value!r} is out of range for {fmt.value}") from None


def _field_value(spec: FieldSpec, item: Any, name: str, zone: tzinfo) -> Any:
    value: Any
    if spec.value is not None:
        value = spec.value
    elif spec.template is not None:
        missing: list[str] = []

        def fill(match: re.Match[str]) -> str:
            found = _resolve(item, match[1])
            if found is None:
                missing.append(match[1])
                return ""
            return _text(found)

        value = _PLACEHOLDER.sub(fill, spec.template)
        if missing:
            value = None
    else:
        value = _resolve(item, spec.path or "")
    if value is None or value == "":
        value = spec.default
    if value is None:
        return None
    if spec.strip_prefix and isinstance(value, str):
        value = value.removeprefix(spec.strip_prefix)
    if spec.synonyms:
        lowered = {k.casefold(): v for k, v in spec.synonyms.items()}
        value = lowered.get(_text(value).casefold(), value)
    if spec.format is not None or name in _TIMESTAMP_FIELDS:
        try:
            return _timestamp(value, spec.format or TimestampFormat.ISO, zone, name)
        except ValueError as exc:
            raise _MappingProblem(f"{name}: {exc}") from None
    if name in _NUMERIC_FIELDS:
        if isinstance(value, bool):
            raise _MappingProblem(f"{name}: {value!r} is not a number")
        return value if isinstance(value, int | float) else Decimal(_text(value).strip() or "x")
    if name == "attributes":
        return value
    if isinstance(value, dict | list):
        raise _MappingProblem(f"{name}: expected a single value, got a JSON {type(value).__name__}")
    return _text(value)


def _matches(rule: WebhookRule, item: Any) -> bool:
    return all(
        (found := _resolve(item, path)) is not None and _text(found) == expected
        for path, expected in rule.when.items()
    )


def _event_document(mapping: WebhookMapping, rule: WebhookRule, item: Any, zone: tzinfo) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, spec in rule.fields.items():
        try:
            value = _field_value(spec, item, name, zone)
        except ArithmeticError:
            raise _MappingProblem(f"{name}: not a number") from None
        if value is not None:
            document[name] = value
    attributes: dict[str, Any] = {}
    for name, spec in rule.attributes.items():
        value = _field_value(spec, item, "attributes", zone)
        if value is not None:
            attributes[name] = value if isinstance(value, str | int | float | bool) else _text(value)
    event_type = rule.type
    if event_type == BY_STAGE:
        stage = document.get("stage")
        if stage is None:
            raise _MappingProblem("stage: missing (a deal_by_stage rule needs the stage)")
        stage = {k.casefold(): v for k, v in mapping.stages.items()}.get(stage.casefold(), stage)
        document["stage"] = stage
        outcome = classify_stage(stage)
        if outcome is StageOutcome.WON:
            event_type = "deal_won"
            document.pop("stage")
            if "amount" not in document:
                # As `import deals` does: still won, worth 0, and marked so it is not averaged.
                document["amount"] = 0
                attributes["amount_missing"] = True
        elif outcome is StageOutcome.LOST:
            event_type = "deal_lost"
            document.pop("stage")
            document.pop("amount", None)
        else:
            event_type = "deal_stage_changed"
            document.pop("amount", None)
    document["type"] = event_type
    if attributes:
        document["attributes"] = attributes
    return document


def _items(mapping: WebhookMapping, payload: Any) -> list[Any]:
    container = _resolve(payload, mapping.items_path) if mapping.items_path else payload
    if container is None:
        raise UnreadableBodyError(f"the payload has nothing at {mapping.items_path!r}")
    return container if isinstance(container, list) else [container]


def map_payload(mapping: WebhookMapping, body: bytes, *, now: datetime, max_events: int) -> DecodedBody:
    """Every item of a webhook payload as an accepted event, a rejected one (with its dead letter),
    or an ignored one. Raises UnreadableBodyError for a body that is not JSON and
    TooManyEventsError past ``max_events`` items."""
    from schemas.events import SALES_EVENT_ADAPTER

    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnreadableBodyError(f"the payload is not JSON: {exc}") from None
    items = _items(mapping, payload)
    if len(items) > max_events:
        raise TooManyEventsError(len(items), max_events)
    zone = ZoneInfo(mapping.timezone)
    decoded = DecodedBody()
    for index, item in enumerate(items):
        rule = next((r for r in mapping.rules if _matches(r, item)), None)
        if rule is None:
            decoded.results.append(
                EventResult(
                    index=index, status="ignored", detail=f"no rule of the {mapping.source} mapping matches"
                )
            )
            continue
        document: dict[str, Any] = {}
        reason = DeadLetterReason.INVALID
        try:
            document = _event_document(mapping, rule, item, zone)
            event = SALES_EVENT_ADAPTER.validate_python(document)
        except _MappingProblem as exc:
            problem = str(exc)
        except ValidationError as exc:
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}"[:MAX_DETAIL_PART_CHARS]
                for e in exc.errors()[:5]
            )
        else:
            decoded.add(index, [event], [])
            continue
        letter = DeadLetter.of(
            reason,
            f"webhook {mapping.source}: {problem}",
            orjson.dumps(item),
            source=HTTP_SOURCE,
            index=index,
            event_id=_excerpt(document.get("event_id")),
            rep_id=_excerpt(document.get("rep_id")),
            rejected_at=now,
        )
        decoded.add(index, [], [letter])
    return decoded


def _excerpt(value: Any) -> str | None:
    return value[:MAX_ID_EXCERPT_CHARS] if isinstance(value, str) else None
