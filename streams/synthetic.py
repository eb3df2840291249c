"""A seeded, pure generator of a realistic sales org and its event stream, for the demo, tests and benchmarks.

Everything is a function of an :class:`OrgSpec`: no I/O, no wall clock, randomness only from
``random.Random`` instances seeded from ``spec.seed``.
The same spec always yields the same reps and the same events, with the same event ids, in the same order.

The stream is causal rather than a bag of independent counters, because salespulse exists to show that
leading indicators move before revenue does:

    calls -> (connected) -> meeting scheduled -> meeting held -> deal created -> discovery (demo)
          -> proposal sent -> negotiation -> won / lost

A rep who makes fewer calls books fewer meetings, opens fewer deals and, one sales cycle (three to seven
weeks) later, wins fewer of them. "Fading" reps do exactly that part-way through the period: their activity
falls sharply while the wins from their existing pipeline keep arriving for a while.

Activity happens on weekdays between 08:00 and 18:00 UTC. Events come out in event-time order across the
whole org; pacing them in real time is the caller's business.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import partial

from schemas.accounts import Account
from schemas.events import (
    EARLIEST_EVENT_TIME,
    LATEST_EVENT_TIME,
    CallEvent,
    CallOutcome,
    DealCreatedEvent,
    DealLostEvent,
    DealStageChangedEvent,
    DealWonEvent,
    DemoEvent,
    EmailDirection,
    EmailEvent,
    MeetingHeldEvent,
    MeetingScheduledEvent,
    ProposalSentEvent,
    VisitCheckOutEvent,
    VisitEvent,
)
from schemas.reps import ManagementMode, Rep
from schemas.wire import Event
from streams.visits.geo import haversine_m

__all__ = [
    "DEAL_STAGES",
    "DEFAULT_START",
    "OrgSpec",
    "RepProfile",
    "SyntheticOrg",
    "account_position",
    "estimate_total_events",
    "events_per_day_estimate",
    "generate_accounts",
    "generate_org",
    "iter_events",
]

DEFAULT_START = datetime(2024, 1, 1, tzinfo=UTC)

# The open stages a deal moves through, in order; it is created in the first one.
DEAL_STAGES: tuple[str, ...] = ("qualification", "discovery", "proposal", "negotiation")

# --- Base rates, for a rep with activity_rate == conversion == 1.0 on a normal working day. ---------------
CALLS_PER_DAY = 32.0
OUTBOUND_EMAILS_PER_DAY = 22.0
# Replies and inbound enquiries, relative to outbound mail.
INBOUND_EMAIL_RATIO = 0.4
# (outcome, probability); the connected share is what books meetings.
CALL_OUTCOMES: tuple[tuple[CallOutcome, float], ...] = (
    (CallOutcome.CONNECTED, 0.28),
    (CallOutcome.NO_ANSWER, 0.38),
    (CallOutcome.VOICEMAIL, 0.28),
    (CallOutcome.BUSY, 0.06),
)
_CONNECTED_CALL_LOG_MEDIAN_S = math.log(240)
# Ringing out, leaving a message, hearing the busy tone.
_UNCONNECTED_CALL_DURATION_S: dict[CallOutcome, tuple[float, float]] = {
    CallOutcome.NO_ANSWER: (10, 35),
    CallOutcome.VOICEMAIL: (15, 60),
    CallOutcome.BUSY: (1, 5),
}
MEETINGS_PER_CONNECTED_CALL = 0.14
# Business days between booking a meeting and holding it.
MEETING_LEAD_DAYS = (1, 7)
MEETING_SHOW_RATE = 0.82
DEALS_PER_MEETING_HELD = 0.40
DEMO_RATE_IN_DISCOVERY = 0.85
# Probability of reaching each stage from the one before, then of winning from negotiation.
STAGE_ADVANCE_RATE: dict[str, float] = {"discovery": 0.70, "proposal": 0.60, "negotiation": 0.70}
WIN_RATE_FROM_NEGOTIATION = 0.55
# Business days spent in each open stage before the next step is decided.
STAGE_DURATION_DAYS: dict[str, tuple[int, int]] = {
    "qualification": (2, 6),
    "discovery": (4, 9),
    "proposal": (3, 8),
    "negotiation": (3, 10),
}
# Reps take a day off now and then; a real org is never perfectly regular.
DAY_OFF_RATE = 0.02
DAY_TO_DAY_SPREAD = 0.25
# A fading rep's activity reaches its low level within this many days of the fade starting.
FADE_RAMP_DAYS = 3

LOSS_REASONS: dict[str, tuple[str, ...]] = {
    "qualification": ("no budget", "not a fit", "went dark"),
    "discovery": ("no decision", "went dark", "timing"),
    "proposal": ("price", "chose a competitor", "no decision"),
    "negotiation": ("price", "chose a competitor", "procurement stalled"),
}
# (product, share of deals, size relative to the rep's typical deal)
PRODUCTS: tuple[tuple[str, float, float], ...] = (
    ("starter", 0.35, 0.4),
    ("professional", 0.50, 1.0),
    ("enterprise", 0.15, 2.6),
)
ACCOUNTS_PER_REP = 400
_ACCOUNT_SUFFIXES = tuple(f"{n:03d}" for n in range(ACCOUNTS_PER_REP))
# Field visits: each rep's first accounts are key accounts, visited more often than the others.
KEY_ACCOUNTS_PER_REP = 5
KEY_ACCOUNT_VISIT_SHARE = 0.4
# Accounts lie within this many degrees of their territory's centre (about 20 km).
ACCOUNT_SPREAD_DEG = 0.18
VISIT_OUT_OF_RANGE_RATE = 0.04  # checked in from the car park down the road, or the wrong site
VISIT_WITHOUT_GPS_RATE = 0.04
FIELD_DRIVING_KMH = 45.0

TEAM_NAMES = ("North", "South", "East", "West", "Central", "Coastal", "Metro", "Mountain", "Valley", "Harbor")
# (territory id, latitude, longitude of its centre)
TERRITORIES: tuple[tuple[str, float, float], ...] = (
    ("boston", 42.3601, -71.0589),
    ("chicago", 41.8781, -87.6298),
    ("denver", 39.7392, -104.9903),
    ("seattle", 47.6062, -122.3321),
    ("austin", 30.2672, -97.7431),
    ("atlanta", 33.7490, -84.3880),
    ("new-york", 40.7128, -74.0060),
    ("san-francisco", 37.7749, -122.4194),
    ("london", 51.5074, -0.1278),
    ("berlin", 52.5200, 13.4050),
    ("paris", 48.8566, 2.3522),
    ("madrid", 40.4168, -3.7038),
)
FIRST_NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Elena", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kemi", "Liam",
    "Maya", "Noah", "Olivia", "Priya", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wei", "Ximena",
    "Yusuf", "Zoe", "Aisha", "Bruno", "Carmen", "Dmitri",
)  # fmt: skip
LAST_NAMES = (
    "Anders", "Brooks", "Castillo", "Dubois", "Eze", "Fischer", "Garcia", "Haddad", "Ito", "Jensen",
    "Kowalski", "Lopez", "Murphy", "Nakamura", "Okafor", "Patel", "Quinlan", "Rossi", "Schmidt", "Tanaka",
    "Usman", "Varga", "Walsh", "Xu", "Young", "Zhang",
)  # fmt: skip

_DAY_S = 86_400.0
_WORK_START_S = 8 * 3600.0
_WORK_END_S = 18 * 3600.0
_WORK_SPAN_S = _WORK_END_S - _WORK_START_S


@dataclass(frozen=True, slots=True)
class OrgSpec:
    """What to generate. ``start`` must be timezone-aware UTC; the period is ``[start, start + days)``."""

    reps: int = 20
    teams: int = 4
    territories: int = 4
    days: int = 90
    start: datetime = DEFAULT_START
    seed: int = 7
    # Reps whose activity falls off part-way through (preferably seasoned ones: the classic case of revenue
    # that still looks fine while the pipeline behind it dries up).
    fading_reps: int = 1
    # When fading reps fall off (fraction of the period), and to what share of their normal activity.
    fade_at: float = 0.6
    fade_to: float = 0.25
    # Share of reps hired within the last year: busier, but converting less.
    developing_share: float = 0.4
    # Multiplies every rep's activity (and so everything downstream of it); benchmarks turn it up.
    activity_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("reps", "teams", "territories", "days"):
            if getattr(self, name) < 1:
                raise ValueError(f"OrgSpec.{name} must be at least 1, got {getattr(self, name)}")
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise ValueError(f"OrgSpec.start must be timezone-aware UTC, got {self.start.isoformat()}")
        if not (self.start >= EARLIEST_EVENT_TIME and self.end <= LATEST_EVENT_TIME):
            raise ValueError(
                f"OrgSpec period {self.start.isoformat()} .. {self.end.isoformat()} is outside the accepted "
                f"event time range [{EARLIEST_EVENT_TIME.year}, {LATEST_EVENT_TIME.year})"
            )
        if not 0 <= self.fading_reps <= self.reps:
            raise ValueError(
                f"OrgSpec.fading_reps must be between 0 and reps ({self.reps}), got {self.fading_reps}"
            )
        if not 0 < self.fade_at < 1:
            raise ValueError(f"OrgSpec.fade_at is a fraction of the period in (0, 1), got {self.fade_at}")
        if not 0 <= self.fade_to <= 1:
            raise ValueError(
                f"OrgSpec.fade_to is a fraction of normal activity in [0, 1], got {self.fade_to}"
            )
        if not 0 <= self.developing_share <= 1:
            raise ValueError(f"OrgSpec.developing_share must be in [0, 1], got {self.developing_share}")
        if not 0 < self.activity_scale <= 1000:
            raise ValueError(f"OrgSpec.activity_scale must be in (0, 1000], got {self.activity_scale}")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def fade_starts_at(self) -> datetime:
        """When fading reps begin to fall off."""
        return self.start + timedelta(days=math.floor(self.days * self.fade_at))


@dataclass(frozen=True, slots=True)
class RepProfile:
    """The hidden qualities behind a rep's numbers: what the generator draws from and tests reason about."""

    rep: Rep
    # Multiplier on the base activity rates (calls, emails).
    activity_rate: float
    # Multiplier on every funnel probability: booking meetings, opening deals, advancing and winning them.
    conversion: float
    visits_per_day: float
    typical_deal_amount: float
    territory_centre: tuple[float, float]
    fading: bool


