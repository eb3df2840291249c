"""Reading a CRM account export: coordinates in both decimal styles, rows without a position,
and the rows that cannot be accounts."""

from __future__ import annotations

import io

import pytest

from schemas.accounts import DEFAULT_RADIUS_M
from streams.crm import RowAccount, RowError, parse_coordinate, parse_mapping, read_accounts

MAPPING = parse_mapping(
    "account=Id,lat=Lat,lon=Lon,radius_m=Radius,segment=Segment,name=Name,owner=Owner", "accounts"
)


def read(text: str) -> list[RowAccount | RowError]:
    return list(read_accounts(io.StringIO(text), MAPPING, source_name="a.csv"))


@pytest.mark.parametrize(
    ("text", "value"),
    [("48.1374", 48.1374), ("-0.1278", -0.1278), ("48,1374", 48.1374), ("+11", 11.0), (".5", 0.5)],
)
def test_coordinates(text: str, value: float) -> None:
    assert parse_coordinate(text) == value


@pytest.mark.parametrize("text", ["N48 8", "48°8'", "1,234.5", "", "nan", "1e3"])
def test_not_coordinates(text: str) -> None:
    with pytest.raises(ValueError, match="decimal-degree"):
        parse_coordinate(text)


def test_rows_become_accounts_or_errors() -> None:
    rows = read(
        "Id,Lat,Lon,Radius,Segment,Name,Owner\n"
        "a1,48.1374,11.5755,250,key,Acme Munich,rep-1\n"
        "a2,,,,,,\n"
        "a3,48.1,,,,,\n"
        "a4,48.1,181,,,,\n"
        "a5,48.1,11,wide,,,\n"
    )
    first, second, *errors = rows
    assert isinstance(first, RowAccount)
    assert first.account.model_dump() == {
        "account_id": "a1",
        "name": "Acme Munich",
        "lat": 48.1374,
        "lon": 11.5755,
        "radius_m": 250.0,
        "segment": "key",
        "owner_rep_id": "rep-1",
    }
    assert isinstance(second, RowAccount)
    assert not second.account.located and second.account.geofence_m == DEFAULT_RADIUS_M
    assert any("no position" in w for w in second.warnings)
    assert [(e.line, e.message) for e in errors if isinstance(e, RowError)] == [
        (4, "lon (column 'Lon') is empty; give lat and lon together"),
        (5, "lon (column 'Lon'): Input should be less than or equal to 180"),
        (6, "radius_m (column 'Radius'): 'wide' is not a number of metres"),
    ]


def test_the_mapping_needs_the_position_columns() -> None:
    with pytest.raises(ValueError, match="missing required field"):
        parse_mapping("account=Id", "accounts")
