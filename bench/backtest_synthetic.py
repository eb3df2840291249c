"""The early warnings measured on generated histories: the numbers in the README's "Early warnings:
backtest". Each seed is a synthetic org (``streams.synthetic``) whose fading reps cut their activity
part-way; their wins follow a sales cycle later. Run it as

    .venv/bin/python bench/backtest_synthetic.py --seeds 1-10

It runs the same backtest as ``salespulse backtest`` (``streams.backtest.run_backtest``, default rules
and revenue-drop definition) and prints, per seed and pooled over all seeds, precision, recall and
the median lead time. As the generator knows which reps fade, it also prints how the alerts fall on
fading and on stable reps, per rule. ``--write DIR`` also writes each seed's history as
``DIR/events-SEED.jsonl.gz`` and ``DIR/reps-SEED.jsonl``, for ``salespulse backtest``.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import time
from collections.abc import Iterable
from datetime import date, timedelta
from pathlib import Path

from schemas.alert_rules import AlertRulesConfig
from schemas.wire import event_to_json
from streams.backtest import EARLY_WARNING_RULES, WARNING_RULES, BacktestResult, run_backtest
from streams.kpi.activity import utc_day
from streams.synthetic import DEAL_STAGES, OrgSpec, SyntheticOrg, generate_org, iter_events


def seeds_of(text: str) -> list[int]:
    """``1-10`` or ``1,4,7`` (or both: ``1-3,9``)."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def write_history(org: SyntheticOrg, directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    events_path = directory / f"events-{org.spec.seed}.jsonl.gz"
    reps_path = directory / f"reps-{org.spec.seed}.jsonl"
    with gzip.open(events_path, "wb", compresslevel=5) as handle:
        for event in iter_events(org):
            handle.write(event_to_json(event) + b"\n")
    reps_path.write_text("".join(rep.model_dump_json() + "\n" for rep in org.reps), encoding="utf-8")
    return events_path, reps_path


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.0%})" if whole else "0/0"


def ratio(part: int, whole: int) -> str:
    return f"{part / whole:.2f}" if whole else "n/a"


def median(values: Iterable[float]) -> str:
    values = list(values)
    return f"{statistics.median(values):.0f}" if values else "n/a"


