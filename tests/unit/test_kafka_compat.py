"""The embedded broker's fetch-wait cap: consumers made after it wait at most the cap, whatever they
ask for (Faust asks 1500 ms, which the embedded broker holds in full)."""

from __future__ import annotations

import asyncio

import aiokafka

from streams.runtime.kafka_compat import (
    EMBEDDED_FETCH_MAX_WAIT_MS,
    fetch_wait_cap_installed,
    install_fetch_wait_cap,
)


def test_consumers_made_after_the_cap_wait_at_most_the_cap() -> None:
    async def waits() -> tuple[int, int, int]:
        asked = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", fetch_max_wait_ms=1500)
        default = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
        shorter = aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9", fetch_max_wait_ms=10)
        return asked._fetch_max_wait_ms, default._fetch_max_wait_ms, shorter._fetch_max_wait_ms

    install_fetch_wait_cap()
    install_fetch_wait_cap()  # idempotent: not wrapped twice
    assert fetch_wait_cap_installed()
    assert asyncio.run(waits()) == (EMBEDDED_FETCH_MAX_WAIT_MS, EMBEDDED_FETCH_MAX_WAIT_MS, 10)
