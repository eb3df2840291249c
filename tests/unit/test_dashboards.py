"""The Grafana boards as built by ``streams.dashboards``: valid dashboard JSON (schema version,
unique panel ids, a grid that fits, every data source reference resolving to a provisioned data
source), every Prometheus metric one the workers declare, and ``grafana/`` in git exactly what
``salespulse dashboards build`` writes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.cli_dashboards import write_build
from streams.dashboards import SCHEMA_VERSION, build_all, build_files, clickhouse_queries
from streams.metrics import PipelineMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = REPO_ROOT / "grafana"
BOARDS = build_all()
TITLES = {"Sales floor", "Rep drill-down", "Pipeline health", "Field visits", "Pipeline operations"}


def provisioned_datasources() -> dict[str, str]:
    """uid -> type of every data source grafana/provisioning creates."""
    found = {}
    for path in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yaml"):
        for source in yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]:
            found[source["uid"]] = source["type"]
    return found


def refs(node: Any) -> Iterator[dict[str, Any]]:
    """Every data source reference anywhere in a dashboard document."""
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict):
            yield source
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_the_five_boards_exist_with_stable_uids() -> None:
    assert {board["title"] for board in BOARDS.values()} == TITLES
    assert all(uid.startswith("salespulse-") and board["uid"] == uid for uid, board in BOARDS.items())
    # The alert routing's dashboard_url example (README) links here.
    assert "salespulse-rep" in BOARDS


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_the_board_is_valid_dashboard_json(uid: str) -> None:
    board = BOARDS[uid]
    assert board["schemaVersion"] == SCHEMA_VERSION
    assert "id" not in board  # Grafana matches provisioned and pushed boards by uid
    panels = board["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    assert all(isinstance(i, int) and i > 0 for i in ids)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0 and grid["y"] >= 0
        assert panel["title"] and panel["type"]
        if panel["type"] != "row":
            assert panel["targets"], f"{panel['title']}: no query"
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids))
    # No two panels overlap on the grid.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        mine = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    names = [variable["name"] for variable in board.get("templating", {}).get("list", [])]
    assert len(names) == len(set(names))
    for panel in panels:
        for target in panel.get("targets", []):
            for used in re.findall(r"\$\{(\w+)(?::\w+)?\}", target.get("rawSql", "")):
                assert used in names, f"{panel['title']} uses ${{{used}}}, not a variable of {uid}"


def test_every_datasource_reference_resolves_to_a_provisioned_datasource() -> None:
    provisioned = provisioned_datasources()
    assert set(provisioned) == {"salespulse-clickhouse", "salespulse-prometheus"}
    for uid, board in BOARDS.items():
        for ref in refs(board):
            if ref.get("uid") == "-- Grafana --":
                continue
            assert ref.get("uid") in provisioned, f"{uid}: unknown data source {ref}"
            assert ref.get("type") == provisioned[ref["uid"]], f"{uid}: {ref} has the wrong type"


def test_every_clickhouse_query_in_the_json_is_one_the_sql_tests_run() -> None:
    declared = {query.sql.text for query in clickhouse_queries()}
    in_json = set()
    for board in BOARDS.values():
        for ref_holder in [*board["panels"], *board["annotations"]["list"]]:
            for target in [*ref_holder.get("targets", []), ref_holder.get("target") or {}]:
                if "rawSql" in target:
                    in_json.add(target["rawSql"])
        in_json |= {v["query"] for v in board.get("templating", {}).get("list", [])}
    assert in_json == declared


def test_every_prometheus_metric_of_the_operations_board_is_declared() -> None:
    exposed = {"up"}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    for family in PipelineMetrics(CollectorRegistry()).registry.collect():
        exposed |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    used = {
        name
        for panel in BOARDS["salespulse-operations"]["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:salespulse_[a-z_]+|up)\b", target["expr"])
    }
    assert used and used <= exposed, f"not declared in streams/metrics.py: {used - exposed}"


def test_grafana_in_git_is_exactly_what_dashboards_build_writes(tmp_path: Path) -> None:
    written = {path.relative_to(tmp_path).as_posix() for path in write_build(tmp_path)}
    assert written == set(build_files())
    for relative in sorted(written):
        committed = GRAFANA_DIR / relative
        assert committed.exists(), f"grafana/{relative} is missing: run `salespulse dashboards build`"
        assert committed.read_text(encoding="utf-8") == (tmp_path / relative).read_text(encoding="utf-8"), (
            f"grafana/{relative} differs from what `salespulse dashboards build` writes: run it and commit"
        )
    ours = {p.relative_to(GRAFANA_DIR).as_posix() for p in GRAFANA_DIR.rglob("*") if p.is_file()}
    assert ours == written, f"files in grafana/ that the build does not write: {sorted(ours - written)}"


def test_a_build_removes_a_board_it_no_longer_makes(tmp_path: Path) -> None:
    stale = tmp_path / "dashboards" / "salespulse-retired.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}", encoding="utf-8")
    mine = tmp_path / "dashboards" / "my-own.json"
    mine.write_text("{}", encoding="utf-8")
    write_build(tmp_path)
    assert not stale.exists() and mine.exists()
