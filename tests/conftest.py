"""Shared fixtures: one runtime (broker + ClickHouse) per test session, and clients for it.

The servers are the embedded ones unless SALESPULSE_KAFKA_BOOTSTRAP / SALESPULSE_CLICKHOUSE_HOST
name external ones. Under pytest-xdist every worker is its own session with its own
``tmp_path_factory`` directory, so each gets its own runtime and ClickHouse data dir; with external
servers, tests must keep to their own topics and databases.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_driver import Client

from schemas.settings import Settings
from streams.runtime.kafka_compat import install_end_offsets_fix
from streams.runtime.supervisor import EmbeddedRuntime


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRuntime]:
    settings = Settings(home=tmp_path_factory.mktemp("salespulse-home"))
    # pytest owns the signals: Ctrl-C unwinds the session (and this fixture) itself, and a SIGTERM
    # that kills pytest still takes the servers down through their parent-death signal.
    with EmbeddedRuntime(settings, handle_signals=False) as started:
        if started.started_broker:
            # Test clients read end offsets directly; against Tansu they need the fix (see kafka_compat).
            install_end_offsets_fix()
        yield started


@pytest.fixture(scope="session")
def kafka_bootstrap(runtime: EmbeddedRuntime) -> str:
    return runtime.kafka_bootstrap


@pytest.fixture(scope="session")
def clickhouse_endpoint(runtime: EmbeddedRuntime) -> tuple[str, int]:
    return runtime.clickhouse_host, runtime.clickhouse_port


@pytest.fixture
def clickhouse_client(runtime: EmbeddedRuntime) -> Iterator[Client]:
    """A native-protocol client on the default database; disconnected after the test, because an
    open connection makes the embedded server's stop take ~6 s instead of ~0.3 s."""
    settings = runtime.settings_for_children()
    client = Client(
        runtime.clickhouse_host,
        port=runtime.clickhouse_port,
        user=settings.clickhouse_user,
        password=settings.clickhouse_password.get_secret_value(),
        secure=settings.clickhouse_secure,
    )
    try:
        yield client
    finally:
        client.disconnect()
