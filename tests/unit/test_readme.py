"""The README is the contract producers and operators build against; these tests keep it true.

Every example in the event-contract section must validate against the models, every event type and
dead-letter reason must be documented, the settings table must be exactly what ``schemas/settings.py``
declares, and the Quick start must stay two commands. Each ``*_problems`` function returns what is
wrong with a README text, so every check also runs against a deliberately broken copy to prove it
can fail.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from schemas.deadletter import DeadLetter, DeadLetterReason
from schemas.events import EVENT_MODELS, EVENT_TYPES, SALES_EVENT_ADAPTER, EventKind
from schemas.reps import ManagementMode, Rep
from schemas.settings import Settings, TopicNames

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

CONTRACT_START, CONTRACT_END = "<!-- event-contract:start -->", "<!-- event-contract:end -->"
SETTINGS_START, SETTINGS_END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
# Which model judges the code blocks of each event-contract subsection (events everywhere else).
REP_SECTION, DEAD_LETTER_SECTION = "Rep records", "Dead letters"
COMMON_SECTION, TYPES_SECTION = "Common fields", "Event types"

MODEL_BY_TYPE = dict(zip(EVENT_TYPES, EVENT_MODELS, strict=True))
COMMON_FIELDS = set.intersection(*(set(model.model_fields) for model in EVENT_MODELS))
DEFAULT_TOPICS = TopicNames(Settings.model_fields["topic_prefix"].default)
TOPIC_OF_KIND = {EventKind.ACTIVITY: DEFAULT_TOPICS.activities, EventKind.DEAL: DEFAULT_TOPICS.deals}

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`([^`]+)`")
BOLD_CODE = re.compile(r"\*\*`([^`]+)`\*\*")
UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")


# --- reading markdown -------------------------------------------------------------------------------------


def between(text: str, start: str, end: str) -> str:
    assert text.count(start) == 1, f"expected the marker {start} exactly once in the README"
    assert text.count(end) == 1, f"expected the marker {end} exactly once in the README"
    return text.split(start, 1)[1].split(end, 1)[0]


def section(text: str, heading: str) -> str:
    """The body under a markdown heading, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    match = re.search(rf"^{re.escape(heading)}[ \t]*$", text, re.MULTILINE)
    assert match, f"README has no heading {heading!r}"
    rest = text[match.end() :]
    following = re.search(rf"^#{{1,{level}}} ", _without_fences(rest), re.MULTILINE)
    return rest[: following.start()] if following else rest


def _without_fences(text: str) -> str:
    """Blank out code blocks (same length) so a ``# comment`` inside one is not taken for a heading."""
    return FENCE.sub(lambda m: " " * len(m.group(0)), text)


def subsections(text: str) -> dict[str, str]:
    titles = re.findall(r"^### (.+?)[ \t]*$", _without_fences(text), re.MULTILINE)
    return {title: section(text, f"### {title}") for title in titles}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group("lang"), m.group("body")) for m in FENCE.finditer(text)]


def tables(text: str) -> list[list[list[str]]]:
    """Every pipe table in ``text`` as rows of cells: the header first, the separator row left out."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*_without_fences(text).splitlines(), ""]:
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [cell.strip() for cell in UNESCAPED_PIPE.split(stripped.strip("|"))]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def table_headed(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the one table in ``text`` whose first header cell is ``first_header``."""
    matching = [table for table in tables(text) if table[0][0].lower().startswith(first_header)]
    assert len(matching) == 1, f"expected one table headed {first_header!r}, found {len(matching)}"
    return matching[0][1:]


def first_column_codes(rows: list[list[str]]) -> list[str]:
    """The name each row documents: the first `code` span of its first cell (else the whole cell)."""
    return [(CODE.findall(row[0]) or [row[0]])[0] for row in rows]


def same_names(what: str, documented: list[str], expected: set[str]) -> list[str]:
    problems = [
        f"{what}: {name!r} is listed more than once"
        for name in sorted(set(documented))
        if documented.count(name) > 1
    ]
    problems += [f"{what}: {name!r} is missing" for name in sorted(expected - set(documented))]
    problems += [
        f"{what}: {name!r} is listed but does not exist" for name in sorted(set(documented) - expected)
    ]
    return problems


def contract(readme: str) -> dict[str, str]:
    return subsections(between(readme, CONTRACT_START, CONTRACT_END))


# --- (a) examples ----------------------------------------------------------------------------------------


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:3])


def _csv_reps(body: str) -> list[dict[str, str]]:
    # As `salespulse reps load` reads a CSV: cells trimmed, empty cells mean "not set".
    return [
        {key.strip(): value.strip() for key, value in row.items() if key and value and value.strip()}
        for row in csv.DictReader(io.StringIO(body))
    ]


