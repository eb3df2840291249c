"""Client-side fixes for two quirks of the embedded broker: its wrong ListOffsets(LATEST) answer,
and Fetch requests held for their whole ``max_wait`` although data arrived meanwhile.

Tansu answers LATEST with "base offset of the newest record batch + 1", not the high watermark:
after one batch of 10 records ``end_offsets`` says 1 (true 10). Anything that trusts it goes wrong:
``seek_to_end`` re-reads the tail of the last batch, and Faust's changelog recovery either stops
with ``ConsistencyError`` (rocksdb) or silently restores too little (memory). Fetch responses carry
the true high watermark, so the fix keeps the broker's answer ``L`` as a lower bound and asks for
the high watermark with one tiny Fetch at ``L - 1``: that offset lies inside the newest batch, so
the broker answers at once (a Fetch at the end offset would be held for ``max_wait_ms``).

It patches aiokafka internals (``Fetcher._proc_offset_request`` and the 0.14 ``FetchRequest``
signature), process-wide, hence the version pin check. Install it only when talking to the
embedded broker, before any consumer starts: the caller decides, from
``Settings.kafka_embedded_compat`` (which ``EmbeddedRuntime.settings_for_children()`` turns on
when it started the broker). Against a real Kafka it is not needed, costs an
extra round trip per LATEST lookup and, for ``read_committed`` consumers, would report the high
watermark instead of the last stable offset.

**Held fetches.** A consumer that has caught up sends a Fetch that a Kafka broker answers as soon as
a record arrives; Tansu answers it only when ``fetch_max_wait_ms`` has passed. Faust sets 1500 ms,
so every event waited up to 1.5 s before a worker even saw it (measured with aiokafka: a record
produced to a caught-up consumer arrived after 439 ms median at 1500 ms, 130 ms at 500 ms, 7 ms at
20 ms). :func:`install_fetch_wait_cap` caps it for consumers created afterwards, embedded only:
against a real Kafka the long wait is free and fewer idle requests are better.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import aiokafka
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

SUPPORTED_AIOKAFKA = "0.14."
_LATEST = -1
_MARKER = "_salespulse_end_offsets_fix"
_FETCH_WAIT_MARKER = "_salespulse_fetch_wait_cap"
# An idle consumer then asks 20 times a second: nothing on loopback, and events reach a worker in
# tens of milliseconds instead of up to 1.5 s.
EMBEDDED_FETCH_MAX_WAIT_MS = 50

# {TopicPartition: (offset, timestamp)}, as aiokafka's Fetcher returns it.
OffsetsByPartition = dict[TopicPartition, tuple[int, Any]]
_ProcOffsetRequest = Callable[[Any, int, dict[str, list[tuple[int, int]]]], Awaitable[OffsetsByPartition]]


class UnsupportedAiokafkaError(RuntimeError):
    """The installed aiokafka is not the version this patch was written and tested against."""


def _check_version() -> None:
    if not aiokafka.__version__.startswith(SUPPORTED_AIOKAFKA):
        raise UnsupportedAiokafkaError(
            f"streams.runtime.kafka_compat patches aiokafka {SUPPORTED_AIOKAFKA}x internals, but aiokafka "
            f"{aiokafka.__version__} is installed. Pin aiokafka==0.14.* or re-verify the patch "
            "(shared/recipes/embedded-kafka.md, quirk 1) against the new version."
        )


def _with_true_high_watermarks(original: _ProcOffsetRequest) -> _ProcOffsetRequest:
    async def proc_offset_request(
        self: Any, node_id: int, topic_data: dict[str, list[tuple[int, int]]]
    ) -> OffsetsByPartition:
        offsets = await original(self, node_id, topic_data)
        probes: defaultdict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for topic, partitions in topic_data.items():
            for partition, timestamp in partitions:
                tp = TopicPartition(topic, partition)
                # An empty partition (0) is already right; only LATEST answers are wrong.
                if timestamp == _LATEST and tp in offsets and offsets[tp][0] > 0:
                    probes[topic].append((partition, offsets[tp][0] - 1, 1))  # partition, offset, max bytes
        if not probes:
            return offsets
        # max_wait 1 ms, min_bytes 0, max_bytes 1: we want only the response header's high watermark.
        request = FetchRequest(1, 0, 1, self._isolation_level, list(probes.items()))
        response = await self._client.send(node_id, request)
        for topic, partitions in response.topics:
            for partition, error_code, high_watermark, *_ in partitions:
                tp = TopicPartition(topic, partition)
                if error_code == 0 and tp in offsets and high_watermark > offsets[tp][0]:
                    offsets[tp] = (high_watermark, offsets[tp][1])
        return offsets

    setattr(proc_offset_request, _MARKER, original)
    return proc_offset_request


def end_offsets_fix_installed() -> bool:
    return hasattr(Fetcher._proc_offset_request, _MARKER)


def install_end_offsets_fix() -> None:
    """Make aiokafka's LATEST offset lookups (``end_offsets``, ``seek_to_end``, ``auto_offset_reset=
    "latest"``) exact against the embedded broker. Idempotent; affects every consumer in the process.

    Raises :class:`UnsupportedAiokafkaError` unless aiokafka is 0.14.x.
    """
    _check_version()
    if end_offsets_fix_installed():
        return
    Fetcher._proc_offset_request = _with_true_high_watermarks(Fetcher._proc_offset_request)
    log.info("installed the end-offsets fix for the embedded broker (aiokafka %s)", aiokafka.__version__)


def fetch_wait_cap_installed() -> bool:
    return hasattr(aiokafka.AIOKafkaConsumer.__init__, _FETCH_WAIT_MARKER)


def install_fetch_wait_cap(cap_ms: int = EMBEDDED_FETCH_MAX_WAIT_MS) -> None:
    """Cap ``fetch_max_wait_ms`` of every aiokafka consumer created from now on in this process
    (Faust's included, which passes 1500). Idempotent; for the embedded broker only."""
    _check_version()
    if fetch_wait_cap_installed():
        return
    original = aiokafka.AIOKafkaConsumer.__init__

    @functools.wraps(original)
    def capped_init(self: Any, *topics: str, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = min(int(kwargs.get("fetch_max_wait_ms", 500)), cap_ms)
        original(self, *topics, **kwargs)

    setattr(capped_init, _FETCH_WAIT_MARKER, original)
    aiokafka.AIOKafkaConsumer.__init__ = capped_init
    log.info("capped consumers' fetch_max_wait_ms at %d for the embedded broker", cap_ms)
