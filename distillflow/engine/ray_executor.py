"""Run a plan on a Ray cluster: shards as Ray tasks on any node, teacher limits owned by one actor.

    execution: {backend: ray, address: auto}                 # YAML
    distillflow run pipeline.yaml --backend ray --address 10.0.0.1:6379
    distillflow.run(plan, backend="ray")

Same plan, same stores, same outputs as :class:`~distillflow.engine.runner.LocalExecutor`, and the
same per-step logic (:class:`~distillflow.engine.runner.NodeRunner`):

- The **driver** (the process that called ``run``) sends shard k to a Ray task, which reads the
  shard's prompts from the prompt store itself, runs a stretch of row- and prompt-scoped steps on
  any node and commits each step's output to the :class:`~distillflow.engine.shards.ShardStore`.
  Global steps (dedup) run in the driver, shard after shard in order, with one state, exactly as
  locally (the driver reads a shard's prompts only when a global step reads the source). What a
  task adds to the outputs (its steps' rejected rows, the sink's rows) it renders into a part file
  under ``cache/parts/<run id>/``; the driver appends the parts in shard order
  (:meth:`OutputWriter.add_part`) and deletes them.
- **Workers send teacher requests themselves** (the local engine's RunContext and lanes, one HTTP
  session per worker process, kept across its tasks), and hold a permit of the **permit hub** for
  each request in flight: one actor on the driver's node (reused by the job's later runs) owns every
  teacher's ``concurrency`` slots, RPM/TPM buckets and the budget (engine/permits.py). Workers
  lease permits in batches and give back what they no longer use, so the hub answers a few calls
  per hundred requests; while another worker waits for slots, a holder keeps no more than its fair
  share (``concurrency // active workers``: it hears so at once through one ``watch`` call left
  waiting at the hub, which also renews its lease); a worker that stops calling (dead) loses its
  leases after ``LEASE_TTL_S``.
  A request keeps its slot through its retries, and every retry (each worker's client retries)
  takes RPM/TPM tokens from the hub as a first attempt does, out of the worker's leased tokens when
  it holds some (:meth:`~distillflow.engine.permits.Gate.retake`): retries are charged globally.
- **Request cache**: each worker process writes its own file, ``cache/requests-<worker>.sqlite``,
  and reads every file of the run merged (:class:`~distillflow.engine.cache.SharedCache`), so no
  two processes write one SQLite file and a retried shard finds a dead worker's answers. The driver
  folds the worker files into ``cache/requests.sqlite`` before and after a run.
- **Exactly once**: a task whose worker dies is retried by Ray (``max_retries``) and skips the
  steps it had committed; the dead worker's answers are in its file, so only the requests it had in
  flight are asked again. A driver killed mid-run takes its tasks and the hub with it; running again
  resumes from the committed shards (``cache/parts`` is emptied first). The outputs are rebuilt
  from shard results in shard order, so every record appears once: the driver appends only the
  part named in the reply it got; a dead attempt's part is never read and goes with the directory
  at the end of the run.

- **Local-model teachers** (``provider: transformers`` or ``vllm``) with ``copies: N`` are loaded N
  times, each copy an actor reserving ``gpus_per_copy`` GPUs (engine/model_copies.py), reused by the
  job's later runs with the same teacher; tasks and the driver send their batches to the copies.
  Without ``copies`` each worker process that runs a task loads its own.

The run directory must be on storage every node sees (a shared filesystem path; fsspec URLs such
as ``s3://`` are not supported). Every node needs distillflow installed with the ``ray`` extra; the
teachers' API-key variables are shipped from the driver with the plan (a node's own values win).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import MappingProxyType

from distillflow.engine.ledger import Ledger, TeacherStats
from distillflow.engine.model_copies import ModelCopy, copies_wanted
from distillflow.engine.permits import Gate, Limits, PermitHub, outage_of
from distillflow.engine.progress import NullReporter
from distillflow.engine.replicas import replica_manifest
from distillflow.engine.runner import _SHARD, ExecutorBase, NodeRunner, RunContext, _batch, _open_breaker, _ShardState
from distillflow.errors import ConfigurationError, DistillflowError, MissingDependencyError, UsageError, is_write_error
from distillflow.graph import SOURCE
from distillflow.plan import Plan
from distillflow.steps import registry

__all__ = ["INSTALL_HINT", "RayExecutor", "WorkerContext", "connect", "import_ray", "permit_hub"]

INSTALL_HINT = "pip install 'distillflow[ray]'"
CONNECT_CHECK_S = 10.0  # seconds for HOST:PORT to accept a connection before ray.init is tried
TASK_RETRIES = 3  # a task whose worker process or node dies is run again this many times
STOP_MARK = "STOPPING"  # in the run's parts folder: the run is stopping (see _segment_task)
STRAGGLER_WAIT_S = 30.0  # how long a stopping run waits for its shard tasks still running


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
        _say_if_elsewhere(ray, address)
        return ray, False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is not None:
        _check_reachable(address)
    main = threading.current_thread() is threading.main_thread()
    on_sigterm = signal.getsignal(signal.SIGTERM) if main else None
    if not callable(on_sigterm):  # (Python's default: Ray's handler, which exits through ray.shutdown, stays)
        on_sigterm = None

    def join():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING,
                     include_dashboard=False if address in (None, "local") else None)
        except SystemExit as e:
            # a SIGTERM while ray.init runs meets the handler Ray put in first, which exits with the
            # signal's number and no word (15): the one there before stops the run as elsewhere
            # (the CLI's: exit 143, the resume hint)
            if on_sigterm is None or e.code != signal.SIGTERM:
                raise
            signal.signal(signal.SIGTERM, on_sigterm)
            on_sigterm(signal.SIGTERM, None)
            raise
        finally:
            # ray.init puts its own SIGTERM handler in (exit at once, with a stack dump): the one
            # there before (the CLI's: stop like Ctrl-C, exit 143 with the resume hint) comes back
            if on_sigterm is not None and signal.getsignal(signal.SIGTERM) is not on_sigterm:
                signal.signal(signal.SIGTERM, on_sigterm)

    # (Ray's AuthenticationError is none of the others: raised at once with RAY_AUTH_MODE=token and no token)
    failures = (ConnectionError, RuntimeError, ValueError, *_ray_auth_error(ray))

    def join_client():
        """join(); through Ray Client (ray://), once more where the head's client server could not start
        a session for this driver: it starts a process per driver, which a busy head can fail to bring
        up in time (its own wait is 30 s), and the next one usually comes up."""
        try:
            join()
        except failures as e:
            reason = _client_init_failure(e)
            if reason is None or not str(address or "").startswith("ray://"):
                raise
            print(f"distillflow: the Ray Client server at {address} could not start a session for this driver "
                  f"({reason}): trying once more", file=sys.stderr, flush=True)
            ray.shutdown()
            join()

    try:
        try:
            join_client()
        except failures as e:
            if address in (None, "auto") or not _auth_failure(e) or not _token_mode_on():
                raise  # (None and "auto": Ray itself sends the token a local cluster may need)
            print(f"distillflow: the Ray cluster at {address} requires its authentication token: joining again "
                  "with the one found here (set RAY_AUTH_MODE=token to send it at once)", file=sys.stderr, flush=True)
            ray.shutdown()
            try:
                join()
            except failures:
                _token_mode_off()  # this process does not stay in token mode for a cluster that refused it
                raise
    except failures as e:
        where = address or "a new local instance"
        if _auth_failure(e):
            hint = (" (and unset RAY_AUTH_MODE, which is 'disabled' here)"
                    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" else "")
            raise ConfigurationError(
                f"cannot connect to the Ray cluster at {where}: it requires Ray's authentication token and this "
                "process has none that matches. Copy the head node's token (`ray get-auth-token` there, or its "
                "~/.ray/auth_token) to ~/.ray/auth_token on this machine, or set RAY_AUTH_TOKEN (or "
                f"RAY_AUTH_TOKEN_PATH) in the environment{hint}."
            ) from None
        reason = _client_init_failure(e)
        if reason is not None:
            raise ConfigurationError(
                f"cannot connect to the Ray cluster at {where}: its Ray Client server could not start a session for "
                f"this driver, twice ({reason}). The head node's logs say why (ray_client_server*.err in the "
                "session's logs folder, /tmp/ray/session_latest/logs by default); on a busy head, run the same "
                "command again, or join with HOST:PORT (6379) from a machine of the cluster."
            ) from None
        raise ConfigurationError(
            f"cannot connect to the Ray cluster at {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            "Start one with `ray start --head` (and `ray start --address=HEAD_IP:6379` on each other node), "
            "or fix execution.address / --address."
        ) from None
    return ray, True


def _client_init_failure(exc: BaseException) -> str | None:
    """Where Ray Client's server refused to start a session (``Initialization failure from server:``
    followed by its traceback): the traceback's last line, the reason; else None."""
    text = str(exc)
    if not text.startswith("Initialization failure from server"):
        return None
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    return lines[-1] if lines else "no reason given"


