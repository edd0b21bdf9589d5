"""Provider batch APIs (about half price, up to 24 h) for ``mode: batch`` teachers.

    from distillflow.engine.batch import BatchStore, answer_batch
    outcome = await answer_batch(teacher, requests, store=BatchStore(path), on_result=keep, budget=ledger)

Backends: OpenAI files + batches (any OpenAI-compatible server with those endpoints via
``base_url``) and Anthropic Message Batches (the ``anthropic`` SDK). State lives in
``BatchStore`` (SQLite in the run's cache dir), so reruns collect instead of resubmitting.
"""

from distillflow.engine.batch.base import BatchStatus, LineResult
from distillflow.engine.batch.dispatch import BatchOutcome, answer_batch, backend_for, format_row, split_lines
from distillflow.engine.batch.store import BatchStore

__all__ = ["BatchOutcome", "BatchStatus", "BatchStore", "LineResult", "answer_batch", "backend_for",
           "format_row", "split_lines", "store_path"]


def store_path(run_dir):
    """Where a run keeps its batch state: ``RUN_DIR/cache/batches.sqlite`` (next to requests.sqlite)."""
    from pathlib import Path

    return Path(run_dir) / "cache" / "batches.sqlite"
