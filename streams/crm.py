"""CRM CSV exports in, canonical deal events and rep records out.

A CRM export is a table of opportunities (or of users) with the CRM's own column names. The user
names the columns that matter with a ``--map`` string (``parse_mapping``); ``read_deals`` and
``read_reps`` then turn every row into events or a rep record, or into a ``RowError`` saying what
is wrong with it and on which line. A bad row never stops the import, and nothing here raises for
one; what *does* raise ``ValueError`` is a problem with the whole file (a mapped column missing
from the header), and it is raised when ``read_deals`` / ``read_reps`` is called, before any row is
read, so a command can refuse to start.

Re-importing the same file is idempotent: event ids are derived from the deal id and the kind of
event (``crm:{deal_id}:created`` / ``:won`` / ``:lost``), and the pipeline stores an event id once.
Importing a later export of the same CRM adds what changed: a deal that was open last week and is
won now gets its ``deal_won`` event, while its ``deal_created`` is recognised as already stored.

Pure: no broker, no database, no clock. The import time (``as_of``) is passed in.

Reading rules for deals, one row per opportunity:

* ``deal_created`` at ``opened_at``, with the stage (for an open deal), amount, product and
  account when the row has them. A won or lost row has no open stage to report, so its
  ``deal_created`` has no stage.
* a won stage adds ``deal_won`` at ``closed_at``; a lost stage adds ``deal_lost`` at ``closed_at``.
  Every other stage is open and only the ``deal_created`` is emitted (see ``classify_stage``).
* an empty amount leaves the created event without one; a *won* deal with an empty amount is still
  won, with amount 0, ``attributes.amount_missing`` and a warning.
* an empty ``opened_at`` is replaced by ``closed_at`` for a won or lost deal, or by ``as_of`` for
  an open one, with ``attributes.opened_at_unknown`` and a warning. (Not ``closed_at`` for an open
  deal: there it is the *expected* close date, often in the future, and no bound on creation.)
* an open deal's ``closed_at``, when given, is kept as ``attributes.expected_close_at``.
* a won or lost row without ``closed_at`` is an error and emits *nothing*: the close cannot be
  placed in time, and a deal imported as created but not closed would count as open pipeline.
* an empty stage, deal id or rep, an unreadable date or amount, a date more than a day after
  ``as_of`` (a typo like 2062 would make the pipeline judge every later event of that rep late),
  and a deal id seen before in the same file are errors.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from itertools import chain
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from schemas.accounts import Account
from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import (
    MAX_ID_LENGTH,
    DealCreatedEvent,
    DealEvent,
    DealLostEvent,
    DealWonEvent,
)
from schemas.reps import ManagementMode, Rep


class ImportKind(StrEnum):
    """What a CRM export holds: opportunities (deals) or users (reps)."""

    DEALS = "deals"
    REPS = "reps"
    ACCOUNTS = "accounts"


DEAL_REQUIRED_FIELDS: tuple[str, ...] = ("deal_id", "rep", "stage", "opened_at", "closed_at", "amount")
DEAL_OPTIONAL_FIELDS: tuple[str, ...] = ("account", "product")
REP_REQUIRED_FIELDS: tuple[str, ...] = ("rep", "team", "territory")
REP_OPTIONAL_FIELDS: tuple[str, ...] = ("name", "manager", "quota_monthly", "hired_at", "mode")
ACCOUNT_REQUIRED_FIELDS: tuple[str, ...] = ("account", "lat", "lon")
ACCOUNT_OPTIONAL_FIELDS: tuple[str, ...] = ("radius_m", "segment", "name", "owner")

_FIELDS: dict[ImportKind, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ImportKind.DEALS: (DEAL_REQUIRED_FIELDS, DEAL_OPTIONAL_FIELDS),
    ImportKind.REPS: (REP_REQUIRED_FIELDS, REP_OPTIONAL_FIELDS),
    ImportKind.ACCOUNTS: (ACCOUNT_REQUIRED_FIELDS, ACCOUNT_OPTIONAL_FIELDS),
}

# A date-only value is midnight in ``default_tz``; in a CRM whose zone is ahead of it, "today" can
# be up to a day ahead of the import time without being a typo.
FUTURE_TOLERANCE = timedelta(days=1)

# Values quoted in messages are cut here: a message must stay one readable line.
_MAX_QUOTED_VALUE = 60
_MAX_LISTED_COLUMNS = 40


# ------------------------------------------------------------------------------------ the mapping


@dataclass(frozen=True, slots=True)
class ColumnMapping:
    """Which CSV column holds each field, as given with ``--map`` (field -> column name)."""

    kind: ImportKind
    columns: Mapping[str, str]


def _allowed_fields_text(kind: ImportKind) -> str:
    required, optional = _FIELDS[kind]
    return f"required: {', '.join(required)}; optional: {', '.join(optional)}"


def parse_mapping(text: str, kind: ImportKind | str) -> ColumnMapping:
    """Parse ``field=Column Name,field=Column Name,...`` for ``kind`` ("deals", "reps" or "accounts").

    Field names are case-insensitive; column names are kept as written (trimmed) and may hold
    spaces and ``=``, but not commas. Raises ``ValueError`` saying what is allowed.
    """
    kind = ImportKind(kind)
    required, optional = _FIELDS[kind]
    allowed = (*required, *optional)
    usage = f"use field=Column,field=Column,... ({_allowed_fields_text(kind)})"
    columns: dict[str, str] = {}
    unknown: list[str] = []
    for token in text.split(","):
        if not token.strip():
            continue  # a trailing or doubled comma
        field, equals, column = token.partition("=")
        field, column = field.strip().lower().replace("-", "_"), column.strip()
        if not equals:
            raise ValueError(
                f"--map entry {token.strip()!r} has no '='; {usage}. Column names cannot contain commas."
            )
        if not field:
            raise ValueError(f"--map entry {token.strip()!r} has no field name before '='; {usage}")
        if not column:
            raise ValueError(f"--map entry {token.strip()!r} has no column name after '='; {usage}")
        if field not in allowed:
            unknown.append(field)
            continue
        if field in columns:
            raise ValueError(
                f"--map names {field!r} twice ({columns[field]!r} and {column!r}); give each field once"
            )
        columns[field] = column
    if unknown:
        raise ValueError(f"--map has unknown field(s) {', '.join(map(repr, unknown))}; {usage}")
    missing = [field for field in required if field not in columns]
    if missing:
        raise ValueError(f"--map is missing required field(s) {', '.join(missing)}; {usage}")
    return ColumnMapping(kind=kind, columns=MappingProxyType(columns))


def _loose(name: str) -> str:
    return " ".join(name.split()).casefold()


def _column_list(header: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in header[:_MAX_LISTED_COLUMNS])
    more = len(header) - _MAX_LISTED_COLUMNS
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def resolve_columns(mapping: ColumnMapping, header: Sequence[str]) -> dict[str, int]:
    """The index in ``header`` of every mapped field's column.

    A column name matches exactly first, then ignoring case and surrounding or repeated
    whitespace. Raises ``ValueError`` naming every column that is missing (with the columns the
    header has, and a close match when there is one) or that matches more than one column.
    """
    problems: list[str] = []
    indexes: dict[str, int] = {}
    for field, column in mapping.columns.items():
        exact = [i for i, name in enumerate(header) if name == column]
        matches = exact or [i for i, name in enumerate(header) if _loose(name) == _loose(column)]
        if len(matches) == 1:
            indexes[field] = matches[0]
        elif matches:
            positions = ", ".join(str(i + 1) for i in matches)
            problems.append(
                f"column {column!r} (for {field}) matches more than one header column "
                f"(columns {positions}); rename one in the file"
            )
        else:
            close = difflib.get_close_matches(column, header, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"column {column!r} (for {field}) is not in the header{hint}")
    if problems:
        raise ValueError(
            "; ".join(problems)
            + f". The header (the first non-empty line) has the columns: {_column_list(header)}"
        )
    return indexes


# ----------------------------------------------------------------------------- cell value parsing


class StageOutcome(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


def _stage_key(text: str) -> str:
    """ "Closed - Won", "closed/won" and "CLOSEDWON" all become "closedwon"."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