def _host_key(host: str) -> str:
    """``host`` as an IP address, "local" for any address of this machine (loopback included)."""
    try:
        ip = socket.gethostbyname(host)
    except OSError:
        return host.lower()
    if ip.startswith("127."):
        return "local"
    try:
        mine = set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        mine = set()
    return "local" if ip in mine else ip


def _say_if_elsewhere(ray, address: str | None) -> None:
    """This process is connected to Ray already (a notebook's ``ray.init()``, an earlier run): runs
    go there. An explicit HOST:PORT naming another cluster is not joined; say so instead of
    running on the connected one without a word."""
    from distillflow.spec.models import split_address

    wanted = split_address(address) if address else None
    if wanted is None:  # (auto, local, ray://...: nothing to compare with)
        return
    try:
        current = ray.get_runtime_context().gcs_address
    except Exception:  # (a Ray Client connection has none to show)
        return
    have = split_address(current or "")
    if have is None or (have[1] == wanted[1] and _host_key(have[0]) == _host_key(wanted[0])):
        return
    print(f"distillflow: this process is connected to the Ray cluster at {current} already; the run goes there, "
          f"not to {address} (call ray.shutdown() first to join that one)", file=sys.stderr, flush=True)


def _check_reachable(address: str) -> None:
    """Fail within a short wait where nothing answers at ``address`` (HOST:PORT), rather than after
    Ray's own retries (20 tries of ~40 s each, ~14 minutes of warnings). A refused connection is tried
    again for ``DISTILLFLOW_RAY_CONNECT_WAIT_S`` (default 30 s: a head started alongside the driver,
    as launchers do, is up by then). ``auto``, ``local`` and ``ray://`` are Ray's to check."""
    from distillflow.spec.models import address_problem, split_address

    problem = address_problem(address)
    if problem:  # (the spec checks it too)
        raise UsageError(problem)
    hp = split_address(address)
    if hp is None:  # auto, local, ray://...
        return
    wait = float(os.environ.get("DISTILLFLOW_RAY_CONNECT_WAIT_S", "30"))
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            socket.create_connection(hp, timeout=CONNECT_CHECK_S).close()
            return
        except socket.gaierror as e:
            reason = f"the host name {hp[0]!r} does not resolve: {e.strerror or e}"
        except OSError as e:
            reason = "timed out" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__)
            if isinstance(e, ConnectionRefusedError) and time.monotonic() < deadline:
                if not told:
                    print(f"distillflow: nothing answers at {address} yet: waiting up to {wait:g} s for the Ray "
                          "head to start", file=sys.stderr, flush=True)
                    told = True
                time.sleep(1.0)
                continue
        raise ConfigurationError(
            f"cannot connect to the Ray cluster at {address}: nothing answers there ({reason}). Check the host and "
            "port (the head's address that `ray start --head` printed, port 6379 unless --port said otherwise; "
            "`ray status` on the head shows it) and that this machine can reach it, or start a cluster with "
            "`ray start --head`."
        ) from None


def _token_mode_on() -> bool:
    """After a cluster refused this driver for want of a token: turn Ray's token mode on when this
    machine has a token and ``RAY_AUTH_MODE`` is not set (whether it is now on).

    Ray 2.60 turns token authentication on for a head that finds a token (``~/.ray/auth_token``, which
    any plain ``ray.init()`` on the machine writes; ``RAY_AUTH_TOKEN``; ``RAY_AUTH_TOKEN_PATH``), but a
    driver joining with ``ray.init(address=...)`` sends none unless ``RAY_AUTH_MODE=token`` was set: on
    the machine that started the cluster it is refused. Not turned on before a first try: a driver in
    token mode cannot work with a cluster without authentication (its actors never start), and a token
    here says nothing of a cluster elsewhere."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return False
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:  # a Ray without token authentication
        return False
    quiet = logging.getLogger(auth.__name__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, which this is not
    try:
        return bool(auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False))
    except Exception:  # noqa: BLE001 — a private helper of Ray's: if it changed, report the refusal as it is
        return False
    finally:
        quiet.setLevel(level)


def _ray_auth_error(ray) -> tuple:
    """Ray's AuthenticationError class, as a tuple (empty for a Ray without one)."""
    cls = getattr(getattr(ray, "exceptions", None), "AuthenticationError", None)
    return (cls,) if isinstance(cls, type) else ()


def _token_mode_off() -> None:
    """Undo :func:`_token_mode_on` after a join that failed anyway."""
    os.environ.pop("RAY_AUTH_MODE", None)
    try:
        from ray._raylet import Config

        Config.initialize("")
    except Exception:  # noqa: BLE001 — a private part of Ray's: the variable is what later processes read
        pass


