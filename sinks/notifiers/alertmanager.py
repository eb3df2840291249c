"""Push to an existing Prometheus Alertmanager: ``POST {url}/api/v2/alerts``.

Alertmanager then does its own grouping, silencing and routing; salespulse acts like a Prometheus
server sending it alerts. A firing alert goes with ``endsAt`` = send time + ``firing_ttl``
(Alertmanager resolves it by itself if no refresh comes, as when a Prometheus dies); a resolved
one with its real ``endsAt``, which resolves it at once.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from schemas.notification import Notification, utc_text
from schemas.routing import AlertmanagerConfig, ReceiverConfig
from sinks.notifiers.base import JsonPostNotifier
from sinks.notifiers.http import HttpPoster
from sinks.notifiers.webhook import alert_annotations, alert_labels

API_PATH = "/api/v2/alerts"


class AlertmanagerNotifier(JsonPostNotifier[AlertmanagerConfig]):
    config_type = AlertmanagerConfig

    def __init__(self, receiver: ReceiverConfig, *, poster: HttpPoster | None = None) -> None:
        super().__init__(receiver, poster=poster)
        base = self._config.url.get_secret_value().rstrip("/")
        self._endpoint = SecretStr(base + API_PATH)

    def _url(self) -> SecretStr:
        return self._endpoint

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
