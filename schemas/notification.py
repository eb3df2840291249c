"""A notification: what the alert lifecycle hands the notifiers, and what the outbox stores.

It is plain data in ``schemas`` because two layers share it: the lifecycle (``streams.alerts``)
builds it, the notifiers and the outbox (``sinks.notifiers``) render, store and send it, and
``sinks`` never imports ``streams``. It serialises to JSON and back unchanged
(``model_dump_json`` / ``model_validate_json``), which is how the outbox keeps it across a crash.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict

NotifiedStatus = Literal["firing", "resolved"]


class NotifiedAlert(BaseModel):
    """One alert as a message shows it. ``labels`` are the routing labels (``rule``, ``scope``,
    ``key``, ``severity``, ``team``, ``territory``, ``rep_id`` ...); ``summary`` says what fell and
    by how much, ``action`` what to do; ``value`` against ``baseline`` is the comparison;
    ``starts_at`` is since when it fires, ``ends_at`` when it stopped (``None`` while firing)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint: str
    status: NotifiedStatus
    rule: str
    scope: str
    key: str
    detail: str = ""
    severity: str
    labels: dict[str, str]
    summary: str
    action: str
    value: float
    baseline: float | None
    starts_at: AwareDatetime
    ends_at: AwareDatetime | None = None
    observed_at: AwareDatetime
    dashboard_url: str | None = None
    # News for this receiver: an alert it has not been told fires, or a resolution. False for an
    # alert repeated because it still fires.
    is_new: bool = True

    @property
    def change_ratio(self) -> float | None:
        """(value - baseline) / baseline: -0.7 is "70% below the baseline"; ``None`` without one."""
        if self.baseline is None or self.baseline == 0:
            return None
        return (self.value - self.baseline) / self.baseline


class Notification(BaseModel):
    """One message to one receiver about one group of alerts.

    ``id`` is deterministic (receiver, group key, the group's notification sequence number and the
    versions of the alerts inside), so the same message planned again after a crash has the same
    id and the outbox sends it once. ``alerts`` lists the group's firing alerts and those resolved
    since the previous message, news first; ``status`` is ``firing`` while any of them fires."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: NotifiedStatus
    sequence: int
    created_at: AwareDatetime
    alerts: tuple[NotifiedAlert, ...]
    external_url: str = ""

    @property
    def firing(self) -> tuple[NotifiedAlert, ...]:
        return tuple(alert for alert in self.alerts if alert.status == "firing")

    @property
    def resolved(self) -> tuple[NotifiedAlert, ...]:
        return tuple(alert for alert in self.alerts if alert.status == "resolved")

    @property
    def common_labels(self) -> dict[str, str]:
        """Labels every alert of the message shares, with the same value."""
        if not self.alerts:
            return {}
        common = dict(self.alerts[0].labels)
        for alert in self.alerts[1:]:
            common = {name: value for name, value in common.items() if alert.labels.get(name) == value}
        return common


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (what Alertmanager's JSON uses)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
