"""Field visits as a user runs them: `import accounts` from a CRM export, stored in ClickHouse
(bad rows reported and dead-lettered), re-imports idempotent and a later record winning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import Cli, clickhouse_of

pytestmark = pytest.mark.e2e

ACCOUNTS_MAP = "account=Account ID,lat=Latitude,lon=Longitude,radius_m=Geofence (m),segment=Tier,owner=Owner"


def write_accounts(path: Path, rows: list[str]) -> Path:
    # Semicolons and decimal commas, as a German Excel writes CSV.
    path.write_text("Account ID;Latitude;Longitude;Geofence (m);Tier;Owner\n" + "\n".join(rows) + "\n")
    return path


def test_import_accounts_stores_positions_and_rejects_bad_rows(cli: Cli, tmp_path: Path) -> None:
    export = write_accounts(
        tmp_path / "accounts.csv",
        [
            "acc-1;48,1374;11,5755;200;key;rep-1",
            "acc-2;52.52;13.405;;;rep-1",
            "acc-3;;;;;rep-2",  # no position: imported with a warning
            "acc-4;91;11;;;rep-2",  # latitude out of range
            "acc-5;48.1;11.0;-5;;",  # negative radius
        ],
    )
    result = cli.run("import", "accounts", str(export), "--map", ACCOUNTS_MAP, timeout=180)
    assert result.returncode == 0, result.describe()
    assert "accounts.csv:5: rejected: lat (column 'Latitude')" in result.output
    assert "accounts.csv:6: rejected: radius_m (column 'Geofence (m)')" in result.output

    moved = write_accounts(tmp_path / "moved.csv", ["acc-2;52.5;13.4;80;key;rep-2"])
    assert cli.run("import", "accounts", str(moved), "--map", ACCOUNTS_MAP).returncode == 0
    # Importing the first file again changes nothing but acc-2, which it sets back.
    assert cli.run("import", "accounts", str(export), "--map", ACCOUNTS_MAP).returncode == 0
    assert cli.run("import", "accounts", str(moved), "--map", ACCOUNTS_MAP).returncode == 0

    with clickhouse_of(cli.home) as ch:
        stored = ch.rows(
            "SELECT account_id, name, lat, lon, radius_m, segment, owner_rep_id "
            "FROM {db}.accounts FINAL ORDER BY account_id"
        )
        rejected = ch.rows(
            "SELECT reason, source, source_offset FROM {db}.dead_letters FINAL ORDER BY source_offset"
        )
    assert stored == [
        ("acc-1", "acc-1", 48.1374, 11.5755, 200.0, "key", "rep-1"),
        ("acc-2", "acc-2", 52.5, 13.4, 80.0, "key", "rep-2"),
        ("acc-3", "acc-3", None, None, None, None, "rep-2"),
    ]
    assert rejected == [("invalid", "file:accounts.csv", 5), ("invalid", "file:accounts.csv", 6)]


def test_a_mapping_that_does_not_fit_is_refused(cli: Cli, tmp_path: Path) -> None:
    export = write_accounts(tmp_path / "accounts.csv", ["acc-1;48.1;11.5;;;"])
    result = cli.run("import", "accounts", str(export), "--map", "account=Account ID,lat=Lat,lon=Longitude")
    assert result.returncode == 2
    assert "column 'Lat' (for lat) is not in the header" in result.output
    missing = cli.run("import", "accounts", str(export), "--map", "account=Account ID,lat=Latitude")
    assert missing.returncode == 2
    assert "missing required field(s) lon" in missing.output


def visit_line(
    event_id: str, rep: str, at: str, account: str, lat: float | None, check_out: str | None
) -> str:
    event: dict[str, object] = {
        "event_id": event_id,
        "type": "visit",
        "rep_id": rep,
        "occurred_at": at,
        "account_id": account,
    }
    if lat is not None:
        event |= {"lat": lat, "lon": 11.0, "accuracy_m": 8}
    if check_out is not None:
        event["check_out_at"] = check_out
    return json.dumps(event)


def test_kpis_show_the_visit_figures_of_replayed_check_ins(cli: Cli, tmp_path: Path) -> None:
    accounts = write_accounts(
        tmp_path / "accounts.csv",
        ["acc-1;48.0;11.0;100;key;rep-1", "acc-2;48.5;11.0;;;rep-1", "acc-3;47.0;11.0;;;rep-2"],
    )
    assert cli.run("import", "accounts", str(accounts), "--map", ACCOUNTS_MAP).returncode == 0
    reps = tmp_path / "reps.csv"
    reps.write_text("rep,team,territory\nrep-1,Field,South\nrep-2,Field,South\n")
    assert (
        cli.run("import", "reps", str(reps), "--map", "rep=rep,team=team,territory=territory").returncode == 0
    )
    lines = [
        visit_line("v1", "rep-1", "2026-03-02T09:00:00Z", "acc-1", 48.0, "2026-03-02T09:40:00Z"),
        visit_line("v2", "rep-1", "2026-03-02T11:00:00Z", "acc-2", 48.6, None),  # 11 km off
        json.dumps(
            {
                "event_id": "c2",
                "type": "visit_check_out",
                "rep_id": "rep-1",
                "occurred_at": "2026-03-02T11:20:00Z",
                "visit_id": "v2",
            }
        ),
        visit_line("v3", "rep-2", "2026-03-02T10:00:00Z", "acc-3", None, "2026-03-02T11:00:00Z"),
        visit_line("v4", "rep-2", "2026-03-03T10:00:00Z", "acc-3", 47.0, "2026-03-03T10:30:00Z"),
        # An open deal at acc-1 since the day before: v1 is a visit to an account with an open deal.
        json.dumps(
            {
                "event_id": "d1",
                "type": "deal_created",
                "rep_id": "rep-1",
                "occurred_at": "2026-03-01T12:00:00Z",
                "deal_id": "D1",
                "account_id": "acc-1",
                "product": "pro",
                "amount": "1000",
            }
        ),
    ]
    events = tmp_path / "visits.jsonl"
    events.write_text("\n".join(lines) + "\n")
    replayed = cli.run("replay", str(events), timeout=180)
    assert replayed.returncode == 0, replayed.describe()
    # Replaying the same file again counts nothing twice.
    assert cli.run("replay", str(events), timeout=180).returncode == 0

    result = cli.run("kpis", "--format", "json")
    assert result.returncode == 0, result.describe()
    got = {row["rep"]: row for row in json.loads(result.stdout)}
    wanted = (
        "visits",
        "visits_verified",
        "visits_out_of_range",
        "visits_unlocated",
        "verified_share",
        "unique_accounts_visited",
        "account_coverage",
        "time_in_field_hours",
        "avg_visit_minutes",
        "visits_open_deal_accounts",
    )
    assert {rep: [got[rep][k] for k in wanted] for rep in got} == {
        "rep-1": [2, 1, 1, 0, 0.5, 2, 0.5, 1.0, 30.0, 1],
        "rep-2": [2, 1, 0, 1, 0.5, 1, 1.0, 1.5, 45.0, 0],
    }
    team = json.loads(cli.run("kpis", "--by", "team", "--format", "json").stdout)
    assert [(r["team"], r["visits_verified"], r["account_coverage"]) for r in team] == [("Field", 2, 0.6667)]
    table = cli.run("kpis")
    assert table.returncode == 0 and "verified" in table.stdout
    # Deal groupings have no visit figures: the table shows them as "-".
    by_product = cli.run("kpis", "--by", "product")
    assert by_product.returncode == 0, by_product.describe()
    assert "pro" in by_product.stdout