def _rep_records(lang: str, body: str) -> list[Any]:
    if lang == "csv":
        return _csv_reps(body)
    if lang == "jsonl":
        return [orjson.loads(line) for line in body.splitlines() if line.strip()]
    return [orjson.loads(body)]


def example_problems(readme: str) -> list[str]:
    problems: list[str] = []
    shown_fields: dict[str, set[str]] = {event_type: set() for event_type in EVENT_TYPES}
    shown_rep_fields: set[str] = set()
    for title, text in contract(readme).items():
        for number, (lang, body) in enumerate(fenced_blocks(text), start=1):
            where = f"{title!r} block {number} ({lang or 'no language'})"
            if lang not in ("json", "jsonl", "csv"):
                continue
            try:
                if title == REP_SECTION or lang in ("jsonl", "csv"):
                    records = _rep_records(lang, body)
                    if not records:
                        problems.append(f"{where}: no rep records in the example")
                    for record in records:
                        Rep.model_validate(record)
                        shown_rep_fields.update(record)
                    continue
                document = orjson.loads(body)
                if title == DEAD_LETTER_SECTION:
                    letter = DeadLetter.model_validate(document)
                    missing = set(DeadLetter.model_fields) - letter.model_fields_set
                    if missing:
                        problems.append(f"{where}: the dead-letter example does not show {sorted(missing)}")
                    continue
                batch = document if isinstance(document, list) else [document]
                events = [SALES_EVENT_ADAPTER.validate_python(item) for item in batch]
            except orjson.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON: {exc}")
                continue
            except ValidationError as exc:
                problems.append(f"{where}: does not validate: {_errors(exc)}")
                continue
            if isinstance(document, list) and len({event.rep_id for event in events}) != 1:
                problems.append(f"{where}: a batch must carry the events of exactly one rep")
            for item, event in zip(batch, events, strict=True):
                shown_fields[event.type].update(item)
    for event_type, shown in shown_fields.items():
        specific = set(MODEL_BY_TYPE[event_type].model_fields) - COMMON_FIELDS
        if not shown:
            problems.append(f"event type {event_type!r} has no example")
        elif specific - shown:
            problems.append(f"the {event_type!r} examples do not show {sorted(specific - shown)}")
    if set(Rep.model_fields) - shown_rep_fields:
        problems.append(f"the rep examples do not show {sorted(set(Rep.model_fields) - shown_rep_fields)}")
    return problems


# --- tables of the event contract -------------------------------------------------------------------------


def contract_table_problems(readme: str) -> list[str]:
    parts = contract(readme)
    for needed in (COMMON_SECTION, TYPES_SECTION, DEAD_LETTER_SECTION, REP_SECTION):
        if needed not in parts:
            return [f"the event contract has no '### {needed}' subsection"]
    problems = same_names(
        "common fields", first_column_codes(table_headed(parts[COMMON_SECTION], "field")), COMMON_FIELDS
    )
    type_rows = table_headed(parts[TYPES_SECTION], "type")
    problems += same_names("event types", first_column_codes(type_rows), set(EVENT_TYPES))
    for row in type_rows:
        event_type = (CODE.findall(row[0]) or [""])[0]
        if event_type not in MODEL_BY_TYPE or len(row) < 3:
            continue
        model = MODEL_BY_TYPE[event_type]
        if TOPIC_OF_KIND[model.kind] not in CODE.findall(row[1]):
            problems.append(f"{event_type!r} goes to {TOPIC_OF_KIND[model.kind]!r}, not {row[1]!r}")
        specific = {name: info for name, info in model.model_fields.items() if name not in COMMON_FIELDS}
        listed, bold = set(CODE.findall(row[2])), set(BOLD_CODE.findall(row[2]))
        for name, info in sorted(specific.items()):
            if name not in listed:
                problems.append(f"{event_type!r}: field {name!r} is not in its row")
            elif info.is_required() != (name in bold):
                problems.append(
                    f"{event_type!r}: field {name!r} is required={info.is_required()}; bold it iff so"
                )
    problems += same_names(
        "rep fields", first_column_codes(table_headed(parts[REP_SECTION], "field")), set(Rep.model_fields)
    )
    problems += same_names(
        "management modes",
        first_column_codes(table_headed(parts[REP_SECTION], "mode")),
        {mode.value for mode in ManagementMode},
    )
    return problems


# --- (c) dead-letter reasons ------------------------------------------------------------------------------


