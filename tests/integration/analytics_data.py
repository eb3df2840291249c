"""One database per test session filled with the demo generator's data, for the read side: the
report, the analytics views and every dashboard query run against it.

The org is the demo's (``streams.synthetic``), run through the worker's processing step into the
session's real ClickHouse (``test_alerter.store_history``), then the alerter evaluated daily over
the last four weeks on the data's own clock, so alerts and management-mode changes are stored as
the alerter stores them. Built once per process and shared by every module that asks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from test_alerter import DAYS, START, store_history

from schemas.settings import Settings
from sinks.clickhouse import connect
from streams.alerter import Alerter, BookStore, load_rules
from streams.orchestration import prepare_storage_and_topics
from streams.runtime.supervisor import EmbeddedRuntime
from streams.synthetic import OrgSpec

SPEC = OrgSpec(reps=12, teams=3, territories=3, days=DAYS, start=START, seed=11, fading_reps=2, fade_at=0.7)
ALERTER_DAYS = 28


@dataclass(frozen=True)
class DemoDatabase:
    settings: Settings
    fading: tuple[str, ...]
    first_day: date
    last_day: date

    @property
    def database(self) -> str:
        return self.settings.clickhouse_database

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, datetime.min.time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first instant after the data."""
        return datetime.combine(self.last_day + timedelta(days=1), datetime.min.time(), tzinfo=UTC)


_loaded: dict[int, DemoDatabase] = {}


def demo_database(runtime: EmbeddedRuntime, state_dir: Path) -> DemoDatabase:
    """The session's demo database (loaded on the first call, in ~20 s)."""
    if id(runtime) in _loaded:
        return _loaded[id(runtime)]
    settings = runtime.settings_for_children().model_copy(
        update={"clickhouse_database": f"analytics_{uuid.uuid4().hex[:8]}", "topic_prefix": "analytics."}
    )
    prepare_storage_and_topics(settings)
    fading = store_history(settings, SPEC)
    # The alerter without a broker: it stores alerts and modes, and publishes nothing.
    alerter_settings = settings.model_copy(update={"kafka_bootstrap": None, "home": state_dir})
    state_dir.mkdir(parents=True, exist_ok=True)
    client = connect(settings)
    try:
        alerter = Alerter(
            alerter_settings,
            client,
            rules=load_rules(alerter_settings),
            routing=None,
            outbox=None,
            book_store=BookStore(state_dir / "alert-book.json"),
        )
        end = START + timedelta(days=DAYS)
        for day in range(ALERTER_DAYS, 0, -1):
            alerter.tick((end - timedelta(days=day)).replace(hour=18))
        ((first_day, last_day),) = client.execute(
            "SELECT min(toDate(occurred_at)), max(toDate(occurred_at)) "
            f"FROM {settings.clickhouse_database}.events"
        )
    finally:
        client.disconnect()
    loaded = DemoDatabase(
        settings=settings,
        fading=tuple(fading),
        first_day=first_day,
        last_day=last_day,
    )
    _loaded[id(runtime)] = loaded
    return loaded
