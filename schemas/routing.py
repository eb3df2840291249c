"""The routing file: which alerts go to which chat receivers, how they are grouped and muted.

Modelled on Prometheus Alertmanager's configuration, so its documentation applies almost word for
word: a tree of routes matched on alert labels (``team``, ``territory``, ``severity``, ``rule``,
``scope``, ``key``, ``rep_id`` ...), each with a receiver and grouping timings inherited from its
parent; ``continue: true`` lets an alert match further sibling routes; inhibit rules mute target
alerts while a matching source alert fires. Receivers are one chat or HTTP destination each.

Example::

    dashboard_url: "http://localhost:3000/d/salespulse-rep?var-rep={rep_id}"
    receivers:
      - name: emea-slack
        slack: {webhook_url: "https://hooks.slack.com/services/T000/B000/XXXX"}
      - name: audit
        webhook: {url: "https://audit.example.com/hook", hmac_secret: "s3cret"}
    route:
      receiver: audit
      group_by: [team]
      group_wait: 30s
      group_interval: 5m
      repeat_interval: 4h
      routes:
        - matchers: ['team="emea"', 'severity=~"warning|critical"']
          receiver: emea-slack

Every URL of a receiver is a secret (chat webhook URLs carry their credential): they are
``SecretStr`` and never appear in a repr, a log line or a validation error.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
GROUP_BY_ALL = "..."  # Alertmanager's "group by every label"

DEFAULT_GROUP_BY: tuple[str, ...] = ("team",)
DEFAULT_GROUP_WAIT = timedelta(seconds=30)
DEFAULT_GROUP_INTERVAL = timedelta(minutes=5)
DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)


# --- durations ------------------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_DURATION_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: object) -> timedelta:
    """``30s``, ``5m``, ``4h``, ``1h30m``, ``1d`` (Alertmanager's notation), or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m, 4h or 1h30m")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip()
        if text and _DURATION_PART.sub("", text) == "":
            seconds = sum(
                float(amount) * _DURATION_UNIT_SECONDS[unit] for amount, unit in _DURATION_PART.findall(text)
            )
            return timedelta(seconds=seconds)
    raise ValueError("must be a duration such as 30s, 5m, 4h or 1h30m")


def format_duration(value: timedelta) -> str:
    """The notation :func:`parse_duration` reads: ``4h``, ``1h30m``, ``45s``."""
    seconds = value.total_seconds()
    if seconds <= 0:
        return "0s"
    text = ""
    for unit in ("d", "h", "m", "s"):
        amount, seconds = divmod(seconds, _DURATION_UNIT_SECONDS[unit])
        if amount:
            text += f"{int(amount)}{unit}"
    if seconds:
        text += f"{round(seconds * 1000)}ms"
    return text


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be negative")
    return value


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be longer than 0s")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)]
PositiveDuration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]


# --- matchers -------------------------------------------------------------------------------------