def alerted_after(result: BacktestResult, rules: Iterable[str], since_day: date) -> dict[str, int]:
    """Per rep, days from ``since_day`` to its first rep alert of ``rules`` on or after it."""
    rules = set(rules)
    first: dict[str, int] = {}
    for alert in result.alerts:
        if alert.rep_id is None or alert.rule not in rules:
            continue
        days = (utc_day(alert.fired_at) - since_day).days
        if days >= 0 and alert.rep_id not in first:
            first[alert.rep_id] = days
    return first


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="1-10", help="Seeds, e.g. 1-10 or 1,4,7.")
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--fading", type=int, default=5)
    parser.add_argument("--fade-at", type=float, default=0.45)
    parser.add_argument("--write", type=Path, help="Also write each seed's history files here.")
    parser.add_argument("--rules", type=Path, help="Alert rules YAML (default: the built-in settings).")
    args = parser.parse_args()
    config = AlertRulesConfig.from_yaml(args.rules.read_text()) if args.rules else None

    pooled = {"alerted": 0, "alerted_fell": 0, "fell": 0, "fell_warned": 0}
    leads: list[int] = []
    fading_total = stable_total = fading_fell = stable_fell = 0
    fading_leads: list[int] = []
    fading_unwarned: list[int] = []  # days from the fade to a fall no warning came before
    fading_alerted: dict[str, list[int]] = {rule: [] for rule in (*WARNING_RULES, "early warnings")}
    stable_alerted = dict.fromkeys(fading_alerted, 0)
    print("seed  events   secs  precision  recall  median lead  alerted (fell)  fell (warned)")
    for seed in seeds_of(args.seeds):
        spec = OrgSpec(
            reps=args.reps,
            teams=4,
            territories=4,
            days=args.days,
            seed=seed,
            fading_reps=args.fading,
            fade_at=args.fade_at,
        )
        org = generate_org(spec)
        if args.write is not None:
            write_history(org, args.write)
        began = time.perf_counter()
        result = run_backtest(iter_events(org), org.reps, config, deal_stages=DEAL_STAGES)
        seconds = time.perf_counter() - began
        scores = result.scores
        precision = ratio(scores.alerted_reps_fell, scores.alerted_reps)
        recall = ratio(scores.reps_fell_warned, scores.reps_fell)
        print(
            f"{seed:>4}  {result.events:>7,}  {seconds:>5.1f}  {precision:>9}  {recall:>6}"
            f"  {median(scores.lead_days):>11}  {scores.alerted_reps:>7} ({scores.alerted_reps_fell:>2})"
            f"  {scores.reps_fell:>7} ({scores.reps_fell_warned:>2})"
        )
        pooled["alerted"] += scores.alerted_reps
        pooled["alerted_fell"] += scores.alerted_reps_fell
        pooled["fell"] += scores.reps_fell
        pooled["fell_warned"] += scores.reps_fell_warned
        leads.extend(scores.lead_days)
        fade_day = spec.fade_starts_at.date()
        start_day = spec.start.date() + timedelta(days=7)
        fell = {rep.rep_id for rep in result.reps if rep.revenue_drop is not None}
        fading_total += len(org.fading_rep_ids)
        stable_total += spec.reps - len(org.fading_rep_ids)
        fading_fell += len(fell & org.fading_rep_ids)
        stable_fell += len(fell - org.fading_rep_ids)
        for rep in result.reps:
            if rep.rep_id in org.fading_rep_ids and rep.revenue_drop is not None:
                if rep.lead_days is not None:
                    fading_leads.append(rep.lead_days)
                else:
                    fading_unwarned.append((rep.revenue_drop.fell_on - fade_day).days)
        for rule, rules in [
            *((rule, (rule,)) for rule in WARNING_RULES),
            ("early warnings", EARLY_WARNING_RULES),
        ]:
            after_fade = alerted_after(result, rules, fade_day)
            fading_alerted[rule].extend(
                days for rep_id, days in after_fade.items() if rep_id in org.fading_rep_ids
            )
            anytime = alerted_after(result, rules, start_day)
            stable_alerted[rule] += sum(1 for rep_id in anytime if rep_id not in org.fading_rep_ids)

    print(
        f"\npooled over {len(seeds_of(args.seeds))} seeds ({', '.join(EARLY_WARNING_RULES)}): "
        f"precision {ratio(pooled['alerted_fell'], pooled['alerted'])} "
        f"({pooled['alerted_fell']}/{pooled['alerted']}), "
        f"recall {ratio(pooled['fell_warned'], pooled['fell'])} "
        f"({pooled['fell_warned']}/{pooled['fell']}), median lead {median(leads)} days "
        f"(quartiles {quartiles(leads)})"
    )
    print(
        f"revenue fell (by the definition) for {share(fading_fell, fading_total)} fading reps "
        f"and {share(stable_fell, stable_total)} stable reps"
    )
    print(
        f"fading reps whose revenue fell: {len(fading_leads)} of {fading_fell} warned before it, median lead "
        f"{median(fading_leads)} days; the others fell {sorted(fading_unwarned)} days after the fade"
    )
    print(
        "\nrule                    fading reps alerted after the fade  median days after  stable reps alerted"
    )
    for rule, days in fading_alerted.items():
        print(
            f"{rule:<22}  {share(len(days), fading_total):>34}  {median(days):>17}  "
            f"{share(stable_alerted[rule], stable_total):>19}"
        )


def quartiles(values: list[int]) -> str:
    if len(values) < 4:
        return "n/a"
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.0f}-{high:.0f}"


if __name__ == "__main__":
    main()
