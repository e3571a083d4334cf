"""The ``sarm report`` renderer: a self-contained HTML page from a JSON-able report dict.

>>> from sarm.report import render_report
>>> render_report(report, "runs/my-report")   # -> Path("runs/my-report/report.html")
"""

from sarm.report.html import render_html, render_report

__all__ = ["render_html", "render_report"]
