"""``salespulse report`` as a user runs it: on an empty home it says there is nothing to show, and
after a replay and a reps load it writes one self-contained page and prints its path."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer

from schemas.wire import event_to_json
from streams.cli import app
from streams.synthetic import OrgSpec, generate_org, iter_events

from .conftest import Cli

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        "report" not in getattr(typer.main.get_command(app), "commands", {}),
        reason="`report` is not registered in streams/cli.py yet (streams/cli_report.py defines it)",
    ),
]

SPEC = OrgSpec(reps=4, teams=2, territories=2, days=21, start=datetime(2026, 2, 2, tzinfo=UTC), seed=5)


def test_an_empty_home_has_nothing_to_report(cli: Cli) -> None:
    result = cli.run("report", "--out", "out")
    assert result.returncode == 1, result.describe()
    assert "no data yet" in result.stderr, result.describe()
    assert not (cli.cwd / "out").exists()


def test_until_before_since_is_refused_before_anything_starts(cli: Cli) -> None:
    result = cli.run("report", "--since", "2026-03-10", "--until", "2026-03-01")
    assert result.returncode == 2, result.describe()
    assert "--until 2026-03-01 is before --since 2026-03-10" in result.stderr, result.describe()


def test_report_after_a_replay_writes_one_page_and_prints_its_path(cli: Cli, tmp_path: Path) -> None:
    org = generate_org(SPEC)
    events, reps = tmp_path / "events.jsonl", tmp_path / "reps.jsonl"
    events.write_bytes(b"".join(event_to_json(event) + b"\n" for event in iter_events(org)))
    reps.write_text("".join(rep.model_dump_json() + "\n" for rep in org.reps), encoding="utf-8")
    for step in (("reps", "load", str(reps)), ("replay", str(events))):
        loaded = cli.run(*step, timeout=180)
        assert loaded.returncode == 0, loaded.describe()

    result = cli.run("report", "--since", "2026-02-09", "--out", "weekly")
    assert result.returncode == 0, result.describe()
    written = Path(result.stdout.strip())
    assert written == (cli.cwd / "weekly" / "index.html").resolve(), result.describe()
    page = written.read_text(encoding="utf-8")
    assert "2026-02-09 to 2026-02-20" in page  # --since, and the last day with data
    assert page.count("<svg") >= 4 and "<script" not in page
    assert all(rep.name in page for rep in org.reps)
