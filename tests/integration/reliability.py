"""Helpers shared by the bad-input, fault and security suites: raw sends, per-rep reads of what the
pipeline stored, metrics scrapes. (Not a test module: the suites import it as test_scale_out imports
test_pipeline.)"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from schemas.settings import Settings
from sinks.clickhouse import connect
from streams.kafka import start_producer, wait_until_consumed
from streams.runtime.broker import broker_command, broker_env
from streams.runtime.supervisor import ManagedProcess, wait_for_port

RawMessage = tuple[str, bytes | None, bytes | None]  # topic, key, value


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def send_raw(settings: Settings, messages: Sequence[RawMessage]) -> None:
    """Publish exactly these bytes, in order, and wait until the broker acknowledged them all."""
    producer = await start_producer(settings)
    try:
        await send_with(producer, messages)
    finally:
        await producer.stop()


async def send_with(producer: AIOKafkaProducer, messages: Sequence[RawMessage]) -> None:
    pending = [await producer.send(topic, value=value, key=key) for topic, key, value in messages]
    await asyncio.gather(*pending)


def settle(settings: Settings, worker: ManagedProcess, timeout_s: float = 90) -> None:
    """Wait until the group committed everything published, and check the worker is still up."""
    asyncio.run(wait_until_consumed(settings, settings.topics.consumed, timeout_s=timeout_s))
    assert worker.is_running(), f"the worker died:\n{worker.log_tail()}"


def query(settings: Settings, sql: str, params: dict[str, object] | None = None) -> list[tuple[object, ...]]:
    client = connect(settings)
    try:
        return list(client.execute(sql.format(db=settings.clickhouse_database), params or {}))
    finally:
        client.disconnect()


@dataclass(frozen=True)
class Stored:
    """What the pipeline stored for some reps: events, daily counters and dead-letter reasons."""

    event_ids: Counter[str]
    daily: Counter[tuple[str, str, str]]
    dead_letters: Counter[str]


def stored_for(settings: Settings, rep_ids: Iterable[str]) -> Stored:
    reps = {"reps": sorted(set(rep_ids))}
    client = connect(settings)
    database = settings.clickhouse_database
    try:
        events = client.execute(
            f"SELECT event_id FROM {database}.events FINAL WHERE rep_id IN %(reps)s", reps
        )
        daily = client.execute(
            f"SELECT rep_id, toString(day), type, events FROM {database}.rep_daily_activity FINAL "
            "WHERE rep_id IN %(reps)s AND events > 0",
            reps,
        )
        letters = client.execute(
            f"SELECT reason FROM {database}.dead_letters FINAL WHERE rep_id IN %(reps)s", reps
        )
    finally:
        client.disconnect()
    return Stored(
        event_ids=Counter(str(event_id) for (event_id,) in events),
        daily=Counter({(str(r), str(d), str(t)): int(str(n)) for r, d, t, n in daily}),
        dead_letters=Counter(str(reason) for (reason,) in letters),
    )


# --------------------------------------------------------------------------------------- metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, worker: ManagedProcess, timeout_s: float = 60) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode("utf-8")
            break
        except (urllib.error.URLError, ConnectionError):
            assert worker.is_running(), f"the worker died:\n{worker.log_tail()}"
            assert time.monotonic() < deadline, f"no /metrics within {timeout_s:.0f}s"
            time.sleep(0.2)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def dead_letter_counts(samples: Samples) -> Counter[str]:
    return Counter(
        {
            dict(labels)["reason"]: int(value)
            for (name, labels), value in samples.items()
            if name == "salespulse_dead_letters_total" and value
        }
    )


# ------------------------------------------------------------------------- servers we can break


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]


class RestartableClickHouse:
    """An embedded ClickHouse of the test's own, on fixed ports and one data dir, so it can be
    killed and started again exactly where its clients expect it (the session's server is shared
    by every test and must stay up)."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_dir / "clickhouse-fault.log"
        self.tcp_port = free_port()
        self.http_port = free_port()
        self.process: ManagedProcess | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        ports_file = self.data_dir.parent / f"{self.data_dir.name}.endpoint.json"
        ports_file.unlink(missing_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_source_root()), env.get("PYTHONPATH")]))
        argv = [
            sys.executable, "-m", "streams.runtime.clickhouse_server", "--data", str(self.data_dir),
            "--ports-file", str(ports_file), "--tcp-port", str(self.tcp_port),
            "--http-port", str(self.http_port),
        ]  # fmt: skip
        self.process = ManagedProcess("clickhouse-fault", argv, env=env, log_path=self.log_path).start()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not ports_file.exists():
            assert self.process.is_running(), f"ClickHouse exited:\n{self.process.log_tail()}"
            assert time.monotonic() < deadline, "ClickHouse did not come up"
            time.sleep(0.02)
        wait_for_port("127.0.0.1", self.tcp_port, max(1.0, deadline - time.monotonic()), process=self.process)

    def kill(self) -> None:
        """A crash: SIGKILL, no chance to flush or close anything."""
        assert self.process is not None
        self.process.kill_hard()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class RestartableBroker:
    """A Tansu broker of the test's own on a fixed port, restartable there (memory-only: a restart
    loses every topic, record and committed offset)."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "broker-fault.log"
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        self.process = ManagedProcess("broker-fault", broker_command(self.port), env=broker_env(),
                                      log_path=self.log_path).start()  # fmt: skip
        wait_for_port("127.0.0.1", self.port, timeout, process=self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill_hard()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that delays every chunk it forwards, in both directions: a slow
    network or an overloaded server, as the client sees it. ``delay_s`` may change while it runs.
    ``hang()`` stops forwarding with every connection left open (a server that hangs without
    closing the socket) until ``resume()``."""

    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.port = free_port()
        self.chunks = 0
        self.last_chunk_at = 0.0  # time.monotonic() of the last chunk forwarded
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="latency-proxy", daemon=True)

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self._server = future.result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def hang(self) -> None:
        self._loop.call_soon_threadsafe(self._forwarding.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._forwarding.set)

    def busy(self) -> bool:
        """A client is talking to the server right now (a chunk went through within two delays)."""
        return time.monotonic() - self.last_chunk_at < 2 * self.delay_s + 0.01

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pump(client_reader, upstream_writer), self._pump(upstream_reader, client_writer),
            return_exceptions=True,
        )  # fmt: skip

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                await asyncio.sleep(self.delay_s)
                await self._forwarding.wait()
                self.chunks += 1
                self.last_chunk_at = time.monotonic()
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()
