"""Everything before launch: terms, dataset export, rendering, validation, preflight, commands.

    plan = prepare("runs/qa")                 # writes runs/qa/train/{dataset.jsonl,axolotl.yaml,deepspeed_*.json}
    plan.preflight.global_batch, plan.commands[-1].shell()

Nothing is started here; :func:`distillflow.train.run.train` launches a plan.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distillflow.errors import ConfigurationError, Problem, SpecError, UsageError, error_text, run_pipeline_file
from distillflow.train.export import ExportStats, export_dataset
from distillflow.train.launch import Command, build_commands
from distillflow.train.memory import (
    GIB, MemoryEstimate, estimate, gpu_memory_bytes, gpus_found, hidden_size_of, model_shape, sharding_stage,
)
from distillflow.train.render import Rendered, effective_precision, render, write_config, write_deepspeed


@dataclass
class Preflight:
    """Can it run here: batch arithmetic, GPUs found vs requested, per-GPU memory estimate."""

    world: int
    global_batch: int
    rows: int
    steps_per_epoch: int
    total_steps: int
    gpus_requested: int
    gpus_found: int
    memory: MemoryEstimate | None = None
    gpu_capacity: float | None = None
    gpu_name: str = "unknown"
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable preflight report (printed by the CLI, kept in plan.json)."""
        out = [
            f"processes: {self.world} — global batch {self.global_batch} examples/step, "
            f"{self.rows} conversations -> ~{self.steps_per_epoch} steps/epoch, ~{self.total_steps} steps in all",
            f"GPUs per node: requested {self.gpus_requested}, found here {self.gpus_found}",
        ]
        m = self.memory
        if m is not None:
            cap = f" of {self.gpu_capacity / GIB:.1f} GiB ({self.gpu_name})" if self.gpu_capacity else ""
            parts = ", ".join(f"{k} {v:.2f}" for k, v in m.rows()[:-1])
            out.append(f"memory per GPU ({m.stage}, {m.params / 1e6:.1f}M params, {m.trainable / 1e6:.2f}M trained): "
                       f"~{m.total_gib:.2f} GiB{cap} [{parts} GiB]")
            if m.cpu_per_node:
                out.append(f"CPU RAM per node for offloaded optimizer states: ~{m.cpu_per_node / GIB:.1f} GiB")
        elif self.gpus_requested == 0:
            out.append("CPU training: one process, no GPU memory estimate")
        else:
            out.append("memory per GPU: unknown (base model not on disk or in the HF cache)")
        return out + [f"warning: {w}" for w in self.warnings]


@dataclass
class TrainPlan:
    """A validated, rendered training run, ready to launch."""

    run_dir: Path
    train_dir: Path
    spec: object
    train: object
    rendered: Rendered
    export: ExportStats
    preflight: Preflight
    commands: list[Command]
    config_path: Path
    dataset_path: Path
    output_dir: Path
    deepspeed_path: Path | None = None
    manifest: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def files(self) -> list[Path]:
        return [p for p in (self.dataset_path, self.config_path, self.deepspeed_path) if p is not None]


def load_run_spec(run_dir: Path, config: Path | None):
    """The run's pipeline (or ``--config``) as a Document: spec, YAML lines, base directory."""
    from distillflow.spec.loader import load_document

    path = run_pipeline_file(run_dir, config)
    doc = load_document(path)
    if doc.spec.train is None:
        raise SpecError([Problem("train", "the pipeline has no train: section",
                                 hint="add one (base_model at least), or pass --config with a pipeline that has it")], str(path))
    return doc


def check_terms(spec, accept_terms: bool) -> list[str]:
    """Refuse when a teacher's declared terms forbid training on its outputs, unless accepted."""
    bad = [t for t in spec.teachers if not t.terms.allows_training]
    if not bad:
        return []
    names = ", ".join(f"{t.name} ({t.terms.source or 'no source declared'})" for t in bad)
    if not accept_terms:
        raise ConfigurationError(
            f"the declared terms of teacher(s) {names} do not allow training models on their outputs — "
            "remove their answers from the pipeline, or pass --accept-terms if you have the right to train on them"
        )
    return [f"training despite the declared terms of {names} (--accept-terms); the model card says so"]


