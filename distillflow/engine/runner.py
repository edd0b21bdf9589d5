"""Execute a compiled plan on one machine: prompts stream through the steps in shards.

    result = run_plan(plan, out_dir="runs/qa")
    result.manifest["counts"]["filter"]     # {"kind": "filter", "in": 40, "out": 31, "rejected": 9}
    result.curated[0], len(result.rejected) # lazy: read from the run's files
    result.dataset("curated")               # a datasets.Dataset memory-mapped from Parquet

How a run flows (docs/architecture.md): the source is read once into a prompt store; shard k's
prompts go through every step in graph order while other shards are in other steps
(``execution.shards_in_flight`` at once), so a judge works on shard k while shard k+1 is
generated. Row-local steps run per shard; prompt-grouped steps too (a shard holds every answer of
its prompts); global steps (dedup) take shards one at a time, in order, with compact state.

Resume works at two levels: every teacher answer is cached by request (cache/requests.sqlite),
and every step's output per shard is committed atomically (cache/shards/<step>/<hash>/<shard>/),
keyed by a hash of the step and everything upstream: a rerun skips committed shards, and changing
a filter threshold reruns only that filter and what follows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import hashlib
import inspect
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from distillflow.engine.client import run_coroutine_sync
from distillflow.engine.ledger import Ledger, cost_of
from distillflow.engine.outputs import Rows
from distillflow.engine.session import TeacherClients
from distillflow.engine.progress import NullReporter
from distillflow.engine.providers import missing_env
from distillflow.errors import ConfigurationError, TeacherOutageError, UsageError
from distillflow.graph import SOURCE
from distillflow.spec.models import not_a_url_message, url_scheme
from distillflow.steps import registry
from distillflow.steps.quarantine import count_quarantined, has_quarantined


@dataclass
class _ShardState:
    """What one shard's steps did that the engine must know (set through a context variable)."""

    undispatched: set = field(default_factory=set)  # step ids that left requests unsent
    usage: dict = field(default_factory=dict)  # step id -> teacher -> counters
    units: dict = field(default_factory=dict)  # step id -> progress units (requests) reported
    # step ids whose output for this shard was computed in this run rather than read from the shard
    # store: a step reading one of them computes its own again (its stored output, if any, came
    # from rows that may have changed, e.g. records that --retry-errors got answers for; such stored
    # outputs are also deleted when the commit they came from is replaced: NodeRunner._forget_below)
    recomputed: set = field(default_factory=set)


_SHARD: contextvars.ContextVar[_ShardState | None] = contextvars.ContextVar("distillflow_shard", default=None)


class SpecAccess:
    """The parts of ``steps.base.StepContext`` that read the plan (shared by the local and Ray contexts)."""

    spec = None

    def teacher(self, name: str):
        return self.spec.teacher(name)

    def request(self, teacher, messages, params, index=0, meta=None):
        from distillflow.engine.providers import make_request

        return make_request(teacher, messages, params, index, meta or {})

    def cost(self, teacher, input_tokens: int, output_tokens: int) -> float:
        return cost_of(teacher, input_tokens, output_tokens, _batch(teacher))  # batch teachers: batch prices


