"""`distillflow report RUN_DIR`: one self-contained HTML report of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distillflow.cli._common import console, handle_errors


@handle_errors
def command(
    run_dir: Path = typer.Argument(..., help="Run directory (from `distillflow run`)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file to write (default: RUN_DIR/report.html)"),
):
    """Write an HTML report: DAG, funnel, scores, tokens and cost, review agreement, training loss, retention."""
    from distillflow.report.html import render_report

    path = render_report(run_dir, output)
    console.print(f"wrote {path} — open it in a browser (one file, works offline)", highlight=False)