WON_STAGE_KEYS = frozenset({"won", "closedwon", "win"})
LOST_STAGE_KEYS = frozenset({"lost", "closedlost", "loss", "disqualified"})
# An open stage holding one of these words was probably meant as a close (e.g. Zoho's
# "Closed-Lost to Competition"); it stays open, as the rule says, but with a warning.
_CLOSING_WORDS = frozenset({"closed", "close", "won", "win", "lost", "loss", "lose"})


def classify_stage(text: str) -> StageOutcome:
    """Won, lost or open, ignoring case, whitespace and punctuation; unknown stages are open."""
    key = _stage_key(text)
    if key in WON_STAGE_KEYS:
        return StageOutcome.WON
    if key in LOST_STAGE_KEYS:
        return StageOutcome.LOST
    return StageOutcome.OPEN


def _looks_closing(text: str) -> bool:
    return bool(_CLOSING_WORDS & set(re.split(r"[^0-9a-z]+", text.casefold())))


_TIMESTAMP = re.compile(
    r"""
    (?P<year>\d{4})(?P<sep>[-/])(?P<month>\d{1,2})(?P=sep)(?P<day>\d{1,2})
    (?:
        (?:[Tt]|\s+)(?P<hour>\d{1,2}):(?P<minute>\d{2})
        (?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?
        \s*(?P<offset>[Zz]|[+-]\d{2}(?::?\d{2})?)?
    )?
    """,
    re.VERBOSE,
)
_TIMESTAMP_FORMATS = "YYYY-MM-DD, YYYY/MM/DD, YYYY-MM-DD HH:MM[:SS] or ISO 8601 with an offset"


