"""Run a plan on a Ray cluster: shards as Ray tasks on any node, every teacher owned by one actor.

    execution: {backend: ray, address: auto}                 # YAML
    distillflow run pipeline.yaml --backend ray --address 10.0.0.1:6379
    distillflow.run(plan, backend="ray")

Same plan, same stores, same outputs as :class:`~distillflow.engine.runner.LocalExecutor`:

- The **driver** (the process that called ``run``) reads shard k from the prompt store and hands
  its rows to a Ray task; a task runs a stretch of row- and prompt-scoped steps on any node and
  commits each step's output to the :class:`~distillflow.engine.shards.ShardStore` itself.
  Global steps (dedup) run in the driver, shard after shard in order, with one state, exactly as
  locally. The driver writes the outputs in shard order (:class:`OutputWriter`).
- One actor, the **teacher hub** (placed on the driver's node), owns every teacher's lane: the HTTP
  session, the ``concurrency`` window, the RPM/TPM buckets, the circuit breaker, the ledger and the
  budget guard, and the request cache (``cache/requests.sqlite``, opened by that process only:
  no two processes ever write it). Tasks send it a step's requests once per shard, not once per
  request, so the limits and the budget hold for the whole cluster at little cost.
- **Exactly once**: a task whose worker dies is retried by Ray (``max_retries``) and skips the
  steps it had committed; answers it was waiting for are still cached by the hub. A driver killed
  mid-run takes its tasks and the hub with it; running again resumes from the committed shards.
  The outputs are rebuilt from shard results in shard order, so every record appears once.

The run directory must be on storage every node sees (a shared filesystem path; fsspec URLs such
as ``s3://`` are not supported). Every node needs distillflow installed with the ``ray`` extra.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import logging
import os
import time
import uuid
from pathlib import Path
from types import MappingProxyType

from distillflow.engine.ledger import Ledger, TeacherStats
from distillflow.engine.runner import RunContext, SpecAccess, _merge, _ShardState, _Turns
from distillflow.errors import ConfigurationError, DistillflowError, MissingDependencyError
from distillflow.graph import SOURCE
from distillflow.plan import Plan
from distillflow.steps import registry
from distillflow.steps.quarantine import count_quarantined

__all__ = ["INSTALL_HINT", "RayExecutor", "TeacherHub", "connect", "import_ray"]

INSTALL_HINT = "pip install 'distillflow[ray]'"
TASK_RETRIES = 3  # a task whose worker process or node dies is run again this many times

_CURRENT: contextvars.ContextVar[_ShardState | None] = contextvars.ContextVar("distillflow_ray_shard", default=None)


def import_ray():
    """The ``ray`` module, or a MissingDependencyError carrying the command that installs it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError(
            f"execution.backend 'ray' needs Ray, which is not installed in this environment: {INSTALL_HINT} "
            "(on the driver and on every node of the cluster), or set execution.backend: local"
        ) from None
    return ray


