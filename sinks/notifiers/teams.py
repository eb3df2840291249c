"""Microsoft Teams "Workflows" webhook: an Adaptive Card in the ``attachments`` envelope.

(The retired Office 365 connector took MessageCards; the Workflows "post to a channel when a
webhook request is received" flow takes this envelope and answers 202 Accepted.)"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.notification import Notification, NotifiedAlert
from schemas.routing import TeamsConfig
from sinks.notifiers import render
from sinks.notifiers.base import JsonPostNotifier

ADAPTIVE_CARD_TYPE = "application/vnd.microsoft.card.adaptive"
_CONTAINER_STYLE = {"critical": "attention", "warning": "warning", "info": "accent"}


class TeamsNotifier(JsonPostNotifier[TeamsConfig]):
    config_type = TeamsConfig

    def render(self, notification: Notification) -> dict[str, Any]:
        now = notification.created_at
        body: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": render.headline(notification),
                "size": "Large",
                "weight": "Bolder",
                "style": "heading",
                "wrap": True,
            }
        ]
        alerts, left_out = render.shown(notification)
        body.extend(self._container(alert, now) for alert in alerts)
        if left_out:
            body.append(
                {"type": "TextBlock", "text": f"…and {left_out} more alerts", "isSubtle": True, "wrap": True}
            )
        body.append(
            {
                "type": "TextBlock",
                "text": f"salespulse · {render.when(now)}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            }
        )
        card = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "msteams": {"width": "Full"},
            "body": body,
        }
        return {
            "type": "message",
            "attachments": [{"contentType": ADAPTIVE_CARD_TYPE, "contentUrl": None, "content": card}],
        }

    @staticmethod
    def _container(alert: NotifiedAlert, now: datetime) -> dict[str, Any]:
        items: list[dict[str, Any]] = [
            {
                "type": "TextBlock",
                "text": f"{render.severity_mark(alert)} {render.alert_title(alert)}",
                "weight": "Bolder",
                "wrap": True,
            }
        ]
        if alert.summary:
            items.append({"type": "TextBlock", "text": alert.summary, "wrap": True})
        facts = [{"title": "Value", "value": render.number(alert.value)}]
        if alert.baseline is not None:
            facts.append({"title": "Baseline", "value": render.number(alert.baseline)})
        delta = render.change(alert)
        if delta:
            facts.append({"title": "Change", "value": delta})
        facts.append({"title": "Since", "value": render.when(alert.starts_at)})
        if alert.ends_at is not None:
            facts.append({"title": "Resolved", "value": render.timing(alert, now)})
        facts.append({"title": "Severity", "value": alert.severity})
        items.append({"type": "FactSet", "facts": facts})
        if alert.status == "firing" and alert.action:
            items.append(
                {
                    "type": "TextBlock",
                    "text": f"Suggested action: {alert.action}",
                    "wrap": True,
                    "isSubtle": True,
                }
            )
        if alert.dashboard_url:
            items.append(
                {
                    "type": "ActionSet",
                    "actions": [
                        {"type": "Action.OpenUrl", "title": "Open board", "url": alert.dashboard_url}
                    ],
                }
            )
        style = "good" if alert.status == "resolved" else _CONTAINER_STYLE.get(alert.severity, "default")
        return {"type": "Container", "style": style, "separator": True, "items": items}
