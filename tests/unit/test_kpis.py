"""KPI core: deal states and KPI totals against brute-force recomputations over the same events."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import DealCreatedEvent, DealLostEvent, DealStageChangedEvent, DealWonEvent
from schemas.reps import UNASSIGNED, Rep
from streams.kpi.deals import DealBook, DealEvent, DealStatus, stage_ranks
from streams.kpi.metrics import (
    DailyCount,
    KpiTotals,
    Window,
    compute_rep_kpis,
    data_window,
    prorated_quota,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
STAGES = ("qualification", "discovery", "proposal", "negotiation")
RANKS = stage_ranks(STAGES)
REPS = {
    "r1": Rep(rep_id="r1", name="One", team="North", territory="EMEA", quota_monthly=Decimal(30000)),
    "r2": Rep(rep_id="r2", name="Two", team="North", territory="APAC", quota_monthly=Decimal(20000)),
    "r3": Rep(rep_id="r3", name="Three", team="South", territory="EMEA"),
}


def created(n: int, deal: str, hours: int, rep: str = "r1", **kw: Any) -> DealCreatedEvent:
    return DealCreatedEvent(
        event_id=f"e{n}",
        type="deal_created",
        rep_id=rep,
        deal_id=deal,
        occurred_at=T0 + timedelta(hours=hours),
        **kw,
    )


def moved(n: int, deal: str, hours: int, stage: str, rep: str = "r1") -> DealStageChangedEvent:
    return DealStageChangedEvent(
        event_id=f"e{n}", type="deal_stage_changed", rep_id=rep, deal_id=deal, stage=stage,
        occurred_at=T0 + timedelta(hours=hours),
    )  # fmt: skip


def won(n: int, deal: str, hours: int, amount: str, rep: str = "r1") -> DealWonEvent:
    return DealWonEvent(
        event_id=f"e{n}", type="deal_won", rep_id=rep, deal_id=deal, amount=Decimal(amount),
        occurred_at=T0 + timedelta(hours=hours),
    )  # fmt: skip


def lost(n: int, deal: str, hours: int, rep: str = "r1") -> DealLostEvent:
    return DealLostEvent(
        event_id=f"e{n}", type="deal_lost", rep_id=rep, deal_id=deal, occurred_at=T0 + timedelta(hours=hours)
    )


# -- strategies ----------------------------------------------------------------------------------

deal_event_specs = st.lists(
    st.tuples(
        st.integers(0, 60),  # event number: small, so the same id recurs (a redelivery)
        st.sampled_from(["created", "moved", "won", "lost"]),
        st.sampled_from(["D1", "D2", "D3", "D4", "D5"]),
        st.integers(0, 24 * 60),  # hour within two months
        st.sampled_from([*STAGES, "Negotiation", "on hold"]),
        st.integers(0, 50_000),
        st.sampled_from(["r1", "r2", "r3", "r9"]),
    ),
    max_size=60,
)


def build_deal_events(specs: list[tuple[int, str, str, int, str, int, str]]) -> list[DealEvent]:
    first: dict[int, DealEvent] = {}
    for n, kind, deal, hours, stage, amount, rep in specs:
        if n in first:
            continue  # the same id always carries the same content, as a redelivery would
        if kind == "created":
            first[n] = created(n, deal, hours, rep, stage=stage, amount=Decimal(amount))
        elif kind == "moved":
            first[n] = moved(n, deal, hours, stage, rep)
        elif kind == "won":
            first[n] = won(n, deal, hours, str(amount), rep)
        else:
            first[n] = lost(n, deal, hours, rep)
    return [first[n] for n, *_ in specs]


def deal_summary(book: DealBook) -> dict[str, tuple[Any, ...]]:
    return {
        d.deal_id: (
            d.rep_id,
            d.opened_at,
            d.status,
            d.stage,
            d.closed_at,
            d.amount,
            d.advanced_at,
            d.cycle_days,
        )
        for d in book.deals.values()
    }


@settings(max_examples=300, deadline=None)
@given(deal_event_specs, st.randoms(use_true_random=False), st.integers(1, 8))
def test_deal_state_does_not_depend_on_order_batching_or_redelivery(
    specs, rnd: random.Random, batch: int
) -> None:
    events = build_deal_events(specs)
    in_order = DealBook(RANKS)
    in_order.apply(sorted(events, key=lambda e: (e.occurred_at, e.event_id)))
    shuffled = list(events) + rnd.sample(events, len(events) // 2)  # with redeliveries
    rnd.shuffle(shuffled)
    batched = DealBook(RANKS)
    for i in range(0, len(shuffled), batch):
        batched.apply(shuffled[i : i + batch])
    assert deal_summary(batched) == deal_summary(in_order)


def brute_force_deal(events: list[DealEvent]) -> dict[str, Any]:
    """A deal's figures by definition, straight from its distinct events."""
    distinct = sorted({e.event_id: e for e in events}.values(), key=lambda e: (e.occurred_at, e.event_id))
    closes = [e for e in distinct if e.type in ("deal_won", "deal_lost")]
    creations = [e for e in distinct if e.type == "deal_created"]
    opened = creations[0].occurred_at if creations else distinct[0].occurred_at
    last_close = closes[-1] if closes else None
    status = "open" if last_close is None else ("won" if last_close.type == "deal_won" else "lost")
    amounts = [e.amount for e in creations if e.amount is not None]
    return {
        "rep": distinct[-1].rep_id,
        "opened": opened,
        "status": status,
        "closed": None if last_close is None else last_close.occurred_at,
        "amount": last_close.amount if status == "won" else (amounts[-1] if amounts else None),  # type: ignore[union-attr]
    }


