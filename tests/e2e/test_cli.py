"""The ``salespulse`` command line end to end: the installed console script as a subprocess, on the
embedded broker and ClickHouse, one fresh ``SALESPULSE_HOME`` per test."""

from __future__ import annotations

import gzip
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import typer.main
from clickhouse_driver import Client

from streams.cli import app

from .conftest import (
    Cli,
    CliResult,
    assert_nothing_left,
    clickhouse_of,
    processes_of_home,
    runtime_pids,
)

pytestmark = pytest.mark.e2e


# ------------------------------------------------------------------------------------------ --help


def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the typer app, as the words a user types (the root is ``()``)."""
    paths: list[tuple[str, ...]] = []

    def walk(command: object, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return paths


COMMAND_PATHS = command_paths()


def test_command_discovery_finds_the_documented_commands() -> None:
    names = {" ".join(path) for path in COMMAND_PATHS}
    assert {"worker", "demo", "replay", "reps", "reps load", "db", "db migrate"} <= names
    assert len(COMMAND_PATHS) >= 8  # the root plus the seven above


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(p) or "salespulse")
def test_help_works_for_every_command(cli: Cli, path: tuple[str, ...]) -> None:
    result = cli.run(*path, "--help", timeout=30)
    assert result.returncode == 0, result.describe()
    assert "Traceback" not in result.output, result.describe()
    # The usage line names the command itself, so the help is this command's, not the root's.
    usage = " ".join(("Usage: salespulse", *path))
    assert usage in result.stdout, result.describe()
    # --help must not start anything.
    assert not cli.home.exists()


# ------------------------------------------------------------------------------------------ replay

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
REPS = ("rep-a", "rep-b", "rep-c", "rep-d")


def valid_events() -> list[dict[str, object]]:
    """Canonical events of several reps and types (activities and deals), as a producer writes them."""
    events: list[dict[str, object]] = []
    kinds = ("call", "email", "meeting_held", "visit", "demo", "proposal_sent", "meeting_scheduled")
    for r, rep in enumerate(REPS):
        for i in range(9):
            at = T0 + timedelta(hours=7 * i + r)
            event: dict[str, object] = {
                "event_id": f"{rep}-{i}",
                "type": kinds[(i + r) % len(kinds)],
                "rep_id": rep,
                "occurred_at": at.isoformat(),
            }
            if event["type"] == "call":
                event["outcome"] = "connected"
                event["duration_s"] = 120.5
            events.append(event)
        deal = f"D-{rep}"
        # Offsets other than Z are canonical too. 22:30 at -05:00 is 03:30 UTC the next day: it
        # must be counted on that UTC day, not on the producer's local one.
        created = datetime(2026, 5, 5, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
        events.append(
            {
                "event_id": f"{rep}-deal-1",
                "type": "deal_created",
                "rep_id": rep,
                "deal_id": deal,
                "amount": "1500.00",
                "occurred_at": created.isoformat(),
            }
        )
        events.append(
            {
                "event_id": f"{rep}-deal-2",
                "type": "deal_won",
                "rep_id": rep,
                "deal_id": deal,
                "amount": 1500,
                "occurred_at": "2026-05-06T15:30:00+02:00",
            }
        )
    return events


def utc_day(timestamp: object) -> str:
    return datetime.fromisoformat(str(timestamp)).astimezone(UTC).date().isoformat()


def write_event_file(path: Path) -> tuple[list[dict[str, object]], list[tuple[int, str]]]:
    """Valid events with bad lines in between; returns the events and (line number, reason) of
    every bad line."""
    events = valid_events()
    bad = {
        5: (b'{"event_id": "cut-off", "type": "call", "rep_id": "rep-a"', "not_json"),
        12: (
            orjson.dumps(
                {"event_id": "naive", "type": "call", "rep_id": "rep-b", "occurred_at": "2026-05-04T10:00:00"}
            ),
            "invalid",
        ),
        20: (
            orjson.dumps(
                {
                    "event_id": "tele",
                    "type": "teleport",
                    "rep_id": "rep-c",
                    "occurred_at": "2026-05-04T10:00:00Z",
                }
            ),
            "unknown_type",
        ),
    }
    lines: list[bytes] = []
    remaining = iter(events)
    while len(lines) < len(events) + len(bad) + 1:
        number = len(lines) + 1
        if number in bad:
            lines.append(bad[number][0])
        elif number == 9:
            lines.append(b"   ")  # blank lines are skipped, neither accepted nor rejected
        else:
            lines.append(orjson.dumps(next(remaining)))
    assert next(remaining, None) is None
    content = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)
    return events, sorted((number, reason) for number, (_, reason) in bad.items())


def replay_counts(result: CliResult) -> tuple[int, int]:
    """(accepted, rejected) from the summary table replay prints on stdout."""
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if "accepted" in line and "rejected" in line)
    row = next(line for line in lines[header + 1 :] if re.search(r"\d", line))
    accepted, rejected = (int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", row))
    return accepted, rejected


def stored_state(cli: Cli) -> dict[str, object]:
    with clickhouse_of(cli.home) as ch:
        return {
            "event_ids": sorted(str(r[0]) for r in ch.rows("SELECT event_id FROM {db}.events FINAL")),
            "event_rows": ch.scalar("SELECT count() FROM {db}.events FINAL"),
            "daily": Counter(
                {
                    (str(rep), str(day), str(kind)): int(str(n))
                    for rep, day, kind, n in ch.rows(
                        "SELECT rep_id, toString(day), type, events FROM {db}.rep_daily_activity FINAL"
                    )
                    if n
                }
            ),
            "dead_letters": sorted(
                (int(str(offset)), str(reason), str(source))
                for reason, source, offset in ch.rows(
                    "SELECT reason, source, source_offset FROM {db}.dead_letters FINAL"
                )
            ),
        }


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_replay_stores_every_valid_event_once_and_dead_letters_the_rest(
    cli: Cli, tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    events, bad_lines = write_event_file(path)
    expected = {
        "event_ids": sorted(str(e["event_id"]) for e in events),
        "event_rows": len(events),
        "daily": Counter((str(e["rep_id"]), utc_day(e["occurred_at"]), str(e["type"])) for e in events)
        # a connected call also counts as one of the day's connected calls
        + Counter(
            (str(e["rep_id"]), utc_day(e["occurred_at"]), "call_connected")
            for e in events
            if e["type"] == "call" and e.get("outcome") == "connected"
        ),
        "dead_letters": [(number, reason, f"file:{name}") for number, reason in bad_lines],
    }

    first = cli.run("replay", str(path))
    assert first.returncode == 0, first.describe()
    assert replay_counts(first) == (len(events), len(bad_lines)), first.describe()
    for number, reason in bad_lines:
        assert f"line {number} rejected ({reason})" in first.stderr, first.describe()
    assert "Traceback" not in first.output, first.describe()
    assert_nothing_left(cli.home, [])
    assert stored_state(cli) == expected

    # The same file again (a fresh broker, a fresh worker): nothing is stored or counted twice.
    second = cli.run("replay", str(path))
    assert second.returncode == 0, second.describe()
    assert replay_counts(second) == (len(events), len(bad_lines)), second.describe()
    assert stored_state(cli) == expected


# -------------------------------------------------------------------------------------------- reps

REPS_CSV = """\
rep_id,name,team,territory,manager,hired_at,quota_monthly,mode
r1,Ann Lee,North,EMEA,Maria Ruiz,2021-03-01,12000,seasoned
r2,Bo Chen,North,EMEA,,2025-09-15,8000.50,developing
r3, Cy Diaz ,South,APAC,,,,
r4,,South,APAC,,,,
r5,Di Eve,South,APAC,,,-10,auto
r9,Lee, Ann,North,EMEA,,,,
"""

REPS_JSONL = b"""\
{"rep_id": "r1", "name": "Ann Lee", "team": "South", "territory": "APAC", "quota_monthly": "13000"}
{"rep_id": "r6", "name": "Ed Fox", "team": "North", "territory": "EMEA", "hired_at": "2019-01-07"}
{"rep_id": "r7", "name": "Flo Gu"

[1, 2]
{"rep_id": "r8", "name": "Gil Ho", "team": "North", "territory": "EMEA", "nickname": "G"}
"""


def stored_reps(cli: Cli) -> tuple[dict[str, tuple[object, ...]], list[tuple[int, str, str]]]:
    with clickhouse_of(cli.home) as ch:
        reps = {
            str(row[0]): tuple(row[1:])
            for row in ch.rows(
                "SELECT rep_id, name, team, territory, manager, hired_at, quota_monthly, mode "
                "FROM {db}.reps FINAL"
            )
        }
        letters = sorted(
            (int(str(offset)), str(reason), str(source))
            for reason, source, offset in ch.rows(
                "SELECT reason, source, source_offset FROM {db}.dead_letters FINAL"
            )
        )
    return reps, letters


def rejection_line(result: CliResult, file_name: str, number: int) -> str:
    """The one line that reports line ``number`` of ``file_name`` as rejected."""
    prefix = f"{file_name}:{number}: rejected: "
    matches = [line for line in result.output.splitlines() if prefix in line]
    assert len(matches) == 1, result.describe()
    return matches[0]


def test_reps_load_csv_then_jsonl_stores_good_rows_and_reports_bad_ones(cli: Cli, tmp_path: Path) -> None:
    csv_file = tmp_path / "reps.csv"
    # As Excel saves "CSV UTF-8": with a byte-order mark before the header.
    csv_file.write_text(REPS_CSV, encoding="utf-8-sig")
    loaded = cli.run("reps", "load", str(csv_file))
    # Some rows loaded: a partial load succeeds (exit 1 is kept for "nothing loaded").
    assert loaded.returncode == 0, loaded.describe()
    assert "loaded 3 rep(s); rejected 3" in loaded.stdout, loaded.describe()
    # Line numbers are the file's (the header is line 1).
    no_name = rejection_line(loaded, "reps.csv", 5)
    assert "name" in no_name and "required" in no_name.lower(), no_name
    negative = rejection_line(loaded, "reps.csv", 6)
    assert "quota_monthly" in negative and "negative" in negative, negative
    # An unquoted comma shifts every column: rejected, not loaded with a wrong team.
    shifted = rejection_line(loaded, "reps.csv", 7)
    assert "more value(s) than the header" in shifted, shifted
    assert "Traceback" not in loaded.output, loaded.describe()

    reps, letters = stored_reps(cli)
    assert reps == {
        "r1": ("Ann Lee", "North", "EMEA", "Maria Ruiz", date(2021, 3, 1), Decimal("12000.00"), "seasoned"),
        "r2": ("Bo Chen", "North", "EMEA", None, date(2025, 9, 15), Decimal("8000.50"), "developing"),
        "r3": ("Cy Diaz", "South", "APAC", None, None, Decimal("0.00"), "auto"),
    }
    assert letters == [(n, "invalid", "file:reps.csv") for n in (5, 6, 7)]

    # JSON Lines: r1 moves team (newest record wins), r6 is new, and three lines are bad.
    jsonl_file = tmp_path / "reps.jsonl"
    jsonl_file.write_bytes(REPS_JSONL)
    updated = cli.run("reps", "load", str(jsonl_file))
    assert updated.returncode == 0, updated.describe()
    assert "loaded 2 rep(s); rejected 3" in updated.stdout, updated.describe()
    assert "not JSON" in rejection_line(updated, "reps.jsonl", 3)
    assert "JSON object" in rejection_line(updated, "reps.jsonl", 5)
    assert "nickname" in rejection_line(updated, "reps.jsonl", 6)

    reps, letters = stored_reps(cli)
    assert set(reps) == {"r1", "r2", "r3", "r6"}
    assert reps["r1"][:3] == ("Ann Lee", "South", "APAC")
    assert reps["r1"][5] == Decimal("13000.00")
    assert reps["r6"][4] == date(2019, 1, 7)
    assert letters == sorted(
        [
            (5, "invalid", "file:reps.csv"),
            (6, "invalid", "file:reps.csv"),
            (7, "invalid", "file:reps.csv"),
            (3, "not_json", "file:reps.jsonl"),
            (5, "not_an_object", "file:reps.jsonl"),
            (6, "invalid", "file:reps.jsonl"),
        ]
    )


def test_reps_load_with_nothing_loadable_exits_1(cli: Cli, tmp_path: Path) -> None:
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("rep_id,name,team,territory\nr1,,North,EMEA\n", encoding="utf-8")
    result = cli.run("reps", "load", str(csv_file))
    assert result.returncode == 1, result.describe()
    assert "loaded 0 rep(s); rejected 1" in result.stdout, result.describe()
    assert "name" in rejection_line(result, "bad.csv", 2)
    assert "Traceback" not in result.output, result.describe()


# ---------------------------------------------------------------------------------------------- db


def test_db_migrate_applies_every_migration_once(cli: Cli) -> None:
    migrations = sorted(
        path.stem.replace("_", " ", 1)  # 0002_rep_daily_activity.sql -> 0002 rep_daily_activity
        for path in (Path(__file__).parents[2] / "sinks" / "migrations").glob("*.sql")
    )
    assert migrations, "no migrations found to compare with"
    first = cli.run("db", "migrate")
    assert first.returncode == 0, first.describe()
    assert first.stdout.splitlines() == [f"applied {m}" for m in migrations], first.describe()
    again = cli.run("db", "migrate")
    assert again.returncode == 0, again.describe()
    assert again.stdout.strip() == "schema is up to date", again.describe()
    assert_nothing_left(cli.home, [])


# -------------------------------------------------------------------------------------------- demo


def watch(process: subprocess.Popen[bytes], home: Path, until: float) -> dict[str, int]:
    """Every pid runtime.json listed while ``process`` ran (until it exits or ``until``)."""
    seen: dict[str, int] = {}
    while process.poll() is None and time.monotonic() < until:
        seen.update(runtime_pids(home))
        time.sleep(0.1)
    return seen


def stop_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


def test_demo_with_a_duration_runs_to_completion_and_leaves_nothing_running(cli: Cli, tmp_path: Path) -> None:
    stdout, stderr = tmp_path / "demo.out", tmp_path / "demo.err"
    process = cli.popen(
        "demo", "--duration", "20", "--reps", "6", "--days", "14", stdout=stdout, stderr=stderr
    )
    try:
        seen = watch(process, cli.home, until=time.monotonic() + 120)
        if process.poll() is None:
            pytest.fail("demo --duration 20 was still running after 120 s")
        returncode = process.returncode
    finally:
        stop_if_running(process)
    result = CliResult(("demo",), returncode, stdout.read_text(), stderr.read_text())
    assert returncode == 0, result.describe()
    done = re.search(r"done: ([\d,]+) events stored in ClickHouse, (\d+) dead letter", result.stderr)
    assert done is not None, result.describe()
    stored, dead_letters = int(done.group(1).replace(",", "")), int(done.group(2))
    assert stored > 0, result.describe()
    # The demo sends two malformed messages on purpose; both must come out as dead letters.
    assert dead_letters >= 2, result.describe()
    # It ends with the sales report of what it stored, and prints where.
    report = re.search(r"^report: (/\S+/index\.html)$", result.stderr, re.MULTILINE)
    assert report is not None, result.describe()
    assert Path(report.group(1)).read_text(encoding="utf-8").count("<svg") >= 4

    # We really watched it run (so the check below is not vacuous), and nothing outlived it.
    assert {"salespulse", "broker", "clickhouse", "worker"} <= set(seen), seen
    assert_nothing_left(cli.home, seen.values())

    # What it printed is what ClickHouse holds.
    with clickhouse_of(cli.home, database="salespulse_demo") as ch:
        assert ch.scalar("SELECT count() FROM {db}.events FINAL") == stored
        assert ch.scalar("SELECT count() FROM {db}.dead_letters FINAL") == dead_letters


def stored_demo_events(home: Path) -> int:
    """Events the running demo has stored so far (0 while its database is not there yet)."""
    pids = runtime_pids(home)
    if "worker" not in pids:
        return 0
    try:
        port = int(orjson.loads((home / "runtime.json").read_bytes())["clickhouse"]["tcp_port"])
        client = Client("127.0.0.1", port=port, connect_timeout=2)
        try:
            return int(client.execute("SELECT count() FROM salespulse_demo.events")[0][0])
        finally:
            client.disconnect()
    except Exception:
        return 0


def test_ctrl_c_stops_the_demo_and_everything_it_started(cli: Cli, tmp_path: Path) -> None:
    stdout, stderr = tmp_path / "demo.out", tmp_path / "demo.err"
    # --rate keeps it streaming long enough to interrupt: at the default rate this small org's
    # ~1,200 events are published in under a second and the demo ends by itself.
    process = cli.popen("demo", "--reps", "4", "--days", "7", "--rate", "100", stdout=stdout, stderr=stderr)
    try:
        seen: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            seen.update(runtime_pids(cli.home))
            if stored_demo_events(cli.home) > 0:
                break
            time.sleep(0.2)
        assert process.poll() is None, "the demo ended before it could be interrupted"
        assert time.monotonic() < deadline, "the demo stored nothing within 60 s"
        seen.update(runtime_pids(cli.home))
        # The leftover check below must be able to see these processes while they run.
        running = {pid for pid, _ in processes_of_home(cli.home)}
        assert set(seen.values()) <= running, (seen, running)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does to a foreground job
        try:
            returncode = process.wait(30)
        except subprocess.TimeoutExpired:
            pytest.fail("the demo did not exit within 30 s of Ctrl-C")
    finally:
        stop_if_running(process)
    result = CliResult(("demo",), returncode, stdout.read_text(), stderr.read_text())
    assert returncode == 130, result.describe()
    assert "stopped by Ctrl-C" in result.stderr, result.describe()
    assert "Traceback" not in result.output, result.describe()
    assert {"salespulse", "broker", "clickhouse", "worker"} <= set(seen), seen
    assert_nothing_left(cli.home, seen.values())


# --------------------------------------------------------------------------------------- bad input


def missing(tmp: Path) -> Path:
    return tmp / "no-such-file.jsonl"


def directory(tmp: Path) -> Path:
    return tmp


def not_gzip(tmp: Path) -> Path:
    path = tmp / "events.jsonl.gz"
    path.write_bytes(b'{"event_id": "e1"}\n')
    return path


def latin1_csv(tmp: Path) -> Path:
    path = tmp / "reps.csv"
    path.write_bytes("rep_id,name,team,territory\nr1,Jos\u00e9,North,EMEA\n".encode("latin-1"))
    return path


@pytest.mark.parametrize(
    ("command", "make", "complaint", "returncode"),
    [
        # Typer checks the argument before the command runs: a usage error (2).
        (("replay",), missing, "does not exist", 2),
        (("replay",), directory, "is a directory", 2),
        (("reps", "load"), missing, "does not exist", 2),
        # The command's own checks: an error (1), still before anything starts.
        (("replay",), not_gzip, "Not a gzipped file", 1),
        (("reps", "load"), latin1_csv, "is not UTF-8", 1),
    ],
    ids=[
        "replay missing file",
        "replay directory",
        "reps load missing file",
        "replay not gzip",
        "reps latin-1",
    ],
)
def test_unusable_input_file_is_a_one_line_error(
    cli: Cli,
    tmp_path: Path,
    command: tuple[str, ...],
    make: Callable[[Path], Path],
    complaint: str,
    returncode: int,
) -> None:
    target = make(tmp_path)
    result = cli.run(*command, str(target), timeout=30)
    assert result.returncode == returncode, result.describe()
    assert "Traceback" not in result.output, result.describe()
    # One line says what is wrong and with which file.
    errors = [line for line in result.stderr.splitlines() if complaint in line]
    assert len(errors) == 1, result.describe()
    assert target.name in errors[0], result.describe()
    assert not cli.home.exists(), "an unusable input must not start the runtime"


def test_replay_of_a_truncated_gzip_stops_with_a_one_line_error(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    events = valid_events()
    whole = gzip.compress(b"\n".join(orjson.dumps(e) for e in events * 50) + b"\n")
    path.write_bytes(whole[: len(whole) // 2])  # a download cut short
    result = cli.run("replay", str(path))
    assert result.returncode == 1, result.describe()
    assert "Traceback" not in result.output, result.describe()
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.describe()
    assert re.search(r"cannot read \S*cut\.jsonl\.gz after line \d+", errors[0]), result.describe()