def _quote(value: str) -> str:
    if len(value) > _MAX_QUOTED_VALUE:
        value = value[: _MAX_QUOTED_VALUE - 1] + "…"
    return repr(value)


def parse_timestamp(text: str, default_tz: tzinfo = UTC) -> datetime:
    """An aware datetime from a CRM date or date-time cell.

    Accepts ``2026-03-05`` and ``2026/03/05`` (midnight in ``default_tz``), ``2026-03-05 14:30``,
    ``2026-03-05T14:30:00[.fff]`` (naive: in ``default_tz``) and the same with ``Z`` or an offset
    (``+02:00``, ``+0200``, ``+02``). Day-first or month-first dates (``05/03/2026``) are
    ambiguous and rejected. The result keeps the written offset. Raises ``ValueError``.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{_quote(text)} is not a date; use {_TIMESTAMP_FORMATS}")
    parts = match.groupdict()
    zone: tzinfo = default_tz
    offset = parts["offset"]
    if offset in ("Z", "z"):
        zone = UTC
    elif offset:
        digits = offset[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + int(digits[2:] or 0)
        try:
            zone = timezone(timedelta(minutes=-minutes if offset[0] == "-" else minutes))
        except ValueError:
            raise ValueError(f"{_quote(text)} has an impossible offset {offset}") from None
    fraction = (parts["fraction"] or "").ljust(6, "0")[:6]
    try:
        return datetime(
            int(parts["year"]),
            int(parts["month"]),
            int(parts["day"]),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            int(fraction),
            tzinfo=zone,
        )
    except ValueError as exc:
        raise ValueError(f"{_quote(text)} is not a valid date ({exc})") from None


def parse_date(text: str) -> date:
    """The calendar date a cell shows: a date or a date-time (its date as written, offset or not)."""
    return parse_timestamp(text, UTC).date()


_GROUPED_OR_PLAIN = re.compile(r"(?:\d+|\d{1,3}(?:,\d{3})+)(?:\.\d+)?|\.\d+")
# One dot followed by exactly three digits after a short, non-zero integer part: 1.234 is 1234
# in much of Europe and 1.234 elsewhere. Money rarely has three decimals, so refuse to guess.
_AMBIGUOUS_DOT = re.compile(r"[1-9]\d{0,2}\.\d{3}")
_AMOUNT_FORMATS = "e.g. 1234.50, 1,234.50, $1,234.50 or 1234.50 EUR"


def _is_code(text: str) -> bool:
    return len(text) == 3 and text.isascii() and text.isalpha() and text.isupper()


def _peel_currency(text: str) -> tuple[str, str | None]:
    """The number of a money cell without its currency symbol(s) and three-letter code, and the code.

    A code is three capitals set apart from other letters, as CRMs write it ("USD 12", "12EUR"),
    so that "abc1" is refused as not an amount rather than read as 1 in currency ABC.
    """
    rest = text.strip()
    codes: list[str] = []
    while True:
        before = rest
        if len(rest) > 3 and _is_code(rest[:3]) and not rest[3].isalpha():
            codes.append(rest[:3].upper())
            rest = rest[3:]
        if len(rest) > 3 and _is_code(rest[-3:]) and not rest[-4].isalpha():
            codes.append(rest[-3:].upper())
            rest = rest[:-3]
        rest = rest.strip()
        if rest and unicodedata.category(rest[0]) == "Sc":
            rest = rest[1:]
        if rest and unicodedata.category(rest[-1]) == "Sc":
            rest = rest[:-1]
        rest = rest.strip()
        if rest == before:
            break
    if len(set(codes)) > 1:
        raise ValueError(f"{_quote(text)} names more than one currency ({', '.join(codes)})")
    return rest, codes[0] if codes else None


def parse_amount(text: str, *, currency: str | None = None) -> Decimal:
    """A non-negative amount from a CRM money cell.

    Takes a dot as the decimal separator and commas (or spaces) between thousands, with an
    optional currency symbol or three-letter code. Refuses what it would have to guess:
    ``1.234,50`` and ``1234,50`` (a decimal comma) and ``1.234`` (thousands or three decimals?).
    With ``currency`` (the org currency), a different currency code is an error, not a silent
    mix of currencies. Raises ``ValueError``.
    """
    number, code = _peel_currency(text)
    if currency is not None and code is not None and code != currency.upper():
        raise ValueError(
            f"{_quote(text)} is in {code}, but the org currency is {currency.upper()}; convert it first"
        )
    negative = number.startswith("-")
    if negative:
        number = number[1:].lstrip()
        while number and unicodedata.category(number[0]) == "Sc":
            number = number[1:].lstrip()
    number = "".join(number.split())  # "12 345.00", with ordinary or non-breaking spaces
    decimal_comma = number.rfind(",") > number.rfind(".")  # "1234,50", "1.234,50"; not "1,234"
    if decimal_comma and not _GROUPED_OR_PLAIN.fullmatch(number):
        raise ValueError(
            f"{_quote(text)} seems to use a decimal comma; write it with a decimal point (1234.50)"
        )
    if _AMBIGUOUS_DOT.fullmatch(number):
        raise ValueError(
            f"{_quote(text)} is ambiguous (thousands separator or three decimals?); "
            f"write {number.replace('.', '')} or {number}0"
        )
    if not _GROUPED_OR_PLAIN.fullmatch(number):
        raise ValueError(f"{_quote(text)} is not an amount; use {_AMOUNT_FORMATS}")
    try:
        value = Decimal(number.replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimal digits
        raise ValueError(f"{_quote(text)} is not an amount; use {_AMOUNT_FORMATS}") from None
    if negative and value != 0:
        raise ValueError(f"{_quote(text)} is negative; amounts must not be negative")
    return value


# -------------------------------------------------------------------------------- row results


@dataclass(frozen=True, slots=True)
class RowEvents:
    """The events of one deal row. ``line`` is the row's first line in the file (header = 1)."""

    line: int
    events: tuple[DealEvent, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RowRep:
    """The rep record of one row. ``line`` is the row's first line in the file (header = 1)."""

    line: int
    rep: Rep
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RowAccount:
    """The account record of one row. ``line`` is the row's first line in the file (header = 1)."""

    line: int
    account: Account
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that could not be imported, and why.

    ``line`` is the row's first line in the file as an editor shows it (header = 1); ``raw`` is
    the row's cells written back as one CSV record; ``source`` is ``file:NAME``.
    """

    line: int
    message: str
    kind: ImportKind
    source: str
    raw: str
    rep_id: str | None = None


def to_dead_letter(error: RowError, *, rejected_at: datetime) -> DeadLetter:
    """The dead letter of a rejected row (reason ``invalid``, the line number as offset)."""
    noun = {ImportKind.DEALS: "deal", ImportKind.REPS: "rep", ImportKind.ACCOUNTS: "account"}[error.kind]
    return DeadLetter.of(
        DeadLetterReason.INVALID,
        f"invalid CRM {noun} row: {error.message}",
        error.raw.encode("utf-8"),
        source=error.source,
        offset=error.line,
        rep_id=error.rep_id[:MAX_ID_LENGTH] if error.rep_id else None,
        rejected_at=rejected_at,
    )


# ------------------------------------------------------------------------------------ reading


class _RowProblem(ValueError):
    """Why one row cannot be imported (caught per row, never leaves this module)."""


@dataclass(frozen=True, slots=True)
class _Row:
    """One record of the table: its first and last line, its cells trimmed and as read."""

    line: int
    last_line: int
    cells: tuple[str, ...]
    original: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _BadRecord:
    """A record that is not a row of the table: unreadable CSV, or not as wide as the header."""

    line: int
    message: str
    raw: str


class _Table:
    """The rows of a CSV text after its header, with their physical line numbers."""

    def __init__(self, lines: Iterable[str], delimiter: str | None) -> None:
        if isinstance(lines, str):
            raise TypeError("pass a text stream (an open file or io.StringIO(text)), not a str")
        source = iter(lines)
        # Read up to the first non-blank line ourselves: it sniffs the delimiter, and a BOM must
        # go before the CSV parser sees it (before a quote it would make the quote literal).
        prefix: list[str] = []
        for line in source:
            if not prefix:
                line = line.removeprefix("\ufeff")
            prefix.append(line)
            if line.strip():
                break
        self.delimiter = delimiter or _sniff_delimiter(prefix[-1] if prefix else "")
        self._reader = csv.reader(chain(prefix, source), delimiter=self.delimiter)
        self._last_line = 0
        self.header: list[str] | None = None
        for row in self._rows():
            if isinstance(row, _BadRecord):
                raise ValueError(f"cannot read the header on line {row.line}: {row.message}")
            self.header = list(row.cells)
            break

    def _rows(self) -> Iterator[_Row | _BadRecord]:
        """Non-blank records, or what the CSV parser said about a record it rejected.

        A record's line is its *first* physical line: the line after the previous record's last
        one (csv's ``line_num`` counts every line read, quoted line breaks included).
        """
        while True:
            first = self._last_line + 1
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self._last_line = self._reader.line_num
                yield _BadRecord(first, f"unreadable CSV ({exc})", "")
                continue
            self._last_line = self._reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # a blank line, or one of only delimiters (spreadsheets append these)
            yield _Row(first, self._last_line, tuple(cell.strip() for cell in cells), tuple(cells))

    def records(self) -> Iterator[_Row | _BadRecord]:
        """Data rows whose cells line up with the header, and the records that do not."""
        width = len(self.header or ())
        for row in self._rows():
            if isinstance(row, _BadRecord):
                yield row
                continue
            # Strict, even for surplus empty values: an unquoted "1,000" in a row whose last
            # columns are empty shifts every value after it and looks just like that.
            if len(row.cells) != width:
                yield _BadRecord(row.line, _width_problem(row, width), self.raw(row))
                continue
            yield row

    def raw(self, row: _Row) -> str:
        """The record written back as CSV text (for a dead letter's payload excerpt)."""
        return _csv_text(row.original, self.delimiter)


def _width_problem(row: _Row, width: int) -> str:
    problem = f"the row has {len(row.cells)} values but the header has {width} columns"
    if row.last_line > row.line:
        return f"{problem}; it spans lines {row.line}-{row.last_line}: an unclosed quote?"
    if len(row.cells) > width:
        return f"{problem} (a delimiter inside an unquoted value?)"
    return problem


def _sniff_delimiter(header_line: str) -> str:
    """The most frequent of comma, semicolon and tab outside quotes in the header (comma on ties)."""
    counts = dict.fromkeys((",", ";", "\t"), 0)
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: (counts[d], d == ","))
    return best if counts[best] else ","


def _csv_text(cells: Sequence[str], delimiter: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(cells)
    return buffer.getvalue()


def _describe_validation(
    error: ValidationError, columns: Mapping[str, str], locations: Mapping[str, str]
) -> str:
    """One line for a pydantic error: ``field (column 'X'): problem; ...``."""
    parts = []
    for detail in error.errors()[:5]:
        model_field = str(detail["loc"][0]) if detail["loc"] else ""
        field = locations.get(model_field, model_field or "row")
        where = f"{field} (column {columns[field]!r})" if field in columns else field
        message = str(detail["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class _Cells:
    """A data row's values by field name, with the column names for messages."""

    def __init__(self, row: _Row, indexes: Mapping[str, int], columns: Mapping[str, str]) -> None:
        self.row = row
        self._indexes = indexes
        self.columns = columns

    def get(self, field: str) -> str:
        """The trimmed value, '' when empty or when the field is not mapped."""
        index = self._indexes.get(field)
        return self.row.cells[index] if index is not None else ""

    def where(self, field: str) -> str:
        return f"{field} (column {self.columns[field]!r})"

    def required(self, field: str, why: str = "") -> str:
        value = self.get(field)
        if not value:
            raise _RowProblem(f"{self.where(field)} is empty{why}")
        return value

    def timestamp(self, field: str, default_tz: tzinfo) -> datetime | None:
        value = self.get(field)
        if not value:
            return None
        try:
            return parse_timestamp(value, default_tz)
        except ValueError as exc:
            raise _RowProblem(f"{self.where(field)}: {exc}") from None

    def amount(self, field: str, currency: str | None) -> Decimal | None:
        value = self.get(field)
        if not value:
            return None
        try:
            return parse_amount(value, currency=currency)
        except ValueError as exc:
            raise _RowProblem(f"{self.where(field)}: {exc}") from None


def _event_id(deal_id: str, suffix: str) -> str:
    event_id = f"crm:{deal_id}:{suffix}"
    if len(event_id) <= MAX_ID_LENGTH:
        return event_id
    # Still deterministic for ids too long to embed; "#" + 32 hex digits cannot be such an id.
    digest = hashlib.blake2b(deal_id.encode("utf-8"), digest_size=16).hexdigest()
    return f"crm:#{digest}:{suffix}"


def _check_not_future(cells: _Cells, field: str, moment: datetime, as_of: datetime) -> None:
    if moment > as_of + FUTURE_TOLERANCE:
        raise _RowProblem(
            f"{cells.where(field)}: {_quote(cells.get(field))} is after the import time "
            f"{as_of.isoformat()}; a closed or created deal cannot be in the future (a typo in the year?)"
        )


# Pydantic error locations of deal events -> mapping fields, per event type.
_DEAL_LOCATIONS = {"rep_id": "rep", "account_id": "account", "event_id": "deal_id"}
_CREATED_LOCATIONS = {**_DEAL_LOCATIONS, "occurred_at": "opened_at"}
_CLOSED_LOCATIONS = {**_DEAL_LOCATIONS, "occurred_at": "closed_at"}


def _deal_events(
    cells: _Cells,
    *,
    as_of: datetime,
    default_tz: tzinfo,
    currency: str | None,
) -> tuple[tuple[DealEvent, ...], list[str]]:
    deal_id = cells.required("deal_id")
    rep_id = cells.required("rep")
    stage_text = cells.required("stage", ": cannot tell whether the deal is open, won or lost")
    outcome = classify_stage(stage_text)
    warnings: list[str] = []
    if outcome is StageOutcome.OPEN and _looks_closing(stage_text):
        warnings.append(f"stage {_quote(stage_text)} is not a known won or lost stage; imported as open")

    closed_at = cells.timestamp("closed_at", default_tz)
    closed = outcome is not StageOutcome.OPEN
    if closed:
        if closed_at is None:
            raise _RowProblem(
                f"{cells.where('closed_at')} is empty, but the deal is {outcome} "
                f"(stage {_quote(stage_text)}): the close cannot be placed in time, "
                "so nothing of this deal was imported"
            )
        _check_not_future(cells, "closed_at", closed_at, as_of)

    opened_at = cells.timestamp("opened_at", default_tz)
    created_attributes: dict[str, str | int | float | bool] = {}
    if opened_at is None:
        opened_at = closed_at if closed and closed_at is not None else as_of
        created_attributes["opened_at_unknown"] = True
        instead = "closed_at" if closed else "the import time"
        warnings.append(f"{cells.where('opened_at')} is empty; created at {instead} instead")
    else:
        _check_not_future(cells, "opened_at", opened_at, as_of)
    if not closed and closed_at is not None:
        created_attributes["expected_close_at"] = closed_at.astimezone(UTC).isoformat()
    if closed and closed_at is not None and closed_at < opened_at:
        warnings.append(f"closed_at {closed_at.isoformat()} is before opened_at {opened_at.isoformat()}")

    amount = cells.amount("amount", currency)
    account_id = cells.get("account") or None
    try:
        created = DealCreatedEvent(
            event_id=_event_id(deal_id, "created"),
            type="deal_created",
            rep_id=rep_id,
            occurred_at=opened_at,
            account_id=account_id,
            deal_id=deal_id,
            amount=amount,
            stage=stage_text if outcome is StageOutcome.OPEN else None,
            product=cells.get("product") or None,
            attributes=created_attributes or None,
        )
    except ValidationError as exc:
        raise _RowProblem(_describe_validation(exc, cells.columns, _CREATED_LOCATIONS)) from None
    if closed_at is None or outcome is StageOutcome.OPEN:
        return (created,), warnings
    closing: DealEvent
    try:
        if outcome is StageOutcome.WON:
            if amount is None:
                warnings.append(f"{cells.where('amount')} is empty for a won deal; recorded as 0")
            closing = DealWonEvent(
                event_id=_event_id(deal_id, "won"),
                type="deal_won",
                rep_id=rep_id,
                occurred_at=closed_at,
                account_id=account_id,
                deal_id=deal_id,
                amount=Decimal(0) if amount is None else amount,
                attributes={"amount_missing": True} if amount is None else None,
            )
        else:
            closing = DealLostEvent(
                event_id=_event_id(deal_id, "lost"),
                type="deal_lost",
                rep_id=rep_id,
                occurred_at=closed_at,
                account_id=account_id,
                deal_id=deal_id,
            )
    except ValidationError as exc:
        raise _RowProblem(_describe_validation(exc, cells.columns, _CLOSED_LOCATIONS)) from None
    return (created, closing), warnings


def _require_aware(as_of: datetime) -> None:
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (the import time, e.g. datetime.now(UTC))")


def _open(
    stream: Iterable[str], mapping: ColumnMapping, kind: ImportKind, delimiter: str | None
) -> tuple[_Table, dict[str, int]]:
    if mapping.kind is not kind:
        raise ValueError(f"a {mapping.kind} mapping cannot read {kind}; parse it with kind={kind.value!r}")
    table = _Table(stream, delimiter)
    indexes = resolve_columns(mapping, table.header) if table.header is not None else {}
    return table, indexes


def read_deals(
    stream: Iterable[str],
    mapping: ColumnMapping,
    *,
    source_name: str,
    as_of: datetime,
    default_tz: tzinfo = UTC,
    delimiter: str | None = None,
    currency: str | None = None,
) -> Iterator[RowEvents | RowError]:
    """The events of every opportunity row of a CRM export, or the error of each bad row.

    ``stream`` is the CSV text, e.g. ``path.open(newline="", encoding="utf-8-sig")`` (a BOM is
    also removed here; CRLF and quoted multi-line values are fine). ``source_name`` names the file
    in dead letters (``file:NAME``). ``as_of`` is the import time: the creation time of an open
    deal with no ``opened_at``, and the latest accepted date. Naive dates are in ``default_tz``.
    ``delimiter`` None sniffs comma, semicolon or tab from the header. ``currency`` (the org
    currency), when given, rejects amounts marked with another currency code.

    Raises ``ValueError`` at once for a mapping that does not fit the header or a naive
    ``as_of``; an empty file (or a header only) yields nothing. Rows are read lazily.
    """
    _require_aware(as_of)
    table, indexes = _open(stream, mapping, ImportKind.DEALS, delimiter)
    return _deal_results(table, indexes, mapping, f"file:{source_name}", as_of, default_tz, currency)


def _deal_results(
    table: _Table,
    indexes: dict[str, int],
    mapping: ColumnMapping,
    source: str,
    as_of: datetime,
    default_tz: tzinfo,
    currency: str | None,
) -> Iterator[RowEvents | RowError]:
    first_line_of_deal: dict[str, int] = {}
    for record in table.records():
        if isinstance(record, _BadRecord):
            yield RowError(record.line, record.message, ImportKind.DEALS, source, record.raw)
            continue
        cells = _Cells(record, indexes, mapping.columns)
        rep_id = cells.get("rep") or None
        try:
            deal_id = cells.get("deal_id")
            if deal_id in first_line_of_deal:
                raise _RowProblem(
                    f"{cells.where('deal_id')} {_quote(deal_id)} is already on line "
                    f"{first_line_of_deal[deal_id]}; a deal must appear once per file"
                )
            events, warnings = _deal_events(cells, as_of=as_of, default_tz=default_tz, currency=currency)
        except _RowProblem as exc:
            yield RowError(record.line, str(exc), ImportKind.DEALS, source, table.raw(record), rep_id)
            continue
        first_line_of_deal[deal_id] = record.line
        yield RowEvents(record.line, events, tuple(warnings))


def _rep_record(cells: _Cells, currency: str | None) -> tuple[Rep, list[str]]:
    rep_id = cells.required("rep")
    warnings: list[str] = []
    name = cells.get("name")
    if not name:
        if "name" in cells.columns:
            warnings.append(f"{cells.where('name')} is empty; the rep id is used as the name")
        name = rep_id
    values: dict[str, Any] = {
        "rep_id": rep_id,
        "name": name,
        "team": cells.required("team"),
        "territory": cells.required("territory"),
    }
    if manager := cells.get("manager"):
        values["manager"] = manager
    if hired := cells.get("hired_at"):
        try:
            values["hired_at"] = parse_date(hired)
        except ValueError as exc:
            raise _RowProblem(f"{cells.where('hired_at')}: {exc}") from None
    quota = cells.amount("quota_monthly", currency)
    if quota is not None:
        values["quota_monthly"] = quota
    if mode := cells.get("mode"):
        try:
            values["mode"] = ManagementMode(mode.casefold())
        except ValueError:
            allowed = ", ".join(m.value for m in ManagementMode)
            raise _RowProblem(f"{cells.where('mode')}: {_quote(mode)} is not one of {allowed}") from None
    try:
        return Rep.model_validate(values), warnings
    except ValidationError as exc:
        raise _RowProblem(_describe_validation(exc, cells.columns, {"rep_id": "rep"})) from None


def read_reps(
    stream: Iterable[str],
    mapping: ColumnMapping,
    *,
    source_name: str,
    delimiter: str | None = None,
    currency: str | None = None,
) -> Iterator[RowRep | RowError]:
    """The rep record of every row of a CRM user export, or the error of each bad row.

    Same file handling as ``read_deals``. The name defaults to the rep id; quota is an amount
    (``parse_amount``); ``hired_at`` is the date as written; mode is auto, developing or seasoned
    in any case. A rep repeated in the file is kept (a later record replaces an earlier one, as on
    the reps topic) with a warning. Raises ``ValueError`` at once when the mapping does not fit.
    """
    table, indexes = _open(stream, mapping, ImportKind.REPS, delimiter)
    return _rep_results(table, indexes, mapping, f"file:{source_name}", currency)


def _rep_results(
    table: _Table, indexes: dict[str, int], mapping: ColumnMapping, source: str, currency: str | None
) -> Iterator[RowRep | RowError]:
    first_line_of_rep: dict[str, int] = {}
    for record in table.records():
        if isinstance(record, _BadRecord):
            yield RowError(record.line, record.message, ImportKind.REPS, source, record.raw)
            continue
        cells = _Cells(record, indexes, mapping.columns)
        try:
            rep, warnings = _rep_record(cells, currency)
        except _RowProblem as exc:
            rep_id = cells.get("rep") or None
            yield RowError(record.line, str(exc), ImportKind.REPS, source, table.raw(record), rep_id)
            continue
        if rep.rep_id in first_line_of_rep:
            earlier = first_line_of_rep[rep.rep_id]
            warnings.append(f"rep {_quote(rep.rep_id)} is also on line {earlier}; this later row replaces it")
        first_line_of_rep.setdefault(rep.rep_id, record.line)
        yield RowRep(record.line, rep, tuple(warnings))


_COORDINATE = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)")


def parse_coordinate(text: str) -> float:
    """A decimal-degree coordinate: ``48.1374``, ``-0.1278``, or with a decimal comma (``48,1374``,
    as spreadsheets write it in much of Europe). Degrees-minutes-seconds are not read."""
    value = text.strip()
    if not _COORDINATE.fullmatch(value):
        raise ValueError(
            f"{_quote(value)} is not a decimal-degree coordinate (e.g. 48.1374 or -0.1278; "
            "degrees-minutes-seconds are not read)"
        )
    return float(value.replace(",", "."))


def _account_record(cells: _Cells) -> tuple[Account, list[str]]:
    account_id = cells.required("account")
    warnings: list[str] = []
    name = cells.get("name")
    if not name:
        if "name" in cells.columns:
            warnings.append(f"{cells.where('name')} is empty; the account id is used as the name")
        name = account_id
    values: dict[str, Any] = {"account_id": account_id, "name": name}
    lat_text, lon_text = cells.get("lat"), cells.get("lon")
    if lat_text or lon_text:
        for field in ("lat", "lon"):
            text = cells.required(field, "; give lat and lon together")
            try:
                values[field] = parse_coordinate(text)
            except ValueError as exc:
                raise _RowProblem(f"{cells.where(field)}: {exc}") from None
    else:
        warnings.append(
            f"account {_quote(account_id)} has no position; visits to it stay unlocated until it has one"
        )
    if radius := cells.get("radius_m"):
        try:
            values["radius_m"] = float(radius.replace(",", "."))
        except ValueError:
            where = cells.where("radius_m")
            raise _RowProblem(f"{where}: {_quote(radius)} is not a number of metres") from None
    if segment := cells.get("segment"):
        values["segment"] = segment
    if owner := cells.get("owner"):
        values["owner_rep_id"] = owner
    try:
        return Account.model_validate(values), warnings
    except ValidationError as exc:
        raise _RowProblem(
            _describe_validation(exc, cells.columns, {"account_id": "account", "owner_rep_id": "owner"})
        ) from None


def read_accounts(
    stream: Iterable[str],
    mapping: ColumnMapping,
    *,
    source_name: str,
    delimiter: str | None = None,
) -> Iterator[RowAccount | RowError]:
    """The account record of every row of a CRM account export, or the error of each bad row.

    Same file handling as ``read_deals``. Coordinates are decimal degrees (``parse_coordinate``);
    a row with neither lat nor lon is imported without a position (with a warning); ``radius_m``
    is metres (empty: ``schemas.accounts.DEFAULT_RADIUS_M``); ``owner`` is the rep the account is
    assigned to. An account repeated in the file is kept (the later row replaces the earlier)
    with a warning. Raises ``ValueError`` at once when the mapping does not fit the header.
    """
    table, indexes = _open(stream, mapping, ImportKind.ACCOUNTS, delimiter)
    return _account_results(table, indexes, mapping, f"file:{source_name}")


def _account_results(
    table: _Table, indexes: dict[str, int], mapping: ColumnMapping, source: str
) -> Iterator[RowAccount | RowError]:
    first_line_of_account: dict[str, int] = {}
    for record in table.records():
        if isinstance(record, _BadRecord):
            yield RowError(record.line, record.message, ImportKind.ACCOUNTS, source, record.raw)
            continue
        cells = _Cells(record, indexes, mapping.columns)
        try:
            account, warnings = _account_record(cells)
        except _RowProblem as exc:
            rep_id = cells.get("owner") or None
            yield RowError(record.line, str(exc), ImportKind.ACCOUNTS, source, table.raw(record), rep_id)
            continue
        if account.account_id in first_line_of_account:
            earlier = first_line_of_account[account.account_id]
            warnings.append(
                f"account {_quote(account.account_id)} is also on line {earlier}; this later row replaces it"
            )
        first_line_of_account.setdefault(account.account_id, record.line)
        yield RowAccount(record.line, account, tuple(warnings))


__all__ = [
    "ACCOUNT_OPTIONAL_FIELDS",
    "ACCOUNT_REQUIRED_FIELDS",
    "DEAL_OPTIONAL_FIELDS",
    "DEAL_REQUIRED_FIELDS",
    "FUTURE_TOLERANCE",
    "LOST_STAGE_KEYS",
    "REP_OPTIONAL_FIELDS",
    "REP_REQUIRED_FIELDS",
    "WON_STAGE_KEYS",
    "ColumnMapping",
    "ImportKind",
    "RowAccount",
    "RowError",
    "RowEvents",
    "RowRep",
    "StageOutcome",
    "classify_stage",
    "parse_amount",
    "parse_coordinate",
    "parse_date",
    "parse_mapping",
    "parse_timestamp",
    "read_accounts",
    "read_deals",
    "read_reps",
    "resolve_columns",
    "to_dead_letter",
]
