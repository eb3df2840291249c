"""What `dlq replay` may send again (streams.dlq), without servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import CallEvent, DealWonEvent, EventKind
from schemas.settings import TopicNames
from streams.dlq import (
    WHY_CONFLICT,
    WHY_CRM_ROW,
    WHY_NOT_UTF8,
    WHY_TRUNCATED,
    Republish,
    Skip,
    lateness,
    plan_replay,
)

TOPICS = TopicNames("sp.")
NOW = datetime(2026, 6, 1, tzinfo=UTC)
CALL = {"event_id": "c1", "type": "call", "rep_id": "rep-7", "occurred_at": "2026-05-01T09:00:00Z"}
WON = {"event_id": "w1", "type": "deal_won", "rep_id": "rep-7", "occurred_at": "2026-05-01T09:00:00Z",
       "deal_id": "D1", "amount": "10.00"}  # fmt: skip


def letter(
    reason: DeadLetterReason, payload: bytes, *, source: str = "sp.activities", detail: str = "x"
) -> DeadLetter:
    return DeadLetter.of(reason, detail, payload, source=source, partition=0, offset=9, rejected_at=NOW)


@pytest.mark.parametrize(
    ("reason", "document", "topic"),
    [
        (DeadLetterReason.TOO_LATE, CALL, "sp.activities"),
        (DeadLetterReason.TOO_LARGE, WON, "sp.deals"),
        # The wrong key was the producer's mistake; the event itself is fine and goes under its rep.
        (DeadLetterReason.KEY_MISMATCH, CALL, "sp.activities"),
    ],
)
def test_whole_valid_events_go_to_the_topic_of_their_type_keyed_by_rep(
    reason: DeadLetterReason, document: dict[str, str], topic: str
) -> None:
    payload = orjson.dumps(document)
    decision = plan_replay(letter(reason, payload), TOPICS, 1_048_576, NOW)
    assert isinstance(decision, Republish)
    assert (decision.topic, decision.key, decision.value) == (topic, b"rep-7", payload)
    assert decision.event is not None and decision.event.event_id == document["event_id"]


def test_what_cannot_be_replayed_says_why() -> None:
    whole = orjson.dumps(CALL)
    cut = DeadLetter.of(DeadLetterReason.INVALID, "x", whole + b" " * 3000, source="s", rejected_at=NOW)
    cases = {
        WHY_TRUNCATED: cut,
        WHY_CONFLICT: letter(DeadLetterReason.CONFLICT, whole),
        WHY_NOT_UTF8: letter(DeadLetterReason.NOT_UTF8, whole.replace(b"c1", b"c\xff")),
        WHY_CRM_ROW: letter(DeadLetterReason.INVALID, b"OPP-1,rep-1,Won,,", detail="invalid CRM deal row: x"),
    }
    for why, dead in cases.items():
        assert plan_replay(dead, TOPICS, 1_048_576, NOW) == Skip(why)
    still = plan_replay(letter(DeadLetterReason.NOT_JSON, b"{nope"), TOPICS, 1_048_576, NOW)
    assert isinstance(still, Skip) and still.why.startswith("still not_json: ")
    too_big = plan_replay(letter(DeadLetterReason.TOO_LARGE, whole), TOPICS, 1024, NOW)
    assert isinstance(too_big, Republish)  # 90 bytes fit a 1 KiB limit
    batch = plan_replay(letter(DeadLetterReason.INVALID, orjson.dumps([CALL, CALL])), TOPICS, 1_048_576, NOW)
    assert isinstance(batch, Skip) and "not one" in batch.why


def test_rep_records_go_to_the_reps_topic_once_valid() -> None:
    good = orjson.dumps({"rep_id": "rep-7", "name": "Ann", "team": "North", "territory": "EMEA"})
    detail = "invalid rep record: name: Field required"
    decision = plan_replay(
        letter(DeadLetterReason.INVALID, good, source="file:reps.csv", detail=detail), TOPICS, 1024, NOW
    )
    assert decision == Republish("sp.reps", b"rep-7", good)
    bad = plan_replay(
        letter(DeadLetterReason.INVALID, b'{"rep_id": "x"}', source="sp.reps"), TOPICS, 1024, NOW
    )
    assert isinstance(bad, Skip) and "name" in bad.why


def test_lateness_is_judged_against_the_newest_stored_event_of_the_same_stream() -> None:
    event = CallEvent.model_validate(CALL)
    newest = {("rep-7", EventKind.ACTIVITY): event.occurred_at + timedelta(days=40, hours=12)}
    skip = lateness(event, newest, timedelta(days=35))
    assert skip is not None and "SALESPULSE_LATE_GRACE_DAYS=41" in skip.why
    assert lateness(event, newest, timedelta(days=41)) is None
    # The deals stream is judged apart: a late activity stream says nothing about deals.
    won = DealWonEvent.model_validate(WON)
    assert lateness(won, newest, timedelta(days=1)) is None
    assert lateness(event, {}, timedelta(days=1)) is None
