"""The `train:` and `eval:` sections: student fine-tuning with Axolotl and retention evaluation.

    train:
      base_model: models/student
      adapter: lora
      deepspeed: zero2
      gpus_per_node: 8
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainSpec(_Spec):
    base_model: str = Field(description="Student base model: a local directory or a Hub id.")
    adapter: Literal["full", "lora", "qlora"] = "full"
    sequence_len: int = Field(2048, ge=16)
    sample_packing: bool = False
    num_epochs: float = Field(3, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    micro_batch_size: int = Field(1, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    gpus_per_node: int = Field(1, ge=0, description="0 = CPU.")
    nodes: int = Field(1, ge=1)
    deepspeed: Literal["zero1", "zero2", "zero3", "zero3_offload"] | None = None
    fsdp: bool = False
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    val_set_size: float = Field(0.0, ge=0, lt=1, description="Fraction of the curated data used for eval loss.")
    output_dir: str | None = Field(None, description="Default: RUN_DIR/train/output.")
    push_to_hub: str | None = Field(None, description="Hub repo id for the trained student.")
    launcher: Literal["accelerate", "torchrun", "python"] = "accelerate"
    python: str | None = Field(None, description="Python of an environment with axolotl (default: this one).")
    main_process_ip: str | None = None
    main_process_port: int = 29500
    machine_rank: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict, description="Free-form Axolotl keys, applied last.")


class EvalSpec(_Spec):
    metrics: list[str] = Field(default_factory=lambda: ["verifier"], description="verifier | judge | winrate")
    verifier: str | None = Field(None, description="Verify step id whose check is reused for exact match.")
    judge: str | None = Field(None, description="Judge step id reused for judge score / win-rate.")
    max_prompts: int | None = Field(None, ge=1)
    lm_eval_tasks: list[str] = Field(default_factory=list, description="lm-evaluation-harness tasks, if installed.")