class MatchOp(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


_MATCHER_TEXT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        body = text[1:-1]
        return re.sub(r"\\(.)", r"\1", body)
    return text


class Matcher(BaseModel):
    """One label condition, as Alertmanager and amtool write it: ``team="emea"``, ``rule!=pacing``,
    ``severity=~"warning|critical"``, ``rep_id!~"test-.*"``.

    A missing label reads as the empty string; regular expressions are anchored at both ends
    (``team=~"emea"`` does not match ``emea-north``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(pattern=LABEL_NAME.pattern)]
    op: MatchOp
    value: str
    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: object) -> object:
        if isinstance(data, str):
            found = _MATCHER_TEXT.match(data)
            if found is None:
                raise ValueError(
                    'must look like name="value", name!="value", name=~"regex" or name!~"regex" '
                    "(name: letters, digits and _)"
                )
            return {"name": found.group(1), "op": found.group(2), "value": _unquote(found.group(3))}
        return data

    @model_validator(mode="after")
    def _compile(self) -> Matcher:
        if self.op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            try:
                self._pattern = re.compile(f"^(?:{self.value})$")
            except re.error as error:
                raise ValueError(f"invalid regular expression {self.value!r}: {error}") from None
        return self

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op is MatchOp.EQUAL:
            return actual == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return actual != self.value
        if self._pattern is None:  # never: the validator compiles it for both regex operators
            raise RuntimeError(f"matcher {self} has no compiled pattern")
        found = self._pattern.match(actual) is not None
        return found if self.op is MatchOp.REGEX else not found

    def __str__(self) -> str:
        quoted = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op.value}"{quoted}"'


def parse_matcher(text: str) -> Matcher:
    """A matcher from its text form (what ``salespulse alerts silence team=emea rule=~"activity_.*"``
    passes); raises ``ValueError`` with the reason."""
    try:
        return Matcher.model_validate(text)
    except ValidationError as error:
        raise ValueError(f"{text!r}: {error.errors()[0]['msg']}") from None


def matches_all(matchers: tuple[Matcher, ...], labels: Mapping[str, str]) -> bool:
    return all(matcher.matches(labels) for matcher in matchers)


# --- receivers ------------------------------------------------------------------------------------


def _http_url(value: SecretStr) -> SecretStr:
    # The message must never echo the value: it is a credential.
    problem = "must be an http:// or https:// URL with a host (value not shown: URLs are secrets)"
    try:
        parts = urlsplit(value.get_secret_value())
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(problem)
    return value


SecretUrl = Annotated[SecretStr, AfterValidator(_http_url)]
ReceiverName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class RateLimit(_Strict):
    """A token bucket: ``per_second`` messages on average, at most ``burst`` at once."""

    per_second: Annotated[float, Field(gt=0, le=1000)]
    burst: Annotated[int, Field(ge=1, le=1000)] = 1


class SlackConfig(_Strict):
    """Slack incoming webhook (Block Kit message)."""

    webhook_url: SecretUrl


class TeamsConfig(_Strict):
    """Microsoft Teams "Workflows" webhook (an Adaptive Card in an ``attachments`` envelope)."""

    webhook_url: SecretUrl


class MattermostConfig(_Strict):
    """Mattermost incoming webhook (markdown text)."""

    webhook_url: SecretUrl
    channel: str | None = None
    username: str | None = None


class GoogleChatConfig(_Strict):
    """Google Chat space incoming webhook (a ``cardsV2`` card with a text fallback)."""

    webhook_url: SecretUrl


class WebhookConfig(_Strict):
    """Any HTTP endpoint, sent Alertmanager's webhook JSON (version 4); with ``hmac_secret`` each
    request carries ``X-Salespulse-Signature: sha256=<hex HMAC-SHA256 of the body>``."""

    url: SecretUrl
    hmac_secret: SecretStr | None = None
    max_alerts: Annotated[int, Field(ge=0)] = 0  # 0: all; more are counted in truncatedAlerts


class AlertmanagerConfig(_Strict):
    """An existing Prometheus Alertmanager: alerts are pushed to ``{url}/api/v2/alerts``.

    Alertmanager resolves an alert by itself when its ``endsAt`` passes, so a firing alert is sent
    with ``endsAt`` = send time + ``firing_ttl``; the route's ``repeat_interval`` must be shorter,
    so a still-firing alert is pushed again before it lapses."""

    url: SecretUrl
    firing_ttl: PositiveDuration = timedelta(hours=5)


ReceiverKind = Literal["slack", "teams", "mattermost", "google_chat", "webhook", "alertmanager"]
RECEIVER_KINDS: tuple[ReceiverKind, ...] = (
    "slack",
    "teams",
    "mattermost",
    "google_chat",
    "webhook",
    "alertmanager",
)
# Chat services throttle incoming webhooks at about one message per second (Slack documents it per
# webhook, Google Chat per space); HTTP endpoints are not limited unless configured.
DEFAULT_RATE_LIMITS: dict[ReceiverKind, RateLimit | None] = {
    "slack": RateLimit(per_second=1.0, burst=1),
    "teams": RateLimit(per_second=1.0, burst=1),
    "mattermost": RateLimit(per_second=1.0, burst=1),
    "google_chat": RateLimit(per_second=1.0, burst=1),
    "webhook": None,
    "alertmanager": None,
}

DestinationConfig = (
    SlackConfig | TeamsConfig | MattermostConfig | GoogleChatConfig | WebhookConfig | AlertmanagerConfig
)


class ReceiverConfig(_Strict):
    """A named destination: exactly one of the kinds below.

    ``rate_limit`` defaults per kind (one message per second for the chat services, none for plain
    HTTP); ``rate_limit: null`` turns it off."""

    name: ReceiverName
    slack: SlackConfig | None = None
    teams: TeamsConfig | None = None
    mattermost: MattermostConfig | None = None
    google_chat: GoogleChatConfig | None = None
    webhook: WebhookConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    rate_limit: RateLimit | None = None
    timeout: PositiveDuration = timedelta(seconds=10)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ReceiverConfig:
        given = [kind for kind in RECEIVER_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a receiver needs exactly one of {', '.join(RECEIVER_KINDS)}; "
                + (f"got {', '.join(given)}" if given else "got none")
            )
        return self

    @property
    def kind(self) -> ReceiverKind:
        return next(kind for kind in RECEIVER_KINDS if getattr(self, kind) is not None)

    @property
    def destination(self) -> DestinationConfig:
        config: DestinationConfig = getattr(self, self.kind)
        return config

    @property
    def effective_rate_limit(self) -> RateLimit | None:
        if "rate_limit" in self.model_fields_set:
            return self.rate_limit
        return DEFAULT_RATE_LIMITS[self.kind]


# --- routes ---------------------------------------------------------------------------------------


def _label_names(value: tuple[str, ...]) -> tuple[str, ...]:
    for name in value:
        if name != GROUP_BY_ALL and not LABEL_NAME.match(name):
            raise ValueError(f"{name!r} is not a label name (letters, digits and _), nor '...'")
    if GROUP_BY_ALL in value and len(value) > 1:
        raise ValueError("'...' (group by every label) must be the only entry")
    return value


LabelNames = Annotated[tuple[str, ...], AfterValidator(_label_names)]


class Route(_Strict):
    """One node of the routing tree. Unset fields are inherited from the parent route."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, hide_input_in_errors=True)

    receiver: str | None = None
    matchers: tuple[Matcher, ...] = ()
    continue_: bool = Field(default=False, alias="continue")
    group_by: LabelNames | None = None
    group_wait: Duration | None = None
    group_interval: PositiveDuration | None = None
    repeat_interval: PositiveDuration | None = None
    routes: tuple[Route, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """A matched route with everything inherited resolved: where an alert goes and how it is grouped.

    ``route_id`` is the route's position in the tree ("0" is the root, "0.2.1" the second child of
    its third child); it is part of every group key."""

    route_id: str
    receiver: str
    group_by: tuple[str, ...]
    group_wait: timedelta
    group_interval: timedelta
    repeat_interval: timedelta


class InhibitRule(_Strict):
    """While an alert matching ``source_matchers`` fires, alerts matching ``target_matchers`` with the
    same values of the ``equal`` labels are muted (an alert never mutes itself)."""

    source_matchers: Annotated[tuple[Matcher, ...], Field(min_length=1)]
    target_matchers: Annotated[tuple[Matcher, ...], Field(min_length=1)]
    equal: LabelNames = ()


# A rep who does nothing at all also shows every activity drop; the no_activity alert says it all.
DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    InhibitRule(
        source_matchers=(Matcher.model_validate('rule="no_activity"'),),
        target_matchers=(Matcher.model_validate('rule="activity_drop"'),),
        equal=("scope", "key"),
    ),
)


class ConfigProblem(ValueError):
    """A problem found across fields, with the key path it belongs to (so the error points there)."""

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        self.loc = loc
        super().__init__(message)


class DeliveryPolicy(_Strict):
    """Retries of a failed send: exponential backoff with full jitter, from ``backoff_initial``
    doubling up to ``backoff_max``. Retryable failures (429, 5xx, connection errors) retry forever:
    an outage delays messages, it never drops them."""

    backoff_initial: PositiveDuration = timedelta(seconds=1)
    backoff_max: PositiveDuration = timedelta(minutes=5)


def _dashboard_template(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        fields = [name for _, name, spec, conv in string.Formatter().parse(value) if name is not None]
    except ValueError as error:
        raise ValueError(f"is not a valid template: {error}") from None
    for name in fields:
        if not LABEL_NAME.match(name):
            raise ValueError(
                f"placeholder {{{name}}} must be a plain label name such as {{rep_id}} or {{team}}"
            )
    if urlsplit(value).scheme not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL template")
    return value


class RoutingConfig(_Strict):
    receivers: tuple[ReceiverConfig, ...]
    route: Route
    inhibit_rules: tuple[InhibitRule, ...] = DEFAULT_INHIBIT_RULES
    dashboard_url: Annotated[str | None, AfterValidator(_dashboard_template)] = Field(
        default=None,
        description="Link to a board, filled from the alert's labels, e.g. "
        "http://localhost:3000/d/salespulse-rep?var-rep={rep_id}; no link when a label is missing.",
    )
    external_url: str = Field(default="", description="Where salespulse is reached (webhook externalURL).")
    delivery: DeliveryPolicy = DeliveryPolicy()

    @model_validator(mode="after")
    def _consistent(self) -> RoutingConfig:
        names = [receiver.name for receiver in self.receivers]
        if not names:
            raise ConfigProblem(("receivers",), "at least one receiver is needed")
        for index, name in enumerate(names):
            if name in names[:index]:
                raise ConfigProblem(("receivers", index, "name"), f"receiver name {name!r} is used twice")
        if self.route.receiver is None:
            raise ConfigProblem(("route",), "the root route needs a receiver (the default destination)")
        if self.route.matchers:
            raise ConfigProblem(("route", "matchers"), "the root route matches every alert; no matchers")
        by_name = {receiver.name: receiver for receiver in self.receivers}
        for loc, route, target in self._walk(self.route, "0", None, ("route",)):
            if route.receiver is not None and route.receiver not in by_name:
                raise ConfigProblem(
                    (*loc, "receiver"),
                    f"receiver {route.receiver!r} is not defined (known: {', '.join(names)})",
                )
            destination = by_name[target.receiver].destination
            if (
                isinstance(destination, AlertmanagerConfig)
                and target.repeat_interval >= destination.firing_ttl
            ):
                raise ConfigProblem(
                    loc,
                    f"repeat_interval {format_duration(target.repeat_interval)} must be shorter than "
                    f"the firing_ttl {format_duration(destination.firing_ttl)} of receiver "
                    f"{target.receiver!r}, or Alertmanager "
                    "resolves still-firing alerts between two pushes",
                )
        return self

    def receiver(self, name: str) -> ReceiverConfig | None:
        return next((receiver for receiver in self.receivers if receiver.name == name), None)

    def match(self, labels: Mapping[str, str]) -> list[RouteTarget]:
        """The routes an alert with ``labels`` goes to, as Alertmanager matches them: depth first, the
        first matching child wins unless it says ``continue``; a route none of whose children match
        is itself the target. Never empty: the root matches everything."""
        root = self._resolve(self.route, "0", None)
        return self._match(self.route, root, labels)

    def _match(self, route: Route, target: RouteTarget, labels: Mapping[str, str]) -> list[RouteTarget]:
        found: list[RouteTarget] = []
        for index, child in enumerate(route.routes):
            if not matches_all(child.matchers, labels):
                continue
            found.extend(
                self._match(child, self._resolve(child, f"{target.route_id}.{index}", target), labels)
            )
            if not child.continue_:
                break
        return found or [target]

    @staticmethod
    def _resolve(route: Route, route_id: str, parent: RouteTarget | None) -> RouteTarget:
        def pick(own: Any, inherited: Any, default: Any) -> Any:
            if own is not None:
                return own
            return inherited if parent is not None else default

        return RouteTarget(
            route_id=route_id,
            receiver=pick(route.receiver, parent.receiver if parent else None, ""),
            group_by=pick(route.group_by, parent.group_by if parent else None, DEFAULT_GROUP_BY),
            group_wait=pick(route.group_wait, parent.group_wait if parent else None, DEFAULT_GROUP_WAIT),
            group_interval=pick(
                route.group_interval, parent.group_interval if parent else None, DEFAULT_GROUP_INTERVAL
            ),
            repeat_interval=pick(
                route.repeat_interval, parent.repeat_interval if parent else None, DEFAULT_REPEAT_INTERVAL
            ),
        )

    def _walk(
        self, route: Route, route_id: str, parent: RouteTarget | None, loc: tuple[int | str, ...]
    ) -> list[tuple[tuple[int | str, ...], Route, RouteTarget]]:
        target = self._resolve(route, route_id, parent)
        walked = [(loc, route, target)]
        for index, child in enumerate(route.routes):
            walked.extend(self._walk(child, f"{route_id}.{index}", target, (*loc, "routes", index)))
        return walked


# --- loading --------------------------------------------------------------------------------------


class RoutingError(ValueError):
    """The routing file cannot be used. ``problems`` holds one line per problem:
    ``FILE:LINE: key.path: what is wrong``."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"invalid routing file {path}:\n  " + "\n  ".join(problems))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; in a routing file that hides a mistake."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on the error's key path."""
    node = root
    line = None if root is None else root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
        else:
            child = None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def _key_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def load_routing(path: Path | str) -> RoutingConfig:
    """Read and validate a routing file. Raises :class:`RoutingError` naming the file, the line, the
    key path and the problem for every mistake found (never the value of a secret)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RoutingError(path, [f"{path}: cannot read: {error.strerror or error}"]) from None
    except UnicodeDecodeError:
        raise RoutingError(path, [f"{path}: not UTF-8 text"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise RoutingError(path, [f"{where}: not valid YAML: {problem}"]) from None
    if not isinstance(data, dict):
        raise RoutingError(
            path, [f"{path}: must be a mapping with receivers and route, got {type(data).__name__}"]
        )
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors(include_input=False, include_url=False):
            loc = tuple(part for part in item["loc"] if isinstance(part, int | str))
            cause = item.get("ctx", {}).get("error")
            if isinstance(cause, ConfigProblem):
                loc = (*loc, *cause.loc)
            line = _line_of(tree, loc)
            where = f"{path}:{line}" if line is not None else str(path)
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {_key_path(loc)}: {message}")
        raise RoutingError(path, problems) from None
