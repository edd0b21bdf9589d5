"""The retention table, shaped like the distillation literature's: base -> trained student -> teacher.

    console.print(results_table(results))
"""

from __future__ import annotations

__all__ = ["format_value", "format_retention", "results_table"]


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
    return "—" if value is None else f"{100 * value:.0f}%"


def results_table(results: dict):
    """A rich Table: rows = metrics; columns = base student, trained student, teacher, retention."""
    from rich.table import Table

    models = results.get("models", {})
    teacher = models.get("teacher", {})
    title = (f"Retention on {results.get('prompts')} held-out prompts"
             f" — teacher '{teacher.get('name', '?')}'")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("base student", justify="right")
    table.add_column("→ trained student", justify="right")
    table.add_column("teacher", justify="right")
    table.add_column("retention", justify="right", style="bold")
    for m in results.get("metrics", []):
        v = m.get("values", {})
        table.add_row(m["label"], format_value(m, v.get("base")), format_value(m, v.get("student")),
                      format_value(m, v.get("teacher")), format_retention(m.get("retention")))
    return table
