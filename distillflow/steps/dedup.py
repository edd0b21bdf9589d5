"""`dedup`: drop exact or near-duplicate answers; the first one seen wins, across the whole run.

    - {kind: dedup}                                   # exact on (prompt, response), normalized
    - {kind: dedup, method: near, threshold: 0.85}    # MinHash + LSH on response 3-grams

A global step: shards pass through it one after another, in order, sharing compact state
(8-byte hashes; MinHash signatures and band keys), never the rows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distillflow.steps.base import StepBase, StepKind
from distillflow.steps.curate import ExactDedup, NearDedup


class DedupStep(StepBase):
    """Drop duplicate answers (exact after normalisation, or near-duplicates by MinHash)."""

    kind: Literal["dedup"]
    method: Literal["exact", "near"] = "exact"
    columns: list[str] = Field(default_factory=lambda: ["prompt", "response"], description="Columns compared (exact).")
    column: str = Field("response", description="Column compared (near).")
    threshold: float = Field(0.85, gt=0, le=1, description="Jaccard threshold (near).")


def _prepare(ctx, step: DedupStep):
    if step.method == "exact":
        return ExactDedup(step.columns)
    return NearDedup(step.column, step.threshold, step_id=step.id)


def _restore(state, step, kept_rows) -> None:
    for row in kept_rows:
        state.add(row)


KIND = StepKind(
    "dedup", DedupStep, lambda ctx, step, rows, state: state.apply(rows, step.id),
    prepare=_prepare, restore=_restore, scope="global", builder="Dedup",
    columns=lambda step: ((set(step.columns) if step.method == "exact" else {step.column}), set()),
)