def connect(address: str | None):
    """Join the Ray cluster at ``address`` ("auto", "HOST:PORT", "ray://HOST:10001"); None starts a
    Ray instance on this machine. Returns (ray, whether this call connected)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                 include_dashboard=False if address is None else None)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = address or "a new local instance"
        raise ConfigurationError(
            f"cannot connect to the Ray cluster at {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            "Start one with `ray start --head` (and `ray start --address=HEAD_IP:6379` on each other node), "
            "or fix execution.address / --address."
        ) from None
    return ray, True


def _cause(exc: BaseException) -> BaseException:
    """The step's own exception inside Ray's wrappers (a RayTaskError holds it as ``cause``)."""
    seen = 0
    while getattr(exc, "cause", None) is not None and isinstance(exc.cause, BaseException) and seen < 10:
        exc, seen = exc.cause, seen + 1
    return exc


# -- the plan, shipped once -------------------------------------------------------------------------
def _box(plan) -> dict:
    """What a worker needs to rebuild the plan (MappingProxyType does not pickle; kinds registered
    from Python in the driver do not exist in a worker until shipped)."""
    used = {plan.graph.nodes[n].step.kind for n in plan.graph.order if n != SOURCE}
    return {"spec": plan.spec, "graph": plan.graph, "base_dir": plan.base_dir, "objects": dict(plan.objects),
            "source": plan.source, "kinds": {name: registry.get(name) for name in used}}


def _unbox(box: dict) -> Plan:
    known = registry.kinds()
    for name, kind in box["kinds"].items():
        if name not in known:
            registry.register(kind)
    return Plan(box["spec"], box["graph"], Path(box["base_dir"]), MappingProxyType(box["objects"]), source=box["source"])


# -- the teacher hub (one actor) --------------------------------------------------------------------
class _Tally:
    """A reporter that only counts (the hub's lanes report per request; the driver shows shards)."""

    def __init__(self):
        self.done: dict[str, int] = {}

    def step_start(self, *a, **k) -> None: ...
    def add_total(self, *a, **k) -> None: ...
    def step_end(self, *a, **k) -> None: ...
    def message(self, *a, **k) -> None: ...
    def close(self) -> None: ...

    def advance(self, step_id: str, n: int, cost_usd: float = 0.0, cached: bool = False) -> None:
        self.done[step_id] = self.done.get(step_id, 0) + n


class TeacherHub:
    """The one owner of every teacher's lane, the ledger, the budget and the request cache.

    A Ray actor (async: one event loop) on the driver's node; tasks call :meth:`ask` with a step's
    requests for one shard. It reuses the local engine's RunContext, so cache hits, the lane's
    window and RPM/TPM buckets, ledger labels and the budget guard are the local backend's own.
    """

    def __init__(self, box: dict, out_dir: str, max_cost_usd: float | None):
        from distillflow.engine.cache import RequestCache

        plan = _unbox(box)
        out = Path(out_dir)
        cache = RequestCache(out / "cache" / "requests.sqlite")
        self.ctx = RunContext(plan, out, cache, Ledger(max_cost_usd), _Tally(), None)
        self.pid = os.getpid()

    async def ask(self, step_id: str, teacher_name: str, requests: list):
        """(results, failures, usage of this call, units, whether some request was not dispatched)."""
        ctx = self.ctx
        ctx.loop = asyncio.get_running_loop()
        shard = _ShardState()
        results, failures = await ctx.ask(step_id, ctx.spec.teacher(teacher_name), requests, shard)
        return results, failures, shard.usage.get(step_id, {}), shard.units.get(step_id, 0), step_id in shard.undispatched

    def replay(self, usage: dict) -> None:
        self.ctx.ledger.replay(usage)

    def status(self) -> dict:
        led = self.ctx.ledger
        return {"spent": led.spent, "budget_hit": led.budget_hit, "teachers": led.snapshot(), "pid": self.pid}

    async def close(self) -> dict:
        from distillflow.engine.replicas import replica_manifest

        try:
            await self.ctx.close()
        finally:
            self.ctx.cache.close()
        return {**self.status(), "replicas": replica_manifest(self.ctx._clients)}


class HubContext(SpecAccess):
    """The StepContext of a step running under Ray: teachers through the hub, the rest as locally."""

    def __init__(self, plan, hub, out_dir: Path, prompts_dir: str | None, shard_size: int):
        self.plan, self.spec, self.base_dir = plan, plan.spec, plan.base_dir
        self.out_dir = Path(out_dir)
        self.objects = dict(plan.objects)
        self.hub = hub
        self.loop: asyncio.AbstractEventLoop | None = None
        self._prompts_dir, self._shard_size, self._prompts = prompts_dir, shard_size, None

    def heldout(self):
        if self._prompts_dir is None:
            return iter(())
        if self._prompts is None:
            from distillflow.engine.prompts import PromptStore

            self._prompts = PromptStore(Path(self._prompts_dir), self.spec.source, self._shard_size)
        return self._prompts.heldout_rows()

    def advance(self, step_id: str, n: int) -> None:
        """Progress is shown per shard under Ray (the driver counts finished shards)."""

    async def ask(self, step_id: str, teacher, requests: list):
        results, failures, usage, units, undispatched = await self.hub.ask.remote(step_id, teacher.name, list(requests))
        shard = _CURRENT.get()
        if shard is not None:
            shard.units[step_id] = shard.units.get(step_id, 0) + units
            if undispatched:
                shard.undispatched.add(step_id)
            mine = shard.usage.setdefault(step_id, {})
            for name, u in usage.items():
                acc = mine.setdefault(name, {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
                for key, v in u.items():
                    acc[key] = acc.get(key, 0) + v
        return results, failures

    def ask_blocking(self, step_id: str, teacher, requests: list):
        fut = asyncio.run_coroutine_threadsafe(self.ask(step_id, teacher, requests), self.loop)
        return fut.result()


# -- running steps of one shard (in a task, or in the driver for global steps) ----------------------
class _Steps:
    """The local executor's per-node logic (committed shard → reuse; else run and commit)."""

    def __init__(self, plan, ctx: HubContext, store, hashes: dict, retry_errors: bool):
        self.plan, self.ctx, self.store, self.hashes, self.retry_errors = plan, ctx, store, hashes, retry_errors
        graph = plan.graph
        nodes = [n for n in graph.order if n != SOURCE]
        self.kinds = {n: registry.get(graph.nodes[n].step.kind) for n in nodes}
        self.scope = {n: self.kinds[n].scope_of(graph.nodes[n].step) for n in nodes}
        self.calls = {n: bool(self.kinds[n].teachers(graph.nodes[n].step, plan.spec)) if self.kinds[n].teachers else False
                      for n in nodes}
        self.states: dict = {}
        self.clean = {n: True for n in nodes}  # global steps: every earlier shard complete

    async def state(self, nid: str):
        if nid not in self.states:
            kind, step = self.kinds[nid], self.plan.graph.nodes[nid].step
            self.states[nid] = (await asyncio.to_thread(kind.prepare, self.ctx, step)) if kind.prepare else None
        return self.states[nid]

    async def node(self, k: int, nid: str, outputs: dict, shard: _ShardState):
        """(kept, rejected, complete, stats) of step ``nid`` on shard ``k``."""
        node = self.plan.graph.nodes[nid]
        kind, step = self.kinds[nid], node.step
        parents = [outputs[p] for p in node.parents]
        inp = _merge([p[0] for p in parents])
        complete = all(p[1] for p in parents)
        h = self.hashes[nid]
        got = await asyncio.to_thread(self.store.get, nid, h, k) if complete else None
        if got is not None and self.retry_errors and got[2].get("quarantined"):
            got = None
        t0, wall0 = time.perf_counter(), time.time()  # wall clock: spans are compared across processes
        cached = got is not None
        if cached:
            kept, rej, meta = got
            if meta.get("usage"):
                await self.ctx.hub.replay.remote(meta["usage"])
            units = meta.get("units", len(inp))
            if self.scope[nid] == "global" and kind.restore is not None:
                kind.restore(await self.state(nid), step, kept)
        else:
            state = await self.state(nid)
            if inspect.iscoroutinefunction(kind.run):
                kept, rej = await kind.run(self.ctx, step, inp, state)
            else:
                kept, rej = await asyncio.to_thread(kind.run, self.ctx, step, inp, state)
            complete = complete and nid not in shard.undispatched
            if self.scope[nid] == "global":
                complete = complete and self.clean[nid]
                self.clean[nid] = complete
            units = shard.units.get(nid, len(inp)) if self.calls[nid] else len(inp)
            if complete:
                meta = {"usage": shard.usage.get(nid, {}), "units": units, "quarantined": count_quarantined(rej),
                        "in": len(inp)}
                await asyncio.to_thread(self.store.put, nid, h, k, kept, rej, meta)
        stats = {"in": len(inp), "out": len(kept), "rejected": len(rej), "quarantined": count_quarantined(rej),
                 "units": units, "cached": cached, "busy": time.perf_counter() - t0,
                 "start": wall0, "end": time.time()}
        return kept, rej, complete, stats


_WORKER: dict = {}  # run id -> (_Steps, HubContext) in this worker process (the latest run only)


def _segment_task(box_holder: list, hub, run_id: str, opts: dict, k: int, nids: list, inputs: dict, keep: list):
    """A Ray task: steps ``nids`` of shard ``k``, each committed as it finishes."""
    env = _WORKER.get(run_id)
    if env is None:
        import ray

        from distillflow.engine.shards import ShardStore

        plan = _unbox(ray.get(box_holder[0]))
        ctx = HubContext(plan, hub, Path(opts["out_dir"]), opts["prompts_dir"], opts["shard_size"])
        store = ShardStore(Path(opts["out_dir"]) / "cache" / "shards")
        _WORKER.clear()
        env = _WORKER[run_id] = _Steps(plan, ctx, store, opts["hashes"], opts["retry_errors"])

    import ray

    node = ray.get_runtime_context().get_node_id()

    async def go():
        env.ctx.loop = asyncio.get_running_loop()
        shard = _ShardState()
        _CURRENT.set(shard)
        outputs = dict(inputs)
        out = {"outputs": {}, "rejected": {}, "complete": {}, "stats": {}, "pid": os.getpid(), "node": node}
        for nid in nids:
            kept, rej, complete, stats = await env.node(k, nid, outputs, shard)
            outputs[nid] = (kept, complete)
            out["rejected"][nid], out["complete"][nid], out["stats"][nid] = rej, complete, stats
            if nid in keep:
                out["outputs"][nid] = kept
        return out

    return asyncio.run(go())


# -- the driver -------------------------------------------------------------------------------------
def _segments(nodes: list[str], scope: dict) -> list[tuple[str, list[str]]]:
    """Consecutive non-global steps form one task; each global step stands alone (driver)."""
    segs: list[tuple[str, list[str]]] = []
    for n in nodes:
        if scope[n] == "global":
            segs.append(("global", [n]))
        elif segs and segs[-1][0] == "task":
            segs[-1][1].append(n)
        else:
            segs.append(("task", [n]))
    return segs


class RayExecutor:
    """Runs a plan's shards as Ray tasks; same constructor, ``run()`` and counters as LocalExecutor."""

    def __init__(self, plan, ctx: RunContext, prompts, store, writer, retry_errors: bool = False):
        self.plan, self.ctx, self.prompts, self.store, self.writer = plan, ctx, prompts, store, writer
        self.retry_errors = retry_errors
        graph = plan.graph
        self.nodes = [n for n in graph.order if n != SOURCE]
        self.hashes: dict[str, str] = {}
        self.counts = {n: {"kind": graph.nodes[n].step.kind, "in": 0, "out": 0, "rejected": 0} for n in self.nodes}
        self.busy = {n: 0.0 for n in self.nodes}
        self.span: dict[str, list[float]] = {}  # step id -> [first start, last end] (wall clock, all workers)
        self.t0 = time.time()
        self.quarantined = 0
        self.workers: set[tuple] = set()  # (node id, pid) of the processes that ran tasks: cache/ray-workers.json
        self.hub_status: dict = {}

    def _plan_segments(self, scope: dict) -> None:
        graph = self.plan.graph
        self.segments = _segments(self.nodes, scope)
        later_reads: list[set] = []
        for i in range(len(self.segments)):
            reads = set()
            for _, nids in self.segments[i + 1:]:
                for n in nids:
                    reads |= set(graph.nodes[n].parents)
            later_reads.append(reads | {graph.sink})
        self.needed_after = later_reads
        self.reads = []
        for _, nids in self.segments:
            inside = set(nids)
            self.reads.append({p for n in nids for p in graph.nodes[n].parents if p not in inside})

    def _account(self, nid: str, st: dict) -> None:
        c = self.counts[nid]
        c["in"] += st["in"]
        c["out"] += st["out"]
        c["rejected"] += st["rejected"]
        self.quarantined += st["quarantined"]
        self.busy[nid] += st["busy"]
        span = self.span.setdefault(nid, [st["start"], st["end"]])
        span[0], span[1] = min(span[0], st["start"]), max(span[1], st["end"])
        rep = self.ctx.reporter
        rep.add_total(nid, st["units"])
        rep.advance(nid, st["units"], self.hub_status.get("spent", 0.0), cached=st["cached"])

    async def _shard(self, k: int, sem: asyncio.Semaphore) -> None:
        ray = self.ray
        try:
            shard = _ShardState()
            _CURRENT.set(shard)
            rows = await asyncio.to_thread(self.prompts.shard, k)
            outputs = {SOURCE: (rows, True)}
            rejected: dict[str, list[dict]] = {}
            for i, (what, nids) in enumerate(self.segments):
                if what == "global":
                    nid = nids[0]
                    await self.turns[nid].wait(k)
                    try:
                        kept, rej, complete, st = await self.local.node(k, nid, outputs, shard)
                    finally:
                        await self.turns[nid].done(k)
                    outputs[nid], rejected[nid] = (kept, complete), rej
                    self._account(nid, st)
                else:
                    inputs = {p: outputs[p] for p in self.reads[i]}
                    keep = [n for n in nids if n in self.needed_after[i]]
                    try:
                        res = await self.task.remote(self.box_holder, self.hub, self.run_id, self.opts, k, nids, inputs, keep)
                    except ray.exceptions.RayError as e:
                        cause = _cause(e)
                        if isinstance(cause, (DistillflowError, OSError)) or not isinstance(cause, ray.exceptions.RayError):
                            raise cause from None
                        raise DistillflowError(
                            f"shard {k} failed on the Ray cluster after {TASK_RETRIES} retries: {str(cause).splitlines()[0]}. "
                            "Committed shards are kept: run the same command again to resume."
                        ) from None
                    self.workers.add((res["node"], res["pid"]))
                    for nid in nids:
                        outputs[nid] = (res["outputs"].get(nid, []), res["complete"][nid])
                        rejected[nid] = res["rejected"][nid]
                        self._account(nid, res["stats"][nid])
                for p in list(outputs):  # release what no later step reads
                    if p not in self.needed_after[i] and p != SOURCE:
                        outputs[p] = ([], outputs[p][1])
            self.hub_status = await self.hub.status.remote()
            await self.write_turn.wait(k)
            try:
                await asyncio.to_thread(self.writer.add, outputs[self.plan.graph.sink][0], rejected)
            finally:
                await self.write_turn.done(k)
        finally:
            sem.release()

    async def run(self) -> None:
        ex = self.plan.spec.execution
        ray, connected = connect(ex.address)
        self.ray = ray
        try:
            await self._run(ray)
        finally:
            if connected:
                ray.shutdown()

    async def _run(self, ray) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        plan, ex, out = self.plan, self.plan.spec.execution, self.ctx.out_dir
        self.run_id = uuid.uuid4().hex
        self.box_holder = [ray.put(_box(plan))]
        here = ray.get_runtime_context().get_node_id()
        hub_cls = ray.remote(TeacherHub).options(
            num_cpus=0, max_restarts=0, max_concurrency=1000, name=f"distillflow-hub-{self.run_id[:12]}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=True))
        self.hub = hub_cls.remote(self.box_holder[0], str(out), plan.spec.budget.max_cost_usd)
        self.task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_segment_task)
        self.opts = {"out_dir": str(out), "prompts_dir": str(self.prompts.dir), "shard_size": self.prompts.shard_size,
                     "hashes": dict(self.hashes), "retry_errors": self.retry_errors}
        hub_ctx = HubContext(plan, self.hub, out, str(self.prompts.dir), self.prompts.shard_size)
        self.local = _Steps(plan, hub_ctx, self.store, self.hashes, self.retry_errors)
        self._plan_segments(self.local.scope)
        self.turns = {n: _Turns() for n in self.nodes}
        self.write_turn = _Turns()
        hub_ctx.loop = asyncio.get_running_loop()
        sem = asyncio.Semaphore(ex.shards_in_flight)
        try:
            self.hub_status = await self.hub.status.remote()
            async with asyncio.TaskGroup() as tg:
                for k in range(self.prompts.n_shards):
                    await sem.acquire()
                    if self.ctx.stop_event.is_set() or self.hub_status.get("budget_hit"):
                        sem.release()
                        break
                    tg.create_task(self._shard(k, sem))
        except BaseExceptionGroup as eg:
            first = eg.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        finally:
            await self._close_hub(ray)
            record = {"nodes": sorted({n for n, _ in self.workers}), "workers": sorted(self.workers),
                      "hub_pid": self.hub_status.get("pid")}
            (out / "cache" / "ray-workers.json").write_text(json.dumps(record, indent=1) + "\n")

    async def _close_hub(self, ray) -> None:
        try:
            final = await self.hub.close.remote()
        except Exception:  # the hub died with its node: the ledger of this invocation is lost
            final = None
        finally:
            ray.kill(self.hub, no_restart=True)
        if final is None:
            return
        self.hub_status = final
        ledger = self.ctx.ledger
        ledger.teachers = {n: TeacherStats(**d) for n, d in final["teachers"].items()}
        ledger.budget_hit = final["budget_hit"]
        self.replicas = final.get("replicas") or {}
