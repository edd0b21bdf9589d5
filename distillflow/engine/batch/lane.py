"""The lane of a ``mode: batch`` teacher, and the passes that drive a run through provider batches.

    lanes = BatchLanes(plan, run_dir)                 # one per run (all passes)
    lane = lanes.lane(teacher, ctx)                   # RunContext._lane for a batch teacher
    results, failures = await lane.ask(step_id, misses, label)

A provider batch takes minutes to 24 hours, so a batch teacher never makes a shard wait for one.
A run goes in *passes* over its shards (``run_passes`` in engine/runner.py drives them):

1. In a pass, ``ask`` answers what the batch store already holds (answers downloaded earlier go
   into the request cache, at batch prices), reports lines that failed for good, leaves lines in
   live batches waiting, and *pools* the rest — across every shard and step of the pass. Those
   requests are undispatched for the step, so the shard is not committed and its later steps
   see only the rows that have answers.
2. The pool is submitted when it reaches the provider's requests-per-batch limit and at the end of
   the pass: many shards' requests go out in few batches, split by the provider's limits, and only
   while ``spent + live batches' estimates + this batch`` fits ``budget.max_cost_usd``.
3. Between passes the run waits for the live batches (``collect_live``) and stores their lines;
   the next pass moves the answers on (generate's answers reach the judge, whose requests are
   pooled in turn). Committed shards are skipped, so a pass over finished shards costs nothing.

The batch store records each submission before the provider is asked, so a run killed at any
moment resumes by collecting: a line in a live batch is never submitted again. Errored and
expired lines are resubmitted, alone, up to ``batch.max_resubmits`` times; a line cancelled on
the provider's side or refused for good is the step's failure (quarantined), not retried.
"""

from __future__ import annotations

import asyncio
import time

from distillflow.engine.batch.dispatch import BatchOutcome, _submit, backend_for
from distillflow.engine.batch.store import BatchStore
from distillflow.engine.client import ChatResult

__all__ = ["BatchLane", "BatchLanes"]


