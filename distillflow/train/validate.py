"""Static validation of a rendered training config, by Axolotl's and DeepSpeed's own validators.

    warnings = validate(rendered, spec.train, hidden_size=4096)     # raises SpecError listing every problem

Every problem names the key the user wrote (``train.overrides.lerning_rate``, ``train.micro_batch_size``,
``deepspeed.zero_optimization.stage``) with the validator's message and a fix. "Is this config
valid" lives here; "can it run on this machine" (GPUs, memory) lives in :mod:`.memory`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from distillflow.errors import ConfigurationError, MissingDependencyError, Problem, SpecError
from distillflow.train.render import Rendered, effective_precision

# Placeholder for values HF fills from the schedule at launch: any positive int validates.
_STEPS_PLACEHOLDER = 1000


def axolotl_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("axolotl") is not None and importlib.util.find_spec("deepspeed") is not None


def target_capabilities(train) -> dict:
    """What the *target* machines can do, as Axolotl's validator expects it (not this laptop)."""
    return {
        "bf16": effective_precision(train) == "bf16",
        "fp8": False,
        "tf32": train.gpus_per_node > 0,
        "n_gpu": train.world_size(),
        "n_node": train.nodes,
        "compute_capability": None,
    }


def fill_deepspeed_auto(ds: dict, cfg: dict, world: int, hidden_size: int) -> tuple[dict, list[tuple[str, str]]]:
    """Replace ``"auto"`` as the HF Trainer will at launch; report explicit values that will disagree.

    Mirrors ``transformers.integrations.deepspeed.HfTrainerDeepSpeedConfig`` so that a mismatch
    (which HF only raises after the model has loaded on every GPU) is caught here.
    """
    out = copy.deepcopy(ds)
    problems: list[tuple[str, str]] = []
    micro, ga = int(cfg.get("micro_batch_size") or 1), int(cfg.get("gradient_accumulation_steps") or 1)
    lr = cfg.get("learning_rate")
    expected = {
        "train_micro_batch_size_per_gpu": (micro, "micro_batch_size"),
        "gradient_accumulation_steps": (ga, "gradient_accumulation_steps"),
        "train_batch_size": (micro * ga * world, "micro_batch_size x gradient_accumulation_steps x GPUs"),
        "gradient_clipping": (cfg.get("max_grad_norm", 1.0), "max_grad_norm"),
        "bf16.enabled": (bool(cfg.get("bf16")), "bf16 (train.precision)"),
        "fp16.enabled": (bool(cfg.get("fp16")), "fp16 (train.precision)"),
        "optimizer.params.lr": (lr, "learning_rate"),
        "scheduler.params.warmup_max_lr": (lr, "learning_rate"),
    }
    fill_only = {
        "scheduler.params.warmup_min_lr": 0,
        "scheduler.params.total_num_steps": _STEPS_PLACEHOLDER,
        "scheduler.params.warmup_num_steps": 0,
        "zero_optimization.reduce_bucket_size": hidden_size * hidden_size,
        "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * hidden_size * hidden_size),
        "zero_optimization.stage3_param_persistence_threshold": 10 * hidden_size,
        "optimizer.params.betas": [0.9, 0.999],
        "optimizer.params.eps": 1e-8,
        "optimizer.params.weight_decay": cfg.get("weight_decay", 0.0),
    }

    def node(dotted: str):
        *parents, leaf = dotted.split(".")
        cur = out
        for p in parents:
            cur = cur.get(p) if isinstance(cur, dict) else None
            if cur is None:
                return None, leaf
        return (cur if isinstance(cur, dict) else None), leaf

    for key, (value, axolotl_key) in expected.items():
        parent, leaf = node(key)
        if parent is None or leaf not in parent:
            continue
        if parent[leaf] == "auto":
            parent[leaf] = value
        elif value is not None and parent[leaf] != value:
            problems.append((key, f"is {parent[leaf]!r} but the Axolotl config gives {value!r} ({axolotl_key}) — "
                                  "set it to \"auto\" so the two cannot disagree"))
    for key, value in fill_only.items():
        parent, leaf = node(key)
        if parent is not None and parent.get(leaf) == "auto":
            parent[leaf] = value
    leftover = [k for k, v in _walk(out) if v == "auto"]
    problems += [(k, "\"auto\" cannot be filled by the HF Trainer for this key — give a number") for k in leftover]
    # DeepSpeed's own parser runs as a single process here (world size 1); the world-size part of
    # the batch identity was checked above, so give it the per-process batch.
    if isinstance(out.get("train_batch_size"), int):
        out["train_batch_size"] = micro * ga
    return out, problems


def _walk(d: dict, prefix: str = ""):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _walk(v, key + ".")
        else:
            yield key, v


