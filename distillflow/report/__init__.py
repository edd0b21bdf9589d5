"""One self-contained HTML report of a run: DAG, funnel, scores, cost, review, retention, training loss.

    from distillflow.report import render_report
    path = render_report("runs/quickstart")            # runs/quickstart/report.html

Everything is read from the run directory's files (manifest, data, review/, train/, eval/), so
the report works for any run at any stage; sections whose data is missing say so.
"""

from __future__ import annotations

__all__ = ["render_report"]


def render_report(*args, **kwargs):
    """See :func:`distillflow.report.html.render_report`."""
    from distillflow.report.html import render_report as _render

    return _render(*args, **kwargs)