class BatchLane:
    """Pools one batch teacher's cache misses from every shard of a pass; see the module docstring."""

    streams = True

    def __init__(self, teacher, store: BatchStore, *, retry_errors: bool = False, started: float | None = None):
        self.teacher = teacher
        self.store = store
        self.retry_errors = retry_errors
        self.started = time.time() if started is None else started
        self.run = None  # the pass's RunContext (cache, ledger, reporter, stop_event): bind()
        self.pool: dict = {}  # key -> ChatRequest, waiting for submission
        self.resubmit: set[str] = set()
        self.too_large: dict[str, str] = {}  # key -> error: lines no batch may hold
        self.stats = {"from_batches": 0, "submitted": 0, "resubmitted": 0, "waiting": 0}
        self.failed: set[str] = set()  # keys that failed for good (asked again in later passes: counted once)
        self.held_back: set[str] = set()  # keys held back at some submission by the budget
        self._flush_lock = asyncio.Lock()
        self.flush_at = 0

    def bind(self, run) -> BatchLane:
        """Serve the next pass (a fresh RunContext and event loop)."""
        self.run = run
        self._flush_lock = asyncio.Lock()
        self.stats["waiting"] = 0
        return self

    def _flush_at(self) -> int:
        """Pool size that triggers a submission: the provider's requests-per-batch limit."""
        if not self.flush_at:
            if self.teacher.provider == "anthropic":
                from distillflow.engine.batch.anthropic_batch import MAX_REQUESTS
            else:
                from distillflow.engine.batch.openai_batch import MAX_REQUESTS
            self.flush_at = min(self.teacher.batch.max_requests or MAX_REQUESTS, MAX_REQUESTS)
        return self.flush_at

    # -- asking -------------------------------------------------------------------------------
    async def ask(self, step_id: str, requests: list, label: str | None = None):
        """(results, failures) by key, like ``Lane.ask``; pooled and waiting keys are in neither."""
        run, label = self.run, label or self.teacher.name
        unique = {r.key: r for r in requests}
        keys = list(unique)
        got = await asyncio.to_thread(self.store.results, keys) if keys else {}
        results: dict = {}
        failures: dict = {}
        for key, (res, cost, _) in got.items():
            res.meta = unique[key].meta
            run.cache.put(res)
            run.ledger.add(label, res.input_tokens, res.output_tokens, cost, False)
            results[key] = res
        await run.charge(sum(cost for _, cost, _ in got.values()))
        self.stats["from_batches"] += len(got)
        rest = [k for k in keys if k not in got]
        history = await asyncio.to_thread(self.store.line_history, rest) if rest else {}
        max_resubmits = self.teacher.batch.max_resubmits
        for k in rest:
            h = history.get(k)
            if k in self.too_large:
                failures[k] = self._failure(unique[k], self.too_large[k])
            elif h is None:
                self.pool[k] = unique[k]
            elif h["outcome"] is None:  # in a batch the provider may still be answering
                self.stats["waiting"] += 1
            elif (h["retryable"] and h["attempts"] <= max_resubmits) or (
                    self.retry_errors and h["created_at"] < self.started):
                self.pool[k] = unique[k]
                self.resubmit.add(k)
            else:
                failures[k] = self._failure(unique[k], f"batch line {h['outcome']}: {h['error']}")
        for _ in failures:
            run.ledger.fail(label)
        self.failed.update(failures)
        if results or failures:
            run.reporter.advance(step_id, len(results) + len(failures), run.ledger.spent)
        if len(self.pool) >= self._flush_at():
            await self.flush()
        return results, failures

    @staticmethod
    def _failure(req, message: str) -> ChatResult:
        return ChatResult(req.key, None, 0, 0, None, None, message, 0.0, False, req.meta)

    async def flush(self) -> None:
        """Submit the pooled requests (split by the provider's limits, within the budget)."""
        async with self._flush_lock:
            if not self.pool or self.run.stop_event.is_set():
                return
            reqs, resub = list(self.pool.values()), self.resubmit
            self.pool, self.resubmit = {}, set()
            backend = backend_for(self.teacher)
            endpoint = f"{getattr(backend, 'model', self.teacher.model)}@{self.teacher.base_url or self.teacher.provider}"
            out = BatchOutcome()
            try:
                new = await _submit(self.teacher, backend, self.store, endpoint, reqs,
                                    _Budget(self.run.ledger, self.store), out)
            finally:
                await backend.aclose()
            for keys in new.values():
                n_re = sum(1 for k in keys if k in resub)
                self.stats["resubmitted"] += n_re
                self.stats["submitted"] += len(keys) - n_re
                self.stats["waiting"] += len(keys)
            self.held_back.update(out.budget_blocked)
            for k, fail in out.failures.items():  # too large for any batch of this provider
                self.too_large[k] = fail.error or "request larger than one batch may be"

    async def close(self) -> None:
        """End of a pass (also after an error): nothing is submitted here; see ``flush``."""


class _Budget:
    """The budget a submission is held against: what the run has spent so far is at least what the
    ledger counted in this pass and at least what the collected batches cost (a pass re-counts
    cached answers only as its shards ask again, so early in a pass the ledger alone is low)."""

    def __init__(self, ledger, store: BatchStore):
        self.ledger, self.store = ledger, store
        self.max_cost_usd = ledger.max_cost_usd

    @property
    def spent(self) -> float:
        if self.max_cost_usd is None:
            return self.ledger.spent
        return max(self.ledger.spent, sum(t["cost_usd"] for t in self.store.totals().values()))

    @property
    def budget_hit(self) -> bool:
        return self.ledger.budget_hit

    @budget_hit.setter
    def budget_hit(self, value: bool) -> None:
        self.ledger.budget_hit = value


