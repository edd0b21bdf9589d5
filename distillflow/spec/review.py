"""The `review:` section: human review of curated records in Argilla.

    review:
      dataset: qa-review
      workspace: distillflow
      mode: optional        # optional: unreviewed records train; required: only accepted ones
      sample: 200           # push a stratified sample (by teacher and score band), or all

Push with `distillflow review push RUN_DIR`, apply decisions with `distillflow review pull RUN_DIR`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ReviewSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, description="Argilla dataset name (default: the pipeline name).")
    workspace: str = Field("distillflow", description="Argilla workspace.")
    mode: Literal["optional", "required"] = Field(
        "optional", description="optional: unreviewed records train; required: only accepted ones."
    )
    sample: int | None = Field(None, ge=1, description="Push a stratified sample of this size (default: all).")
    score_column: str | None = Field(
        None, description="Judge score column used for suggestions and strata (default: the first judge's <id>_score)."
    )
    accept_threshold: float | None = Field(
        None,
        description="Judge score at or above which the judge 'accepts': pre-fills the decision and is compared "
        "with the humans (default: the top quarter of the judge's scale, 4 on 1-5).",
    )
    auto_push: bool = Field(True, description="Push automatically at the end of `distillflow run`.")
    vectors: bool = Field(
        False, description="Add a vector per record (hashed words of prompt + response, no model) for 'Find similar'."
    )
    seed: int = Field(0, description="Seed of the stratified sample.")
