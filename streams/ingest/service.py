"""The ingest service's HTTP edge: a Starlette app over the pure core of :mod:`streams.ingest`.

Every accepted event is published in the pipeline's batch wire format (grouped per rep, one
message per rep and topic) through a per-request :class:`streams.kafka.EventPublisher`, and the
answer is sent only once the broker acknowledged all of them (``acks=all``). A broker that does not
answer in time, or a producer with too much waiting already, is a 503 with ``Retry-After``: the
client keeps its events and retries, and the events' ids make a retry harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.ingest import IngestResponse, TokenRecord, TokenScope
from schemas.settings import Settings
from schemas.webhooks import WebhookMapping
from schemas.wire import Event
from sinks.clickhouse import connect
from sinks.tokens import load_tokens
from streams.ingest.body import (
    HTTP_SOURCE,
    BodyFormat,
    DecodedBody,
    TooManyEventsError,
    UnreadableBodyError,
    body_format,
    decode_body,
)
from streams.ingest.openapi import docs_page, openapi_document
from streams.ingest.ratelimit import RateLimiter
from streams.ingest.tokens import TokenBook, token_id_of
from streams.ingest.webhooks import map_payload, verify_signature
from streams.kafka import BrokerUnavailableError, EventPublisher, start_producer
from streams.metrics import IngestMetrics

logger = logging.getLogger(__name__)

# Retry-After for a broker that is down (it takes a while to come back) and for a full buffer
# (it drains in moments).
RETRY_AFTER_UNAVAILABLE_S = 5
RETRY_AFTER_BUSY_S = 1
# An unknown token id makes the service re-read the tokens at most this often (a token created a
# moment ago works at once; a flood of made-up tokens costs one query a second).
TOKEN_MISS_REFRESH_S = 1.0
BROKER_RETRY_S = 2.0


class ServiceUnavailableError(RuntimeError):
    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class TokenCache:
    """The tokens from ClickHouse, re-read every ``refresh_s`` (and on an unknown id, at most once a
    second), so tokens created or revoked by another process or replica take effect."""

    def __init__(self, loader: Callable[[], list[TokenRecord]], refresh_s: float) -> None:
        self._loader = loader
        self._refresh_s = refresh_s
        self._book = TokenBook()
        self._loaded_at = -math.inf
        self._lock = asyncio.Lock()

    async def _refresh(self, older_than_s: float) -> None:
        async with self._lock:
            if time.monotonic() - self._loaded_at < older_than_s:
                return
            try:
                records = await asyncio.to_thread(self._loader)
            except Exception as exc:  # any ClickHouse or network failure: keep serving what we know
                if self._loaded_at == -math.inf:
                    raise ServiceUnavailableError(
                        "the token store (ClickHouse) is unavailable", RETRY_AFTER_UNAVAILABLE_S
                    ) from exc
                # Known tokens keep working (a revocation waits for the store); retried next request.
                logger.warning("cannot re-read the API tokens (%s); using the ones read before", exc)
                return
            self._book = TokenBook(records)
            self._loaded_at = time.monotonic()

    async def authenticate(self, token: str) -> TokenRecord | None:
        """The active record of ``token``, or None; ServiceUnavailableError when the tokens were
        never readable."""
        await self._refresh(self._refresh_s)
        record = self._book.authenticate(token)
        token_id = token_id_of(token)
        if record is None and token_id is not None and token_id not in self._book:
            await self._refresh(TOKEN_MISS_REFRESH_S)
            record = self._book.authenticate(token)
        return record


class ProducerHolder:
    """One shared producer, (re)started on demand: a broker that is down when the service starts is
    a 503 per request, not a service that refuses to start."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._failed_at = -math.inf

    async def get(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        async with self._lock:
            if self._producer is None:
                if time.monotonic() - self._failed_at < BROKER_RETRY_S:
                    raise BrokerUnavailableError("the broker was unreachable a moment ago")
                try:
                    self._producer = await start_producer(self._settings)
                except BrokerUnavailableError:
                    self._failed_at = time.monotonic()
                    raise
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


@dataclass
class IngestContext:
    settings: Settings
    metrics: IngestMetrics
    tokens: TokenCache
    limiter: RateLimiter
    producer: ProducerHolder
    webhooks: dict[str, WebhookMapping]
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    pending_events: int = 0

    async def publish(self, events: list[Event], dead_letters: list[DeadLetter]) -> None:
        """Publish, and return once the broker acknowledged everything; ServiceUnavailableError when
        it cannot (unreachable, too slow, or too much already waiting)."""
        count = len(events) + len(dead_letters)
        # Refused only behind others: a request alone always gets its chance, however large.
        if self.pending_events and self.pending_events + count > self.settings.ingest_max_pending_events:
            raise ServiceUnavailableError(
                f"{self.pending_events} events are waiting for the broker already; retry shortly",
                RETRY_AFTER_BUSY_S,
            )
        self.pending_events += count
        try:
            async with asyncio.timeout(self.settings.ingest_publish_timeout_s):
                producer = await self.producer.get()
                publisher = EventPublisher(producer, self.settings)
                await publisher.publish_many(events)
                for letter in dead_letters:
                    await publisher.publish_dead_letter(letter)
                await publisher.flush()
        except TimeoutError:
            raise ServiceUnavailableError(
                f"the broker did not acknowledge within {self.settings.ingest_publish_timeout_s:g} s",
                RETRY_AFTER_UNAVAILABLE_S,
            ) from None
        except (BrokerUnavailableError, KafkaError) as exc:
            logger.warning("publishing failed: %s", exc)
            raise ServiceUnavailableError("the broker is unavailable", RETRY_AFTER_UNAVAILABLE_S) from None
        finally:
            self.pending_events -= count


# ------------------------------------------------------------------------------------ helpers


async def authorize(context: IngestContext, request: Request, scope: TokenScope) -> TokenRecord | Response:
    """The caller's token record, or the 401 / 403 / 429 answer."""
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="salespulse"'}
    if kind.lower() != "bearer" or not token.strip():
        return error_response(401, "missing bearer token (Authorization: Bearer <token>)", challenge)
    try:
        record = await context.tokens.authenticate(token.strip())
    except ServiceUnavailableError as exc:
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
    if record is None:
        return error_response(401, "invalid or revoked token", challenge)
    if scope not in record.scopes:
        return error_response(403, f"this token lacks the {scope.value} scope")
    wait_s = context.limiter.acquire(record.token_id)
    if wait_s > 0:
        return error_response(
            429, "rate limit exceeded for this token", {"Retry-After": str(max(1, math.ceil(wait_s)))}
        )
    return record


class BodyTooLargeError(ValueError):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read at most ``limit`` bytes far (BodyTooLargeError past it, before reading the rest)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _outcome_status(decoded: DecodedBody) -> int:
    accepted = sum(1 for r in decoded.results if r.status == "accepted")
    rejected = sum(1 for r in decoded.results if r.status == "rejected")
    if rejected and not accepted:
        return 422
    if rejected:
        return 207
    return 200


def _answer(decoded: DecodedBody, status: int) -> Response:
    body = IngestResponse(
        accepted=sum(1 for r in decoded.results if r.status == "accepted"),
        rejected=sum(1 for r in decoded.results if r.status == "rejected"),
        ignored=sum(1 for r in decoded.results if r.status == "ignored"),
        results=decoded.results,
    )
    return Response(
        body.model_dump_json(exclude_none=True), status_code=status, media_type="application/json"
    )


def timed(
    endpoint: str, handler: Callable[[IngestContext, Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint_handler(request: Request) -> Response:
        context: IngestContext = request.app.state.context
        started = time.perf_counter()
        response = await handler(context, request)
        context.metrics.answered(endpoint, response.status_code, time.perf_counter() - started)
        return response

    return endpoint_handler


async def _publish_decoded(context: IngestContext, endpoint: str, decoded: DecodedBody) -> Response:
    try:
        await context.publish(decoded.events, decoded.dead_letters)
    except ServiceUnavailableError as exc:
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
    context.metrics.events(
        endpoint,
        accepted=len(decoded.events),
        rejected_reasons=(letter.reason.value for letter in decoded.dead_letters),
    )
    return _answer(decoded, _outcome_status(decoded))


# ----------------------------------------------------------------------------------- handlers


async def post_events(context: IngestContext, request: Request) -> Response:
    authorized = await authorize(context, request, TokenScope.EVENTS_WRITE)
    if isinstance(authorized, Response):
        return authorized
    fmt = body_format(request.headers.get("content-type"))
    if fmt is None:
        return error_response(415, "send application/json (one event or an array) or application/x-ndjson")
    settings = context.settings
    try:
        body = await read_body(request, settings.ingest_max_body_bytes)
    except BodyTooLargeError as exc:
        return error_response(413, str(exc))
    now = context.clock()
    try:
        decoded = decode_body(
            body,
            fmt,
            now=now,
            max_events=settings.ingest_max_events,
            max_event_bytes=settings.max_message_bytes,
        )
    except TooManyEventsError as exc:
        return error_response(413, str(exc))
    except UnreadableBodyError as exc:
        return await _unreadable(context, "events", body, str(exc), now)
    if not decoded.results:
        return error_response(400, "the body holds no events")
    return await _publish_decoded(context, "events", decoded)


async def _unreadable(
    context: IngestContext, endpoint: str, body: bytes, message: str, now: datetime
) -> Response:
    """A body that is not JSON at all: 400, and kept as one dead letter like any unreadable input."""
    reason = DeadLetterReason.NOT_UTF8 if "UTF-8" in message else DeadLetterReason.NOT_JSON
    letter = DeadLetter.of(reason, message, body, source=HTTP_SOURCE, rejected_at=now)
    try:
        await context.publish([], [letter])
    except ServiceUnavailableError as exc:
        return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})
    context.metrics.events(endpoint, accepted=0, rejected_reasons=[reason.value])
    return error_response(400, message)


async def post_webhook(context: IngestContext, request: Request) -> Response:
    source = request.path_params["source"]
    mapping = context.webhooks.get(source)
    secret = context.settings.webhook_secrets.get(source)
    if mapping is None:
        return error_response(404, f"no webhook mapping for source {source!r}")
    if secret is None:
        return error_response(401, f"no shared secret is configured for source {source!r}")
    settings = context.settings
    try:
        body = await read_body(request, settings.ingest_max_body_bytes)
    except BodyTooLargeError as exc:
        return error_response(413, str(exc))
    now = context.clock()
    uri = settings.ingest_public_url.rstrip("/") + request.url.path
    if request.url.query:
        uri += "?" + request.url.query
    problem = verify_signature(
        mapping.signature,
        secret.get_secret_value().encode("utf-8"),
        headers=dict(request.headers),
        body=body,
        method=request.method,
        uri=uri,
        now=now,
    )
    if problem is not None:
        logger.warning("webhook %s refused: %s", source, problem)
        return error_response(401, f"webhook refused: {problem}")
    # A source's signed requests share one rate limit, as a token's do.
    wait_s = context.limiter.acquire(f"webhook:{source}")
    if wait_s > 0:
        return error_response(
            429, "rate limit exceeded for this source", {"Retry-After": str(max(1, math.ceil(wait_s)))}
        )
    if body_format(request.headers.get("content-type")) is not BodyFormat.JSON:
        return error_response(415, "send the webhook payload as application/json")
    try:
        decoded = map_payload(mapping, body, now=now, max_events=settings.ingest_max_events)
    except TooManyEventsError as exc:
        return error_response(413, str(exc))
    except UnreadableBodyError as exc:
        return await _unreadable(context, "webhooks", body, str(exc), now)
    return await _publish_decoded(context, "webhooks", decoded)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    context: IngestContext = request.app.state.context
    bootstrap = context.settings.kafka_bootstrap or ""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(1.0):
                _, writer = await asyncio.open_connection(host or "localhost", int(port))
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return JSONResponse({"status": "ready", "broker": "reachable"})
        except (OSError, TimeoutError, ValueError):
            continue
    return error_response(503, "the broker is not reachable", {"Retry-After": str(RETRY_AFTER_UNAVAILABLE_S)})


async def metrics_endpoint(request: Request) -> Response:
    context: IngestContext = request.app.state.context
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


async def docs(request: Request) -> Response:
    return HTMLResponse(docs_page(openapi_document()))


# --------------------------------------------------------------------------------------- app


def load_webhook_mappings(directory: Path | None) -> dict[str, WebhookMapping]:
    """Every ``<source>.yaml`` of ``directory``; ValueError naming the file that is wrong."""
    if directory is None:
        return {}
    mappings: dict[str, WebhookMapping] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            mapping = WebhookMapping.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except (ValidationError, yaml.YAMLError, OSError) as exc:
            raise ValueError(f"webhook mapping {path}: {exc}") from None
        if mapping.source != path.stem:
            raise ValueError(f"webhook mapping {path}: source {mapping.source!r} must match the file name")
        mappings[mapping.source] = mapping
    return mappings


def _token_loader(settings: Settings) -> Callable[[], list[TokenRecord]]:
    def load() -> list[TokenRecord]:
        client = connect(settings)
        try:
            return load_tokens(client, settings.clickhouse_database)
        finally:
            client.disconnect()

    return load


def create_app(
    settings: Settings,
    *,
    metrics: IngestMetrics | None = None,
    token_loader: Callable[[], list[TokenRecord]] | None = None,
    extra_routes: list[Route] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Starlette:
    """The ingest service for ``settings`` (pointing at live servers)."""
    context = IngestContext(
        settings=settings,
        metrics=metrics if metrics is not None else IngestMetrics(),
        tokens=TokenCache(token_loader or _token_loader(settings), settings.ingest_token_refresh_s),
        limiter=RateLimiter(settings.ingest_rate_per_s, settings.ingest_rate_burst, time.monotonic),
        producer=ProducerHolder(settings),
        webhooks=load_webhook_mappings(settings.webhook_dir),
    )
    if clock is not None:
        context.clock = clock

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        with contextlib.suppress(BrokerUnavailableError):
            await context.producer.get()  # a broker down now is a 503 per request, retried later
        try:
            yield
        finally:
            await context.producer.stop()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/v1/events", timed("events", post_events), methods=["POST"]),
        Route("/v1/webhooks/{source}", timed("webhooks", post_webhook), methods=["POST"]),
        *(extra_routes or []),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.context = context
    return app
