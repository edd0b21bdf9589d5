"""The `train:` and `eval:` sections: student fine-tuning with Axolotl and retention evaluation.

    train:
      base_model: models/student
      adapter: lora
      deepspeed: zero2
      gpus_per_node: 8
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: DeepSpeed templates shipped in axolotl_configs/ (``train.deepspeed`` may also be a .json path).
DEEPSPEED_STAGES = ("zero1", "zero2", "zero3", "zero3_offload")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KDSpec(_Spec):
    """Logprob distillation (``train.mode: kd``) with Axolotl's KD plugin: the student matches the teacher's
    top-K token distribution (forward KL, weight ``alpha``) besides the answer text (cross-entropy, ``ce_alpha``).

        train: {mode: kd, kd: {alpha: 0.9, ce_alpha: 0.1, temperature: 1.0}}
    """

    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the KD loss (Axolotl kd_alpha).")
    ce_alpha: float = Field(0.1, ge=0, le=1, description="Weight of the cross-entropy on the answer (kd_ce_alpha).")
    temperature: float = Field(1.0, gt=0, description="Distillation temperature (kd_temperature).")
    top_k: int | None = Field(
        None, ge=1, le=20, description="Teacher alternatives kept per token (default: the teacher's top_logprobs)."
    )
    teacher: str | None = Field(
        None, description="Teacher whose log-probabilities train the student (default: the first teacher asked "
        "for top_logprobs). Only its answers are exported."
    )
    teacher_tokenizer: str | None = Field(
        None, description="Directory or Hub id of the teacher's tokenizer, compared with the student's before "
        "anything runs (default: the teacher's model when it is a local directory)."
    )


class TrainSpec(_Spec):
    """Fine-tune a student on the curated dataset with Axolotl (optionally DeepSpeed ZeRO or FSDP)."""

    mode: Literal["sft", "kd"] = Field(
        "sft", description="sft: train on the teacher's answer text; kd: also on its top-K log-probabilities "
        "per answer token (needs a teacher with params.top_logprobs and the same tokenizer as the student)."
    )
    kd: KDSpec = Field(default_factory=KDSpec, description="Logprob distillation settings (train.mode: kd).")
    base_model: str = Field(description="Student base model: a local directory (relative to the pipeline YAML) or a Hub id.")
    adapter: Literal["full", "lora", "qlora"] = Field("full", description="full fine-tune, LoRA or QLoRA (4-bit base).")
    template: str | None = Field(
        None, description="Your own Axolotl YAML template (path); default: axolotl_configs/<adapter>.yaml."
    )
    chat_template: str = Field(
        "tokenizer_default_fallback_chatml",
        description="Axolotl chat_template: the tokenizer's own, falling back to ChatML when it has none.",
    )
    sequence_len: int = Field(2048, ge=16, description="Maximum tokens per example (longer ones are dropped).")
    sample_packing: bool = Field(False, description="Pack several short examples into one sequence.")
    num_epochs: float = Field(3, gt=0, description="Passes over the curated dataset.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps, whatever num_epochs says (the schedule spans "
        "them): compares datasets of different sizes at equal compute."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate (cosine schedule); default: the template's (2e-5 full, 2e-4 LoRA/QLoRA)."
    )
    micro_batch_size: int = Field(1, ge=1, description="Examples per GPU per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool | None = Field(
        None, description="Recompute activations: less memory, ~30% slower; default: the template's (on for QLoRA)."
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank (adapter: lora/qlora).")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (adapter: lora/qlora).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (adapter: lora/qlora).")
    gpus_per_node: int = Field(1, ge=0, description="GPUs per node; 0 = one CPU process (no DeepSpeed/FSDP).")
    nodes: int = Field(1, ge=1, description="Number of machines.")
    deepspeed: str | None = Field(
        None, description="DeepSpeed ZeRO: zero1 | zero2 | zero3 | zero3_offload, or the path of your own JSON."
    )
    fsdp: bool = Field(False, description="Shard with PyTorch FSDP2 instead of DeepSpeed (axolotl_configs/fsdp.yaml).")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Training precision; auto = bf16 on GPUs, fp32 on CPU."
    )
    val_set_size: float = Field(0.0, ge=0, lt=1, description="Fraction of the curated data used for eval loss.")
    seed: int = Field(42, description="Seed for data shuffling and initialisation of new weights.")
    output_dir: str | None = Field(
        None, description="Where the student is saved; relative paths are inside RUN_DIR. Default: RUN_DIR/train/output."
    )
    push_to_hub: str | None = Field(None, description="Hub repo id for the trained student (token from HF_TOKEN).")
    launcher: Literal["accelerate", "torchrun", "python"] = Field(
        "accelerate", description="accelerate launch | torchrun | python (one process)."
    )
    python: str | None = Field(
        None, description="Python of an environment with axolotl (default: this one)."
    )
    cpu_threads: int | None = Field(
        None, ge=1, description="Threads per training process (OMP_NUM_THREADS, MKL_NUM_THREADS); default: the "
        "launcher's. Tiny models on CPU train fastest with 1."
    )
    preprocess: bool = Field(True, description="Run `axolotl preprocess` (tokenise once) before training.")
    main_process_ip: str | None = Field(
        None, description="Address of node 0 (multi-node); `distillflow train --main-process-ip` gives or overrides it."
    )
    main_process_port: int = Field(29500, ge=1, le=65535, description="Rendezvous port on node 0 (multi-node).")
    machine_rank: int = Field(0, ge=0, description="This node's rank; `distillflow train --machine-rank` overrides it.")
    gpu_memory_gb: float | None = Field(
        None, gt=0, description="Per-GPU memory for the preflight fit check when planning on a machine without the GPUs."
    )
    overrides: dict[str, Any] = Field(default_factory=dict, description="Free-form Axolotl keys, applied last.")

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed_name(cls, v):
        if v is not None and v not in DEEPSPEED_STAGES and not v.endswith(".json"):
            from distillflow.errors import did_you_mean

            hint = did_you_mean(v, DEEPSPEED_STAGES)
            raise ValueError(
                f"unknown DeepSpeed config '{v}': use one of {', '.join(DEEPSPEED_STAGES)} or a path to a .json file"
                + (f" — {hint}" if hint else "")
            )
        return v

    @model_validator(mode="after")
    def _coherent(self):
        problems = []
        if self.deepspeed and self.fsdp:
            problems.append("deepspeed and fsdp cannot be used together — keep one")
        if self.gpus_per_node == 0 and (self.deepspeed or self.fsdp):
            problems.append("DeepSpeed and FSDP need GPUs — set gpus_per_node >= 1, or remove deepspeed/fsdp for CPU training")
        if self.gpus_per_node == 0 and self.adapter == "qlora":
            problems.append("QLoRA needs a CUDA GPU (bitsandbytes 4-bit) — set gpus_per_node >= 1, or use adapter: lora on CPU")
        if self.gpus_per_node == 0 and self.nodes > 1:
            problems.append("CPU training (gpus_per_node: 0) runs on one node — set nodes: 1")
        if self.machine_rank >= self.nodes:
            problems.append(f"machine_rank {self.machine_rank} must be below nodes ({self.nodes})")
        if self.launcher == "python" and self.gpus_per_node * self.nodes > 1:
            problems.append("launcher: python runs one process — use accelerate or torchrun for several GPUs")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def rendezvous_problem(self) -> str | None:
        """Why a multi-node run cannot start yet (no address for node 0), or None.

        Checked when training is prepared, not when the YAML is loaded: the address may come from
        ``distillflow train --main-process-ip`` (``main_process_ip=`` in Python) instead of the YAML.
        """
        if self.nodes > 1 and not self.main_process_ip:
            return (f"multi-node training ({self.nodes} nodes) needs the address of node 0 — set main_process_ip "
                    "in the train: section, or pass --main-process-ip (main_process_ip= from Python)")
        return None

    def world_size(self) -> int:
        """Training processes in total (1 on CPU)."""
        return max(1, self.gpus_per_node) * self.nodes

    def global_batch(self) -> int:
        """Examples per optimizer step: micro batch x accumulation x GPUs x nodes."""
        return self.micro_batch_size * self.gradient_accumulation_steps * self.world_size()


class EvalSpec(_Spec):
    """Retention evaluation on the held-out prompts (`distillflow eval RUN_DIR`).

        eval:
          metrics: [verifier, judge, winrate]
          max_prompts: 200
    """

    metrics: list[Literal["verifier", "exact_match", "judge", "winrate"]] | None = Field(
        None,
        description="verifier | exact_match | judge | winrate (default: verifier when the pipeline has a verify "
        "step, else exact_match when held-out rows have the reference column; judge and winrate when it has a judge step).",
    )
    verifier: str | None = Field(None, description="Verify step id whose check is reused (default: the first verify step).")
    judge: str | None = Field(None, description="Judge step id whose teacher and rubric are reused (default: the first judge step).")
    teacher: str | None = Field(None, description="Teacher to compare against (default: the pipeline's first teacher).")
    reference: str = Field("reference", description="Column with the expected answer, for exact_match.")
    max_prompts: int | None = Field(None, ge=1, description="Evaluate on at most this many held-out prompts.")
    max_tokens: int | None = Field(None, ge=1, description="Answer length cap for every model (default: the teacher's max_tokens).")
    backend: Literal["local", "serve"] = Field(
        "local", description="How students answer: local transformers (batched, greedy) or `transformers serve`."
    )
    batch_size: int = Field(16, ge=1, description="Prompts per generate() call (backend local).")
    sample_temperature: float | None = Field(
        None, gt=0, le=2, description="Also score answers sampled at this temperature (seeded by eval.seed), beside "
        "the greedy ones, for verifier/exact_match: a student can be right greedily and still sample the teacher's "
        "mistakes it was trained on."
    )
    seed: int = Field(0, description="Seed of the answer order shown to the pairwise judge and of sampled answers.")
    lm_eval_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks, if installed.")
    lm_eval_limit: int | None = Field(None, ge=1, description="Examples per lm-evaluation-harness task.")
    lm_eval_include: str | None = Field(None, description="Directory of custom lm-evaluation-harness task YAMLs.")


#: Providers whose answers can carry top-K log-probabilities (OpenAI-compatible ``top_logprobs``;
#: local transformers computes them). Anthropic, HF endpoints and local vLLM through distilabel do not.
TOP_LOGPROB_PROVIDERS = ("openai", "vllm_server", "tgi", "ollama", "transformers_serve", "transformers")


def kd_teacher_k(spec) -> dict[str, int | None]:
    """Per generating teacher, the top_logprobs its answers will carry (None: no log-probabilities)."""
    out: dict[str, int | None] = {}
    for step in spec.steps:
        if getattr(step, "kind", None) != "generate":
            continue
        override = step.params.top_logprobs if step.params is not None else None
        for name in step.teachers or [t.name for t in spec.teachers]:
            teacher = next((t for t in spec.teachers if t.name == name), None)
            if teacher is None:
                continue
            k = override or teacher.params.top_logprobs
            out[name] = k if teacher.provider in TOP_LOGPROB_PROVIDERS else None
    return out


def kd_problems(spec) -> list[str]:
    """Why ``train.mode: kd`` cannot work with this pipeline's teachers (empty when it can)."""
    train = spec.train
    if train is None or train.mode != "kd":
        return []
    ks = kd_teacher_k(spec)
    if train.kd.teacher is not None:
        if train.kd.teacher not in ks:
            return [f"train.kd.teacher: '{train.kd.teacher}' is not a teacher of any generate step "
                    f"(generating: {', '.join(ks) or 'none'})"]
        names = [train.kd.teacher]
    else:
        names = [n for n, k in ks.items() if k] or list(ks)[:1]
    problems = []
    for name in names:
        teacher = next(t for t in spec.teachers if t.name == name)
        if teacher.provider not in TOP_LOGPROB_PROVIDERS:
            problems.append(f"train.mode: kd needs token log-probabilities, and teacher '{name}' (provider "
                            f"{teacher.provider}) returns none — use train.mode: sft, or a teacher served by an "
                            "OpenAI-compatible endpoint or local transformers")
        elif not ks.get(name):
            problems.append(f"train.mode: kd needs token log-probabilities, and teacher '{name}' is not asked for "
                            "any — add `top_logprobs: 5` to its params (or the generate step's params)")
        elif train.kd.top_k and train.kd.top_k > ks[name]:
            problems.append(f"train.kd.top_k: {train.kd.top_k} exceeds the {ks[name]} log-probabilities teacher "
                            f"'{name}' is asked for — lower it or raise the teacher's top_logprobs")
    return problems


