"""Render a :class:`~sarm.report.schema.Report` into one self-contained HTML page (``templates/report.html.j2``).

The page loads nothing: the stylesheet is inline, there are no scripts and every plot is a ``data:image/png`` URI
(``sarm.report.plots``). Autoescaping is on, so every text from the content (titles, prompts, responses, tokens,
explanations, dataset names) is escaped.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from pathlib import Path

import jinja2

from sarm.attribution.contributions import RANKING
from sarm.io import write_json, write_text
from sarm.report import plots
from sarm.report.schema import Report

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("sarm.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def num(value: float | None, signed: bool = False) -> str:
    """A number for a table cell: 3 decimals, or 3 significant digits when very large or small; "—" for none."""
    if value is None or not math.isfinite(value):
        return "—"
    sign = "+" if signed else ""
    return format(value, f"{sign}.3g" if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3) else f"{sign}.3f")


def pct(value: float | None, signed: bool = False) -> str:
    """A share as a percentage; a signed one is a change, in percentage points."""
    if value is None or not math.isfinite(value):
        return "—"
    return format(100 * value, "+.1f" if signed else ".1f") + ("pp" if signed else "%")


def sign(value: float | None) -> str:
    """The CSS class of a signed number."""
    return "pos" if value and value > 0 else "neg" if value and value < 0 else ""


def shade(activation: float, peak: float) -> float:
    """A token's shading: its activation over the feature's peak, in [0, 1]."""
    return 0.0 if peak <= 0 else min(1.0, max(0.0, activation / peak))


_env.filters |= {"num": num, "pct": pct, "sign": sign}
_env.globals |= {"plots": plots, "shade": shade, "ranking": RANKING}


def render_html(report: Report) -> str:
    """The report page as a string (pure: no files written)."""
    return _env.get_template("report.html.j2").render(
        report=report,
        linked={p.feature for p in report.feature_pages},
        explanations={p.feature: p.explanation.text for p in report.feature_pages},
    )


def render_report(report: Report, output_dir: str | Path) -> Path:
    """Write ``output_dir/report.html`` and ``output_dir/report.json`` (``asdict(report)``), both atomically.

    Returns the path of the HTML file.
    """
    output_dir = Path(output_dir)
    # pure ASCII on disk (non-ASCII as character references), whatever the locale's encoding
    page = render_html(report).encode("ascii", "xmlcharrefreplace").decode("ascii")
    json_path, html_path = output_dir / "report.json", output_dir / "report.html"
    write_json(json_path, asdict(report))
    write_text(html_path, page)
    for path in (json_path, html_path):  # the atomic temp file is created 0600; a report is for sharing
        os.chmod(path, 0o644)
    return html_path
