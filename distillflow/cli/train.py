"""`distillflow train RUN_DIR`: fine-tune the student with Axolotl on a run's curated dataset.

    distillflow train runs/qa --dry-run          # render + validate + preflight, print the commands
    distillflow train runs/qa                    # ... and run them, streaming logs with progress
    distillflow train runs/qa --machine-rank 1 --main-process-ip 10.0.0.1     # on node 1 of 2

Exit codes: the launcher's own (0 ok), 2 invalid train section or usage, 1 cannot run here
(terms forbid training, GPUs missing, axolotl missing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from distillflow.cli._common import console, handle_errors


def _print_plan(plan, dry_run: bool) -> None:
    console.print(f"[bold]train[/] {plan.run_dir}: {plan.export.rows} conversations "
                  f"({', '.join(f'{t}: {n}' for t, n in plan.export.by_teacher.items())}), review mode {plan.export.review_mode}",
                  highlight=False)
    for reason, n in plan.export.excluded.items():
        console.print(f"  left out {n}: {reason}", highlight=False)
    console.print("[bold]files[/]")
    for p in plan.files():
        console.print(f"  {p}", highlight=False)
    console.print("[bold]preflight[/]")
    for line in plan.preflight.lines():
        style = "yellow" if line.startswith("warning") else ""
        console.print(f"  [{style}]{line}[/]" if style else f"  {line}", highlight=False, markup=bool(style))
    for w in plan.warnings:
        console.print(f"  [yellow]warning:[/] {w}", highlight=False)
    console.print("[bold]commands[/]" + (" (dry run: nothing started)" if dry_run else ""))
    for c in plan.commands:
        console.print(f"  {c.shell()}", highlight=False, markup=False, soft_wrap=True)


class _Progress:
    """Streams the launcher's output: a step bar for training, log lines and losses above it."""

    def __init__(self, enabled: bool):
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.enabled = enabled
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[count]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console, transient=False, disable=not enabled)
        self.task = None
        self.loss = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def __call__(self, name: str, kind: str, data) -> None:
        if kind == "start":
            console.print(f"$ {data.shell()}", style="bold", highlight=False, markup=False, soft_wrap=True)
            self.task = self.progress.add_task(name, total=None, count="")
        elif kind == "step" and self.task is not None:
            step, total = data
            self.progress.update(self.task, completed=step, total=total, count=f"step {step}/{total}",
                                 description=f"{name}" + (f" loss {self.loss:.4f}" if self.loss is not None else ""))
        elif kind == "metrics":
            if isinstance(data.get("loss"), float):
                self.loss = data["loss"]
                console.print(f"  step {data.get('step')}: loss {data['loss']:.4f}"
                              + (f"  lr {data['learning_rate']:.3g}" if isinstance(data.get("learning_rate"), float) else "")
                              + (f"  epoch {data['epoch']:.2f}" if isinstance(data.get("epoch"), float) else ""),
                              highlight=False)
            elif "train_runtime" in data:
                console.print(f"  trainer: {data.get('train_runtime')} s, mean loss {data.get('train_loss')}", highlight=False)
        elif kind == "line":
            console.print(f"{name}| {data}", style="dim", highlight=False, markup=False, soft_wrap=True)
        elif kind == "end" and self.task is not None:
            self.progress.update(self.task, description=f"{name} exit {data}")
            self.progress.stop_task(self.task)


@handle_errors
def command(
    run_dir: Path = typer.Argument(..., help="Run directory made by `distillflow run`"),
    config: Optional[Path] = typer.Option(
        None, "--config", help="Pipeline YAML whose train: section to use (default: RUN_DIR/pipeline.yaml)"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Write and validate the files, print the commands, run nothing"),
    accept_terms: bool = typer.Option(
        False, "--accept-terms", help="Train even though a teacher's declared terms forbid it (disclosed in the model card)"),
    machine_rank: Optional[int] = typer.Option(
        None, "--machine-rank", help="This node's rank, for multi-node runs (overrides train.machine_rank)"),
    main_process_ip: Optional[str] = typer.Option(None, "--main-process-ip", help="Address of node 0, for multi-node runs"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar while training"),
):
    """Fine-tune the student on RUN_DIR's curated dataset with Axolotl (DeepSpeed ZeRO / FSDP), then write its model card."""
    from distillflow.train.plan import prepare
    from distillflow.train.run import launch

    with console.status("rendering and validating with Axolotl's and DeepSpeed's own validators…"):
        plan = prepare(run_dir, config=config, accept_terms=accept_terms, machine_rank=machine_rank,
                       main_process_ip=main_process_ip)
    _print_plan(plan, dry_run)
    if dry_run:
        console.print("dry run: run the commands above yourself, or drop --dry-run", highlight=False)
        return
    try:
        with _Progress(progress and console.is_terminal) as bar:
            result = launch(plan, accept_terms=accept_terms, on_event=bar)
    except KeyboardInterrupt:
        # handle_errors' message is about the teacher cache; training has its own way to continue
        console.print(f"\ninterrupted — training stopped; logs in {plan.train_dir / 'logs'}. Run the same command to "
                      "start again (train.overrides: {auto_resume_from_checkpoints: true} continues from the last "
                      "saved checkpoint).", highlight=False)
        raise typer.Exit(130) from None
    if result.exit_code != 0:
        from distillflow.train.launch import log_tail

        failed = next(reversed(result.logs))
        for line in log_tail(result.logs[failed]):
            console.print(f"  {line}", style="dim", highlight=False, markup=False, soft_wrap=True)
        console.print(f"[red]{failed} failed[/] (exit {result.exit_code}) — the full log is {result.logs[failed]}",
                      highlight=False)
        code = result.exit_code
        raise typer.Exit(128 - code if code < 0 else code)  # killed by a signal: the shell's 128+N
    o = result.outcome
    loss = f"loss {o.first_loss:.4f} -> {o.final_loss:.4f}" if o.final_loss is not None else "no loss logged"
    console.print(f"[bold green]done[/] {loss} in {o.seconds / 60:.1f} min — student in {plan.output_dir}"
                  + (f" — model card {result.card_path}" if result.card_path else ""), highlight=False)
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
