"""Field visits as a user runs them: `import accounts` from a CRM export, stored in ClickHouse
(bad rows reported and dead-lettered), re-imports idempotent and a later record winning."""

from __future__ import annotations

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
