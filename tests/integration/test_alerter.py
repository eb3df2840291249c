"""The alerter against the real embedded ClickHouse and a real local HTTP receiver: rules on stored
data, alerts stored, one grouped message per team, nothing sent twice, no_activity on silence."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from test_notifiers import LocalReceiver, routing_for
from test_pipeline import isolated_pipeline

from schemas.accounts import Account
from schemas.alert_rules import AlertRulesConfig
from schemas.events import VisitEvent
from schemas.settings import Settings
from schemas.wire import MessageOrigin, encode_batch
from sinks.clickhouse import ClickHouseHistory, ClickHouseSink, connect, write_accounts
from streams.alerter import Alerter, BookStore
from streams.processor import BatchProcessor, RawMessage
from streams.runtime.supervisor import EmbeddedRuntime
from streams.synthetic import OrgSpec, generate_accounts, generate_org, iter_events

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 2, tzinfo=UTC)
DAYS = 70


def store_history(settings: Settings, spec: OrgSpec) -> list[str]:
    """Run the org's events and rep records through the worker's processing step into ClickHouse;
    returns the ids of the fading reps."""
    org = generate_org(spec)
    client = connect(settings)
    write_accounts(client, settings.clickhouse_database, generate_accounts(org), START)
    sink = ClickHouseSink(client, settings.clickhouse_database)
    history = ClickHouseHistory(connect(settings), settings.clickhouse_database)
    step = BatchProcessor(
        history=history,
        late_grace=timedelta(days=settings.late_grace_days),
        clock=lambda: START + timedelta(days=DAYS),
        rep_topic="reps",
        max_message_bytes=settings.max_message_bytes,
        deal_stages=settings.deal_stages,
        visits=history,
    )
    reps = [
        RawMessage(r.rep_id.encode(), r.model_dump_json().encode(), MessageOrigin("reps")) for r in org.reps
    ]
    step.process(reps)
    buffer: dict[tuple[str, str], list] = {}  # type: ignore[type-arg]
    messages: list[RawMessage] = list(reps)
    for event in iter_events(org, spec):
        key = (event.kind, event.rep_id)
        buffer.setdefault(key, []).append(event)
        if len(buffer[key]) == 200:
            messages.append(
                RawMessage(event.rep_id.encode(), encode_batch(buffer.pop(key)), MessageOrigin("x"))
            )
    messages += [RawMessage(k[1].encode(), encode_batch(v), MessageOrigin("x")) for k, v in buffer.items()]
    for i in range(0, len(messages), 300):
        sink.write(step.process(messages[i : i + 300]).sink_batch)
        sink.flush()
    sink.close()
    return list(org.fading_rep_ids)


async def read_topic(settings: Settings, topic: str, expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        for _ in range(40):
            batches = await consumer.getmany(timeout_ms=250)
            found += [json.loads(r.value) for records in batches.values() for r in records]
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found


def alert_rows(settings: Settings) -> list[tuple[str, str, str, str]]:
    client = connect(settings)
    try:
        return client.execute(
            f"SELECT rule, scope, key, status FROM {settings.clickhouse_database}.alerts FINAL "
            "ORDER BY rule, key"
        )
    finally:
        client.disconnect()


def test_alerts_are_evaluated_stored_grouped_per_team_and_sent_once(
    runtime: EmbeddedRuntime, tmp_path: Path
) -> None:
    receiver = LocalReceiver()
    try:
        with isolated_pipeline(runtime) as settings:
            spec = OrgSpec(reps=9, teams=3, days=DAYS, start=START, seed=3, fading_reps=2, fade_at=0.8)
            fading = store_history(settings, spec)
            routing = routing_for({"name": "chat", "webhook": {"url": receiver.url("/hook")}})
            from sinks.notifiers.outbox import SqliteOutbox

            def make_alerter() -> Alerter:
                return Alerter(
                    settings,
                    connect(settings),
                    rules=AlertRulesConfig(),
                    routing=routing,
                    outbox=SqliteOutbox(tmp_path / "outbox.sqlite3"),
                    book_store=BookStore(tmp_path / "book.json"),
                )

            now = START + timedelta(days=DAYS, hours=18)
            alerter = make_alerter()
            first = alerter.tick(now)
            dropped = {t.alert.key for t in first.transitions if t.alert.rule == "activity_drop"}
            assert set(fading) <= dropped, (fading, [t.alert.summary for t in first.transitions])
            stored = alert_rows(settings)
            assert {(rule, key) for rule, _, key, status in stored if status == "firing"} >= {
                ("activity_drop", rep) for rep in fading
            }
            published = asyncio.run(read_topic(settings, settings.topics.alerts, len(first.transitions)))
            assert sorted(m["fingerprint"] for m in published) == sorted(
                t.alert.fingerprint for t in first.transitions
            )
            # One message per group (team), not one per alert.
            teams = {t.alert.labels.get("team") for t in first.transitions}
            assert 1 <= len(receiver.requests) <= len(teams)
            sent = list(receiver.requests)

            # The same evaluation again, after a restart: nothing new to say, nothing sent twice.
            alerter.close()
            again = make_alerter()
            second = again.tick(now + timedelta(minutes=1))
            assert second.transitions == []
            assert receiver.requests == sent

            # Three silent working days later: no_activity fires from the timer alone.
            later = again.tick(now + timedelta(days=3))
            assert any(t.alert.rule == "no_activity" for t in later.transitions)
            again.close()
    finally:
        receiver.down()


def test_no_check_in_fires_on_the_timer_and_resolves_with_the_check_in(
    runtime: EmbeddedRuntime, tmp_path: Path
) -> None:
    """A field rep checked in every working day for two weeks; on Monday nothing by 11:00, so the
    alerter's tick raises no_check_in with no event arriving; the 11:40 check-in resolves it."""
    with isolated_pipeline(runtime) as settings:
        db = settings.clickhouse_database
        client = connect(settings)
        account = Account(account_id="acc-a", name="Alpha", lat=48.0, lon=11.0, owner_rep_id="field-1")
        write_accounts(client, db, [account], START)
        history = ClickHouseHistory(connect(settings), db)
        sink = ClickHouseSink(client, db)
        monday = datetime(2026, 3, 16, tzinfo=UTC)
        step = BatchProcessor(
            history=history,
            late_grace=timedelta(days=35),
            clock=lambda: monday,
            rep_topic="reps",
            max_message_bytes=settings.max_message_bytes,
            visits=history,
        )

        def check_in(event_id: str, at: datetime) -> None:
            event = VisitEvent(
                event_id=event_id,
                type="visit",
                rep_id="field-1",
                occurred_at=at,
                account_id="acc-a",
                lat=48.0,
                lon=11.0,
                accuracy_m=5,
                check_out_at=at + timedelta(minutes=40),
            )
            sink.write(
                step.process([RawMessage(b"field-1", encode_batch([event]), MessageOrigin("x"))]).sink_batch
            )
            sink.flush()

        for n in range(14):
            day = monday - timedelta(days=14 - n)
            if day.weekday() < 5:
                check_in(f"past-{n}", day.replace(hour=9))
        alerter = Alerter(
            settings,
            connect(settings),
            rules=AlertRulesConfig.model_validate({"no_check_in": {"by": "11:00"}}),
            routing=None,
            outbox=None,
            book_store=BookStore(tmp_path / "book.json"),
        )
        try:
            early = alerter.tick(monday.replace(hour=10, minute=55))
            assert not [t for t in early.transitions if t.alert.rule == "no_check_in"]
            late = alerter.tick(monday.replace(hour=11, minute=5))
            (fired,) = [t for t in late.transitions if t.alert.rule == "no_check_in"]
            assert (fired.alert.key, fired.status.value) == ("field-1", "firing")
            check_in("today", monday.replace(hour=11, minute=40))
            after = alerter.tick(monday.replace(hour=11, minute=45))
            (resolved,) = [t for t in after.transitions if t.alert.rule == "no_check_in"]
            assert resolved.status.value == "resolved"
            stored = client.execute(
                f"SELECT rule, key, status FROM {db}.alerts FINAL WHERE rule = 'no_check_in'"
            )
            assert stored == [("no_check_in", "field-1", "resolved")]
        finally:
            alerter.close()
            sink.close()
