"""Push to an existing Prometheus Alertmanager: ``POST {url}/api/v2/alerts``.

Alertmanager then does its own grouping, silencing and routing; salespulse acts like a Prometheus
server sending it alerts. A firing alert goes with ``endsAt`` = send time + ``firing_ttl``
(Alertmanager resolves it by itself if no refresh comes, as when a Prometheus dies); a resolved
one with its real ``endsAt``, which resolves it at once.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import SecretStr

from schemas.notification import Notification, utc_text
from schemas.routing import AlertmanagerConfig, ReceiverConfig
from sinks.notifiers.http import HttpPoster
from sinks.notifiers.webhook import alert_annotations, alert_labels

API_PATH = "/api/v2/alerts"


class AlertmanagerNotifier:
    def __init__(self, receiver: ReceiverConfig, *, poster: HttpPoster | None = None) -> None:
        if not isinstance(receiver.destination, AlertmanagerConfig):
            raise TypeError(f"receiver {receiver.name} is not an alertmanager receiver")
        self._config = receiver.destination
        self._name = receiver.name
        self._timeout = receiver.timeout.total_seconds()
        self._poster = poster or HttpPoster()
        base = self._config.url.get_secret_value().rstrip("/")
        self._endpoint = SecretStr(base + API_PATH)

    @property
    def receiver(self) -> str:
        return self._name

    def render(self, notification: Notification) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for alert in notification.alerts:
            ends_at = alert.ends_at or notification.created_at + self._config.firing_ttl
            item: dict[str, Any] = {
                "labels": alert_labels(alert),
                "annotations": alert_annotations(alert),
                "startsAt": utc_text(alert.starts_at),
                "endsAt": utc_text(ends_at),
            }
            if alert.dashboard_url:
                item["generatorURL"] = alert.dashboard_url
            items.append(item)
        return items

    def send(self, notification: Notification) -> None:
        body = json.dumps(self.render(notification), ensure_ascii=False).encode("utf-8")
        self._poster.post(self._endpoint, body, receiver=self._name, timeout=self._timeout)
