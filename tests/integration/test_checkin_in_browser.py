"""The check-in page in a real phone-sized headless Chromium (Debian's), against the real service,
broker, worker and ClickHouse: the position comes from the DevTools geolocation override. A check-in
at the account's position ends ``verified`` in ClickHouse, one 2 km away ``out_of_range``; a
check-out made offline waits on the phone and is stored later with the time it was tapped.

``SALESPULSE_UPDATE_SCREENSHOTS=1`` also writes the screenshot to docs/checkin.png (the README's).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from ingest_service import create_token, running_service, wait_for
from reliability import query
from test_pipeline import isolated_pipeline, start_worker

from schemas.accounts import Account
from schemas.ingest import TokenScope
from schemas.settings import Settings
from sinks.clickhouse import connect, write_accounts
from streams.runtime.supervisor import EmbeddedRuntime, ManagedProcess

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = Path(__file__).resolve().parents[2] / "docs"
# The Eiffel Tower, and 2 km due north of it (0.018 degrees of latitude is 2.0 km).
ACME = (48.8584, 2.2945)
TWO_KM_NORTH = (48.8584 + 0.017_987, 2.2945)
ACCOUNTS = [
    Account(
        account_id="acme", name="Acme Paris", lat=ACME[0], lon=ACME[1], radius_m=150, owner_rep_id="rep-ana"
    ),
    Account(account_id="globex", name="Globex Louvre", lat=48.8606, lon=2.3376, owner_rep_id="rep-ana"),
    Account(account_id="initech", name="Initech La Défense", lat=48.8918, lon=2.2362, owner_rep_id="rep-ana"),
    Account(account_id="other", name="Someone else's", lat=48.85, lon=2.29, owner_rep_id="rep-bo"),
]


@pytest.fixture
def field(runtime: EmbeddedRuntime) -> Iterator[tuple[Settings, ManagedProcess]]:
    with isolated_pipeline(runtime) as settings:
        client = connect(settings)
        try:
            write_accounts(client, settings.clickhouse_database, ACCOUNTS, datetime.now(UTC))
        finally:
            client.disconnect()
        worker = start_worker(runtime, settings, "worker-checkin", {"SALESPULSE_ACCOUNTS_REFRESH_S": "1"})
        try:
            yield settings, worker
        finally:
            worker.stop()


def visits(settings: Settings) -> list[tuple[Any, ...]]:
    return query(
        settings,
        "SELECT visit_id, account_id, status, round(distance_m), checked_out_at, accuracy_m "
        "FROM {db}.visits FINAL WHERE rep_id = 'rep-ana' ORDER BY checked_in_at",
    )


# Layout facts a phone user depends on: no sideways scrolling, big enough buttons, labelled controls.
LAYOUT_JS = r"""() => ({
  scrollWidth: document.documentElement.scrollWidth,
  buttons: Array.from(document.querySelectorAll('button')).map(b => {
    const r = b.getBoundingClientRect();
    return {label: b.getAttribute('aria-label'), height: r.height, width: r.width};
  }),
  names: Array.from(document.querySelectorAll('li .name')).map(n => n.textContent),
  lang: document.documentElement.lang,
  contrast: Array.from(document.querySelectorAll('h1, h2, p, li div, button, #status')).filter(
    e => e.textContent.trim() && e.getClientRects().length).map(e => {
    const rgb = c => c.match(/[\d.]+/g).slice(0, 4).map(Number);
    const lum = ([r, g, b]) => {
      const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    let node = e, bg = [255, 255, 255];
    while (node && node.nodeType === 1) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length < 4 || c[3] > 0) { bg = c; break; }
      node = node.parentElement;
    }
    const fg = lum(rgb(getComputedStyle(e).color)), back = lum(bg);
    return {text: e.textContent.trim().slice(0, 30),
            ratio: (Math.max(fg, back) + 0.05) / (Math.min(fg, back) + 0.05)};
  }),
})"""


def test_a_rep_checks_in_from_a_phone_sized_browser(
    field: tuple[Settings, ManagedProcess], tmp_path: Path
) -> None:
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed: apt-get install chromium (Debian's package)")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")
    settings, worker = field
    token = create_token(settings, TokenScope.CHECKIN, rep_id="rep-ana", name="ana phone")
    problems: list[str] = []
    screenshot = tmp_path / "checkin.png"
    with running_service(settings) as service, playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(
                viewport={"width": 360, "height": 740},
                device_scale_factor=2,
                is_mobile=True,
                has_touch=True,
                permissions=["geolocation"],
                geolocation={"latitude": ACME[0], "longitude": ACME[1], "accuracy": 8},
            )
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            # While offline (on purpose, below) Chromium logs each failed send; nothing else may fail.
            page.on(
                "console",
                lambda m: (
                    problems.append(m.text)
                    if m.type == "error" and "ERR_INTERNET_DISCONNECTED" not in m.text
                    else None
                ),
            )
            page.goto(f"{service.url}/checkin#token={token}", wait_until="load")
            status = page.locator("#status")
            page.wait_for_function("() => document.querySelectorAll('li .name').length === 3")
            # Nearest first, sorted on the phone; the token left the address bar.
            page.wait_for_function("() => document.querySelector('li .name').textContent === 'Acme Paris'")
            assert "token" not in page.url
            assert "used only at check-in" in page.locator("#privacy").inner_text()
            assert page.locator("#who").inner_text() == "Signed in as rep-ana"

            page.get_by_role("button", name="Check in at Acme Paris").click()
            page.wait_for_function("() => document.getElementById('status').textContent.includes('verified')")
            assert status.inner_text().startswith("Checked in at Acme Paris: verified")
            layout: dict[str, Any] = page.evaluate(LAYOUT_JS)
            page.screenshot(path=str(screenshot), full_page=False)

            page.get_by_role("button", name="Check out of Acme Paris").click()
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('Checked out')"
            )

            # 2 km away, at the same account: saved, and said to be out of range, with how far.
            context.set_geolocation(
                {"latitude": TWO_KM_NORTH[0], "longitude": TWO_KM_NORTH[1], "accuracy": 10}
            )
            page.get_by_role("button", name="Check in at Acme Paris").click()
            page.wait_for_function(
                "() => document.getElementById('status').textContent.includes('out of range')"
            )
            assert "2.0 km away (limit 150 m)" in status.inner_text()

            # Offline: the check-out waits on the phone, the page says so, and goes out later.
            context.set_offline(True)
            tapped_at = datetime.now(UTC)
            page.get_by_role("button", name="Check out of Acme Paris").click()
            page.wait_for_function("() => document.getElementById('pending').textContent.includes('waiting')")
            assert page.locator("#pending").inner_text().startswith("1 check-in is waiting to be sent")
            page.wait_for_timeout(1500)
            context.set_offline(False)
            page.wait_for_function(
                "() => document.getElementById('pending').textContent === ''", timeout=30_000
            )
            assert "Checked out of Acme Paris" in status.inner_text()
        finally:
            browser.close()
    assert problems == [], problems
    assert layout["lang"] == "en" and layout["scrollWidth"] <= 360, layout
    assert layout["names"] == ["Acme Paris", "Globex Louvre", "Initech La Défense"]  # 0, 3.2 and 5.7 km
    assert all(b["height"] >= 48 and b["label"] for b in layout["buttons"]), layout["buttons"]
    # WCAG AA: text at least 4.5:1 against its background (disabled buttons included).
    low = [c for c in layout["contrast"] if c["ratio"] < 4.5]
    assert len(layout["contrast"]) > 10 and low == [], low

    def both_stored() -> list[tuple[Any, ...]] | None:
        rows = visits(settings)
        return rows if len(rows) == 2 and all(row[4] is not None for row in rows) else None

    wait_for(both_stored, timeout=60, what="both visits, checked out, in ClickHouse")
    (first, second) = visits(settings)
    assert first[1:4] == ("acme", "verified", 0) and first[5] == 8
    assert second[1:4] == ("acme", "out_of_range", 2000)
    # The offline check-out kept the time it was tapped, not the time it was sent.
    checked_out = second[4].replace(tzinfo=UTC)
    assert abs((checked_out - tapped_at).total_seconds()) < 3, (checked_out, tapped_at)
    assert worker.is_running()

    _assert_not_blank(screenshot)
    if os.environ.get("SALESPULSE_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(screenshot, DOCS / "checkin.png")


def _assert_not_blank(png: Path) -> None:
    from matplotlib.image import imread

    pixels = imread(str(png))
    assert pixels.shape[:2] == (1480, 720), pixels.shape  # 360 x 740 CSS pixels at 2x
    non_white = (pixels[..., :3] < 0.9).any(axis=-1).mean()
    assert non_white > 0.05, f"only {non_white:.1%} of the screenshot is not white"
