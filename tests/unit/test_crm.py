"""CRM CSV exports into canonical deal events and rep records (streams.crm), without any I/O."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.deadletter import PAYLOAD_EXCERPT_BYTES, DeadLetterReason
from schemas.events import DealCreatedEvent, DealLostEvent, DealWonEvent
from schemas.reps import ManagementMode, Rep
from streams.crm import (
    ColumnMapping,
    ImportKind,
    RowError,
    RowEvents,
    RowRep,
    StageOutcome,
    classify_stage,
    parse_amount,
    parse_date,
    parse_mapping,
    parse_timestamp,
    read_deals,
    read_reps,
    resolve_columns,
    to_dead_letter,
)

AS_OF = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")

DEAL_HEADER = [
    "Opportunity ID",
    "Owner",
    "Stage",
    "Created Date",
    "Close Date",
    "Amount",
    "Account Name",
    "Product",
]
DEAL_MAP = parse_mapping(
    "deal_id=Opportunity ID,rep=Owner,stage=Stage,opened_at=Created Date,closed_at=Close Date,"
    "amount=Amount,account=Account Name,product=Product",
    "deals",
)
REP_HEADER = ["User", "Full Name", "Team", "Region", "Manager", "Quota", "Start Date", "Mode"]
REP_MAP = parse_mapping(
    "rep=User,name=Full Name,team=Team,territory=Region,manager=Manager,quota_monthly=Quota,"
    "hired_at=Start Date,mode=Mode",
    "reps",
)

WON_SYNONYMS = ("won", "closed won", "closed-won", "closed/won", "closedwon", "win")
LOST_SYNONYMS = ("lost", "closed lost", "closed-lost", "closed/lost", "closedlost", "loss", "disqualified")
OPEN_STAGES = ("Prospecting", "Qualification", "Needs Analysis", "Proposal/Price Quote", "Negotiation/Review")


def csv_text(
    rows: list[list[str]],
    header: list[str] = DEAL_HEADER,
    *,
    delimiter: str = ",",
    newline: str = "\n",
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def deal_row(
    deal_id: str = "D1",
    rep: str = "rep-7",
    stage: str = "Negotiation",
    opened: str = "2026-01-05",
    closed: str = "",
    amount: str = "1000",
    account: str = "",
    product: str = "",
) -> list[str]:
    return [deal_id, rep, stage, opened, closed, amount, account, product]


def deals(text: str, **options: object) -> list[RowEvents | RowError]:
    return list(
        read_deals(
            io.StringIO(text, newline=""),
            DEAL_MAP,
            source_name="export.csv",
            as_of=AS_OF,
            **options,  # type: ignore[arg-type]
        )
    )


def only_events(text: str, **options: object) -> RowEvents:
    [result] = deals(text, **options)
    assert isinstance(result, RowEvents), result
    return result


def only_error(text: str, **options: object) -> RowError:
    [result] = deals(text, **options)
    assert isinstance(result, RowError), result
    return result


def reps(text: str, mapping: ColumnMapping = REP_MAP) -> list[RowRep | RowError]:
    return list(read_reps(io.StringIO(text, newline=""), mapping, source_name="users.csv"))


def midnight(day: date, tz: timezone | ZoneInfo = UTC) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=tz)


# ------------------------------------------------------------------------------- parse_mapping


def test_mapping_keeps_column_names_with_spaces_and_trims_tokens() -> None:
    mapping = parse_mapping(
        " deal_id = Opportunity ID ,rep=Owner Name,stage=Stage,opened_at=Created Date,"
        "closed_at = Close Date,amount=Amount (USD),",
        ImportKind.DEALS,
    )
    assert mapping.kind is ImportKind.DEALS
    assert dict(mapping.columns) == {
        "deal_id": "Opportunity ID",
        "rep": "Owner Name",
        "stage": "Stage",
        "opened_at": "Created Date",
        "closed_at": "Close Date",
        "amount": "Amount (USD)",
    }


def test_mapping_field_names_are_case_insensitive_and_a_column_may_hold_an_equals_sign() -> None:
    mapping = parse_mapping("REP=Owner,Team=a=b,territory=Region", "reps")
    assert dict(mapping.columns) == {"rep": "Owner", "team": "a=b", "territory": "Region"}


def test_mapping_for_reps_takes_every_optional_field() -> None:
    assert set(REP_MAP.columns) == {
        "rep",
        "name",
        "team",
        "territory",
        "manager",
        "quota_monthly",
        "hired_at",
        "mode",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rep=A,team=B,territory=C,colour=D", r"unknown field\(s\) 'colour'.*required: rep, team, territory"),
        ("rep=A,team=B", r"missing required field\(s\) territory.*optional: name, manager"),
        ("", r"missing required field\(s\) rep, team, territory"),
        ("rep=A,team=B,territory=C,team=D", r"names 'team' twice \('B' and 'D'\)"),
        ("rep=A,team=,territory=C", r"'team=' has no column name"),
        ("rep=A,=B,territory=C", r"'=B' has no field name"),
        ("rep=A,team B,territory=C", r"'team B' has no '='.*cannot contain commas"),
    ],
)
def test_bad_mappings_are_clear_errors_listing_what_is_allowed(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_mapping(text, "reps")


def test_deal_mapping_errors_list_the_deal_fields() -> None:
    with pytest.raises(
        ValueError,
        match=r"required: deal_id, rep, stage, opened_at, closed_at, amount; optional: account, product",
    ):
        parse_mapping("deal_id=Id", "deals")


def test_an_unknown_import_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="'leads' is not a valid ImportKind"):
        parse_mapping("rep=A", "leads")


# ----------------------------------------------------------------------------- resolve_columns


def test_columns_match_exactly_first_then_ignoring_case_and_whitespace() -> None:
    mapping = parse_mapping("rep=owner,team=Team,territory=Sales  Region", "reps")
    header = ["Owner", "Team", "team", " sales region "]
    # "Team" is there exactly (and wins over "team"); the others only loosely.
    assert resolve_columns(mapping, header) == {"rep": 0, "team": 1, "territory": 3}


def test_a_missing_column_is_named_with_the_available_ones_and_a_close_match() -> None:
    mapping = parse_mapping("rep=Owner,team=Team,territory=Territory", "reps")
    with pytest.raises(
        ValueError, match="column 'Territory' \\(for territory\\) is not in the header"
    ) as caught:
        resolve_columns(mapping, ["Owner", "Team", "Territory Name"])
    message = str(caught.value)
    assert "did you mean 'Territory Name'?" in message
    assert "the columns: 'Owner', 'Team', 'Territory Name'" in message


def test_every_missing_column_is_reported_at_once() -> None:
    mapping = parse_mapping("rep=Owner,team=Team,territory=Territory", "reps")
    with pytest.raises(ValueError, match="is not in the header") as caught:
        resolve_columns(mapping, ["Owner"])
    assert "'Team' (for team)" in str(caught.value) and "'Territory' (for territory)" in str(caught.value)


def test_a_column_that_matches_two_header_columns_is_an_error() -> None:
    mapping = parse_mapping("rep=Owner,team=Team,territory=Region", "reps")
    with pytest.raises(
        ValueError, match=r"'Team' \(for team\) matches more than one header column \(columns 2, 3\)"
    ):
        resolve_columns(mapping, ["Owner", "team", "TEAM ", "Region"])
    with pytest.raises(ValueError, match=r"columns 2, 3"):
        resolve_columns(mapping, ["Owner", "Team", "Team", "Region"])


def test_a_long_header_is_listed_shortened() -> None:
    mapping = parse_mapping("rep=Nope,team=Team,territory=Region", "reps")
    header = ["Team", "Region", *(f"c{i}" for i in range(100))]
    with pytest.raises(ValueError, match=r"\.\.\. \(\+62 more\)"):
        resolve_columns(mapping, header)


# ------------------------------------------------------------------------------------- stages


def case_variants(text: str) -> list[str]:
    return [text, text.upper(), text.title(), text.swapcase(), f"  {text}\t"]


@pytest.mark.parametrize("stage", [v for s in WON_SYNONYMS for v in case_variants(s)])
def test_every_won_synonym_in_any_case_is_won(stage: str) -> None:
    assert classify_stage(stage) is StageOutcome.WON


@pytest.mark.parametrize("stage", [v for s in LOST_SYNONYMS for v in case_variants(s)])
def test_every_lost_synonym_in_any_case_is_lost(stage: str) -> None:
    assert classify_stage(stage) is StageOutcome.LOST


@pytest.mark.parametrize(
    "stage", ["Closed_Won", "closed - won", "CLOSED.WON", "Closed–Won", "closed \\ lost"]
)
def test_stage_matching_ignores_punctuation_and_spacing(stage: str) -> None:
    assert classify_stage(stage) is not StageOutcome.OPEN


@pytest.mark.parametrize(
    "stage", [*OPEN_STAGES, "Closed", "Won back later", "Closed-Lost to Competition", "winning"]
)
def test_anything_else_is_open(stage: str) -> None:
    assert classify_stage(stage) is StageOutcome.OPEN


# ------------------------------------------------------------------------------------- dates


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-05", datetime(2026, 3, 5, tzinfo=UTC)),
        ("2026/03/05", datetime(2026, 3, 5, tzinfo=UTC)),
        ("2026-3-5", datetime(2026, 3, 5, tzinfo=UTC)),
        ("2026-03-05 14:30", datetime(2026, 3, 5, 14, 30, tzinfo=UTC)),
        ("2026/03/05 14:30", datetime(2026, 3, 5, 14, 30, tzinfo=UTC)),
        ("2026-03-05T14:30", datetime(2026, 3, 5, 14, 30, tzinfo=UTC)),
        ("2026-03-05T14:30:15", datetime(2026, 3, 5, 14, 30, 15, tzinfo=UTC)),
        ("2026-03-05 14:30:15.123", datetime(2026, 3, 5, 14, 30, 15, 123000, tzinfo=UTC)),
        ("2026-03-05T14:30:15.1234567", datetime(2026, 3, 5, 14, 30, 15, 123456, tzinfo=UTC)),
        ("2026-03-05T14:30:00Z", datetime(2026, 3, 5, 14, 30, tzinfo=UTC)),
        ("2026-03-05T14:30:00.000z", datetime(2026, 3, 5, 14, 30, tzinfo=UTC)),
        ("2026-03-05T14:30:00+02:00", datetime(2026, 3, 5, 12, 30, tzinfo=UTC)),
        ("2026-03-05T14:30:00+0200", datetime(2026, 3, 5, 12, 30, tzinfo=UTC)),
        ("2026-03-05 14:30 -05", datetime(2026, 3, 5, 19, 30, tzinfo=UTC)),
        ("  2026-03-05  ", datetime(2026, 3, 5, tzinfo=UTC)),
    ],
)
def test_accepted_date_formats(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed.tzinfo is not None
    assert parsed == expected


def test_dates_and_naive_times_are_in_the_default_zone_and_offsets_win() -> None:
    assert parse_timestamp("2026-03-05", BERLIN) == datetime(2026, 3, 4, 23, tzinfo=UTC)
    assert parse_timestamp("2026-07-05 09:00", BERLIN) == datetime(2026, 7, 5, 7, tzinfo=UTC)
    assert parse_timestamp("2026-07-05T09:00:00Z", BERLIN) == datetime(2026, 7, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "05/03/2026",
        "3/5/2026",
        "March 5, 2026",
        "5 Mar 2026",
        "20260305",
        "2026-03-05T14",
        "2026-03-05 2:30 PM",
        "2026-03/05",
        "2026-03-05+02:00",
        "",
        "n/a",
        "45721",  # an Excel serial day number
    ],
)
def test_other_date_formats_are_refused_with_the_accepted_ones(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a date; use YYYY-MM-DD, YYYY/MM/DD"):
        parse_timestamp(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-02-30", "day is out of range"),
        ("2026-13-01", "month must be in 1..12"),
        ("2026-03-05T24:00", "hour must be in 0..23"),
        ("2026-03-05T10:00:00+24:00", "impossible offset"),
    ],
)
def test_impossible_dates_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_timestamp(text)


def test_a_date_is_the_calendar_date_as_written() -> None:
    assert parse_date("2021-03-15") == date(2021, 3, 15)
    assert parse_date("2021/03/15 00:00") == date(2021, 3, 15)
    assert parse_date("2021-03-15T23:30:00-08:00") == date(2021, 3, 15)


# Hypothesis takes naive bounds and attaches the zones itself.
@given(
    st.datetimes(
        min_value=datetime(2000, 1, 1),  # noqa: DTZ001
        max_value=datetime(2099, 12, 31),  # noqa: DTZ001
        timezones=st.timezones(),
    )
)
def test_every_iso_datetime_with_an_offset_reads_back_as_the_same_instant(moment: datetime) -> None:
    # As UTC instants: two zones never compare equal for a time in a DST gap or fold (PEP 495).
    assert parse_timestamp(moment.isoformat(), BERLIN).astimezone(UTC) == moment.astimezone(UTC)


# ------------------------------------------------------------------------------------- amounts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234.5", "1234.5"),
        ("1234", "1234"),
        ("0", "0"),
        (".5", "0.5"),
        ("1,234.50", "1234.50"),
        ("12,345,678.9", "12345678.9"),
        ("1,234", "1234"),
        ("$1,234.50", "1234.50"),
        ("$ 1,234.50", "1234.50"),
        ("1234.50 EUR", "1234.50"),
        ("1234.50EUR", "1234.50"),
        ("USD 1,234.50", "1234.50"),
        ("€1234.50", "1234.50"),
        ("1234.50 €", "1234.50"),
        ("£1,234.50 GBP", "1234.50"),
        ("12 345.00", "12345.00"),
        ("12\u00a0345.00", "12345.00"),
        ("0.125", "0.125"),
        ("1234.567", "1234.567"),
        ("1,234.567", "1234.567"),
        ("-0", "0"),
    ],
)
def test_accepted_amount_formats(text: str, expected: str) -> None:
    assert parse_amount(text) == Decimal(expected)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1.234,50", "decimal comma"),
        ("1234,50", "decimal comma"),
        ("€ 1 234,50", "decimal comma"),
        ("12,3", "decimal comma"),
        ("1.234", r"ambiguous \(thousands separator or three decimals\?\); write 1234 or 1.2340"),
        ("$12.500", "ambiguous"),
        ("1.234.567", "not an amount"),
        ("1,23.50", "not an amount"),
        ("12a", "not an amount"),
        ("1e5", "not an amount"),
        ("NaN", "not an amount"),
        ("abc1", "not an amount"),
        ("$", "not an amount"),
        ("n/a", "not an amount"),
        ("-5", "negative"),
        ("-$1,234.50", "negative"),
        ("USD 1 EUR", r"more than one currency \(USD, EUR\)"),
    ],
)
def test_ambiguous_or_broken_amounts_are_refused_with_a_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_amount(text)


def test_a_currency_code_other_than_the_org_currency_is_refused() -> None:
    assert parse_amount("1234.50 usd".upper(), currency="usd") == Decimal("1234.50")
    assert parse_amount("$1,234.50", currency="USD") == Decimal("1234.50")  # a bare symbol is not checked
    with pytest.raises(ValueError, match="is in EUR, but the org currency is USD; convert it first"):
        parse_amount("1234.50 EUR", currency="USD")


AMOUNT_STYLES = ("{:f}", "{:,f}", "${:,f}", "{:f} EUR", "USD {:,f}", "€{:f}")


@given(st.integers(0, 10**15), st.sampled_from(AMOUNT_STYLES))
def test_every_amount_in_cents_reads_back_in_every_style(cents: int, style: str) -> None:
    amount = Decimal(cents).scaleb(-2)
    assert parse_amount(style.format(amount)) == amount


# ------------------------------------------------------------------------------- deal events


def test_an_open_deal_is_created_with_its_stage_amount_product_and_account() -> None:
    row = deal_row(stage="Negotiation", amount="$18,500.00", account="acc-1042", product="platform-pro")
    result = only_events(csv_text([row]))
    assert result.line == 2 and result.warnings == ()
    assert result.events == (
        DealCreatedEvent(
            event_id="crm:D1:created",
            type="deal_created",
            rep_id="rep-7",
            occurred_at=datetime(2026, 1, 5, tzinfo=UTC),
            account_id="acc-1042",
            deal_id="D1",
            amount=Decimal("18500.00"),
            stage="Negotiation",
            product="platform-pro",
        ),
    )


def test_a_won_deal_is_created_then_won_at_its_close_and_the_created_event_has_no_stage() -> None:
    row = deal_row(
        stage="Closed Won", opened="2026-01-05", closed="2026-02-10 16:00", amount="17900", account="a1"
    )
    result = only_events(csv_text([row]))
    created, won = result.events
    assert isinstance(created, DealCreatedEvent) and isinstance(won, DealWonEvent)
    assert created.stage is None
    assert created.amount == Decimal("17900.00") and created.account_id == "a1"
    assert won == DealWonEvent(
        event_id="crm:D1:won",
        type="deal_won",
        rep_id="rep-7",
        occurred_at=datetime(2026, 2, 10, 16, tzinfo=UTC),
        account_id="a1",
        deal_id="D1",
        amount=Decimal("17900.00"),
    )


def test_a_lost_deal_is_created_then_lost_at_its_close() -> None:
    result = only_events(csv_text([deal_row(stage="Disqualified", closed="2026-02-01")]))
    created, lost = result.events
    assert isinstance(created, DealCreatedEvent) and created.stage is None
    assert lost == DealLostEvent(
        event_id="crm:D1:lost",
        type="deal_lost",
        rep_id="rep-7",
        occurred_at=datetime(2026, 2, 1, tzinfo=UTC),
        deal_id="D1",
    )


def test_an_open_deal_keeps_its_expected_close_date_as_an_attribute() -> None:
    result = only_events(csv_text([deal_row(stage="Proposal", closed="2026-06-30")]))
    [created] = result.events
    assert created.attributes == {"expected_close_at": "2026-06-30T00:00:00+00:00"}


def test_an_open_stage_that_looks_like_a_close_is_open_with_a_warning() -> None:
    result = only_events(csv_text([deal_row(stage="Closed-Lost to Competition", closed="2026-02-01")]))
    [created] = result.events
    assert isinstance(created, DealCreatedEvent) and created.stage == "Closed-Lost to Competition"
    assert result.warnings == (
        "stage 'Closed-Lost to Competition' is not a known won or lost stage; imported as open",
    )


def test_an_empty_amount_leaves_the_created_event_without_one() -> None:
    [created] = only_events(csv_text([deal_row(amount="")])).events
    assert isinstance(created, DealCreatedEvent) and created.amount is None


def test_a_won_deal_without_an_amount_is_won_with_zero_flagged_and_warned() -> None:
    result = only_events(csv_text([deal_row(stage="won", closed="2026-02-01", amount="")]))
    created, won = result.events
    assert isinstance(created, DealCreatedEvent) and created.amount is None
    assert isinstance(won, DealWonEvent)
    assert won.amount == Decimal("0.00") and won.attributes == {"amount_missing": True}
    assert result.warnings == ("amount (column 'Amount') is empty for a won deal; recorded as 0",)


def test_an_empty_open_date_of_a_closed_deal_is_its_close_date_flagged() -> None:
    result = only_events(csv_text([deal_row(stage="lost", opened="", closed="2026-02-01")]))
    created, lost = result.events
    assert created.occurred_at == lost.occurred_at == datetime(2026, 2, 1, tzinfo=UTC)
    assert created.attributes == {"opened_at_unknown": True}
    assert result.warnings == ("opened_at (column 'Created Date') is empty; created at closed_at instead",)


def test_an_empty_open_date_of_an_open_deal_is_the_import_time_flagged() -> None:
    # Not its closed_at: for an open deal that is the expected close, often in the future.
    result = only_events(csv_text([deal_row(opened="", closed="2026-06-30")]))
    [created] = result.events
    assert created.occurred_at == AS_OF
    assert created.attributes == {"opened_at_unknown": True, "expected_close_at": "2026-06-30T00:00:00+00:00"}
    assert "created at the import time instead" in result.warnings[0]


@pytest.mark.parametrize("stage", ["Closed Won", "Closed Lost"])
def test_a_closed_deal_without_a_close_date_is_an_error_and_emits_nothing(stage: str) -> None:
    error = only_error(csv_text([deal_row(stage=stage, closed="")]))
    assert error.line == 2
    assert error.message.startswith("closed_at (column 'Close Date') is empty, but the deal is")
    assert "nothing of this deal was imported" in error.message
    assert error.rep_id == "rep-7"


def test_closed_before_opened_is_kept_with_a_warning() -> None:
    # CRMs allow a close date backdated before the record's creation (a deal logged after the fact).
    result = only_events(csv_text([deal_row(stage="won", opened="2026-02-05", closed="2026-02-01")]))
    assert len(result.events) == 2
    assert result.warnings == (
        "closed_at 2026-02-01T00:00:00+00:00 is before opened_at 2026-02-05T00:00:00+00:00",
    )


def test_dates_are_read_in_the_default_time_zone() -> None:
    result = only_events(
        csv_text([deal_row(stage="won", opened="2026-01-05", closed="2026-02-01 09:00")]),
        default_tz=BERLIN,
    )
    created, won = result.events
    assert created.occurred_at == datetime(2026, 1, 4, 23, tzinfo=UTC)
    assert won.occurred_at == datetime(2026, 2, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (deal_row(opened="05/01/2026"), "opened_at (column 'Created Date'): '05/01/2026' is not a date; use"),
        (
            deal_row(stage="won", closed="tomorrow"),
            "closed_at (column 'Close Date'): 'tomorrow' is not a date",
        ),
        (deal_row(closed="2026-02-31"), "closed_at (column 'Close Date'): '2026-02-31' is not a valid date"),
        (deal_row(amount="1.234,50"), "amount (column 'Amount'): '1.234,50' seems to use a decimal comma"),
        (deal_row(amount="-10"), "amount (column 'Amount'): '-10' is negative"),
        (deal_row(deal_id=""), "deal_id (column 'Opportunity ID') is empty"),
        (deal_row(rep=""), "rep (column 'Owner') is empty"),
        (
            deal_row(stage=""),
            "stage (column 'Stage') is empty: cannot tell whether the deal is open, won or lost",
        ),
        (
            deal_row(opened="2062-01-05"),
            "opened_at (column 'Created Date'): '2062-01-05' is after the import time",
        ),
        (
            deal_row(stage="won", closed="2026-03-03"),
            "closed_at (column 'Close Date'): '2026-03-03' is after the",
        ),
        (
            deal_row(opened="1999-12-31"),
            "opened_at (column 'Created Date'): timestamp 1999-12-31T00:00:00+00:00",
        ),
        (deal_row(stage="x" * 200), "stage (column 'Stage'): String should have at most 128 characters"),
        (deal_row(amount="99999999999999999"), "amount (column 'Amount'): amount must be at most"),
        (deal_row(account="a" * 129), "account (column 'Account Name'): String should have at most 128"),
    ],
)
def test_bad_values_are_row_errors_naming_the_field_column_and_value(row: list[str], message: str) -> None:
    error = only_error(csv_text([row]))
    assert error.message.startswith(message), error.message
    assert error.line == 2 and error.kind is ImportKind.DEALS and error.source == "file:export.csv"


def test_a_close_today_in_a_zone_ahead_of_utc_is_not_the_future() -> None:
    # 2026-03-02 is already "today" east of UTC+12 at AS_OF; within the one day of tolerance.
    assert isinstance(deals(csv_text([deal_row(stage="won", closed="2026-03-02")]))[0], RowEvents)


def test_a_repeated_deal_id_is_an_error_on_the_later_row() -> None:
    rows = [deal_row("D1"), deal_row("D2"), deal_row("D1", stage="won", closed="2026-02-01")]
    results = deals(csv_text(rows))
    assert [type(r) for r in results] == [RowEvents, RowEvents, RowError]
    error = results[2]
    assert isinstance(error, RowError)
    assert error.line == 4
    assert (
        error.message
        == "deal_id (column 'Opportunity ID') 'D1' is already on line 2; a deal must appear once per file"
    )


def test_a_row_whose_deal_id_failed_before_is_not_a_repeat() -> None:
    results = deals(csv_text([deal_row("D1", opened="bad"), deal_row("D1")]))
    assert [type(r) for r in results] == [RowError, RowEvents]


def test_the_org_currency_is_checked_when_given() -> None:
    text = csv_text([deal_row(amount="1000 EUR")])
    assert isinstance(deals(text)[0], RowEvents)
    assert "is in EUR, but the org currency is USD" in only_error(text, currency="USD").message


# ------------------------------------------------------------------------------------- event ids


def test_event_ids_are_derived_from_the_deal_so_reimporting_is_idempotent() -> None:
    rows = [
        deal_row("D1", stage="won", closed="2026-02-01"),
        deal_row("D2", stage="lost", closed="2026-02-02"),
    ]
    rows.append(deal_row("D3"))
    text = csv_text(rows)
    first, second = deals(text), deals(text)
    assert first == second
    ids = [e.event_id for r in first if isinstance(r, RowEvents) for e in r.events]
    assert ids == ["crm:D1:created", "crm:D1:won", "crm:D2:created", "crm:D2:lost", "crm:D3:created"]


def test_a_later_export_adds_only_the_close_with_the_same_created_id() -> None:
    before = only_events(csv_text([deal_row(stage="Negotiation", closed="2026-04-01")]))
    after = only_events(csv_text([deal_row(stage="Closed Won", closed="2026-02-20")]))
    assert before.events[0].event_id == after.events[0].event_id == "crm:D1:created"
    assert after.events[1].event_id == "crm:D1:won"


def test_ids_too_long_to_embed_are_hashed_deterministically() -> None:
    long_id = "opp-" + "x" * 120  # a valid 124-character deal id; "crm:...:created" would be too long
    first = only_events(csv_text([deal_row(long_id, stage="won", closed="2026-02-01")]))
    again = only_events(csv_text([deal_row(long_id, stage="won", closed="2026-02-01")]))
    other = only_events(csv_text([deal_row(long_id + "y", stage="won", closed="2026-02-01")]))
    created, won = first.events
    assert created.event_id.startswith("crm:#") and created.event_id.endswith(":created")
    assert won.event_id.endswith(":won") and len(won.event_id) <= 128
    assert [e.event_id for e in again.events] == [created.event_id, won.event_id]
    assert other.events[0].event_id != created.event_id
    assert isinstance(created, DealCreatedEvent) and created.deal_id == long_id


# ------------------------------------------------------------------------------ file handling


def test_line_numbers_count_quoted_line_breaks_before_the_bad_row() -> None:
    header = [*DEAL_HEADER, "Notes"]
    rows = [
        [*deal_row("D1"), "first line\nsecond line\nthird line"],  # lines 2-4
        [*deal_row("D2"), ""],  # line 5
        [*deal_row("D3", opened="yesterday"), "x"],  # line 6
    ]
    results = deals(csv_text(rows, header))
    assert [r.line for r in results] == [2, 5, 6]
    assert isinstance(results[2], RowError) and "'yesterday'" in results[2].message


def test_a_multi_line_row_is_reported_at_its_first_line() -> None:
    header = [*DEAL_HEADER, "Notes"]
    rows = [[*deal_row("D1"), "ok"], [*deal_row("D2", amount="lots"), "a\nb\nc"], [*deal_row("D3"), ""]]
    results = deals(csv_text(rows, header, newline="\r\n"))
    assert [(type(r), r.line) for r in results] == [(RowEvents, 2), (RowError, 3), (RowEvents, 6)]


def test_blank_lines_are_skipped_but_counted() -> None:
    text = "\n" + csv_text([deal_row("D1")]) + "\n\n" + ",,,,,,,\n" + "D2,rep-7,open,2026-01-05,,,,\n"
    results = deals(text)
    assert [(type(r), r.line) for r in results] == [(RowEvents, 3), (RowEvents, 7)]


def test_bom_crlf_and_semicolons_are_read() -> None:
    rows = [
        deal_row("D1", stage="Closed Won", closed="2026-02-01", amount="1,234.50"),
        deal_row("D2", opened="x"),
    ]
    text = "\ufeff" + csv_text(rows, delimiter=";", newline="\r\n")
    first, second = deals(text)
    assert isinstance(first, RowEvents) and [e.type for e in first.events] == ["deal_created", "deal_won"]
    assert isinstance(first.events[1], DealWonEvent) and first.events[1].amount == Decimal("1234.50")
    assert isinstance(second, RowError) and second.line == 3
    assert second.raw == "D2;rep-7;Negotiation;x;;1000;;"


def test_a_bom_before_a_quoted_header_cell_is_removed() -> None:
    header = '\ufeff"Opportunity ID",Owner,Stage,Created Date,Close Date,Amount,Account Name,Product\n'
    text = header + "D1,r,open,2026-01-05,,,,\n"
    assert isinstance(only_events(text), RowEvents)


def test_tabs_are_sniffed_and_the_delimiter_can_be_given() -> None:
    tabbed = csv_text([deal_row()], delimiter="\t")
    assert isinstance(only_events(tabbed), RowEvents)
    # A header with no delimiter at all reads as one column: the mapping then names what is missing.
    piped = csv_text([deal_row()], delimiter="|")
    with pytest.raises(ValueError, match="is not in the header"):
        deals(piped)
    assert isinstance(only_events(piped, delimiter="|"), RowEvents)


def test_a_file_read_from_disk_with_the_recommended_open_works(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "export.csv"
    path.write_bytes(("\ufeff" + csv_text([deal_row()], newline="\r\n")).encode("utf-8"))
    with path.open(newline="", encoding="utf-8-sig") as handle:
        [result] = read_deals(handle, DEAL_MAP, source_name=path.name, as_of=AS_OF)
    assert isinstance(result, RowEvents) and result.line == 2


@pytest.mark.parametrize("text", ["", "\n\n", "\ufeff", " \r\n"])
def test_an_empty_file_has_no_rows_and_no_error(text: str) -> None:
    assert deals(text) == []


def test_a_header_only_file_has_no_rows() -> None:
    assert deals(csv_text([])) == []


def test_a_file_without_the_header_fails_when_called_before_any_row_is_read() -> None:
    text = csv_text([deal_row()])
    without_header = text.split("\n", 1)[1]
    with pytest.raises(
        ValueError, match=r"column 'Opportunity ID' \(for deal_id\) is not in the header"
    ) as caught:
        read_deals(io.StringIO(without_header), DEAL_MAP, source_name="x.csv", as_of=AS_OF)  # not iterated
    assert "The header (the first non-empty line) has the columns: 'D1', 'rep-7'" in str(caught.value)


def test_rows_with_more_or_fewer_values_than_the_header_are_errors() -> None:
    text = csv_text([deal_row("D1")]) + "D2,rep-7,open,2026-01-05,,1,000,,\n" + "D3,rep-7\n"
    ok, surplus, short = deals(text)
    assert isinstance(ok, RowEvents)
    assert isinstance(surplus, RowError) and surplus.line == 3
    assert surplus.message == (
        "the row has 9 values but the header has 8 columns (a delimiter inside an unquoted value?)"
    )
    assert surplus.raw == "D2,rep-7,open,2026-01-05,,1,000,,"
    assert isinstance(short, RowError) and short.line == 4 and "2 values" in short.message


def test_surplus_empty_values_are_errors_too_as_they_hide_a_shift() -> None:
    # The unquoted "1,000" moved "000" into Account Name and the empty Product into a 9th column.
    error = only_error(csv_text([]) + "D1,rep-7,open,2026-01-05,,1,000,,\n")
    assert "9 values but the header has 8 columns" in error.message


def test_a_header_with_a_trailing_delimiter_matches_rows_with_one() -> None:
    text = ",".join(DEAL_HEADER) + ",\n" + ",".join(deal_row()) + ",\n"
    assert isinstance(only_events(text), RowEvents)


def test_an_unclosed_quote_is_reported_with_the_lines_it_swallowed() -> None:
    text = csv_text([deal_row("D1")]) + 'D2,rep-7,"open,2026-01-05,,,,\nD3,rep-7,open,2026-01-05,,,,\n'
    ok, swallowed = deals(text)
    assert isinstance(ok, RowEvents)
    assert isinstance(swallowed, RowError) and swallowed.line == 3
    assert "spans lines 3-4: an unclosed quote?" in swallowed.message


def test_unreadable_csv_is_a_row_error_and_reading_goes_on() -> None:
    # A bare carriage return inside an unquoted field (a file read without newline="").
    lines = [
        ",".join(DEAL_HEADER) + "\n",
        "D1,rep-7,open,2026-01-05,,,a\rb,\n",
        "D2,rep-7,open,2026-01-05,,,,\n",
    ]
    bad, ok = read_deals(lines, DEAL_MAP, source_name="x.csv", as_of=AS_OF)
    assert isinstance(bad, RowError) and bad.line == 2 and bad.message.startswith("unreadable CSV (")
    assert isinstance(ok, RowEvents) and ok.line == 3


def test_misuse_fails_loudly() -> None:
    with pytest.raises(TypeError, match="not a str"):
        read_deals(csv_text([]), DEAL_MAP, source_name="x", as_of=AS_OF)
    with pytest.raises(ValueError, match="as_of must be timezone-aware"):
        read_deals(io.StringIO(""), DEAL_MAP, source_name="x", as_of=datetime(2026, 3, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="a reps mapping cannot read deals"):
        read_deals(io.StringIO(""), REP_MAP, source_name="x", as_of=AS_OF)
    with pytest.raises(ValueError, match="a deals mapping cannot read reps"):
        read_reps(io.StringIO(""), DEAL_MAP, source_name="x")


# ---------------------------------------------------------------------------------------- reps


def test_a_fully_mapped_rep_row_is_a_rep_record() -> None:
    row = [
        "rep-007",
        "Dana Whitfield",
        "emea-central",
        "bavaria",
        "Lena Vogt",
        "$60,000.00",
        "2021/03/15",
        "Seasoned",
    ]
    [result] = reps(csv_text([row], REP_HEADER))
    assert result == RowRep(
        line=2,
        rep=Rep(
            rep_id="rep-007",
            name="Dana Whitfield",
            team="emea-central",
            territory="bavaria",
            manager="Lena Vogt",
            hired_at=date(2021, 3, 15),
            quota_monthly=Decimal("60000.00"),
            mode=ManagementMode.SEASONED,
        ),
    )


def test_a_minimal_rep_mapping_defaults_the_name_quota_and_mode() -> None:
    mapping = parse_mapping("rep=User,team=Team,territory=Region", "reps")
    [result] = reps(
        csv_text([["rep-1", "Ignored", "nordics", "stockholm", "", "", "", ""]], REP_HEADER), mapping
    )
    assert isinstance(result, RowRep) and result.warnings == ()
    assert result.rep == Rep(rep_id="rep-1", name="rep-1", team="nordics", territory="stockholm")


def test_empty_optional_rep_values_are_not_set_and_an_empty_mapped_name_warns() -> None:
    [result] = reps(csv_text([["rep-1", "", "nordics", "stockholm", "", "", "", ""]], REP_HEADER))
    assert isinstance(result, RowRep)
    assert result.rep == Rep(rep_id="rep-1", name="rep-1", team="nordics", territory="stockholm")
    assert result.warnings == ("name (column 'Full Name') is empty; the rep id is used as the name",)


@pytest.mark.parametrize("mode", ["auto", "DEVELOPING", "Seasoned", " seasoned "])
def test_rep_modes_are_case_insensitive(mode: str) -> None:
    [result] = reps(csv_text([["r", "R", "t", "x", "", "", "", mode]], REP_HEADER))
    assert isinstance(result, RowRep) and result.rep.mode == ManagementMode(mode.strip().lower())


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (["", "R", "t", "x", "", "", "", ""], "rep (column 'User') is empty"),
        (["r", "R", "", "x", "", "", "", ""], "team (column 'Team') is empty"),
        (["r", "R", "t", "", "", "", "", ""], "territory (column 'Region') is empty"),
        (
            ["r", "R", "t", "x", "", "", "", "expert"],
            "mode (column 'Mode'): 'expert' is not one of auto, developing, seasoned",
        ),
        (
            ["r", "R", "t", "x", "", "60.000,00", "", ""],
            "quota_monthly (column 'Quota'): '60.000,00' seems to use",
        ),
        (
            ["r", "R", "t", "x", "", "", "15.03.2021", ""],
            "hired_at (column 'Start Date'): '15.03.2021' is not a date",
        ),
        (
            ["r", "N" * 201, "t", "x", "", "", "", ""],
            "name (column 'Full Name'): String should have at most 200",
        ),
        (["r" * 129, "R", "t", "x", "", "", "", ""], "rep (column 'User'): String should have at most 128"),
    ],
)
def test_bad_rep_rows_are_errors_naming_the_column(row: list[str], message: str) -> None:
    [error] = reps(csv_text([row], REP_HEADER))
    assert isinstance(error, RowError) and error.kind is ImportKind.REPS
    assert error.message.startswith(message), error.message
    assert error.line == 2 and error.source == "file:users.csv"


def test_a_repeated_rep_is_kept_with_a_warning_because_later_records_replace_earlier_ones() -> None:
    rows = [["r", "R", "t", "x", "", "", "", ""], ["r", "R", "t2", "x", "", "", "", ""]]
    first, second = reps(csv_text(rows, REP_HEADER, delimiter=";"))
    assert isinstance(first, RowRep) and first.warnings == ()
    assert isinstance(second, RowRep) and second.rep.team == "t2"
    assert second.warnings == ("rep 'r' is also on line 2; this later row replaces it",)


def test_the_reps_header_is_checked_when_called() -> None:
    with pytest.raises(ValueError, match=r"column 'Region' \(for territory\) is not in the header"):
        read_reps(io.StringIO("User,Team\n"), REP_MAP, source_name="users.csv")


# ------------------------------------------------------------------------------- dead letters


def test_a_row_error_becomes_an_invalid_dead_letter_with_file_line_and_the_row_as_csv() -> None:
    header = [*DEAL_HEADER, "Notes"]
    text = csv_text([[*deal_row("D1"), 'a "quoted"\nnote'], [*deal_row("D2", opened="bad"), "x, y"]], header)
    _, error = deals(text)
    assert isinstance(error, RowError)
    rejected_at = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    letter = to_dead_letter(error, rejected_at=rejected_at)
    assert letter.reason is DeadLetterReason.INVALID
    assert letter.source == "file:export.csv" and letter.offset == 4 and letter.partition is None
    assert letter.detail == f"invalid CRM deal row: {error.message}"
    assert letter.rep_id == "rep-7" and letter.event_id is None
    assert letter.payload_excerpt == 'D2,rep-7,Negotiation,bad,,1000,,,"x, y"'
    assert letter.payload_truncated is False and letter.rejected_at == rejected_at


def test_a_dead_letter_of_a_huge_row_is_cut_and_one_without_a_rep_has_none() -> None:
    error = RowError(3, "bad", ImportKind.REPS, "file:users.csv", "x" * 5000)
    letter = to_dead_letter(error, rejected_at=AS_OF)
    assert len(letter.payload_excerpt) == PAYLOAD_EXCERPT_BYTES and letter.payload_truncated
    assert letter.rep_id is None and letter.detail == "invalid CRM rep row: bad"


# ------------------------------------------------------------------------------ the property


@dataclass(frozen=True)
class OpportunitySpec:
    """One generated opportunity and what an independent reading says it must become."""

    deal_id: str
    rep: str
    outcome: StageOutcome
    stage: str
    opened: tuple[str, datetime] | None
    closed: tuple[str, datetime] | None
    amount: Decimal | None
    amount_text: str
    notes: str

    def cells(self) -> list[str]:
        return [
            self.deal_id,
            self.rep,
            self.stage,
            self.opened[0] if self.opened else "",
            self.closed[0] if self.closed else "",
            self.amount_text,
            self.notes,
        ]


def random_case(words: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Each letter upper or lower by one bit of a mask, with some whitespace around."""
    padding = st.sampled_from(["", " ", "  ", "\t"])

    def recase(text: str, mask: int, before: str, after: str) -> str:
        letters = (c.upper() if mask >> i & 1 else c.lower() for i, c in enumerate(text))
        return before + "".join(letters) + after

    return st.builds(recase, words, st.integers(0, 2**16 - 1), padding, padding)


