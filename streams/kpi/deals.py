"""Deals as the sum of their events: status, stage, amounts, cycle time and stage advancements.

A deal's state is a pure function of the *set* of its events, never of their arrival order: every
derived field is computed from the events sorted by (event time, event id). So a `deal_won` that
arrives before its `deal_created`, a redelivered event, or a late stage change all give the same
deal as the same events in order. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from schemas.events import (
    DealCreatedEvent,
    DealLostEvent,
    DealStageChangedEvent,
    DealWonEvent,
)

DealEvent = DealCreatedEvent | DealStageChangedEvent | DealWonEvent | DealLostEvent
DEAL_EVENT_TYPES = (DealCreatedEvent, DealStageChangedEvent, DealWonEvent, DealLostEvent)
SECONDS_PER_DAY = 86_400


class DealStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


def _order(event: DealEvent) -> tuple[datetime, str]:
    return (event.occurred_at, event.event_id)


@dataclass(slots=True)
class Deal:
    """One deal, derived from its events. ``refresh`` recomputes every derived field."""

    deal_id: str
    rep_id: str
    events: dict[str, DealEvent] = field(default_factory=dict)
    opened_at: datetime | None = None
    status: DealStatus = DealStatus.OPEN
    stage: str | None = None
    closed_at: datetime | None = None
    amount: Decimal | None = None
    account_id: str | None = None
    product: str | None = None
    advanced_at: tuple[datetime, ...] = ()
    updated_at: datetime | None = None

    def events_in_order(self) -> list[DealEvent]:
        return sorted(self.events.values(), key=_order)

    def refresh(self, stage_rank: dict[str, int]) -> None:
        ordered = self.events_in_order()
        created = [e for e in ordered if isinstance(e, DealCreatedEvent)]
        closes = [e for e in ordered if isinstance(e, DealWonEvent | DealLostEvent)]
        # First-seen time: the creation, or (for a deal whose creation we never got) its first event.
        self.opened_at = created[0].occurred_at if created else ordered[0].occurred_at
        self.rep_id = ordered[-1].rep_id  # a reassigned deal belongs to its latest owner
        self.updated_at = ordered[-1].occurred_at
        self.account_id = next((e.account_id for e in reversed(ordered) if e.account_id), None)
        self.product = next((e.product for e in reversed(created) if e.product), None)
        stages = [e for e in ordered if isinstance(e, DealCreatedEvent | DealStageChangedEvent) and e.stage]
        self.stage = stages[-1].stage if stages else None
        self.advanced_at = _advancements(stages, stage_rank)
        if closes:
            final = closes[-1]  # a deal re-opened and closed again ends as its latest close says
            self.status = DealStatus.WON if isinstance(final, DealWonEvent) else DealStatus.LOST
            self.closed_at = final.occurred_at
        else:
            self.status = DealStatus.OPEN
            self.closed_at = None
        if self.status is DealStatus.WON:
            self.amount = closes[-1].amount  # type: ignore[union-attr]  # a DealWonEvent
        else:
            self.amount = next((e.amount for e in reversed(created) if e.amount is not None), None)

    @property
    def cycle_days(self) -> float | None:
        """Days from first seen to won; None unless won."""
        if self.status is not DealStatus.WON or self.closed_at is None or self.opened_at is None:
            return None
        return max(0.0, (self.closed_at - self.opened_at).total_seconds() / SECONDS_PER_DAY)

    @property
    def amount_missing(self) -> bool:
        """A won deal whose amount the source did not know (imported as 0 with a flag)."""
        if self.status is not DealStatus.WON:
            return False
        won = max((e for e in self.events.values() if isinstance(e, DealWonEvent)), key=_order)
        return bool(won.attributes and won.attributes.get("amount_missing") is True)

    def open_at(self, moment: datetime) -> bool:
        """Whether the deal was open at ``moment`` (opened by then and not closed yet)."""
        if self.opened_at is None or self.opened_at > moment:
            return False
        return self.closed_at is None or self.closed_at > moment


def _advancements(stages: Sequence[DealEvent], stage_rank: dict[str, int]) -> tuple[datetime, ...]:
    """When a stage change moved the deal to a later stage than the one it was in.

    Stages outside the configured order have no rank: moving into one is not an advancement, and
    the next ranked stage is compared with the last ranked one before it.
    """
    advanced: list[datetime] = []
    current: int | None = None
    for event in stages:
        rank = stage_rank.get(normalise_stage(event.stage or ""))  # type: ignore[union-attr]
        if rank is None:
            continue
        if isinstance(event, DealStageChangedEvent) and current is not None and rank > current:
            advanced.append(event.occurred_at)
        current = rank
    return tuple(advanced)


def normalise_stage(stage: str) -> str:
    return " ".join(stage.replace("_", " ").replace("-", " ").lower().split())


def stage_ranks(order: Iterable[str]) -> dict[str, int]:
    return {normalise_stage(stage): rank for rank, stage in enumerate(order)}


@dataclass(slots=True)
class DealBook:
    """The deals of one rep (or of everyone, offline), built from deal events in any order."""

    stage_rank: dict[str, int]
    deals: dict[str, Deal] = field(default_factory=dict)

    def apply(self, events: Iterable[DealEvent]) -> set[str]:
        """Add events; returns the ids of deals that changed. An event id seen before is ignored."""
        changed: set[str] = set()
        for event in events:
            deal = self.deals.get(event.deal_id)
            if deal is None:
                deal = self.deals[event.deal_id] = Deal(event.deal_id, event.rep_id)
            if event.event_id in deal.events:
                continue
            deal.events[event.event_id] = event
            changed.add(event.deal_id)
        for deal_id in changed:
            self.deals[deal_id].refresh(self.stage_rank)
        return changed

    def forget_closed_before(self, moment: datetime) -> None:
        """Drop deals closed before ``moment``: nothing can change them any more."""
        for deal_id in [
            d.deal_id for d in self.deals.values() if d.closed_at is not None and d.closed_at < moment
        ]:
            del self.deals[deal_id]
