"""The one entry point for ``mode: batch`` teachers: answer requests through provider batch APIs
under the budget, without ever paying twice.

    store = BatchStore(run_dir / "cache" / "batches.sqlite")
    outcome = await answer_batch(teacher, requests, store=store, budget=ledger,
                                 on_result=cache_and_count, have=lambda keys: cache.get_many(keys).keys())
    outcome.delivered, outcome.failures, outcome.pending     # what came back, what failed, what waits

For each request, in this order: the caller already has it (``have``) -> skipped; its answer
was already downloaded from a batch -> delivered from the store; it is in a batch the provider
may still be answering (submitted by this or an earlier, interrupted run) -> that batch is
collected, never resubmitted; otherwise it is submitted, in batches split by the provider's
documented limits, only while the estimated cost at batch prices fits ``budget.max_cost_usd``.
Errored and expired lines are resubmitted alone (up to ``teacher.batch.max_resubmits`` times);
lines cancelled on the provider's side are reported, not resubmitted in this call.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from distillflow.engine.batch.base import CANCELLED, EXPIRED, SUCCEEDED, BatchBackend
from distillflow.engine.batch.store import BatchStore
from distillflow.engine.client import ChatRequest, ChatResult
from distillflow.engine.ledger import cost_of, estimate_cost
from distillflow.errors import ConfigurationError, TeacherError

__all__ = ["BatchOutcome", "answer_batch", "backend_for", "split_lines"]

_SIZE_MARGIN = 1024  # bytes kept free under a provider's size limit for the envelope around the lines


@dataclass
class BatchOutcome:
    """What one :func:`answer_batch` call did. ``done`` when nothing is left waiting or blocked."""

    requested: int = 0
    skipped: int = 0  # the caller already had the answer
    recovered: int = 0  # answers from batches submitted earlier (an interrupted run) or downloaded before
    submitted: int = 0  # lines submitted for the first time in this call
    resubmitted: int = 0  # errored/expired lines submitted again
    delivered: int = 0  # answers passed to on_result
    cost_usd: float = 0.0  # of the delivered answers, at batch prices
    failures: dict[str, ChatResult] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # keys in batches still running (wait=False)
    budget_blocked: list[str] = field(default_factory=list)  # keys not submitted: over max_cost_usd
    batch_ids: list[str] = field(default_factory=list)  # provider batches this call submitted or collected
    notes: list[str] = field(default_factory=list)  # cancelled / expired / failed batches and what was recovered
    waited_s: float = 0.0

    @property
    def done(self) -> bool:
        return not self.pending and not self.budget_blocked


def backend_for(teacher) -> BatchBackend:
    """The batch backend of a ``mode: batch`` teacher (keys from its ``api_key_env`` only)."""
    from distillflow.engine.providers import api_key, base_url

    b = teacher.batch
    common = dict(max_requests=b.max_requests, max_bytes=b.max_bytes, timeout_s=teacher.timeout_s,
                  max_retries=teacher.max_retries)
    if teacher.provider == "anthropic":
        from distillflow.engine.batch.anthropic_batch import AnthropicBatchBackend

        return AnthropicBatchBackend(teacher.model, api_key(teacher), teacher.base_url, **common)
    if teacher.provider == "openai":
        from distillflow.engine.batch.openai_batch import OpenAIBatchBackend

        return OpenAIBatchBackend(base_url(teacher), teacher.model, api_key(teacher), **common)
    raise ConfigurationError(
        f"teacher '{teacher.name}': provider '{teacher.provider}' has no batch API — use mode: online, "
        "or provider: openai with the base_url of a server that implements /v1/files and /v1/batches"
    )


def split_lines(lines: list[tuple[str, bytes]], max_requests: int, max_bytes: int
                ) -> tuple[list[list[tuple[str, bytes]]], list[str]]:
    """Group (key, line) pairs into batches of at most ``max_requests`` lines and ``max_bytes``
    bytes (newlines counted). Returns (batches, keys of lines too large for any batch)."""
    limit = max_bytes - _SIZE_MARGIN if max_bytes > 2 * _SIZE_MARGIN else max_bytes
    batches: list[list[tuple[str, bytes]]] = []
    too_large: list[str] = []
    cur: list[tuple[str, bytes]] = []
    size = 0
    for key, line in lines:
        n = len(line) + 1
        if n > limit:
            too_large.append(key)
            continue
        if cur and (len(cur) >= max_requests or size + n > limit):
            batches.append(cur)
            cur, size = [], 0
        cur.append((key, line))
        size += n
    if cur:
        batches.append(cur)
    return batches, too_large


def _fail(req: ChatRequest, message: str, transient: bool = False) -> ChatResult:
    return ChatResult(req.key, None, 0, 0, None, None, message, 0.0, False, req.meta, transient)


def _report(reporter, teacher_name: str, rows: list[dict], waited_s: float, last: dict) -> None:
    if reporter is None or not rows:
        return
    if hasattr(reporter, "batches"):
        reporter.batches(teacher_name, rows, waited_s)
        return
    if hasattr(reporter, "message"):  # a plain reporter: one line per batch whose state moved
        for r in rows:
            sig = (r["state"], r["provider_status"], r["completed"], r["failed"])
            if last.get(r["submission"]) != sig:
                last[r["submission"]] = sig
                reporter.message(format_row(r, waited_s))


def format_row(r: dict, waited_s: float | None = None) -> str:
    """One line per batch: id, state, completed/failed of total (and time waiting)."""
    status = r["provider_status"] or r["state"]
    text = (f"{r['teacher']}: batch {r['batch_id'] or '(creating)'} {status} — "
            f"{r['completed']}/{r['n_requests']} completed, {r['failed']} failed")
    if waited_s is not None:
        text += f", waiting {waited_s:.0f}s"
    return text


async def answer_batch(
    teacher,
    requests: Iterable[ChatRequest],
    *,
    store: BatchStore,
    on_result: Callable[[ChatResult], None],
    budget=None,
    reporter=None,
    wait: bool = True,
    have: Callable[[list[str]], Iterable[str]] | None = None,
    backend: BatchBackend | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> BatchOutcome:
    """Answer ``requests`` for a ``mode: batch`` teacher through its provider's batch API.

    ``on_result(result)`` gets each answer once (``result.meta`` is the request's meta; cache it
    and count its cost with ``cost_of(teacher, ..., batch=True)``). ``budget`` is any object with
    ``max_cost_usd`` and ``spent`` (the run's :class:`~distillflow.engine.ledger.Ledger`); its
    ``budget_hit`` is set when requests are held back. ``have(keys)`` returns the keys whose
    answers the caller already holds. With ``wait=False`` it returns once everything is
    submitted (``outcome.pending`` lists what the provider still works on). ``should_stop()``
    true ends the wait early, leaving batches to be collected by the next call.
    """
    own = backend is None
    backend = backend or backend_for(teacher)
    settings = teacher.batch
    out = BatchOutcome()
    reqs: dict[str, ChatRequest] = {}
    for r in requests:
        reqs.setdefault(r.key, r)
    out.requested = len(reqs)
    if have is not None and reqs:
        for k in set(have(list(reqs))) & reqs.keys():
            del reqs[k]
            out.skipped += 1
    endpoint = f"{getattr(backend, 'model', teacher.model)}@{teacher.base_url or teacher.provider}"
    attempts: dict[str, int] = {}
    last_report: dict = {}
    t_start = time.monotonic()

    def deliver(key: str, result: ChatResult, cost: float, recovered: bool) -> None:
        req = reqs.pop(key)
        result.meta = req.meta
        result.cached = False  # new to the caller: it must cache and count it
        on_result(result)
        out.delivered += 1
        out.recovered += int(recovered)
        out.cost_usd += cost

    try:
        await _adopt_pending(backend, store, teacher.name, out)
        for key, (result, cost, _) in store.results(list(reqs)).items():
            deliver(key, result, cost, True)
        live = store.live_keys(teacher.name)
        watched = {live[k] for k in reqs if k in live}
        inherited = {k for k in reqs if k in live}
        attempts.update({k: 1 for k in inherited})  # submitted once already, by an earlier run

        async def submit(keys: list[str], resubmission: bool) -> None:
            new = await _submit(teacher, backend, store, endpoint, [reqs[k] for k in keys], budget, out)
            for sub, sub_keys in new.items():
                watched.add(sub)
                for k in sub_keys:
                    attempts[k] = attempts.get(k, 0) + 1
                if resubmission:
                    out.resubmitted += len(sub_keys)
                else:
                    out.submitted += len(sub_keys)

        await submit([k for k in reqs if k not in live], False)
        for k in out.failures:
            reqs.pop(k, None)
        delay = settings.poll_initial_s
        while watched:
            if not wait or (should_stop is not None and should_stop()):
                break
            ended = 0
            retry: list[str] = []
            for sub in sorted(watched):
                row = next((r for r in store.live() if r["submission"] == sub), None)
                if row is None:  # collected meanwhile by another caller: take ours from the store
                    watched.discard(sub)
                    ended += 1
                    mine = [k for k, s in store.line_submissions(sub).items() if k in reqs]
                    got = store.results(mine)
                    for key, (result, cost, _) in got.items():
                        deliver(key, result, cost, key in inherited)
                    retry += [k for k in mine if k not in got]
                    continue
                st = await backend.status(row["batch_id"])
                store.set_status(sub, st.status, st.completed, st.failed)
                if not st.terminal:
                    continue
                ended += 1
                watched.discard(sub)
                retry += await _collect(teacher, backend, store, row, st.status, reqs, deliver, out, attempts,
                                        settings.max_resubmits, inherited)
            _report(reporter, teacher.name, _rows(store, watched, out), time.monotonic() - t_start, last_report)
            if retry:
                await submit(retry, True)
                for k in retry:
                    if k in out.failures:
                        reqs.pop(k, None)
                delay = settings.poll_initial_s
                continue
            if watched and not ended:
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.poll_max_s)
        live = store.live_keys(teacher.name)
        out.pending = [k for k in reqs if k in live]
        out.waited_s = time.monotonic() - t_start
        _report(reporter, teacher.name, _rows(store, set(), out), out.waited_s, last_report)
        return out
    finally:
        if own:
            await backend.aclose()


def _rows(store: BatchStore, watched: set[str], out: BatchOutcome) -> list[dict]:
    ids = set(out.batch_ids)
    return [r for r in store.summary() if r["submission"] in watched or r["batch_id"] in ids]


async def _adopt_pending(backend, store: BatchStore, teacher_name: str, out: BatchOutcome) -> None:
    """A submission interrupted between our record and the provider's answer: adopt the batch if
    the provider created it, else free its lines."""
    known = frozenset(r["batch_id"] for r in store.summary() if r["batch_id"])
    for row in store.live(teacher_name):
        if row["state"] != "pending":
            continue
        found = await backend.find(row["submission"], row["n_requests"], row["created_at"], exclude=known)
        if found:
            store.set_submitted(row["submission"], found)
            out.notes.append(f"adopted batch {found}, created by an interrupted run")
        else:
            store.set_abandoned(row["submission"])


async def _submit(teacher, backend, store: BatchStore, endpoint: str, requests: list[ChatRequest], budget,
                  out: BatchOutcome) -> dict[str, list[str]]:
    """Submit requests in batches within the provider's limits and the budget; returns
    {submission: keys}. Lines over budget go to ``out.budget_blocked``, oversize ones fail."""
    if not requests:
        return {}
    encoded = [(r.key, backend.encode(r)) for r in requests]
    by_key = {r.key: r for r in requests}
    groups, too_large = split_lines(encoded, backend.max_requests, backend.max_bytes)
    for k in too_large:
        out.failures[k] = _fail(by_key[k], f"request larger than one batch may be ({backend.max_bytes} bytes)")
    cap = getattr(budget, "max_cost_usd", None)
    submitted: dict[str, list[str]] = {}
    for group in groups:
        ests = [estimate_cost(teacher, by_key[k].messages, by_key[k].params.get("max_tokens"), batch=True)
                for k, _ in group]
        if cap is not None:
            # the budget holds before submission: spent + every live batch's estimate + this one
            room = cap - float(getattr(budget, "spent", 0.0)) - store.outstanding_usd()
            n, total = 0, 0.0
            while n < len(group) and total + ests[n] <= room:
                total += ests[n]
                n += 1
            if n < len(group):
                out.budget_blocked += [k for k, _ in group[n:]]
                if hasattr(budget, "budget_hit"):
                    budget.budget_hit = True
                group, ests = group[:n], ests[:n]
        if not group:
            continue
        submission = "df-" + uuid.uuid4().hex
        cids = _custom_ids(backend, group)
        store.add_pending(submission, teacher.name, backend.provider, endpoint,
                          {k: c for (k, _), c in zip(group, cids)}, sum(len(x) + 1 for _, x in group), sum(ests))
        try:
            batch_id = await backend.submit([x for _, x in group], submission)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if status is not None and status < 500:  # refused: the provider created nothing
                store.set_abandoned(submission)
            hint = (f"check ${teacher.api_key_env or 'the API key variable'}" if status in (401, 403)
                    else "run the same command again: a batch the provider did create is found and collected")
            raise TeacherError(f"teacher '{teacher.name}': creating a batch of {len(group)} requests failed: "
                               f"{exc} — {hint}") from None
        store.set_submitted(submission, batch_id)
        out.batch_ids.append(batch_id)
        submitted[submission] = [k for k, _ in group]
    return submitted


def _custom_ids(backend, group: list[tuple[str, bytes]]) -> list[str]:
    if backend.provider == "anthropic":
        from distillflow.engine.batch.anthropic_batch import custom_id

        return [custom_id(k) for k, _ in group]
    return [k for k, _ in group]


async def _collect(teacher, backend, store: BatchStore, row: dict, status: str, reqs: dict, deliver,
                   out: BatchOutcome, attempts: dict, max_resubmits: int, inherited: set) -> list[str]:
    """Download a finished batch into the store, deliver our answers; returns keys to resubmit."""
    sub = row["submission"]
    lines = await backend.results(row["batch_id"], store.line_keys(sub))
    created = row["created_at"]
    now = time.time()
    priced = []
    for ln in lines:
        if ln.outcome == SUCCEEDED and ln.result is not None:
            ln.result.latency_s = now - created
            priced.append((ln.result, cost_of(teacher, ln.result.input_tokens, ln.result.output_tokens, batch=True)))
    store.collect(sub, status, [(ln.key, ln.outcome, ln.error, ln.retryable) for ln in lines], priced)
    if row["batch_id"] not in out.batch_ids:
        out.batch_ids.append(row["batch_id"])
    costs = {r.key: c for r, c in priced}
    retry: list[str] = []
    ok = 0
    lost = {EXPIRED: 0, CANCELLED: 0}
    for ln in lines:
        if ln.outcome == SUCCEEDED:
            ok += 1
        elif ln.outcome in lost:
            lost[ln.outcome] += 1
        if ln.key not in reqs:
            continue  # another caller's line: kept in the store for it
        if ln.outcome == SUCCEEDED and ln.result is not None:
            deliver(ln.key, ln.result, costs[ln.key], ln.key in inherited)
        elif ln.retryable and attempts.get(ln.key, 1) <= max_resubmits:  # attempts - 1 resubmits so far
            retry.append(ln.key)
        else:
            out.failures[ln.key] = _fail(reqs[ln.key], f"batch {row['batch_id']}: {ln.error}", ln.retryable)
    if status in ("expired", "cancelled", "canceled", "failed") or lost[EXPIRED] or lost[CANCELLED]:
        out.notes.append(
            f"batch {row['batch_id']} ({status}): {ok} of {len(lines)} answers recovered"
            + (f", {lost[EXPIRED]} expired" if lost[EXPIRED] else "")
            + (f", {lost[CANCELLED]} cancelled" if lost[CANCELLED] else "")
            + (f", {len(retry)} resubmitted" if retry else "")
        )
    return retry
