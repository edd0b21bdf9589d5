"""The retention table, shaped like the distillation literature's: base -> trained student -> teacher.

Its cells come from :mod:`distillflow.results`, which the HTML report shares.

    console.print(results_table(results))
"""

from __future__ import annotations

from distillflow.results import COLUMNS, metric_rows

__all__ = ["results_table"]


def results_table(results: dict):
    """A rich Table: rows = metrics; columns = base student, trained student, teacher, retention."""
    from rich.table import Table

    models = results.get("models", {})
    teacher = models.get("teacher", {})
    title = (f"Retention on {results.get('prompts')} held-out prompts"
             f" — teacher '{teacher.get('name', '?')}'")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for head in COLUMNS[:-1]:
        table.add_column(head, justify="right")
    table.add_column(COLUMNS[-1], justify="right", style="bold")
    for row in metric_rows(results):
        table.add_row(*row)
    return table
