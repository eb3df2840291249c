"""Bad input through the real pipeline (embedded broker, a worker process, ClickHouse): hand-picked
and hypothesis-generated. Every invalid input lands in the dead-letter table with its reason and is
counted in the worker's metrics, the worker goes on, and the good events beside it (in the same
batches and messages) are counted exactly once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability import (
    RawMessage,
    dead_letter_counts,
    free_port,
    scrape,
    send_raw,
    settle,
    stored_for,
)
from test_pipeline import expected_daily, isolated_pipeline, start_worker

from schemas.events import EVENT_TYPES, SALES_EVENT_ADAPTER
from schemas.reps import UNASSIGNED, Rep
from schemas.settings import Settings
from schemas.wire import Event
from sinks.clickhouse import connect
from streams.kafka import EventPublisher, start_producer
from streams.kpis import build_report
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration

# A small limit, so "over the size limit" is a few KiB rather than a megabyte on the broker.
LIMIT = 16_384
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


@dataclass
class Pipeline:
    settings: Settings
    worker: ManagedProcess
    metrics_url: str

    @property
    def activities(self) -> str:
        return self.settings.topics.activities

    @property
    def deals(self) -> str:
        return self.settings.topics.deals

    def topic_for(self, document: dict[str, Any]) -> str:
        deal = document.get("type") in {"deal_created", "deal_stage_changed", "deal_won", "deal_lost"}
        return self.deals if deal else self.activities


@pytest.fixture(scope="module")
def pipeline(runtime: EmbeddedRuntime) -> Iterator[Pipeline]:
    """One worker for the module; each test keeps to reps of its own."""
    with isolated_pipeline(runtime, max_message_bytes=LIMIT) as isolated:
        port = free_port()
        worker = start_worker(
            runtime,
            isolated,
            "worker-bad-input",
            {"SALESPULSE_MAX_MESSAGE_BYTES": str(LIMIT), "SALESPULSE_METRICS_PORT": str(port)},
        )
        try:
            yield Pipeline(isolated, worker, f"http://127.0.0.1:{port}/metrics")
        finally:
            worker.stop()


def tag() -> str:
    return uuid.uuid4().hex[:8]


def event(event_id: str, rep: str, kind: str = "call", at: datetime = T0, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "rep_id": rep, "occurred_at": at.isoformat(), **fields}


def dumps(document: object) -> bytes:
    return orjson.dumps(document)


def counted(documents: list[dict[str, Any]]) -> list[Event]:
    return [SALES_EVENT_ADAPTER.validate_python(d) for d in documents]


# ------------------------------------------------------------------------------------ hand-picked


def test_each_kind_of_bad_input_is_dead_lettered_with_its_reason_and_good_events_count_once(
    pipeline: Pipeline,
) -> None:
    t = tag()
    rep, other = f"{t}-rep", f"{t}-other"
    key = rep.encode()
    good = [event(f"{t}-g{i}", rep, "call" if i % 2 else "email", T0 + timedelta(hours=i)) for i in range(6)]
    deal = event(f"{t}-d1", rep, "deal_created", T0, deal_id=f"{t}-D1", amount="1500.00")
    # Valid at the edges of the contract: 128-character ids, a 1024-character attribute, 32 attributes,
    # hostile text, year 2000 and the last moment before 2100, an offset far from UTC, amount 0.
    edge = [
        event(f"{t}-" + "e" * (128 - len(t) - 1), rep, "demo", T0, attributes={"a": "x" * 1024}),
        event(f"{t}-many", rep, "email", T0, attributes={f"k{i}": i for i in range(32)}),
        event(f"{t}-hostile '\"; DROP TABLE events; --", rep, "meeting_held", T0, account_id="ä✓\u0000🙂"),
        event(f"{t}-y2k", rep, "call", T0.replace(year=2000, month=1, day=1, hour=0)),
        event(f"{t}-y2099", rep, "call", datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)),
        event(f"{t}-tz", rep, "call", T0.astimezone(timezone(timedelta(hours=-11, minutes=-30)))),
        event(f"{t}-zero", rep, "deal_created", T0, deal_id=f"{t}-D0", amount="0"),
    ]
    # The edge events far in the past or future are each a stream of their own rep, so they cannot
    # make each other late (lateness is judged per rep and stream).
    edge[3]["rep_id"] = f"{t}-rep2000"
    edge[4]["rep_id"] = f"{t}-rep2099"
    whole = dumps(good[0])
    bad_items: list[tuple[object, str]] = [
        ({k: v for k, v in good[1].items() if k != "event_id"} | {"event_id": 17}, "invalid"),  # wrong type
        (event(f"{t}-b1", rep, "call", T0, duration_s="long"), "invalid"),
        (event(f"{t}-b2", rep, "call", T0) | {"occurred_at": 1_714_812_000}, "invalid"),  # Unix seconds
        (event(f"{t}-b3", rep, "teleport", T0), "unknown_type"),
        ({k: v for k, v in event("x", rep).items() if k != "event_id"}, "invalid"),  # missing event_id
        ({k: v for k, v in event(f"{t}-b4", rep).items() if k != "type"}, "invalid"),  # missing type
        (event(f"{t}-b5", rep) | {"occurred_at": "2026-05-04T09:00:00"}, "invalid"),  # naive
        (event(f"{t}-b6", rep) | {"occurred_at": "1970-01-01T00:00:00Z"}, "invalid"),
        (event(f"{t}-b7", rep) | {"occurred_at": "2200-01-01T00:00:00Z"}, "invalid"),
        (event(f"{t}-b8", rep) | {"occurred_at": "2100-01-01T00:00:00Z"}, "invalid"),
        (event(f"{t}-b9", rep, "deal_won", T0, deal_id="D", amount="-5.00"), "invalid"),
        (event(f"{t}-b10", rep, "deal_won", T0, deal_id="D", amount="NaN"), "invalid"),
        (event(f"{t}-b11", rep, "deal_won", T0, deal_id="D", amount="Infinity"), "invalid"),
        (event(f"{t}-b12", rep, "deal_won", T0, deal_id="D", amount="1e17"), "invalid"),
        (event(f"{t}-b13", rep, "deal_won", T0, deal_id="D", amount=-1), "invalid"),
        (event(f"{t}-" + "i" * 200, rep), "invalid"),  # id over 128 characters
        (event(f"{t}-b14", rep, attributes={"a": "x" * 1025}), "invalid"),
        (event(f"{t}-b15", rep, attributes={f"k{i}": i for i in range(33)}), "invalid"),
        (event(f"{t}-b16", rep, "deal_lost", T0, deal_id="D", reason="r" * 5000), "invalid"),
        (event(f"{t}-b17", rep) | {"colour": "red"}, "invalid"),  # unknown field
        (event(f"{t}-b18", rep, "visit", T0, lat=91, lon=0), "invalid"),
        (event(f"{t}-b19", rep, attributes={"nested": {"a": 1}}), "invalid"),
        (event(f"{t}-b20", other), "key_mismatch"),
        (None, "not_an_object"),
        ([1, 2], "not_an_object"),
        ("call", "not_an_object"),
    ]
    batch = [
        good[2],
        *(item for item, _ in bad_items[:13]),
        good[3],
        *(item for item, _ in bad_items[13:]),
        good[4],
    ]
    messages: list[RawMessage] = [
        (pipeline.activities, key, whole),
        (pipeline.activities, key, dumps(batch)),
        (pipeline.activities, key, dumps(good[5])),
        (pipeline.activities, key, dumps([good[1]])),
        (pipeline.deals, key, dumps(deal)),
        *((pipeline.topic_for(e), e["rep_id"].encode(), dumps(e)) for e in edge),
        # Whole messages that are not events at all.
        (pipeline.activities, key, b"this is not JSON"),
        (pipeline.activities, key, whole[: len(whole) // 2]),  # truncated
        (pipeline.activities, key, b""),  # empty (a tombstone's value reads the same)
        (pipeline.activities, key, None),
        (pipeline.activities, key, b"[" * 5000),  # nested past the parser's depth limit
        (pipeline.activities, key, b'{"event_id": "' + t.encode() + b'-u", "type": "call\xff\xfe"}'),
        (pipeline.activities, key, dumps(event(f"{t}-nan", rep)).replace(b"}", b', "duration_s": NaN}')),
        (
            pipeline.activities,
            key,
            dumps([event(f"{t}-big{i}", rep, attributes={"a": "x" * 1000}) for i in range(20)]),
        ),
        (pipeline.activities, key, b"null"),
        # The same event again (a producer retry): quietly a duplicate. A different event under a
        # counted id: a conflict, and the first copy still counts.
        (pipeline.activities, key, dumps(good[0])),
        (pipeline.activities, key, dumps(good[5] | {"type": "demo"})),
    ]
    expected_letters = Counter(reason for _, reason in bad_items) + Counter(
        {"not_json": 6, "not_utf8": 1, "too_large": 1, "not_an_object": 1, "conflict": 1}
    )
    before = dead_letter_counts(scrape(pipeline.metrics_url, pipeline.worker))

    asyncio.run(send_raw(pipeline.settings, messages))
    settle(pipeline.settings, pipeline.worker)

    valid = counted([*good, deal, *edge])
    stored = stored_for(pipeline.settings, [rep, other, *(e["rep_id"] for e in edge)])
    assert stored.event_ids == Counter(e.event_id for e in valid)
    assert stored.daily == expected_daily(valid)
    assert stored.dead_letters == expected_letters
    after = dead_letter_counts(scrape(pipeline.metrics_url, pipeline.worker))
    assert after - before == expected_letters
    letters = _letters(pipeline.settings, [rep, other])
    # A bad item of a batch is its own dead letter, with its position; the message's other items count.
    batch_offset = next(offset for reason, offset, index, _ in letters if index is not None)
    assert sorted(index for _, offset, index, _ in letters if offset == batch_offset) == [
        i for i, item in enumerate(batch) if item not in (good[2], good[3], good[4])
    ]
    conflict_detail = next(detail for reason, _, _, detail in letters if reason == "conflict")
    assert f"{t}-g5" in conflict_detail and "type differ" in conflict_detail


def _letters(settings: Settings, reps: list[str]) -> list[tuple[str, int, int | None, str]]:
    client = connect(settings)
    try:
        rows = client.execute(
            "SELECT reason, source_offset, batch_index, detail "
            f"FROM {settings.clickhouse_database}.dead_letters FINAL WHERE rep_id IN %(reps)s",
            {"reps": reps},
        )
    finally:
        client.disconnect()
    return [(str(r), int(o), None if i is None else int(i), str(d)) for r, o, i, d in rows]


def test_events_of_reps_not_loaded_yet_count_under_unassigned_until_their_record_arrives(
    pipeline: Pipeline,
) -> None:
    t = tag()
    team = f"Team {t}"
    events = counted(
        [
            event(f"{t}-n{i}", f"{t}-new", "call", T0 + timedelta(hours=i), outcome="connected")
            for i in range(5)
        ]
        + [event(f"{t}-k{i}", f"{t}-known", "email", T0 + timedelta(hours=i)) for i in range(3)]
    )

    async def publish(reps: list[Rep], chunk: list[Event]) -> None:
        producer = await start_producer(pipeline.settings)
        try:
            publisher = EventPublisher(producer, pipeline.settings)
            for record in reps:
                await publisher.publish_rep(record)
            await publisher.publish_many(chunk)
            await publisher.flush()
        finally:
            await producer.stop()

    def calls_and_emails_by_team() -> dict[str, tuple[int, int]]:
        client = connect(pipeline.settings)
        try:
            report = build_report(
                client,
                pipeline.settings.clickhouse_database,
                by="team",
                since=None,
                until=None,
                deal_stages=(),
            )
        finally:
            client.disconnect()
        return {
            row["team"]: (row["calls"], row["emails"])
            for row in report.rows
            if row["team"] in (team, UNASSIGNED)
        }

    known = Rep(rep_id=f"{t}-known", name="Known", team=team, territory="North")
    asyncio.run(publish([known], events))
    settle(pipeline.settings, pipeline.worker)
    # Other tests' reps may be unassigned too; this test's five calls are among them.
    unassigned_calls = calls_and_emails_by_team()[UNASSIGNED][0]
    assert calls_and_emails_by_team()[team] == (0, 3)
    assert stored_for(pipeline.settings, [f"{t}-new", f"{t}-known"]).dead_letters == Counter()

    late_record = Rep(rep_id=f"{t}-new", name="New", team=team, territory="North")
    asyncio.run(publish([late_record], []))
    settle(pipeline.settings, pipeline.worker)
    by_team = calls_and_emails_by_team()
    assert by_team[team] == (5, 3)
    assert by_team.get(UNASSIGNED, (0, 0))[0] == unassigned_calls - 5


# ------------------------------------------------------------------------------------- hypothesis

DEAL_KINDS = ("deal_created", "deal_won", "deal_lost", "deal_stage_changed")
BAD_BYTES = [bytes([b]) for b in (0xC0, 0xC1, *range(0xF5, 0x100))]  # never valid anywhere in UTF-8
text = st.text(st.characters(codec="utf-8"), max_size=40)
identifier = text.map(str.strip).filter(lambda s: 0 < len(s) <= 128)


@dataclass
class Example:
    """The messages of one example and what must come of them."""

    reps: list[str]
    messages: list[RawMessage] = field(default_factory=list)
    good: list[dict[str, Any]] = field(default_factory=list)
    letters: Counter[str] = field(default_factory=Counter)


@st.composite
def good_event(draw: st.DrawFn, event_id: str, rep: str) -> dict[str, Any]:
    kind = draw(
        st.sampled_from(("call", "email", "meeting_held", "demo", "visit", "proposal_sent", *DEAL_KINDS))
    )
    offset = timezone(timedelta(minutes=draw(st.integers(-12 * 60, 14 * 60))))
    at = T0 + timedelta(minutes=draw(st.integers(-10 * 24 * 60, 10 * 24 * 60)))
    document = event(event_id, rep, kind, at.astimezone(offset).replace(microsecond=0))
    if kind == "call":
        document["outcome"] = draw(st.sampled_from(("connected", "no_answer", "voicemail", "busy")))
    if kind in DEAL_KINDS:
        document["deal_id"] = draw(identifier)
    if kind in ("deal_created", "deal_won"):
        cents = draw(st.integers(0, 10**12))
        document["amount"] = draw(st.sampled_from((f"{cents // 100}.{cents % 100:02d}", cents // 100)))
    if kind == "deal_stage_changed":
        document["stage"] = draw(identifier)
    if kind == "visit":
        document |= {"lat": draw(st.floats(-90, 90)), "lon": draw(st.floats(-180, 180))}
    if draw(st.booleans()):
        document["account_id"] = draw(identifier)
    if draw(st.booleans()):
        document["attributes"] = draw(
            st.dictionaries(
                st.text(st.characters(codec="utf-8"), min_size=1, max_size=64),
                st.one_of(
                    text,
                    st.integers(-(2**53), 2**53),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(),
                ),
                max_size=32,
            )
        )
    return document


# Item-level mutations of a good event: each breaks the contract in one known way.
def _without(name: str) -> Any:
    return lambda d: {k: v for k, v in d.items() if k != name}


ITEM_MUTATIONS: dict[str, tuple[str, st.SearchStrategy[Any]]] = {
    "missing field": ("invalid", st.sampled_from(("event_id", "occurred_at", "type")).map(_without)),
    "wrong type": (
        "invalid",
        st.tuples(
            st.sampled_from(("event_id", "occurred_at", "attributes")),
            st.one_of(
                st.integers(-(2**63), 2**63 - 1), st.booleans(), st.lists(st.integers(0, 9), max_size=2)
            ),
        ).map(lambda nv: lambda d: d | {nv[0]: nv[1]}),
    ),
    "unknown type": (
        "unknown_type",
        text.filter(lambda s: s not in EVENT_TYPES).map(lambda s: lambda d: d | {"type": s}),
    ),
    "naive time": ("invalid", st.just(lambda d: d | {"occurred_at": d["occurred_at"][:19]})),
    "absurd year": (
        "invalid",
        st.one_of(st.integers(1970, 1999), st.integers(2100, 2200)).map(
            lambda y: lambda d: d | {"occurred_at": f"{y:04d}-06-01T00:00:00Z"}
        ),
    ),
    "bad amount": (
        "invalid",
        st.one_of(
            st.sampled_from(("NaN", "Infinity", "-Infinity", "sNaN", "1e17", "-0.01", "12.3.4", "")),
            st.integers(-(2**63), -1),
        ).map(lambda a: lambda d: d | {"type": "deal_won", "deal_id": "D", "amount": a}),
    ),
    "huge string": (
        "invalid",
        st.one_of(
            st.integers(129, 400).map(lambda n: lambda d: d | {"account_id": "a" * n}),
            st.integers(1025, 5000).map(lambda n: lambda d: d | {"attributes": {"a": "x" * n}}),
            st.integers(33, 60).map(lambda n: lambda d: d | {"attributes": {f"k{i}": i for i in range(n)}}),
        ),
    ),
    "unknown field": ("invalid", identifier.map(lambda s: lambda d: d | {f"zz_{s}": 1})),
}


@st.composite
def examples(draw: st.DrawFn, pipeline: Pipeline) -> Example:
    t = tag()
    example = Example(reps=[f"{t}-r{i}" for i in range(3)])
    serial = iter(range(10**6))

    def new_event(rep: str) -> dict[str, Any]:
        return draw(good_event(f"{t}-{next(serial)}", rep))

    for _ in range(draw(st.integers(1, 12))):
        rep = draw(st.sampled_from(example.reps))
        key = rep.encode()
        shape = draw(st.sampled_from(("batch", "single", "whole message")))
        if shape == "whole message":
            base = dumps(new_event(rep))
            kind = draw(st.sampled_from(("not json", "truncated", "not utf8", "too large", "not an object")))
            if kind == "not json":
                value = draw(text.map(str.encode).filter(_not_json))
                reason = "not_json"
            elif kind == "truncated":
                value = base[: draw(st.integers(0, len(base) - 1))]
                reason = "not_json" if _utf8(value) else "not_utf8"
            elif kind == "not utf8":
                at = draw(st.integers(0, len(base)))
                value = base[:at] + draw(st.sampled_from(BAD_BYTES)) + base[at:]
                reason = "not_utf8"
            elif kind == "too large":
                many = [
                    new_event(rep) | {"attributes": {"pad": "p" * 1000}} for _ in range(LIMIT // 1000 + 1)
                ]
                value, reason = dumps(many), "too_large"
            else:
                value = dumps(
                    draw(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), text, st.booleans()))
                )
                reason = "not_an_object"
            example.messages.append((pipeline.activities, key, value))
            example.letters[reason] += 1
            continue
        items: list[Any] = []
        for _ in range(draw(st.integers(1, 6))):
            document = new_event(rep)
            choice = draw(st.sampled_from(("good", "good", "key mismatch", *ITEM_MUTATIONS)))
            if choice == "good":
                items.append(document)
                example.good.append(document)
            elif choice == "key mismatch":
                stranger = draw(st.sampled_from([r for r in example.reps if r != rep]))
                items.append(document | {"rep_id": stranger})
                example.letters["key_mismatch"] += 1
            else:
                reason, mutation = ITEM_MUTATIONS[choice]
                items.append(draw(mutation)(document))
                example.letters[reason] += 1
        if shape == "batch":
            example.messages.append((pipeline.activities, key, dumps(items)))
        else:
            example.messages.extend((pipeline.topic_for(i), key, dumps(i)) for i in items)
    # Re-sent events after everything else: an exact copy (in another JSON spelling) is a quiet
    # duplicate; a different event under a counted id is a conflict.
    for original in (
        draw(st.lists(st.sampled_from(example.good), max_size=3, unique_by=id)) if example.good else []
    ):
        if draw(st.booleans()):
            copy = dict(reversed(list(original.items())))
            copy["occurred_at"] = datetime.fromisoformat(original["occurred_at"]).astimezone(UTC).isoformat()
        else:
            copy = original | {"account_id": f"{t}-changed-{next(serial)}"}
            example.letters["conflict"] += 1
        example.messages.append((pipeline.topic_for(copy), copy["rep_id"].encode(), dumps(copy)))
    return example


def _not_json(value: bytes) -> bool:
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        return True
    return False


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _check_example(pipeline: Pipeline, example: Example) -> None:
    before = dead_letter_counts(scrape(pipeline.metrics_url, pipeline.worker))
    asyncio.run(send_raw(pipeline.settings, example.messages))
    settle(pipeline.settings, pipeline.worker)
    valid = counted(example.good)
    stored = stored_for(pipeline.settings, example.reps)
    assert stored.event_ids == Counter(e.event_id for e in valid)
    assert stored.daily == expected_daily(valid)
    assert stored.dead_letters == example.letters
    assert dead_letter_counts(scrape(pipeline.metrics_url, pipeline.worker)) - before == example.letters


# Each example is a round trip through the broker, the worker and ClickHouse (about a second).
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
@given(data=st.data())
def test_generated_bad_input_is_dead_lettered_and_good_input_counted_once(
    pipeline: Pipeline, data: st.DataObject
) -> None:
    _check_example(pipeline, data.draw(examples(pipeline)))


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
@given(data=st.data())
def test_generated_bad_input_long_run(pipeline: Pipeline, data: st.DataObject) -> None:
    _check_example(pipeline, data.draw(examples(pipeline)))
