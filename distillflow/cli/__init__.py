"""The `distillflow` command line.

    distillflow validate pipelines/quickstart.yaml
    distillflow run pipelines/quickstart.yaml --out runs/quickstart

Exit codes: 0 ok (also when some records were quarantined after teacher errors: a warning names
them), 2 invalid pipeline or usage (also: the run directory is locked by another run), 1 runtime
failure (a teacher outage, a full disk), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import importlib
import os
import sys

# Arrow's default allocator (mimalloc) keeps freed pages, so a run's peak memory would grow with
# the Parquet it writes; the system allocator returns them (measured: benchmarks/memory_scaling.py).
# Set before anything imports pyarrow; only the CLI's own process, never a user's notebook.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
from pathlib import Path
from typing import Optional

import typer

from distillflow.cli._common import console, disk_error, handle_errors

app = typer.Typer(
    name="distillflow",
    help="Declarative, resumable black-box distillation: teachers -> judges -> curation -> review -> training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
@handle_errors
def validate(pipeline: Path = typer.Argument(..., help="Pipeline YAML")):
    """Check a pipeline statically (no network): schema, graph, columns. Lists every problem at once."""
    from distillflow.api import load

    spec = load(pipeline)
    console.print(f"[green]ok[/] {pipeline}: pipeline '{spec.name}', {len(spec.teachers)} teacher(s), {len(spec.steps)} step(s)")


@app.command()
@handle_errors
def preflight(pipeline: Path = typer.Argument(..., help="Pipeline YAML")):
    """Check the pipeline can run here: env vars set, endpoints reachable, models listed."""
    from distillflow.api import load
    from distillflow.engine.providers import preflight_teacher

    from rich.markup import escape

    from distillflow.engine.validate import preflight_steps
    from distillflow.errors import ConfigurationError, SpecError

    plan = load(pipeline)
    spec = plan.spec  # local model paths resolved against the YAML's folder
    failed = 0
    for t in spec.teachers:
        ok, detail = preflight_teacher(t)
        failed += not ok
        console.print(f"{'[green]ok[/]  ' if ok else '[red]FAIL[/]'} teacher {t.name}: {detail}", highlight=False)
    try:  # step code the run would load (a `module:function` verifier)
        for step_id, note in preflight_steps(plan):
            console.print(f"[green]ok[/]   step {step_id}: {note}", highlight=False)
    except (ConfigurationError, SpecError) as e:
        failed += 1
        lines = [str(p) for p in e.problems] if isinstance(e, SpecError) else str(e).splitlines()
        for line in lines:
            console.print(f"[red]FAIL[/] {escape(line)}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command()
@handle_errors
def run(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory (default: output.dir or runs/<name>)"),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore caches and ask the teachers again"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Ask the records quarantined after teacher errors again"),
    backend: Optional[str] = typer.Option(None, "--backend", help="Executor: local or ray (default: the pipeline's execution.backend)"),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster to join: auto, HOST:PORT or ray://HOST:10001 (implies --backend ray)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="mode: batch teachers: wait for the provider batches "
                              "(up to 24 h), or submit them and exit 0; running again collects them"),
):
    """Run a pipeline; re-running the same command resumes from the cache."""
    from distillflow.api import load
    from distillflow.api import run as run_api
    from distillflow.cli._common import is_write_error
    from distillflow.engine.runner import _default_out
    from distillflow.steps.quarantine import quarantine_note

    plan = load(pipeline)
    spec = plan.spec
    out_dir = out or _default_out(spec, plan.base_dir)
    try:
        result = run_api(plan, out=out_dir, progress=progress, fresh=fresh, retry_errors=retry_errors,
                         backend=backend, address=address, wait=wait)
    except OSError as e:
        if not is_write_error(e, out_dir):
            raise
        raise disk_error(e, out_dir) from None
    m = result.manifest
    if m["status"] == "batches_pending":
        console.print(f"[bold yellow]submitted[/] — provider batches pending — {result.out_dir}", highlight=False)
        for note in result.notes:
            console.print(note, highlight=False)
        return
    console.print(
        f"[bold green]done[/] {m['curated']} curated, {m['rejected']} rejected, {m['heldout']} held out "
        f"— est. cost ${m['cost_usd']:.4f} — {result.out_dir}",
        highlight=False,
    )
    for note in result.notes:
        console.print(note, highlight=False)
    warning = quarantine_note(m.get("quarantined", 0))
    if warning:
        sys.stderr.write(warning + "\n")
    if m["status"] == "budget_exhausted":
        console.print(f"[yellow]budget reached[/]: generation stopped before ${spec.budget.max_cost_usd}; "
                      "raise budget.max_cost_usd and run again to continue (answers are cached)")


@app.command()
@handle_errors
def graph(
    pipeline: Path = typer.Argument(..., help="Pipeline YAML"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write .mmd, .svg, .png or .pdf (svg/png/pdf need graphviz `dot`)"),
):
    """Print the pipeline DAG as mermaid text (or render it with graphviz)."""
    from distillflow.api import load
    from distillflow.graphviz import output_format, render

    if output is not None:
        output_format(output)  # an extension it cannot write is refused before the pipeline is read
    g = load(pipeline).graph
    if output is None:
        console.print(g.mermaid(), highlight=False, markup=False)
        return
    render(g, output)
    console.print(f"wrote {output}", highlight=False)


@app.command()
@handle_errors
def init(path: Path = typer.Argument(Path("pipeline.yaml"), help="Where to write the starter"), force: bool = typer.Option(False, "--force")):
    """Write a commented starter pipeline YAML."""
    from distillflow.errors import UsageError, make_parent

    if path.is_dir():
        raise UsageError(f"{path} is a directory — pass a file path such as {path / 'pipeline.yaml'}")
    if path.exists() and not force:
        raise UsageError(f"{path} exists — choose another path or pass --force")
    text = (Path(__file__).resolve().parent.parent / "templates" / "starter.yaml").read_text()
    make_parent(path)  # a missing folder is created, as `run --out` and `report -o` do
    path.write_text(text)
    console.print(f"wrote {path} — edit it, then `distillflow validate {path}`")


# Integrations mount their commands from their own modules (absent ones are skipped).
for _mod, _name, _kind in (
    ("distillflow.cli.review", "review", "group"),
    ("distillflow.cli.train", "train", "command"),
    ("distillflow.cli.evaluate", "eval", "command"),
    ("distillflow.cli.report", "report", "command"),
    ("distillflow.cli.status", "status", "command"),
):
    try:
        _m = importlib.import_module(_mod)
    except ModuleNotFoundError as _e:
        if _e.name != _mod:
            raise
        continue
    if _kind == "group":
        app.add_typer(_m.app, name=_name)
    else:
        app.command(name=_name)(getattr(_m, "command"))


def main() -> None:
    try:
        app()
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    if isinstance(code, str):  # sys.exit("message"): the message goes to stderr, the status is 1
        sys.stderr.write(code + "\n")
        code = 1
    exit_without_teardown(code or 0)


def exit_without_teardown(code: int) -> None:
    """Exit once the command has finished, skipping the interpreter's teardown of its modules.

    With pyarrow, pandas and aiohttp loaded, tearing the modules down takes 0.3-0.4 s on a 2-core
    machine after every file is already written and closed (a whole CLI run of 5,000 requests takes
    ~22 s). Everything a normal exit does that matters still happens: the `atexit` handlers run
    (logging, temporary directories, child processes), stdout and stderr are flushed. When a thread
    that is not a daemon is still alive, the normal exit joins it instead.
    """
    import atexit
    import os
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said there
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
