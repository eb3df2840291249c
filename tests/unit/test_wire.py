"""The canonical JSON of events: the stored payload and the wire encoding agree."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import islice

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import SALES_EVENT_ADAPTER
from schemas.wire import MessageOrigin, decode_message, encode_batch, event_to_json, event_to_json_dict
from streams.synthetic import OrgSpec, generate_org, iter_events


def test_event_to_json_is_the_canonical_json_of_every_type_and_round_trips() -> None:
    spec = OrgSpec(reps=6, days=20)
    events = list(islice(iter_events(generate_org(spec), spec), 3000))
    assert len({e.type for e in events}) >= 10  # the sample covers (nearly) every event type
    for event in events:
        payload = event_to_json(event)
        assert payload == orjson.dumps(event_to_json_dict(event))
        assert SALES_EVENT_ADAPTER.validate_json(payload) == event
    assert orjson.loads(encode_batch(events[:5])) == [orjson.loads(event_to_json(e)) for e in events[:5]]


_SPEC = OrgSpec(reps=1, days=10)
_GOOD = [orjson.loads(event_to_json(e)) for e in islice(iter_events(generate_org(_SPEC), _SPEC), 40)]
_BAD: list[object] = [
    None,
    12.5,
    "text",
    {"event_id": "x", "type": "teleport", "rep_id": "rep-001", "occurred_at": "2024-01-02T10:00:00Z"},
    {"event_id": "x", "type": "call", "rep_id": "rep-001", "occurred_at": "2024-01-02T10:00:00"},
    {"event_id": "x", "type": "call", "rep_id": "rep-999", "occurred_at": "2024-01-02T10:00:00Z"},
    {"event_id": "x", "type": "call", "rep_id": "rep-001", "occurred_at": "2024-01-02T10:00:00Z", "bogus": 1},
]


@given(st.lists(st.one_of(st.sampled_from(_GOOD), st.sampled_from(_BAD)), min_size=1, max_size=30))
@settings(max_examples=150, deadline=None)
def test_a_batch_decodes_as_its_items_would_one_by_one(items: list[object]) -> None:
    """The whole-batch validation (one call for every item) gives exactly the events and dead letters
    of validating each item on its own: same events in order, same reasons, details and indexes."""
    key = _GOOD[0]["rep_id"].encode()
    origin = MessageOrigin("salespulse.activities", 1, 7)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    batch = decode_message(key, orjson.dumps(items), origin, now)
    singles = [decode_message(key, orjson.dumps(item), origin, now) for item in items]
    assert batch.events == [event for single in singles for event in single.events]
    expected = [
        (index, letter.reason, letter.detail, letter.event_id, letter.rep_id)
        for index, single in enumerate(singles)
        for letter in single.dead_letters
    ]
    assert [(d.index, d.reason, d.detail, d.event_id, d.rep_id) for d in batch.dead_letters] == expected
