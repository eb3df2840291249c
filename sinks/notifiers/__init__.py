"""Chat and HTTP notifiers, the durable outbox in front of them, and the delivery loop.

The worker plans notifications with ``streams.alerts.lifecycle.AlertBook``, writes them to an
:class:`Outbox`, and calls :meth:`Delivery.deliver_due` from a timer (or runs :meth:`Delivery.run`).
"""

from sinks.notifiers.base import Notifier, NotifyError
from sinks.notifiers.delivery import Delivery, DeliveryReport, TokenBucket, backoff_delay
from sinks.notifiers.factory import build_notifier, build_notifiers
from sinks.notifiers.memory import RecordingNotifier
from sinks.notifiers.outbox import (
    InMemoryOutbox,
    Outbox,
    OutboxEntry,
    OutboxLockedError,
    OutboxStatus,
    SqliteOutbox,
)

__all__ = [
    "Delivery",
    "DeliveryReport",
    "InMemoryOutbox",
    "Notifier",
    "NotifyError",
    "Outbox",
    "OutboxEntry",
    "OutboxLockedError",
    "OutboxStatus",
    "RecordingNotifier",
    "SqliteOutbox",
    "TokenBucket",
    "backoff_delay",
    "build_notifier",
    "build_notifiers",
]
