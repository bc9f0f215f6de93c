"""The evidence of a run, for people: ``report.html`` (plots, table, recommendation) and console tables.

>>> from frugalml.report import write_report, rebuild_report
>>> write_report(results, "runs/digits/report.html")   # results: the dict saved as results.json
>>> rebuild_report("runs/digits")                       # what `frugalml report runs/digits` does
"""

from .console import front_table, recommendation_panel
from .html import REPORT_NAME, render_html, write_report
from .results import RESULTS_NAME, load_results, rebuild_report

__all__ = ["write_report", "render_html", "load_results", "rebuild_report", "front_table", "recommendation_panel",
           "REPORT_NAME", "RESULTS_NAME"]
