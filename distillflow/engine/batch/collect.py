"""Collect a run's live provider batches into its batch store, without the requests in memory.

    notes = await collect_live(teacher, store, wait=True, reporter=reporter)

The engine's batch path runs the plan in passes (engine/batch/lane.py): a pass submits what its
shards asked for, then this waits for every live batch of the teacher to end and stores each
line's outcome and answer (``BatchStore.collect``). The next pass finds the answers in the store
and moves them into the request cache. Nothing is submitted here: resubmitting errored or expired
lines is the next pass's job, where the requests are rebuilt from the shards.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from distillflow.engine.batch.base import CANCELLED, EXPIRED, SUCCEEDED
from distillflow.engine.batch.dispatch import _adopt_pending, _report, backend_for
from distillflow.engine.batch.store import BatchStore
from distillflow.engine.ledger import cost_of

__all__ = ["collect_live"]


async def collect_live(teacher, store: BatchStore, *, wait: bool = True, reporter=None,
                       should_stop: Callable[[], bool] | None = None, backend=None) -> list[str]:
    """Poll ``teacher``'s live batches (backoff ``batch.poll_initial_s`` .. ``poll_max_s``) and
    collect each one that has ended. ``wait=False``: one round of polls. Returns notes on
    batches that expired, were cancelled or failed, with what was recovered."""
    own = backend is None
    backend = backend or backend_for(teacher)
    settings = teacher.batch
    notes: list[str] = []
    last: dict = {}
    t0 = time.monotonic()
    try:
        class _Out:  # _adopt_pending reports adoptions through .notes
            pass

        out = _Out()
        out.notes = notes
        await _adopt_pending(backend, store, teacher.name, out)
        delay = settings.poll_initial_s
        while True:
            live = [r for r in store.live(teacher.name) if r["state"] == "submitted"]
            if not live:
                break
            ended = 0
            for row in live:
                st = await backend.status(row["batch_id"])
                store.set_status(row["submission"], st.status, st.completed, st.failed)
                if st.terminal:
                    ended += 1
                    note = await _collect_row(teacher, backend, store, row, st.status)
                    if note:
                        notes.append(note)
            watched = {r["submission"] for r in live}
            _report(reporter, teacher.name, [r for r in store.summary() if r["submission"] in watched],
                    time.monotonic() - t0, last)
            if not wait or (should_stop is not None and should_stop()):
                break
            if not ended:
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.poll_max_s)
        return notes
    finally:
        if own:
            await backend.aclose()


async def _collect_row(teacher, backend, store: BatchStore, row: dict, status: str) -> str | None:
    lines = await backend.results(row["batch_id"], store.line_keys(row["submission"]))
    now = time.time()
    priced = []
    for ln in lines:
        if ln.outcome == SUCCEEDED and ln.result is not None:
            ln.result.latency_s = now - row["created_at"]
            priced.append((ln.result, cost_of(teacher, ln.result.input_tokens, ln.result.output_tokens, batch=True)))
    store.collect(row["submission"], status, [(ln.key, ln.outcome, ln.error, ln.retryable) for ln in lines], priced)
    lost = {EXPIRED: 0, CANCELLED: 0}
    for ln in lines:
        if ln.outcome in lost:
            lost[ln.outcome] += 1
    if status in ("expired", "cancelled", "canceled", "failed") or any(lost.values()):
        return (f"batch {row['batch_id']} ({status}): {len(priced)} of {len(lines)} answers recovered"
                + (f", {lost[EXPIRED]} expired" if lost[EXPIRED] else "")
                + (f", {lost[CANCELLED]} cancelled" if lost[CANCELLED] else ""))
    return None
