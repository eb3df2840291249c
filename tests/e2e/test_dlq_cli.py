"""`salespulse dlq list` and `salespulse dlq replay` end to end: a file with bad lines through the
embedded pipeline, its dead letters listed from ClickHouse, and replayed once a fix (a raised size
limit, a raised grace) makes them valid; what cannot be replayed says why."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import Cli, CliResult, clickhouse_of

pytestmark = pytest.mark.e2e

NAME = "events.jsonl"
SOURCE = f"file:{NAME}"
ACTIVITIES = "salespulse.activities"
SMALL_LIMIT = {"SALESPULSE_MAX_MESSAGE_BYTES": "1024"}


def ev(event_id: str, kind: str, rep: str, at: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "type": kind, "rep_id": rep, "occurred_at": at, **fields}


# Valid on their own; the third is 71 days behind r1's newest activity, the fourth reuses a1's id.
GOOD = [
    ev("a1", "call", "r1", "2026-05-10T09:00:00Z", outcome="connected"),
    ev("a2", "email", "r1", "2026-05-11T09:00:00Z"),
    ev("d1", "deal_created", "r2", "2026-05-12T09:00:00Z", deal_id="D1", amount="900.00"),
]
LATE = ev("late", "call", "r1", "2026-03-01T09:00:00Z")
CONFLICT = ev("a1", "email", "r1", "2026-05-10T09:00:00Z")
# Valid, but over a 1 KiB message limit (and under the 2 KiB excerpt: stored whole).
BIG = ev("big", "demo", "r1", "2026-05-11T10:00:00Z", attributes={"notes": "n" * 700, "more": "m" * 300})
# Invalid, and over the limit and the 2 KiB excerpt: too_large, and stored cut.
LONG_INVALID = ev("long", "call", "r1", "2026-05-11T11:00:00Z", account_id="x" * 3000)


def write_file(path: Path) -> dict[int, bytes]:
    """The file, and its lines by number (1-based) as written."""
    lines = [
        orjson.dumps(GOOD[0]),
        orjson.dumps(GOOD[1]),
        b"not json at all",
        orjson.dumps(ev("tp", "teleport", "r1", "2026-05-11T09:00:00Z")),
        orjson.dumps(ev("naive", "call", "r1", "2026-05-11T09:00:00")),
        orjson.dumps(BIG),
        orjson.dumps(LONG_INVALID),
        orjson.dumps(LATE),
        orjson.dumps(CONFLICT),
        orjson.dumps(GOOD[2]),
    ]
    assert 1024 < len(lines[5]) < 2048 and len(lines[6]) > 2048
    path.write_bytes(b"\n".join(lines) + b"\n")
    return dict(enumerate(lines, start=1))


def ok(result: CliResult) -> CliResult:
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.output, result.describe()
    return result


def as_json(result: CliResult) -> Any:
    return json.loads(ok(result).stdout)


def replay_file(cli: Cli, tmp_path: Path) -> dict[int, bytes]:
    path = tmp_path / NAME
    lines = write_file(path)
    ok(cli.run_with(SMALL_LIMIT, "replay", str(path)))
    return lines


def test_dlq_list_shows_each_dead_letter_once_with_its_origin_and_filters(cli: Cli, tmp_path: Path) -> None:
    lines = replay_file(cli, tmp_path)

    letters = as_json(cli.run("dlq", "list", "--format", "json"))
    from_file = sorted(
        (letter["offset"], letter["reason"], letter["payload_excerpt"], letter["payload_truncated"])
        for letter in letters
        if letter["source"] == SOURCE
    )
    assert from_file == [
        (3, "not_json", lines[3].decode(), False),
        (4, "unknown_type", lines[4].decode(), False),
        (5, "invalid", lines[5].decode(), False),
        (6, "too_large", lines[6].decode(), False),
        (7, "too_large", lines[7][:2048].decode(), True),
    ]
    # Judged by the worker, so their source is the topic the file was published to.
    from_worker = sorted(
        (letter["reason"], letter["event_id"], letter["rep_id"])
        for letter in letters
        if letter["source"] == ACTIVITIES
    )
    assert from_worker == [("conflict", "a1", "r1"), ("too_late", "late", "r1")]
    assert len(letters) == 7 and len({letter["id"] for letter in letters}) == 7
    assert all(letter["replayed_at"] is None and letter["detail"] for letter in letters)
    conflict = next(letter for letter in letters if letter["reason"] == "conflict")
    assert (
        "type differ" in conflict["detail"] and orjson.loads(conflict["payload_excerpt"])["type"] == "email"
    )
    rejected = [datetime.fromisoformat(letter["rejected_at"]) for letter in letters]
    assert rejected == sorted(rejected, reverse=True) and all(t.tzinfo == UTC for t in rejected)

    too_large = as_json(cli.run("dlq", "list", "--reason", "too_large", "--format", "json"))
    assert sorted(letter["offset"] for letter in too_large) == [6, 7]
    assert len(as_json(cli.run("dlq", "list", "--source", SOURCE, "--format", "json"))) == 5
    newest = as_json(cli.run("dlq", "list", "--limit", "3", "--format", "json"))
    assert [letter["id"] for letter in newest] == [letter["id"] for letter in letters[:3]]

    table = ok(cli.run("dlq", "list", "--limit", "5")).stdout
    assert "dead letters: 5 of 7, newest first" in table
    nothing = ok(cli.run("dlq", "list", "--reason", "key_mismatch")).stdout
    assert "no dead letters with reason key_mismatch" in nothing


def stored_daily(cli: Cli) -> tuple[list[str], Counter[tuple[str, str, str]]]:
    with clickhouse_of(cli.home) as ch:
        ids = sorted(str(row[0]) for row in ch.rows("SELECT event_id FROM {db}.events FINAL"))
        daily = Counter(
            {
                (str(rep), str(day), str(kind)): int(str(n))
                for rep, day, kind, n in ch.rows(
                    "SELECT rep_id, toString(day), type, events FROM {db}.rep_daily_activity FINAL"
                )
                if n
            }
        )
    return ids, daily


def expected_daily(events: list[dict[str, Any]]) -> Counter[tuple[str, str, str]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    for e in events:
        day = e["occurred_at"][:10]
        counts[(e["rep_id"], day, e["type"])] += 1
        if e.get("outcome") == "connected":
            counts[(e["rep_id"], day, "call_connected")] += 1
    return counts


def test_dlq_replay_sends_what_a_fix_made_valid_exactly_once_and_explains_the_rest(
    cli: Cli, tmp_path: Path
) -> None:
    replay_file(cli, tmp_path)
    assert stored_daily(cli) == (sorted(["a1", "a2", "d1"]), expected_daily(GOOD))

    # Nothing fixed yet but the size limit (back at its 1 MiB default): only the big event can go.
    plan = as_json(cli.run("dlq", "replay", "--dry-run", "--format", "json"))
    assert plan["dry_run"] is True
    assert [(r["reason"], r["event_id"], r["topic"]) for r in plan["replayed"]] == [
        ("too_large", "big", ACTIVITIES)
    ]
    why = {(s["reason"], s["offset"] if s["source"] == SOURCE else None): s["why"] for s in plan["skipped"]}
    assert why[("not_json", 3)].startswith("still not_json: payload is not JSON")
    assert why[("unknown_type", 4)].startswith("still unknown_type: ")
    assert why[("invalid", 5)].startswith("still invalid: ") and "timezone" in why[("invalid", 5)]
    assert why[("too_large", 7)].startswith("only the first 2 KiB")
    assert why[("conflict", None)].startswith("the first event with this event_id is stored and counts")
    assert "SALESPULSE_LATE_GRACE_DAYS=71 or more" in why[("too_late", None)]
    assert stored_daily(cli)[0] == ["a1", "a2", "d1"]  # a dry run sends nothing

    first = as_json(cli.run("dlq", "replay", "--format", "json"))
    assert [(r["reason"], r["event_id"]) for r in first["replayed"]] == [("too_large", "big")]
    assert first["stored"] == 1

    # The backfill fix: a grace wide enough for the late event (the worker started here gets it too).
    grace = {"SALESPULSE_LATE_GRACE_DAYS": "80"}
    second = as_json(cli.run_with(grace, "dlq", "replay", "--reason", "too_late", "--format", "json"))
    assert [(r["reason"], r["event_id"]) for r in second["replayed"]] == [("too_late", "late")]
    assert second["stored"] == 1 and second["skipped"] == []

    again = ok(cli.run_with(grace, "dlq", "replay")).stdout
    assert "replayed 0 dead letter(s)" in again and "2 replayed before (skipped)" in again

    ids, daily = stored_daily(cli)
    assert ids == sorted(["a1", "a2", "d1", "big", "late"])
    assert daily == expected_daily([*GOOD, BIG, LATE])  # the conflicting copy of a1 never counted
    letters = as_json(cli.run("dlq", "list", "--format", "json"))
    replayed = sorted(
        (letter["reason"], letter["replayed_to"]) for letter in letters if letter["replayed_at"]
    )
    assert replayed == [("too_large", ACTIVITIES), ("too_late", ACTIVITIES)]
    assert len(letters) == 7  # replaying added no dead letter
