"""The sales report from the real embedded ClickHouse loaded with the demo generator's data: its
figures are the KPI engine's, and the page renders in a real browser (Debian's headless Chromium)
with every chart drawn, no script error, and nothing fetched from the network."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from analytics_data import DemoDatabase, demo_database

from sinks.clickhouse import connect
from streams.kpis import build_report
from streams.runtime.supervisor import EmbeddedRuntime
from streams.sales_report import CHARTS, load_report_data, report_from_clickhouse

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def demo(runtime: EmbeddedRuntime, tmp_path_factory: pytest.TempPathFactory) -> DemoDatabase:
    return demo_database(runtime, tmp_path_factory.mktemp("analytics-alerter"))


def test_the_report_shows_the_kpi_engines_figures(demo: DemoDatabase) -> None:
    client = connect(demo.settings)
    try:
        data = load_report_data(
            client, demo.database, since=None, until=None, deal_stages=demo.settings.deal_stages
        )
        assert data is not None
        by_team = build_report(
            client,
            demo.database,
            by="team",
            since=data.window.since,
            until=data.window.until,
            deal_stages=demo.settings.deal_stages,
        )
        ((visits,),) = client.execute(
            f"SELECT count() FROM {demo.database}.visits FINAL WHERE check_in_missing = 0 AND lat IS NOT NULL"
        )
    finally:
        client.disconnect()
    assert (data.window.since, data.window.until) == (demo.first_day, demo.last_day)
    # The leaderboard is `salespulse kpis --by team`, figure for figure (kpis also has the
    # field-visit figures, which the report shows in its own section).
    leaderboard = {team: {"team": team, **totals.as_row()} for team, totals in data.team_totals().items()}
    assert {row["team"]: {k: row[k] for k in leaderboard[row["team"]]} for row in by_team.rows} == leaderboard
    # The weeks partition the period: their additive figures sum to the period's.
    for rep_id, totals in data.rep_totals.items():
        weeks = [week_totals[rep_id] for _, week_totals in data.weekly]
        assert sum(w.activities for w in weeks) == totals.activities, rep_id
        assert sum(w.deals_won for w in weeks) == totals.deals_won, rep_id
        assert sum(w.revenue for w in weeks) == totals.revenue, rep_id
    # The alerter ran over the data; the map has every visit with a position, most verified.
    assert data.alerts and data.modes
    assert any(alert.ends_at is None for alert in data.alerts)
    assert len(data.visits) == visits > 0
    assert sum(v.status == "verified" for v in data.visits) / len(data.visits) > 0.85


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: dict[str, int] = {}
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href", "xlink:href") and value and not value.startswith("#"):
                self.external.append(value)


# Every chart's size and how many marks (paths, shapes, glyph uses) it drew, as the browser laid it out.
FIGURES_JS = """() => Array.from(document.querySelectorAll('figure')).map(f => {
  const svg = f.querySelector('svg');
  const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
  return {label: f.getAttribute('aria-label'), width: box.width, height: box.height,
          marks: svg ? svg.querySelectorAll('path, rect, use, circle, line, polyline').length : 0};
})"""


def test_the_report_renders_in_headless_chromium(demo: DemoDatabase, tmp_path: Path) -> None:
    path = report_from_clickhouse(demo.settings, tmp_path / "report")
    assert path is not None and path.name == "index.html"
    page_html = path.read_text(encoding="utf-8")
    links = _Links()
    links.feed(page_html)
    assert "script" not in links.tags, "the report must need no script"
    assert links.external == [], "the report must open offline: nothing to fetch"
    assert links.tags.get("svg") == len(CHARTS)

    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed: apt-get install chromium (Debian's package)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    problems: list[str] = []
    screenshot = tmp_path / "report.png"
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on(
                "console", lambda message: problems.append(message.text) if message.type == "error" else None
            )
            page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
            page.goto(path.resolve().as_uri(), wait_until="load")
            figures: list[dict[str, Any]] = page.evaluate(FIGURES_JS)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert len(figures) == len(CHARTS), figures
    for figure in figures:
        assert figure["width"] > 300 and figure["height"] > 150, figure
        assert figure["marks"] >= 10, figure  # axes, ticks and data: an empty chart has only a frame
    _assert_not_blank(screenshot)


def _assert_not_blank(png: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(str(png))
    assert pixels.shape[0] > 2000 and pixels.shape[1] == 1280, pixels.shape  # the whole long page
    non_white = (pixels[..., :3] < 0.9).any(axis=-1).mean()
    assert non_white > 0.03, f"only {non_white:.1%} of the screenshot is not white"
    assert pixels[..., :3].std() > 0.05
