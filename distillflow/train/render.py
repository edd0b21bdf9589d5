"""Render the Axolotl YAML (and the DeepSpeed JSON) from our templates and the pipeline's `train:` section.

    r = render(spec.train, dataset_path=train_dir / "dataset.jsonl", train_dir=train_dir, base_dir=Path("."))
    r.config["micro_batch_size"], r.deepspeed_name      # 4, "deepspeed_zero2.json"
    r.origins["learning_rate"]                          # "train.learning_rate"

Pure data work (no axolotl import): templates are read with ``yaml.safe_load``, keys are filled
from the spec, then ``train.overrides`` are deep-merged last. ``origins`` remembers where each
top-level key came from, so validation errors point at the YAML the user wrote.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distillflow.errors import ConfigurationError, Problem, SpecError
from distillflow.spec.train import DEEPSPEED_STAGES

TEMPLATES = ("full", "lora", "qlora")
# distillflow owns these: an override would silently train on something else or write elsewhere.
RESERVED = {
    "base_model": "train.base_model",
    "datasets": "the curated dataset (RUN_DIR/data/curated.jsonl)",
    "dataset_prepared_path": "RUN_DIR/train/prepared",
    "output_dir": "train.output_dir",
    "deepspeed": "train.deepspeed",
}
_SMALL_DATASET = 20_000  # conversations; below this, tokenising in one process is faster than spawning workers
# Optimizers whose kernels need CUDA; on CPU the plain PyTorch AdamW replaces them.
_CUDA_OPTIMIZERS = {"adamw_torch_fused", "paged_adamw_8bit", "paged_adamw_32bit", "adamw_bnb_8bit", "adamw_8bit"}


@dataclass
class Rendered:
    """A rendered Axolotl config, its DeepSpeed JSON (if any) and where each key came from."""

    config: dict
    template: Path
    deepspeed: dict | None = None
    deepspeed_name: str | None = None
    deepspeed_source: Path | None = None
    origins: dict[str, str] = field(default_factory=dict)

    def origin(self, key: str) -> str:
        return self.origins.get(str(key).split(".")[0], f"{self.template.name}: {key}")


def templates_dir() -> Path:
    """Where full/lora/qlora.yaml, fsdp.yaml and zero*.json live (repo checkout or packaged copy)."""
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "axolotl_configs", here.parents[1] / "templates" / "axolotl"):
        if (cand / "full.yaml").is_file():
            return cand
    raise ConfigurationError(
        "distillflow's Axolotl templates (axolotl_configs/) are missing from this installation — "
        "reinstall distillflow, or set train.template to your own Axolotl YAML"
    )


def resolve_local(value: str, base_dir: Path | None) -> str:
    """An existing local path (relative to the pipeline YAML, then the working dir) made absolute; else unchanged.

    >>> resolve_local("Qwen/Qwen2.5-0.5B", None)     # not on disk: a Hub id
    'Qwen/Qwen2.5-0.5B'
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    for root in (base_dir, Path.cwd()):
        if root is not None and (Path(root) / p).exists():
            return str((Path(root) / p).resolve())
    return value


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or value.count("/") > 1