def resolve_python(train, base_dir: Path) -> str:
    if not train.python:
        return sys.executable
    cand = Path(train.python).expanduser()
    for p in (cand, base_dir / cand):
        if p.is_file():
            return str(p.resolve())
    found = shutil.which(train.python)
    if found:
        return found
    raise ConfigurationError(f"train.python: {train.python} not found — give the path of a python that has axolotl installed")


def _with_overrides(train, **updates):
    from pydantic import ValidationError

    updates = {k: v for k, v in updates.items() if v is not None}
    if not updates:
        return train
    try:
        return type(train).model_validate({**train.model_dump(exclude_unset=True), **updates})
    except ValidationError as e:
        raise UsageError("; ".join(error_text(err) for err in e.errors())) from None


def preflight(train, cfg: dict, rows: int, base_model: str, deepspeed: dict | None = None) -> Preflight:
    """Batch arithmetic from the rendered config, GPUs found, memory estimate and fit warnings."""
    world = train.world_size()
    micro, ga = int(cfg.get("micro_batch_size") or 1), int(cfg.get("gradient_accumulation_steps") or 1)
    gb = micro * ga * world
    train_rows = max(0, rows - int(rows * float(cfg.get("val_set_size") or 0)))
    per_epoch = max(1, math.ceil(train_rows / gb)) if train_rows else 0
    found = gpus_found() if train.gpus_per_node else 0
    total = math.ceil(per_epoch * float(cfg.get("num_epochs") or 1))
    if cfg.get("max_steps"):
        total = int(cfg["max_steps"])  # the trainer stops there, whatever num_epochs says
    pf = Preflight(world=world, global_batch=gb, rows=train_rows, steps_per_epoch=per_epoch, total_steps=total,
                   gpus_requested=train.gpus_per_node, gpus_found=found)
    if train.gpus_per_node and found < train.gpus_per_node:
        pf.warnings.append(f"{train.gpus_per_node} GPU(s) per node requested but {found} found here")
    if train_rows and train_rows < gb:
        pf.warnings.append(f"only {train_rows} conversations for a global batch of {gb}: one partial step per epoch")
    if not train.gpus_per_node:
        return pf
    shape = model_shape(base_model)
    if shape is None:
        return pf
    stage = sharding_stage(train, deepspeed)
    mem = estimate(shape, stage=stage, world=world, adapter=train.adapter, micro=micro,
                   seq=int(cfg.get("sequence_len") or 2048), precision=effective_precision(train),
                   gradient_checkpointing=bool(cfg.get("gradient_checkpointing")
                                               or (cfg.get("fsdp_config") or {}).get("activation_checkpointing")),
                   lora_r=int(cfg.get("lora_r") or 16), gpus_per_node=train.gpus_per_node)
    pf.memory = mem
    pf.warnings += mem.notes
    pf.gpu_capacity, pf.gpu_name = gpu_memory_bytes(train.gpu_memory_gb)
    if pf.gpu_capacity and mem.total > pf.gpu_capacity:
        fixes = {
            "none": "use deepspeed: zero2 or zero3", "zero1": "use deepspeed: zero2 or zero3",
            "zero2": "use deepspeed: zero3", "zero3": "use deepspeed: zero3_offload, or more GPUs",
            "fsdp": "set fsdp_config.offload_params, or more GPUs",
        }.get(stage, "use more GPUs")
        pf.warnings.append(
            f"estimated {mem.total_gib:.1f} GiB per GPU exceeds the {pf.gpu_capacity / GIB:.1f} GiB available — "
            f"{fixes}; lower micro_batch_size; or set gradient_checkpointing: true")
    elif pf.gpu_capacity and mem.total > 0.85 * pf.gpu_capacity:
        pf.warnings.append(f"estimated {mem.total_gib:.1f} GiB per GPU is close to the "
                           f"{pf.gpu_capacity / GIB:.1f} GiB available")
    return pf


