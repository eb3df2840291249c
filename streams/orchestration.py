"""Bring up what a command needs: servers (embedded or external), schema, topics and a worker.

On the embedded default a publishing command is self-contained: it starts the broker, ClickHouse
and a worker, publishes, waits until the worker has stored everything, and stops them again. With
external servers it only publishes (the workers run elsewhere).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.migrate import apply_migrations
from sinks.retention import apply_events_ttl
from streams.kafka import ensure_topics
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

logger = logging.getLogger(__name__)

# Consumer-group timings for the embedded broker: it makes a join wait about half the session
# timeout, so the defaults that suit a real cluster would make every start take many seconds.
EMBEDDED_GROUP_TIMINGS = {
    "SALESPULSE_KAFKA_SESSION_TIMEOUT_S": "2.0",
    "SALESPULSE_KAFKA_HEARTBEAT_INTERVAL_S": "0.3",
    "SALESPULSE_KAFKA_REBALANCE_TIMEOUT_S": "4.0",
}


@dataclass
class RunningPipeline:
    settings: Settings
    """Settings pointing at the live servers, as children and clients should use them."""
    runtime: EmbeddedRuntime
    worker: ManagedProcess | None

    @property
    def self_contained(self) -> bool:
        """True when a worker of this home's embedded runtime consumes what we publish (one this
        process started, or the worker of the running runtime it attached to), so a command can wait
        until everything is stored."""
        return self.runtime.started_broker or (self.runtime.attached and self.runtime.worker_running)


def prepare_storage_and_topics(settings: Settings, *, reset_database: bool = False) -> None:
    """Migrate the ClickHouse schema and create the topics; ``reset_database`` drops the database
    first (only the demo asks for that, for its own database on the embedded servers)."""
    client = connect(settings)
    try:
        if reset_database:
            client.execute(f"DROP DATABASE IF EXISTS {settings.clickhouse_database} SYNC")
            logger.info("dropped database %s to start afresh", settings.clickhouse_database)
        applied = apply_migrations(client, settings.clickhouse_database)
        for migration in applied:
            logger.info("applied ClickHouse migration %04d %s", migration.version, migration.name)
        apply_events_ttl(
            client,
            settings.clickhouse_database,
            settings.events_ttl_days,
            settings.visit_location_retention_days,
        )
    finally:
        client.disconnect()
    created = asyncio.run(ensure_topics(settings))
    if created:
        logger.info("created topics %s", ", ".join(created))


def live_settings(runtime: EmbeddedRuntime) -> Settings:
    """Settings for clients in this process, pointing at the live servers."""
    live = runtime.settings_for_children()
    if runtime.embedded_broker:
        timings = {
            key.removeprefix("SALESPULSE_").lower(): float(v) for key, v in EMBEDDED_GROUP_TIMINGS.items()
        }
        live = live.model_copy(update={"kafka_embedded_compat": True, **timings})
    return live


def worker_env(runtime: EmbeddedRuntime) -> dict[str, str]:
    env = runtime.child_env()
    if runtime.embedded_broker:
        env.update(EMBEDDED_GROUP_TIMINGS)
        env["SALESPULSE_KAFKA_EMBEDDED_COMPAT"] = "1"
    return env


def start_worker_process(
    runtime: EmbeddedRuntime, name: str = "worker", extra_env: dict[str, str] | None = None
) -> ManagedProcess:
    """A ``salespulse worker`` child process pointed at the runtime's servers."""
    process = ManagedProcess(
        name=name,
        argv=[sys.executable, "-m", "streams.cli", "worker"],
        env=worker_env(runtime) | (extra_env or {}),
        log_path=runtime.log_dir / f"{name}.log",
    )
    process.start()
    return process


def pipeline_env(settings: Settings) -> dict[str, str]:
    """What a worker child must share with its parent beyond the server endpoints."""
    return {
        "SALESPULSE_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SALESPULSE_TOPIC_PREFIX": settings.topic_prefix,
        "SALESPULSE_CONSUMER_GROUP": settings.consumer_group,
    }


@contextmanager
def running_pipeline(
    settings: Settings,
    *,
    with_worker: bool | None = None,
    reset_database: bool = False,
    attach: bool = True,
) -> Iterator[RunningPipeline]:
    """Servers, schema and topics ready; a worker running when this process owns the broker.

    ``with_worker`` forces the choice; by default a worker is started only on the embedded broker,
    and not when this process attached to the running runtime of its home (whose worker consumes).
    ``attach=False`` fails instead of attaching (see :class:`EmbeddedRuntime`).
    """
    with ExitStack() as stack:
        runtime = stack.enter_context(EmbeddedRuntime(settings, attach=attach))
        live = live_settings(runtime)
        prepare_storage_and_topics(live, reset_database=reset_database)
        start = runtime.started_broker if with_worker is None else with_worker
        worker = None
        if start:
            worker = start_worker_process(runtime, extra_env=pipeline_env(live))
            if runtime.started_broker or runtime.started_clickhouse:
                # Adopted by the runtime: still stopped first (before the servers it writes to),
                # and its pid is listed in runtime.json with the servers', so whoever inspects a
                # running home sees every child started for it (before, the worker was missing).
                runtime.manage(worker)
                runtime.note_pipeline(live)
            else:
                # Nothing embedded: the runtime owns no home and no runtime.json to list it in.
                stack.callback(worker.stop)
        yield RunningPipeline(settings=live, runtime=runtime, worker=worker)
