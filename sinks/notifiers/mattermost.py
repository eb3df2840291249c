"""Mattermost incoming webhook: one markdown message."""

from __future__ import annotations

from typing import Any

from schemas.notification import Notification
from schemas.routing import MattermostConfig
from sinks.notifiers import render
from sinks.notifiers.base import JsonPostNotifier

_MAX_CHARS = 16_000  # Mattermost cuts posts at 16,383 characters


def _escape(text: str) -> str:
    """Keep names like ``rep_007`` from turning into italics."""
    for char in ("\\", "*", "_", "`", "[", "]", "#"):
        text = text.replace(char, "\\" + char)
    return text


class MattermostNotifier(JsonPostNotifier[MattermostConfig]):
    config_type = MattermostConfig

    def render(self, notification: Notification) -> dict[str, Any]:
        now = notification.created_at
        parts = [f"#### {_escape(render.headline(notification))}"]
        alerts, left_out = render.shown(notification)
        for alert in alerts:
            lines = [f"{render.severity_mark(alert)} **{_escape(render.alert_title(alert))}**"]
            lines.extend(_escape(line) for line in render.plain_lines(alert, now))
            if alert.dashboard_url:
                lines.append(f"[Open board]({alert.dashboard_url})")
            parts.append("\n".join(lines))
        if left_out:
            parts.append(f"_…and {left_out} more alerts_")
        text = "\n\n".join(parts)[:_MAX_CHARS]
        payload: dict[str, Any] = {"text": text}
        if self._config.channel:
            payload["channel"] = self._config.channel
        if self._config.username:
            payload["username"] = self._config.username
        return payload