stage_specs = st.one_of(
    st.tuples(st.just(StageOutcome.WON), random_case(st.sampled_from(WON_SYNONYMS))),
    st.tuples(st.just(StageOutcome.LOST), random_case(st.sampled_from(LOST_SYNONYMS))),
    st.tuples(st.just(StageOutcome.OPEN), st.sampled_from(OPEN_STAGES)),
)


@st.composite
def written_times(draw: st.DrawFn) -> tuple[str, datetime]:
    """A CRM date cell and the instant it means (default zone UTC), written in a random format."""
    naive = st.datetimes(
        min_value=datetime(2020, 1, 1),  # noqa: DTZ001 (hypothesis takes naive bounds)
        max_value=datetime(2026, 2, 27, 23, 59, 59),  # noqa: DTZ001
    )
    moment = draw(naive).replace(microsecond=0)
    style = draw(st.integers(0, 5))
    if style == 0:
        return moment.strftime("%Y-%m-%d"), midnight(moment.date())
    if style == 1:
        return moment.strftime("%Y/%m/%d"), midnight(moment.date())
    if style == 2:
        return moment.strftime("%Y-%m-%d %H:%M"), moment.replace(second=0, tzinfo=UTC)
    if style == 3:
        return moment.strftime("%Y-%m-%dT%H:%M:%S"), moment.replace(tzinfo=UTC)
    if style == 4:
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), moment.replace(tzinfo=UTC)
    aware = moment.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=draw(st.integers(-11, 11)))))
    return aware.isoformat(), aware


