"""The ingest service for tests: the real app on a real socket (uvicorn in a thread), against the
session's (or a test's own) broker and ClickHouse, with tokens written where `tokens create` writes."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

import uvicorn
from starlette.applications import Starlette

from schemas.ingest import TokenScope
from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.tokens import save_token
from streams.ingest.checkin import checkin_routes
from streams.ingest.service import IngestContext, create_app
from streams.ingest.tokens import new_token


@dataclass
class Service:
    url: str
    app: Starlette

    @property
    def context(self) -> IngestContext:
        context: IngestContext = self.app.state.context
        return context


@contextmanager
def running_service(settings: Settings) -> Iterator[Service]:
    app = create_app(settings, extra_routes=checkin_routes(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the ingest service did not start"
        time.sleep(0.02)
    try:
        yield Service(url=f"http://127.0.0.1:{port}", app=app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def create_token(
    settings: Settings, *scopes: TokenScope, rep_id: str | None = None, name: str = "test"
) -> str:
    token, record = new_token(name, scopes, rep_id=rep_id, now=datetime.now(UTC))
    client = connect(settings)
    try:
        save_token(client, settings.clickhouse_database, record, updated_at=datetime.now(UTC))
    finally:
        client.disconnect()
    return token


def revoke_token(settings: Settings, token: str) -> None:
    from sinks.tokens import load_tokens
    from streams.ingest.tokens import token_id_of

    client = connect(settings)
    try:
        (record,) = [
            r for r in load_tokens(client, settings.clickhouse_database) if r.token_id == token_id_of(token)
        ]
        now = datetime.now(UTC)
        save_token(
            client,
            settings.clickhouse_database,
            record.model_copy(update={"revoked_at": now}),
            updated_at=now,
        )
    finally:
        client.disconnect()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def wait_for(predicate: object, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()  # type: ignore[operator]
        if value:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what} (last: {value!r})"
        time.sleep(0.2)
