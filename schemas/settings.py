"""The one settings object. Built once at start-up from ``SALESPULSE_*`` environment variables
(and an optional ``.env`` file) and passed down; nothing else reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TopicNames:
    """Topic names derived from one prefix, so several deployments can share a cluster."""

    def __init__(self, prefix: str) -> None:
        self.activities = f"{prefix}activities"
        self.deals = f"{prefix}deals"
        self.reps = f"{prefix}reps"
        self.alerts = f"{prefix}alerts"
        self.dead_letters = f"{prefix}deadletter"

    @property
    def event_topics(self) -> tuple[str, str]:
        return (self.activities, self.deals)

    @property
    def consumed(self) -> tuple[str, ...]:
        """Every topic a worker reads: events, reps, and dead letters (which it stores)."""
        return (self.activities, self.deals, self.reps, self.dead_letters)

    @property
    def all(self) -> tuple[str, ...]:
        return (self.activities, self.deals, self.reps, self.alerts, self.dead_letters)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SALESPULSE_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    home: Path = Field(
        default=Path(".salespulse"),
        description="Where the embedded runtime keeps its data (ClickHouse files, logs, runtime state).",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port] of an external Kafka cluster. Unset: start the embedded broker.",
    )
    clickhouse_host: str | None = Field(
        default=None, description="Host of an external ClickHouse server. Unset: start the embedded one."
    )
    clickhouse_port: int = Field(default=9000, description="Native-protocol (TCP) port of ClickHouse.")
    clickhouse_user: str = Field(default="default", description="ClickHouse user.")
    clickhouse_password: SecretStr = Field(default=SecretStr(""), description="ClickHouse password.")
    clickhouse_database: str = Field(
        default="salespulse", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="ClickHouse database."
    )
    clickhouse_secure: bool = Field(default=False, description="Use TLS for the native protocol.")
    clickhouse_query_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=120.0,
        description=(
            "Seconds a ClickHouse query or insert may go without a reply before it counts as failed "
            "(and is retried): a server that hangs without closing the connection pauses the worker "
            "this long, not the driver's 300 s."
        ),
    )

    topic_prefix: str = Field(
        default="salespulse.", pattern=r"^[A-Za-z0-9._-]*$", description="Prefix of every topic name."
    )
    topic_partitions: Annotated[int, Field(ge=1, le=1024)] = Field(
        default=4, description="Partitions of the event topics; the most workers that can share the load."
    )
    topic_replication: Annotated[int, Field(ge=1, le=16)] = Field(
        default=1, description="Replication factor for topics the app creates."
    )
    kafka_session_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0, description="Consumer group session timeout, in seconds."
    )
    kafka_heartbeat_interval_s: Annotated[float, Field(gt=0, le=60)] = Field(
        default=1.0, description="Consumer group heartbeat interval, in seconds."
    )
    kafka_rebalance_timeout_s: Annotated[float, Field(gt=0, le=600)] = Field(
        default=10.0, description="Consumer group rebalance timeout, in seconds."
    )
    kafka_embedded_compat: bool = Field(
        default=False,
        description=(
            "Work around the embedded broker's wrong end offsets (see streams/runtime/kafka_compat.py). "
            "Set by the embedded runtime for its children; leave off against real Kafka."
        ),
    )
    consumer_group: str = Field(default="salespulse", description="Consumer group (Faust app id).")

    currency: str = Field(
        default="USD", pattern=r"^[A-Z]{3}$", description="The one org currency all amounts are in."
    )
    max_message_bytes: Annotated[int, Field(ge=1024, le=64 * 1_048_576)] = Field(
        default=1_048_576, description="Largest accepted message value on an event topic."
    )
    batch_max_events: Annotated[int, Field(ge=1, le=10_000)] = Field(
        default=200, description="Most events one published message (one rep's batch) carries."
    )
    batch_linger_ms: Annotated[int, Field(ge=0, le=60_000)] = Field(
        default=50, description="Longest a publisher holds an event to fill a batch."
    )
    deal_stages: tuple[str, ...] = Field(
        default=("qualification", "discovery", "proposal", "negotiation"),
        description=(
            "Open deal stages in funnel order (JSON list); moving to a later one is a stage "
            "advancement. Matched case-insensitively; other stages are allowed but unranked."
        ),
    )
    alert_rules_file: Path | None = Field(
        default=None,
        description="YAML file of alert rule settings (thresholds, windows, calendars); unset: the defaults.",
    )
    alert_routing_file: Path | None = Field(
        default=None,
        description=(
            "YAML routing file: receivers (Slack, Teams, Mattermost, Google Chat, webhook, "
            "Alertmanager) and routes; unset: alerts are evaluated and stored but sent nowhere."
        ),
    )
    alert_interval_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=60.0, description="Seconds between evaluations of the alert rules by the alerter."
    )
    late_grace_days: Annotated[int, Field(ge=1, le=3650)] = Field(
        default=35,
        description=(
            "How many days an event may trail the newest event of its rep on the same stream "
            "(activities or deals) and still be counted."
        ),
    )
    events_ttl_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        default=None,
        description=(
            "Days raw activity events are kept in ClickHouse (a TTL on `events`, applied when the "
            "schema is prepared); deal events, daily counters and roll-ups are kept. Unset: for ever. "
            "Must exceed SALESPULSE_LATE_GRACE_DAYS."
        ),
    )
    visit_location_retention_days: Annotated[int, Field(ge=1, le=36500)] | None = Field(
        default=None,
        description=(
            "Days the reported position of a field visit (lat, lon, accuracy) is kept: a column TTL "
            "on `visits` and a TTL on raw visit events, applied when the schema is prepared. After it "
            "only the verification status and distance remain. Unset: for ever. Must exceed "
            "SALESPULSE_LATE_GRACE_DAYS."
        ),
    )
    accounts_refresh_s: Annotated[float, Field(gt=0, le=86_400)] = Field(
        default=60.0,
        description="Seconds between a worker's reads of the accounts table (positions to verify visits).",
    )
    visit_max_speed_kmh: Annotated[float, Field(gt=0, le=2_000)] = Field(
        default=130.0,
        description=(
            "Fastest plausible door-to-door travel (km/h) between two visits; faster is flagged "
            "impossible travel."
        ),
    )
    worker_batch_messages: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=500,
        description=(
            "Most messages a worker processes (and writes to ClickHouse) at once; with full "
            "200-event messages a batch of 500 peaks near 250 MiB in the worker."
        ),
    )
    worker_batch_seconds: Annotated[float, Field(gt=0, le=60)] = Field(
        default=0.2, description="Longest a worker waits to fill a batch before processing it."
    )
    sink_retry_max_seconds: Annotated[float, Field(gt=0, le=600)] = Field(
        default=30.0, description="Cap of the backoff between ClickHouse write retries."
    )
    table_store: str = Field(
        default="memory://", description="Faust table store: memory:// or rocksdb:// (needs rocksdict)."
    )
    log_level: str = Field(default="INFO", description="Log level of salespulse's own loggers.")
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description=(
            "Address a worker's Prometheus `/metrics` endpoint binds to. Loopback by default; "
            "`0.0.0.0` inside a container so Prometheus can scrape it over the container network."
        ),
    )
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9464,
        description=(
            "TCP port of a worker's `/metrics` endpoint; 0 turns it off. When several workers share a "
            "host, give each its own port (a worker whose port is taken runs on without metrics)."
        ),
    )

    alerter_metrics_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        default=9465,
        description=(
            "TCP port of the alerter's `/metrics` endpoint (on SALESPULSE_METRICS_HOST); 0 turns it off."
        ),
    )

    ingest_max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1_048_576)] = Field(
        default=1_048_576,
        description="Largest request body `salespulse serve` accepts (413 past it).",
    )
    ingest_max_events: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=1000, description="Most events one ingest request may carry (413 past it)."
    )
    ingest_rate_per_s: Annotated[float, Field(gt=0, le=100_000)] = Field(
        default=50.0, description="Requests per second one API token may make on average (429 past it)."
    )
    ingest_rate_burst: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=100, description="Requests one API token may make at once before its rate limit applies."
    )
    ingest_publish_timeout_s: Annotated[float, Field(gt=0, le=300)] = Field(
        default=10.0,
        description=(
            "Longest an ingest request waits for the broker to acknowledge its events before it "
            "answers 503 with Retry-After (the client retries; event ids make that harmless)."
        ),
    )
    ingest_max_pending_events: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=50_000,
        description=(
            "Events the ingest service may have waiting for the broker at once; a request that "
            "would go past it while others wait is answered 503 with Retry-After at once (the "
            "producer buffer is full)."
        ),
    )
    ingest_token_refresh_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        default=5.0,
        description="How often `serve` re-reads the API tokens: a revocation takes effect within this time.",
    )
    ingest_public_url: str = Field(
        default="http://127.0.0.1:8080",
        description=(
            "The address phones and webhook senders reach `serve` at (behind your TLS proxy): the base "
            "of check-in links, and the URI HubSpot signs."
        ),
    )
    webhook_dir: Path | None = Field(
        default=None,
        description=(
            "Directory of webhook mapping files, one `<source>.yaml` per source (e.g. "
            "deploy/webhooks/hubspot.yaml); unset: `POST /v1/webhooks/...` answers 404."
        ),
    )
    webhook_secrets: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            'Shared secrets of the webhook sources as JSON, e.g. `{"hubspot": "..."}`; a source '
            "without one is refused."
        ),
    )

    @model_validator(mode="after")
    def _ttl_outlasts_the_grace(self) -> Settings:
        # A redelivered event within the grace period is recognised as a duplicate by its stored
        # copy; with a shorter TTL that copy could be gone and the event counted twice.
        if self.events_ttl_days is not None and self.events_ttl_days <= self.late_grace_days:
            raise ValueError(
                f"SALESPULSE_EVENTS_TTL_DAYS ({self.events_ttl_days}) must be more than "
                f"SALESPULSE_LATE_GRACE_DAYS ({self.late_grace_days}): events within the grace period "
                "must still be stored to be recognised as duplicates"
            )
        retention = self.visit_location_retention_days
        if retention is not None and retention <= self.late_grace_days:
            # A worker rebuilds a rep's visits from the stored visit events within the grace.
            raise ValueError(
                f"SALESPULSE_VISIT_LOCATION_RETENTION_DAYS ({retention}) must be more than "
                f"SALESPULSE_LATE_GRACE_DAYS ({self.late_grace_days}): visit events within the grace "
                "period are needed to rebuild a rep's visits"
            )
        return self

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    @property
    def embedded_broker(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_host is None