@st.composite
def opportunities(draw: st.DrawFn, index: int) -> OpportunitySpec:
    outcome, stage = draw(stage_specs)
    cents = draw(st.none() | st.integers(0, 10**11))
    amount = None if cents is None else Decimal(cents).scaleb(-2)
    notes = "".join(draw(st.lists(st.sampled_from(["a", " ", ",", ";", '"', "\n", "\r\n", "é"]), max_size=8)))
    return OpportunitySpec(
        deal_id=f"D-{index}",
        rep=draw(st.sampled_from(["rep-1", "rep-2", "rep 3"])),
        outcome=outcome,
        stage=stage,
        opened=draw(st.none() | written_times()),
        closed=draw(st.none() | written_times()),
        amount=amount,
        amount_text="" if amount is None else draw(st.sampled_from(AMOUNT_STYLES)).format(amount),
        notes=notes,
    )


@st.composite
def opportunity_tables(draw: st.DrawFn) -> list[OpportunitySpec]:
    size = draw(st.integers(0, 15))
    return [draw(opportunities(i)) for i in range(size)]


PROPERTY_HEADER = ["Opportunity ID", "Owner", "Stage", "Created Date", "Close Date", "Amount", "Notes"]
PROPERTY_MAP = parse_mapping(
    "deal_id=Opportunity ID,rep=Owner,stage=Stage,opened_at=Created Date,closed_at=Close Date,amount=Amount",
    "deals",
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    opportunity_tables(),
    st.sampled_from([",", ";"]),
    st.sampled_from(["\n", "\r\n"]),
    st.booleans(),
)
def test_emitted_events_agree_with_an_independent_reading_of_the_table(
    table: list[OpportunitySpec], delimiter: str, newline: str, bom: bool
) -> None:
    text = ("\ufeff" if bom else "") + csv_text(
        [spec.cells() for spec in table], PROPERTY_HEADER, delimiter=delimiter, newline=newline
    )
    results = list(read_deals(io.StringIO(text, newline=""), PROPERTY_MAP, source_name="p.csv", as_of=AS_OF))

    # One result per opportunity, in order, at the line where the opportunity starts.
    assert len(results) == len(table)
    line = 2
    for spec, result in zip(table, results, strict=True):
        assert result.line == line
        line += 1 + spec.notes.count("\n")

    closed_without_date = [s for s in table if s.outcome is not StageOutcome.OPEN and s.closed is None]
    errors = [r for r in results if isinstance(r, RowError)]
    assert len(errors) == len(closed_without_date)
    imported = [(s, r) for s, r in zip(table, results, strict=True) if isinstance(r, RowEvents)]
    assert {s.deal_id for s, _ in imported} == {s.deal_id for s in table} - {
        s.deal_id for s in closed_without_date
    }

    events = [e for _, r in imported for e in r.events]
    created = [e for e in events if isinstance(e, DealCreatedEvent)]
    won = [e for e in events if isinstance(e, DealWonEvent)]
    lost = [e for e in events if isinstance(e, DealLostEvent)]
    assert len(created) == len(imported) == len({e.deal_id for e in created})  # one created per deal
    assert len(won) == sum(1 for s in table if s.outcome is StageOutcome.WON and s.closed is not None)
    assert len(lost) == sum(1 for s in table if s.outcome is StageOutcome.LOST and s.closed is not None)
    assert len({e.event_id for e in events}) == len(events)
    assert sum((e.amount for e in won), Decimal(0)) == sum(
        (s.amount or Decimal(0) for s in table if s.outcome is StageOutcome.WON and s.closed is not None),
        Decimal(0),
    )
    assert sum(1 for e in won if e.attributes == {"amount_missing": True}) == sum(
        1 for s, _ in imported if s.outcome is StageOutcome.WON and s.amount is None
    )

    for spec, result in imported:
        first, *rest = result.events
        assert isinstance(first, DealCreatedEvent)
        assert first.event_id == f"crm:{spec.deal_id}:created" and first.rep_id == spec.rep
        assert first.amount == spec.amount
        assert first.stage == (spec.stage.strip() if spec.outcome is StageOutcome.OPEN else None)
        if spec.opened is not None:
            expected_open = spec.opened[1]
        elif spec.outcome is not StageOutcome.OPEN and spec.closed is not None:
            expected_open = spec.closed[1]
        else:
            expected_open = AS_OF
        assert first.occurred_at == expected_open
        assert bool(first.attributes and first.attributes.get("opened_at_unknown")) == (spec.opened is None)
        if spec.outcome is StageOutcome.OPEN:
            assert rest == []
        else:
            [closing] = rest
            assert spec.closed is not None and closing.occurred_at == spec.closed[1]
            assert closing.type == ("deal_won" if spec.outcome is StageOutcome.WON else "deal_lost")