@dataclass(frozen=True)
class SyntheticOrg:
    spec: OrgSpec
    reps: list[Rep]
    profiles: tuple[RepProfile, ...]
    fading_rep_ids: frozenset[str]


# --- The org ------------------------------------------------------------------------------------------


def _team_names(count: int) -> list[str]:
    return [f"Team {TEAM_NAMES[i]}" if i < len(TEAM_NAMES) else f"Team {i + 1}" for i in range(count)]


def _territories(count: int, rng: random.Random) -> list[tuple[str, float, float]]:
    chosen: list[tuple[str, float, float]] = []
    for i in range(count):
        name, lat, lon = TERRITORIES[i % len(TERRITORIES)]
        lap = i // len(TERRITORIES)
        if lap:
            # More territories than cities: split a city into districts with nearby centres.
            name, lat, lon = f"{name}-{lap + 1}", lat + rng.uniform(-0.3, 0.3), lon + rng.uniform(-0.3, 0.3)
        chosen.append((name, lat, lon))
    return chosen


def _person_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def _round_amount(value: float, step: int) -> Decimal:
    return Decimal(max(step, round(value / step) * step))


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    return haversine_m(a[0], a[1], b[0], b[1]) / 1000


def _offset(lat: float, lon: float, metres: float, bearing_deg: float) -> tuple[float, float]:
    """A point ``metres`` from (lat, lon) towards ``bearing_deg`` (flat-earth: fine below 10 km)."""
    north = metres * math.cos(math.radians(bearing_deg)) / 111_195.0
    east = metres * math.sin(math.radians(bearing_deg)) / (111_195.0 * math.cos(math.radians(lat)))
    return round(max(-90.0, min(90.0, lat + north)), 6), round(max(-180.0, min(180.0, lon + east)), 6)


