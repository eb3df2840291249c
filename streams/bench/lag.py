"""The consumer group's progress on the event topics, from one long-lived admin client and consumer
(cheap enough to poll every few milliseconds, unlike opening clients per look)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.settings import Settings


@dataclass(frozen=True)
class GroupProgress:
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return self.end - self.committed


class LagProbe:
    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        if settings.kafka_bootstrap is None:
            raise ValueError("LagProbe needs settings.kafka_bootstrap")
        if settings.kafka_embedded_compat:
            from streams.runtime.kafka_compat import install_end_offsets_fix

            install_end_offsets_fix()
        self._group = settings.consumer_group
        self._topics = list(topics)
        self._admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
        )
        self._partitions: list[TopicPartition] = []

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()
        await self._consumer.topics()
        self._partitions = [
            TopicPartition(topic, partition)
            for topic in self._topics
            for partition in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]

    async def stop(self) -> None:
        await self._consumer.stop()
        await self._admin.close()

    async def group_members(self) -> tuple[str, int]:
        """The group's state (``Stable`` once a rebalance is over) and how many members it has."""
        (response,) = await self._admin.describe_consumer_groups([self._group])
        group = response.to_object()["groups"][0]
        return str(group["state"]), len(group["members"])

    async def progress(self) -> GroupProgress:
        ends = await self._consumer.end_offsets(self._partitions)
        committed = await self._admin.list_consumer_group_offsets(self._group, partitions=self._partitions)
        done = 0
        for tp in self._partitions:
            meta = committed.get(tp)
            done += min(max(meta.offset, 0), ends[tp]) if meta is not None else 0
        return GroupProgress(committed=done, end=sum(ends.values()))


async def until_caught_up(
    probe: LagProbe, *, timeout_s: float, poll_s: float = 0.05, at_least: int = 0
) -> GroupProgress:
    """Wait until the group has committed everything (and at least ``at_least`` messages exist)."""
    deadline = time.monotonic() + timeout_s
    while True:
        progress = await probe.progress()
        if progress.lag == 0 and progress.end >= at_least:
            return progress
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the worker has not caught up after {timeout_s:.0f}s: {progress.lag} messages behind"
            )
        await asyncio.sleep(poll_s)


async def until_group_stable(probe: LagProbe, members: int, *, timeout_s: float, poll_s: float = 0.2) -> None:
    """Wait until the group has ``members`` members and no rebalance in progress, twice in a row."""
    deadline = time.monotonic() + timeout_s
    stable_polls = 0
    while stable_polls < 2:
        state, count = await probe.group_members()
        stable_polls = stable_polls + 1 if (state == "Stable" and count == members) else 0
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the group has {count} member(s) ({state}) after {timeout_s:.0f}s, not {members}"
            )
        await asyncio.sleep(poll_s)
