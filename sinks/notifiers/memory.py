"""A notifier that keeps what it is sent, for tests; it can fail on demand like a receiver down."""

from __future__ import annotations

from schemas.notification import Notification
from sinks.notifiers.base import NotifyError


class RecordingNotifier:
    """``sent`` holds every notification accepted, in order. ``fail_next(n, ...)`` makes the next
    ``n`` sends raise :class:`NotifyError` (retryable by default), as a receiver outage would."""

    def __init__(self, receiver: str) -> None:
        self._receiver = receiver
        self.sent: list[Notification] = []
        self.attempts = 0
        self._failures_left = 0
        self._failure = NotifyError(f"receiver {receiver}: injected failure", retryable=True)

    @property
    def receiver(self) -> str:
        return self._receiver

    def fail_next(self, count: int, *, retryable: bool = True, retry_after: float | None = None) -> None:
        if count < 0:
            raise ValueError("count must not be negative")
        self._failures_left = count
        self._failure = NotifyError(
            f"receiver {self._receiver}: injected failure", retryable=retryable, retry_after=retry_after
        )

    def send(self, notification: Notification) -> None:
        self.attempts += 1
        if self._failures_left:
            self._failures_left -= 1
            raise self._failure
        self.sent.append(notification)
