"""Delivery from the outbox: per receiver, in order, rate limited, retried with backoff.

:meth:`Delivery.deliver_due` does one pass at a given ``now``, which suits a worker timer (call it
every second or so, and right after enqueueing). :meth:`Delivery.run` is the same as a loop for an
asyncio task; sends are blocking HTTP calls, so both async methods run them in a thread.

For each receiver with pending entries, the oldest one is sent when its retry time has come and
the receiver's token bucket has a token; then the next one, and so on. A receiver's messages never
overtake each other (a "resolved" never arrives before its "firing"), and one receiver's outage
never holds up another. Outcomes:

- 2xx: marked sent. The entry is never sent again, whatever happens next.
- retryable failure (429, 5xx, connection refused, timeout): retried after an exponential backoff
  with full jitter, ``uniform(0, min(backoff_max, backoff_initial * 2**(attempts-1)))``, but never
  sooner than the receiver's ``Retry-After``. Retries go on as long as it takes.
- any other failure (a 4xx: bad URL, revoked webhook, rejected payload): marked failed with the
  reason, logged, and the receiver's next entry goes.

The only way a message is sent twice is a crash after the receiver's 2xx and before the outbox
commit that follows it (milliseconds); webhook receivers can drop such a repeat by
``X-Salespulse-Notification-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.routing import DeliveryPolicy, RateLimit, RoutingConfig
from sinks.notifiers.base import Notifier, NotifyError
from sinks.notifiers.factory import build_notifiers
from sinks.notifiers.http import HttpPoster
from sinks.notifiers.outbox import Outbox

logger = logging.getLogger(__name__)

# Bounds one pass, so a timer callback returns even with a long backlog and no rate limit.
MAX_SENDS_PER_RECEIVER_PER_PASS = 100


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; starts full."""

    def __init__(self, limit: RateLimit) -> None:
        self.rate = limit.per_second
        self.burst = float(limit.burst)
        self._tokens = self.burst
        self._updated: datetime | None = None

    def _refill(self, now: datetime) -> None:
        if self._updated is not None and now > self._updated:
            elapsed = (now - self._updated).total_seconds()
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        if self._updated is None or now > self._updated:
            self._updated = now

    def try_take(self, now: datetime) -> bool:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def next_available(self, now: datetime) -> datetime:
        self._refill(now)
        if self._tokens >= 1.0:
            return now
        return now + timedelta(seconds=(1.0 - self._tokens) / self.rate)


def backoff_delay(attempts: int, policy: DeliveryPolicy, rng: random.Random) -> timedelta:
    """Full jitter: a uniform draw below the capped exponential (``attempts`` >= 1)."""
    ceiling = min(
        policy.backoff_max.total_seconds(),
        policy.backoff_initial.total_seconds() * 2 ** min(attempts - 1, 62),
    )
    return timedelta(seconds=rng.uniform(0.0, ceiling))


@dataclass(slots=True)
class DeliveryReport:
    """What one pass did (notification ids), and when the next one has something to do."""

    sent: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    next_due_at: datetime | None = None

    def _due(self, moment: datetime) -> None:
        if self.next_due_at is None or moment < self.next_due_at:
            self.next_due_at = moment


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Delivery:
    """Sends what the outbox holds through ``notifiers`` (receiver name -> notifier)."""

    def __init__(
        self,
        outbox: Outbox,
        notifiers: Mapping[str, Notifier],
        *,
        rate_limits: Mapping[str, RateLimit | None] | None = None,
        policy: DeliveryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.outbox = outbox
        self._notifiers = dict(notifiers)
        self._buckets = {
            name: TokenBucket(limit) for name, limit in (rate_limits or {}).items() if limit is not None
        }
        self._policy = policy or DeliveryPolicy()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._pass_lock = threading.Lock()

    @classmethod
    def from_routing(
        cls, outbox: Outbox, routing: RoutingConfig, *, poster: HttpPoster | None = None
    ) -> Delivery:
        """Notifiers, rate limits and retry policy as the routing file says."""
        return cls(
            outbox,
            build_notifiers(routing, poster=poster),
            rate_limits={receiver.name: receiver.effective_rate_limit for receiver in routing.receivers},
            policy=routing.delivery,
        )

    def deliver_due(self, now: datetime) -> DeliveryReport:
        """One pass at ``now``: send every entry that is due and allowed (see the module doc)."""
        report = DeliveryReport()
        with self._pass_lock:
            for receiver in self.outbox.receivers_with_pending():
                self._deliver_receiver(receiver, now, report)
        return report

    def _deliver_receiver(self, receiver: str, now: datetime, report: DeliveryReport) -> None:
        notifier = self._notifiers.get(receiver)
        bucket = self._buckets.get(receiver)
        for _ in range(MAX_SENDS_PER_RECEIVER_PER_PASS):
            entry = self.outbox.head(receiver)
            if entry is None:
                return
            if notifier is None:
                reason = f"receiver {receiver} is not in the routing file"
                logger.error("notification %s not sent: %s", entry.id, reason)
                self.outbox.mark_failed(entry.id, now, reason)
                report.failed.append(entry.id)
                continue
            if entry.next_attempt_at > now:
                report._due(entry.next_attempt_at)
                return
            if bucket is not None and not bucket.try_take(now):
                report._due(bucket.next_available(now))
                return
            try:
                notifier.send(entry.notification)
            except NotifyError as error:
                attempts = entry.attempts + 1
                if not error.retryable:
                    logger.error(
                        "notification %s to %s failed for good after %d attempt(s): %s",
                        entry.id,
                        receiver,
                        attempts,
                        error,
                    )
                    self.outbox.mark_failed(entry.id, now, str(error))
                    report.failed.append(entry.id)
                    continue
                delay = backoff_delay(attempts, self._policy, self._rng)
                if error.retry_after is not None:
                    delay = max(delay, timedelta(seconds=error.retry_after))
                retry_at = now + delay
                logger.warning(
                    "notification %s to %s: attempt %d failed (%s); retrying in %.1fs",
                    entry.id,
                    receiver,
                    attempts,
                    error,
                    delay.total_seconds(),
                )
                self.outbox.mark_retry(
                    entry.id, attempts=attempts, next_attempt_at=retry_at, error=str(error)
                )
                report.retrying.append(entry.id)
                report._due(retry_at)
                return
            except Exception as error:  # a rendering bug must not stall the whole outbox
                logger.exception("notification %s to %s could not be sent", entry.id, receiver)
                self.outbox.mark_failed(entry.id, now, f"{type(error).__name__}: {error}")
                report.failed.append(entry.id)
                continue
            self.outbox.mark_sent(entry.id, now)
            report.sent.append(entry.id)
        report._due(now)  # the pass limit stopped us with more waiting

    async def deliver_due_async(self, now: datetime) -> DeliveryReport:
        """:meth:`deliver_due` in a worker thread, so the event loop keeps running during sends."""
        return await asyncio.to_thread(self.deliver_due, now)

    async def run(
        self,
        stop: asyncio.Event,
        *,
        clock: Callable[[], datetime] = _utc_now,
        poll_interval: float = 1.0,
    ) -> None:
        """Deliver until ``stop`` is set: a pass, then sleep until the next entry is due (at most
        ``poll_interval`` seconds, so new entries go out promptly)."""
        while not stop.is_set():
            report = await self.deliver_due_async(clock())
            wait = poll_interval
            if report.next_due_at is not None:
                wait = min(poll_interval, max(0.01, (report.next_due_at - clock()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