def load_yaml(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: an Axolotl config must be a mapping of keys, not a {type(data).__name__}")
    return data


def strip_comments(data: Any) -> Any:
    """Drop ``_comment``-style keys (ours, starting with '_') recursively: DeepSpeed must not see them."""
    if isinstance(data, dict):
        return {k: strip_comments(v) for k, v in data.items() if not str(k).startswith("_")}
    if isinstance(data, list):
        return [strip_comments(v) for v in data]
    return data


def deep_merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``; nested mappings merge (``fsdp_config: {offload_params: true}`` keeps the rest)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def effective_precision(train) -> str:
    """``auto`` -> bf16 on GPUs, fp32 on CPU (CPU bf16 autocast is slow and rarely what a test wants)."""
    if train.precision != "auto":
        return train.precision
    return "bf16" if train.gpus_per_node > 0 else "fp32"


def load_deepspeed(name: str, base_dir: Path | None) -> tuple[dict, Path, str]:
    """Load a shipped stage (``zero2``) or a user JSON path; return (dict without comments, source, file name)."""
    if name in DEEPSPEED_STAGES:
        src, stem = templates_dir() / f"{name}.json", name
    else:
        src = Path(resolve_local(name, base_dir))
        stem = src.stem
        if not src.is_file():
            raise SpecError([Problem("train.deepspeed", f"DeepSpeed config {name} not found",
                                     hint=f"use one of {', '.join(DEEPSPEED_STAGES)} or an existing .json path")])
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except ValueError as e:
        raise SpecError([Problem("train.deepspeed", f"{src} is not valid JSON: {e}", hint="DeepSpeed reads strict JSON")]) from None
    return strip_comments(data), src, f"deepspeed_{stem}.json"


def render(train, *, dataset_path: Path, train_dir: Path, base_dir: Path | None, output_dir: Path | None = None,
           rows: int | None = None) -> Rendered:
    """Fill a template from ``train`` (a TrainSpec); see the module docstring.

    Raises SpecError for overrides of keys distillflow owns, ConfigurationError for missing files.
    """
    train_dir = Path(train_dir)
    if train.template:
        template = Path(resolve_local(train.template, base_dir))
        if not template.is_file():
            raise SpecError([Problem("train.template", f"template {train.template} not found",
                                     hint=f"give a path relative to the pipeline YAML, or drop it to use {train.adapter}.yaml")])
    else:
        template = templates_dir() / f"{train.adapter}.yaml"
    cfg = load_yaml(template)
    origins: dict[str, str] = {}

    def put(key: str, value: Any, origin: str) -> None:
        cfg[key] = value
        origins[key] = origin

    base_model = resolve_local(train.base_model, base_dir)
    if _looks_local(train.base_model) and not Path(base_model).exists():
        raise ConfigurationError(
            f"train.base_model: directory {train.base_model} not found (relative paths are read from the pipeline "
            "YAML's directory, then the working directory) — fix the path, or give a Hub model id"
        )
    put("base_model", base_model, "train.base_model")
    put("chat_template", train.chat_template, "train.chat_template")
    put("datasets", [{
        "path": str(Path(dataset_path).resolve()),
        "ds_type": "json",
        "type": "chat_template",
        "field_messages": "messages",
        "message_property_mappings": {"role": "role", "content": "content"},
        # Learn the teacher's answers only: system and user turns are context, not targets.
        "roles_to_train": ["assistant"],
        # Train the end-of-turn token of each answer, or the student never learns to stop.
        "train_on_eos": "turn",
    }], "RUN_DIR/train/dataset.jsonl")
    if train.mode == "kd":
        apply_kd(cfg, train, put)
    put("dataset_prepared_path", str((train_dir / "prepared").resolve()), "RUN_DIR/train/prepared")
    put("output_dir", str(Path(output_dir or train_dir / "output").resolve()), "train.output_dir")
    for key in ("val_set_size", "seed", "sequence_len", "sample_packing", "micro_batch_size",
                "gradient_accumulation_steps", "num_epochs"):
        put(key, getattr(train, key), f"train.{key}")
    if train.max_steps is not None:
        put("max_steps", train.max_steps, "train.max_steps")
    if train.learning_rate is not None:
        put("learning_rate", train.learning_rate, "train.learning_rate")
    if train.gradient_checkpointing is not None:
        put("gradient_checkpointing", train.gradient_checkpointing, "train.gradient_checkpointing")
    if rows is not None and rows < _SMALL_DATASET and "dataset_num_proc" not in cfg:
        # Worker processes each re-import torch + axolotl (~30 s apiece): pure overhead for small sets.
        put("dataset_num_proc", 1, "the dataset size")
    if train.adapter != "full":
        put("adapter", train.adapter, "train.adapter")
        for key in ("lora_r", "lora_alpha", "lora_dropout"):
            put(key, getattr(train, key), f"train.{key}")
        cfg.setdefault("lora_target_linear", True)
        if train.adapter == "qlora":
            put("load_in_4bit", True, "train.adapter")
    elif cfg.pop("adapter", None):
        origins["adapter"] = "train.adapter"  # a user template's adapter must not contradict `adapter: full`

    precision = effective_precision(train)
    put("bf16", precision == "bf16", "train.precision")
    put("fp16", precision == "fp16", "train.precision")
    put("tf32", train.gpus_per_node > 0, "train.gpus_per_node")
    if train.gpus_per_node == 0 and cfg.get("optimizer") in _CUDA_OPTIMIZERS:
        put("optimizer", "adamw_torch", "train.gpus_per_node")

    ds = ds_name = ds_src = None
    if train.deepspeed:
        ds, ds_src, ds_name = load_deepspeed(train.deepspeed, base_dir)
        put("deepspeed", str((train_dir / ds_name).resolve()), "train.deepspeed")
    if train.fsdp:
        cfg = deep_merge(cfg, load_yaml(templates_dir() / "fsdp.yaml"))
        origins["fsdp_version"] = origins["fsdp_config"] = "train.fsdp"
        if train.adapter == "qlora":
            # Rank-0-only loading deadlocks with bitsandbytes 4-bit quantisation (Axolotl refuses it).
            cfg["fsdp_config"]["cpu_ram_efficient_loading"] = False
        if cfg.get("gradient_checkpointing"):
            # FSDP2 checkpoints per wrapped layer itself; the HF flag on top would recompute twice.
            cfg["fsdp_config"]["activation_checkpointing"] = True
            put("gradient_checkpointing", False, "train.gradient_checkpointing")
    if train.push_to_hub:
        put("hub_model_id", train.push_to_hub, "train.push_to_hub")
        put("hub_strategy", "end", "train.push_to_hub")

    problems = [
        Problem(f"train.overrides.{k}", f"distillflow sets '{k}' itself", hint=f"use {RESERVED[k]} instead")
        for k in train.overrides if k in RESERVED
    ]
    if problems:
        raise SpecError(problems, "train section")
    cfg = deep_merge(cfg, train.overrides)
    for k in train.overrides:
        origins[k] = f"train.overrides.{k}"
    return Rendered(config=cfg, template=template, deepspeed=ds, deepspeed_name=ds_name,
                    deepspeed_source=ds_src, origins=origins)


KD_PLUGIN = "axolotl.integrations.kd.KDPlugin"


def apply_kd(cfg: dict, train, put) -> None:
    """Switch a rendered SFT config to Axolotl's KD plugin (train.mode: kd): its dataset loader reads
    ``logprobs``/``target_token_ids`` (written by :mod:`distillflow.train.kd`), its trainer mixes
    forward KL on the teacher's top-K (``kd_alpha``) with cross-entropy on the answer (``kd_ce_alpha``)."""
    ds = dict(cfg["datasets"][0])
    # the v2 loader; temperature: the logprobs are the teacher's raw (T=1) distribution
    ds.update({"type": "axolotl.integrations.kd.chat_template", "logprobs_field": "logprobs", "temperature": 1.0})
    put("datasets", [ds], "RUN_DIR/train/dataset.jsonl (train.mode: kd)")
    put("plugins", list(dict.fromkeys([*(cfg.get("plugins") or []), KD_PLUGIN])), "train.mode")
    put("kd_trainer", True, "train.mode")
    put("kd_alpha", train.kd.alpha, "train.kd.alpha")
    put("kd_ce_alpha", train.kd.ce_alpha, "train.kd.ce_alpha")
    put("kd_temperature", train.kd.temperature, "train.kd.temperature")


def write_deepspeed(r: Rendered, train_dir: Path) -> Path | None:
    """Write the DeepSpeed JSON (comments stripped) next to the Axolotl YAML; None without DeepSpeed."""
    if r.deepspeed is None or not r.deepspeed_name:
        return None
    path = Path(train_dir) / r.deepspeed_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r.deepspeed, indent=2) + "\n", encoding="utf-8")
    return path


def write_config(r: Rendered, train_dir: Path, *, header: str = "") -> Path:
    """Write ``axolotl.yaml`` into ``train_dir`` (after validation passed); return its path."""
    path = Path(train_dir) / "axolotl.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(r.config, sort_keys=False, allow_unicode=True, width=120)
    path.write_text(header + text, encoding="utf-8")
    return path
