"""The read commands on a home where nothing was stored (the commonest case: `make demo`, whose data
lives in its own database, then `salespulse kpis`): each says there is no data and where the demo's
data is, instead of failing on the missing database."""

from __future__ import annotations

import json

import pytest

from streams.cli import DEMO_DATABASE

from .conftest import Cli

pytestmark = pytest.mark.e2e

DEMO_HINT = f"SALESPULSE_CLICKHOUSE_DATABASE={DEMO_DATABASE} salespulse"


@pytest.mark.parametrize("command", [("kpis",), ("kpis", "--by", "team"), ("alerts", "list")])
def test_a_read_command_on_an_empty_home_says_there_is_no_data_and_where_the_demo_is(
    cli: Cli, command: tuple[str, ...]
) -> None:
    result = cli.run(*command)
    assert result.returncode == 0, result.describe()
    assert "no data yet in database salespulse" in result.stdout, result.describe()
    named = "alerts list" if command[0] == "alerts" else "kpis"
    assert f"{DEMO_HINT} {named}" in " ".join(result.stdout.split()), result.describe()
    assert "Traceback" not in result.stderr, result.describe()


@pytest.mark.parametrize("command", [("kpis",), ("alerts", "list")])
def test_json_output_on_an_empty_home_is_an_empty_list(cli: Cli, command: tuple[str, ...]) -> None:
    result = cli.run(*command, "--format", "json")
    assert result.returncode == 0, result.describe()
    assert json.loads(result.stdout) == []


def test_report_on_an_empty_home_points_at_the_demo_database(cli: Cli) -> None:
    result = cli.run("report", "--out", "out")
    assert result.returncode == 1, result.describe()
    assert DEMO_HINT in " ".join(result.stderr.split()), result.describe()