def _auth_failure(exc: BaseException) -> bool:
    """Whether connecting failed on Ray's authentication (its error sits in the exception's chain)."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _not_shared(what: str) -> ConfigurationError:
    """The error for a run directory some process of the cluster does not see (``what``: where it showed)."""
    return ConfigurationError(
        f"{what}. The run directory must be on storage every node sees: pass --out (or output.dir) on a "
        "shared filesystem mounted at the same path on every node."
    )


def _on_worker(err: OSError, wrapper, out_dir=None) -> OSError:
    """A shard task's OSError saying that it happened on a Ray worker, and where; a write error (a full
    disk, a read-only path, no permission inside the run directory) also says that every node must be
    able to write the run directory: the driver's machine may write a path that a node cannot."""
    if err.errno is None:
        return err
    where = f"on a Ray worker: pid {getattr(wrapper, 'pid', '?')} at {getattr(wrapper, 'ip', '?')}"
    if is_write_error(err, out_dir):
        where += "; every node must be able to write the run directory, at the same path"
    try:
        return type(err)(err.errno, f"{err.strerror or err} ({where})", err.filename, None, err.filename2)
    except Exception:  # (a subclass built otherwise)
        return err


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
    # the teachers' API keys as the driver has them: workers send the requests (a node's own wins);
    # they travel in the object store's memory only, never to the run directory
    names = {plan.spec.teacher(n).api_key_env for n in plan.teachers_used()} - {None, ""}
    env = {v: os.environ[v] for v in sorted(names) if os.environ.get(v)}
    spec = plan.spec
    if spec.source.rows:  # workers read prompts from the prompt store: inline rows would only be
        # pickled once and unpickled by every worker each run (190 KB, ~13 ms each for 2,000 rows)
        spec = spec.model_copy(update={"source": spec.source.model_copy(update={"rows": []})})
    # the spec's class is made at run time (PipelineSpec over the registered kinds): pickled, it
    # would travel by value and every worker would build its pydantic schema again each run
    # (~4 ms); its state travels instead, put back into the worker's own class of the same name
    return {"spec": spec.__getstate__(), "graph": plan.graph, "base_dir": plan.base_dir, "objects": dict(plan.objects),
            "source": plan.source, "kinds": {name: registry.get(name) for name in used}, "env": env}


def _unbox(box: dict) -> Plan:
    known = registry.kinds()
    for name, kind in box["kinds"].items():
        if name not in known:
            registry.register(kind)
    from distillflow.spec.models import pipeline_spec_class

    cls = pipeline_spec_class()
    spec = cls.__new__(cls)
    spec.__setstate__(box["spec"])
    return Plan(spec, box["graph"], Path(box["base_dir"]), MappingProxyType(box["objects"]), source=box["source"])


# -- the permit hub (one actor) --------------------------------------------------------------------
LEASE_TTL_S = 6.0
_HUBS: dict = {}  # (job id, driver node id) -> the job's permit hub (held here: an actor without handles ends)