def _problem(r: Rendered, key: str, message: str, lines: dict) -> Problem:
    """Point an Axolotl error at what the user wrote: the train: field, the override, or the template."""
    if not key:
        return Problem("axolotl", message, hint="adjust the train: section or train.overrides")
    top = key.split(".")[0].split("[")[0]
    origin = r.origin(top)
    if origin.startswith("train.overrides."):
        path = f"train.overrides.{key}"
    elif origin.startswith("train."):
        path = origin if origin.endswith("." + key) else f"{origin} (Axolotl key {key})"
    else:
        path = f"{key} (from {origin})"
    dotted = path.split(" ")[0].split(".")
    line = next((lines[tuple(dotted[:n])] for n in range(len(dotted), 0, -1) if tuple(dotted[:n]) in lines), None)
    return Problem(path, message, line=line if path.startswith("train.") else None)


def _run_elsewhere(python: str, cfg: dict, caps: dict, ds: dict | None) -> tuple[list, list]:
    """Run :mod:`.axolotl_check` with another environment's python (``train.python``)."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="distillflow-check-") as tmp:
        t = Path(tmp)
        (t / "axolotl.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
        (t / "caps.json").write_text(json.dumps(caps), encoding="utf-8")
        argv = [python, str(Path(__file__).with_name("axolotl_check.py")), str(t / "axolotl.yaml"), str(t / "caps.json")]
        if ds is not None:
            (t / "ds.json").write_text(json.dumps(ds), encoding="utf-8")
            argv.append(str(t / "ds.json"))
        env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ConfigurationError(f"train.python: could not run {python} ({e}) — check the path") from None
    for line in proc.stdout.splitlines():
        if line.startswith("DISTILLFLOW_CHECK "):
            data = json.loads(line.split(" ", 1)[1])
            return [tuple(p) for p in data["problems"]], data["warnings"]
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    raise ConfigurationError(
        f"train.python: {python} could not validate the config (exit {proc.returncode}): {' | '.join(tail)} — "
        "make sure that environment has axolotl[deepspeed] installed"
    )


def validate(r: Rendered, train, *, hidden_size: int = 4096, python: str | None = None,
             lines: dict | None = None) -> list[str]:
    """Validate the rendered Axolotl config and DeepSpeed JSON; return Axolotl's warnings.

    Runs in-process when axolotl is importable here, else with ``python`` (``train.python``).
    Raises SpecError with every problem at once.
    """
    lines = lines or {}
    caps = target_capabilities(train)
    ds_filled, ds_problems = (None, [])
    if r.deepspeed is not None:
        ds_filled, ds_problems = fill_deepspeed_auto(r.deepspeed, r.config, train.world_size(), hidden_size)
    here = python is None or Path(python).resolve() == Path(sys.executable).resolve()
    if here and not axolotl_importable():
        raise MissingDependencyError(
            "axolotl is not installed: pip install 'distillflow[train]' — or set train.python to the python "
            "of an environment that has axolotl[deepspeed]"
        )
    extra = []
    if r.config.get("deepspeed") and (r.config.get("fsdp_config") or r.config.get("fsdp")):
        # Axolotl 0.19 only refuses the legacy `fsdp:` list next to DeepSpeed; accelerate would pick one silently.
        key = "fsdp_config" if r.config.get("fsdp_config") else "fsdp"
        extra.append((key, "FSDP cannot be combined with DeepSpeed — keep train.deepspeed or the FSDP keys, not both"))
    if here:
        from distillflow.train.axolotl_check import check_axolotl, check_deepspeed

        problems, warnings = check_axolotl(r.config, caps)
        if ds_filled is not None:
            problems += [(f"deepspeed.{k}" if k else "deepspeed", m) for k, m in check_deepspeed(ds_filled)]
    else:
        problems, warnings = _run_elsewhere(python, r.config, caps, ds_filled)
    problems = extra + list(problems)
    out: list[Problem] = []
    ds_path = f"train.deepspeed ({r.deepspeed_source})" if r.deepspeed_source else "train.deepspeed"
    for key, message in ds_problems:
        out.append(Problem(f"{ds_path}: {key}", message))
    for key, message in problems:
        if key.startswith("deepspeed.") or key == "deepspeed":
            sub = key.removeprefix("deepspeed").lstrip(".")
            out.append(Problem(f"{ds_path}: {sub or '<root>'}", message,
                               hint="fix the DeepSpeed JSON, or pick another of zero1/zero2/zero3/zero3_offload"))
        else:
            out.append(_problem(r, key, message, lines))
    if out:
        raise SpecError(out, "train section (checked by Axolotl's and DeepSpeed's validators)")
    return warnings
