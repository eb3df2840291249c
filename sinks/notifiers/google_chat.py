"""Google Chat space incoming webhook: a ``cardsV2`` card (one section per alert), text fallback."""

from __future__ import annotations

import html
from typing import Any

from schemas.notification import Notification
from schemas.routing import GoogleChatConfig
from sinks.notifiers import render
from sinks.notifiers.base import JsonPostNotifier


class GoogleChatNotifier(JsonPostNotifier[GoogleChatConfig]):
    config_type = GoogleChatConfig

    def render(self, notification: Notification) -> dict[str, Any]:
        now = notification.created_at
        headline = render.headline(notification)
        sections: list[dict[str, Any]] = []
        alerts, left_out = render.shown(notification)
        for alert in alerts:
            # textParagraph takes a small HTML subset: escape the values, keep <b> and <br>.
            text = "<br>".join(html.escape(line) for line in render.plain_lines(alert, now))
            widgets: list[dict[str, Any]] = [{"textParagraph": {"text": text}}]
            if alert.dashboard_url:
                widgets.append(
                    {
                        "buttonList": {
                            "buttons": [
                                {"text": "Open board", "onClick": {"openLink": {"url": alert.dashboard_url}}}
                            ]
                        }
                    }
                )
            sections.append(
                {"header": f"{render.severity_mark(alert)} {render.alert_title(alert)}", "widgets": widgets}
            )
        if left_out:
            sections.append({"widgets": [{"textParagraph": {"text": f"…and {left_out} more alerts"}}]})
        card = {
            "header": {"title": headline, "subtitle": f"salespulse · {render.when(now)}"},
            "sections": sections,
        }
        return {"text": headline, "cardsV2": [{"cardId": f"salespulse-{notification.id[:12]}", "card": card}]}
