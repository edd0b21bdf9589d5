"""Per-GPU memory estimate for a training config, per the ZeRO paper (Rajbhandari et al., 2020).

    shape = model_shape("models/student")                     # params, hidden, layers, vocab
    est = estimate(shape, stage="zero2", world=8, adapter="full", micro=4, seq=2048)
    est.total_gib, est.rows()                                 # 31.2, [("parameters", ...), ...]

Mixed-precision Adam keeps, per trained parameter, 2 bytes of 16-bit weights, 2 of gradients and
12 of optimizer state (fp32 master copy, momentum, variance). ZeRO-1 shards the 12 across the N
data-parallel GPUs, ZeRO-2 also the gradients, ZeRO-3 (and FSDP full sharding) also the weights;
offload moves the optimizer state to CPU RAM. Activations are a rough Korthikanti et al. (2022)
estimate (34·s·b·h bytes per layer without recomputation, 2·s·b·h with it) plus the logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3
_OVERHEAD = 1.0 * GIB  # CUDA context, allocator fragmentation, communication buffers


@dataclass
class ModelShape:
    """What the estimate needs to know about the student."""

    params: int
    hidden: int
    layers: int
    vocab: int
    lora_params_per_rank: int = 0  # trainable LoRA parameters per unit of rank, over every linear layer


def _from_config(cfg) -> ModelShape:
    """Count parameters exactly on the meta device (no memory, no download)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    params = sum(p.numel() for p in model.parameters())
    per_rank = sum(m.in_features + m.out_features for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head"))
    text = getattr(cfg, "text_config", None) or cfg
    return ModelShape(params=params, hidden=int(getattr(text, "hidden_size", 0) or 0),
                      layers=int(getattr(text, "num_hidden_layers", 0) or 0),
                      vocab=int(getattr(text, "vocab_size", 0) or 0), lora_params_per_rank=per_rank)


def model_shape(base_model: str) -> ModelShape | None:
    """Shape of a local model directory, or of a Hub model already in the HF cache; None if unknown."""
    try:
        from transformers import AutoConfig

        local = Path(base_model)
        if local.is_dir() and not (local / "config.json").is_file():
            return None
        cfg = AutoConfig.from_pretrained(str(base_model), local_files_only=True)
        return _from_config(cfg)
    except Exception:  # unknown architecture, not cached, no network: the estimate is optional
        return None


def hidden_size_of(base_model: str) -> int | None:
    """``hidden_size`` from a local config.json without importing transformers (for DeepSpeed's buckets)."""
    p = Path(base_model) / "config.json"
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    data = data.get("text_config", data)
    return int(data["hidden_size"]) if "hidden_size" in data else None


@dataclass
class MemoryEstimate:
    """Bytes per GPU by component; ``cpu_per_node`` for offloaded optimizer state."""

    stage: str
    world: int
    params: int
    trainable: int
    weights: float
    grads: float
    optimizer: float
    activations: float
    overhead: float = _OVERHEAD
    cpu_per_node: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations + self.overhead

    @property
    def total_gib(self) -> float:
        return self.total / GIB

    def rows(self) -> list[tuple[str, float]]:
        """(component, GiB) for a preflight table."""
        return [("parameters", self.weights / GIB), ("gradients", self.grads / GIB),
                ("optimizer states", self.optimizer / GIB), ("activations (rough)", self.activations / GIB),
                ("CUDA context + buffers", self.overhead / GIB), ("total per GPU", self.total_gib)]


def sharding_stage(train, deepspeed: dict | None) -> str:
    """none | zero1 | zero2 | zero3 (+ ``_offload`` when the optimizer lives on CPU) | fsdp, from the rendered JSON."""
    if deepspeed is not None:
        z = deepspeed.get("zero_optimization") or {}
        n = int(z.get("stage") or 0)
        offload = str((z.get("offload_optimizer") or {}).get("device") or "none") != "none"
        return "none" if n == 0 else f"zero{n}" + ("_offload" if offload else "")
    return "fsdp" if train.fsdp else "none"


def estimate(shape: ModelShape, *, stage: str, world: int, adapter: str = "full", micro: int = 1, seq: int = 2048,
             precision: str = "bf16", gradient_checkpointing: bool = False, lora_r: int = 16,
             gpus_per_node: int = 1) -> MemoryEstimate:
    """Per-GPU bytes for ``stage`` (see :func:`sharding_stage`) over ``world`` data-parallel GPUs.

    >>> e = estimate(ModelShape(params=7_000_000_000, hidden=4096, layers=32, vocab=32000), stage="zero3", world=8)
    >>> round((e.weights + e.grads + e.optimizer) / 2**30, 1)      # 16 bytes x 7B / 8 GPUs
    13.0
    """
    n = max(1, world)
    psi = shape.params
    trainable = psi if adapter == "full" else lora_r * shape.lora_params_per_rank
    if precision == "fp32":
        w_bytes, g_bytes, o_bytes = 4, 4, 8  # no separate master copy: Adam's momentum + variance
    else:
        w_bytes, g_bytes, o_bytes = 2, 2, 12
    if adapter == "full":
        weights = w_bytes * psi
    else:
        base = 0.5 * psi if adapter == "qlora" else w_bytes * psi  # NF4: 4 bits per frozen weight
        weights = base + w_bytes * trainable
    grads, optim = g_bytes * trainable, o_bytes * trainable
    cpu = 0.0
    base_stage, offload = stage.removesuffix("_offload"), stage.endswith("_offload")
    sharded = base_stage in ("zero3", "fsdp")
    if base_stage in ("zero1", "zero2") or sharded:
        optim /= n
    if base_stage == "zero2" or sharded:
        grads /= n
    if sharded:
        weights /= n
    if offload:
        cpu, optim = optim * max(1, gpus_per_node), 0.0  # each node hosts the shards of its own GPUs
    s, b, h, L, v = seq, micro, max(1, shape.hidden), max(1, shape.layers), max(1, shape.vocab)
    act_scale = 2 if precision == "fp32" else 1
    per_layer = 34 * s * b * h
    acts = (2 * s * b * h * L + per_layer) if gradient_checkpointing else per_layer * L
    logits = s * b * v * (2 + 4 + 4)  # 16-bit logits, their fp32 upcast for the loss, its gradient
    est = MemoryEstimate(stage=stage, world=n, params=psi, trainable=trainable, weights=weights, grads=grads,
                         optimizer=optim, activations=act_scale * acts + logits, cpu_per_node=cpu)
    if base_stage in ("zero1", "zero2", "zero3") and n == 1 and not offload:
        est.notes.append("ZeRO shards across GPUs: with one GPU it saves nothing")
    return est


def gpu_memory_bytes(explicit_gb: float | None = None) -> tuple[float | None, str]:
    """Memory of one visible GPU (torch, else nvidia-smi), else ``train.gpu_memory_gb``; with its source."""
    try:
        import torch

        if torch.cuda.is_available():
            return float(torch.cuda.get_device_properties(0).total_memory), torch.cuda.get_device_name(0)
    except Exception:
        pass
    smi = nvidia_smi()
    if smi:
        name, mib = smi[0]
        return mib * 1024**2, name
    if explicit_gb:
        return explicit_gb * GIB, "train.gpu_memory_gb"
    return None, "unknown"


def nvidia_smi() -> list[tuple[str, float]]:
    """(name, MiB) per GPU from nvidia-smi, for when this python's torch has no CUDA (train.python elsewhere)."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    rows = []
    for line in out.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            rows.append((name.strip(), float(mib)))
        except ValueError:
            continue
    return rows


def gpus_found() -> int:
    """GPUs visible here: ``torch.cuda.device_count()``, else nvidia-smi's count."""
    try:
        import torch

        n = torch.cuda.device_count()
        if n:
            return n
    except Exception:
        pass
    return len(nvidia_smi())
