"""Security properties of the running pieces: every embedded server and every worker endpoint listens
on loopback only, secrets never show in settings, errors or logs, and hostile strings go through
the real pipeline as data, never as SQL. (The CLI end to end: tests/e2e/test_security_cli.py.)"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from reliability import free_port, query, scrape, send_raw, settle
from test_pipeline import isolated_pipeline, start_worker

from schemas.reps import Rep
from schemas.settings import Settings
from sinks.clickhouse import connect
from sinks.errors import ClickHouseUnreachableError
from streams.runtime.supervisor import EmbeddedRuntime

pytestmark = pytest.mark.integration

SECRET = "Sup3r-s3cret-pa55word"
HOSTILE = [
    "'; DROP TABLE reps; --",
    "Robert'); DROP TABLE events;--",
    "\\'; SELECT 1; --",
    "%(since)s {db} {0} %s",
    "team\u0000null",
    "ÿ☃ 👩‍💼 \u202etxet",
    "` OR 1=1 --",
]


# --------------------------------------------------------------------------- listening sockets

LISTEN = "0A"


def _listening_sockets() -> dict[str, tuple[str, int]]:
    """Every listening TCP socket on the host: inode -> (address, port)."""
    found: dict[str, tuple[str, int]] = {}
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != LISTEN:
                continue
            address_hex, port_hex = local.split(":")
            raw = bytes.fromhex(address_hex)
            # /proc prints each 32-bit word of the address in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, width, 4))
            found[inode] = (str(ipaddress.ip_address(words)), int(port_hex, 16))
    return found


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    sockets = _listening_sockets()
    return sorted(sockets[inode] for inode in _socket_inodes(pid) if inode in sockets)


def assert_loopback_only(name: str, pid: int) -> list[tuple[str, int]]:
    addresses = listening_addresses(pid)
    assert addresses, f"{name} (pid {pid}) listens nowhere: the check would prove nothing"
    exposed = [(a, p) for a, p in addresses if not ipaddress.ip_address(a).is_loopback]
    assert exposed == [], f"{name} listens beyond loopback: {exposed}"
    return addresses


def test_the_embedded_servers_listen_on_loopback_only(runtime: EmbeddedRuntime) -> None:
    if not (runtime.started_broker and runtime.started_clickhouse):
        pytest.skip("external servers are configured; their binding is theirs")
    processes = runtime.processes
    broker = assert_loopback_only("the broker", processes["broker"].pid)
    clickhouse = assert_loopback_only("ClickHouse", processes["clickhouse"].pid)
    assert ("127.0.0.1", runtime.clickhouse_port) in clickhouse
    assert ("127.0.0.1", int(str(runtime.kafka_bootstrap).rpartition(":")[2])) in broker


@pytest.fixture
def isolated(runtime: EmbeddedRuntime) -> Iterator[Settings]:
    with isolated_pipeline(runtime) as settings:
        yield settings


def test_a_worker_serves_metrics_on_loopback_by_default_and_opens_nothing_else(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    assert Settings(_env_file=None).metrics_host == "127.0.0.1"  # type: ignore[call-arg]
    port = free_port()
    worker = start_worker(runtime, isolated, "worker-sockets", {"SALESPULSE_METRICS_PORT": str(port)})
    try:
        scrape(f"http://127.0.0.1:{port}/metrics", worker)  # up and serving
        assert assert_loopback_only("the worker", worker.pid) == [("127.0.0.1", port)]
    finally:
        worker.stop()


# ------------------------------------------------------------------------------------- secrets


def test_settings_never_show_the_clickhouse_password() -> None:
    settings = Settings(_env_file=None, clickhouse_password=SECRET)  # type: ignore[call-arg]
    shown = [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    assert all(SECRET not in text for text in shown)
    assert settings.clickhouse_password.get_secret_value() == SECRET


def test_a_refused_password_is_reported_without_the_password(runtime: EmbeddedRuntime) -> None:
    # The embedded server's default user has no password: any password is refused.
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        clickhouse_host=runtime.clickhouse_host,
        clickhouse_port=runtime.clickhouse_port,
        clickhouse_password=SECRET,
    )
    with pytest.raises(ClickHouseUnreachableError) as refused:
        connect(settings)
    message = str(refused.value)
    assert "SALESPULSE_CLICKHOUSE_PASSWORD" in message and SECRET not in message
    assert SECRET not in repr(refused.value) and SECRET not in str(refused.value.__cause__)


def test_a_worker_refused_by_clickhouse_exits_without_printing_the_password(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    worker = start_worker(
        runtime, isolated, "worker-bad-password", {"SALESPULSE_CLICKHOUSE_PASSWORD": SECRET}
    )
    status = worker.wait(60)
    log = worker.log_tail(max_lines=10_000)
    assert status not in (None, 0), log
    assert "refused user 'default'" in log and SECRET not in log


# ------------------------------------------------------------------------------ hostile strings


def test_hostile_names_and_ids_go_through_the_pipeline_as_data(
    runtime: EmbeddedRuntime, isolated: Settings
) -> None:
    settings = isolated
    reps = [
        Rep(rep_id=f"{text}-{i}", name=text, team=text, territory=f"terr {text}", manager=text)
        for i, text in enumerate(HOSTILE)
    ]
    events = [
        {"event_id": f"{rep.rep_id}/e{n}", "type": "call", "rep_id": rep.rep_id,
         "occurred_at": "2026-05-04T09:00:00Z", "account_id": rep.name, "attributes": {rep.name: rep.team}}
        for rep in reps
        for n in range(3)
    ]  # fmt: skip
    messages = [(settings.topics.reps, rep.rep_id.encode(), rep.model_dump_json().encode()) for rep in reps]
    messages += [(settings.topics.activities, e["rep_id"].encode(), orjson.dumps(e)) for e in events]
    worker = start_worker(runtime, settings, "worker-hostile")
    try:
        asyncio.run(send_raw(settings, messages))
        settle(settings, worker)
    finally:
        worker.stop()
    assert sorted(
        query(settings, "SELECT rep_id, name, team, territory, manager FROM {db}.reps FINAL")
    ) == sorted((r.rep_id, r.name, r.team, r.territory, r.manager) for r in reps)
    stored = query(settings, "SELECT event_id, rep_id, account_id, payload FROM {db}.events FINAL")
    assert sorted((e, r, a) for e, r, a, _ in stored) == sorted(
        (e["event_id"], e["rep_id"], e["account_id"]) for e in events
    )
    assert all(orjson.loads(str(payload))["attributes"] for *_, payload in stored)
    daily = query(settings, "SELECT rep_id, sum(events) FROM {db}.rep_daily_activity FINAL GROUP BY rep_id")
    assert sorted(daily) == sorted((r.rep_id, 3) for r in reps)
    tables = {str(name) for (name,) in query(settings, "SHOW TABLES FROM {db}")}
    assert {"events", "reps", "rep_daily_activity", "dead_letters", "deals"} <= tables
    assert query(settings, "SELECT count() FROM {db}.dead_letters") == [(0,)]
