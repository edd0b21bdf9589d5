"""Launch a prepared plan: `axolotl preprocess`, then `axolotl train`, then the student's model card.

    result = train("runs/qa")                      # or train("runs/qa", dry_run=True) to only prepare
    result.exit_code, result.outcome.final_loss    # 0, 0.41
    result.card_path                               # runs/qa/train/README.md

Logs go to RUN_DIR/train/logs/<command>.log, every logged metric to RUN_DIR/train/metrics.jsonl (and,
in the HF Trainer's shape, RUN_DIR/train/trainer_state.json).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distillflow.errors import ConfigurationError
from distillflow.train.card import Outcome, render_model_card
from distillflow.train.launch import LogParser, run_command
from distillflow.train.memory import nvidia_smi
from distillflow.train.plan import TrainPlan, prepare

#: on_event(command_name, kind, data): kind is "start" | "step" | "metrics" | "line" | "end".
EventCallback = Callable[[str, str, object], None]


@dataclass
class TrainResult:
    """The plan, the launcher's exit code, what training reported, and where the card went."""

    plan: TrainPlan
    exit_code: int = 0
    outcome: Outcome = field(default_factory=Outcome)
    card_path: Path | None = None
    logs: dict[str, Path] = field(default_factory=dict)
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)


def hardware(train) -> str:
    """``8 x NVIDIA H100 80GB HBM3 per node x 2 nodes`` / ``CPU (16 cores)``."""
    if train.gpus_per_node == 0:
        return f"CPU ({os.cpu_count()} cores)"
    names = [n for n, _ in nvidia_smi()]
    if not names:
        try:
            import torch

            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        except Exception:
            names = []
    name = names[0] if names else "GPU (model unknown)"
    nodes = f" per node x {train.nodes} nodes" if train.nodes > 1 else ""
    return f"{train.gpus_per_node} x {name}{nodes}"


def write_card(plan: TrainPlan, outcome: Outcome) -> Path:
    """Write the model card to RUN_DIR/train/README.md and into the output dir (replacing Axolotl's own)."""
    text = render_model_card(plan, outcome)
    path = plan.train_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    if plan.output_dir.is_dir():
        (plan.output_dir / "README.md").write_text(text, encoding="utf-8")
    return path


def _push_card(plan: TrainPlan, path: Path) -> str | None:
    """Replace the card Axolotl pushed with ours; a failure is a warning (the model is already up)."""
    repo = plan.train.push_to_hub
    if not repo:
        return None
    try:
        from huggingface_hub import HfApi

        HfApi(token=os.environ.get("HF_TOKEN")).upload_file(path_or_fileobj=str(path), path_in_repo="README.md",
                                                          repo_id=repo, repo_type="model")
    except Exception as e:
        return f"could not upload the model card to {repo} ({type(e).__name__}: {e}); it is in {path}"
    return None


def train(run_dir: str | Path, *, config: str | Path | None = None, accept_terms: bool = False, dry_run: bool = False,
          machine_rank: int | None = None, main_process_ip: str | None = None,
          on_event: EventCallback | None = None) -> TrainResult:
    """Prepare (see :func:`distillflow.train.plan.prepare`) and, unless ``dry_run``, launch.

    >>> result = train("runs/qa", dry_run=True)          # doctest: +SKIP
    >>> [c.shell() for c in result.plan.commands]        # what a real run would start
    """
    plan = prepare(run_dir, config=config, accept_terms=accept_terms, machine_rank=machine_rank,
                   main_process_ip=main_process_ip)
    if dry_run:
        return TrainResult(plan=plan, dry_run=True)
    return launch(plan, accept_terms=accept_terms, on_event=on_event)


def launch(plan: TrainPlan, *, accept_terms: bool = False, on_event: EventCallback | None = None) -> TrainResult:
    """Run a plan's commands in order, stop at the first failure, write the card on success.

    Returns the first non-zero exit code of the commands (0 on success). Raises ConfigurationError
    when fewer GPUs are visible than ``train.gpus_per_node`` asks for.
    """
    result = TrainResult(plan=plan)
    pf = plan.preflight
    if plan.train.gpus_per_node and pf.gpus_found < plan.train.gpus_per_node:
        raise ConfigurationError(
            f"train.gpus_per_node is {plan.train.gpus_per_node} but {pf.gpus_found} GPU(s) are visible here — "
            f"run on a machine with {plan.train.gpus_per_node} GPUs, set gpus_per_node: {pf.gpus_found} "
            "(0 = CPU), or use --dry-run to only prepare the files"
        )
    outcome = Outcome(accepted_terms=accept_terms, hardware=hardware(plan.train))
    logs = plan.train_dir / "logs"
    for stale in (plan.train_dir / "metrics.jsonl", plan.train_dir / "trainer_state.json", *logs.glob("*.log")):
        stale.unlink(missing_ok=True)  # a re-run must not mix its logs and metrics with the last one's
    parser = LogParser(logging_steps=plan.rendered.config.get("logging_steps", 1))
    for cmd in plan.commands:
        log = logs / f"{cmd.name}.log"
        result.logs[cmd.name] = log
        if on_event:
            on_event(cmd.name, "start", cmd)
        t0 = time.monotonic()
        rc = run_command(cmd, log, (lambda kind, data, n=cmd.name: on_event(n, kind, data)) if on_event else None,
                         parser=parser if cmd.name == "train" else LogParser())
        seconds = time.monotonic() - t0
        if cmd.name == "train":
            outcome.seconds = seconds
        if on_event:
            on_event(cmd.name, "end", rc)
        if rc != 0:
            result.exit_code = rc
            break
    outcome.exit_code = result.exit_code
    outcome.metrics, outcome.summary = parser.metrics, parser.summary
    if plan.train.gpus_per_node:
        outcome.gpu_hours = outcome.seconds * plan.train.world_size() / 3600
    history = parser.metrics + ([parser.summary] if parser.summary else [])
    with (plan.train_dir / "metrics.jsonl").open("w", encoding="utf-8") as fh:
        for m in history:
            fh.write(json.dumps(m) + "\n")
    # The HF Trainer only writes trainer_state.json inside checkpoints (none with save_strategy: "no");
    # this one always exists, in the same shape, for readers such as `distillflow report`.
    state = {"log_history": history, "global_step": parser.step, "max_steps": parser.total,
             "written_by": "distillflow (parsed from the trainer's log)"}
    (plan.train_dir / "trainer_state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    result.outcome = outcome
    # Only node 0 writes the card: other nodes have no complete view of the run (and may share a disk).
    if result.exit_code == 0 and plan.train.machine_rank == 0:
        result.card_path = write_card(plan, outcome)
        warning = _push_card(plan, result.card_path)
        if warning:
            result.warnings.append(warning)
    return result
