"""`distillflow eval RUN_DIR`: retention of the trained student against its teacher."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from distillflow.cli._common import console, err_console, handle_errors


@handle_errors
def command(
    run_dir: Path = typer.Argument(..., help="Run directory (from `distillflow run`)"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Pipeline YAML to use instead of RUN_DIR/pipeline.yaml"),
    student: Optional[Path] = typer.Option(None, "--student", help="Trained student directory (default: RUN_DIR/train/output)"),
    base: Optional[Path] = typer.Option(None, "--base", help="Student base model directory (default: train.base_model)"),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher to compare with (default: the first teacher)"),
    max_prompts: Optional[int] = typer.Option(None, "--max-prompts", min=1, help="Evaluate on at most N held-out prompts"),
    sample_temperature: Optional[float] = typer.Option(
        None, "--sample-temperature", min=0.01, max=2.0, help="Also score answers sampled at this temperature (verifier/exact_match)"
    ),
    backend: Optional[str] = typer.Option(None, "--backend", help="How students answer: local | serve (transformers serve)"),
    metric: Optional[List[str]] = typer.Option(None, "--metric", "-m", help="verifier | exact_match | judge | winrate (repeatable)"),
):
    """Answer the held-out prompts with the base student, the trained student and the teacher; report retention."""
    from distillflow.evaluate.retention import evaluate_run
    from distillflow.evaluate.table import results_table

    results = evaluate_run(
        run_dir, config=config, student=student, base=base, teacher=teacher, max_prompts=max_prompts,
        sample_temperature=sample_temperature, backend=backend, metrics=metric or None,
        log=lambda msg: err_console.print(f"[dim]{msg}[/]", highlight=False),
    )
    console.print(results_table(results))
    for note in results.get("notes", []):
        console.print(f"[yellow]note[/]: {note}", highlight=False)
    lm = results.get("lm_eval", {})
    if lm.get("status") == "skipped" and lm.get("reason", "").startswith("lm-evaluation-harness"):
        console.print(f"[yellow]note[/]: {lm['reason']}", highlight=False)
    for key, err in (lm.get("errors") or {}).items():
        console.print(f"[yellow]lm-eval failed for {key}[/]: {err}", highlight=False)
    console.print(f"wrote {run_dir / 'eval' / 'results.json'}", highlight=False)