def permit_hub(ray, fresh: bool = False):
    """The job's permit hub: an actor on this (the driver's) node, started by the job's first run
    and reused by its later ones (it ends with the job)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    rt = ray.get_runtime_context()
    key = (rt.get_job_id(), rt.get_node_id())
    if fresh or key not in _HUBS:
        _HUBS.clear()
        _HUBS[key] = ray.remote(PermitHub).options(
            num_cpus=0, max_restarts=0, max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=key[1], soft=True)).remote()
    return _HUBS[key]


# -- model copies of local-model teachers (engine/model_copies.py) -----------------------------------
# (cluster, job id, teacher state as JSON, gpus per copy) -> the copies' actor handles; the cluster
# is the driver's node id: a Ray instance started anew (by a later run without `address`) numbers
# its jobs from 1 again
_COPIES: dict = {}
COPY_RETRIES = 2  # a copy whose process or node dies is started again (and its call sent again) this often
COPY_START_TIMEOUT_S = float(os.environ.get("DISTILLFLOW_COPY_START_TIMEOUT_S", "1800"))
# a copy kept from an earlier run that has been generating one batch longer than this is taken for
# stuck (a hung GPU call): the next run drops it and starts a new one
COPY_STUCK_S = float(os.environ.get("DISTILLFLOW_COPY_STUCK_S", "1800"))


def _copy_gpus(teacher, cluster_gpus: float) -> float:
    """GPUs each copy reserves: as written, else 1 where the cluster has GPUs and the model runs on
    one (vLLM always does; transformers where ``device`` names cuda: it loads on the CPU otherwise)."""
    if teacher.gpus_per_copy is not None:
        return float(teacher.gpus_per_copy)
    if cluster_gpus < 1:
        return 0.0
    if teacher.provider == "vllm":
        return 1.0
    return 1.0 if (teacher.device or "").lower().startswith("cuda") else 0.0


def check_gpu_fit(wanted: dict, gpus: dict, cluster_gpus: float, node_gpus: list[float]) -> None:
    """Refuse (ConfigurationError, with the fix) copies the cluster cannot place: more GPUs in all
    than it has, or more per copy than its largest node has (Ray would wait for them forever)."""
    have = f"{cluster_gpus:g} GPU" + ("" if cluster_gpus == 1 else "s")
    total = sum(gpus[n] * t.copies for n, t in wanted.items())
    if total > cluster_gpus:
        asks = ", ".join(f"'{n}' {t.copies} x {gpus[n]:g}" for n, t in wanted.items() if gpus[n])
        raise ConfigurationError(
            f"the teachers' model copies ask for {total:g} GPUs ({asks}) and the cluster has {have}: lower copies or "
            "gpus_per_copy (a fraction such as 0.5 puts two transformers copies on one GPU), give gpus_per_copy: 0 "
            "to run the copies on CPU, or add GPU nodes")
    largest = max(node_gpus, default=0.0)
    for n, t in wanted.items():
        if gpus[n] > largest:
            raise ConfigurationError(
                f"teacher '{n}': a model copy asks for {gpus[n]:g} GPUs and the largest node has {largest:g}: a copy "
                "runs on one node; lower gpus_per_copy")


_COPY_ACTORS: list = []  # the model copy's Ray actor class, made once per process


def _copy_actor(ray):
    """The model copy as a Ray actor class that also says where it runs. Its ``info`` runs in a
    concurrency group of its own (one thread beside the batches' one), so a copy answers it at once
    even while it generates a long batch: a later run checking the copies it reuses (:func:`_alive`)
    does not take a busy copy for a dead one. Its batches still run one at a time, in the order sent.
    Made once per process, as :func:`_shard_task` (Ray exports it again when the cluster or job changes)."""
    if not _COPY_ACTORS:
        class _RayModelCopy(ModelCopy):
            @ray.method(concurrency_group="status")
            def info(self) -> dict:
                return {**super().info(), "node": ray.get_runtime_context().get_node_id(),
                        "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

        _COPY_ACTORS.append(ray.remote(concurrency_groups={"status": 1})(_RayModelCopy))
    return _COPY_ACTORS[0]


async def _alive(handles: list) -> bool:
    """Whether every copy answers, has its model and is not stuck in one batch for longer than
    ``COPY_STUCK_S`` (a copy answers while it generates a batch: :func:`_copy_actor`; the 30 s limit
    is for a copy that cannot answer at all)."""
    try:
        infos = await asyncio.wait_for(asyncio.gather(*(h.info.remote() for h in handles)), 30)
    except BaseException:
        return False
    return not any(i.get("error") or i.get("busy_s", 0.0) > COPY_STUCK_S for i in infos)


async def start_copies(ray, plan, reporter=None, env: dict | None = None) -> dict:
    """``{teacher name: [actor handle, ...]}``: the model copies of the run's local-model teachers
    that ask for them, started and loaded (or the same job's earlier ones for the same teacher, when
    they all still answer). ``env``: variables a copy sets where its node lacks them (API keys)."""
    wanted = copies_wanted(plan)
    rt = ray.get_runtime_context()
    where = (rt.get_node_id(), rt.get_job_id())
    keys, states = {}, {}
    if wanted:
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        gpus = {n: _copy_gpus(t, cluster_gpus) for n, t in wanted.items()}
        node_gpus = [float((nd.get("Resources") or {}).get("GPU", 0)) for nd in ray.nodes() if nd.get("Alive")]
        check_gpu_fit(wanted, gpus, cluster_gpus, node_gpus)  # (before any copy starts)
        states = {n: t.model_dump(mode="json") for n, t in wanted.items()}
        keys = {n: (*where, json.dumps(states[n], sort_keys=True), gpus[n]) for n in wanted}
    for key in [k for k in _COPIES if k not in keys.values()]:  # other teachers', other jobs' (or none wanted)
        _drop_copies(ray, key)
    for key in [k for k in keys.values() if k in _COPIES]:  # an earlier run's: kept only if all answer
        if not await _alive(_COPIES[key]):
            _drop_copies(ray, key)
    say = reporter.message if reporter is not None else (lambda text: None)
    fresh = [n for n in wanted if keys[n] not in _COPIES]
    try:
        for name in fresh:
            t, key = wanted[name], keys[name]
            actor = _copy_actor(ray).options(
                num_cpus=0, num_gpus=key[-1], max_restarts=COPY_RETRIES, max_task_retries=COPY_RETRIES,
                scheduling_strategy="SPREAD")
            _COPIES[key] = [actor.remote(states[name], env or {}) for _ in range(t.copies)]
        for name in fresh:  # each copy loads its model once; wait until they all have
            await _wait_loaded(name, wanted[name], _COPIES[keys[name]], keys[name][-1], say)
    except BaseException:  # (Ctrl-C included) copies not known to be loaded are not kept for a later run
        for name in fresh:
            _drop_copies(ray, keys[name])
        raise
    return {n: _COPIES[keys[n]] for n in wanted}


async def _wait_loaded(name: str, teacher, handles: list, gpus: float, say) -> None:
    t0 = time.perf_counter()
    say(f"teacher '{name}': starting {len(handles)} model copies of {teacher.model} ({gpus:g} GPU each)")
    try:
        infos = await asyncio.wait_for(asyncio.gather(*(h.info.remote() for h in handles)), COPY_START_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ConfigurationError(
            f"teacher '{name}': its {len(handles)} model copies did not all start within {COPY_START_TIMEOUT_S:g} s "
            "(the cluster has no free resources for them, or loading is slow): free GPUs, lower copies, or raise "
            "DISTILLFLOW_COPY_START_TIMEOUT_S") from None
    except Exception as exc:
        raise ConfigurationError(f"teacher '{name}': a model copy did not start: {_last_line(exc)}") from None
    failed = [i["error"] for i in infos if i.get("error")]
    if failed:
        raise ConfigurationError(f"teacher '{name}': its model copies could not load {teacher.model!r}: "
                                 f"{_one_line(failed[0])} (check the model path or id, "
                                 "and that every node can read it)")
    say(f"teacher '{name}': {len(handles)} model copies loaded in {time.perf_counter() - t0:.0f} s")


def forget_copies() -> None:
    """Forget every copy's handle (the Ray instance they ran in is being shut down)."""
    _COPIES.clear()


def _drop_copies(ray, key) -> None:
    for handle in _COPIES.pop(key, []):
        try:
            ray.kill(handle)
        except Exception:
            pass


def _last_line(exc: BaseException) -> str:
    """The root cause of an actor's failure, in one line (Ray wraps it with the actor's traceback)."""
    cause = _cause(exc)
    return _one_line(str(cause)) or type(cause).__name__


def _one_line(text: str) -> str:
    """The last non-empty line of ``text`` (where an error's own message sits), at most 500 characters."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""


async def copies_report(ray, copies: dict) -> dict:
    """``{teacher: [{pid, node, gpu_ids, load_s, batches, requests}, ...]}`` (cache/ray-workers.json)."""

    async def one(h) -> dict:
        try:
            return await asyncio.wait_for(h.info.remote(), 60)
        except Exception as exc:  # a copy that died with its node
            return {"error": _last_line(exc)}

    return {name: list(await asyncio.gather(*(one(h) for h in handles))) for name, handles in sorted(copies.items())}


def _limits(plan) -> dict:
    spec = plan.spec
    return {n: Limits(spec.teacher(n).concurrency, spec.teacher(n).rpm, spec.teacher(n).tpm)
            for n in sorted(plan.teachers_used())}


class WorkerContext(RunContext):
    """The StepContext of steps running under Ray (in a worker process, or global steps in the
    driver): the local engine's RunContext (cache first, one lane per teacher, the same ledger
    labels), whose lanes send requests from this process and hold a slot of the hub's for each."""

    def __init__(self, plan, out_dir: Path, cache, ledger: Ledger, hub, run_id: str, worker: str,
                 prompts_dir: str | None, shard_size: int, copies: dict | None = None, stop_mark: str | None = None):
        # a worker reports nothing: the driver counts progress from each shard's stats
        super().__init__(plan, Path(out_dir), cache, ledger, NullReporter(), None)
        self.hub, self.run_id, self.worker = hub, run_id, worker
        self.copies = dict(copies or {})  # teacher name -> its model copies' actor handles
        self.stop_mark = stop_mark  # (the run's STOP_MARK: a stopped run's batches queued on a copy are skipped)
        self._prompts_dir, self._shard_size = prompts_dir, shard_size
        self._limits = _limits(plan)
        self._budget = plan.spec.budget.max_cost_usd is not None

    def _prompt_store(self):
        if self.prompts is None:
            from distillflow.engine.prompts import PromptStore

            self.prompts = PromptStore(Path(self._prompts_dir), self.spec.source, self._shard_size)
        return self.prompts

    def heldout(self):
        if self._prompts_dir is None:
            return iter(())
        return self._prompt_store().heldout_rows()

    def source_shard(self, k: int) -> list[dict]:
        """Shard ``k``'s prompts, read from the run's prompt store (on storage every node sees)."""
        try:
            return self._prompt_store().shard(k)
        except FileNotFoundError:
            raise _not_shared(f"shard {k}: the run's prompt store ({self._prompts_dir}) is not visible to Ray worker {self.worker}") from None

    def client(self, teacher):
        if teacher.name in self.copies and teacher.name not in self._clients:  # (no model loaded here)
            from distillflow.engine.model_copies import RemoteModelClient

            self._clients[teacher.name] = RemoteModelClient(teacher, self.copies[teacher.name], self.stop_mark)
        if teacher.name not in self._clients:  # the hub owns the RPM/TPM buckets: none in the client
            from distillflow.engine.providers import build_client

            self._clients[teacher.name] = build_client(teacher.model_copy(update={"rpm": None, "tpm": None}))
        return self._clients[teacher.name]

    async def _exchange(self, **kw) -> dict:
        try:
            return await self.hub.exchange.remote(self.run_id, **kw)
        except Exception:  # the hub is gone (the run ended, or its driver died): send nothing more
            return {"slots": 0, "rate": 0, "wait": 0.0, "budget_hit": True, "held": 0}

    async def _renew(self) -> None:
        try:
            await self.hub.renew.remote(self.run_id, self.worker)
        except Exception:
            pass

    async def charge(self, cost: float) -> None:
        """The hub's budget count hears of answers paid for outside its permits (cached,
        replayed, from provider batches), as the local backend's ledger counts them: a rerun
        does not spend the cap again on top of what its cached answers cost."""
        if self._budget and cost > 0:
            try:
                await self.hub.charge.remote(self.run_id, cost)
            except Exception:  # the hub is gone: nothing more is granted anyway
                pass

    def _tripper(self, teacher: str):
        async def trip(reason, error):
            try:
                await self.hub.trip.remote(self.run_id, worker=self.worker, teacher=teacher, reason=reason, error=error)
            except Exception:  # the hub is gone: the run is over anyway
                pass

        return trip

    def _watcher(self, teacher: str):
        async def watch(known, timeout):
            try:
                return await self.hub.watch.remote(self.run_id, self.worker, teacher, timeout, known)
            except Exception:  # the hub is gone: nothing to renew
                return None

        return watch

    def _new_lane(self, teacher):
        """An online teacher's lane, its requests sent under the hub's permits (a ``mode: batch``
        teacher's lane is the driver's batch lane: RunContext._lane)."""
        from distillflow.engine.lanes import Lane

        limits = self._limits.get(teacher.name) or Limits(teacher.concurrency, teacher.rpm, teacher.tpm)
        # slots linger a while between shards (the next task's requests come soon): a worker
        # that wants them meanwhile gets them through the watch at once
        gate = Gate(self._exchange, self.worker, teacher.name, limits, budget=self._budget,
                    ttl_s=LEASE_TTL_S, renew=self._renew, watch=self._watcher(teacher.name), linger_s=0.25,
                    trip=self._tripper(teacher.name))
        lane = Lane(teacher, self.client(teacher), self, gate=gate)
        gate.idle = lane.queue.empty
        breaker = getattr(lane.client, "breaker", None)
        if breaker is not None:  # an outage seen by any worker stops them all (engine/permits.py)
            gate.breaker, breaker.on_open = breaker, gate.trip
        return lane


