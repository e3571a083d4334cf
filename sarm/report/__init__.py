"""The ``sarm report`` renderer: a self-contained HTML page from a :class:`~sarm.report.schema.Report`.

>>> from sarm.report import render_report
>>> render_report(report, "runs/my-report")   # -> Path("runs/my-report/report.html"), beside report.json
"""

from sarm.report.html import render_html, render_report
from sarm.report.schema import Report

__all__ = ["Report", "render_html", "render_report"]
