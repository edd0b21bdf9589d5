"""Retention evaluation: how much of the teacher a distilled student kept, on held-out prompts.

    from distillflow.evaluate import evaluate_run
    results = evaluate_run("runs/quickstart")          # writes runs/quickstart/eval/results.json
    results["metrics"][0]["retention"]                 # trained student / teacher

The held-out prompts (``data/heldout.jsonl``, reserved before generation) are answered by the
student's base model, the trained student and the teacher; the pipeline's own verify and judge
steps score the answers. Heavy imports (torch, transformers, lm_eval) happen inside functions.
"""

from __future__ import annotations

__all__ = ["evaluate_run", "results_table"]


def evaluate_run(*args, **kwargs):
    """See :func:`distillflow.evaluate.retention.evaluate_run`."""
    from distillflow.evaluate.retention import evaluate_run as _run

    return _run(*args, **kwargs)


def results_table(*args, **kwargs):
    """See :func:`distillflow.evaluate.table.results_table`."""
    from distillflow.evaluate.table import results_table as _table

    return _table(*args, **kwargs)
