"""Quarantine: a record whose teacher request failed for good is rejected, and the run goes on.

    row = quarantine_row(row, "generate", failure)   # failure: the failed ChatResult
    row["reason"], row["error"], row["attempts"]       # "teacher_error", "HTTP 503: ... ", 7

A quarantined record goes to ``rejected`` with ``rejected_by: <step id>``, ``reason:
"teacher_error"``, ``error`` (the last error), ``attempts`` (times its request was sent) and
``retryable`` (True when the error was transient: a later run may well get an answer).
Failures are never cached as answers, so a run that asks again (``distillflow run
--retry-errors``) pays only for these records. A run that completes with quarantined records
exits 0 and prints :func:`quarantine_note`; only a sustained outage (the teacher's circuit
breaker, :class:`~distillflow.engine.scheduler.CircuitBreaker`) stops a run with exit 1.
"""

from __future__ import annotations

__all__ = ["REASON", "count_quarantined", "has_quarantined", "quarantine_note", "quarantine_row"]

REASON = "teacher_error"


def quarantine_row(row: dict, step_id: str, failure, **extra) -> dict:
    """``row`` as a rejected record for the failed request ``failure`` (a ChatResult)."""
    return {
        **row,
        **extra,
        "rejected_by": step_id,
        "reason": REASON,
        "error": failure.error,
        "attempts": int(getattr(failure, "attempts", 1) or 1),
        "retryable": bool(getattr(failure, "transient", False)),
    }


def count_quarantined(rejected) -> int:
    """How many of ``rejected`` are quarantined teacher errors."""
    return sum(1 for r in rejected if r.get("reason") == REASON)


def has_quarantined(rejected, step_id: str | None = None, retryable: bool = False) -> bool:
    """Whether a step's rejected rows hold quarantined records (for ``--retry-errors``: such a
    step's cached output must be recomputed so that only its failed requests are asked again);
    with ``retryable``, records quarantined after a transient error only (what an outage leaves:
    the run after it asks them again)."""
    return any(r.get("reason") == REASON and (not retryable or r.get("retryable"))
               and (step_id is None or r.get("rejected_by") == step_id) for r in rejected)


def quarantine_note(n: int) -> str | None:
    """The warning line a completed run prints when it quarantined ``n`` records (None if 0)."""
    if not n:
        return None
    return (f"warning: {n} record(s) quarantined after teacher errors (rejected with reason "
            f"'{REASON}', see data/rejected.jsonl); run `distillflow run --retry-errors` to ask them again")