def sampling_seeds(spec) -> str:
    """``teacher: 0 (+ sample index)`` per generating teacher, for cards and reports (``unseeded`` when none)."""
    parts = []
    for step in spec.steps:
        if getattr(step, "kind", None) != "generate":
            continue
        override = step.params.seed if step.params is not None else None
        for name in step.teachers or [t.name for t in spec.teachers]:
            teacher = next((t for t in spec.teachers if t.name == name), None)
            seed = override if override is not None else (teacher.params.seed if teacher else None)
            parts.append(f"{name}: {seed} (+ sample index)" if seed is not None else f"{name}: unseeded")
    return ", ".join(dict.fromkeys(parts)) or "no generate step"


def mode_text(spec) -> str:
    """``sft`` or ``kd (Axolotl KD plugin: kd_alpha 0.9, ...)`` for cards and reports."""
    train = spec.train
    if train is None or train.mode == "sft":
        return "sft (the teacher's answer text)"
    k = train.kd.top_k or kd_teacher_k(spec).get(train.kd.teacher or "", None) or next(
        (v for v in kd_teacher_k(spec).values() if v), None)
    return (f"kd (Axolotl KD plugin: kd_alpha {train.kd.alpha:g}, kd_ce_alpha {train.kd.ce_alpha:g}, "
            f"kd_temperature {train.kd.temperature:g}, top-{k})")