@settings(max_examples=300, deadline=None)
@given(deal_event_specs)
def test_deal_status_amount_and_times_match_their_definition(specs) -> None:
    events = build_deal_events(specs)
    book = DealBook(RANKS)
    book.apply(events)
    for deal_id, deal in book.deals.items():
        expected = brute_force_deal([e for e in events if e.deal_id == deal_id])
        assert (deal.rep_id, deal.opened_at, deal.status.value, deal.closed_at, deal.amount) == (
            expected["rep"], expected["opened"], expected["status"], expected["closed"], expected["amount"],
        )  # fmt: skip


def test_stage_advancements_follow_the_configured_order_in_event_time() -> None:
    book = DealBook(RANKS)
    book.apply(
        [
            created(1, "D", 0, stage="Qualification"),
            moved(2, "D", 5, "discovery"),  # +1
            moved(3, "D", 7, "on hold"),  # not a ranked stage: ignored
            moved(4, "D", 9, "qualification"),  # backwards
            moved(5, "D", 12, "NEGOTIATION"),  # +1 (case-insensitive)
        ]
    )
    deal = book.deals["D"]
    assert deal.advanced_at == (T0 + timedelta(hours=5), T0 + timedelta(hours=12))
    # A late stage change between them rewrites what counts as an advancement.
    book.apply([moved(6, "D", 10, "proposal")])
    assert deal.advanced_at == (T0 + timedelta(hours=5), T0 + timedelta(hours=10), T0 + timedelta(hours=12))
    assert deal.stage == "NEGOTIATION"


def test_a_won_deal_has_its_cycle_from_creation_and_the_won_amount() -> None:
    book = DealBook(RANKS)
    book.apply([won(2, "D", 72, "950.50"), created(1, "D", 0, amount=Decimal(800))])
    deal = book.deals["D"]
    assert deal.status is DealStatus.WON
    assert deal.amount == Decimal("950.50")
    assert deal.cycle_days == 3.0


# -- KPI totals ----------------------------------------------------------------------------------


def brute_force_totals(
    daily: list[DailyCount], deal_events: list[DealEvent], rep_ids: set[str], window: Window
) -> dict[str, dict[str, Any]]:
    """Per-rep figures straight from the definitions, without the engine's data structures."""
    out: dict[str, dict[str, Any]] = {}
    by_deal: dict[str, list[DealEvent]] = {}
    for event in deal_events:
        by_deal.setdefault(event.deal_id, []).append(event)
    deals = {deal_id: brute_force_deal(evs) for deal_id, evs in by_deal.items()}
    for rep in rep_ids | {d["rep"] for d in deals.values()} | {r.rep_id for r in daily}:
        mine = [d for d in deals.values() if d["rep"] == rep]
        won_here = [d for d in mine if d["status"] == "won" and window.start <= d["closed"] < window.end]
        lost_here = [d for d in mine if d["status"] == "lost" and window.start <= d["closed"] < window.end]
        last = window.end - timedelta(microseconds=1)
        open_here = [d for d in mine if d["opened"] <= last and (d["closed"] is None or d["closed"] > last)]
        calls = sum(
            r.count
            for r in daily
            if r.rep_id == rep and r.counter == "call" and window.since <= r.day <= window.until
        )
        out[rep] = {
            "deals_won": len(won_here),
            "deals_lost": len(lost_here),
            "revenue": float(sum((d["amount"] for d in won_here), Decimal(0))),
            "open_deals": len(open_here),
            "open_pipeline_value": float(sum((d["amount"] or Decimal(0) for d in open_here), Decimal(0))),
            "calls": calls,
        }
    return out


