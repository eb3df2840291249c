"""The synthetic org: deterministic, valid on the wire, causal, and with fading reps that really fade."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from itertools import islice

import pytest

from schemas.events import (
    ACTIVITY_TYPES,
    DEAL_TYPES,
    EVENT_TYPES,
    SALES_EVENT_ADAPTER,
    CallEvent,
    DealCreatedEvent,
    DealLostEvent,
    DealStageChangedEvent,
    DealWonEvent,
    EmailEvent,
    MeetingScheduledEvent,
    ProposalSentEvent,
    VisitCheckOutEvent,
    VisitEvent,
)
from schemas.reps import ManagementMode, Rep
from schemas.wire import Event, MessageOrigin, decode_message, encode_batch
from streams.synthetic import (
    DEAL_STAGES,
    OrgSpec,
    SyntheticOrg,
    estimate_total_events,
    events_per_day_estimate,
    generate_accounts,
    generate_org,
    iter_events,
)
from streams.visits.book import VisitBook
from streams.visits.geo import VisitStatus

NOW = datetime(2030, 1, 1, tzinfo=UTC)
# Long enough for a full sales cycle after the fade, with enough fading reps to see their wins drop.
SPEC = OrgSpec(reps=16, teams=4, territories=5, days=150, seed=2, fading_reps=6)


@pytest.fixture(scope="module")
def org() -> SyntheticOrg:
    return generate_org(SPEC)


@pytest.fixture(scope="module")
def events(org: SyntheticOrg) -> list[Event]:
    return list(iter_events(org, SPEC))


def _small(seed: int = 3) -> OrgSpec:
    return OrgSpec(reps=5, teams=2, territories=2, days=21, seed=seed)


# --- determinism and order ----------------------------------------------------------------------------


def test_the_same_spec_gives_identical_output() -> None:
    spec = _small()
    first_org, second_org = generate_org(spec), generate_org(spec)
    assert first_org == second_org
    assert list(iter_events(first_org)) == list(iter_events(second_org))


def test_another_seed_gives_another_org_and_stream() -> None:
    one, other = generate_org(_small(1)), generate_org(_small(2))
    assert [r.name for r in one.reps] != [r.name for r in other.reps]
    assert list(islice(iter_events(one), 50)) != list(islice(iter_events(other), 50))


def test_event_ids_are_seed_and_sequence(events: list[Event]) -> None:
    assert [e.event_id for e in events] == [f"{SPEC.seed}-{n}" for n in range(1, len(events) + 1)]


def test_events_are_in_event_time_order_inside_the_period(events: list[Event]) -> None:
    times = [e.occurred_at for e in events]
    assert times == sorted(times)
    assert SPEC.start <= times[0]
    assert times[-1] < SPEC.end


def test_activity_happens_on_weekdays_in_working_hours(events: list[Event]) -> None:
    for event in events:
        assert event.occurred_at.tzinfo is UTC
        assert event.occurred_at.weekday() < 5, event
        assert 8 <= event.occurred_at.hour < 18, event


def test_a_start_in_the_middle_of_a_day_is_respected() -> None:
    spec = OrgSpec(reps=3, days=10, start=datetime(2024, 3, 6, 13, 30, tzinfo=UTC), seed=5)
    events = list(iter_events(generate_org(spec)))
    assert events
    assert all(spec.start <= e.occurred_at < spec.end for e in events)
    assert [e.occurred_at for e in events] == sorted(e.occurred_at for e in events)


def test_a_mismatched_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="differs"):
        iter_events(generate_org(_small(1)), _small(2))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"reps": 0}, "reps must be at least 1"),
        ({"days": 0}, "days must be at least 1"),
        ({"start": datetime(2024, 1, 1)}, "timezone-aware UTC"),  # noqa: DTZ001 - the point of the test
        ({"start": datetime(2024, 1, 1, tzinfo=timezone(timedelta(hours=2)))}, "timezone-aware UTC"),
        ({"start": datetime(1999, 1, 1, tzinfo=UTC)}, "outside the accepted"),
        ({"fading_reps": 21}, "fading_reps"),
        ({"fade_at": 1.0}, "fade_at"),
        ({"fade_to": 1.5}, "fade_to"),
        ({"activity_scale": 0}, "activity_scale"),
    ],
)
def test_a_bad_spec_says_what_is_wrong(changes: dict[str, object], message: str) -> None:
    base = {"reps": 20, "days": 30}
    with pytest.raises(ValueError, match=message):
        OrgSpec(**{**base, **changes})  # type: ignore[arg-type]


# --- validity on the wire -----------------------------------------------------------------------------


def test_every_type_is_generated(events: list[Event]) -> None:
    assert set(Counter(e.type for e in events)) == set(EVENT_TYPES)


def test_every_event_validates_through_the_contract(events: list[Event]) -> None:
    for event in events:
        assert SALES_EVENT_ADAPTER.validate_python(event.model_dump(mode="json")) == event


def test_every_event_round_trips_through_the_wire_format(events: list[Event]) -> None:
    by_rep: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        by_rep[event.rep_id].append(event)
    for rep_id, rep_events in by_rep.items():
        for start in range(0, len(rep_events), 200):
            batch = rep_events[start : start + 200]
            decoded = decode_message(rep_id.encode(), encode_batch(batch), MessageOrigin("test"), NOW)
            assert decoded.dead_letters == []
            assert decoded.events == batch


def test_events_belong_to_the_org(org: SyntheticOrg, events: list[Event]) -> None:
    assert {e.rep_id for e in events} == {r.rep_id for r in org.reps}


def test_fields_look_like_real_activity(org: SyntheticOrg, events: list[Event]) -> None:
    centres = {p.rep.rep_id: p.territory_centre for p in org.profiles}
    check_outs = {e.visit_id: e for e in events if isinstance(e, VisitCheckOutEvent)}
    for event in events:
        assert event.account_id is not None
        if isinstance(event, CallEvent):
            assert event.outcome is not None
            assert event.duration_s is not None
            assert 0 < event.duration_s <= 3600
        elif isinstance(event, EmailEvent):
            assert event.direction is not None
        elif isinstance(event, MeetingScheduledEvent):
            assert event.scheduled_for is not None
            assert event.scheduled_for > event.occurred_at
        elif isinstance(event, VisitEvent):
            # Every visit is checked out of: on the visit itself or by a check-out event naming it.
            separate = check_outs.pop(event.event_id, None)
            assert (event.check_out_at is None) == (separate is not None)
            left_at = event.check_out_at or separate.occurred_at  # type: ignore[union-attr]
            # At most 90 minutes on site, less when the next visit of the route is close.
            assert timedelta(0) <= left_at - event.occurred_at <= timedelta(minutes=90)
            if event.lat is None:  # a check-in without a GPS fix
                assert event.lon is None and event.accuracy_m is None
                continue
            lat, lon = centres[event.rep_id]
            assert abs(event.lat - lat) < 1.0
            assert abs(event.lon - lon) < 1.0
        elif isinstance(event, ProposalSentEvent | DealWonEvent):
            assert event.amount is not None
            assert event.amount > 0
            assert event.amount == event.amount.quantize(Decimal("0.01"))
    assert check_outs == {}  # no check-out without its visit


# --- the org --------------------------------------------------------------------------------------------


def test_the_org_has_the_shape_asked_for(org: SyntheticOrg) -> None:
    assert len(org.reps) == SPEC.reps
    assert len({r.rep_id for r in org.reps}) == SPEC.reps
    assert len({r.team for r in org.reps}) == SPEC.teams
    assert len({r.territory for r in org.reps}) == SPEC.territories
    assert all(r.team.startswith("Team ") for r in org.reps)
    assert len(org.fading_rep_ids) == SPEC.fading_reps
    assert {p.rep.rep_id for p in org.profiles if p.fading} == org.fading_rep_ids
    assert [p.rep for p in org.profiles] == org.reps


def test_reps_are_valid_records_with_managers_tenure_and_quota(org: SyntheticOrg) -> None:
    for rep in org.reps:
        assert Rep.model_validate_json(rep.model_dump_json()) == rep
        assert rep.manager
        assert rep.hired_at is not None
        assert rep.hired_at < SPEC.start.date()
        assert rep.quota_monthly > 0
        assert rep.quota_monthly % 1000 == 0
    # One manager per team.
    assert all(
        len({r.manager for r in org.reps if r.team == team}) == 1 for team in {r.team for r in org.reps}
    )
    assert {r.mode for r in org.reps} == {ManagementMode.DEVELOPING, ManagementMode.SEASONED}


def test_developing_reps_are_busier_but_win_less(org: SyntheticOrg, events: list[Event]) -> None:
    modes = {r.rep_id: r.mode for r in org.reps}
    calls: Counter[ManagementMode] = Counter()
    created: Counter[ManagementMode] = Counter()
    won: Counter[ManagementMode] = Counter()
    for event in events:
        if event.rep_id in org.fading_rep_ids:
            continue
        mode = modes[event.rep_id]
        calls[mode] += event.type == "call"
        created[mode] += event.type == "deal_created"
        won[mode] += event.type == "deal_won"
    heads = Counter(modes[r] for r in modes if r not in org.fading_rep_ids)
    developing, seasoned = ManagementMode.DEVELOPING, ManagementMode.SEASONED
    assert calls[developing] / heads[developing] > calls[seasoned] / heads[seasoned]
    assert won[developing] / created[developing] < won[seasoned] / created[seasoned]


# --- fading reps ------------------------------------------------------------------------------------


def _share_of_period(event: Event) -> float:
    return (event.occurred_at - SPEC.start) / (SPEC.end - SPEC.start)


def _activity_ratio_last_to_first(events: list[Event], rep_id: str) -> float:
    first = sum(
        1 for e in events if e.rep_id == rep_id and e.type in ACTIVITY_TYPES and _share_of_period(e) < 0.3
    )
    last = sum(
        1 for e in events if e.rep_id == rep_id and e.type in ACTIVITY_TYPES and _share_of_period(e) >= 0.7
    )
    return last / first


def test_fading_reps_really_fade_and_the_others_do_not(org: SyntheticOrg, events: list[Event]) -> None:
    for rep in org.reps:
        ratio = _activity_ratio_last_to_first(events, rep.rep_id)
        if rep.rep_id in org.fading_rep_ids:
            assert ratio < 0.4, (rep.rep_id, ratio)
        else:
            assert 0.8 < ratio < 1.25, (rep.rep_id, ratio)


def test_fading_reps_wins_fall_weeks_after_their_activity(org: SyntheticOrg, events: list[Event]) -> None:
    fade = SPEC.fade_starts_at

    def per_day(kind: str, start: datetime, end: datetime) -> float:
        count = sum(
            1
            for e in events
            if e.rep_id in org.fading_rep_ids and e.type == kind and start <= e.occurred_at < end
        )
        return count / (end - start).days

    # Skip the first weeks: deals already open at the start arrive as one import on the first morning.
    before = (SPEC.start + timedelta(days=28), fade)
    # Prospecting collapses within two weeks (meetings booked before the fade still take place)...
    assert per_day("deal_created", fade + timedelta(days=14), fade + timedelta(days=35)) < 0.4 * per_day(
        "deal_created", *before
    )
    # ...while the open pipeline keeps closing for a while, and only a sales cycle later do wins dry up.
    assert per_day("deal_won", fade, fade + timedelta(days=21)) > 0.5 * per_day("deal_won", *before)
    assert per_day("deal_won", fade + timedelta(days=42), SPEC.end) < 0.4 * per_day("deal_won", *before)


# --- the deal funnel --------------------------------------------------------------------------------


def test_every_deal_follows_the_funnel(events: list[Event]) -> None:
    deals: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        if event.type in DEAL_TYPES or isinstance(event, ProposalSentEvent):
            deal_id = getattr(event, "deal_id", None)
            assert deal_id is not None
            deals[deal_id].append(event)
    assert deals
    for deal_id, history in deals.items():
        created, *rest = history
        # Created first, exactly once, and everything else for the deal is by the same rep, later.
        assert isinstance(created, DealCreatedEvent), deal_id
        assert not any(isinstance(e, DealCreatedEvent) for e in rest), deal_id
        assert all(e.rep_id == created.rep_id and e.occurred_at > created.occurred_at for e in rest), deal_id
        assert created.stage in DEAL_STAGES
        # Stages only move forward.
        stages = [created.stage] + [e.stage for e in rest if isinstance(e, DealStageChangedEvent)]
        positions = [DEAL_STAGES.index(s) for s in stages]
        assert positions == sorted(set(positions)), (deal_id, stages)
        # At most one close, and nothing after it.
        closes = [i for i, e in enumerate(rest) if isinstance(e, DealWonEvent | DealLostEvent)]
        assert len(closes) <= 1, deal_id
        if closes:
            assert closes[0] == len(rest) - 1, deal_id
            if isinstance(rest[-1], DealWonEvent):
                assert stages[-1] == DEAL_STAGES[-1], (deal_id, stages)
                assert rest[-1].amount > 0


def test_fewer_meetings_mean_fewer_deals(org: SyntheticOrg, events: list[Event]) -> None:
    # The funnel is causal: over the period, deals opened track meetings held rep by rep.
    held = Counter(e.rep_id for e in events if e.type == "meeting_held")
    created = Counter(e.rep_id for e in events if e.type == "deal_created")
    busiest = max(org.reps, key=lambda r: held[r.rep_id]).rep_id
    quietest = min(org.reps, key=lambda r: held[r.rep_id]).rep_id
    assert created[busiest] > created[quietest]


# --- estimates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        OrgSpec(),
        OrgSpec(reps=7, teams=2, territories=3, days=45, seed=99, fading_reps=3),
        OrgSpec(reps=4, days=30, seed=1, activity_scale=3.0, start=datetime(2025, 6, 4, 9, tzinfo=UTC)),
    ],
)
def test_the_estimate_is_close_to_what_is_generated(spec: OrgSpec) -> None:
    actual = sum(1 for _ in iter_events(generate_org(spec)))
    assert abs(estimate_total_events(spec) - actual) / actual < 0.1
    assert events_per_day_estimate(spec) == pytest.approx(estimate_total_events(spec) / spec.days, rel=0.01)


def test_visits_follow_routes_to_the_reps_accounts(org: SyntheticOrg, events: list[Event]) -> None:
    accounts = {a.account_id: a for a in generate_accounts(org)}
    books: dict[str, VisitBook] = {}
    for event in events:
        if isinstance(event, VisitEvent | VisitCheckOutEvent):
            assert event.account_id in accounts
            assert accounts[event.account_id].owner_rep_id == event.rep_id
            books.setdefault(event.rep_id, VisitBook(event.rep_id)).apply([event])
    records = [r for book in books.values() for r in book.records(accounts).values()]
    statuses = Counter(r.status for r in records)
    total = len(records)
    assert total > 500
    assert statuses[VisitStatus.VERIFIED] / total > 0.85
    assert 0.01 < statuses[VisitStatus.OUT_OF_RANGE] / total < 0.08
    assert 0.01 < statuses[VisitStatus.UNLOCATED] / total < 0.08
    # A route: one visit after the other, reachable by car.
    assert not any(r.overlaps or r.check_in_missing for r in records)
    assert sum(r.impossible_travel for r in records) / total < 0.01
    key_share = sum(accounts[r.account_id or ""].segment == "key" for r in records) / total
    assert 0.3 < key_share < 0.5
