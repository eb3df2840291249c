"""A CRM export through `import` and the pipeline, then `kpis --format json`, checked against a
plain-Python computation straight from the CSV rows (no salespulse code in the expectation)."""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from .conftest import Cli

pytestmark = pytest.mark.e2e

REPS = [
    (f"rep-{i:02d}", f"Team {'ABC'[i % 3]}", ["EMEA", "APAC", "AMER", "LATAM"][i % 4], 20000 + 500 * i)
    for i in range(18)
]
OPEN_STAGES = ["Prospecting", "Qualification", "Proposal", "Negotiation"]
WON_STAGES = ["Closed Won", "Won", "closed-won"]
LOST_STAGES = ["Closed Lost", "Lost", "CLOSED LOST"]
START = date(2026, 1, 5)


def write_exports(folder: Path, deals: int, seed: int) -> tuple[Path, Path, list[dict[str, Any]]]:
    """A reps CSV and an opportunities CSV with Salesforce-like headers; returns the rows that are
    valid, as plain values, for the expectation."""
    rnd = random.Random(seed)
    reps_path = folder / "users.csv"
    with reps_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["User Alias", "Sales Team", "Region", "Monthly Quota"])
        for rep_id, team, region, quota in REPS:
            writer.writerow([rep_id, team, region, quota])
    deals_path = folder / "opportunities.csv"
    valid: list[dict[str, Any]] = []
    with deals_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["Opportunity ID", "Owner", "Stage", "Created Date", "Close Date", "Amount", "Account"]
        )
        for n in range(deals):
            rep = rnd.choice(REPS)[0]
            created = START + timedelta(days=rnd.randint(0, 150))
            outcome = rnd.choices(["open", "won", "lost"], weights=[3, 2, 3])[0]
            stage = rnd.choice({"open": OPEN_STAGES, "won": WON_STAGES, "lost": LOST_STAGES}[outcome])
            closed = created + timedelta(days=rnd.randint(1, 90))
            amount = rnd.choice([None, *[Decimal(rnd.randint(1000, 90000)) / 4 for _ in range(9)]])
            shown_amount = "" if amount is None else f"${amount:,.2f}"
            # Open deals carry their expected close date, as CRM exports do.
            account = f"acct-{rnd.randint(1, 300)}"
            writer.writerow(
                [f"OPP-{n:05d}", rep, stage, created.isoformat(), closed.isoformat(), shown_amount, account]
            )
            valid.append(
                {"rep": rep, "outcome": outcome, "created": created, "closed": closed, "amount": amount}
            )
        # Bad rows: a won deal without a close date and an unreadable amount. They are reported
        # and dead-lettered; the rest of the file still loads.
        writer.writerow(["OPP-BAD-1", "rep-01", "Closed Won", "2026-02-01", "", "100", "acct-1"])
        writer.writerow(["OPP-BAD-2", "rep-02", "Proposal", "2026-02-01", "", "1.234,50", "acct-1"])
    return reps_path, deals_path, valid


def expected_figures(valid: list[dict[str, Any]], key_of: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The figures for the default window (all data) straight from the rows' definitions."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in valid:
        groups[key_of[row["rep"]]].append(row)
    result: dict[str, dict[str, Any]] = {}
    for key, rows in groups.items():
        won = [r for r in rows if r["outcome"] == "won"]
        lost = [r for r in rows if r["outcome"] == "lost"]
        still_open = [r for r in rows if r["outcome"] == "open"]
        revenue = sum((r["amount"] or Decimal(0) for r in won), Decimal(0))
        priced = [r for r in won if r["amount"] is not None]
        result[key] = {
            "deals_won": len(won),
            "deals_lost": len(lost),
            "win_rate": round(len(won) / (len(won) + len(lost)), 4) if won or lost else None,
            "revenue": float(revenue),
            "avg_deal_size": float((revenue / len(priced)).quantize(Decimal("0.01"))) if priced else None,
            "avg_cycle_days": round(sum((r["closed"] - r["created"]).days for r in won) / len(won), 4)
            if won
            else None,
            "open_deals": len(still_open),
            "open_pipeline_value": float(sum((r["amount"] or Decimal(0) for r in still_open), Decimal(0))),
            "deals_created": len(rows),
            "calls": 0,
            "visits": 0,
        }
    return result


def test_an_imported_crm_export_gives_exactly_the_kpis_computed_from_the_csv(
    cli: Cli, tmp_path: Path
) -> None:
    reps_csv, deals_csv, valid = write_exports(tmp_path, deals=3000, seed=11)
    reps_map = "rep=User Alias,team=Sales Team,territory=Region,quota_monthly=Monthly Quota"
    loaded = cli.run("import", "reps", str(reps_csv), "--map", reps_map, timeout=180)
    assert loaded.returncode == 0, loaded.describe()
    deals_map = (
        "deal_id=Opportunity ID,rep=Owner,stage=Stage,opened_at=Created Date,closed_at=Close Date,"
        "amount=Amount,account=Account"
    )
    imported = cli.run("import", "deals", str(deals_csv), "--map", deals_map, timeout=300)
    assert imported.returncode == 0, imported.describe()
    assert "opportunities.csv:3002: rejected" in imported.output
    assert "opportunities.csv:3003: rejected" in imported.output

    rep_info = {rep_id: (team, region) for rep_id, team, region, _ in REPS}
    for by, key_of in (
        ("rep", {r: r for r in rep_info}),
        ("team", {r: t for r, (t, _) in rep_info.items()}),
        ("territory", {r: g for r, (_, g) in rep_info.items()}),
    ):
        result = cli.run("kpis", "--by", by, "--format", "json", timeout=120)
        assert result.returncode == 0, result.describe()
        got = {row[by]: row for row in json.loads(result.stdout)}
        expected = expected_figures(valid, key_of)
        assert set(got) == set(expected), by
        for key, figures in expected.items():
            assert {name: got[key][name] for name in figures} == figures, (by, key)

    # Importing the same export again changes nothing: every event id is deterministic.
    again = cli.run("import", "deals", str(deals_csv), "--map", deals_map, timeout=300)
    assert again.returncode == 0, again.describe()
    after = {row["rep"]: row for row in json.loads(cli.run("kpis", "--format", "json").stdout)}
    expected_reps = expected_figures(valid, {r: r for r in rep_info})
    for rep_id, figures in expected_reps.items():
        assert after[rep_id]["deals_won"] == figures["deals_won"]
        assert after[rep_id]["revenue"] == figures["revenue"]