class RunContext(SpecAccess, TeacherClients):
    """What steps may ask of a run (the engine's side of ``steps.base.StepContext``)."""

    def __init__(self, plan, out_dir: Path, cache, ledger: Ledger, reporter, prompts=None, batch_lanes=None):
        self.plan = plan
        self.spec = plan.spec
        self.base_dir = plan.base_dir
        self.out_dir = out_dir
        self.objects = dict(plan.objects)
        self.cache = cache
        self.ledger = ledger
        self.reporter = reporter
        self.prompts = prompts
        self.attempt: str | None = None  # this invocation's id, in the shard commits it makes
        self.stop_event = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._lanes: dict = {}
        TeacherClients.__init__(self)  # client(teacher): one client per teacher, shared with engine/session.py
        self.batch_lanes = batch_lanes  # engine/batch/lane.py: lanes of mode: batch teachers, kept across passes

    @property
    def cache_path(self) -> Path:
        return self.out_dir / "cache" / "requests.sqlite"

    # -- the rest of the StepContext protocol ---------------------------------------------------
    def heldout(self):
        return iter(()) if self.prompts is None else self.prompts.heldout_rows()

    def advance(self, step_id: str, n: int) -> None:
        self.reporter.advance(step_id, n, self.ledger.spent)

    def _lane(self, teacher):
        if self.batch_lanes and _batch(teacher):
            return self.batch_lanes.lane(teacher, self)
        lane = self._lanes.get(teacher.name)
        if lane is None:
            lane = self._lanes[teacher.name] = self._new_lane(teacher)
        return lane

    def _new_lane(self, teacher):
        """The lane of an online teacher (made once per run; Ray workers' hold permits of the hub)."""
        from distillflow.engine.lanes import Lane

        return Lane(teacher, self.client(teacher), self)

    async def ask(self, step_id: str, teacher, requests: list, shard: _ShardState | None = None):
        """Cached answers first, the rest through the teacher's lane. See steps.base.StepContext.ask."""
        shard = shard or _SHARD.get()
        step = self.plan.graph.nodes[step_id].step if step_id in self.plan.graph.nodes else None
        # the ledger keeps a judge's calls apart from the same model's answers: "gpt (judge)"
        name = teacher.name if step is None or registry.get(step.kind).generates else f"{teacher.name} ({step.kind})"
        ledger = self.ledger
        self.reporter.add_total(step_id, len(requests))
        if shard is not None:
            shard.units[step_id] = shard.units.get(step_id, 0) + len(requests)
        hits = await asyncio.to_thread(self.cache.get_many, [r.key for r in requests]) if requests else {}
        paid = 0.0
        for res in hits.values():
            cost = self.cost(teacher, res.input_tokens, res.output_tokens)
            ledger.add(name, res.input_tokens, res.output_tokens, cost, True)
            paid += cost
        await self.charge(paid)
        self.reporter.advance(step_id, sum(1 for r in requests if r.key in hits), ledger.spent)
        misses = [r for r in requests if r.key not in hits]
        results, failures = dict(hits), {}
        if misses:
            got, failures = await self._lane(teacher).ask(step_id, misses, name)
            results.update(got)
        if shard is not None:
            if any(r.key not in results and r.key not in failures for r in requests):
                shard.undispatched.add(step_id)
            u = shard.usage.setdefault(step_id, {}).setdefault(name, {"requests": 0, "input_tokens": 0,
                                                                      "output_tokens": 0, "cost_usd": 0.0})
            for r in requests:
                res = results.get(r.key)
                if res is not None:
                    u["requests"] += 1
                    u["input_tokens"] += res.input_tokens
                    u["output_tokens"] += res.output_tokens
                    u["cost_usd"] += self.cost(teacher, res.input_tokens, res.output_tokens)
        # A request that failed for good is the step's to quarantine; a sustained outage opens the
        # teacher's circuit breaker, whose TeacherOutageError reached us through the lane.
        return results, failures

    async def charge(self, cost: float) -> None:
        """Answers this run uses that its lanes did not pay for now (cached, replayed from a
        committed shard, collected from a provider batch): the budget counts them (``ledger``
        does here; on Ray the permit hub's count must hear of them too: engine/ray_executor.py)."""

    def ask_blocking(self, step_id: str, teacher, requests: list):
        shard = _SHARD.get()  # the worker thread runs in a copy of the shard task's context
        fut = asyncio.run_coroutine_threadsafe(self.ask(step_id, teacher, requests, shard), self.loop)
        return fut.result()

    async def close(self) -> None:
        for lane in self._lanes.values():
            await lane.close()


class RunResult:
    """What a run produced: the run directory, its manifest, and lazy access to its rows."""

    def __init__(self, out_dir: Path, manifest: dict, notes: list[str] | None = None):
        self.out_dir = Path(out_dir)
        self.manifest = manifest
        self.notes = notes or []  # messages for the user (e.g. the review push)

    @property
    def curated(self) -> Rows:
        return Rows(self.out_dir / "data" / "curated.jsonl", self.manifest.get("curated"))

    @property
    def rejected(self) -> Rows:
        return Rows(self.out_dir / "data" / "rejected.jsonl", self.manifest.get("rejected"))

    @property
    def heldout(self) -> Rows:
        return Rows(self.out_dir / "data" / "heldout.jsonl", self.manifest.get("heldout"))

    def dataset(self, split: str = "curated"):
        """A ``datasets.Dataset`` memory-mapped from ``data/<split>.parquet`` (curated or rejected)."""
        from distillflow.engine.write import parquet_dataset

        return parquet_dataset(self.out_dir / "data" / f"{split}.parquet", self.out_dir / "cache" / "hf")

    def __repr__(self) -> str:
        m = self.manifest
        return f"RunResult({str(self.out_dir)!r}, curated={m.get('curated')}, rejected={m.get('rejected')}, status={m.get('status')!r})"