def dead_letter_reason_problems(readme: str) -> list[str]:
    parts = contract(readme)
    if DEAD_LETTER_SECTION not in parts:
        return [f"the event contract has no '### {DEAD_LETTER_SECTION}' subsection"]
    rows = table_headed(parts[DEAD_LETTER_SECTION], "reason")
    problems = same_names(
        "dead-letter reasons", first_column_codes(rows), {r.value for r in DeadLetterReason}
    )
    problems += [
        f"dead-letter reason row {row[0]} has no meaning" for row in rows if len(row) < 2 or not row[1]
    ]
    return problems


# --- (b) settings -----------------------------------------------------------------------------------------


def env_name(field_name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{field_name}".upper()


def _shown_default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):  # never print a secret, not even a default one
        return "set" if value.get_secret_value() else "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list):  # set as a JSON list in the environment
        return f"`{json.dumps(list(value))}`"
    return f"`{value}`"


def settings_table() -> str:
    """The Configuration table, generated from ``Settings``: paste it into the README when it drifts."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        meaning = (info.description or "").replace("|", "\\|")
        lines.append(f"| `{env_name(name)}` | {_shown_default(info)} | {meaning} |")
    return "\n".join(lines)


def settings_problems(readme: str) -> list[str]:
    problems = [
        f"Settings.{name} has no Field(description=...) for the README"
        for name, info in Settings.model_fields.items()
        if not info.description
    ]
    if env_name("x") != "SALESPULSE_X":
        problems.append(f"settings are documented with the SALESPULSE_ prefix, not {env_name('')!r}")
    block = between(readme, SETTINGS_START, SETTINGS_END)
    documented = first_column_codes(table_headed(block, "variable"))
    problems += same_names("settings", documented, {env_name(name) for name in Settings.model_fields})
    if not problems and block.strip() != settings_table():
        problems.append(
            "the settings table differs from schemas/settings.py (defaults or descriptions); "
            f"replace it with:\n{settings_table()}"
        )
    return problems


# --- (d) Quick start --------------------------------------------------------------------------------------


def quick_start_commands(readme: str) -> list[str]:
    commands: list[str] = []
    continued = ""
    for _, body in fenced_blocks(section(readme, "## Quick start")):
        for line in body.splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                continued += stripped[:-1].strip() + " "
                continue
            commands.append(continued + stripped)
            continued = ""
    return commands


def quick_start_problems(readme: str) -> list[str]:
    commands = quick_start_commands(readme)
    problems = [] if len(commands) == 2 else [f"Quick start must be exactly two commands, found {commands}"]
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    for command in commands:
        if (target := re.fullmatch(r"make (\S+)", command)) and not re.search(
            rf"^{re.escape(target.group(1))}:", makefile, re.MULTILINE
        ):
            problems.append(f"Quick start runs {command!r}, but the Makefile has no such target")
    return problems


# --- the README as it is ----------------------------------------------------------------------------------

Check = Callable[[str], list[str]]
CHECKS: dict[str, Check] = {
    "examples": example_problems,
    "contract tables": contract_table_problems,
    "dead-letter reasons": dead_letter_reason_problems,
    "settings": settings_problems,
    "quick start": quick_start_problems,
}


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_readme_is_true(readme: str, check: Check) -> None:
    problems = check(readme)
    assert not problems, "\n".join(problems)


# --- every check can fail ---------------------------------------------------------------------------------


def _in_contract(readme: str, edit: Callable[[str], str]) -> str:
    head, rest = readme.split(CONTRACT_START, 1)
    body, tail = rest.split(CONTRACT_END, 1)
    return f"{head}{CONTRACT_START}{edit(body)}{CONTRACT_END}{tail}"


def _drop_examples_of(event_type: str) -> Callable[[str], str]:
    def edit(readme: str) -> str:
        def drop(match: re.Match[str]) -> str:
            mentions = re.search(rf'"type":\s*"{event_type}"', match.group("body"))
            return "" if mentions and match.group("lang") == "json" else match.group(0)

        return _in_contract(readme, lambda body: FENCE.sub(drop, body))

    return edit


def _naive_timestamp(readme: str) -> str:
    return _in_contract(
        readme, lambda body: re.sub(r'("occurred_at":\s*"[^"]*?)(Z|[+-]\d\d:\d\d)"', r'\1"', body, count=1)
    )


def _unknown_field(readme: str) -> str:
    return _in_contract(readme, lambda body: body.replace('"rep_id": "', '"rep": "x", "rep_id": "', 1))


def _drop_field_from_examples(field: str) -> Callable[[str], str]:
    return lambda readme: _in_contract(readme, lambda body: re.sub(rf'"{field}":\s*[^,}}\n]+,?\s*', "", body))


def _drop_rep_field(field: str) -> Callable[[str], str]:
    def without_column(match: re.Match[str]) -> str:
        if match.group("lang") != "csv":
            return match.group(0)
        rows = list(csv.DictReader(io.StringIO(match.group("body"))))
        out = io.StringIO()
        writer = csv.DictWriter(out, [name for name in rows[0] if name != field], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return f"```csv\n{out.getvalue()}```"

    def edit(readme: str) -> str:
        return _in_contract(
            _drop_field_from_examples(field)(readme), lambda body: FENCE.sub(without_column, body)
        )

    return edit


def _bad_rep_mode(readme: str) -> str:
    return _in_contract(readme, lambda body: re.sub(r'"mode":\s*"\w+"', '"mode": "veteran"', body, count=1))


def _bad_csv_row(readme: str) -> str:
    return _in_contract(
        readme, lambda body: re.sub(r"(```csv\n(?:.*\n)*?)```", r"\1,,,,\n```", body, count=1)
    )


def _drop_table_row(code: str) -> Callable[[str], str]:
    return lambda readme: re.sub(rf"^\| `{re.escape(code)}` \|.*\n", "", readme, count=1, flags=re.MULTILINE)


def _add_row_after(code: str, new: str) -> Callable[[str], str]:
    def edit(readme: str) -> str:
        return re.sub(
            rf"^(\| `{re.escape(code)}` \|.*\n)",
            rf"\1| `{new}` | x | x |\n",
            readme,
            count=1,
            flags=re.MULTILINE,
        )

    return edit


def _change_default(readme: str) -> str:
    return readme.replace(
        "| `SALESPULSE_TOPIC_PARTITIONS` | `4` |", "| `SALESPULSE_TOPIC_PARTITIONS` | `8` |"
    )


def _unbold_required_field(readme: str) -> str:
    return re.sub(
        r"^(\| `deal_won` \|.*?)\*\*`amount`\*\*", r"\1`amount`", readme, count=1, flags=re.MULTILINE
    )


def _extra_quick_start_command(readme: str) -> str:
    return readme.replace("make test\n```", "make test\nmake lint\n```", 1)


def _one_quick_start_command(readme: str) -> str:
    return readme.replace("make demo\nmake test\n", "make demo\n", 1)


def _unknown_make_target(readme: str) -> str:
    return readme.replace("make demo\nmake test\n", "make demo\nmake everything\n", 1)


BREAKAGES: list[tuple[str, Callable[[str], str], Check]] = [
    ("an event type loses its example", _drop_examples_of("deal_lost"), example_problems),
    ("an example has a naive timestamp", _naive_timestamp, example_problems),
    ("an example has an unknown field", _unknown_field, example_problems),
    ("no example shows a type-specific field", _drop_field_from_examples("accuracy_m"), example_problems),
    ("a rep example has an unknown mode", _bad_rep_mode, example_problems),
    ("a CSV rep row misses required fields", _bad_csv_row, example_problems),
    ("no rep example shows a rep field", _drop_rep_field("manager"), example_problems),
    ("a common field is not in its table", _drop_table_row("account_id"), contract_table_problems),
    ("a rep field is not in its table", _drop_table_row("quota_monthly"), contract_table_problems),
    ("an event type is not in its table", _drop_table_row("deal_stage_changed"), contract_table_problems),
    ("a required field is not bold", _unbold_required_field, contract_table_problems),
    ("a dead-letter reason is left out", _drop_table_row("too_late"), dead_letter_reason_problems),
    (
        "a dead-letter reason is made up",
        _add_row_after("too_late", "lost_in_space"),
        dead_letter_reason_problems,
    ),
    ("a setting is left out", _drop_table_row("SALESPULSE_HOME"), settings_problems),
    ("a setting is made up", _add_row_after("SALESPULSE_HOME", "SALESPULSE_TURBO"), settings_problems),
    ("a default is wrong", _change_default, settings_problems),
    ("Quick start grows a third command", _extra_quick_start_command, quick_start_problems),
    ("Quick start shrinks to one command", _one_quick_start_command, quick_start_problems),
    ("Quick start runs a missing make target", _unknown_make_target, quick_start_problems),
]


@pytest.mark.parametrize(
    ("breakage", "check"), [(b, c) for _, b, c in BREAKAGES], ids=[n for n, _, _ in BREAKAGES]
)
def test_each_check_catches_its_breakage(readme: str, breakage: Callable[[str], str], check: Check) -> None:
    broken = breakage(readme)
    assert broken != readme, "the breakage no longer applies to the README; update it"
    assert check(broken), "the check did not notice the broken README"
