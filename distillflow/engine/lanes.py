"""One lane per teacher: every step and shard that asks a teacher shares its window for the whole run.

    lane = Lane(teacher, client, run)          # run: cache, ledger, reporter, stop event
    results, failures = await lane.ask(step_id, requests)

A lane feeds one long-lived ``client.arun`` (one HTTP session, ``concurrency`` requests in flight,
one set of RPM/TPM buckets) from a queue, so shard k+1's generations fill the window while shard k
finishes and a judge's requests mix with them: the teacher's limits hold across all of them.
Cached answers never reach the queue. A request the lane could not dispatch (budget reached,
run stopping) is in neither ``results`` nor ``failures``.
"""

from __future__ import annotations

import asyncio

from distillflow.engine.ledger import cost_of, estimate_cost
from distillflow.engine.scheduler import estimate_tokens


def _consume(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


class _Feed:
    """The async iterator a client's window pulls requests from."""

    def __init__(self, lane: "Lane"):
        self.lane = lane

    def __aiter__(self):
        return self

    async def __anext__(self):
        lane = self.lane
        while True:
            if lane.should_stop():
                raise StopAsyncIteration
            req = await lane.queue.get()
            if req is None:  # closed
                raise StopAsyncIteration
            if lane.should_stop():
                lane.undispatched(req)
                raise StopAsyncIteration
            gate = lane.gate
            if gate is not None:  # limits shared with other processes (engine/permits.py)
                tokens = estimate_tokens(req.messages, req.params) if gate.limits.tpm else 0
                if not gate.try_acquire(tokens, req.key):
                    if not await gate.acquire(lane.queue.qsize() + 1, lane.est, tokens, req.key):
                        # the budget is spent across the cluster, or the teacher's circuit breaker opened
                        # here or in another worker (then the request fails with the outage: undispatched)
                        lane.undispatched(req)
                        if not gate.tripped and not gate.abandoned:
                            lane.run.ledger.budget_hit = True
                        lane._stop()
                        raise StopAsyncIteration
                    if lane.should_stop():  # the run stopped while this request waited for a slot
                        gate.unacquire(req.key)
                        lane.undispatched(req)
                        raise StopAsyncIteration
            lane.dispatched += 1
            return req


class Lane:
    """``gate``: an :class:`~distillflow.engine.permits.Gate` when the teacher's limits and budget are
    shared with other processes (Ray workers): every dispatched request then holds one of its slots
    until its answer (or final error) is in, and every attempt, retries included, takes a rate
    permit (the client's ``retry_charge``)."""

    def __init__(self, teacher, client, run, gate=None):
        self.teacher = teacher
        self.gate = gate
        self.client = client
        self.run = run  # the RunContext: cache, ledger, reporter, stop_event
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pending: dict[str, tuple[asyncio.Future, str, str]] = {}  # key -> (future, step id, ledger label)
        self.dispatched = 0
        self.completed = 0
        self.est = 0.0  # the largest estimated cost of one request seen (for the budget guard)
        self.stopped = False
        self.error: BaseException | None = None
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # clients without a streaming window take one ask at a time
        self.streams = getattr(client, "streams", False)
        if gate is not None and hasattr(client, "retry_charge"):  # every retry takes a rate permit too
            client.retry_charge = self._retake

    async def _retake(self, req) -> bool:
        """Before a retry of ``req`` (which still holds its slot): a rate permit from the gate."""
        gate = self.gate
        tokens = estimate_tokens(req.messages, req.params) if gate.limits.tpm else 0
        return await gate.retake(tokens)

    # -- budget / stop --------------------------------------------------------------------------
    def should_stop(self) -> bool:
        run = self.run
        if self.stopped or run.stop_event.is_set() or run.ledger.budget_hit:
            self._stop()
            return True
        ledger = run.ledger
        if ledger.max_cost_usd is None or self.est == 0:
            return False
        inflight = self.dispatched - self.completed
        if ledger.spent + (inflight + 1) * self.est > ledger.max_cost_usd:
            ledger.budget_hit = True
            self._stop()
            return True
        return False

    def _stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            if not self.streams:  # (called from a worker thread there; nobody waits on the queue)
                return
            if self.gate is not None:  # requests waiting for a slot give up now
                self.gate.abandon()
            for _ in range(max(1, getattr(self.client, "concurrency", 1))):
                self.queue.put_nowait(None)  # wake every waiting worker

    def _not_sent(self, fut: asyncio.Future) -> None:
        """A request's future when the request is not sent: None (the run stops: budget, signal), or
        the outage when the teacher's circuit breaker opened in another worker or this one."""
        err = self.gate.outage() if self.gate is not None else None
        if err is not None:
            fut.set_exception(err)
        else:
            fut.set_result(None)

    def undispatched(self, req) -> None:
        entry = self.pending.pop(req.key, None)
        if entry is not None and not entry[0].done():
            self._not_sent(entry[0])

    # -- results ----------------------------------------------------------------------------------
    def on_result(self, res) -> None:
        self.completed += 1
        run = self.run
        if self.gate is not None:
            self.gate.release(0.0 if res.error else cost_of(self.teacher, res.input_tokens, res.output_tokens),
                              None if res.error else res.input_tokens + res.output_tokens, res.key)
        entry = self.pending.pop(res.key, None)
        step_id, name = (entry[1], entry[2]) if entry else (None, self.teacher.name)
        try:
            if res.error:
                run.ledger.fail(name)
            else:
                run.cache.put(res)  # may raise (disk full): the waiter must hear it too
                run.ledger.add(name, res.input_tokens, res.output_tokens,
                               cost_of(self.teacher, res.input_tokens, res.output_tokens), False)
            if step_id is not None:
                run.reporter.advance(step_id, 1, run.ledger.spent)
        except BaseException as exc:
            if entry is not None and not entry[0].done():
                entry[0].set_exception(exc)
            raise
        if entry is not None and not entry[0].done():
            entry[0].set_result(res)

    async def _serve(self) -> None:
        try:
            await self.client.arun(_Feed(self), self.on_result, self.should_stop)
        except asyncio.CancelledError:  # the run is stopping (Ctrl-C, SIGTERM): so do the waiters
            for fut, *_ in list(self.pending.values()):
                fut.cancel()
            self.pending.clear()
            raise
        except BaseException as exc:  # an outage or a bug: every waiter gets it
            self.error = exc
            for fut, *_ in list(self.pending.values()):
                if not fut.done():
                    fut.set_exception(exc)
            self.pending.clear()
            if not isinstance(exc, Exception):
                raise
        finally:
            self.stopped = True
            for fut, *_ in list(self.pending.values()):
                if not fut.done():
                    fut.set_result(None)
            self.pending.clear()
            if self.gate is not None:  # nothing is in flight any more: every slot goes back
                try:
                    await self.gate.close()
                except Exception:  # the owner is gone: its leases expire there anyway
                    pass

    # -- asking -------------------------------------------------------------------------------------
    async def submit(self, step_id: str, requests: list, label: str) -> dict:
        """Futures for ``requests`` (by key); the same key asked twice shares one request."""
        loop = asyncio.get_running_loop()
        futures: dict[str, asyncio.Future] = {}
        budget = self.run.ledger.max_cost_usd is not None or (self.gate is not None and self.gate.budget)
        for req in requests:
            if req.key in futures:
                continue
            entry = self.pending.get(req.key)
            if entry is not None:
                futures[req.key] = entry[0]
                continue
            fut = loop.create_future()
            # a run that stops on one shard's error leaves other shards' futures unread: not an error
            fut.add_done_callback(_consume)
            futures[req.key] = fut
            if self.stopped or self.error is not None:
                self._not_sent(fut)
                continue
            if budget:
                self.est = max(self.est, estimate_cost(self.teacher, req.messages, req.params.get("max_tokens")))
            self.pending[req.key] = (fut, step_id, label)
            self.queue.put_nowait(req)
        if self.error is not None:
            raise self.error
        if self._task is None and not self.stopped:
            self._task = asyncio.ensure_future(self._serve())
        return futures

    async def ask(self, step_id: str, requests: list, label: str | None = None):
        """(results, failures) by key; ``label`` names the teacher in the ledger (e.g. "gpt (judge)")."""
        label = label or self.teacher.name
        if not self.streams:
            return await self._ask_batch(step_id, requests, label)
        futures = await self.submit(step_id, requests, label)
        if futures:
            await asyncio.wait(list(futures.values()))
        breaker = getattr(self.client, "breaker", None)
        if breaker is not None and breaker.is_open:
            # the teacher looks down: the run stops here, with these requests' failures asked again
            # by the next run, not kept as quarantined records. (The breaker may open on the last
            # answers, when no request is left to send: the window then ends with nobody to tell.)
            raise breaker.error()
        results, failures = {}, {}
        for key, fut in futures.items():
            res = fut.result()  # raises the outage, if there was one
            if res is None:
                continue
            (failures if res.error else results)[key] = res
        return results, failures

    async def _ask_batch(self, step_id: str, requests: list, label: str):
        """Clients without a streaming window (local models): one ask at a time, in a worker thread."""
        results, failures = {}, {}
        unique = list({r.key: r for r in requests}.values())

        def on_result(res):  # called from the client's worker thread
            self.completed += 1
            run, name = self.run, label
            if res.error:
                run.ledger.fail(name)
                failures[res.key] = res
            else:
                run.cache.put(res)
                run.ledger.add(name, res.input_tokens, res.output_tokens,
                               cost_of(self.teacher, res.input_tokens, res.output_tokens), False)
                results[res.key] = res
            run.reporter.advance(step_id, 1, run.ledger.spent)

        budget = self.run.ledger.max_cost_usd is not None
        for req in unique:
            if budget:
                self.est = max(self.est, estimate_cost(self.teacher, req.messages, req.params.get("max_tokens")))

        def stream():
            for r in unique:
                self.dispatched += 1
                yield r

        async with self._lock:
            if not self.should_stop():
                await self.client.arun(stream(), on_result, self.should_stop)
        return results, failures

    async def close(self) -> None:
        self.stopped = True
        for _ in range(max(1, getattr(self.client, "concurrency", 1))):
            self.queue.put_nowait(None)
        if self._task is not None:
            try:
                await self._task
            except Exception:
                pass
        elif self.gate is not None:
            await self.gate.close()