# -- one worker process: a loop that outlives tasks (HTTP sessions, leases), one env per run ---------
_WORKER: dict = {"loop": None, "run": None, "env": None, "frozen": False}


def _freeze_imports() -> None:
    """Once per worker process, before its first run: move what the imports made (Ray, pyarrow,
    aiohttp, distillflow: ~140k objects that live as long as the process) out of the garbage
    collector's reach, so that a full collection during a run scans only what runs made. Without
    it each worker pays a full scan of them per run (~65 ms on a 2-core machine, more than the
    local backend pays for its one process: about 3% of a 2,000-record run)."""
    if _WORKER["frozen"]:
        return
    import distillflow.engine.lanes  # noqa: F401  (what every run imports: frozen with the rest)
    import distillflow.engine.providers  # noqa: F401

    gc.collect()  # (once per process: nothing collectable is frozen)
    gc.freeze()
    _WORKER["frozen"] = True


def _worker_loop() -> asyncio.AbstractEventLoop:
    if _WORKER["loop"] is None:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="distillflow-ray-loop", daemon=True).start()
        _WORKER["loop"] = loop
    return _WORKER["loop"]


def _worker_env(box_holder: list, hub, run_id: str, opts: dict, loop):
    """(WorkerContext, NodeRunner) of run ``run_id`` in this process (an earlier run's is closed)."""
    if _WORKER["run"] == run_id:
        return _WORKER["env"]
    import ray

    from distillflow.engine.cache import RequestCache, SharedCache, sibling_path
    from distillflow.engine.shards import ShardStore

    old = _WORKER["env"]
    if old is not None:
        _WORKER["run"] = _WORKER["env"] = None
        try:
            asyncio.run_coroutine_threadsafe(old[0].close(), loop).result(30)
        except Exception:
            pass
        old[0].cache.close()
        if old[0].prompts is not None:  # (the prompt store's SQLite connection: one per run otherwise)
            old[0].prompts.close()
    # the driver made this run's parts folder before its first task: a node that does not see it
    # does not see the run directory, and would otherwise make a cache folder of its own at that path
    if not Path(opts["parts_dir"]).is_dir():
        raise _not_shared(f"the run directory ({opts['out_dir']}) is not visible to the Ray worker with pid "
                          f"{os.getpid()} on {socket.gethostname()}")
    _freeze_imports()
    box = ray.get(box_holder[0])
    for var, value in box.get("env", {}).items():
        os.environ.setdefault(var, value)
    plan = _unbox(box)
    out = Path(opts["out_dir"])
    worker = f"{ray.get_runtime_context().get_node_id()[:8]}-{os.getpid()}-{run_id[:8]}"
    main = out / "cache" / "requests.sqlite"
    cache = SharedCache(RequestCache(sibling_path(main, worker), journal=opts["journal"]), main)
    ctx = WorkerContext(plan, out, cache, Ledger(None), hub, run_id, worker, opts["prompts_dir"], opts["shard_size"],
                        opts.get("copies"), str(Path(opts["parts_dir"]) / STOP_MARK))
    ctx.loop, ctx.attempt = loop, opts["attempt"]

    async def make():  # (asyncio locks and lanes belong to the loop)
        return NodeRunner(plan, ctx, ShardStore(out / "cache" / "shards"), opts["hashes"], opts["retry_errors"],
                          opts["retry_transient"])

    runner = asyncio.run_coroutine_threadsafe(make(), loop).result()
    _WORKER["run"], _WORKER["env"] = run_id, (ctx, runner)
    return ctx, runner


