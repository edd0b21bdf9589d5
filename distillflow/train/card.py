"""The student's model card: what it was distilled from, under which declared terms, and how it trained.

    text = render_model_card(plan, outcome)          # markdown with a Hub front matter
    (plan.train_dir / "README.md").write_text(text)

Discloses the base model, the curated dataset and its counts, every teacher with its declared terms
of use (and whether training was accepted despite them), judges, verifiers and filters, the review
mode, hyper-parameters, ZeRO stage / FSDP, hardware, GPU-hours and the training loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

_FILTER_KINDS = ("filter", "length_filter", "refusal_filter", "dedup", "best_of")


@dataclass
class Outcome:
    """What the launch produced (filled by :func:`distillflow.train.run.train`)."""

    exit_code: int = 0
    seconds: float = 0.0
    metrics: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    hardware: str = "unknown"
    gpu_hours: float = 0.0
    accepted_terms: bool = False

    @property
    def losses(self) -> list[float]:
        return [m["loss"] for m in self.metrics if isinstance(m.get("loss"), float)]

    @property
    def first_loss(self) -> float | None:
        return self.losses[0] if self.losses else None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    @property
    def eval_loss(self) -> float | None:
        evals = [m["eval_loss"] for m in self.metrics if isinstance(m.get("eval_loss"), float)]
        return evals[-1] if evals else None


def terms_text(t) -> str:
    """``allowed (https://...)`` / ``**NOT allowed** (no source declared)`` for a TeacherSpec."""
    allowed = "allowed" if t.terms.allows_training else "**NOT allowed**"
    src = t.terms.source
    where = f"[terms]({src})" if src and src.startswith("http") else (src or "no source declared")
    notes = f"; {t.terms.notes}" if t.terms.notes else ""
    return f"training on outputs {allowed} ({where}{notes})"


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _stage(cfg: dict, train) -> str:
    if train.deepspeed:
        return f"DeepSpeed {train.deepspeed}"
    if train.fsdp or cfg.get("fsdp_config"):
        return f"FSDP{cfg.get('fsdp_version', '')}"
    return "none (single process)" if train.world_size() == 1 else "DDP"


def render_model_card(plan, outcome: Outcome) -> str:
    """Markdown for ``README.md`` next to the trained student (see the module docstring)."""
    spec, train, cfg = plan.spec, plan.train, plan.rendered.config
    manifest = plan.manifest
    ex = plan.export
    name = f"{spec.name}-student"
    lines = [
        "---",
        f"base_model: {train.base_model}",
        "library_name: transformers",
        "tags:",
        "- distillation",
        "- distillflow",
        "- axolotl",
        "- sft",
        "---",
        "",
        f"# {name}",
        "",
        f"`{train.base_model}` fine-tuned ({train.adapter}) with Axolotl on the curated dataset of the distillflow "
        f"pipeline **{spec.name}** (spec hash `{manifest.get('spec_hash', 'n/a')}`): answers of the teachers below, "
        "kept by the judges, verifiers and filters listed here.",
        "",
        "## Teachers and their declared terms",
        "",
        "| teacher | provider | model | declared terms | answers in the training set |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in spec.teachers:
        lines.append(f"| {t.name} | {t.provider} | `{t.model}` | {terms_text(t)} | {ex.by_teacher.get(t.name, 0)} |")
    forbidden = [t.name for t in spec.teachers if not t.terms.allows_training]
    if forbidden:
        how = ("Training was run with `--accept-terms`: the operator took responsibility." if outcome.accepted_terms
               else "Check that you have the right to use this model.")
        lines += ["", f"> **Warning:** the declared terms of {', '.join(forbidden)} do not allow training models on "
                      f"their outputs. {how}"]
    lines += [
        "",
        "## Dataset",
        "",
        f"- Curated records: {ex.curated} (`data/curated.jsonl`, dataset card: `README.md` of the run directory)",
        f"- Trained on: {ex.rows} conversations (system and user turns as context, the teacher's answer as the "
        "only target: `roles_to_train: [assistant]`)",
        f"- Review mode: {ex.review_mode}",
    ]
    for reason, n in sorted(ex.excluded.items()):
        lines.append(f"- Left out: {n} ({reason})")
    if cfg.get("val_set_size"):
        lines.append(f"- Held out for eval loss: {cfg['val_set_size']:.0%} of the conversations")
    lines += ["", "## Judges, verifiers and filters", ""]
    counts = manifest.get("counts", {})
    step_rows = [s for s in spec.steps if s.kind in ("judge", "verify", "reward", *_FILTER_KINDS)]
    if step_rows:
        lines += ["| step | kind | settings | in | kept | rejected |", "| --- | --- | --- | --- | --- | --- |"]
        for s in step_rows:
            c = counts.get(s.id, {})
            settings = json.dumps(s.model_dump(mode="json", exclude_defaults=True, exclude={"id", "kind", "after"}),
                                  ensure_ascii=False)[:140]
            lines.append(f"| {s.id} | {s.kind} | `{settings}` | {c.get('in', '')} | {c.get('out', '')} | {c.get('rejected', '')} |")
    else:
        lines.append("None: every teacher answer was kept.")
    global_batch = plan.preflight.global_batch
    from distillflow.spec.train import mode_text, sampling_seeds

    hp = [
        ("training mode", mode_text(spec)),
        ("teacher sampling seeds", sampling_seeds(spec)),
        ("adapter", train.adapter + (f" (r={cfg.get('lora_r')}, alpha={cfg.get('lora_alpha')})" if train.adapter != "full" else "")),
        ("sequence length", cfg.get("sequence_len")),
        ("sample packing", cfg.get("sample_packing")),
        ("epochs", _epochs(cfg, plan.preflight.steps_per_epoch)),
        *([("max steps", cfg["max_steps"])] if cfg.get("max_steps") else []),
        ("learning rate", f"{cfg.get('learning_rate')} ({cfg.get('lr_scheduler', 'constant')})"),
        ("optimizer", cfg.get("optimizer")),
        ("micro batch x accumulation x processes",
         f"{cfg.get('micro_batch_size')} x {cfg.get('gradient_accumulation_steps')} x {train.world_size()} = {global_batch}"),
        ("precision", "bf16" if cfg.get("bf16") else "fp16" if cfg.get("fp16") else "fp32"),
        ("gradient checkpointing", cfg.get("gradient_checkpointing")),
        ("sharding", _stage(cfg, train)),
        ("hardware", outcome.hardware),
        ("nodes x GPUs per node", f"{train.nodes} x {train.gpus_per_node}"),
        ("training time", f"{outcome.seconds / 60:.1f} min"),
        ("GPU-hours", f"{outcome.gpu_hours:.3f}"),
        ("seed", cfg.get("seed")),
    ]
    lines += ["", "## Training", "", "| setting | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in hp]
    s = outcome.summary
    lines += [
        "",
        "## Results",
        "",
        f"- Training loss: first logged {_fmt(outcome.first_loss)}, final {_fmt(outcome.final_loss)}"
        f" (mean over the run {_fmt(s.get('train_loss'))}, {len(outcome.losses)} logged steps)",
        f"- Eval loss: {_fmt(outcome.eval_loss)}",
        f"- Runtime reported by the trainer: {_fmt(s.get('train_runtime'), 1)} s",
        "",
        "Retention against the teachers is measured by `distillflow eval`, not by this loss.",
        "",
        "## Reproduce",
        "",
        "```bash",
        f"distillflow train {plan.run_dir}",
        "# which runs:",
        *[c.shell() for c in plan.commands],
        "```",
        "",
        f"The rendered Axolotl config is `{plan.config_path}`"
        + (f", its DeepSpeed JSON `{plan.deepspeed_path}`." if plan.deepspeed_path else "."),
        "",
    ]
    study = Path(plan.run_dir) / "study.json"
    if study.is_file():  # benchmarks/study.py's results, copied into the run (examples/quickstart/demo.py does)
        from distillflow.stats import study_table

        lines += ["## Study: how much one run tells", "", "From `benchmarks/study.py` (`study.json` in the run directory):",
                  "", study_table(json.loads(study.read_text(encoding="utf-8"))), ""]
    return "\n".join(lines)


def _epochs(cfg: dict, steps_per_epoch: int) -> object:
    """num_epochs, or the passes that max_steps really makes (the trainer stops there)."""
    if cfg.get("max_steps") and steps_per_epoch:
        return f"{int(cfg['max_steps']) / steps_per_epoch:.1f} (max_steps {cfg['max_steps']} x {steps_per_epoch} steps/epoch)"
    return cfg.get("num_epochs")