daily_specs = st.lists(
    st.tuples(
        st.sampled_from(["r1", "r2", "r3", "r9"]),
        st.integers(0, 60),
        st.sampled_from(["call", "email"]),
        st.integers(1, 30),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(deal_event_specs, daily_specs, st.integers(0, 60), st.integers(0, 60))
def test_rep_totals_and_rollups_match_a_brute_force_recount(specs, daily_raw, a: int, b: int) -> None:
    events = build_deal_events(specs)
    merged: Counter[tuple[str, date, str]] = Counter()
    for rep, day, counter, count in daily_raw:
        merged[(rep, T0.date() + timedelta(days=day), counter)] += count
    daily = [DailyCount(rep, day, counter, n) for (rep, day, counter), n in merged.items()]
    window = Window(T0.date() + timedelta(days=min(a, b)), T0.date() + timedelta(days=max(a, b)))
    book = DealBook(RANKS)
    book.apply(events)
    kpis = compute_rep_kpis(daily, book.deals.values(), REPS, window)
    expected = brute_force_totals(daily, events, set(REPS), window)
    got = {rep: t.as_row() for rep, t in kpis.rollup("rep").items()}
    assert set(got) == set(expected)
    for rep, figures in expected.items():
        assert {k: got[rep][k] for k in figures} == figures
    # A team's figures are its reps' figures added up; unknown reps roll up as unassigned.
    for by in ("team", "territory"):
        groups = kpis.rollup(by)

        def group_of(rep_id: str, by: str = by) -> str:
            rep = REPS.get(rep_id)
            return UNASSIGNED if rep is None else (rep.team if by == "team" else rep.territory)

        assert set(groups) == {group_of(r) for r in expected}
        for group, totals in groups.items():
            members = [r for r in expected if group_of(r) == group]
            assert totals.deals_won == sum(expected[r]["deals_won"] for r in members)
            assert totals.calls == sum(expected[r]["calls"] for r in members)
            assert float(totals.revenue) == pytest.approx(sum(expected[r]["revenue"] for r in members))


def test_derived_ratios_are_computed_after_summing_not_averaged() -> None:
    a = KpiTotals(deals_won=1, deals_lost=0, revenue=Decimal(100), won_with_amount=1, cycle_days_sum=10)
    b = KpiTotals(deals_won=1, deals_lost=3, revenue=Decimal(300), won_with_amount=1, cycle_days_sum=30)
    team = KpiTotals()
    team.add(a)
    team.add(b)
    assert team.win_rate == 2 / 5  # not the mean of 1.0 and 0.25
    assert team.avg_deal_size == Decimal("200.00")
    assert team.avg_cycle_days == 20
    team.open_deals = 10
    # 10 open x 0.4 x 200 / 20 days = 40 per day
    assert team.pipeline_velocity == Decimal("40.00")


def test_ratios_without_a_denominator_are_none_not_zero() -> None:
    row = KpiTotals().as_row()
    for key in (
        "win_rate",
        "avg_deal_size",
        "avg_cycle_days",
        "quota_attainment",
        "call_to_meeting_scheduled",
    ):
        assert row[key] is None


def test_quota_attainment_and_coverage() -> None:
    totals = KpiTotals(revenue=Decimal(6000), quota=Decimal(10000), open_pipeline_value=Decimal(12000))
    assert totals.quota_attainment == 0.6
    assert totals.pipeline_coverage == 3.0  # 12k open against the 4k still to close
    totals.revenue = Decimal(10000)
    assert totals.pipeline_coverage is None


@given(st.dates(date(2024, 1, 1), date(2027, 12, 31)), st.integers(0, 400))
def test_prorated_quota_is_the_sum_of_each_days_share_of_its_month(start: date, length: int) -> None:
    window = Window(start, start + timedelta(days=length))
    monthly = Decimal(31000)
    expected = Decimal(0)
    day = window.since
    while day <= window.until:
        next_month = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        expected += monthly / Decimal((next_month - date(day.year, day.month, 1)).days)
        day += timedelta(days=1)
    assert prorated_quota(monthly, window) == pytest.approx(expected, abs=Decimal("0.01"))


def test_a_whole_month_is_the_monthly_quota() -> None:
    assert prorated_quota(Decimal(31000), Window(date(2026, 2, 1), date(2026, 2, 28))) == Decimal("31000.00")


def test_data_window_spans_activity_and_deals() -> None:
    book = DealBook(RANKS)
    book.apply([created(1, "D", 24 * 40)])
    daily = [DailyCount("r1", date(2026, 2, 20), "call", 1)]
    assert data_window(daily, book.deals.values()) == Window(date(2026, 2, 20), date(2026, 4, 10))
    assert data_window([], []) is None


def test_deal_figures_by_product_add_up_to_the_rep_totals() -> None:
    from streams.kpi.metrics import deal_kpis_by

    book = DealBook(RANKS)
    book.apply(
        [
            created(1, "A", 0, product="pro", amount=Decimal(100)),
            won(2, "A", 30, "120"),
            created(3, "B", 0, product="pro", amount=Decimal(50)),
            created(4, "C", 0, amount=Decimal(70)),
            lost(5, "C", 40),
        ]
    )
    window = Window(T0.date(), T0.date() + timedelta(days=5))
    by_product = deal_kpis_by(book.deals.values(), window, "product")
    assert {k: (t.deals_won, t.deals_lost, t.revenue, t.open_deals) for k, t in by_product.items()} == {
        "pro": (1, 0, Decimal(120), 1),
        UNASSIGNED: (0, 1, Decimal(0), 0),
    }
    everyone = compute_rep_kpis([], book.deals.values(), {}, window).rollup("rep")["r1"]
    assert everyone.deals_won == sum(t.deals_won for t in by_product.values())
    assert everyone.open_pipeline_value == sum(t.open_pipeline_value for t in by_product.values())
