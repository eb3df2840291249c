"""The canonical JSON of events: the stored payload and the wire encoding agree."""

from __future__ import annotations

from itertools import islice

import orjson

from schemas.events import SALES_EVENT_ADAPTER
from schemas.wire import encode_batch, event_to_json, event_to_json_dict
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
