"""The one interface every chat or HTTP receiver implements, and the error it raises."""

from __future__ import annotations

from typing import Protocol

from schemas.notification import Notification


class NotifyError(Exception):
    """A notification was not delivered.

    ``retryable``: the same request may succeed later (HTTP 429, 408, 5xx, a refused or broken
    connection, a timeout); the outbox retries it with backoff. Otherwise (any other 4xx, a
    redirect, a payload the receiver rejects) retrying cannot help: the outbox records the failure
    and moves on. ``retry_after`` is the receiver's own ``Retry-After``, in seconds, when it sent
    one. The message names the receiver and the HTTP status, never the URL (it is a credential)."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class Notifier(Protocol):
    """Sends one notification to one receiver."""

    @property
    def receiver(self) -> str:
        """The receiver's name in the routing file."""
        ...

    def send(self, notification: Notification) -> None:
        """Deliver it, or raise :class:`NotifyError`. Returns only after the receiver said 2xx."""
        ...