def _write_part(parts_dir: str, k: int, part) -> str:
    """``part`` pickled into a file of its own under ``parts_dir`` (a name no other attempt uses);
    its path, relative to ``parts_dir``."""
    import pickle

    name = f"{k:07d}-{uuid.uuid4().hex[:12]}.part"
    with open(Path(parts_dir) / name, "wb") as fh:
        pickle.dump(part, fh, protocol=5)
    return name


def _segment_task(box_holder: list, hub, run_id: str, opts: dict, k: int, nids: list, inputs: dict, keep: list,
                  read_source: bool = False, recomputed: tuple = ()):
    """A Ray task: steps ``nids`` of shard ``k``, each committed as it finishes. With ``read_source``
    it reads the shard's prompts from the prompt store itself; ``recomputed``: the steps of this
    shard computed anew earlier in this run (in the driver or other tasks). What goes to the outputs (each
    step's rejected rows, and the sink's rows when the sink is one of ``nids``) is rendered here
    into a :class:`~distillflow.engine.write.ShardPart` file in the run directory, which the driver
    appends; only the rows of ``keep`` (read by later steps in the driver) come back with the reply."""
    import ray

    from distillflow.engine.write import render_part

    loop = _worker_loop()
    ctx, runner = _worker_env(box_holder, hub, run_id, opts, loop)
    node = ray.get_runtime_context().get_node_id()
    sink = runner.plan.graph.sink

    async def go():
        ctx.ledger = Ledger(None)  # this task's usage, summed by the driver
        shard = _ShardState(recomputed=set(recomputed))
        _SHARD.set(shard)
        outputs = dict(inputs)
        if read_source:
            outputs[SOURCE] = (await asyncio.to_thread(ctx.source_shard, k), True)
        out = {"outputs": {}, "complete": {}, "stats": {}, "pid": os.getpid(), "node": node, "part": None}
        rejected, curated = {}, []
        try:
            for nid in nids:
                kept, rej, complete, stats = await runner.node(k, nid, outputs, shard)
                outputs[nid] = (kept, complete)
                rejected[nid], out["complete"][nid], out["stats"][nid] = rej, complete, stats
                if nid in keep:
                    out["outputs"][nid] = kept
                if nid == sink:
                    curated = kept
        finally:
            await asyncio.to_thread(ctx.cache.flush)  # the answers are on disk before the task ends
        if curated or any(rejected.values()):  # (off the loop: leases and watches keep running)
            out["part"] = await asyncio.to_thread(
                lambda: _write_part(opts["parts_dir"], k, render_part(curated, rejected)))
        out["ledger"], out["budget_hit"] = ctx.ledger.snapshot(), ctx.ledger.budget_hit
        out["worker"], out["replicas"] = ctx.worker, replica_manifest(ctx._clients)  # (this worker's, so far)
        return out

    def stop() -> None:
        ctx.stop_event.set()  # this run's lanes here send nothing more; requests in flight finish
        if fut is not None:
            try:
                fut.result(timeout=STRAGGLER_WAIT_S)
            except BaseException:
                pass

    # The driver also marks a stopping run in its parts folder before it cancels: Ray's cancel can
    # miss a task that is being handed to a worker as it comes (a test run once sent 16 requests, a
    # whole shard, after the failure; traces show the next queued shard starting on the freed CPU
    # within 1-3 ms of the cancels)
    stopping = Path(opts["parts_dir"]) / STOP_MARK
    fut = None
    try:
        if not stopping.exists():
            fut = asyncio.run_coroutine_threadsafe(go(), loop)
            while True:  # (waits of a quarter second: Ray's cancel interrupts this thread between them)
                try:
                    return fut.result(timeout=0.25)
                except concurrent.futures.TimeoutError:
                    if stopping.exists():
                        break
        stop()
        raise DistillflowError(f"shard {k}: the run stopped (a shard failed, or Ctrl-C)")
    except KeyboardInterrupt:  # ray.cancel from the driver: the run stops (a shard failed, Ctrl-C)
        stop()
        raise


_TASKS: list = []  # the shard task as a Ray remote function, made once per process


def _shard_task(ray):
    """:func:`_segment_task` as a Ray remote function. Made once per process: Ray exports a remote
    function to the cluster on its first call in each job (it pickles it and disassembles its code
    for a collision check, ~20 ms of the driver's CPU under a profiler), and a new one made
    for every run was exported again by every run of the same job.
    SPREAD: shard tasks go round the nodes. With Ray's default (pack where the arguments are, reuse
    a finished task's worker for the next) one node of two ran 0-7 of a run's 24 shards in 11 of 40
    runs; with SPREAD at least 10 in each of 40 (benchmark endpoint)."""
    if not _TASKS:
        _TASKS.append(ray.remote(num_cpus=1, max_retries=TASK_RETRIES, scheduling_strategy="SPREAD")(_segment_task))
    return _TASKS[0]


def _touch(mark: Path) -> None:
    try:
        mark.touch()
    except OSError:  # (the run's parts folder is gone: it has ended)
        pass


async def _stop_task(ray, ref, mark: Path | None = None) -> None:
    """The run stops (another shard failed, Ctrl-C) while shard task ``ref`` runs. A Ray task goes
    on when the coroutine awaiting it is cancelled, and one left running would send requests beside
    the next run of the same command (answers paid twice). So ask Ray to stop it (one not started
    never starts; a running one hears a KeyboardInterrupt, and its worker stops sending:
    :func:`_segment_task`) and wait until it has (its requests in flight answered), at most
    ``STRAGGLER_WAIT_S``, as the local backend's shards end before its run does."""
    if mark is not None:  # (what a task that Ray's cancel misses finds: _segment_task)
        _touch(mark)
    try:
        ray.cancel(ref)
    except Exception:  # (it has ended, or the cluster is gone)
        pass

    async def wait():
        await ref

    try:
        await asyncio.wait_for(wait(), STRAGGLER_WAIT_S)
    except Exception:  # (its own failure or the wait's end: the run stops on its first error either way)
        pass


