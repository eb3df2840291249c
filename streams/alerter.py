"""The alerter: the early-warning rules run on a timer against what is stored, and their alerts go
through the lifecycle to the chat receivers.

One alerter runs per deployment (like one Alertmanager): alert groups cut across partitions, so
two processes holding alert state would each send their own message for the same team. Workers
scale by partitions; the alerter reads their results from ClickHouse, the store of record. It
runs on a timer, not on events, so ``no_activity`` fires while nothing arrives at all.

Every tick, in this order (so a crash at any point neither loses nor repeats a message):

1. read the reps' recent daily counters, deals and last activity from ClickHouse (``RepView``);
2. evaluate the rules at ``now`` (``streams.alerts.rules``) and apply them to the alert book
   (``streams.alerts.lifecycle``): firing and resolved transitions;
3. store the transitions (table ``alerts``) and management-mode changes (table ``rep_modes``), and
   publish the transitions on the alerts topic;
4. put the planned notifications in the outbox (durable, idempotent by notification id);
5. save the alert book; 6. deliver what is due from the outbox.

A tick that fails half-way goes back to the last saved book (``reload``), so its transitions come
again at the next tick: stored and published at least once, queued exactly once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from clickhouse_driver import Client

from schemas.accounts import Account
from schemas.alert_rules import AlertRulesConfig
from schemas.events import ACTIVITY_TYPES
from schemas.reps import ManagementMode
from schemas.routing import RoutingConfig, load_routing, parse_matcher
from schemas.settings import Settings
from sinks.clickhouse import ClickHouseHistory, epoch_micros, epoch_millis
from sinks.migrate import validate_database_name
from sinks.notifiers.delivery import Delivery, DeliveryReport
from sinks.notifiers.outbox import Outbox, SqliteOutbox
from sinks.queries import stored_accounts, stored_reps, stored_visits
from streams.alerts.lifecycle import AlertBook, Silence, Transition
from streams.alerts.rules import OVERSIGHT_SHIFT, RULES, RepView, evaluate, modes_of, oversight_shifts
from streams.kpi.deals import DEAL_EVENT_TYPES, DealBook, stage_ranks
from streams.kpis import visit_record
from streams.metrics import PipelineMetrics
from streams.visits.book import VisitRecord

logger = logging.getLogger(__name__)


def load_rules(settings: Settings) -> AlertRulesConfig:
    if settings.alert_rules_file is None:
        return AlertRulesConfig()
    return AlertRulesConfig.from_yaml(settings.alert_rules_file.read_text(encoding="utf-8"))


def load_views(
    client: Client, database: str, now: datetime, config: AlertRulesConfig, deal_stages: tuple[str, ...]
) -> list[RepView]:
    """What the rules need of every known rep, as of ``now`` (nothing after it)."""
    validate_database_name(database)
    first_day = (now - timedelta(days=config.history_days)).date()
    daily: dict[str, dict[date, dict[str, int]]] = defaultdict(dict)
    for rep_id, day, counter, count in client.execute(
        f"SELECT rep_id, day, type, events FROM {database}.rep_daily_activity FINAL "
        "WHERE day >= %(first)s AND day <= %(last)s AND events > 0",
        {"first": first_day, "last": now.date()},
    ):
        daily[rep_id].setdefault(day, {})[counter] = int(count)
    # max() cannot be changed by a duplicate row: no FINAL needed. The lower bound lets
    # ClickHouse skip old partitions (events are partitioned by month of occurred_at).
    last_activity = {
        rep_id: moment.replace(tzinfo=UTC)
        for rep_id, moment in client.execute(
            f"SELECT rep_id, max(occurred_at) FROM {database}.events WHERE type IN %(types)s "
            "AND occurred_at >= fromUnixTimestamp64Milli(toInt64(%(first)s), 'UTC') "
            "AND occurred_at <= fromUnixTimestamp64Milli(toInt64(%(now)s), 'UTC') GROUP BY rep_id",
            {
                "types": list(ACTIVITY_TYPES),
                "first": epoch_millis(now - timedelta(days=config.history_days)),
                "now": epoch_millis(now),
            },
        )
    }
    reps = stored_reps(client, database)
    rep_ids = sorted(set(reps) | set(daily) | set(last_activity))
    stored_deals = ClickHouseHistory(client, database).rep_deal_events(
        rep_ids, now - timedelta(days=config.deal_history_days)
    )
    # Field visits up to now (nothing after it), and each rep's assigned accounts.
    visits: dict[str, list[VisitRecord]] = defaultdict(list)
    visit_start = now - timedelta(days=config.visit_history_days)
    for row in stored_visits(client, database, visit_start, now + timedelta(milliseconds=1)):
        if not row.check_in_missing:
            visits[row.rep_id].append(visit_record(row))
    accounts: dict[str, list[Account]] = defaultdict(list)
    for account in stored_accounts(client, database).values():
        if account.owner_rep_id is not None:
            accounts[account.owner_rep_id].append(account)
    ranks = stage_ranks(deal_stages)
    views: list[RepView] = []
    for rep_id in rep_ids:
        book = DealBook(ranks)
        book.apply(
            e
            for e in stored_deals.get(rep_id, [])
            if isinstance(e, DEAL_EVENT_TYPES) and e.occurred_at <= now
        )
        views.append(
            RepView(
                rep_id=rep_id,
                rep=reps.get(rep_id),
                daily=daily.get(rep_id, {}),
                last_activity_at=last_activity.get(rep_id),
                deals=list(book.deals.values()),
                visits=visits.get(rep_id, []),
                accounts=accounts.get(rep_id, []),
            )
        )
    return views


@dataclass
class TickResult:
    views: int = 0
    candidates: int = 0
    transitions: list[Transition] = field(default_factory=list)
    mode_changes: list[tuple[str, ManagementMode, str]] = field(default_factory=list)
    notifications: int = 0
    delivery: DeliveryReport | None = None


class BookStore:
    """The alert book's state as one JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        loaded: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        return loaded

    def save(self, state: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".alert-book-")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)


