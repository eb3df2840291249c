"""Slack incoming webhook: a Block Kit message (header, one section per alert, a board button)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from schemas.notification import Notification, NotifiedAlert
from schemas.routing import SlackConfig
from sinks.notifiers import render
from sinks.notifiers.base import JsonPostNotifier

_HEADER_CHARS = 150  # Slack's limit for a header's text
_SECTION_CHARS = 3000  # and for a section's


def _escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier(JsonPostNotifier[SlackConfig]):
    config_type = SlackConfig

    def render(self, notification: Notification) -> dict[str, Any]:
        now = notification.created_at
        headline = render.headline(notification)
        blocks: list[dict[str, Any]] = [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": headline[:_HEADER_CHARS], "emoji": True},
            }
        ]
        alerts, left_out = render.shown(notification)
        for index, alert in enumerate(alerts):
            blocks.append(self._section(alert, now, index))
        if left_out:
            blocks.append(
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {left_out} more alerts"}]}
            )
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": _escape(f"salespulse · {render.when(now)} · {notification.group_key}"),
                    }
                ],
            }
        )
        return {"text": headline, "blocks": blocks}

    @staticmethod
    def _section(alert: NotifiedAlert, now: datetime, index: int) -> dict[str, Any]:
        title = f"{render.severity_mark(alert)} *{_escape(render.alert_title(alert))}*"
        lines = [_escape(line) for line in render.plain_lines(alert, now)]
        if alert.status == "firing" and alert.action:
            # plain_lines ends with the action; set it apart in italics.
            lines[-1] = f"_Suggested action:_ {_escape(alert.action)}"
        text = "\n".join([title, *lines])[:_SECTION_CHARS]
        section: dict[str, Any] = {"type": "section", "text": {"type": "mrkdwn", "text": text}}
        if alert.dashboard_url:
            section["accessory"] = {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open board"},
                "url": alert.dashboard_url,
                "action_id": f"open-board-{index}",
            }
        return section