def merge_replicas(sections: list[dict]) -> dict:
    """One manifest ``replicas`` section from several processes' (each teacher's rows in base_url
    order): counters summed; a replica is resting or probing if it is so in any process."""
    out: dict = {}
    for section in sections:
        for name, rows in section.items():
            if name not in out:
                out[name] = [dict(r) for r in rows]
                continue
            for acc, row in zip(out[name], rows):
                for key, v in row.items():
                    if key in ("requests", "ok", "failed", "probes", "rests") and isinstance(v, (int, float)):
                        acc[key] = acc.get(key, 0) + v
                    elif key == "state" and v != "healthy":
                        acc[key] = v
                    elif key == "last_error" and v:
                        acc[key] = v
    return out


def _add_ledger(ledger: Ledger, snap: dict) -> None:
    with ledger._lock:
        for name, d in snap.items():
            s = ledger.teachers.setdefault(name, TeacherStats())
            for key, v in d.items():
                setattr(s, key, getattr(s, key) + v)


# -- the driver -------------------------------------------------------------------------------------
def _segments(nodes: list[str], where: dict) -> list[tuple[str, list[str]]]:
    """Consecutive steps that run in tasks form one task; each step that runs in the driver
    (``where``: "global", in shard order; "driver", a batch teacher's) stands alone."""
    segs: list[tuple[str, list[str]]] = []
    for n in nodes:
        if where[n] != "task":
            segs.append((where[n], [n]))
        elif segs and segs[-1][0] == "task":
            segs[-1][1].append(n)
        else:
            segs.append(("task", [n]))
    return segs