class Alerter:
    """One evaluation-and-delivery loop; see the module doc for the order of a tick."""

    def __init__(
        self,
        settings: Settings,
        client: Client,
        *,
        rules: AlertRulesConfig,
        routing: RoutingConfig | None,
        outbox: Outbox | None,
        book_store: BookStore,
        delivery: Delivery | None = None,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._database = settings.clickhouse_database
        self._rules = rules
        self._routing = routing
        self._outbox = outbox
        self._book_store = book_store
        saved = book_store.load()
        book_routing = routing or _STORE_ONLY_ROUTING
        self.book = AlertBook.from_dict(saved, book_routing) if saved else AlertBook(book_routing)
        self._delivery = delivery
        if self._delivery is None and routing is not None and outbox is not None:
            self._delivery = Delivery.from_routing(outbox, routing)
        self._modes = self._latest_modes()
        self._metrics = metrics
        if metrics is not None and routing is not None:
            metrics.declare_receivers(receiver.name for receiver in routing.receivers)

    @classmethod
    def from_settings(
        cls, settings: Settings, client: Client, metrics: PipelineMetrics | None = None
    ) -> Alerter:
        routing = load_routing(settings.alert_routing_file) if settings.alert_routing_file else None
        home = settings.home.expanduser().resolve() / "alerter"
        outbox = SqliteOutbox(home / "outbox.sqlite3") if routing is not None else None
        return cls(
            settings,
            client,
            rules=load_rules(settings),
            routing=routing,
            outbox=outbox,
            book_store=BookStore(home / "alert-book.json"),
            metrics=metrics,
        )

    def _latest_modes(self) -> dict[str, ManagementMode]:
        rows = self._client.execute(
            f"SELECT rep_id, argMax(mode, changed_at) FROM {self._database}.rep_modes GROUP BY rep_id"
        )
        return {rep_id: ManagementMode(mode) for rep_id, mode in rows}

    def sync_silences(self, now: datetime) -> None:
        """Take the silences from ClickHouse (where ``alerts silence`` writes them) into the book."""
        rows = self._client.execute(
            f"SELECT id, matchers, starts_at, ends_at, created_by, comment, expired "
            f"FROM {self._database}.silences FINAL"
        )
        known = {s.id for s in self.book.silences(now, include_expired=True)}
        for silence_id, matchers, starts_at, ends_at, created_by, comment, expired in rows:
            if silence_id not in known:
                self.book.add_silence(
                    Silence(
                        id=silence_id,
                        matchers=tuple(parse_matcher(text) for text in json.loads(matchers)),
                        starts_at=starts_at.replace(tzinfo=UTC),
                        ends_at=ends_at.replace(tzinfo=UTC),
                        created_by=created_by,
                        comment=comment,
                    )
                )
            if expired:
                self.book.expire_silence(silence_id, now)

    def tick(self, now: datetime) -> TickResult:
        result = TickResult()
        self.sync_silences(now)
        views = load_views(self._client, self._database, now, self._rules, self._settings.deal_stages)
        result.views = len(views)
        firing = {view.alert.fingerprint for view in self.book.alerts(now) if view.alert.ends_at is None}
        candidates = evaluate(views, now, self._rules, firing) + oversight_shifts(views, now, self._rules)
        result.candidates = len(candidates)
        result.transitions = self.book.observe(candidates, now, (*RULES, OVERSIGHT_SHIFT))
        for rep_id, decision in modes_of(views, now, self._rules).items():
            if self._modes.get(rep_id) != decision.mode:
                result.mode_changes.append((rep_id, decision.mode, decision.reason))
                self._modes[rep_id] = decision.mode
        self._store(result, now)
        self._publish(result.transitions)
        if self._routing is not None and self._outbox is not None:
            notes = self.book.plan_notifications(now)
            result.notifications = self._outbox.enqueue(notes, now)
        self._book_store.save(self.book.to_dict())
        if self._metrics is not None:
            firing_by_rule = dict.fromkeys(RULES, 0)
            for view in self.book.alerts(now):
                firing_by_rule[view.alert.rule] = firing_by_rule.get(view.alert.rule, 0) + 1
            self._metrics.set_alerts_firing(firing_by_rule)
        result.delivery = self.deliver(now)
        for transition in result.transitions:
            logger.info("alert %s: %s", transition.status, transition.alert.summary)
        return result

    def deliver(self, now: datetime) -> DeliveryReport | None:
        if self._delivery is None:
            return None
        report = self._delivery.deliver_due(now)
        if self._metrics is not None and self._outbox is not None:
            for ids, count in (
                (report.sent, self._metrics.notification_sent),
                (report.retrying, self._metrics.notification_retried),
                (report.failed, self._metrics.notification_failed),
            ):
                for notification_id in ids:
                    entry = self._outbox.get(notification_id)
                    if entry is not None:
                        count(entry.receiver)
        return report

    def _store(self, result: TickResult, now: datetime) -> None:
        if result.transitions:
            self._client.execute(
                f"INSERT INTO {self._database}.alerts (fingerprint, rule, scope, key, detail, status, "
                "severity, value, baseline, summary, action, labels, starts_at, ends_at, updated_at) VALUES",
                [_alert_row(t, now) for t in result.transitions],
                types_check=False,
            )
        if result.mode_changes:
            self._client.execute(
                f"INSERT INTO {self._database}.rep_modes (rep_id, mode, reason, changed_at) VALUES",
                [
                    (rep_id, mode.value, reason, epoch_millis(now))
                    for rep_id, mode, reason in result.mode_changes
                ],
                types_check=False,
            )

    def _publish(self, transitions: list[Transition]) -> None:
        """Every transition on the alerts topic (keyed by fingerprint), for other consumers."""
        if not transitions or self._settings.kafka_bootstrap is None:
            return
        from streams.kafka import start_producer

        async def send() -> None:
            producer = await start_producer(self._settings)
            try:
                for transition in transitions:
                    body = {"status": str(transition.status), "at": transition.at.isoformat()}
                    body |= transition.alert.to_dict()
                    await producer.send(
                        self._settings.topics.alerts,
                        key=transition.alert.fingerprint.encode(),
                        value=json.dumps(body).encode(),
                    )
                await producer.flush()
            finally:
                await producer.stop()

        asyncio.run(send())

    def reload(self) -> None:
        """Back to the last saved book, after a tick failed half-way: its transitions were applied
        in memory but perhaps not stored, published or queued, so the next tick must see them again."""
        saved = self._book_store.load()
        routing = self._routing or _STORE_ONLY_ROUTING
        self.book = AlertBook.from_dict(saved, routing) if saved else AlertBook(routing)
        self._modes = self._latest_modes()

    def close(self) -> None:
        if self._outbox is not None:
            self._outbox.close()


def _alert_row(transition: Transition, now: datetime) -> tuple[Any, ...]:
    alert = transition.alert
    return (
        alert.fingerprint,
        alert.rule,
        str(alert.scope),
        alert.key,
        alert.detail,
        str(transition.status),
        str(alert.severity),
        alert.value,
        alert.baseline,
        alert.summary,
        alert.action,
        dict(alert.labels),
        epoch_millis(alert.starts_at),
        None if alert.ends_at is None else epoch_millis(alert.ends_at),
        epoch_micros(now),
    )


def _store_only_routing() -> RoutingConfig:
    """Without a routing file alerts are evaluated and stored but sent nowhere; the book still
    needs a route to group by, so it gets one whose receiver is never delivered to."""
    return RoutingConfig.model_validate(
        {
            "receivers": [{"name": "none", "webhook": {"url": "http://127.0.0.1:9/unused"}}],
            "route": {"receiver": "none"},
        }
    )


_STORE_ONLY_ROUTING = _store_only_routing()


def run_forever(
    alerter: Alerter, *, interval_s: float, clock: Callable[[], datetime], stop: Callable[[], bool]
) -> None:
    """Tick every ``interval_s`` (delivering in between, every second) until ``stop()``."""
    import time

    next_tick = 0.0
    while not stop():
        started = time.monotonic()
        if started >= next_tick:
            try:
                result = alerter.tick(clock())
                logger.info(
                    "evaluated %d reps: %d conditions, %d transitions, %d notifications queued",
                    result.views,
                    result.candidates,
                    len(result.transitions),
                    result.notifications,
                )
            except Exception:
                # One failed tick (ClickHouse briefly away) must not end alerting: log and retry.
                logger.exception("alert evaluation failed; retrying at the next tick")
            next_tick = started + interval_s
        else:
            alerter.deliver(clock())
        time.sleep(min(1.0, max(0.05, next_tick - time.monotonic())))


def store_silence(client: Client, database: str, silence: Silence, *, expired: bool, now: datetime) -> None:
    """Write a silence for the alerter to pick up (``alerts silence`` / ``alerts unsilence``)."""
    validate_database_name(database)
    client.execute(
        f"INSERT INTO {database}.silences (id, matchers, starts_at, ends_at, created_by, comment, expired, "
        "updated_at) VALUES",
        [
            (
                silence.id,
                json.dumps([str(m) for m in silence.matchers]),
                epoch_millis(silence.starts_at),
                epoch_millis(silence.ends_at),
                silence.created_by,
                silence.comment,
                int(expired),
                epoch_micros(now),
            )
        ],
        types_check=False,
    )