def _unit_hash(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (positions that never depend on a random stream)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def account_position(account_id: str, centre: tuple[float, float]) -> tuple[float, float]:
    lat, lon = centre
    return (
        round(lat + (2 * _unit_hash(f"lat:{account_id}") - 1) * ACCOUNT_SPREAD_DEG, 6),
        round(lon + (2 * _unit_hash(f"lon:{account_id}") - 1) * ACCOUNT_SPREAD_DEG * 1.3, 6),
    )


def generate_accounts(org: SyntheticOrg) -> list[Account]:
    """Every account the org's events name, with a position in its rep's territory and the rep as
    owner; each rep's first ``KEY_ACCOUNTS_PER_REP`` are in the ``key`` segment."""
    accounts: list[Account] = []
    for profile in org.profiles:
        prefix = f"acct-{profile.rep.rep_id.removeprefix('rep-')}-"
        for n, suffix in enumerate(_ACCOUNT_SUFFIXES):
            account_id = prefix + suffix
            lat, lon = account_position(account_id, profile.territory_centre)
            accounts.append(
                Account(
                    account_id=account_id,
                    name=f"{profile.rep.territory.title()} customer {suffix}",
                    lat=lat,
                    lon=lon,
                    segment="key" if n < KEY_ACCOUNTS_PER_REP else "standard",
                    owner_rep_id=profile.rep.rep_id,
                )
            )
    return accounts


def generate_org(spec: OrgSpec) -> SyntheticOrg:
    """The reps of the org: teams, territories, managers, tenure, quota and (hidden) quality."""
    # The org has its own stream of randomness so that adding event types never reshuffles the reps.
    rng = random.Random(f"org:{spec.seed}")  # noqa: S311 - a simulation, not a secret
    teams = _team_names(spec.teams)
    managers = [_person_name(rng) for _ in teams]
    territories = _territories(spec.territories, rng)
    indexes = list(range(spec.reps))
    developing = set(rng.sample(indexes, round(spec.reps * spec.developing_share)))
    seasoned = [i for i in indexes if i not in developing]
    # Fading seasoned reps make the sharpest demo: their revenue hides the drop for weeks.
    fading_pool = rng.sample(seasoned, len(seasoned)) + rng.sample(sorted(developing), len(developing))
    fading = set(fading_pool[: spec.fading_reps])
    start_day = spec.start.date()

    profiles: list[RepProfile] = []
    for i in indexes:
        territory, lat, lon = territories[i % len(territories)]
        if i in developing:
            mode = ManagementMode.DEVELOPING
            hired_at = start_day - timedelta(days=rng.randint(45, 330))
            activity_rate, conversion = rng.uniform(1.05, 1.35), rng.uniform(0.86, 0.98)
            typical_deal = rng.uniform(14_000, 28_000)
        else:
            mode = ManagementMode.SEASONED
            hired_at = start_day - timedelta(days=rng.randint(2 * 365, 9 * 365))
            activity_rate, conversion = rng.uniform(0.75, 1.05), rng.uniform(0.98, 1.12)
            typical_deal = rng.uniform(20_000, 40_000)
        visits_per_day = rng.choice((0.3, 0.6, 1.0, 1.5, 2.0))
        profile = RepProfile(
            rep=Rep(
                rep_id=f"rep-{i + 1:03d}",
                name=_person_name(rng),
                team=teams[i % len(teams)],
                territory=territory,
                manager=managers[i % len(managers)],
                hired_at=hired_at,
                quota_monthly=Decimal(0),
                mode=mode,
            ),
            activity_rate=activity_rate,
            conversion=conversion,
            visits_per_day=visits_per_day,
            typical_deal_amount=typical_deal,
            territory_centre=(lat, lon),
            fading=i in fading,
        )
        # Quota: what the rep wins on a normal month, plus a stretch; managers round it to thousands.
        monthly_revenue = _expected_per_business_day(profile)["revenue"] * 21.7
        quota = _round_amount(monthly_revenue * 1.1, 1000)
        profiles.append(replace(profile, rep=profile.rep.model_copy(update={"quota_monthly": quota})))
    return SyntheticOrg(
        spec=spec,
        reps=[p.rep for p in profiles],
        profiles=tuple(profiles),
        fading_rep_ids=frozenset(p.rep.rep_id for p in profiles if p.fading),
    )


# --- Expectations (shared by quotas and progress estimates, so they follow the model) ------------------


def _stage_rate(base: float, conversion: float) -> float:
    return min(0.95, base * conversion)


def _stage_reach(profile: RepProfile) -> tuple[float, ...]:
    """Probability that a new deal of this rep reaches each of DEAL_STAGES."""
    reach = [1.0]
    for stage in DEAL_STAGES[1:]:
        reach.append(reach[-1] * _stage_rate(STAGE_ADVANCE_RATE[stage], profile.conversion))
    return tuple(reach)


def _expected_open_deals(profile: RepProfile, level: float) -> list[float]:
    """Expected open deals in each stage at any moment in the steady state (Little's law per stage)."""
    deals_per_day = _expected_per_business_day(profile, level)["deal_created"]
    return [
        deals_per_day * reach * sum(STAGE_DURATION_DAYS[stage]) / 2
        for stage, reach in zip(DEAL_STAGES, _stage_reach(profile), strict=True)
    ]


def _expected_per_business_day(profile: RepProfile, level: float = 1.0) -> dict[str, float]:
    """Expected events of each type per business day for a rep at ``level`` of normal activity.

    Deal-stage events are attributed to the day the deal was opened, which is right on average over a period
    much longer than a sales cycle.
    """
    c = profile.conversion
    calls = CALLS_PER_DAY * profile.activity_rate * level
    connected = calls * CALL_OUTCOMES[0][1]
    scheduled = connected * _stage_rate(MEETINGS_PER_CONNECTED_CALL, c)
    held = scheduled * MEETING_SHOW_RATE
    deals = held * _stage_rate(DEALS_PER_MEETING_HELD, c)
    _, reach_discovery, reach_proposal, reach_negotiation = _stage_reach(profile)
    won = reach_negotiation * _stage_rate(WIN_RATE_FROM_NEGOTIATION, c)
    product_size = sum(share * size for _, share, size in PRODUCTS)
    return {
        "call": calls,
        "email": OUTBOUND_EMAILS_PER_DAY * (1 + INBOUND_EMAIL_RATIO) * profile.activity_rate * level,
        "meeting_scheduled": scheduled,
        "meeting_held": held,
        "visit": profile.visits_per_day * level,
        "demo": deals * reach_discovery * DEMO_RATE_IN_DISCOVERY,
        "proposal_sent": deals * reach_proposal,
        "deal_created": deals,
        "deal_stage_changed": deals * (reach_discovery + reach_proposal + reach_negotiation),
        "deal_won": deals * won,
        "deal_lost": deals * (1 - won),
        # Not an event type: expected won amount, for quotas (won deals close at 85-100% of the estimate).
        "revenue": deals * won * profile.typical_deal_amount * product_size * 0.925,
    }


def _business_days(spec: OrgSpec) -> list[date]:
    first = spec.start.date()
    return [d for d in (first + timedelta(days=i) for i in range(spec.days)) if d.weekday() < 5]


def events_per_day_estimate(spec: OrgSpec) -> float:
    """Expected events per calendar day across the org, averaged over the period (for progress totals)."""
    org = generate_org(spec)
    business_days = _business_days(spec)
    fade_day = spec.fade_starts_at.date()
    total = 0.0
    for profile in org.profiles:
        if profile.fading:
            before = sum(1 for d in business_days if d < fade_day)
            effective_days = before + spec.fade_to * (len(business_days) - before)
        else:
            effective_days = len(business_days)
        per_day = _expected_per_business_day(profile, level=spec.activity_scale * (1 - DAY_OFF_RATE))
        total += effective_days * sum(v for k, v in per_day.items() if k != "revenue")
    return total / spec.days


def estimate_total_events(spec: OrgSpec) -> int:
    """About how many events :func:`iter_events` yields for ``spec`` (typically within a few percent)."""
    return round(events_per_day_estimate(spec) * spec.days)


# --- The event stream ---------------------------------------------------------------------------------

# An action runs when event time reaches its scheduled second; it may emit one event and schedule more.
_Action = Callable[[float], Event | None]


@dataclass(slots=True)
class _Deal:
    deal_id: str
    rep: _RepState
    account_id: str
    amount: Decimal
    product: str
    stage: str


@dataclass(slots=True)
class _RepState:
    profile: RepProfile
    rep_id: str
    # First calendar day (from the generator's origin) of the fade, or None for reps who do not fade.
    fade_day: int | None
    # "acct-007-" and "deal-007-" for rep-007.
    account_prefix: str
    deal_prefix: str
    deals_opened: int = 0


class _Generator:
    """Simulation state. Time is float seconds since midnight UTC of the start date (the origin)."""

    def __init__(self, org: SyntheticOrg) -> None:
        spec = org.spec
        self._spec = spec
        # Independent of the org's stream, so the same reps can be replayed with different activity.
        self._rng = random.Random(f"events:{spec.seed}")  # noqa: S311 - a simulation, not a secret
        # Field-visit details (how a check-out is sent) draw from their own stream, so they never
        # reshuffle the rest of the history.
        self._field_rng = random.Random(f"field:{spec.seed}")  # noqa: S311 - a simulation, not a secret
        # (rep_id, check-in time) -> (account, its position, check-out time) of planned visits.
        self._routes: dict[tuple[str, float], list[tuple[str, tuple[float, float], float]]] = {}
        self._origin = datetime.combine(spec.start.date(), datetime.min.time(), tzinfo=UTC)
        self._origin_weekday = self._origin.weekday()
        self._start_s = (spec.start - self._origin).total_seconds()
        self._end_s = self._start_s + spec.days * _DAY_S
        fade_day = math.floor((spec.fade_starts_at - self._origin).total_seconds() / _DAY_S)
        self._reps = [
            _RepState(
                profile=p,
                rep_id=p.rep.rep_id,
                fade_day=fade_day if p.fading else None,
                account_prefix=f"acct-{p.rep.rep_id.removeprefix('rep-')}-",
                deal_prefix=f"deal-{p.rep.rep_id.removeprefix('rep-')}-",
            )
            for p in org.profiles
        ]
        self._heap: list[tuple[float, int, _Action]] = []
        self._sequence = 0
        self._emitted = 0

    # -- time -----------------------------------------------------------------------------------------

    def _at(self, t: float) -> datetime:
        return self._origin + timedelta(seconds=t)

    def _is_business_day(self, day: int) -> bool:
        return (self._origin_weekday + day) % 7 < 5

    def _business_days_after(self, day: int, count: int) -> int:
        while count > 0:
            day += 1
            if self._is_business_day(day):
                count -= 1
        return day

    def _work_time(self, day: int) -> float:
        # Whole seconds: readable timestamps, and ordering is unaffected.
        return day * _DAY_S + _WORK_START_S + math.floor(self._rng.random() * _WORK_SPAN_S)

    def _soon_after(self, t: float, low_s: float, high_s: float) -> float:
        """A moment shortly after ``t``, moved to the next business morning if the working day is over."""
        later = math.floor(t + self._rng.uniform(low_s, high_s))
        day = int(t // _DAY_S)
        if later < day * _DAY_S + _WORK_END_S:
            return later
        next_day = self._business_days_after(day, 1)
        return next_day * _DAY_S + _WORK_START_S + math.floor(self._rng.uniform(0, 3600))

    def _business_days_later(self, t: float, days: int) -> float:
        """A random working moment ``days`` business days after the day of ``t``."""
        return self._work_time(self._business_days_after(int(t // _DAY_S), days))

    # -- scheduling -----------------------------------------------------------------------------------

    def _schedule(self, t: float, action: _Action) -> None:
        # The sequence number breaks ties in time deterministically and keeps actions from being compared.
        self._sequence += 1
        heapq.heappush(self._heap, (t, self._sequence, action))

    def _next_event_id(self) -> str:
        self._emitted += 1
        return f"{self._spec.seed}-{self._emitted}"

    def _effort(self, rep: _RepState, day: int) -> float:
        """How much of their normal activity a rep puts in on ``day`` (1.0 for everyone who does not fade)."""
        if rep.fade_day is None or day < rep.fade_day:
            return 1.0
        fade_to = self._spec.fade_to
        progress = min(1.0, (day - rep.fade_day + 1) / FADE_RAMP_DAYS)
        return 1.0 - (1.0 - fade_to) * progress

    def _follow_through(self, rep: _RepState, t: float) -> float:
        # A rep who stops working also lets open deals slip, but less than their prospecting.
        return 0.8 + 0.2 * self._effort(rep, int(t // _DAY_S))

    # -- the day's plan -------------------------------------------------------------------------------

    def _plan_day(self, rep: _RepState, day: int) -> None:
        rng = self._rng
        if rng.random() < DAY_OFF_RATE:
            return
        profile = rep.profile
        level = (
            self._effort(rep, day)
            * self._spec.activity_scale
            * rng.uniform(1 - DAY_TO_DAY_SPREAD, 1 + DAY_TO_DAY_SPREAD)
        )
        activity = profile.activity_rate * level
        plan: list[tuple[int, _Action]] = [
            (_poisson(rng, CALLS_PER_DAY * activity), partial(self._call, rep)),
            (
                _poisson(rng, OUTBOUND_EMAILS_PER_DAY * activity),
                partial(self._email, rep, EmailDirection.OUTBOUND),
            ),
            (
                _poisson(rng, OUTBOUND_EMAILS_PER_DAY * INBOUND_EMAIL_RATIO * activity),
                partial(self._email, rep, EmailDirection.INBOUND),
            ),
            (_poisson(rng, profile.visits_per_day * level), partial(self._visit, rep)),
        ]
        visits = plan[-1][1]
        for count, action in plan:
            times = []
            for _ in range(count):
                t = self._work_time(day)
                if t >= self._start_s:  # the first day may start mid-day
                    self._schedule(t, action)
                    times.append(t)
            if action is visits and times:
                self._plan_route(rep, day, sorted(times))

    def _seed_pipeline(self) -> None:
        """Start from a going concern: meetings already booked and deals already open, as in a real CRM.

        Without this the first sales cycle of the period would have no wins and a thin pipeline, which
        every KPI and alert would read as a collapse (or a recovery) that never happened.
        """
        rng = self._rng
        day = int(self._start_s // _DAY_S)
        while not self._is_business_day(day) or (day * _DAY_S + _WORK_END_S) <= self._start_s:
            day += 1
        morning = max(self._start_s, day * _DAY_S + _WORK_START_S)
        level = self._spec.activity_scale
        lead_low, lead_high = MEETING_LEAD_DAYS
        for rep in self._reps:
            booked_per_day = _expected_per_business_day(rep.profile, level)["meeting_scheduled"]
            # A meeting lands j business days into the period if it was booked before the start with a
            # lead time longer than j; with uniform lead times that share falls linearly.
            for offset in range(lead_high):
                share = min(1.0, (lead_high - offset) / (lead_high - lead_low + 1))
                meeting_day = self._business_days_after(day, offset)
                for _ in range(_poisson(rng, booked_per_day * share)):
                    meeting_at = self._work_time(meeting_day)
                    if meeting_at >= self._start_s:
                        self._schedule(meeting_at, partial(self._prospect_meeting, rep, self._account(rep)))
            # The CRM's open deals, each partway through its stage; they arrive as an import on the first
            # morning (deal_created in their current stage), so every later event has its deal.
            for stage, expected in zip(DEAL_STAGES, _expected_open_deals(rep.profile, level), strict=True):
                for _ in range(_poisson(rng, expected)):
                    deal = self._new_deal(rep, self._account(rep), stage)
                    days_left = rng.randint(1, STAGE_DURATION_DAYS[stage][1])
                    imported_at = morning + math.floor(rng.uniform(0, 3600))
                    self._schedule(imported_at, partial(self._deal_created, deal, days_left))

    def run(self) -> Iterator[Event]:
        first_day = int(self._start_s // _DAY_S)
        last_day = int((self._end_s - 1) // _DAY_S)
        heap = self._heap
        self._seed_pipeline()
        for day in range(first_day, last_day + 1):
            if self._is_business_day(day):
                for rep in self._reps:
                    self._plan_day(rep, day)
            day_end = min((day + 1) * _DAY_S, self._end_s)
            while heap and heap[0][0] < day_end:
                t, _, action = heapq.heappop(heap)
                event = action(t)
                if event is not None:
                    yield event

    # -- actions --------------------------------------------------------------------------------------

    def _account(self, rep: _RepState) -> str:
        return rep.account_prefix + _ACCOUNT_SUFFIXES[int(self._rng.random() * ACCOUNTS_PER_REP)]

    def _call(self, rep: _RepState, t: float) -> Event:
        rng = self._rng
        draw = rng.random()
        outcome = CALL_OUTCOMES[-1][0]
        for candidate, probability in CALL_OUTCOMES:
            if draw < probability:
                outcome = candidate
                break
            draw -= probability
        if outcome is CallOutcome.CONNECTED:
            # Conversations are long-tailed: mostly a few minutes, now and then most of an hour.
            duration = round(min(3600.0, rng.lognormvariate(_CONNECTED_CALL_LOG_MEDIAN_S, 0.6)), 1)
        else:
            duration = round(rng.uniform(*_UNCONNECTED_CALL_DURATION_S[outcome]), 1)
        account_id = self._account(rep)
        if outcome is CallOutcome.CONNECTED and rng.random() < _stage_rate(
            MEETINGS_PER_CONNECTED_CALL, rep.profile.conversion
        ):
            booked_at = self._soon_after(t + duration, 30, 600)
            self._schedule(booked_at, partial(self._meeting_scheduled, rep, account_id))
        return CallEvent(
            type="call",
            event_id=self._next_event_id(),
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=account_id,
            outcome=outcome,
            duration_s=duration,
        )

    def _email(self, rep: _RepState, direction: EmailDirection, t: float) -> Event:
        return EmailEvent(
            type="email",
            event_id=self._next_event_id(),
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=self._account(rep),
            direction=direction,
        )

    def _plan_route(self, rep: _RepState, day: int, times: list[float]) -> None:
        """The day's visits of a rep as a route: from account to account at driving speed, each
        visit ending in time to drive to the next. Drawn from the field stream only."""
        field = self._field_rng
        stops: list[tuple[str, tuple[float, float]]] = []
        for n, t in enumerate(times):
            if field.random() < KEY_ACCOUNT_VISIT_SHARE:
                suffix = _ACCOUNT_SUFFIXES[field.randrange(KEY_ACCOUNTS_PER_REP)]
            else:
                suffix = _ACCOUNT_SUFFIXES[field.randrange(KEY_ACCOUNTS_PER_REP, ACCOUNTS_PER_REP)]
            account_id = rep.account_prefix + suffix
            position = account_position(account_id, rep.profile.territory_centre)
            if stops:
                # Too far to drive since the last check-in: the rep visits a neighbour instead.
                reachable_km = (t - times[n - 1]) / 3600 * FIELD_DRIVING_KMH
                if haversine_km(stops[-1][1], position) > reachable_km:
                    account_id, position = self._route_neighbour(rep, stops[-1][1], reachable_km)
            stops.append((account_id, position))
        for n, (t, (account_id, position)) in enumerate(zip(times, stops, strict=True)):
            leaves_at = t + 60 * field.randint(20, 90)
            if n + 1 < len(times):
                drive_s = haversine_km(position, stops[n + 1][1]) / FIELD_DRIVING_KMH * 3600
                leaves_at = max(t, min(leaves_at, times[n + 1] - drive_s))
            # A list: two visits of a rep may be drawn for the same second.
            self._routes.setdefault((rep.rep_id, t), []).append((account_id, position, math.floor(leaves_at)))

    def _route_neighbour(
        self, rep: _RepState, here: tuple[float, float], reachable_km: float
    ) -> tuple[str, tuple[float, float]]:
        candidates = [
            (
                haversine_km(
                    here, account_position(rep.account_prefix + suffix, rep.profile.territory_centre)
                ),
                suffix,
            )
            for suffix in _ACCOUNT_SUFFIXES
        ]
        near = [suffix for distance, suffix in candidates if distance <= reachable_km]
        suffix = self._field_rng.choice(near) if near else min(candidates)[1]
        account_id = rep.account_prefix + suffix
        return account_id, account_position(account_id, rep.profile.territory_centre)

    def _visit(self, rep: _RepState, t: float) -> Event:
        rng = self._rng
        # These draws of the main stream are kept (their values unused) so that the rest of the
        # history is the same as before visits were routed.
        accuracy = rng.uniform(4, 40) if rng.random() < 0.9 else rng.uniform(100, 800)
        self._account(rep)
        rng.gauss(0, 0.12)
        rng.gauss(0, 0.15)
        rng.randint(20, 90)
        field = self._field_rng
        planned = self._routes[(rep.rep_id, t)]
        account_id, (lat, lon), leaves_at = planned.pop(0)
        if not planned:
            del self._routes[(rep.rep_id, t)]
        event_id = self._next_event_id()
        # Most check-ins are GPS-accurate and on site; a few are well off the site, a few have no fix.
        draw = field.random()
        position: tuple[float, float] | None
        if draw < VISIT_WITHOUT_GPS_RATE:
            position = None
        elif draw < VISIT_WITHOUT_GPS_RATE + VISIT_OUT_OF_RANGE_RATE:
            position = _offset(lat, lon, field.uniform(400, 3000), field.uniform(0, 360))
        else:
            position = _offset(lat, lon, abs(field.gauss(0, 15)), field.uniform(0, 360))
        # Half the check-outs come as their own event, as a mobile app sends them on leaving (those
        # after working hours stay on the visit, which keeps every event inside them).
        work_ends = int(t // _DAY_S) * _DAY_S + _WORK_END_S
        separate_check_out = field.random() < 0.5 and leaves_at < min(work_ends, self._end_s)
        if separate_check_out:
            self._schedule(leaves_at, partial(self._check_out, rep, event_id, account_id))
        return VisitEvent(
            type="visit",
            event_id=event_id,
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=account_id,
            lat=None if position is None else position[0],
            lon=None if position is None else position[1],
            accuracy_m=None if position is None else round(min(accuracy, 60.0), 1),
            check_out_at=None if separate_check_out else self._at(leaves_at),
        )

    def _check_out(self, rep: _RepState, visit_id: str, account_id: str, t: float) -> Event:
        return VisitCheckOutEvent(
            type="visit_check_out",
            event_id=self._next_event_id(),
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=account_id,
            visit_id=visit_id,
        )

    def _meeting_scheduled(self, rep: _RepState, account_id: str, t: float) -> Event:
        meeting_at = self._business_days_later(t, self._rng.randint(*MEETING_LEAD_DAYS))
        self._schedule(meeting_at, partial(self._prospect_meeting, rep, account_id))
        return MeetingScheduledEvent(
            type="meeting_scheduled",
            event_id=self._next_event_id(),
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=account_id,
            scheduled_for=self._at(meeting_at),
        )

    def _prospect_meeting(self, rep: _RepState, account_id: str, t: float) -> Event | None:
        rng = self._rng
        if rng.random() >= MEETING_SHOW_RATE:
            return None  # a no-show leaves no trace but the missing meeting
        if rng.random() < _stage_rate(DEALS_PER_MEETING_HELD, rep.profile.conversion):
            deal = self._new_deal(rep, account_id)
            days_in_stage = rng.randint(*STAGE_DURATION_DAYS[deal.stage])
            created_at = self._soon_after(t, 45 * 60, 180 * 60)
            self._schedule(created_at, partial(self._deal_created, deal, days_in_stage))
        return MeetingHeldEvent(
            type="meeting_held",
            event_id=self._next_event_id(),
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=account_id,
        )

    def _new_deal(self, rep: _RepState, account_id: str, stage: str = DEAL_STAGES[0]) -> _Deal:
        rng = self._rng
        draw = rng.random()
        product, size = PRODUCTS[-1][0], PRODUCTS[-1][2]
        for name, share, relative_size in PRODUCTS:
            if draw < share:
                product, size = name, relative_size
                break
            draw -= share
        estimate = rep.profile.typical_deal_amount * size * rng.lognormvariate(0, 0.35)
        rep.deals_opened += 1
        return _Deal(
            deal_id=f"{rep.deal_prefix}{rep.deals_opened:04d}",
            rep=rep,
            account_id=account_id,
            amount=_round_amount(estimate, 100),
            product=product,
            stage=stage,
        )

    def _next_step(self, deal: _Deal) -> _Action:
        following = DEAL_STAGES.index(deal.stage) + 1
        if following < len(DEAL_STAGES):
            return partial(self._advance, deal, DEAL_STAGES[following])
        return partial(self._close, deal)

    def _deal_created(self, deal: _Deal, days_in_stage: int, t: float) -> Event:
        self._schedule(self._business_days_later(t, days_in_stage), self._next_step(deal))
        return DealCreatedEvent(
            type="deal_created",
            event_id=self._next_event_id(),
            rep_id=deal.rep.rep_id,
            occurred_at=self._at(t),
            account_id=deal.account_id,
            deal_id=deal.deal_id,
            amount=deal.amount,
            stage=deal.stage,
            product=deal.product,
        )

    def _advance(self, deal: _Deal, stage: str, t: float) -> Event:
        rep = deal.rep
        rate = _stage_rate(STAGE_ADVANCE_RATE[stage], rep.profile.conversion) * self._follow_through(rep, t)
        if self._rng.random() >= rate:
            return self._lost(deal, t)
        deal.stage = stage
        days_in_stage = self._rng.randint(*STAGE_DURATION_DAYS[stage])
        self._schedule(self._business_days_later(t, days_in_stage), self._next_step(deal))
        if stage == "discovery" and self._rng.random() < DEMO_RATE_IN_DISCOVERY:
            self._schedule(self._business_days_later(t, self._rng.randint(1, 3)), partial(self._demo, deal))
        if stage == "proposal":
            # The proposal goes out first; the CRM stage follows when the rep updates it.
            self._schedule(self._soon_after(t, 60, 1800), partial(self._stage_changed, deal, stage))
            return ProposalSentEvent(
                type="proposal_sent",
                event_id=self._next_event_id(),
                rep_id=rep.rep_id,
                occurred_at=self._at(t),
                account_id=deal.account_id,
                deal_id=deal.deal_id,
                amount=deal.amount,
            )
        return self._stage_changed(deal, stage, t)

    def _stage_changed(self, deal: _Deal, stage: str, t: float) -> Event:
        return DealStageChangedEvent(
            type="deal_stage_changed",
            event_id=self._next_event_id(),
            rep_id=deal.rep.rep_id,
            occurred_at=self._at(t),
            account_id=deal.account_id,
            deal_id=deal.deal_id,
            stage=stage,
        )

    def _demo(self, deal: _Deal, t: float) -> Event:
        return DemoEvent(
            type="demo",
            event_id=self._next_event_id(),
            rep_id=deal.rep.rep_id,
            occurred_at=self._at(t),
            account_id=deal.account_id,
        )

    def _close(self, deal: _Deal, t: float) -> Event:
        rng = self._rng
        rep = deal.rep
        rate = _stage_rate(WIN_RATE_FROM_NEGOTIATION, rep.profile.conversion) * self._follow_through(rep, t)
        if rng.random() >= rate:
            return self._lost(deal, t)
        # Closing usually costs a discount.
        amount = _round_amount(float(deal.amount) * rng.uniform(0.85, 1.0), 100)
        return DealWonEvent(
            type="deal_won",
            event_id=self._next_event_id(),
            rep_id=rep.rep_id,
            occurred_at=self._at(t),
            account_id=deal.account_id,
            deal_id=deal.deal_id,
            amount=amount,
        )

    def _lost(self, deal: _Deal, t: float) -> Event:
        return DealLostEvent(
            type="deal_lost",
            event_id=self._next_event_id(),
            rep_id=deal.rep.rep_id,
            occurred_at=self._at(t),
            account_id=deal.account_id,
            deal_id=deal.deal_id,
            reason=self._rng.choice(LOSS_REASONS[deal.stage]),
        )


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        # The normal approximation is close enough here and costs one draw instead of ~mean draws.
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    # Knuth's method: multiply uniforms until the product drops below e^-mean.
    limit = math.exp(-mean)
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def iter_events(org: SyntheticOrg, spec: OrgSpec | None = None) -> Iterator[Event]:
    """Every event of ``org`` over its spec's period, in event-time order, with ids ``f"{seed}-{n}"``.

    ``spec`` may be passed for symmetry with :func:`generate_org`; it must be the spec the org was made from.
    """
    if spec is not None and spec != org.spec:
        raise ValueError("iter_events got a spec that differs from the one the org was generated from")
    return _Generator(org).run()