def prepare(run_dir: str | Path, *, config: str | Path | None = None, accept_terms: bool = False,
            machine_rank: int | None = None, main_process_ip: str | None = None) -> TrainPlan:
    """Export, render, validate and preflight a run's training; write its files under RUN_DIR/train/.

    >>> plan = prepare("runs/qa")                          # doctest: +SKIP
    >>> plan.config_path                                   # runs/qa/train/axolotl.yaml
    """
    run_dir = Path(run_dir)
    doc = load_run_spec(run_dir, Path(config) if config else None)
    spec, base_dir = doc.spec, doc.base_dir
    train = _with_overrides(spec.train, machine_rank=machine_rank, main_process_ip=main_process_ip)
    problem = train.rendezvous_problem()  # after the overrides: --main-process-ip may give what the YAML lacks
    if problem:
        line = doc.lines.get(("train", "nodes"), doc.lines.get(("train",)))
        raise SpecError([Problem("train.nodes", problem, line)], doc.source)
    warnings = check_terms(spec, accept_terms)
    python = resolve_python(train, base_dir)
    train_dir = run_dir / "train"
    dataset_path = train_dir / "dataset.jsonl"
    # A relative output_dir lives inside the run: the run directory is the unit users move and archive.
    output_dir = run_dir / train.output_dir if train.output_dir else train_dir / "output"
    student_tok = None
    if train.mode == "kd":
        from distillflow.train.kd import check_tokenizers, kd_teacher, teacher_tokenizer_source
        from distillflow.train.render import resolve_local

        student_src = resolve_local(train.base_model, base_dir)
        check_tokenizers(teacher_tokenizer_source(spec, base_dir), student_src, kd_teacher(spec))
        from transformers import AutoTokenizer

        student_tok = AutoTokenizer.from_pretrained(student_src)
    stats = export_dataset(spec, run_dir / "data" / "curated.jsonl", dataset_path, student_tok)
    rendered = render(train, dataset_path=dataset_path, train_dir=train_dir, base_dir=base_dir, output_dir=output_dir,
                      rows=stats.rows)
    if student_tok is not None and "tokenizer_config" not in rendered.config:
        from distillflow.train.kd import right_padding_tokenizer

        # Axolotl's KD collator pads the teacher's entries on the right, whatever the tokenizer's side.
        right = right_padding_tokenizer(student_tok, train_dir / "kd_tokenizer")
        if right is not None:
            rendered.config["tokenizer_config"] = str(right.resolve())
            rendered.origins["tokenizer_config"] = "train.mode: kd (a right-padding copy of the student's tokenizer)"
    base_model = rendered.config["base_model"]
    if not Path(base_model).exists():
        warnings.append(f"train.base_model '{base_model}' is not a local directory: Axolotl will fetch it from the "
                        "Hugging Face Hub (network or a filled HF cache needed on every node)")
    from distillflow.train.validate import validate

    # A config from an earlier prepare must not outlive a failed validation of this one.
    (train_dir / "axolotl.yaml").unlink(missing_ok=True)
    ds_path = write_deepspeed(rendered, train_dir)
    warnings += validate(rendered, train, hidden_size=hidden_size_of(base_model) or 4096,
                         python=None if python == sys.executable else python, lines=doc.lines)
    header = (f"# Rendered by distillflow from {rendered.template.name} for run {run_dir.name}; validated by Axolotl.\n"
              "# Edit the pipeline's train: section (or train.overrides) and re-run `distillflow train`, not this file.\n")
    config_path = write_config(rendered, train_dir, header=header)
    commands = build_commands(train, config_path.resolve(), python=python, run_id=str(run_dir.resolve()))
    pf = preflight(train, rendered.config, stats.rows, base_model, rendered.deepspeed)
    manifest_path = run_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    plan = TrainPlan(run_dir=run_dir, train_dir=train_dir, spec=spec, train=train, rendered=rendered, export=stats,
                     preflight=pf, commands=commands, config_path=config_path, dataset_path=dataset_path,
                     output_dir=output_dir, deepspeed_path=ds_path, manifest=manifest, warnings=warnings)
    (train_dir / "plan.json").write_text(json.dumps({
        "commands": [c.shell() for c in commands], "files": [str(p) for p in plan.files()],
        "export": stats.to_dict(), "preflight": pf.lines(), "warnings": warnings,
    }, indent=2) + "\n", encoding="utf-8")
    return plan
