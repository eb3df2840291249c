"""The one interface every chat or HTTP receiver implements, and the error it raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import SecretStr

from schemas.notification import Notification
from schemas.routing import ReceiverConfig

if TYPE_CHECKING:
    from sinks.notifiers.http import HttpPoster

DestinationT = TypeVar("DestinationT")


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


class JsonPostNotifier(Generic[DestinationT]):
    """A receiver that takes one JSON document per notification by HTTP POST: what every chat
    service and webhook here is. Subclasses say which destination config they take, how to render
    a notification, and (if not ``webhook_url``) where to post and with which headers."""

    config_type: ClassVar[type[Any]]

    def __init__(self, receiver: ReceiverConfig, *, poster: HttpPoster | None = None) -> None:
        if not isinstance(receiver.destination, self.config_type):
            raise TypeError(f"receiver {receiver.name} is not a {receiver.kind} receiver")
        self._config: DestinationT = receiver.destination
        self._name = receiver.name
        self._timeout = receiver.timeout.total_seconds()
        self._poster = poster if poster is not None else _default_poster()

    @property
    def receiver(self) -> str:
        return self._name

    def render(self, notification: Notification) -> Any:
        raise NotImplementedError

    def _url(self) -> SecretStr:
        url: SecretStr = self._config.webhook_url  # type: ignore[attr-defined]
        return url

    def _headers(self, notification: Notification, body: bytes) -> Mapping[str, str] | None:
        return None

    def send(self, notification: Notification) -> None:
        body = json.dumps(self.render(notification), ensure_ascii=False).encode("utf-8")
        self._poster.post(
            self._url(),
            body,
            receiver=self._name,
            timeout=self._timeout,
            headers=self._headers(notification, body),
        )


def _default_poster() -> HttpPoster:
    from sinks.notifiers.http import HttpPoster  # http imports this module for NotifyError

    return HttpPoster()
