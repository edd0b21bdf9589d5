"""`best_of`: keep the best answer per prompt by a score or verifier column.

    - {kind: best_of, by: judge_score}

Grouped by prompt: a shard holds every answer of its prompts, so groups are complete per shard.
A `group_by` other than `prompt_id` groups within a shard (prompts are never split across shards;
raise `execution.shard_size` if your groups span more prompts than a shard holds).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distillflow.steps import curate
from distillflow.steps.base import StepBase, StepKind


class BestOfStep(StepBase):
    """Keep the best answer per prompt by a score or verifier column."""

    kind: Literal["best_of"]
    by: str = Field(description="Column to rank by, e.g. judge_score or verify_pass.")
    group_by: str = "prompt_id"
    higher_is_better: bool = True


KIND = StepKind(
    "best_of", BestOfStep,
    lambda ctx, step, rows, state: curate.best_of(rows, step.id, by=step.by, group_by=step.group_by,
                                                  higher_is_better=step.higher_is_better),
    columns=lambda step: ({step.by, step.group_by}, set()), scope="prompt", builder="BestOf", field="by",
)
