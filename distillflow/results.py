"""The retention results (``RUN_DIR/eval/results.json``) as text: one home for their formatting.

    for label, base, student, teacher, retention in metric_rows(results):
        print(label, base, student, teacher, retention)      # "exact match", "0.0%", "61.5%", "83.0%", "74%"

``distillflow eval``'s console table (``evaluate/table.py``) and the HTML report (``report/html.py``)
both show these rows; they sit in sibling layers that may not import each other, so the formatting
lives here, below both. Imports nothing from distillflow.
"""

from __future__ import annotations

__all__ = ["COLUMNS", "format_retention", "format_value", "metric_rows"]

# the column heads of a results table, after the metric's label
COLUMNS = ("base student", "→ trained student", "teacher", "retention")


def format_value(metric: dict, value: float | None) -> str:
    """``62.5%`` for rates and win-rates, ``4.20 / 5`` for judge scores, ``—`` when missing."""
    if value is None:
        return "—"
    if metric.get("kind") == "score":
        return f"{value:.2f} / {metric['scale'][1]:g}"
    if metric.get("kind") == "lm_eval":
        return f"{value:.3f}"
    return f"{100 * value:.1f}%"


def format_retention(value: float | None) -> str:
    """``74%`` (trained student / teacher), ``—`` when missing."""
    return "—" if value is None else f"{100 * value:.0f}%"


def metric_rows(results: dict) -> list[tuple[str, str, str, str, str]]:
    """One row per metric: its label, then the base student, trained student, teacher and retention as text."""
    rows = []
    for m in results.get("metrics", []):
        v = m.get("values") or {}
        rows.append((m["label"], format_value(m, v.get("base")), format_value(m, v.get("student")),
                     format_value(m, v.get("teacher")), format_retention(m.get("retention"))))
    return rows
