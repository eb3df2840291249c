"""The event contract and the wire format, against an oracle that judges every item on its own.

A batch message mixes good events with bad items of every kind we know of; exactly the good ones must
come out as events, in order, and every bad one as exactly one dead letter with the right reason and index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.deadletter import PAYLOAD_EXCERPT_BYTES, DeadLetterReason
from schemas.events import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    EVENT_MODELS,
    EVENT_TYPES,
    MAX_AMOUNT,
    MAX_ATTRIBUTE_STRING,
    MAX_ATTRIBUTES,
    SALES_EVENT_ADAPTER,
    CallOutcome,
    DealWonEvent,
    EmailDirection,
    EventKind,
)
from schemas.reps import ManagementMode, Rep
from schemas.wire import DEFAULT_MAX_MESSAGE_BYTES, Event, MessageOrigin, decode_message, encode_batch

NOW = datetime(2030, 6, 1, 12, tzinfo=UTC)
ORIGIN = MessageOrigin(source="salespulse.activities", partition=3, offset=1234)
KEY = "rep-007"
CENT = Decimal("0.01")
MODEL_BY_TYPE = dict(zip(EVENT_TYPES, EVENT_MODELS, strict=True))
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies for valid, JSON-shaped events -----------------------------------------------------------

# Identifiers without surrounding whitespace (which the contract strips) and without surrogates (not UTF-8).
identifiers = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "Pd", "Pc")), min_size=1, max_size=40
)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
# A day inside each end of [2000, 2100) so that any offset keeps the instant inside the accepted range.
# (Hypothesis takes naive bounds and attaches the zones itself.)
instants = st.datetimes(
    min_value=datetime(2000, 1, 2),  # noqa: DTZ001
    max_value=datetime(2099, 12, 30),  # noqa: DTZ001
    timezones=st.just(UTC) | offsets,
)
timestamps = instants.map(datetime.isoformat)
# Sent as strings (exact) with up to four decimals, to exercise rounding to cents.
amounts = st.decimals(min_value=0, max_value=Decimal("1e15"), places=4).map(str)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
attribute_values = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=30),
    st.integers(min_value=-(2**53), max_value=2**53),
    finite_floats,
    st.booleans(),
)
attributes = st.dictionaries(
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=20), attribute_values, max_size=4
)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


TYPE_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "call": {
        "outcome": _optional(st.sampled_from([o.value for o in CallOutcome])),
        "duration_s": _optional(st.floats(min_value=0, max_value=86_400)),
    },
    "email": {"direction": _optional(st.sampled_from([d.value for d in EmailDirection]))},
    "meeting_scheduled": {"scheduled_for": _optional(timestamps)},
    "meeting_held": {},
    "visit": {
        "lat": _optional(st.floats(min_value=-90, max_value=90)),
        "lon": _optional(st.floats(min_value=-180, max_value=180)),
        "accuracy_m": _optional(st.floats(min_value=0, max_value=100_000)),
        "check_out_at": _optional(timestamps),
    },
    "visit_check_out": {
        "visit_id": identifiers,
        "lat": _optional(st.floats(min_value=-90, max_value=90)),
        "lon": _optional(st.floats(min_value=-180, max_value=180)),
        "accuracy_m": _optional(st.floats(min_value=0, max_value=100_000)),
    },
    "demo": {},
    "proposal_sent": {"deal_id": _optional(identifiers), "amount": _optional(amounts)},
    "deal_created": {
        "deal_id": identifiers,
        "amount": _optional(amounts),
        "stage": _optional(identifiers),
        "product": _optional(identifiers),
    },
    "deal_stage_changed": {"deal_id": identifiers, "stage": identifiers},
    "deal_won": {"deal_id": identifiers, "amount": amounts},
    "deal_lost": {
        "deal_id": identifiers,
        "reason": _optional(st.text(alphabet=st.characters(codec="utf-8"))),
    },
}


def _consistent_visit(d: dict[str, Any]) -> dict[str, Any]:
    """A visit has a position (lat and lon) or none, and checks out no earlier than it checks in."""
    if d["type"] not in ("visit", "visit_check_out"):
        return d
    fixed = dict(d)
    if fixed["lat"] is None or fixed["lon"] is None:
        fixed["lat"] = fixed["lon"] = None
    if d["type"] == "visit_check_out":
        return fixed
    check_out = fixed["check_out_at"]
    if check_out is not None and datetime.fromisoformat(check_out) < datetime.fromisoformat(
        fixed["occurred_at"]
    ):
        fixed["check_out_at"] = None
    return fixed


def event_dicts() -> st.SearchStrategy[dict[str, Any]]:
    """Valid events of every type for the rep ``KEY``, as a producer would send them."""

    def for_type(event_type: str) -> st.SearchStrategy[dict[str, Any]]:
        fields = {
            "type": st.just(event_type),
            "event_id": identifiers,
            "rep_id": st.just(KEY),
            "occurred_at": timestamps,
            "account_id": _optional(identifiers),
            "attributes": _optional(attributes),
            **TYPE_FIELDS[event_type],
        }
        # Optional fields are sometimes sent as null and sometimes left out; both mean "not given".
        return (
            st.fixed_dictionaries(fields)
            .map(_consistent_visit)
            .flatmap(
                lambda d: st.booleans().map(
                    lambda drop: {k: v for k, v in d.items() if v is not None or not drop}
                )
            )
        )

    return st.sampled_from(EVENT_TYPES).flatmap(for_type)


# --- the oracle ---------------------------------------------------------------------------------------


def oracle(item: Any, key: str | None) -> Event | DeadLetterReason:
    """Judge one item on its own, with the model for its type rather than the discriminated union."""
    if not isinstance(item, dict):
        return DeadLetterReason.NOT_AN_OBJECT
    if "type" not in item:
        return DeadLetterReason.INVALID
    event_type = item["type"]
    model = MODEL_BY_TYPE.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        return DeadLetterReason.UNKNOWN_TYPE
    try:
        event = model.model_validate(item)
    except ValidationError:
        return DeadLetterReason.INVALID
    if key is not None and event.rep_id != key:
        return DeadLetterReason.KEY_MISMATCH
    return event  # type: ignore[return-value]


@dataclass(frozen=True)
class Item:
    value: Any
    # None for a good event, otherwise the reason it must be rejected with.
    expected: DeadLetterReason | None


def _won(event: dict[str, Any], amount: Any) -> dict[str, Any]:
    return {
        "type": "deal_won",
        "event_id": event["event_id"],
        "rep_id": event["rep_id"],
        "occurred_at": event["occurred_at"],
        "deal_id": "d-1",
        "amount": amount,
    }


# Each takes a valid event and breaks it in one known way.
BREAKERS: dict[str, tuple[DeadLetterReason, Any]] = {
    "unknown type": (DeadLetterReason.UNKNOWN_TYPE, lambda e: {**e, "type": "telepathy"}),
    "type not a string": (DeadLetterReason.UNKNOWN_TYPE, lambda e: {**e, "type": 42}),
    "missing type": (DeadLetterReason.INVALID, lambda e: {k: v for k, v in e.items() if k != "type"}),
    "missing event_id": (DeadLetterReason.INVALID, lambda e: {k: v for k, v in e.items() if k != "event_id"}),
    "blank event_id": (DeadLetterReason.INVALID, lambda e: {**e, "event_id": "   "}),
    "naive timestamp": (DeadLetterReason.INVALID, lambda e: {**e, "occurred_at": "2024-05-01T10:00:00"}),
    "year 1970": (DeadLetterReason.INVALID, lambda e: {**e, "occurred_at": "1970-01-01T00:00:00Z"}),
    "epoch zero": (DeadLetterReason.INVALID, lambda e: {**e, "occurred_at": 0}),
    "year 2200": (DeadLetterReason.INVALID, lambda e: {**e, "occurred_at": "2200-01-01T00:00:00Z"}),
    "negative amount": (DeadLetterReason.INVALID, lambda e: _won(e, "-0.01")),
    "NaN amount": (DeadLetterReason.INVALID, lambda e: _won(e, "NaN")),
    "Infinity amount": (DeadLetterReason.INVALID, lambda e: _won(e, "Infinity")),
    "-Infinity amount": (DeadLetterReason.INVALID, lambda e: _won(e, "-Infinity")),
    "amount too large": (DeadLetterReason.INVALID, lambda e: _won(e, 1e300)),
    "amount not a number": (DeadLetterReason.INVALID, lambda e: _won(e, "lots")),
    "huge attribute string": (
        DeadLetterReason.INVALID,
        lambda e: {**e, "attributes": {"note": "x" * (MAX_ATTRIBUTE_STRING + 1)}},
    ),
    "too many attributes": (
        DeadLetterReason.INVALID,
        lambda e: {**e, "attributes": {f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)}},
    ),
    "nested attribute": (DeadLetterReason.INVALID, lambda e: {**e, "attributes": {"a": {"b": 1}}}),
    "unknown field": (DeadLetterReason.INVALID, lambda e: {**e, "colour": "blue"}),
    "key mismatch": (DeadLetterReason.KEY_MISMATCH, lambda e: {**e, "rep_id": "someone-else"}),
}

# JSON numbers as orjson writes them: integers within 64 bits.
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
not_objects = st.one_of(
    st.none(), st.booleans(), int64s, finite_floats, st.text(max_size=10), st.lists(int64s, max_size=3)
)


@st.composite
def items(draw: st.DrawFn) -> Item:
    kind = draw(st.sampled_from(["good", "good", "not an object", *BREAKERS]))
    if kind == "not an object":
        return Item(draw(not_objects), DeadLetterReason.NOT_AN_OBJECT)
    event = draw(event_dicts())
    if kind == "good":
        return Item(event, None)
    reason, breaker = BREAKERS[kind]
    return Item(breaker(event), reason)


# --- properties -----------------------------------------------------------------------------------------


@FAST
@given(st.lists(event_dicts(), min_size=1, max_size=8))
def test_valid_events_round_trip_through_the_wire(raw: list[dict[str, Any]]) -> None:
    events = [SALES_EVENT_ADAPTER.validate_python(item) for item in raw]
    decoded = decode_message(KEY.encode(), encode_batch(events), ORIGIN, NOW)
    assert decoded.dead_letters == []
    assert decoded.events == events


@FAST
@given(event_dicts())
def test_one_event_as_a_plain_object_is_accepted(raw: dict[str, Any]) -> None:
    decoded = decode_message(KEY.encode(), orjson.dumps(raw), ORIGIN, NOW)
    assert decoded.dead_letters == []
    assert decoded.events == [SALES_EVENT_ADAPTER.validate_python(raw)]


@FAST
@given(event_dicts())
def test_time_is_normalised_to_utc_and_amounts_to_cents(raw: dict[str, Any]) -> None:
    event = SALES_EVENT_ADAPTER.validate_python(raw)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at == datetime.fromisoformat(raw["occurred_at"])  # the same instant
    amount = getattr(event, "amount", None)
    if raw.get("amount") is not None:
        assert amount == Decimal(raw["amount"]).quantize(CENT, rounding=ROUND_HALF_EVEN)
        assert amount.as_tuple().exponent == -2
    assert event.rep_id == raw["rep_id"]
    assert event.type == raw["type"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(items(), min_size=1, max_size=12))
def test_a_batch_keeps_exactly_the_good_events_and_rejects_each_bad_item_once(batch: list[Item]) -> None:
    values = [item.value for item in batch]
    decoded = decode_message(KEY.encode(), orjson.dumps(values), ORIGIN, NOW)

    judged = [oracle(value, KEY) for value in values]
    # The generator and the oracle agree on what each item is...
    for item, verdict in zip(batch, judged, strict=True):
        assert (verdict if isinstance(verdict, DeadLetterReason) else None) == item.expected, item
    # ...and the decoder agrees with both.
    assert len(decoded.events) + len(decoded.dead_letters) == len(batch)
    assert decoded.events == [v for v in judged if not isinstance(v, DeadLetterReason)]
    expected_letters = [(i, v) for i, v in enumerate(judged) if isinstance(v, DeadLetterReason)]
    assert [(d.index, d.reason) for d in decoded.dead_letters] == expected_letters
    for letter in decoded.dead_letters:
        assert (letter.source, letter.partition, letter.offset) == (
            ORIGIN.source,
            ORIGIN.partition,
            ORIGIN.offset,
        )
        assert letter.rejected_at == NOW
        assert letter.detail
        assert letter.payload_excerpt
        assert len(letter.payload_excerpt.encode()) <= PAYLOAD_EXCERPT_BYTES
        bad = values[letter.index] if letter.index is not None else None
        if isinstance(bad, dict) and isinstance(bad.get("event_id"), str):
            assert letter.event_id == bad["event_id"][:128]
        if isinstance(bad, dict) and isinstance(bad.get("rep_id"), str):
            assert letter.rep_id == bad["rep_id"]


@FAST
@given(items())
def test_a_single_object_message_is_judged_like_a_batch_item_but_without_an_index(item: Item) -> None:
    decoded = decode_message(KEY.encode(), orjson.dumps(item.value), ORIGIN, NOW)
    if isinstance(item.value, list):
        return  # a list value is a batch, covered above
    if item.expected is None:
        assert len(decoded.events) == 1
        assert decoded.dead_letters == []
    else:
        assert decoded.events == []
        assert [(d.index, d.reason) for d in decoded.dead_letters] == [(None, item.expected)]


@FAST
@given(st.lists(event_dicts(), min_size=1, max_size=4), st.data())
def test_a_truncated_message_is_one_not_json_dead_letter(
    raw: list[dict[str, Any]], data: st.DataObject
) -> None:
    payload = orjson.dumps(raw)
    cut = payload[: data.draw(st.integers(min_value=0, max_value=len(payload) - 1))]
    # Cutting inside a multi-byte character also breaks UTF-8, which is checked first.
    try:
        cut.decode("utf-8")
        reason = DeadLetterReason.NOT_JSON
    except UnicodeDecodeError:
        reason = DeadLetterReason.NOT_UTF8
    decoded = decode_message(KEY.encode(), cut, ORIGIN, NOW)
    assert decoded.events == []
    assert [(d.reason, d.index) for d in decoded.dead_letters] == [(reason, None)]


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(payload: bytes) -> None:
    decoded = decode_message(None, payload, ORIGIN, NOW)
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        assert decoded.events == []
        assert len(decoded.dead_letters) == 1
        return
    count = len(document) if isinstance(document, list) else 1
    assert len(decoded.events) + len(decoded.dead_letters) == count


# --- whole-message failures ---------------------------------------------------------------------------


def _good(**changes: Any) -> dict[str, Any]:
    return {
        "type": "call",
        "event_id": "e-1",
        "rep_id": KEY,
        "occurred_at": "2024-05-01T10:00:00Z",
        "outcome": "connected",
        **changes,
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json at all", DeadLetterReason.NOT_JSON),
        (b"", DeadLetterReason.NOT_JSON),
        (None, DeadLetterReason.NOT_JSON),
        (b'[{"type": "call", "event_id": "e-1"', DeadLetterReason.NOT_JSON),
        (b"[NaN]", DeadLetterReason.NOT_JSON),
        (b'{"type": "call", "event_id": "\xff\xfe"}', DeadLetterReason.NOT_UTF8),
        (b"\xef\xbb\xbf" + orjson.dumps(_good()), DeadLetterReason.NOT_JSON),  # a BOM is not JSON
    ],
)
def test_a_message_that_is_not_json_is_one_dead_letter(
    payload: bytes | None, reason: DeadLetterReason
) -> None:
    decoded = decode_message(KEY.encode(), payload, ORIGIN, NOW)
    assert decoded.events == []
    assert len(decoded.dead_letters) == 1
    letter = decoded.dead_letters[0]
    assert (letter.reason, letter.index, letter.rep_id) == (reason, None, KEY)


def test_a_message_over_the_size_limit_is_refused_whole_with_an_excerpt() -> None:
    payload = orjson.dumps([_good(event_id=f"e-{i}") for i in range(50)])
    decoded = decode_message(KEY.encode(), payload, ORIGIN, NOW, max_message_bytes=len(payload) - 1)
    assert decoded.events == []
    [letter] = decoded.dead_letters
    assert letter.reason is DeadLetterReason.TOO_LARGE
    assert letter.payload_truncated
    assert len(letter.payload_excerpt.encode()) == PAYLOAD_EXCERPT_BYTES
    # At the limit exactly it is fine.
    assert (
        len(decode_message(KEY.encode(), payload, ORIGIN, NOW, max_message_bytes=len(payload)).events) == 50
    )


def test_the_default_size_limit_is_one_mebibyte() -> None:
    payload = b" " * (DEFAULT_MAX_MESSAGE_BYTES + 1)
    [letter] = decode_message(None, payload, ORIGIN, NOW).dead_letters
    assert letter.reason is DeadLetterReason.TOO_LARGE


def test_an_empty_batch_yields_nothing() -> None:
    decoded = decode_message(KEY.encode(), b"[]", ORIGIN, NOW)
    assert (decoded.events, decoded.dead_letters) == ([], [])


def test_without_a_key_any_rep_is_accepted() -> None:
    decoded = decode_message(None, orjson.dumps([_good(rep_id="a"), _good(rep_id="b")]), ORIGIN, NOW)
    assert [e.rep_id for e in decoded.events] == ["a", "b"]


def test_a_dead_letter_stays_small_whatever_the_input_quotes() -> None:
    # Validation messages quote the input; a megabyte-long type tag or field name must not make a
    # dead letter too large to publish.
    huge = "x" * 200_000
    payload = orjson.dumps([_good(type=huge), {**_good(), huge: 1}, _good(event_id=huge)])
    decoded = decode_message(huge.encode(), payload, ORIGIN, NOW)
    assert [d.reason for d in decoded.dead_letters] == [
        DeadLetterReason.UNKNOWN_TYPE,
        DeadLetterReason.INVALID,
        DeadLetterReason.INVALID,
    ]
    for letter in decoded.dead_letters:
        assert len(letter.model_dump_json()) < 2 * PAYLOAD_EXCERPT_BYTES + 2_000
    [letter] = decode_message(huge.encode(), b"nope", ORIGIN, NOW).dead_letters
    assert letter.rep_id is not None
    assert len(letter.rep_id) <= 128


# --- the contract in detail ---------------------------------------------------------------------------


def test_there_are_twelve_types_split_into_activities_and_deals() -> None:
    assert len(EVENT_TYPES) == 12
    assert set(ACTIVITY_TYPES) | set(DEAL_TYPES) == set(EVENT_TYPES)
    assert not set(ACTIVITY_TYPES) & set(DEAL_TYPES)
    assert set(DEAL_TYPES) == {"deal_created", "deal_stage_changed", "deal_won", "deal_lost"}
    for event_type, model in zip(EVENT_TYPES, EVENT_MODELS, strict=True):
        assert model.kind is (EventKind.DEAL if event_type in DEAL_TYPES else EventKind.ACTIVITY)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2024-05-01T15:30:00+05:30", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T02:00:00-08:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
        ("2024-05-01T10:00:00.250+00:00", datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_occurred_at_is_stored_in_utc(sent: str, stored: datetime) -> None:
    event = SALES_EVENT_ADAPTER.validate_python(_good(occurred_at=sent))
    assert event.occurred_at == stored
    assert event.occurred_at.tzinfo is UTC
    assert event.model_dump(mode="json")["occurred_at"] == stored.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    "sent",
    [
        "1999-12-31T23:59:59Z",
        "2100-01-01T00:00:00Z",
        "2099-12-31T23:00:00-05:00",
        "2000-01-01T00:30:00+01:00",
    ],
)
def test_the_accepted_range_is_judged_in_utc(sent: str) -> None:
    with pytest.raises(ValidationError, match="outside the accepted range"):
        SALES_EVENT_ADAPTER.validate_python(_good(occurred_at=sent))


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("10", "10.00"),
        (10, "10.00"),
        (0.1, "0.10"),
        ("0.005", "0.00"),  # half-even: to the even cent
        ("0.015", "0.02"),
        ("0.025", "0.02"),
        ("1E+3", "1000.00"),
        ("-0", "0.00"),  # never "-0.00"
        (str(MAX_AMOUNT), str(MAX_AMOUNT)),
    ],
)
def test_amounts_are_decimal_cents(sent: Any, stored: str) -> None:
    event = DealWonEvent.model_validate(
        {
            "type": "deal_won",
            "event_id": "e",
            "rep_id": "r",
            "deal_id": "d",
            "occurred_at": NOW,
            "amount": sent,
        }
    )
    assert isinstance(event.amount, Decimal)
    assert str(event.amount) == stored
    assert event.model_dump(mode="json")["amount"] == stored


def test_identifiers_are_stripped() -> None:
    event = SALES_EVENT_ADAPTER.validate_python(_good(event_id="  e-1 ", rep_id=f"\t{KEY}\n"))
    assert (event.event_id, event.rep_id) == ("e-1", KEY)


def test_events_are_immutable() -> None:
    event = SALES_EVENT_ADAPTER.validate_python(_good())
    with pytest.raises(ValidationError):
        event.rep_id = "other"  # type: ignore[misc]


# --- reps -----------------------------------------------------------------------------------------------


def test_a_rep_record_normalises_quota_and_defaults_mode() -> None:
    rep = Rep.model_validate_json(
        '{"rep_id": " rep-1 ", "name": "Ada Byron", "team": "Team North", "territory": "boston",'
        ' "hired_at": "2023-04-01", "quota_monthly": "50000.5"}'
    )
    assert rep.rep_id == "rep-1"
    assert rep.quota_monthly == Decimal("50000.50")
    assert rep.mode is ManagementMode.AUTO
    assert rep.manager is None


@pytest.mark.parametrize(
    "changes",
    [{"team": ""}, {"quota_monthly": "-1"}, {"mode": "veteran"}, {"hired_at": "yesterday"}, {"salary": 1}],
)
def test_a_bad_rep_record_is_refused(changes: dict[str, Any]) -> None:
    record = {"rep_id": "rep-1", "name": "Ada", "team": "Team North", "territory": "boston", **changes}
    with pytest.raises(ValidationError):
        Rep.model_validate(record)


def test_amount_limit_matches_clickhouse_decimal_18_2() -> None:
    assert Decimal(10**16) - CENT == MAX_AMOUNT


@pytest.mark.parametrize(
    "value", [1714557600, 1714557600000, "1714557600", 1714557600.5, "2026-05-04", "yesterday"]
)
def test_occurred_at_must_be_an_rfc3339_timestamp_not_a_number(value: object) -> None:
    raw = {"event_id": "e1", "type": "call", "rep_id": "r1", "occurred_at": value}
    with pytest.raises(ValidationError, match=r"RFC 3339|timezone"):
        SALES_EVENT_ADAPTER.validate_python(raw)


def test_occurred_at_accepts_rfc3339_with_any_offset_and_space_separator() -> None:
    for text in ("2026-05-04T09:30:00+02:00", "2026-05-04 07:30:00Z", "2026-05-04t07:30:00.123456-00:00"):
        event = SALES_EVENT_ADAPTER.validate_python(
            {"event_id": "e1", "type": "call", "rep_id": "r1", "occurred_at": text}
        )
        assert event.occurred_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"lat": 48.1}, "lat and lon"),
        ({"lon": 11.5}, "lat and lon"),
        ({"check_out_at": "2026-05-04T08:59:00Z"}, "check_out_at"),
    ],
)
def test_visit_fields_must_be_consistent(extra: dict[str, object], message: str) -> None:
    raw = {"event_id": "v1", "type": "visit", "rep_id": "r1", "occurred_at": "2026-05-04T09:00:00Z", **extra}
    with pytest.raises(ValidationError, match=message):
        SALES_EVENT_ADAPTER.validate_python(raw)


def test_a_check_out_names_its_check_in_and_gives_a_position_whole() -> None:
    base = {
        "event_id": "c-1",
        "type": "visit_check_out",
        "rep_id": "r1",
        "occurred_at": "2026-03-02T10:00:00Z",
    }
    with pytest.raises(ValidationError, match="visit_id"):
        SALES_EVENT_ADAPTER.validate_python(base)
    with pytest.raises(ValidationError, match="lat and lon must be given together"):
        SALES_EVENT_ADAPTER.validate_python({**base, "visit_id": "v-1", "lat": 48.0})
    event = SALES_EVENT_ADAPTER.validate_python({**base, "visit_id": "v-1", "lat": 48.0, "lon": 11.0})
    assert event.kind is EventKind.ACTIVITY
