"""Row filters: `filter` (an expression), `length_filter` and `refusal_filter`.

    - kind: filter
      where: "judge_score >= 4 and len(response) < 2000"
    - {kind: length_filter, min_words: 3}
    - {kind: refusal_filter, patterns: ["(?i)as a language model"]}

Rows that fail go to `rejected` with the step id and a reason; see `steps/curate.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from distillflow.expr import parse
from distillflow.steps import curate
from distillflow.steps.base import StepBase, StepKind


class FilterStep(StepBase):
    """Keep rows where the expression is true; the rest go to `rejected` with the reason."""

    kind: Literal["filter"]
    where: str = Field(description="Expression over columns, e.g. \"judge_score >= 4 and len(response) < 2000\".")


class LengthFilterStep(StepBase):
    """Keep answers within length bounds (characters and/or words)."""

    kind: Literal["length_filter"]
    column: str = "response"
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)
    min_words: int | None = Field(None, ge=0)
    max_words: int | None = Field(None, ge=1)


class RefusalFilterStep(StepBase):
    """Reject answers that refuse ("I can't help with that"); add your own patterns."""

    kind: Literal["refusal_filter"]
    column: str = "response"
    patterns: list[str] = Field(default_factory=list, description="Extra refusal regexes.")


def _filter_columns(step):
    try:
        return set(parse(step.where).columns()), set()
    except ValueError as e:  # expression syntax: reported at the `where` field
        raise ValueError(f"invalid expression: {e}") from None


KINDS = (
    StepKind("filter", FilterStep, lambda ctx, step, rows, expr: curate.filter_rows(rows, expr, step.id),
             prepare=lambda ctx, step: parse(step.where), columns=_filter_columns, builder="Filter", field="where"),
    StepKind("length_filter", LengthFilterStep,
             lambda ctx, step, rows, state: curate.length_filter(
                 rows, step.id, column=step.column, min_chars=step.min_chars, max_chars=step.max_chars,
                 min_words=step.min_words, max_words=step.max_words),
             columns=lambda step: ({step.column}, set()), builder="LengthFilter", field="column"),
    StepKind("refusal_filter", RefusalFilterStep,
             lambda ctx, step, rows, state: curate.refusal_filter(rows, step.id, column=step.column,
                                                                  extra_patterns=tuple(step.patterns)),
             columns=lambda step: ({step.column}, set()), builder="RefusalFilter", field="column"),
)