def _batch(teacher) -> bool:
    """A ``mode: batch`` teacher: answers through provider batches, at batch prices."""
    return getattr(teacher, "mode", "online") == "batch"


def _h(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _step_hash(plan, step, parent_hashes: list[str]) -> str:
    spec = plan.spec
    names = plan.step_teachers(step)
    from distillflow.engine.providers import teacher_identity

    # replicas do not change answers: a list of base URLs counts as its first one
    teachers = [teacher_identity(spec.teacher(n), ("name", "provider", "model", "base_url", "params")) for n in names]
    obj = plan.objects.get(step.id)
    obj_id = None if obj is None else f"{type(obj).__module__}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return _h(step.model_dump(mode="json"), parent_hashes, teachers, obj_id)


def _merge(parents: list[list[dict]]) -> list[dict]:
    """Join parent outputs on record id (prompt_id before generation); keep rows present in all."""
    if len(parents) == 1:
        return parents[0]
    key = "id" if all(p and "id" in p[0] for p in parents if p) else "prompt_id"
    index = [{r[key]: r for r in p} for p in parents]
    out = []
    for r in parents[0]:
        k = r[key]
        if not all(k in ix for ix in index[1:]):
            continue
        merged = dict(r)
        prov = json.loads(json.dumps(r.get("provenance") or {}, default=str))
        for ix in index[1:]:
            other = ix[k]
            merged.update({c: v for c, v in other.items() if c not in merged or c not in ("provenance",)})
            op = other.get("provenance") or {}
            for section in ("judges", "verifiers"):
                prov.setdefault(section, {}).update(op.get(section) or {})
            passed = prov.setdefault("filters_passed", [])
            passed += [f for f in op.get("filters_passed") or [] if f not in passed]
        merged["provenance"] = prov
        out.append(merged)
    return out


class _Turns:
    """Shards pass a point one at a time, in order (global steps, the output writer)."""

    def __init__(self):
        self.next = 0
        self.cond = asyncio.Condition()

    async def wait(self, k: int) -> None:
        async with self.cond:
            await self.cond.wait_for(lambda: self.next >= k)

    async def done(self, k: int) -> None:
        async with self.cond:
            self.next = max(self.next, k + 1)
            self.cond.notify_all()


class NodeRunner:
    """One step on one shard, for every backend: reuse its committed output, or run it and commit.

    The local executor runs every node of a shard with one NodeRunner; under Ray, each worker
    process has one (row- and prompt-scoped steps) and the driver has one (global steps). ``ctx``
    is the StepContext the steps get (RunContext or its Ray worker subclass): its ledger counts
    replayed usage, its reporter hears progress.
    """

    def __init__(self, plan, ctx, store, hashes: dict, retry_errors: bool = False, retry_transient: tuple = ()):
        self.plan, self.ctx, self.store, self.hashes, self.retry_errors = plan, ctx, store, hashes, retry_errors
        # the run after an outage asks again what the stopped invocations (their ids: _Outage.attempts)
        # quarantined after transient errors; "*": whatever commit (an outage recorded by an older version)
        self.retry_transient = tuple(retry_transient)
        graph = plan.graph
        self.nodes = [n for n in graph.order if n != SOURCE]
        self.kinds = {n: registry.get(graph.nodes[n].step.kind) for n in self.nodes}
        self.scope = {n: self.kinds[n].scope_of(graph.nodes[n].step) for n in self.nodes}
        self.calls_teachers = {n: bool(plan.step_teachers(graph.nodes[n].step)) for n in self.nodes}
        # the steps computed, directly or not, from n's output (in run order)
        self.below = {n: [m for m in graph.order if m in down] for n in self.nodes for down in [graph.downstream(n)]}
        self.states: dict = {}
        self.prepare_locks = {n: asyncio.Lock() for n in self.nodes}
        self.sync_locks = {n: asyncio.Lock() for n in self.nodes}
        self.clean = {n: True for n in self.nodes}  # global steps: every earlier shard complete
        # global steps: once one shard is computed anew, every later shard is too (a global step's
        # output depends on every earlier shard's, e.g. which duplicate came first)
        self.redo = {n: False for n in self.nodes}

    async def state(self, nid: str):
        async with self.prepare_locks[nid]:
            if nid not in self.states:
                kind, step = self.kinds[nid], self.plan.graph.nodes[nid].step
                self.states[nid] = (await asyncio.to_thread(kind.prepare, self.ctx, step)) if kind.prepare else None
        return self.states[nid]

    async def run_kind(self, nid: str, rows: list[dict]):
        kind, step = self.kinds[nid], self.plan.graph.nodes[nid].step
        state = await self.state(nid)
        if inspect.iscoroutinefunction(kind.run):
            return await kind.run(self.ctx, step, rows, state)
        async with self.sync_locks[nid]:  # one shard at a time per synchronous step (shared state, GIL)
            return await asyncio.to_thread(kind.run, self.ctx, step, rows, state)

    def _forget_below(self, nid: str, k: int) -> None:
        """Step ``nid``'s commit for shard ``k`` is about to be replaced: forget the commits computed
        from it — every later step's for shard ``k``, and a global step's (and what follows it) for
        every later shard too — before anything new is committed, so that a run stopped half-way
        (Ctrl-C, kill -9, a dead Ray worker, a batch teacher's next pass) computes them again
        instead of reusing outputs that lack what the new commit holds."""
        store, hs = self.store, self.hashes
        for d in self.below[nid]:
            store.drop(d, hs[d], k)
        for g in (nid, *self.below[nid]):
            if self.scope[g] == "global":
                for d in (g, *self.below[g]):
                    store.drop_after(d, hs[d], k)

    def _outage_commit(self, meta: dict) -> bool:
        """Whether a commit was made by an invocation that stopped on a teacher outage (the run
        after it asks that commit's transient failures again, not those of earlier runs)."""
        ids = self.retry_transient
        return "*" in ids or meta.get("attempt") in ids

    async def node(self, k: int, nid: str, outputs: dict, shard: _ShardState):
        """(kept, rejected, complete, stats) of step ``nid`` on shard ``k``; ``outputs``: parent id ->
        (rows, complete). ``stats``: in/out/rejected/quarantined/units/cached and the wall-clock
        start/end (time.time: spans are compared across processes)."""
        graph, ctx, store = self.plan.graph, self.ctx, self.store
        node = graph.nodes[nid]
        parents = [outputs[p] for p in node.parents]
        inp = _merge([p[0] for p in parents])
        complete = all(p[1] for p in parents)
        h = self.hashes[nid]
        glob = self.scope[nid] == "global"
        anew = any(p in shard.recomputed for p in node.parents) or (glob and self.redo[nid])
        got = stored = await asyncio.to_thread(store.get, nid, h, k) if complete and not anew else None
        if got is not None and got[2].get("quarantined") and (
                self.retry_errors or (self._outage_commit(got[2]) and has_quarantined(got[1], nid, retryable=True))):
            got = None  # --retry-errors, or the run after an outage: ask the quarantined records again
        start = time.time()
        cached = got is not None
        if cached:
            kept, rej, meta = got
            ctx.ledger.replay(meta.get("usage") or {})
            await ctx.charge(sum(d.get("cost_usd", 0.0) for d in (meta.get("usage") or {}).values()))
            units = meta.get("units", len(inp))
            ctx.reporter.add_total(nid, units)
            ctx.reporter.advance(nid, units, ctx.ledger.spent, cached=True)
            if glob and self.kinds[nid].restore is not None:
                self.kinds[nid].restore(await self.state(nid), node.step, kept)
        else:
            if stored is not None or (anew and complete and await asyncio.to_thread(store.has, nid, h, k)):
                await asyncio.to_thread(self._forget_below, nid, k)
            shard.recomputed.add(nid)
            if glob:
                self.redo[nid] = True
            if not self.calls_teachers[nid]:
                ctx.reporter.add_total(nid, len(inp))
            kept, rej = await self.run_kind(nid, inp)
            if not self.calls_teachers[nid]:
                ctx.reporter.advance(nid, len(inp), ctx.ledger.spent)
            complete = complete and nid not in shard.undispatched and not ctx.stop_event.is_set()
            if glob:
                complete = complete and self.clean[nid]
                self.clean[nid] = complete
            units = shard.units.get(nid, len(inp))
            if complete:
                meta = {"usage": shard.usage.get(nid, {}), "units": units,
                        "quarantined": count_quarantined(rej), "in": len(inp), "attempt": ctx.attempt}
                await asyncio.to_thread(store.put, nid, h, k, kept, rej, meta)
        stats = {"in": len(inp), "out": len(kept), "rejected": len(rej), "quarantined": count_quarantined(rej),
                 "units": units, "cached": cached, "start": start, "end": time.time()}
        return kept, rej, complete, stats


def _open_breaker(clients: dict) -> Exception | None:
    """The outage error of the first (by teacher name) of ``clients`` whose circuit breaker is open."""
    for name in sorted(clients):
        breaker = getattr(clients[name], "breaker", None)
        if breaker is not None and breaker.is_open:
            return breaker.error()
    return None


class ExecutorBase:
    """What both executors share: per-step counters and spans summed from NodeRunner stats, the
    output writer's turn, and the loop over shards (``shards_in_flight`` at once)."""

    def __init__(self, plan, ctx: RunContext, prompts, store, writer, retry_errors: bool = False):
        self.plan, self.ctx, self.prompts, self.store, self.writer = plan, ctx, prompts, store, writer
        self.retry_errors = retry_errors
        self.retry_transient: tuple = ()  # set by the run after an outage: see NodeRunner
        graph = plan.graph
        self.nodes = [n for n in graph.order if n != SOURCE]
        self.counts = {n: {"kind": graph.nodes[n].step.kind, "in": 0, "out": 0, "rejected": 0} for n in self.nodes}
        self.span: dict[str, list[float]] = {}  # step id -> [first start, last end] (wall clock)
        self.t0 = time.time()
        self.quarantined = 0
        self.hashes: dict[str, str] = {}
        self.turns: dict = {}
        self.write_turn = None

    def outage_seen(self) -> Exception | None:
        """The TeacherOutageError of a teacher whose circuit breaker opened in this run (None: no
        breaker opened). A Ctrl-C can land after a breaker opened and before the run stopped on
        its outage (it drains the requests still in flight): the run records it all the same."""
        return _open_breaker(self.ctx._clients)

    def _count(self, nid: str, st: dict) -> None:
        c = self.counts[nid]
        c["in"] += st["in"]
        c["out"] += st["out"]
        c["rejected"] += st["rejected"]
        self.quarantined += st["quarantined"]
        span = self.span.setdefault(nid, [st["start"], st["end"]])
        span[0], span[1] = min(span[0], st["start"]), max(span[1], st["end"])

    async def _write(self, k: int, outputs: dict, rejected: dict) -> None:
        """Shard k's sink rows and rejected rows to the outputs, in shard order."""
        await self.write_turn.wait(k)
        try:
            await asyncio.to_thread(self.writer.add, outputs[self.plan.graph.sink][0], rejected)
        finally:
            await self.write_turn.done(k)

    def _stopping(self) -> bool:
        return self.ctx.stop_event.is_set() or self.ctx.ledger.budget_hit

    async def _all_shards(self) -> None:
        """``_shard(k, sem)`` for every shard, ``shards_in_flight`` at once, until the run stops;
        one shard's failure stops the run and is re-raised plainly."""
        self.turns = {n: _Turns() for n in self.nodes}
        self.write_turn = _Turns()
        sem = asyncio.Semaphore(self.plan.spec.execution.shards_in_flight)
        try:
            async with asyncio.TaskGroup() as tg:
                for k in range(self.prompts.n_shards):
                    await sem.acquire()
                    if self._stopping():
                        sem.release()
                        break
                    tg.create_task(self._shard(k, sem))
        except BaseExceptionGroup as eg:
            first = eg.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None


class LocalExecutor(ExecutorBase):
    """Runs a plan's shards in one process: asyncio for teachers, worker threads for CPU steps."""

    def __init__(self, plan, ctx: RunContext, prompts, store, writer, retry_errors: bool = False):
        super().__init__(plan, ctx, prompts, store, writer, retry_errors)
        self.done = {n: 0 for n in self.nodes}  # shards through each step
        self.runner: NodeRunner | None = None

    async def _node(self, k: int, nid: str, outputs: dict, shard: _ShardState):
        kept, rej, complete, stats = await self.runner.node(k, nid, outputs, shard)
        self._count(nid, stats)
        self.done[nid] += 1
        self.ctx.reporter.shards(nid, self.done[nid], self.prompts.n_shards)
        return kept, rej, complete

    async def _shard(self, k: int, sem: asyncio.Semaphore):
        try:
            shard = _ShardState()
            _SHARD.set(shard)
            rows = await asyncio.to_thread(self.prompts.shard, k)
            outputs = {SOURCE: (rows, True)}
            rejected: dict[str, list[dict]] = {}
            for nid in self.nodes:
                glob = self.scope[nid] == "global"
                if glob:
                    await self.turns[nid].wait(k)
                try:
                    kept, rej, complete = await self._node(k, nid, outputs, shard)
                finally:
                    if glob:
                        await self.turns[nid].done(k)
                outputs[nid] = (kept, complete)
                rejected[nid] = rej
                for p in self.plan.graph.nodes[nid].parents:  # release what no later step reads
                    if p != SOURCE and all(p not in self.plan.graph.nodes[m].parents for m in self.nodes[self.nodes.index(nid) + 1:]):
                        outputs[p] = ([], outputs[p][1])
            await self._write(k, outputs, rejected)
        finally:
            sem.release()

    async def run(self) -> None:
        self.ctx.loop = asyncio.get_running_loop()
        self.runner = NodeRunner(self.plan, self.ctx, self.store, self.hashes, self.retry_errors, self.retry_transient)
        self.scope = self.runner.scope
        try:
            await self._all_shards()
            if self.ctx.batch_lanes:  # every shard has asked: submit what the batch lanes pooled
                await self.ctx.batch_lanes.flush()
        finally:
            await self.ctx.close()


def run_plan(plan, out_dir=None, reporter=None, fresh: bool = False, retry_errors: bool = False,
             wait: bool = True) -> RunResult:
    """Run ``plan`` into ``out_dir``, resuming from its caches. See the module docstring.

    The run directory is locked while the run uses it (engine/lock.py): a second run on it fails
    naming the holder. ``retry_errors`` recomputes the shards whose records were quarantined.
    ``wait=False``: a run with ``mode: batch`` teachers submits its provider batches and returns
    (status ``batches_pending``, nothing final written); running it again collects them.
    """
    from distillflow.engine.lock import RunLock

    spec = plan.spec
    if out_dir and url_scheme(str(out_dir)):  # (before anything is made: Path would make s3:/bucket/run here)
        raise UsageError(not_a_url_message("the run directory", str(out_dir)))
    problems = missing_env(spec, plan.teachers_used())
    if problems:
        raise ConfigurationError("\n".join(problems))
    from distillflow.engine.validate import preflight_steps

    preflight_steps(plan)  # e.g. a `module:function` verifier imports: before any answer is paid for
    if spec.execution.backend == "ray":  # before any work: the fix is an install
        from distillflow.engine.ray_executor import import_ray

        import_ray()
    out = Path(out_dir) if out_dir else _default_out(spec, plan.base_dir)
    with RunLock(out), _settled_heap():
        return _run_locked(plan, out, reporter, fresh, retry_errors, wait)


@contextlib.contextmanager
def _settled_heap():
    """During the run, the garbage collector leaves alone what existed before it (the imports:
    ~100k objects, ~140k with Ray), which every full collection would otherwise scan again (~50 ms
    each on a 2-core machine). Undone afterwards; skipped if the process froze objects itself."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_locked(plan, out: Path, reporter, fresh: bool, retry_errors: bool, wait: bool = True) -> RunResult:
    import shutil

    from distillflow.engine.cache import RequestCache, cache_journal
    from distillflow.engine.prompts import PromptStore
    from distillflow.engine.shards import ShardStore
    from distillflow.engine.write import OutputWriter

    spec = plan.spec
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        shutil.rmtree(out / "cache", ignore_errors=True)
    (out / "cache").mkdir(exist_ok=True)
    outage = _Outage(out / "cache" / "outage.json")
    reporter = reporter or NullReporter()
    if outage.before:
        reporter.message(f"resuming after a teacher outage ({outage.what()}): the records quarantined by "
                         "transient errors are asked again")
    started = time.time()
    attempt = uuid.uuid4().hex[:12]  # this invocation's id (engine/shards.py commits name it)
    # first: it keeps a reserve for a full disk. A Ray run on a network filesystem has readers on
    # other hosts: a rollback journal there (engine/cache.py)
    journal = cache_journal(out) if spec.execution.backend == "ray" else "wal"
    cache = RequestCache(out / "cache" / "requests.sqlite", journal=journal)
    cache.absorb()  # answers a killed Ray run's workers left in their own files (cache/requests-*.sqlite)
    reporter.step_start(SOURCE, "source", 0)
    ex = spec.execution
    try:
        prompts = PromptStore.prepare(spec.source, plan.base_dir, out / "cache" / "source", ex.shard_size,
                                      on_row=None)
    except BaseException:
        cache.close()
        raise
    reporter.add_total(SOURCE, prompts.n_train)
    reporter.advance(SOURCE, prompts.n_train)
    reporter.step_end(SOURCE, f"{prompts.n_train} prompts in {prompts.n_shards} shard(s)")
    store = ShardStore(out / "cache" / "shards")
    graph = plan.graph
    hashes = {SOURCE: _h("source", spec.source.model_dump(mode="json"), prompts.dir.name, ex.shard_size)}
    for nid in graph.order[1:]:
        hashes[nid] = _step_hash(plan, graph.nodes[nid].step, [hashes[p] for p in graph.nodes[nid].parents])
        store.prune(nid, hashes[nid])
    nodes = [n for n in graph.order if n != SOURCE]
    for nid in nodes:
        reporter.step_start(nid, graph.nodes[nid].step.kind, 0)
    from distillflow.engine.batch.lane import BatchLanes, new_since, run_pass

    if ex.backend == "ray":  # shards as Ray tasks, teachers owned by one actor (engine/ray_executor.py)
        from distillflow.engine.ray_executor import RayExecutor as executor_class
    else:
        executor_class = LocalExecutor
    batch = BatchLanes([spec.teacher(n) for n in sorted(plan.teachers_used())], out, retry_errors=retry_errors)
    earlier: list = []  # ledgers of earlier passes (batch teachers: one pass per round of provider batches)
    try:
        while True:
            for nid in nodes if earlier else ():  # a new pass: the step bars count it afresh
                getattr(reporter, "restart", lambda _: None)(nid)
            ledger = Ledger(spec.budget.max_cost_usd)
            ctx = RunContext(plan, out, cache, ledger, reporter, prompts, batch_lanes=batch or None)
            ctx.attempt = attempt
            writer = OutputWriter(out, nodes)
            executor = executor_class(plan, ctx, prompts, store, writer, retry_errors=retry_errors and not earlier)
            executor.hashes = hashes
            executor.retry_transient = outage.attempts if not earlier else ()
            try:
                next_pass = run_pass(executor, batch, wait, reporter, ctx.stop_event)
            except KeyboardInterrupt:
                ctx.stop_event.set()
                seen = executor.outage_seen()
                if seen is not None:  # stopped by hand during an outage: the next run asks its failures again
                    outage.record(seen, attempt)
                raise
            except TeacherOutageError as e:
                outage.record(e, attempt)
                raise
            finally:
                writer.close()
            if not next_pass:
                break
            earlier.append(ledger)
        pending = bool(batch.live())
        batches = batch.manifest() if batch else None
    finally:
        cache.close()
        batch.close()
    new_since(ledger, earlier)  # answers received in earlier passes count as new, not cached
    for nid in nodes:
        c = executor.counts[nid]
        reporter.step_end(nid, f"{c['out']} kept, {c['rejected']} rejected")
    status = "batches_pending" if pending else "budget_exhausted" if ledger.budget_hit else "complete"
    if status == "complete":  # every shard was visited: the outage's failures were asked again
        outage.clear()
    counts = {SOURCE: {"in": prompts.n_raw, "out": prompts.n_train, "rejected": prompts.n_dropped,
                       "heldout": len(prompts.heldout_positions)}}
    counts.update(executor.counts)
    manifest = {
        "name": spec.name,
        "spec_hash": spec.spec_hash(),
        "status": status,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": None,
        "counts": counts,
        "curated": writer.counts["curated"],
        "rejected": writer.counts["rejected"] + prompts.n_dropped,
        "heldout": len(prompts.heldout_positions),
        "quarantined": executor.quarantined,
        "teachers": ledger.to_dict(),
        "cost_usd": round(ledger.spent, 6),
        "budget": {"max_cost_usd": spec.budget.max_cost_usd, "exhausted": ledger.budget_hit},
        "execution": {"backend": ex.backend, "shard_size": ex.shard_size, "shards": prompts.n_shards,
                      "shards_in_flight": ex.shards_in_flight},
        # a step's wall time: from its first shard's start to its last shard's end (steps overlap)
        "timings": {n: round(b - a, 3) for n, (a, b) in executor.span.items()},
        # [first start, last end] of each step in seconds since the run started: steps overlap
        "step_spans": {n: [round(a - executor.t0, 3), round(b - executor.t0, 3)] for n, (a, b) in executor.span.items()},
        "sink": graph.sink,
    }
    for nid in nodes:  # what steps record about themselves (e.g. decontamination sets)
        step = graph.nodes[nid].step
        kind = registry.get(step.kind)
        if kind.manifest is not None:
            section, entry = kind.manifest(step)
            manifest.setdefault(section, {})[nid] = entry
    from distillflow.engine.replicas import replica_manifest

    replicas = replica_manifest(ctx._clients) or getattr(executor, "replicas", {})  # (Ray: from its teacher hub)
    if replicas:
        manifest["replicas"] = replicas
    if batches is not None:
        manifest["batches"] = batches
    manifest["seconds"] = round(time.time() - started, 3)
    if pending:  # --no-wait: nothing final is written; the manifest says what waits where
        from distillflow.engine.batch.lane import pending_result

        prompts.close()
        return pending_result(out, manifest)
    writer.finish(plan, prompts, manifest)
    prompts.close()
    return RunResult(out, manifest, notes=list(manifest.get("batches", {}).get("notes", [])))


def outage_note(run_dir: Path) -> str | None:
    """The line saying that the run in ``run_dir`` stopped on a teacher outage (None if it did not)."""
    outage = _Outage(Path(run_dir) / "cache" / "outage.json")
    if not outage.before:
        return None
    return (f"stopped by a teacher outage ({outage.what()}): run the same `distillflow run` command to "
            "resume — it asks again the records that failed while the teacher was down")


class _Outage:
    """``cache/outage.json``: written when a run stops on a teacher outage, so that the next run
    on the directory (the same command) asks again the records quarantined after transient errors
    — the requests that failed while the teacher was down, before its circuit breaker opened —
    instead of completing without them. Removed once a run completes."""

    def __init__(self, path: Path):
        self.path = path
        self.before = path.is_file()
        self.attempts: tuple = ()  # the invocations that stopped on it, since the last complete run
        if self.before:
            try:
                self.attempts = tuple(json.loads(path.read_text())["attempts"])
            except (OSError, ValueError, KeyError, TypeError):
                self.attempts = ("*",)  # unreadable, or written by an older version: any commit

    def record(self, error: Exception, attempt: str) -> None:
        """Write the file for ``error``, adding invocation ``attempt`` to those that stopped on
        outages since the last complete run (a rerun stopped by the same outage adds itself)."""
        attempts = [*self.attempts, attempt]
        with contextlib.suppress(OSError):  # (the run stops with the outage either way)
            self.path.write_text(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                             "error": str(error).split(". ", 1)[0].split(" (last error", 1)[0],
                                             "attempts": attempts}) + "\n")

    def what(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            return f"{info['error']}, at {info['at']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "cache/outage.json"

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def _default_out(spec, base_dir: Path) -> Path:
    if spec.output.dir:
        p = Path(spec.output.dir)
        return p if p.is_absolute() else base_dir / p
    return Path.cwd() / "runs" / spec.name
