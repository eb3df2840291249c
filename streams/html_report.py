"""What every salespulse HTML page shares: one self-contained page (no script, no external file),
its style, escaping, and matplotlib figures inlined as SVG.

Matplotlib is used through ``Figure`` objects only (never ``pyplot``): no global figure state and
no GUI backend, so rendering is safe in any process and thread.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable
from datetime import UTC, datetime

import matplotlib
from matplotlib.figure import Figure

# One colour per alert rule, the same on every page (matplotlib's default cycle, fixed by rule).
RULE_COLOURS: dict[str, str] = {
    "activity_drop": "#d62728",
    "conversion_drop": "#ff7f0e",
    "no_activity": "#9467bd",
    "pacing_forecast": "#1f77b4",
    "pipeline_coverage_low": "#17becf",
    "stalled_deals": "#7f7f7f",
    "oversight_shift": "#bcbd22",
}
OTHER_RULE_COLOUR = "#7f7f7f"

BASE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2.5rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
.note { color: #555; font-size: 0.9rem; max-width: 60rem; }
figure { margin: 0.5rem 0 0; } svg { max-width: 100%; height: auto; }
"""


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(title: str, body: Iterable[str], extra_style: str = "") -> str:
    """A whole HTML document: UTF-8 declared (without it a browser may show "±" as "Â±"), the
    shared style, and ``body`` joined by newlines."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{BASE_STYLE}{extra_style}</style></head><body>",
        *body,
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def rule_colour(rule: str) -> str:
    return RULE_COLOURS.get(rule, OTHER_RULE_COLOUR)


def naive_utc(moment: datetime) -> datetime:
    """Matplotlib dates are naive: the UTC wall time of ``moment``."""
    return moment.astimezone(UTC).replace(tzinfo=None)


def figure_svg(figure: Figure, salt: str) -> str:
    """``figure`` as an ``<svg>`` element (without the XML prologue), ready to inline.

    Text stays text (small, searchable); ids are salted per figure, so several figures on one page
    never share an id; no date in the metadata, so the same data gives the same page.
    """
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"salespulse-{salt}"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


__all__ = [
    "BASE_STYLE",
    "RULE_COLOURS",
    "escape",
    "figure_svg",
    "naive_utc",
    "page",
    "rule_colour",
]
