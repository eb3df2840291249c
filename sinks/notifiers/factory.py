"""A notifier for each receiver of the routing file."""

from __future__ import annotations

from schemas.routing import ReceiverConfig, RoutingConfig
from sinks.notifiers.alertmanager import AlertmanagerNotifier
from sinks.notifiers.base import Notifier
from sinks.notifiers.google_chat import GoogleChatNotifier
from sinks.notifiers.http import HttpPoster
from sinks.notifiers.mattermost import MattermostNotifier
from sinks.notifiers.slack import SlackNotifier
from sinks.notifiers.teams import TeamsNotifier
from sinks.notifiers.webhook import WebhookNotifier

_BY_KIND: dict[
    str,
    type[SlackNotifier]
    | type[TeamsNotifier]
    | type[MattermostNotifier]
    | type[GoogleChatNotifier]
    | type[WebhookNotifier]
    | type[AlertmanagerNotifier],
] = {
    "slack": SlackNotifier,
    "teams": TeamsNotifier,
    "mattermost": MattermostNotifier,
    "google_chat": GoogleChatNotifier,
    "webhook": WebhookNotifier,
    "alertmanager": AlertmanagerNotifier,
}


def build_notifier(receiver: ReceiverConfig, *, poster: HttpPoster | None = None) -> Notifier:
    return _BY_KIND[receiver.kind](receiver, poster=poster)


def build_notifiers(routing: RoutingConfig, *, poster: HttpPoster | None = None) -> dict[str, Notifier]:
    """Receiver name -> notifier, for every receiver of the routing file."""
    shared = poster or HttpPoster()
    return {receiver.name: build_notifier(receiver, poster=shared) for receiver in routing.receivers}