class RayExecutor(ExecutorBase):
    """Runs a plan's shards as Ray tasks; same constructor, ``run()`` and counters as LocalExecutor."""

    def __init__(self, plan, ctx: RunContext, prompts, store, writer, retry_errors: bool = False):
        super().__init__(plan, ctx, prompts, store, writer, retry_errors)
        self.workers: set[tuple] = set()  # (node id, pid) of the processes that ran tasks: cache/ray-workers.json
        self.node_shards: dict[str, int] = {}  # node id -> shard tasks it ran (the same record)
        self.worker_replicas: dict = {}  # worker -> its replica stats (the manifest's `replicas`, summed)
        self.hub_status: dict = {}

    def _where(self, scope: dict) -> dict:
        """Where each step runs: "global" (the driver, shard after shard), "driver" (a step that
        asks a ``mode: batch`` teacher: its requests are pooled into provider batches by the
        driver's batch lanes, which need no cluster), or "task" (any node)."""
        plan = self.plan
        where = {}
        for n in self.nodes:
            batch = any(_batch(plan.spec.teacher(t)) for t in plan.step_teachers(plan.step(n)))
            where[n] = "global" if scope[n] == "global" else "driver" if batch else "task"
        return where

    def _plan_segments(self, scope: dict) -> None:
        graph = self.plan.graph
        where = self._where(scope)
        self.segments = _segments(self.nodes, where)
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
        # the sink's rows are written by the driver only when it made them (a global step, or no step)
        self.sink_in_driver = graph.sink == SOURCE or where[graph.sink] != "task"
        # the driver reads a shard's prompts only where it needs them itself; tasks read their own
        self.driver_reads_source = graph.sink == SOURCE or any(
            SOURCE in self.reads[i] for i, (what, _) in enumerate(self.segments) if what != "task")

    def _stopping(self) -> bool:
        return super()._stopping() or bool(self.hub_status.get("budget_hit"))

    def outage_seen(self) -> Exception | None:
        """A breaker opened in any worker (the hub's word, updated as the run closed its hub) or in
        the driver's own steps."""
        tripped = self.hub_status.get("tripped")
        if tripped:
            return outage_of(*min(tripped.items()))
        local = getattr(self, "local", None)
        return _open_breaker(local.ctx._clients) if local is not None else None

    def _account(self, nid: str, st: dict) -> None:
        self._count(nid, st)
        rep = self.ctx.reporter
        rep.add_total(nid, st["units"])
        rep.advance(nid, st["units"], self.ctx.ledger.spent, cached=st["cached"])

    async def _shard(self, k: int, sem: asyncio.Semaphore) -> None:
        ray = self.ray
        sink = self.plan.graph.sink
        try:
            shard = _ShardState()
            _SHARD.set(shard)
            outputs: dict = {}
            if self.driver_reads_source:
                outputs[SOURCE] = (await asyncio.to_thread(self.prompts.shard, k), True)
            rejected: dict[str, list[dict]] = {}  # the global steps' (the tasks' are in their parts)
            parts: list[str] = []
            for i, (what, nids) in enumerate(self.segments):
                if what != "task":  # in the driver: a global step in shard order, a batch teacher's step
                    nid = nids[0]
                    if what == "global":
                        await self.turns[nid].wait(k)
                    try:
                        kept, rej, complete, st = await self.local.node(k, nid, outputs, shard)
                    finally:
                        if what == "global":
                            await self.turns[nid].done(k)
                    outputs[nid], rejected[nid] = (kept, complete), rej
                    self._count(nid, st)  # (its progress was reported as it ran: drv.reporter)
                else:
                    inputs = {p: outputs[p] for p in self.reads[i] if p != SOURCE}
                    keep = [n for n in nids if n in self.needed_after[i] and n != sink]
                    ref = self.task.remote(self.box_holder, self.hub, self.run_id, self.opts, k, nids, inputs, keep,
                                           SOURCE in self.reads[i], tuple(shard.recomputed))
                    try:
                        res = await ref
                    except asyncio.CancelledError:
                        await _stop_task(ray, ref, self.parts_dir / STOP_MARK)
                        raise
                    except ray.exceptions.RayError as e:
                        cause = _cause(e)
                        if isinstance(cause, OSError):
                            raise _on_worker(cause, e, self.opts["out_dir"]) from None
                        if isinstance(cause, DistillflowError) or not isinstance(cause, ray.exceptions.RayError):
                            raise cause from None
                        raise DistillflowError(
                            f"shard {k} failed on the Ray cluster after {TASK_RETRIES} retries: {str(cause).splitlines()[0]}. "
                            "Committed shards are kept: run the same command again to resume."
                        ) from None
                    self.workers.add((res["node"], res["pid"]))
                    self.node_shards[res["node"]] = self.node_shards.get(res["node"], 0) + 1
                    if res.get("replicas"):
                        self.worker_replicas[res["worker"]] = res["replicas"]
                    _add_ledger(self.ctx.ledger, res["ledger"])
                    if res["budget_hit"]:
                        self.ctx.ledger.budget_hit = True
                    if res["part"]:
                        parts.append(res["part"])
                    for nid in nids:
                        outputs[nid] = (res["outputs"].get(nid, []), res["complete"][nid])
                        self._account(nid, res["stats"][nid])
                        if not res["stats"][nid]["cached"]:
                            shard.recomputed.add(nid)
                for p in list(outputs):  # release what no later step reads
                    if p not in self.needed_after[i] and p != SOURCE:
                        outputs[p] = ([], outputs[p][1])
            if self.plan.spec.budget.max_cost_usd is not None:  # (spent by any worker: stop sending shards)
                self.hub_status = await self.hub.status.remote(self.run_id)
            await self._write_parts(k, outputs[sink][0] if self.sink_in_driver else [], rejected, parts)
        except BaseException:  # the run stops: what its processes still have queued on a model copy is
            _touch(self.parts_dir / STOP_MARK)  # skipped there (ModelCopy.generate)
            raise
        finally:
            sem.release()

    async def _write_parts(self, k: int, curated: list[dict], rejected: dict, parts: list[str]) -> None:
        """Shard k's outputs, in shard order: what the driver's global steps made, then the parts
        its tasks wrote (each read, appended and deleted)."""
        import pickle

        from distillflow.engine.write import render_part

        def write():
            if curated or any(rejected.values()):
                self.writer.add_part(render_part(curated, rejected))
            for name in parts:
                path = self.parts_dir / name
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    raise _not_shared(f"shard {k}: the output part a Ray worker wrote ({path}) is not visible to the driver") from None
                self.writer.add_part(pickle.loads(data))
                path.unlink()

        await self.write_turn.wait(k)
        try:
            await asyncio.to_thread(write)
        finally:
            await self.write_turn.done(k)

    async def run(self) -> None:
        ex = self.plan.spec.execution
        ray, connected = connect(ex.address)
        self.ray = ray
        try:
            await self._run(ray)
        finally:
            if connected:
                forget_copies()
                ray.shutdown()

    async def _run(self, ray) -> None:
        from distillflow.engine.cache import SharedCache

        # absolute: the workers' processes run elsewhere (a relative path would be read from their
        # own working directory, which is where `ray start` ran)
        plan, out = self.plan, Path(os.path.abspath(self.ctx.out_dir))
        prompts_dir = os.path.abspath(self.prompts.dir)
        self.run_id = uuid.uuid4().hex
        box = _box(plan)
        self.box_holder = [ray.put(box)]
        self.copies = await start_copies(ray, plan, self.ctx.reporter, box.get("env"))  # (before the hub: a copy that cannot start stops the run here)
        self.hub = permit_hub(ray)
        try:
            hub_pid = await self.hub.open.remote(self.run_id, _limits(plan), plan.spec.budget.max_cost_usd, LEASE_TTL_S)
        except ray.exceptions.RayActorError:  # the hub died (its node went away): a new one
            self.hub = permit_hub(ray, fresh=True)
            hub_pid = await self.hub.open.remote(self.run_id, _limits(plan), plan.spec.budget.max_cost_usd, LEASE_TTL_S)
        self.task = _shard_task(ray)
        shutil.rmtree(out / "cache" / "parts", ignore_errors=True)  # a killed run's (its shards are redone)
        self.parts_dir = out / "cache" / "parts" / self.run_id
        self.parts_dir.mkdir(parents=True)
        self.opts = {"out_dir": str(out), "prompts_dir": prompts_dir, "shard_size": self.prompts.shard_size,
                     "hashes": dict(self.hashes), "retry_errors": self.retry_errors,
                     "retry_transient": self.retry_transient, "parts_dir": str(self.parts_dir),
                     "attempt": self.ctx.attempt, "copies": self.copies,
                     "journal": self.ctx.cache.journal}  # (the main file's: engine/cache.py)
        cache = self.ctx.cache
        await asyncio.to_thread(cache.absorb)  # answers a killed run's workers left in their own files
        # global steps run here: teachers through the same hub, answers into the run's own file
        drv = WorkerContext(plan, out, SharedCache(cache, cache.path), self.ctx.ledger, self.hub, self.run_id,
                            f"driver-{os.getpid()}-{self.run_id[:8]}", prompts_dir, self.prompts.shard_size,
                            self.copies, str(self.parts_dir / STOP_MARK))
        drv.loop = asyncio.get_running_loop()
        drv.stop_event, drv.attempt = self.ctx.stop_event, self.ctx.attempt
        # the driver's own steps report live, as on the local backend: a batch teacher's pooled
        # requests count when their answers come in, not when the step hands them to the pool
        drv.reporter = self.ctx.reporter
        drv.batch_lanes = self.ctx.batch_lanes  # (kept across the run's passes)
        self.local = NodeRunner(plan, drv, self.store, self.hashes, self.retry_errors, self.retry_transient)
        self._plan_segments(self.local.scope)
        try:
            self.hub_status = await self.hub.status.remote(self.run_id)
            await self._all_shards()
            if drv.batch_lanes:  # every shard has asked: submit what the batch lanes pooled
                await self._submit_pooled(drv.batch_lanes)
        finally:
            try:
                await drv.close()
                self.replicas = merge_replicas([*self.worker_replicas.values(), replica_manifest(drv._clients)])
            finally:
                drv.cache.close(own=False)
                await self._close_hub(ray)
                await asyncio.to_thread(cache.absorb)  # every worker's answers into requests.sqlite
                shutil.rmtree(out / "cache" / "parts", ignore_errors=True)
                record = {"nodes": sorted({n for n, _ in self.workers}), "workers": sorted(self.workers),
                          "cache_journal": self.opts["journal"],
                          "shards_per_node": dict(sorted(self.node_shards.items())),
                          "hub_pid": hub_pid, "hub_calls": self.hub_status.get("calls"),
                          "hub_watch_calls": self.hub_status.get("watches"),
                          "longest_permit_wait_s": self.hub_status.get("longest_wait_s"),
                          "expired_leases": self.hub_status.get("expired"),
                          "tripped": self.hub_status.get("tripped") or {},
                          "model_copies": await copies_report(ray, self.copies)}
                (out / "cache" / "ray-workers.json").write_text(json.dumps(record, indent=1) + "\n")
        tripped = self.hub_status.get("tripped")
        if tripped:  # (a task raises the outage as a rule; should none have, the run still does not
            # end as complete with the requests its workers did not send)
            raise outage_of(*min(tripped.items()))

    async def _submit_pooled(self, lanes) -> None:
        """Submit the batch requests the shards pooled, unless a teacher tripped meanwhile: the run
        then stops on that outage (raised as it closes) and its rerun submits them, as on the local
        backend, where the shard that saw the outage raises before the flush. Only the hub may know
        of the trip (a worker's breaker opened, no task raised), so it is asked first."""
        self.hub_status = await self.hub.status.remote(self.run_id)
        if not self.hub_status.get("tripped"):
            await lanes.flush()

    async def _close_hub(self, ray) -> None:
        try:
            final = await self.hub.close.remote(self.run_id)
        except Exception:  # the hub died with its node
            final = None
        if final is None:
            return
        self.hub_status = final
        if final["budget_hit"]:
            self.ctx.ledger.budget_hit = True