class BatchLanes:
    """The batch lanes of one run, kept across its passes, and the run's batch store."""

    def __init__(self, teachers: list, run_dir, *, retry_errors: bool = False):
        from distillflow.engine.batch import store_path

        self.teachers = {t.name: t for t in teachers if getattr(t, "mode", "online") == "batch"}
        self.store = BatchStore(store_path(run_dir)) if self.teachers else None
        self.started = time.time()
        self.retry_errors = retry_errors
        self.lanes: dict[str, BatchLane] = {}
        self.notes: list[str] = []
        self.passes = 0

    def __bool__(self) -> bool:
        return bool(self.teachers)

    def lane(self, teacher, run) -> BatchLane:
        lane = self.lanes.get(teacher.name)
        if lane is None:
            lane = self.lanes[teacher.name] = BatchLane(teacher, self.store, retry_errors=self.retry_errors,
                                                        started=self.started)
        if lane.run is not run:
            lane.bind(run)
        return lane

    async def flush(self) -> None:
        """End of a pass that finished: submit every lane's pool."""
        for lane in self.lanes.values():
            await lane.flush()

    def live(self) -> list[str]:
        """Batch teachers of this run with batches the provider may still be answering."""
        return sorted(self.store.live_teachers() & self.teachers.keys()) if self.store else []

    async def collect(self, *, wait: bool, reporter=None, should_stop=None) -> None:
        """Collect every live batch of this run's batch teachers (all teachers at once)."""
        from distillflow.engine.batch.collect import collect_live

        names = self.live()
        got = await asyncio.gather(*(collect_live(self.teachers[n], self.store, wait=wait, reporter=reporter,
                                                  should_stop=should_stop) for n in names))
        for notes in got:
            self.notes += notes

    def manifest(self) -> dict:
        """The manifest's ``batches`` block: per teacher, answers that came through batches (all
        runs of this directory) and their cost, and what this invocation submitted."""
        rows = self.store.summary() if self.store else []
        totals = self.store.totals() if self.store else {}
        teachers = {}
        for name in sorted(self.teachers):
            mine = [r for r in rows if r["teacher"] == name]
            lane = self.lanes.get(name)
            s = lane.stats if lane else {}
            teachers[name] = {
                "answers": totals.get(name, {}).get("answers", 0),
                "cost_usd": totals.get(name, {}).get("cost_usd", 0.0),
                "batches": sum(1 for r in mine if r["batch_id"]),
                "live_batches": sum(1 for r in mine if r["state"] in ("pending", "submitted")),
                "lines_waiting": sum(r["n_requests"] for r in mine if r["state"] in ("pending", "submitted")),
                "submitted_this_run": s.get("submitted", 0),
                "resubmitted_this_run": s.get("resubmitted", 0),
                "failed": len(lane.failed) if lane else 0,
                "budget_blocked": len(lane.held_back) if lane else 0,
            }
        return {"teachers": teachers, "passes": self.passes, "notes": list(self.notes)}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


# -- the passes (called by engine/runner.py's _run_locked) -------------------------------------------
def run_pass(executor, batch: BatchLanes, wait: bool, reporter, stop_event) -> bool:
    """Run one pass of ``executor`` over the shards; True when another pass is needed (the batch
    teachers' live batches ended and their answers can move the run on)."""
    from distillflow.engine.client import run_coroutine_sync  # (a worker thread inside a notebook's loop)

    if not batch:
        run_coroutine_sync(executor.run)
        return False

    async def go() -> bool:
        if batch.passes == 0 and batch.live():  # batches that ended since the last invocation
            await batch.collect(wait=False, reporter=reporter)
        batch.passes += 1
        await executor.run()
        live = batch.live()
        if not live or not wait or stop_event.is_set():
            return False
        waiting = sum(lane.stats["waiting"] for lane in batch.lanes.values())
        reporter.message(f"pass {batch.passes}: waiting for the provider batches of {', '.join(live)} "
                         f"({waiting} requests); Ctrl-C leaves them running — run again to collect")
        await batch.collect(wait=True, reporter=reporter, should_stop=stop_event.is_set)
        return not stop_event.is_set()

    return run_coroutine_sync(go)


def new_since(ledger, earlier: list) -> None:
    """Answers received in earlier passes of this invocation are cached hits in the last pass:
    count them as new there (the ledger's ``new`` means 'received in this invocation')."""
    for old in earlier:
        for name, s in old.teachers.items():
            final = ledger.teachers.get(name)
            if final is None or not s.new:
                continue
            moved = min(s.new, final.cached)
            final.cached -= moved
            final.new += moved


def pending_result(out, manifest: dict):
    """``--no-wait`` with batches still at the provider: write only ``manifest.json`` (status
    ``batches_pending``, atomically); curated/rejected files stay as the last finished run left them."""
    import json
    import os
    from pathlib import Path

    from distillflow.engine.runner import RunResult

    out = Path(out)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out / "manifest.json")
    waiting = sum(t["lines_waiting"] for t in manifest["batches"]["teachers"].values())
    live = sum(t["live_batches"] for t in manifest["batches"]["teachers"].values())
    notes = list(manifest["batches"]["notes"]) + [
        f"{waiting} requests in {live} provider batch(es) are being answered; nothing final was written. "
        f"Collect them with the same `distillflow run` command (nothing is resubmitted), "
        f"or see their state with `distillflow status {out}`"]
    return RunResult(out, manifest, notes=notes)
