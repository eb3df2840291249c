"""Generic webhook: Alertmanager's webhook JSON (version 4), optionally HMAC-signed.

Anything that already consumes Alertmanager webhooks (ticketing bridges, on-call tools) takes it
as is. With ``hmac_secret`` the request carries ``X-Salespulse-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body bytes under the secret, so the receiver can check who sent it; every
request also carries ``X-Salespulse-Notification-Id`` (the same on a retry), so a receiver can drop
a repeat that a crash between its 2xx and our bookkeeping would cause.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from schemas.notification import Notification, NotifiedAlert, utc_text
from schemas.routing import WebhookConfig
from sinks.notifiers import render
from sinks.notifiers.base import JsonPostNotifier

SIGNATURE_HEADER = "X-Salespulse-Signature"
NOTIFICATION_ID_HEADER = "X-Salespulse-Notification-Id"
ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert
_LABEL_NAME = re.compile(r"[^A-Za-z0-9_]")


def sign(body: bytes, secret: str) -> str:
    """The signature header's value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def alert_labels(alert: NotifiedAlert) -> dict[str, str]:
    """Labels as Alertmanager wants them: ``alertname`` = the rule, names of ``[A-Za-z0-9_]``,
    no empty values."""
    labels: dict[str, str] = {}
    for name, value in alert.labels.items():
        clean = _LABEL_NAME.sub("_", name)
        if clean[:1].isdigit():
            clean = "_" + clean
        if value:
            labels[clean] = value
    labels["alertname"] = alert.rule
    return labels


def alert_annotations(alert: NotifiedAlert) -> dict[str, str]:
    annotations = {
        "summary": alert.summary,
        "action": alert.action,
        "value": render.number(alert.value),
        "observed_at": utc_text(alert.observed_at),
    }
    if alert.baseline is not None:
        annotations["baseline"] = render.number(alert.baseline)
    delta = render.change(alert)
    if delta:
        annotations["change"] = delta.replace("−", "-")
    if alert.dashboard_url:
        annotations["dashboard_url"] = alert.dashboard_url
    return {name: value for name, value in annotations.items() if value}


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    common = dict(maps[0])
    for other in maps[1:]:
        common = {name: value for name, value in common.items() if other.get(name) == value}
    return common


class WebhookNotifier(JsonPostNotifier[WebhookConfig]):
    config_type = WebhookConfig

    def _url(self) -> SecretStr:
        return self._config.url

    def _headers(self, notification: Notification, body: bytes) -> Mapping[str, str]:
        headers = {NOTIFICATION_ID_HEADER: notification.id}
        if self._config.hmac_secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._config.hmac_secret.get_secret_value())
        return headers

    def render(self, notification: Notification) -> dict[str, Any]:
        alerts = list(notification.alerts)
        truncated = 0
        if self._config.max_alerts and len(alerts) > self._config.max_alerts:
            truncated = len(alerts) - self._config.max_alerts
            alerts = alerts[: self._config.max_alerts]
        labels = [alert_labels(alert) for alert in alerts]
        annotations = [alert_annotations(alert) for alert in alerts]
        items = [
            {
                "status": alert.status,
                "labels": labels[index],
                "annotations": annotations[index],
                "startsAt": utc_text(alert.starts_at),
                "endsAt": ZERO_TIME if alert.ends_at is None else utc_text(alert.ends_at),
                "generatorURL": alert.dashboard_url or "",
                "fingerprint": alert.fingerprint,
            }
            for index, alert in enumerate(alerts)
        ]
        return {
            "version": "4",
            "groupKey": notification.group_key,
            "truncatedAlerts": truncated,
            "status": notification.status,
            "receiver": notification.receiver,
            "groupLabels": dict(notification.group_labels),
            "commonLabels": _common(labels),
            "commonAnnotations": _common(annotations),
            "externalURL": notification.external_url,
            "alerts": items,
        }
