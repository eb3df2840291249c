"""Words every receiver uses: what fell, by how much, against what baseline, since when, and what to do.

Each notifier lays these out in its own format (Block Kit, Adaptive Card, markdown, a Chat card);
the wording lives here once so every channel says the same thing.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from schemas.notification import Notification, NotifiedAlert

# Chat messages get unreadable (and hit payload limits: 50 Slack blocks, 28 KB Teams cards) long
# before a group runs out of alerts; the rest is counted, and the board has them all.
MAX_ALERTS_SHOWN = 20

_SEVERITY_MARK = {"critical": "🔴", "warning": "🟠", "info": "🔵"}
RESOLVED_MARK = "✅"


def rule_title(rule: str) -> str:
    """``activity_drop`` -> ``Activity drop``."""
    words = rule.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def severity_mark(alert: NotifiedAlert) -> str:
    return RESOLVED_MARK if alert.status == "resolved" else _SEVERITY_MARK.get(alert.severity, "⚪")


def subject(alert: NotifiedAlert) -> str:
    """Who or what the alert is about: ``Dana Whitfield (rep-007)``, ``team emea``."""
    if alert.scope == "rep":
        name = alert.labels.get("rep_name") or alert.labels.get("name")
        return f"{name} ({alert.key})" if name and name != alert.key else alert.key
    return f"{alert.scope} {alert.key}"


def alert_title(alert: NotifiedAlert) -> str:
    detail = f" ({alert.detail})" if alert.detail else ""
    prefix = "Resolved: " if alert.status == "resolved" else ""
    return f"{prefix}{rule_title(alert.rule)}{detail} · {subject(alert)}"


def number(value: float | None) -> str:
    """Readable figures: ``12``, ``0.35``, ``48,200``; ``n/a`` for no value."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def change(alert: NotifiedAlert) -> str | None:
    """``-70%`` against the baseline, or ``None`` without a baseline to compare with."""
    ratio = alert.change_ratio
    if ratio is None:
        return None
    return f"{ratio * 100:+.0f}%".replace("-", "−")


def comparison(alert: NotifiedAlert) -> str:
    """``12 vs baseline 40 (−70%)``."""
    if alert.baseline is None:
        return f"{number(alert.value)} (no baseline)"
    delta = change(alert)
    return f"{number(alert.value)} vs baseline {number(alert.baseline)}" + (f" ({delta})" if delta else "")


def when(moment: datetime) -> str:
    """``2026-03-05 14:30 UTC``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def span(length: timedelta) -> str:
    """``2d 3h``, ``3h 20m``, ``45m``, ``30s``: the two largest units."""
    seconds = max(0, int(length.total_seconds()))
    parts = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return " ".join(parts[:2]) or "0s"


def timing(alert: NotifiedAlert, now: datetime) -> str:
    """``since 2026-03-05 14:30 UTC (2d 3h)`` or ``resolved 2026-03-06 09:00 UTC after 18h 30m``."""
    if alert.ends_at is not None:
        return f"resolved {when(alert.ends_at)} after {span(alert.ends_at - alert.starts_at)}"
    return f"since {when(alert.starts_at)} ({span(now - alert.starts_at)})"


def group_description(notification: Notification) -> str:
    """``team emea`` (the group's labels), or ``everyone`` when it groups by nothing."""
    parts = [f"{name} {value}" for name, value in sorted(notification.group_labels.items()) if value]
    return ", ".join(parts) or "everyone"


def headline(notification: Notification) -> str:
    """``3 alerts firing for team emea (1 new, 1 resolved)`` / ``Resolved for team emea: 2 alerts``."""
    firing, resolved = len(notification.firing), len(notification.resolved)
    new = sum(1 for alert in notification.firing if alert.is_new)
    group = group_description(notification)
    if firing:
        text = f"{firing} alert{'s' if firing != 1 else ''} firing for {group}"
        news = [f"{new} new"] if 0 < new < firing else []
        news += [f"{resolved} resolved"] if resolved else []
        return text + (f" ({', '.join(news)})" if news else "")
    return f"Resolved for {group}: {resolved} alert{'s' if resolved != 1 else ''}"


def shown(notification: Notification) -> tuple[tuple[NotifiedAlert, ...], int]:
    """The alerts a message lists, and how many more it leaves out."""
    alerts = notification.alerts
    return alerts[:MAX_ALERTS_SHOWN], max(0, len(alerts) - MAX_ALERTS_SHOWN)


def plain_lines(alert: NotifiedAlert, now: datetime) -> list[str]:
    """The alert as plain text lines: summary, comparison and timing, suggested action."""
    lines = [alert.summary] if alert.summary else []
    if alert.status == "firing":
        lines.append(f"{comparison(alert)}, {timing(alert, now)}")
        if alert.action:
            lines.append(f"Suggested action: {alert.action}")
    else:
        lines.append(timing(alert, now))
    return lines
