"""`distillflow review ...`: push to Argilla, pull decisions back, run a local Argilla.

    distillflow review up                      # local Argilla 2.8 (no Docker), prints URL + key
    distillflow review push runs/qa            # ARGILLA_API_URL / ARGILLA_API_KEY from the env
    distillflow review pull runs/qa            # apply decisions + agreement report
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from distillflow.cli._common import console, err_console, handle_errors

app = typer.Typer(help="Human review in Argilla: push, pull, and a local Argilla server.", no_args_is_help=True)

_DATA = typer.Option(None, "--data-dir", help="Local server data (default: $DISTILLFLOW_ARGILLA_HOME/data)")


@app.command()
@handle_errors
def push(
    run_dir: Path = typer.Argument(..., help="Run directory (the --out of `distillflow run`)"),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="Push a stratified sample of this size"),
    batch_size: int = typer.Option(100, "--batch-size", min=1, max=500, help="Records per request"),
):
    """Create/update the run's Argilla dataset and push the records it does not have yet."""
    from distillflow.review.push import push as push_run

    result = push_run(run_dir, sample=sample, batch_size=batch_size)
    console.print(result.summary(), highlight=False)


@app.command()
@handle_errors
def pull(
    run_dir: Path = typer.Argument(..., help="Run directory"),
    offline: bool = typer.Option(False, "--offline", help="Re-apply the responses saved by the last pull (no server)"),
):
    """Apply submitted reviews: rejections leave curated, corrections replace answers; report agreement."""
    from distillflow.review.pull import pull as pull_run

    result = pull_run(run_dir, offline=offline)
    console.print(result.summary(), highlight=False)
    console.print(f"report: {result.report_path}", highlight=False)


@app.command()
@handle_errors
def up(
    port: int = typer.Option(6900, "--port", help="Port of the Argilla server"),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on"),
    data_dir: Optional[Path] = _DATA,
):
    """Start a real local Argilla 2.8 (own venv, osmem search, valkey Redis, SQLite); data survives restarts."""
    from distillflow.review.server import up as server_up

    info = server_up(port=port, host=host, data_dir=data_dir, log=lambda m: err_console.print(m, highlight=False))
    console.print(info.banner(), highlight=False)


@app.command()
@handle_errors
def status(data_dir: Optional[Path] = _DATA, as_json: bool = typer.Option(False, "--json", help="Print JSON")):
    """Is the local Argilla running? (exit 1 when not)"""
    from distillflow.review.server import status as server_status

    st = server_status(data_dir=data_dir)
    if as_json:
        console.print_json(json.dumps(st))
    elif st["running"]:
        console.print(f"[green]running[/] {st['url']} (user {st['username']}, data {st['data_dir']})", highlight=False)
    else:
        down_procs = [k for k, v in (st.get("processes") or {}).items() if not v]
        extra = f" — stopped: {', '.join(down_procs)}; run `distillflow review down` then `up`" if down_procs else ""
        console.print(f"[yellow]not running[/] (data {st['data_dir']}){extra}", highlight=False)
    if not st["running"]:
        raise typer.Exit(1)


@app.command()
@handle_errors
def down(data_dir: Optional[Path] = _DATA):
    """Stop the local Argilla started by `review up` (its data stays)."""
    from distillflow.review.server import down as server_down

    stopped = server_down(data_dir=data_dir)
    console.print("stopped" if stopped else "no local Argilla was running", highlight=False)
