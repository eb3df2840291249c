"""What the alert rules produce and the alert lifecycle consumes. Plain data, no I/O.

A rule evaluation yields :class:`AlertCandidate` objects: "this condition holds now for this
scope". The lifecycle (``streams.alerts.lifecycle``) turns the stream of candidates into firing and
resolved alerts with fingerprints, grouping, silences and inhibition, the way Prometheus'
Alertmanager treats the alerts Prometheus sends it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Scope(StrEnum):
    REP = "rep"
    TEAM = "team"
    TERRITORY = "territory"


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertCandidate:
    """One rule's finding for one scope at one evaluation.

    ``key`` is the rep id, team or territory; ``detail`` distinguishes several findings of one
    rule for one scope (an activity type, a funnel step, a deal id), empty when there is one.
    ``value`` and ``baseline`` are what the message compares ("7-day calls 12 vs baseline 40").
    ``labels`` carry routing information (team, territory, manager, rep name).
    """

    rule: str
    scope: Scope
    key: str
    severity: Severity
    value: float
    baseline: float | None
    summary: str
    action: str
    observed_at: datetime
    detail: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return alert_fingerprint(self.rule, self.scope, self.key, self.detail)


def alert_fingerprint(rule: str, scope: Scope | str, key: str, detail: str = "") -> str:
    """Stable identity of an alert across evaluations: (rule, scope, key, detail)."""
    text = "\x1f".join((rule, str(scope), key, detail))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
