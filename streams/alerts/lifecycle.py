"""The alert lifecycle, modelled on Prometheus Alertmanager. Pure: plain data in, plain data out.

The rules say, at each evaluation, which conditions hold (:class:`AlertCandidate`); this module
turns that stream into alerts with a life and into a small number of messages:

- **firing -> resolved.** A candidate whose fingerprint is not active starts an alert
  (``starts_at``); an active alert of a rule that was evaluated and did not yield it again ends
  (``ends_at``). :meth:`AlertBook.observe` returns these transitions, to be published and stored.
- **Grouping.** :meth:`AlertBook.plan_notifications` routes every firing alert through the routing
  tree (``schemas.routing``) into groups (per route, by the route's ``group_by`` labels, ``team``
  by default). A new group waits ``group_wait`` before its first message, so alerts arriving
  together go out together; after that a group sends at most one message per
  ``group_interval``, and only when something changed (a new alert, a resolved one) or
  ``repeat_interval`` passed since its last message. A team gets one message, not fifty. A group
  that has nothing left to say is dropped at its next flush time, so a new group (and
  ``group_wait``) starts at the earliest one interval after its last message.
- **Resolve notifications.** A group that told a receiver an alert fires tells it when it is
  resolved, always, even when the alert is silenced or inhibited meanwhile: muting stops news of a
  problem, never the all-clear. An alert that fired and stopped before its group spoke is never
  mentioned.
- **Silences** mute the alerts their matchers match while they are active (``starts_at`` to
  ``ends_at``). **Inhibit rules** mute target alerts while a matching source alert fires with the
  same values of the ``equal`` labels (by default ``no_activity`` mutes ``activity_drop`` of the
  same rep).
- **State** is kept in the book and exported with :meth:`AlertBook.to_dict` /
  :meth:`AlertBook.from_dict` (JSON-ready plain dicts) for the caller to persist.

Nothing here reads a clock: every method takes ``now``, which must never go backwards.

Labels. An alert's labels are the candidate's labels plus ``rule``, ``scope``, ``key``,
``severity``, ``detail`` (when set), and the scope's own label (``rep_id``, ``team`` or
``territory`` = ``key``); routes, silences and inhibit rules match on these.

Crash safety. The caller writes the planned notifications to the outbox *before* persisting the
book's state. If it dies in between, the restarted book (older state) plans the same messages
again with the same ids (:attr:`Notification.id` is a hash of receiver, group key, the group's
message number and the alert versions), which the outbox recognises and does not send twice.
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from schemas.notification import Notification, NotifiedAlert
from schemas.routing import GROUP_BY_ALL, Matcher, RouteTarget, RoutingConfig
from streams.alerts.model import AlertCandidate, AlertStatus, Scope, Severity

STATE_VERSION = 1
# Expired silences stay listed this long (Alertmanager keeps them 120 h), then are dropped.
DEFAULT_SILENCE_RETENTION = timedelta(days=5)
_TICK = timedelta(microseconds=1)
_RESERVED_LABELS = ("rule", "scope", "key", "severity", "detail")
_SCOPE_LABEL = {Scope.REP: "rep_id", Scope.TEAM: "team", Scope.TERRITORY: "territory"}


def _require_aware(moment: datetime, name: str = "now") -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")


def alert_labels(candidate: AlertCandidate) -> dict[str, str]:
    """The labels routes, silences and inhibit rules see for a candidate (see the module doc)."""
    labels = {name: value for name, value in candidate.labels.items() if name not in _RESERVED_LABELS}
    labels[_SCOPE_LABEL[candidate.scope]] = candidate.key
    labels.update(
        rule=candidate.rule, scope=str(candidate.scope), key=candidate.key, severity=str(candidate.severity)
    )
    if candidate.detail:
        labels["detail"] = candidate.detail
    return labels


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode of one fingerprint: from ``starts_at`` until ``ends_at`` (``None`` while firing).

    The figures (``value``, ``baseline``, ``summary``, ``severity`` ...) are those of the latest
    evaluation that yielded it (``observed_at``)."""

    fingerprint: str
    rule: str
    scope: Scope
    key: str
    detail: str
    severity: Severity
    labels: dict[str, str]
    value: float
    baseline: float | None
    summary: str
    action: str
    starts_at: datetime
    observed_at: datetime
    ends_at: datetime | None = None

    @property
    def status(self) -> AlertStatus:
        return AlertStatus.FIRING if self.ends_at is None else AlertStatus.RESOLVED

    @property
    def version(self) -> str:
        """Identity of this episode: the fingerprint and when it started."""
        return f"{self.fingerprint}@{self.starts_at.isoformat()}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "rule": self.rule,
            "scope": str(self.scope),
            "key": self.key,
            "detail": self.detail,
            "severity": str(self.severity),
            "labels": dict(self.labels),
            "value": self.value,
            "baseline": self.baseline,
            "summary": self.summary,
            "action": self.action,
            "starts_at": self.starts_at.isoformat(),
            "observed_at": self.observed_at.isoformat(),
            "ends_at": None if self.ends_at is None else self.ends_at.isoformat(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            fingerprint=data["fingerprint"],
            rule=data["rule"],
            scope=Scope(data["scope"]),
            key=data["key"],
            detail=data["detail"],
            severity=Severity(data["severity"]),
            labels=dict(data["labels"]),
            value=float(data["value"]),
            baseline=None if data["baseline"] is None else float(data["baseline"]),
            summary=data["summary"],
            action=data["action"],
            starts_at=_parse_time(data["starts_at"]),
            observed_at=_parse_time(data["observed_at"]),
            ends_at=None if data["ends_at"] is None else _parse_time(data["ends_at"]),
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert started firing or was resolved, at ``at`` (the ``now`` of the evaluation)."""

    status: AlertStatus
    alert: Alert
    at: datetime


@dataclass(frozen=True, slots=True)
class Silence:
    """Mutes the alerts all of whose ``matchers`` match, from ``starts_at`` until ``ends_at``.

    Build one with :meth:`create`; its ``id`` is a hash of its content, so creating the same silence
    twice (a retried CLI command) yields one silence."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str

    @classmethod
    def create(
        cls,
        matchers: Iterable[Matcher],
        *,
        starts_at: datetime,
        ends_at: datetime,
        created_by: str,
        comment: str,
    ) -> Silence:
        """Raises ``ValueError`` for what Alertmanager refuses too: no matchers, matchers that also
        match an alert without those labels (``team=~".*"`` would silence everything), an end not
        after the start, no author or no comment."""
        chosen = tuple(matchers)
        _require_aware(starts_at, "starts_at")
        _require_aware(ends_at, "ends_at")
        if not chosen:
            raise ValueError("a silence needs at least one matcher, e.g. rep_id=rep-007 or team=emea")
        if all(matcher.matches({}) for matcher in chosen):
            raise ValueError(
                "these matchers also match alerts without those labels, so they would silence "
                "everything; add a matcher that needs a value, e.g. team=emea"
            )
        if ends_at <= starts_at:
            raise ValueError("the silence must end after it starts")
        if not created_by.strip():
            raise ValueError("say who creates the silence (created_by)")
        if not comment.strip():
            raise ValueError("say why (comment): the next person on call will read it")
        identity = json.dumps(
            [sorted(str(m) for m in chosen), starts_at.isoformat(), ends_at.isoformat(), created_by, comment]
        )
        silence_id = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
        return cls(silence_id, chosen, starts_at, ends_at, created_by.strip(), comment.strip())

    def is_active(self, now: datetime) -> bool:
        return self.starts_at <= now < self.ends_at

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(matcher.matches(labels) for matcher in self.matchers)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "matchers": [str(matcher) for matcher in self.matchers],
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
            "created_by": self.created_by,
            "comment": self.comment,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Silence:
        return cls(
            id=data["id"],
            matchers=tuple(Matcher.model_validate(text) for text in data["matchers"]),
            starts_at=_parse_time(data["starts_at"]),
            ends_at=_parse_time(data["ends_at"]),
            created_by=data["created_by"],
            comment=data["comment"],
        )


@dataclass(frozen=True, slots=True)
class AlertView:
    """An alert as ``salespulse alerts list`` shows it: muted or not, and by what."""

    alert: Alert
    silenced_by: tuple[str, ...]  # silence ids
    inhibited_by: tuple[str, ...]  # fingerprints of the inhibiting alerts

    @property
    def state(self) -> str:
        """``active``, ``suppressed`` (firing but muted) or ``resolved``, as Alertmanager says."""
        if self.alert.status is AlertStatus.RESOLVED:
            return "resolved"
        return "suppressed" if self.silenced_by or self.inhibited_by else "active"


@dataclass(slots=True)
class _Group:
    """One aggregation group: one route, one set of group-label values, one receiver."""

    key: str
    route_id: str
    receiver: str
    labels: dict[str, str]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta
    created_at: datetime
    next_flush_at: datetime
    last_notified_at: datetime | None = None
    sequence: int = 0
    # fingerprint -> version of the alert this group last told its receiver is firing
    notified: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "route_id": self.route_id,
            "receiver": self.receiver,
            "labels": dict(self.labels),
            "group_wait_s": self.group_wait.total_seconds(),
            "group_interval_s": self.group_interval.total_seconds(),
            "repeat_interval_s": self.repeat_interval.total_seconds(),
            "created_at": self.created_at.isoformat(),
            "next_flush_at": self.next_flush_at.isoformat(),
            "last_notified_at": None if self.last_notified_at is None else self.last_notified_at.isoformat(),
            "sequence": self.sequence,
            "notified": dict(self.notified),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Group:
        return cls(
            key=data["key"],
            route_id=data["route_id"],
            receiver=data["receiver"],
            labels=dict(data["labels"]),
            group_wait=timedelta(seconds=data["group_wait_s"]),
            group_interval=timedelta(seconds=data["group_interval_s"]),
            repeat_interval=timedelta(seconds=data["repeat_interval_s"]),
            created_at=_parse_time(data["created_at"]),
            next_flush_at=_parse_time(data["next_flush_at"]),
            last_notified_at=None
            if data["last_notified_at"] is None
            else _parse_time(data["last_notified_at"]),
            sequence=int(data["sequence"]),
            notified=dict(data["notified"]),
        )


def group_key(route_id: str, labels: Mapping[str, str]) -> str:
    """``0.1:{team="emea"}``: the route and the group labels, stable and readable."""
    inner = ",".join(
        f"{name}={json.dumps(value, ensure_ascii=False)}" for name, value in sorted(labels.items())
    )
    return f"{route_id}:{{{inner}}}"


def notification_id(receiver: str, key: str, sequence: int, alerts: Iterable[NotifiedAlert]) -> str:
    """Deterministic id of a message: receiver, group key, the group's message number and the
    versions (fingerprint, start, status) of the alerts inside."""
    versions = sorted(f"{a.fingerprint}@{a.starts_at.isoformat()}:{a.status}" for a in alerts)
    text = json.dumps([receiver, key, sequence, versions], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def render_dashboard_url(template: str | None, labels: Mapping[str, str]) -> str | None:
    """The template filled with URL-quoted label values; ``None`` when a placeholder has no label."""
    if template is None:
        return None
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if any(name not in labels for name in names):
        return None
    return template.format_map({name: quote(labels[name], safe="") for name in names})


class AlertBook:
    """Active alerts by fingerprint, aggregation groups, silences; see the module doc.

    ``routing`` decides groups, receivers, timings, inhibit rules and the dashboard link."""

    def __init__(
        self, routing: RoutingConfig, *, silence_retention: timedelta = DEFAULT_SILENCE_RETENTION
    ) -> None:
        self.routing = routing
        self.silence_retention = silence_retention
        self._firing: dict[str, Alert] = {}
        # Ended episodes whose resolution some group still owes its receiver, by version.
        self._resolved: dict[str, Alert] = {}
        # Versions whose resolution at least one receiver has been told.
        self._told_resolved: set[str] = set()
        self._groups: dict[str, _Group] = {}
        self._silences: dict[str, Silence] = {}

    # --- evaluation -------------------------------------------------------------------------------

    def observe(
        self,
        candidates: Iterable[AlertCandidate],
        now: datetime,
        evaluated_rules: Collection[str],
        *,
        evaluated_keys: Collection[tuple[Scope, str]] | None = None,
    ) -> list[Transition]:
        """Apply one evaluation: ``candidates`` are every finding of the rules in
        ``evaluated_rules`` (restricted to the scopes in ``evaluated_keys`` when given, for an
        evaluation of only some reps); a firing alert of such a rule and scope that is not among
        them is resolved at ``now``. Alerts of rules not evaluated are left as they are.

        A new alert starts at its candidate's ``observed_at`` (at most ``now``), so replaying the
        same events gives the same start. When several candidates share a fingerprint, the last
        one counts."""
        _require_aware(now)
        latest: dict[str, AlertCandidate] = {}
        for candidate in candidates:
            _require_aware(candidate.observed_at, "observed_at")
            latest[candidate.fingerprint] = candidate
        transitions: list[Transition] = []
        for fingerprint, candidate in latest.items():
            current = self._firing.get(fingerprint)
            if current is not None:
                self._firing[fingerprint] = self._refreshed(current, candidate)
                continue
            alert = self._reopened(fingerprint, candidate) or self._started(fingerprint, candidate, now)
            self._firing[fingerprint] = alert
            transitions.append(Transition(AlertStatus.FIRING, alert, now))
        rules = set(evaluated_rules)
        keys = None if evaluated_keys is None else {(Scope(scope), key) for scope, key in evaluated_keys}
        for fingerprint, alert in list(self._firing.items()):
            if fingerprint in latest or alert.rule not in rules:
                continue
            if keys is not None and (alert.scope, alert.key) not in keys:
                continue
            ended = replace(alert, ends_at=max(now, alert.starts_at))
            del self._firing[fingerprint]
            self._resolved[ended.version] = ended
            transitions.append(Transition(AlertStatus.RESOLVED, ended, now))
        return transitions

    @staticmethod
    def _refreshed(alert: Alert, candidate: AlertCandidate) -> Alert:
        return replace(
            alert,
            severity=candidate.severity,
            labels=alert_labels(candidate),
            value=candidate.value,
            baseline=candidate.baseline,
            summary=candidate.summary,
            action=candidate.action,
            observed_at=candidate.observed_at,
        )

    def _reopened(self, fingerprint: str, candidate: AlertCandidate) -> Alert | None:
        """A flap: the alert ended but no receiver heard of the end yet, so it simply goes on."""
        for version, ended in self._resolved.items():
            if ended.fingerprint == fingerprint and version not in self._told_resolved:
                del self._resolved[version]
                return replace(self._refreshed(ended, candidate), ends_at=None)
        return None

    def _started(self, fingerprint: str, candidate: AlertCandidate, now: datetime) -> Alert:
        starts_at = min(candidate.observed_at, now)
        # An episode never starts before the previous one of the same fingerprint ended, and never
        # at the same instant as it started, so every episode has its own version.
        for ended in self._resolved.values():
            if ended.fingerprint == fingerprint and ended.ends_at is not None:
                starts_at = max(starts_at, ended.ends_at, ended.starts_at + _TICK)
        return Alert(
            fingerprint=fingerprint,
            rule=candidate.rule,
            scope=candidate.scope,
            key=candidate.key,
            detail=candidate.detail,
            severity=candidate.severity,
            labels=alert_labels(candidate),
            value=candidate.value,
            baseline=candidate.baseline,
            summary=candidate.summary,
            action=candidate.action,
            starts_at=starts_at,
            observed_at=candidate.observed_at,
        )

    # --- muting -----------------------------------------------------------------------------------

    def _silenced_by(self, now: datetime) -> dict[str, tuple[str, ...]]:
        active = [silence for silence in self._silences.values() if silence.is_active(now)]
        found: dict[str, tuple[str, ...]] = {}
        for fingerprint, alert in self._firing.items():
            ids = tuple(sorted(silence.id for silence in active if silence.matches(alert.labels)))
            if ids:
                found[fingerprint] = ids
        return found

    def _inhibited_by(self) -> dict[str, tuple[str, ...]]:
        found: dict[str, set[str]] = {}
        for rule in self.routing.inhibit_rules:
            sources: dict[tuple[str, ...], set[str]] = {}
            for alert in self._firing.values():
                if all(matcher.matches(alert.labels) for matcher in rule.source_matchers):
                    equal = tuple(alert.labels.get(name, "") for name in rule.equal)
                    sources.setdefault(equal, set()).add(alert.fingerprint)
            if not sources:
                continue
            for alert in self._firing.values():
                if not all(matcher.matches(alert.labels) for matcher in rule.target_matchers):
                    continue
                equal = tuple(alert.labels.get(name, "") for name in rule.equal)
                inhibitors = sources.get(equal, set()) - {alert.fingerprint}
                if inhibitors:
                    found.setdefault(alert.fingerprint, set()).update(inhibitors)
        return {fingerprint: tuple(sorted(ids)) for fingerprint, ids in found.items()}

    # --- notifications ----------------------------------------------------------------------------

    def plan_notifications(self, now: datetime) -> list[Notification]:
        """The messages due at ``now``, at most one per group (see the module doc). Call it after
        every :meth:`observe` and from a timer (every few seconds): groups flush on time only if
        asked. Write the result to the outbox before persisting :meth:`to_dict`."""
        _require_aware(now)
        silenced = self._silenced_by(now)
        inhibited = self._inhibited_by()
        members: dict[str, list[Alert]] = {}
        for fingerprint in sorted(self._firing):
            if fingerprint in silenced or fingerprint in inhibited:
                continue
            alert = self._firing[fingerprint]
            for target in self.routing.match(alert.labels):
                group = self._group_for(target, alert.labels, now)
                members.setdefault(group.key, []).append(alert)

        notifications: list[Notification] = []
        for key in sorted(self._groups):
            group = self._groups[key]
            current = members.get(key, [])
            # Forget episodes no longer owed to anyone (defensive: owed ones are kept until told).
            group.notified = {
                fingerprint: version
                for fingerprint, version in group.notified.items()
                if version in self._resolved or self._firing_version(fingerprint) == version
            }
            if now < group.next_flush_at:
                continue
            if not current and not group.notified:
                # Dropped only at a flush time with nothing to say, so an alert firing again right
                # after an all-clear still waits for the group interval.
                del self._groups[key]
                continue
            notification = self._flush(group, current, now)
            if notification is not None:
                notifications.append(notification)
            group.next_flush_at = now + group.group_interval
        self._collect_garbage(now)
        return notifications

    def _group_for(self, target: RouteTarget, labels: Mapping[str, str], now: datetime) -> _Group:
        if target.group_by == (GROUP_BY_ALL,):
            group_labels = dict(labels)
        else:
            group_labels = {name: labels.get(name, "") for name in target.group_by}
        key = group_key(target.route_id, group_labels)
        group = self._groups.get(key)
        if group is None:
            group = _Group(
                key=key,
                route_id=target.route_id,
                receiver=target.receiver,
                labels=group_labels,
                group_wait=target.group_wait,
                group_interval=target.group_interval,
                repeat_interval=target.repeat_interval,
                created_at=now,
                next_flush_at=now + target.group_wait,
            )
            self._groups[key] = group
        else:
            # The routing file may have changed since the group was made: follow it.
            group.receiver = target.receiver
            group.group_interval = target.group_interval
            group.repeat_interval = target.repeat_interval
        return group

    def _firing_version(self, fingerprint: str) -> str | None:
        alert = self._firing.get(fingerprint)
        return None if alert is None else alert.version

    def _flush(self, group: _Group, current: list[Alert], now: datetime) -> Notification | None:
        current_versions = {alert.fingerprint: alert.version for alert in current}
        owed = [
            self._resolved[version]
            for fingerprint, version in sorted(group.notified.items())
            if current_versions.get(fingerprint) != version and version in self._resolved
        ]
        news = any(
            group.notified.get(fingerprint) != version for fingerprint, version in current_versions.items()
        )
        repeat_due = (
            bool(current)
            and group.last_notified_at is not None
            and now - group.last_notified_at >= group.repeat_interval
        )
        if not (news or owed or repeat_due):
            return None
        # Firing alerts the receiver was told about and that are muted (or routed elsewhere) now
        # stay on the books, so their resolution is still told when it comes.
        still_quiet = {
            fingerprint: version
            for fingerprint, version in group.notified.items()
            if fingerprint not in current_versions and self._firing_version(fingerprint) == version
        }
        # News first (new alerts, then resolved ones), then what the receiver already knows fires.
        new = sorted(
            (a for a in current if group.notified.get(a.fingerprint) != a.version), key=_display_order
        )
        known = sorted(
            (a for a in current if group.notified.get(a.fingerprint) == a.version), key=_display_order
        )
        alerts = (
            *(self._notified(alert, is_new=True) for alert in new),
            *(self._notified(alert, is_new=True) for alert in sorted(owed, key=_display_order)),
            *(self._notified(alert, is_new=False) for alert in known),
        )
        group.sequence += 1
        group.last_notified_at = now
        group.notified = {**still_quiet, **current_versions}
        for ended in owed:
            self._told_resolved.add(ended.version)
        return Notification(
            id=notification_id(group.receiver, group.key, group.sequence, alerts),
            receiver=group.receiver,
            group_key=group.key,
            group_labels=dict(group.labels),
            status="firing" if current else "resolved",
            sequence=group.sequence,
            created_at=now,
            alerts=alerts,
            external_url=self.routing.external_url,
        )

    def _notified(self, alert: Alert, *, is_new: bool) -> NotifiedAlert:
        return NotifiedAlert(
            fingerprint=alert.fingerprint,
            status="firing" if alert.ends_at is None else "resolved",
            rule=alert.rule,
            scope=str(alert.scope),
            key=alert.key,
            detail=alert.detail,
            severity=str(alert.severity),
            labels=dict(alert.labels),
            summary=alert.summary,
            action=alert.action,
            value=alert.value,
            baseline=alert.baseline,
            starts_at=alert.starts_at,
            ends_at=alert.ends_at,
            observed_at=alert.observed_at,
            dashboard_url=render_dashboard_url(self.routing.dashboard_url, alert.labels),
            is_new=is_new,
        )

    def _collect_garbage(self, now: datetime) -> None:
        owed = {version for group in self._groups.values() for version in group.notified.values()}
        self._resolved = {version: alert for version, alert in self._resolved.items() if version in owed}
        self._told_resolved &= set(self._resolved)
        self._silences = {
            silence_id: silence
            for silence_id, silence in self._silences.items()
            if now - silence.ends_at < self.silence_retention
        }

    # --- silences ---------------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> Silence:
        """Add (or, with the same id, keep) a silence; it mutes from the next plan on."""
        self._silences.setdefault(silence.id, silence)
        return self._silences[silence.id]

    def expire_silence(self, silence_id: str, now: datetime) -> Silence:
        """End a silence now (it stays listed as expired). ``KeyError`` when there is none by that id."""
        _require_aware(now)
        silence = self._silences[silence_id]
        if silence.ends_at > now:
            silence = replace(silence, starts_at=min(silence.starts_at, now), ends_at=now)
            self._silences[silence_id] = silence
        return silence

    def silences(self, now: datetime, *, include_expired: bool = False) -> list[Silence]:
        """Active and pending silences (and recently expired ones on request), by end time."""
        return sorted(
            (s for s in self._silences.values() if include_expired or s.ends_at > now),
            key=lambda s: (s.ends_at, s.id),
        )

    # --- reading ----------------------------------------------------------------------------------

    def alerts(self, now: datetime, *, include_resolved: bool = False) -> list[AlertView]:
        """Firing alerts (and ended ones whose resolution is not told yet, on request), each with
        what mutes it: what ``salespulse alerts list`` shows from a worker's book."""
        _require_aware(now)
        silenced = self._silenced_by(now)
        inhibited = self._inhibited_by()
        views = [
            AlertView(alert, silenced.get(fingerprint, ()), inhibited.get(fingerprint, ()))
            for fingerprint, alert in self._firing.items()
        ]
        if include_resolved:
            views.extend(AlertView(alert, (), ()) for alert in self._resolved.values())
        return sorted(views, key=lambda view: _display_order(view.alert))

    def get(self, fingerprint: str) -> Alert | None:
        return self._firing.get(fingerprint)

    def __len__(self) -> int:
        return len(self._firing)

    # --- state ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-ready plain data (``json.dumps`` takes it as is)."""
        return {
            "version": STATE_VERSION,
            "firing": [alert.to_dict() for _, alert in sorted(self._firing.items())],
            "resolved": [alert.to_dict() for _, alert in sorted(self._resolved.items())],
            "told_resolved": sorted(self._told_resolved),
            "groups": [group.to_dict() for _, group in sorted(self._groups.items())],
            "silences": [silence.to_dict() for _, silence in sorted(self._silences.items())],
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        routing: RoutingConfig,
        *,
        silence_retention: timedelta = DEFAULT_SILENCE_RETENTION,
    ) -> AlertBook:
        """A book from :meth:`to_dict`'s output, routed by ``routing`` (which may have changed)."""
        if data.get("version") != STATE_VERSION:
            raise ValueError(
                f"alert state version {data.get('version')!r} is not {STATE_VERSION}; "
                "this salespulse cannot read it (start with an empty book: alerts fire again)"
            )
        book = cls(routing, silence_retention=silence_retention)
        for item in data["firing"]:
            alert = Alert.from_dict(item)
            book._firing[alert.fingerprint] = alert
        for item in data["resolved"]:
            alert = Alert.from_dict(item)
            book._resolved[alert.version] = alert
        book._told_resolved = set(data["told_resolved"])
        for item in data["groups"]:
            group = _Group.from_dict(item)
            book._groups[group.key] = group
        for item in data["silences"]:
            silence = Silence.from_dict(item)
            book._silences[silence.id] = silence
        return book


_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}


def _display_order(alert: Alert) -> tuple[int, datetime, str]:
    """Most severe first, then the oldest, then by fingerprint (a stable order for messages)."""
    return (_SEVERITY_RANK[alert.severity], alert.starts_at, alert.fingerprint)


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    _require_aware(moment, "stored time")
    return moment
