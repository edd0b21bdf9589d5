"""`distillflow status RUN_DIR`: the provider batches of a run (submitted, in progress, collected),
and whether it stopped on a teacher outage."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from distillflow.cli._common import console, handle_errors


@handle_errors
def command(run_dir: Path = typer.Argument(..., help="Run directory (from `distillflow run`)")):
    """Show the run's provider batches as last seen: state, completed/failed lines, cost, age;
    and whether the run stopped on a teacher outage.

    Nothing is sent to the provider: `distillflow run` again polls, collects and resubmits."""
    from rich.table import Table

    from distillflow.engine.batch import BatchStore, store_path
    from distillflow.engine.runner import outage_note
    from distillflow.errors import not_a_run_dir, require_run_dir

    require_run_dir(run_dir)
    # a run makes cache/ as it starts; pipeline.yaml and manifest.json come once it has curated
    if not any((run_dir / name).exists() for name in ("cache", "pipeline.yaml", "manifest.json")):
        raise not_a_run_dir(run_dir, "no cache/, pipeline.yaml or manifest.json")
    note = outage_note(run_dir)
    if note:
        console.print(note, highlight=False)
    path = store_path(run_dir)
    if not path.exists():
        console.print(f"{run_dir}: no provider batches (no teacher ran with mode: batch)", highlight=False)
        return
    with BatchStore(path) as store:
        rows = store.summary()
        totals = store.totals()
    table = Table(title=f"batches of {run_dir}", title_justify="left")
    for col in ("teacher", "batch", "state", "lines", "completed", "failed", "cost $", "age"):
        table.add_column(col, justify="right" if col in ("lines", "completed", "failed", "cost $", "age") else "left")
    now = time.time()
    for r in rows:
        state = r["state"] if r["state"] != "submitted" else f"submitted ({r['provider_status'] or 'not polled yet'})"
        cost = f"{r['cost_usd']:.4f}" if r["state"] == "collected" else f"≤{r['est_cost_usd']:.4f}"
        table.add_row(r["teacher"], r["batch_id"] or "(creating)", state, str(r["n_requests"]), str(r["completed"]),
                      str(r["failed"]), cost, _age(now - r["created_at"]))
    console.print(table)
    live = [r for r in rows if r["state"] in ("pending", "submitted")]
    for teacher, t in sorted(totals.items()):
        console.print(f"{teacher}: {t['answers']} answers collected through batches, ${t['cost_usd']:.4f}", highlight=False)
    if live:
        console.print(f"{len(live)} batch(es) still with the provider — run the same `distillflow run` command "
                      "again to collect them (nothing is resubmitted)", highlight=False)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
