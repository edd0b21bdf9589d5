"""The Ray backend's surface without a cluster: spec and flags, the message when Ray is missing,
the local backend never importing Ray, and how a plan splits into Ray tasks and driver steps.
The cluster itself is exercised in tests/integration/test_ray_cluster.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import distillflow
from distillflow.engine.client import ChatRequest, ChatResult
from distillflow.errors import ConfigurationError, MissingDependencyError, SpecError, UsageError
from tests.support import one_teacher_yaml, pipeline_yaml

ROOT = Path(__file__).resolve().parents[2]
STEPS = "  - kind: generate\n  - kind: dedup\n  - kind: filter\n    where: \"len(response) > 1\"\n"


def test_execution_accepts_ray_and_address(write_yaml):
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS, extra="execution: {backend: ray, address: auto}"))
    ex = distillflow.load(p).spec.execution
    assert (ex.backend, ex.address) == ("ray", "auto")
    assert "address: auto" in distillflow.load(p).spec.to_yaml()


def test_address_without_ray_backend_is_an_error_naming_the_fix(write_yaml):
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS, extra="execution: {address: auto}"))
    with pytest.raises(SpecError) as e:
        distillflow.load(p)
    assert "execution" in str(e.value) and "address is only used by backend: ray" in str(e.value)


def test_unknown_backend_override_names_the_choices(write_yaml):
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    with pytest.raises(UsageError) as e:
        distillflow.run(p, backend="spark", progress=False)
    assert str(e.value) == "backend 'spark' is not one of: local, ray"
    with pytest.raises(UsageError, match=r"backend 'RAY' is not one of: local, ray \(did you mean 'ray'\?\)"):
        distillflow.run(p, backend="RAY", progress=False)


@pytest.mark.parametrize("args, expected", [
    (["--backend", "spark"], "error: backend 'spark' is not one of: local, ray\n"),
    (["--backend", "local", "--address", "10.0.0.5:6379"],
     "error: address '10.0.0.5:6379' is for the Ray backend; backend local runs in this process: drop the address, "
     "or use backend ray\n"),
    (["--address", ""], "error: the Ray address is empty: give auto, HOST:PORT or ray://HOST:10001, or leave it out "
                        "(backend ray then joins RAY_ADDRESS or the cluster started on this machine, or starts one)\n"),
    (["--address", "10.0.0.5"], "error: the Ray address '10.0.0.5' is not HOST:PORT (e.g. 10.0.0.5:6379 or "
                                "[fd00::5]:6379), auto or ray://HOST:10001\n"),
])
def test_cli_execution_flags_that_make_no_sense_are_usage_errors(write_yaml, tmp_path, args, expected):
    # exit 2 (usage), one line naming the fix, before anything is made
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    r = _cli(["run", str(p), "--out", str(tmp_path / "run"), "--no-progress", *args])
    assert (r.returncode, r.stderr) == (2, expected), r.stderr
    assert not (tmp_path / "run").exists()


def test_an_empty_address_in_yaml_is_refused(write_yaml):
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS, extra="execution: {backend: ray, address: ''}"))
    with pytest.raises(SpecError, match="address is empty"):
        distillflow.load(p)


def test_an_address_where_nothing_answers_fails_in_seconds_naming_the_fix(write_yaml, tmp_path):
    """Ray itself retries such an address ~14 minutes (20 tries of ~40 s) before it gives up; the
    driver checks that HOST:PORT accepts a connection first. A port nothing listens on: a real
    socket, bound to take a free port, closed again."""
    import socket
    import time

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    t0 = time.monotonic()
    r = _cli(["run", str(p), "--out", str(tmp_path / "run"), "--no-progress", "--address", f"127.0.0.1:{port}"],
             env={"DISTILLFLOW_RAY_CONNECT_WAIT_S": "2"})
    took = time.monotonic() - t0
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith(f"distillflow: nothing answers at 127.0.0.1:{port} yet: waiting up to 2 s for the Ray head "
                               "to start\n"), r.stderr
    assert (f"error: cannot connect to the Ray cluster at 127.0.0.1:{port}: nothing answers there (Connection refused). "
            "Check the host and port") in r.stderr, r.stderr
    assert "ray start --head" in r.stderr and "Traceback" not in r.stderr
    assert took < 120, took  # (a Python start, an import of Ray, 2 s; Ray's own retries take ~14 minutes)
    r = _cli(["run", str(p), "--out", str(tmp_path / "run"), "--no-progress", "--address", "no-such-host.invalid:6379"])
    assert r.returncode == 1 and "the host name 'no-such-host.invalid' does not resolve" in r.stderr, r.stderr


def test_a_url_run_directory_is_refused_before_anything_is_made(write_yaml, tmp_path):
    # s3:// and the like are not supported (README): a clear usage error, not pyarrow's traceback
    # and a folder named "s3:" in the working directory
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    r = _cli(["run", str(p), "--out", "s3://bucket/run", "--no-progress"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: the run directory 's3://bucket/run' is a URL: a run directory is a path on a "
                               "filesystem (s3:// and other URLs are not supported). Give a path on this machine's disk"), r.stderr
    assert list(tmp_path.iterdir()) == [] or not (tmp_path / "s3:").exists()
    q = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS, extra="output: {dir: 'gs://bucket/runs/x'}"))
    with pytest.raises(SpecError, match=r"output.dir 'gs://bucket/runs/x' is a URL"):
        distillflow.load(q)


def _cli(args: list[str], cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distillflow", *args], capture_output=True, text=True, cwd=str(cwd),
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})), timeout=300)


def test_overrides_replace_execution_only():
    from distillflow.api import with_execution

    spec_yaml = pipeline_yaml("http://127.0.0.1:9/v1", STEPS, extra="execution: {shard_size: 7}")
    import tempfile

    d = Path(tempfile.mkdtemp())
    (d / "p.yaml").write_text(spec_yaml)
    plan = distillflow.load(d / "p.yaml")
    ray_plan = with_execution(plan, address="10.0.0.1:6379")
    assert ray_plan.spec.execution.model_dump() == {"backend": "ray", "address": "10.0.0.1:6379", "shard_size": 7,
                                                    "shards_in_flight": 4}
    assert with_execution(ray_plan, backend="local").spec.execution.address is None
    assert plan.spec.execution.backend == "local"  # the original plan is not changed
    assert with_execution(plan) is plan


def test_missing_ray_fails_before_any_work_with_the_install_command(write_yaml, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS, extra="execution: {backend: ray}"))
    with pytest.raises(MissingDependencyError) as e:
        distillflow.run(p, out=tmp_path / "run", progress=False)
    assert "pip install 'distillflow[ray]'" in str(e.value)
    assert "execution.backend: local" in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing was started, nothing to lose


def test_cli_missing_ray_exit_code_and_message(write_yaml, tmp_path):
    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    code = ("import sys; sys.modules['ray'] = None; from distillflow.cli import main; "
            f"sys.argv = ['distillflow', 'run', {str(p)!r}, '--out', {str(tmp_path / 'run')!r}, '--backend', 'ray', '--no-progress']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert r.returncode == 1
    assert "error: execution.backend 'ray' needs Ray" in r.stderr
    assert "pip install 'distillflow[ray]'" in r.stderr
    assert "Traceback" not in r.stderr


def test_local_backend_never_imports_ray(endpoint, write_yaml, tmp_path):
    p = write_yaml(pipeline_yaml(endpoint.base_url, STEPS))
    code = ("import sys, json, distillflow; "
            f"r = distillflow.run({str(p)!r}, out={str(tmp_path / 'run')!r}, progress=False); "
            "print(json.dumps([r.manifest['curated'], 'ray' in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [4, False]


def test_segments_put_global_steps_in_the_driver():
    from distillflow.engine.ray_executor import _segments

    where = {"generate": "task", "judge": "task", "best_of": "task", "dedup": "global", "filter": "task"}
    assert _segments(list(where), where) == [("task", ["generate", "judge", "best_of"]), ("global", ["dedup"]),
                                             ("task", ["filter"])]
    assert _segments(["dedup"], {"dedup": "global"}) == [("global", ["dedup"])]
    # a batch teacher's step stands alone in the driver; the stretches around it stay tasks
    where = {"generate": "task", "judge": "driver", "verify": "driver", "filter": "task"}
    assert _segments(list(where), where) == [("task", ["generate"]), ("driver", ["judge"]), ("driver", ["verify"]),
                                             ("task", ["filter"])]


def test_steps_asking_a_batch_teacher_run_in_the_driver(write_yaml, tmp_path):
    """RayExecutor._where: a step with a mode: batch teacher runs in the driver, others where their scope says."""
    import distillflow as df
    from distillflow.engine.ray_executor import RayExecutor

    path = write_yaml("""name: w
source: {kind: inline, columns: {prompt: q}, rows: [{q: a}]}
teachers:
  - {name: online, provider: openai, base_url: "http://127.0.0.1:9/v1", model: m}
  - {name: cheap, provider: openai, base_url: "http://127.0.0.1:9/v1", model: m, mode: batch}
steps:
  - {kind: generate, teachers: [online]}
  - {kind: judge, teacher: cheap}
  - {kind: dedup, columns: [prompt]}
  - {kind: filter, where: "judge_score >= 3"}
""")
    plan = df.compile(str(path))
    ex = RayExecutor.__new__(RayExecutor)
    ex.plan, ex.nodes = plan, [n for n in plan.graph.order if n != "source"]
    scope = {n: ("global" if n == "dedup" else "row") for n in ex.nodes}
    assert ex._where(scope) == {"generate": "task", "judge": "driver", "dedup": "global", "filter": "task"}


def test_the_outage_a_ray_run_saw_is_the_hubs_word_or_the_drivers_breaker():
    """What a Ctrl-C during an outage records (engine/runner.py): the hub's trip, which the run
    reads back as it closes its hub; failing that, a breaker of the driver's own steps."""
    from types import SimpleNamespace

    from distillflow.engine.ray_executor import RayExecutor
    from distillflow.engine.scheduler import CircuitBreaker

    ex = RayExecutor.__new__(RayExecutor)
    ex.hub_status = {}
    assert ex.outage_seen() is None  # before the driver's runner exists
    breaker = CircuitBreaker("judge", failures_in_a_row=2)
    ex.local = SimpleNamespace(ctx=SimpleNamespace(_clients={"judge": SimpleNamespace(breaker=breaker)}))
    assert ex.outage_seen() is None
    breaker.record(False, "HTTP 503")
    breaker.record(False, "HTTP 503")
    assert "teacher 'judge' looks down: 2 requests in a row failed" in str(ex.outage_seen())
    ex.hub_status = {"tripped": {"gen": {"worker": "n1-42-run", "reason": "6 requests in a row failed after their retries",
                                         "error": "HTTP 500: down"}}}
    seen = str(ex.outage_seen())
    assert "teacher 'gen' looks down: 6 requests in a row failed after their retries in" in seen
    assert "n1-42-run" in seen and "HTTP 500: down" in seen


def test_pooled_batch_requests_are_not_submitted_once_the_hub_saw_a_trip():
    """On Ray a worker's breaker can open without any task raising; the hub then holds the only
    record. The driver asks it before submitting the pooled batch: a tripped run stops on the
    outage and leaves its batch requests to the rerun, as the local backend does."""
    import asyncio
    from types import SimpleNamespace

    from distillflow.engine.ray_executor import RayExecutor

    flushed = []
    status = {}

    async def hub_status(run):
        assert run == "run-1"
        return dict(status)

    async def flush():
        flushed.append(True)

    ex = RayExecutor.__new__(RayExecutor)
    ex.run_id, ex.hub = "run-1", SimpleNamespace(status=SimpleNamespace(remote=hub_status))
    lanes = SimpleNamespace(flush=flush)
    asyncio.run(ex._submit_pooled(lanes))
    assert flushed == [True]
    status["tripped"] = {"gen": {"worker": "n1-42-run", "reason": "6 requests in a row failed", "error": "HTTP 500"}}
    asyncio.run(ex._submit_pooled(lanes))
    assert flushed == [True]  # not submitted again
    assert "teacher 'gen' looks down" in str(ex.outage_seen())


def test_plan_box_ships_python_registered_kinds(write_yaml):
    """A kind registered from Python in the driver exists in a worker only if shipped with the plan."""
    import cloudpickle

    from distillflow.engine.ray_executor import _box, _unbox

    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    plan = distillflow.load(p)
    box = cloudpickle.loads(cloudpickle.dumps(_box(plan)))
    assert sorted(box["kinds"]) == ["dedup", "filter", "generate"]
    again = _unbox(box)
    assert again.graph.order == plan.graph.order
    # an inline source's rows stay in the driver (workers read the prompt store); the rest is the plan's
    assert plan.spec.source.rows and again.spec.source.rows == []
    assert again.spec.model_copy(update={"source": plan.spec.source}).to_yaml() == plan.spec.to_yaml()


def test_plan_box_ships_the_specs_state_not_its_run_time_class(write_yaml, tmp_path):
    """The spec's class is built at run time over the registered kinds (PipelineSpec with their
    union): pickled, it travelled by value and every worker rebuilt its pydantic schema each run
    (~4 ms, and 61 KB of a 3 KB box). The state travels; a fresh process puts it back into its
    own class, as a Ray worker does."""
    import subprocess
    import sys

    import cloudpickle

    from distillflow.engine.ray_executor import _box

    p = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS))
    plan = distillflow.load(p)
    data = cloudpickle.dumps(_box(plan))
    assert b"_make_skeleton_class" not in data  # (how cloudpickle ships a class by value)
    (tmp_path / "box.pkl").write_bytes(data)
    code = ("import pickle, sys; from distillflow.engine.ray_executor import _unbox; "
            "plan = _unbox(pickle.loads(open(sys.argv[1], 'rb').read())); "
            "print(type(plan.spec).__name__, [s.id for s in plan.spec.steps]); print(plan.spec.to_yaml(), end='')")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "box.pkl")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    head, _, text = out.stdout.partition("\n")
    assert head == f"PipelineSpec {[s.id for s in plan.spec.steps]}"
    shipped = plan.spec.model_copy(update={"source": plan.spec.source.model_copy(update={"rows": []})})
    assert text == shipped.to_yaml()


def test_replica_stats_of_several_workers_are_summed():
    from distillflow.engine.ray_executor import merge_replicas

    a = {"t": [{"url": "u1", "state": "healthy", "requests": 3, "ok": 3, "failed": 0, "probes": 0, "rests": 0,
                "last_error": None},
               {"url": "u2", "state": "resting", "requests": 2, "ok": 0, "failed": 2, "probes": 1, "rests": 1,
                "last_error": "HTTP 503"}]}
    b = {"t": [{"url": "u1", "state": "healthy", "requests": 4, "ok": 4, "failed": 0, "probes": 0, "rests": 0,
                "last_error": None},
               {"url": "u2", "state": "healthy", "requests": 1, "ok": 1, "failed": 0, "probes": 0, "rests": 0,
                "last_error": None}]}
    got = merge_replicas([a, b, {}])
    assert [r["requests"] for r in got["t"]] == [7, 3]
    assert got["t"][1]["state"] == "resting" and got["t"][1]["last_error"] == "HTTP 503"
    assert got["t"][1]["failed"] == 2 and got["t"][0]["url"] == "u1"
    assert a["t"][0]["requests"] == 3  # inputs untouched


def test_a_part_the_driver_cannot_see_names_shared_storage_and_the_written_parts_go(tmp_path):
    """The driver appends the parts its workers wrote, deletes each, and says what to fix when one is
    not on its storage (a run directory that is not shared). No Ray needed: the writer step alone."""
    import asyncio
    import pickle

    from distillflow.engine.ray_executor import RayExecutor, _write_part
    from distillflow.engine.runner import _Turns
    from distillflow.engine.write import OutputWriter, render_part

    ex = RayExecutor.__new__(RayExecutor)
    ex.parts_dir = tmp_path / "parts"
    ex.parts_dir.mkdir()
    ex.writer = OutputWriter(tmp_path / "run", ["filter"])
    ex.write_turn = _Turns()
    name = _write_part(str(ex.parts_dir), 0, render_part([{"id": "a"}], {"filter": [{"id": "b"}]}))
    assert pickle.loads((ex.parts_dir / name).read_bytes()).n_curated == 1
    asyncio.run(ex._write_parts(0, [{"id": "g"}], {}, [name]))  # the driver's own rows first, then the part
    assert not (ex.parts_dir / name).exists()
    assert ex.writer.counts == {"curated": 2, "rejected": 1, "heldout": 0}
    with pytest.raises(ConfigurationError, match="storage every node sees"):
        asyncio.run(ex._write_parts(1, [], {}, ["0000001-gone.part"]))
    ex.writer.close()
    assert (ex.writer.tmp / "curated.jsonl").read_text() == '{"id":"g"}\n{"id":"a"}\n'


def test_a_prompt_store_a_worker_cannot_see_names_shared_storage(tmp_path):
    from types import SimpleNamespace

    from distillflow.engine.ray_executor import WorkerContext

    ctx = WorkerContext.__new__(WorkerContext)
    ctx.prompts, ctx._prompts_dir, ctx._shard_size, ctx.worker = None, str(tmp_path / "not-here"), 10, "n1-42-run"
    ctx.spec = SimpleNamespace(source=None)
    with pytest.raises(ConfigurationError, match=r"not visible to Ray worker n1-42-run.*storage every node sees"):
        ctx.source_shard(0)


def test_a_worker_that_cannot_see_the_run_directory_says_so_and_leaves_nothing_behind(tmp_path, monkeypatch):
    """A node without the shared filesystem: the worker refuses before it opens its request cache,
    which would otherwise make ``cache/`` at the run directory's path on that node's own disk.
    (No cluster needed: the check comes before the worker's first call into Ray, which is stubbed
    to fail here: a real ``ray.get`` outside a cluster would start a Ray instance of its own.)"""
    ray = pytest.importorskip("ray")
    from distillflow.engine.ray_executor import _WORKER, _worker_env

    def no_ray(*a, **k):
        raise AssertionError("the worker went on to Ray without checking the run directory")

    monkeypatch.setattr(ray, "get", no_ray)
    monkeypatch.setattr(ray, "get_runtime_context", no_ray)

    out = tmp_path / "run"  # as on a node that does not see it: nothing at that path
    opts = {"out_dir": str(out), "parts_dir": str(out / "cache" / "parts" / "r1"), "journal": "wal"}
    monkeypatch.setitem(_WORKER, "run", None)  # (no earlier run's env in this process to close)
    monkeypatch.setitem(_WORKER, "env", None)
    with pytest.raises(ConfigurationError, match=r"run directory \(.*run\) is not visible to the Ray worker with pid "
                                                 r"\d+ on .*storage every node sees"):
        _worker_env([None], None, "r1", opts, None)
    assert not out.exists()


def test_a_refusal_for_want_of_a_token_is_told_apart_from_a_cluster_that_is_not_there():
    """connect() retries with the token (and otherwise names the fix) only when Ray's refusal is an
    authentication error, which Ray wraps: ConnectionError <- RuntimeError <- AuthenticationError."""
    from ray.exceptions import AuthenticationError

    from distillflow.engine.ray_executor import _auth_failure

    def chain(inner: BaseException) -> ConnectionError:
        try:
            try:
                raise inner
            except BaseException as e:
                raise RuntimeError("Failed to connect to GCS") from e
        except RuntimeError as e:
            try:
                raise ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379") from e
            except ConnectionError as outer:
                return outer

    assert _auth_failure(chain(AuthenticationError("RPC error: InvalidAuthToken: Authentication token is missing")))
    assert not _auth_failure(chain(TimeoutError("Timed out while waiting for GCS to become available")))
    assert not _auth_failure(ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6379"))


def _refusal(cls):
    """What ray.init raises when a cluster refuses a driver: ConnectionError from its cause."""
    try:
        raise cls("RPC error: InvalidAuthToken: Authentication token is missing or incorrect")
    except Exception as cause:
        err = ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6399")
        err.__cause__ = cause
        return err


def _stub_init(monkeypatch, ray, outcomes: list, calls: list) -> None:
    """ray.init stubbed: each call records its address and raises the next of ``outcomes`` (None: joins)."""
    def init(**kw):
        calls.append(kw["address"])
        out = outcomes.pop(0)
        if out is not None:
            raise out

    monkeypatch.setattr(ray, "init", init)


def test_connect_joins_again_with_the_token_only_after_a_refusal_for_want_of_one(monkeypatch, capsys):
    """ray.init stubbed (a cluster with token authentication cannot start here without one; the real
    refusal and retry are tested on a cluster in tests/integration/test_ray_cluster.py)."""
    import ray
    from ray.exceptions import AuthenticationError

    from distillflow.engine import ray_executor as rx

    # (set, then deleted: monkeypatch then restores the variable as it was, whatever the steps below
    # and connect() itself do to it; a leaked RAY_AUTH_MODE=token broke every later cluster test)
    monkeypatch.setenv("RAY_AUTH_MODE", "unset-by-this-test")
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(rx, "_check_reachable", lambda address: None)  # (nothing listens: ray.init is stubbed)
    calls: list = []

    def token_on():
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what Ray's helper does when a token is here
        return True

    real_token_mode_on = rx._token_mode_on
    monkeypatch.setattr(rx, "_token_mode_on", token_on)

    # refused, then joined with the token: one retry, said on stderr
    outcomes = [_refusal(AuthenticationError), None]
    _stub_init(monkeypatch, ray, outcomes, calls)
    assert rx.connect("127.0.0.1:6399") == (ray, True)
    assert calls == ["127.0.0.1:6399"] * 2
    assert "requires its authentication token: joining again" in capsys.readouterr().err

    def refused(errors: list, match: str) -> int:
        """connect() against ``errors`` (one per ray.init call): the ConfigurationError and the calls made."""
        calls.clear()
        outcomes[:] = errors
        with pytest.raises(ConfigurationError, match=match):
            rx.connect("127.0.0.1:6399")
        return len(calls)

    # refused twice (the token here is not the cluster's): the message names the fix, token mode is undone
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert refused([_refusal(AuthenticationError)] * 2, r"requires Ray's authentication token.*RAY_AUTH_TOKEN") == 2
    assert "RAY_AUTH_MODE" not in os.environ
    # a cluster that is not there is not retried, and says how to start one
    assert refused([ConnectionError("Failed to connect to Ray cluster at 127.0.0.1:6399")], "Start one with `ray start --head`") == 1
    # RAY_AUTH_MODE=token and no token: Ray raises its AuthenticationError at once (no ConnectionError)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setattr(rx, "_token_mode_on", real_token_mode_on)  # (which leaves an explicit mode alone)
    assert refused([AuthenticationError("Token authentication is enabled but no authentication token was found")],
                   "requires Ray's authentication token") == 1
    # RAY_AUTH_MODE=disabled against a cluster that wants a token: the message says to unset it
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert refused([_refusal(AuthenticationError)], "unset RAY_AUTH_MODE") == 1


def _local_teacher_yaml(extra: str, provider: str = "transformers") -> str:
    return one_teacher_yaml(f"    provider: {provider}\n    model: some/model\n{extra}")


def test_model_copies_are_written_and_read_for_local_models(write_yaml):
    p = write_yaml(_local_teacher_yaml("    copies: 4\n    gpus_per_copy: 0.5"))
    t = distillflow.load(p).spec.teacher("t")
    assert (t.copies, t.gpus_per_copy) == (4, 0.5)
    assert "copies: 4" in distillflow.load(p).spec.to_yaml()
    # the Python front door takes the same fields
    teacher = distillflow.Teacher("t", provider="vllm", model="m", copies=2)
    assert (teacher.spec.copies, teacher.spec.gpus_per_copy) == (2, None)


@pytest.mark.parametrize("extra, provider, says", [
    ("    copies: 2", "vllm_server", "copies and gpus_per_copy are for local models"),
    ("    gpus_per_copy: 1", "transformers", "gpus_per_copy needs copies"),
    ("    copies: 0", "transformers", "copies"),
])
def test_model_copies_settings_that_cannot_work_are_refused_with_the_fix(write_yaml, extra, provider, says):
    base = "    base_url: http://127.0.0.1:9/v1\n" if provider == "vllm_server" else ""
    p = write_yaml(_local_teacher_yaml(base + extra, provider))
    with pytest.raises(SpecError) as e:
        distillflow.load(p)
    assert says in str(e.value)


def test_model_copy_batches_are_the_ones_the_local_client_forms():
    # same batches as SyncLLMClient.run, so a copy draws what the local backend's client draws
    from distillflow.engine.client import ChatRequest, run_coroutine_sync
    from distillflow.engine.distilabel_client import SyncLLMClient
    from distillflow.engine.distilabel_client import local_batches
    from tests.engine.test_client import FakeSyncLLM

    reqs = [ChatRequest(str(i), [{"role": "user", "content": f"p{i}"}], {"max_tokens": 9, "seed": i}) for i in range(5)]
    reqs += [ChatRequest("x", [{"role": "user", "content": "px"}], {"max_tokens": 3}),
             ChatRequest("y", [{"role": "user", "content": "py"}], {"max_tokens": 9})]
    llm = FakeSyncLLM()
    run_coroutine_sync(lambda: SyncLLMClient(llm, batch_size=2).arun(reqs, lambda r: None))
    got = list(local_batches(reqs, 2))
    assert [[r.key for r in b] for b in got] == [["0", "1"], ["2", "3"], ["4"], ["x"], ["y"]]
    assert [(len(b), b[0].params["max_tokens"]) for b in got] == [(n, m) for n, m, _ in llm.batches]


class _FakeCopy:
    """Stands in for a model copy's Ray actor handle: ``generate.remote(batch)`` returns an awaitable,
    as an ObjectRef is (the real actors are exercised in tests/integration/test_ray_cluster.py)."""

    def __init__(self, fail: bool = False, drop: int = 0, skip: bool = False):
        self.seen, self.fail, self.drop, self.skip, self.marks = [], fail, drop, skip, []
        outer = self

        class _Generate:
            async def _go(self, batch, stop_mark):
                await asyncio.sleep(0.01)
                outer.seen.append([r.key for r in batch])
                outer.marks.append(stop_mark)
                if outer.fail:
                    raise RuntimeError("ActorDiedError: the node died")
                if outer.skip and stop_mark is not None:  # (it sees its run stopped: ModelCopy.generate)
                    return None
                out = [ChatResult(r.key, r.key.upper(), 1, 1, None, "stop", None, 0.0) for r in batch]
                return out[: len(out) - outer.drop]

            def remote(self, batch, stop_mark=None):
                return self._go(batch, stop_mark)

        self.generate = _Generate()


def _ask_copies(copies, reqs, concurrency=2):
    from distillflow.engine.client import run_coroutine_sync
    from distillflow.engine.model_copies import RemoteModelClient
    from distillflow.spec.models import TeacherSpec

    teacher = TeacherSpec(name="t", provider="transformers", model="m", concurrency=concurrency, copies=len(copies))
    got: list = []
    run_coroutine_sync(lambda: RemoteModelClient(teacher, copies).arun(reqs, got.append))
    return got


def _requests(n):
    return [ChatRequest(str(i), [{"role": "user", "content": str(i)}], {"max_tokens": 4}) for i in range(n)]


def test_remote_model_client_spreads_batches_over_copies():
    copies = [_FakeCopy(), _FakeCopy()]
    got = _ask_copies(copies, _requests(8))
    assert sorted(r.key for r in got) == [str(i) for i in range(8)] and all(r.error is None for r in got)
    # four batches of 2, two at a time: the first two go to different copies, the rest to whichever is free
    assert sum(len(c.seen) for c in copies) == 4 and all(c.seen for c in copies), [c.seen for c in copies]


def test_a_failing_model_copy_gets_no_more_batches_and_its_batch_goes_to_another():
    dead, live = _FakeCopy(fail=True), _FakeCopy()
    got = _ask_copies([dead, live], _requests(8))
    assert sorted(r.key for r in got) == [str(i) for i in range(8)] and all(r.error is None for r in got), got
    assert len(dead.seen) <= 2 and len(live.seen) == 4  # (two batches may reach it at once before it fails)
    # with no copy left, the batch's requests get the copy's error
    got = _ask_copies([_FakeCopy(fail=True)], _requests(2))
    assert [r.key for r in got] == ["0", "1"] and all("model copy 0 of teacher 't' failed" in r.error for r in got)
    # a later ask of the same client, every copy already failed: errors too, nothing sent
    from distillflow.engine.client import run_coroutine_sync
    from distillflow.engine.model_copies import RemoteModelClient
    from distillflow.spec.models import TeacherSpec

    copy = _FakeCopy(fail=True)
    client = RemoteModelClient(TeacherSpec(name="t", provider="transformers", model="m", copies=1), [copy])
    for _ in range(2):
        got = []
        run_coroutine_sync(lambda: client.arun(_requests(2), got.append))
        assert len(got) == 2 and all(r.error for r in got), got
    assert len(copy.seen) == 1 and "failed earlier in this run" in got[0].error


def test_a_request_a_copy_returned_no_answer_for_is_an_error_not_lost():
    got = _ask_copies([_FakeCopy(drop=1)], _requests(2))
    assert sorted(r.key for r in got) == ["0", "1"]
    assert [r.error for r in got if r.key == "1"][0].endswith("returned no answer for this request")


def test_a_model_copy_skips_the_batches_of_a_run_that_stopped_or_ended(tmp_path, monkeypatch):
    # the model is a stand-in (build_client patched): what is tested is the copy's check before a
    # batch; real copies generate in tests/integration/test_ray_cluster.py
    from distillflow.engine import model_copies, providers
    from distillflow.spec.models import TeacherSpec

    asked = []

    class _Model:
        def run(self, batch, on_result):
            asked.append([r.key for r in batch])
            for r in batch:
                on_result(ChatResult(r.key, "ok", 1, 1, None, "stop", None, 0.0))

    monkeypatch.setattr(providers, "build_client", lambda teacher: _Model())
    copy = model_copies.ModelCopy(TeacherSpec(name="t", provider="transformers", model="m", copies=1).model_dump(mode="json"))
    run_a, run_b = tmp_path / "parts" / "a", tmp_path / "parts" / "b"
    run_a.mkdir(parents=True)
    mark_a, mark_b = str(run_a / "STOPPING"), str(run_b / "STOPPING")
    assert [r.key for r in copy.generate(_requests(2), mark_a)] == ["0", "1"]  # running: generated
    (run_a / "STOPPING").touch()  # run a stops: its batches still queued here are not generated
    assert copy.generate(_requests(2), mark_a) is None
    # a run's folder this copy never saw (its node does not see the run directory): generated
    assert [r.key for r in copy.generate(_requests(1), mark_b)] == ["0"]
    # a run that ended (its folder, seen here, removed): not generated
    (run_a / "STOPPING").unlink()
    run_a.rmdir()
    assert copy.generate(_requests(2), mark_a) is None
    # trouble reading a folder (a network filesystem's hiccup) is not a stop: generated
    run_c = tmp_path / "parts" / "c"
    run_c.mkdir()
    (run_c / "STOPPING").touch()

    def unreadable(path, *a, **kw):
        raise OSError(116, "Stale file handle")

    with monkeypatch.context() as m:
        m.setattr(model_copies.os, "stat", unreadable)
        answered = copy.generate(_requests(1), str(run_c / "STOPPING"))
    assert [r.key for r in answered] == ["0"]
    assert asked == [["0", "1"], ["0"], ["0"]]
    assert copy.info()["skipped_batches"] == 2 and copy.info()["batches"] == 3
    assert copy.info()["busy_s"] == 0.0  # (no batch being generated)


def test_a_model_copy_says_how_long_its_current_batch_has_run(monkeypatch):
    # the model is a stand-in that asks the copy's info() in the middle of its batch
    import time

    from distillflow.engine import model_copies, providers
    from distillflow.spec.models import TeacherSpec

    seen = []

    class _Model:
        def run(self, batch, on_result):
            time.sleep(0.25)
            seen.append(copy.info()["busy_s"])
            for r in batch:
                on_result(ChatResult(r.key, "ok", 1, 1, None, "stop", None, 0.0))

    monkeypatch.setattr(providers, "build_client", lambda teacher: _Model())
    copy = model_copies.ModelCopy(TeacherSpec(name="t", provider="transformers", model="m", copies=1).model_dump(mode="json"))
    copy.generate(_requests(1))
    assert seen[0] >= 0.2 and copy.info()["busy_s"] == 0.0, seen


def test_a_batch_a_copy_skipped_is_dropped_only_where_the_run_is_seen_stopping(tmp_path):
    from distillflow.engine.client import run_coroutine_sync
    from distillflow.engine.model_copies import RemoteModelClient
    from distillflow.spec.models import TeacherSpec

    teacher = TeacherSpec(name="t", provider="transformers", model="m", concurrency=2, copies=1)
    mark = tmp_path / "STOPPING"

    def ask(copy):
        got: list = []
        client = RemoteModelClient(teacher, [copy], stop_mark=str(mark))
        run_coroutine_sync(lambda: client.arun(_requests(4), got.append))
        return got, client

    # the run stopped (its mark is here too): the skipped batches get no results (nothing
    # quarantined: the stopped run's rerun asks them), and the copy stays in use
    mark.touch()
    copy = _FakeCopy(skip=True)
    got, client = ask(copy)
    assert got == [] and len(copy.seen) == 2 and not client.dead and copy.marks == [str(mark)] * 2
    # the copy skipped while this process sees no stop (the copy's node sees the run directory
    # otherwise): each batch is asked again without the mark, and answered, not lost
    mark.unlink()
    copy = _FakeCopy(skip=True)
    got, client = ask(copy)
    assert sorted(r.key for r in got) == ["0", "1", "2", "3"] and all(r.error is None for r in got), got
    assert sorted(copy.marks, key=str) == sorted([str(mark), str(mark), None, None], key=str) and not client.dead


def test_a_stopping_shard_makes_the_runs_stop_mark(tmp_path):
    # what a model copy checks before a queued batch: any shard that fails or is cancelled makes the
    # mark (RayExecutor._shard, here with only the attributes that path reads: no Ray)
    from types import SimpleNamespace

    from distillflow.engine.ray_executor import STOP_MARK, RayExecutor

    class _Prompts:
        def shard(self, k):
            raise RuntimeError("the source is unreadable")

    ex = RayExecutor.__new__(RayExecutor)
    ex.ray, ex.plan, ex.driver_reads_source = None, SimpleNamespace(graph=SimpleNamespace(sink="s")), True
    ex.prompts, ex.parts_dir = _Prompts(), tmp_path

    async def go():
        sem = asyncio.Semaphore(1)
        await sem.acquire()
        with pytest.raises(RuntimeError, match="unreadable"):
            await ex._shard(0, sem)
        return sem.locked()

    assert not (tmp_path / STOP_MARK).exists()
    assert asyncio.run(go()) is False  # (its slot given back)
    assert (tmp_path / STOP_MARK).exists()


def test_gpus_a_copy_reserves_by_default_and_copies_the_cluster_cannot_place_are_refused():
    from distillflow.engine.ray_executor import _copy_gpus, check_gpu_fit
    from distillflow.spec.models import TeacherSpec

    def teacher(**kw):
        return TeacherSpec(**{"name": "t", "provider": "transformers", "model": "m", "copies": 2, **kw})

    # transformers loads on the CPU unless device names cuda (providers.build_distilabel_llm); vLLM needs a GPU
    assert _copy_gpus(teacher(), 4) == 0 and _copy_gpus(teacher(device="cuda:0"), 4) == 1
    assert _copy_gpus(teacher(provider="vllm"), 4) == 1 and _copy_gpus(teacher(provider="vllm"), 0) == 0
    assert _copy_gpus(teacher(device="cuda", gpus_per_copy=0.5), 4) == 0.5
    a, b = teacher(name="a", provider="vllm", copies=3), teacher(name="b", provider="vllm", copies=2)
    check_gpu_fit({"a": a}, {"a": 1.0}, 4, [2, 2])
    with pytest.raises(ConfigurationError) as e:  # 5 GPUs in all, over two teachers, on a 4-GPU cluster
        check_gpu_fit({"a": a, "b": b}, {"a": 1.0, "b": 1.0}, 4, [2, 2])
    assert "ask for 5 GPUs ('a' 3 x 1, 'b' 2 x 1) and the cluster has 4 GPUs" in str(e.value)
    with pytest.raises(ConfigurationError) as e:  # a copy is on one node
        check_gpu_fit({"a": teacher(name="a", copies=1)}, {"a": 4.0}, 4, [2, 2])
    assert "asks for 4 GPUs and the largest node has 2" in str(e.value)


def test_gpus_per_copy_above_one_must_be_whole(write_yaml):
    p = write_yaml(_local_teacher_yaml("    copies: 2\n    gpus_per_copy: 1.5"))
    with pytest.raises(SpecError) as e:
        distillflow.load(p)
    assert "not a fraction above one" in str(e.value)


def test_a_write_error_in_a_shard_task_says_it_happened_on_a_ray_worker(tmp_path):
    # the driver's machine may write the run directory where a node cannot: the CLI's message for a
    # full disk or read-only path names the worker. (Ray's own error class, built here as Ray builds
    # it around a task's exception; a node that cannot write a path the driver can is not set up here.)
    import errno

    ray = pytest.importorskip("ray")
    from distillflow.cli._common import disk_error
    from distillflow.engine.ray_executor import _cause, _on_worker

    err = PermissionError(errno.EROFS, "Read-only file system", "/shared/run/cache/requests-1a2b.sqlite")
    wrapped = ray.exceptions.RayTaskError("_segment_task", "Traceback ...", err, proctitle="ray::_segment_task",
                                          pid=4321, ip="10.0.0.7")
    got = _on_worker(_cause(wrapped), wrapped, "/shared/run")
    assert type(got) is PermissionError and got.errno == errno.EROFS and got.filename == err.filename
    assert got.strerror == ("Read-only file system (on a Ray worker: pid 4321 at 10.0.0.7; every node must be able "
                            "to write the run directory, at the same path)")
    message = str(disk_error(got, tmp_path / "run"))
    assert message.startswith("cannot write /shared/run/cache/requests-1a2b.sqlite: Read-only file system (on a Ray "
                              "worker: pid 4321 at 10.0.0.7;"), message
    assert _on_worker(OSError("no errno"), wrapped).args == ("no errno",)  # (nothing to rebuild it from: as it was)
    # other errors say where they happened, not that storage is to blame; both file names are kept
    refused = _on_worker(ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), wrapped, "/shared/run")
    assert str(refused) == "[Errno 111] Connection refused (on a Ray worker: pid 4321 at 10.0.0.7)"
    moved = _on_worker(OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b"), wrapped, "/shared/run")
    assert str(moved) == "[Errno 18] Invalid cross-device link (on a Ray worker: pid 4321 at 10.0.0.7): '/a' -> '/b'"
    # no permission: the run directory's concern inside it, not elsewhere
    inside = _on_worker(PermissionError(errno.EACCES, "Permission denied", "/shared/run/cache/x"), wrapped, "/shared/run")
    outside = _on_worker(PermissionError(errno.EACCES, "Permission denied", "/models/m"), wrapped, "/shared/run")
    assert "every node must be able to write" in inside.strerror and "every node" not in outside.strerror


def test_address_forms(monkeypatch):
    from distillflow.spec.models import address_problem, split_address

    for ok in ("auto", "local", "ray://10.0.0.5:10001", "anyscale://cluster", "10.0.0.5:6379", "head.example:6379",
               "[fd00::5]:6379"):
        assert address_problem(ok) is None, ok
    assert split_address("[fd00::5]:6379") == ("fd00::5", 6379) and split_address(" h:1 ") == ("h", 1)
    for bad in ("10.0.0.5", "h:port", "h:\u00b2", "h:0", "h:65536", "::1:6379", "fd00::5", ":6379"):
        assert address_problem(bad).startswith(f"the Ray address {bad!r} is not HOST:PORT"), bad


def test_a_head_that_starts_within_the_wait_is_joined(monkeypatch, capsys):
    # a launcher that starts the head and the driver together: connection refused for a while, then
    # the port answers (a real socket that starts listening 1.5 s later)
    import socket
    import threading
    import time

    from distillflow.engine import ray_executor as rx

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def listen_later():
        time.sleep(1.5)
        server.bind(("127.0.0.1", port))
        server.listen()

    monkeypatch.setenv("DISTILLFLOW_RAY_CONNECT_WAIT_S", "60")
    t = threading.Thread(target=listen_later)
    t.start()
    try:
        rx._check_reachable(f"127.0.0.1:{port}")  # returns once the port answers
        t.join()
        assert f"nothing answers at 127.0.0.1:{port} yet: waiting up to 60 s" in capsys.readouterr().err
    finally:
        t.join()
        server.close()


def test_reused_copies_stuck_in_one_batch_are_not_kept(monkeypatch):
    """_alive's decision from what the copies' info() says. The handles are stand-ins that answer
    info() as a copy does (a real copy answering mid-batch is tested on the cluster: scenario copies)."""
    from distillflow.engine import ray_executor as rx

    class _Handle:
        def __init__(self, info):
            self.info = type("M", (), {"remote": lambda _self: _answer(info)})()

    async def _answer(info):
        return info

    monkeypatch.setattr(rx, "COPY_STUCK_S", 600.0)
    fine = {"pid": 1, "busy_s": 0.0}
    assert asyncio.run(rx._alive([_Handle(fine), _Handle({"pid": 2, "busy_s": 599.0})]))
    assert not asyncio.run(rx._alive([_Handle(fine), _Handle({"pid": 2, "busy_s": 601.0})]))
    assert not asyncio.run(rx._alive([_Handle(fine), _Handle({"pid": 2, "error": "OSError: no model"})]))


@pytest.mark.parametrize("before_is_ours", [True, False])
def test_connect_puts_back_a_sigterm_handler_that_ray_init_replaced(monkeypatch, before_is_ours):
    """ray.init stubbed with what the real one does to SIGTERM (installs Ray's handler; the real one,
    with the CLI, is tested on the cluster: scenario 'cli'). A handler of the process's own comes
    back; Python's default does not (Ray's handler, which exits through ray.shutdown, is better)."""
    import signal

    import ray

    from distillflow.engine import ray_executor as rx

    def ours(signum, frame):
        pass

    def rays(signum, frame):
        pass

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: signal.signal(signal.SIGTERM, rays))
    monkeypatch.setattr(rx, "_check_reachable", lambda address: None)
    previous = signal.signal(signal.SIGTERM, ours if before_is_ours else signal.SIG_DFL)
    try:
        assert rx.connect("127.0.0.1:6399") == (ray, True)
        assert signal.getsignal(signal.SIGTERM) is (ours if before_is_ours else rays)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_an_explicit_address_other_than_the_connected_cluster_is_said(monkeypatch, capsys):
    """A process already connected to Ray (a notebook's ray.init()) runs there; an explicit
    HOST:PORT of another cluster used to be ignored without a word. ray is stubbed: which
    cluster the process is connected to is all that is read."""
    import types

    import ray

    from distillflow.engine import ray_executor as rx

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "get_runtime_context", lambda: types.SimpleNamespace(gcs_address="127.0.0.1:6379"))
    monkeypatch.setattr(rx, "_check_reachable", lambda a: pytest.fail("an address already joined is not checked"))
    for same in (None, "auto", "local", "ray://10.9.9.9:10001", "127.0.0.1:6379", "localhost:6379"):
        assert rx.connect(same) == (ray, False)
        assert capsys.readouterr().err == "", same
    for other in ("127.0.0.1:6380", "10.255.0.7:6379"):
        assert rx.connect(other) == (ray, False)
        err = capsys.readouterr().err
        assert f"connected to the Ray cluster at 127.0.0.1:6379 already; the run goes there, not to {other}" in err
        assert "ray.shutdown()" in err


def test_connect_through_ray_client_tries_once_more_where_the_server_could_not_start_a_session(monkeypatch, capsys):
    """ray.init stubbed: the head's client server failing to start a driver's session cannot be made to
    happen on demand here (it does on a busy head: one cluster test run failed that way while another
    cluster ran beside it). The path through a real client server is tested in
    tests/integration/test_ray_cluster.py."""
    import ray

    from distillflow.engine import ray_executor as rx

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    shutdowns: list = []
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    refusal = ConnectionAbortedError(
        "Initialization failure from server:\nTraceback (most recent call last):\n  File \"proxier.py\", line 780\n"
        "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err`\n")
    outcomes: list = []
    calls: list = []
    _stub_init(monkeypatch, ray, outcomes, calls)
    outcomes[:] = [refusal, None]  # refused once, then joined
    assert rx.connect("ray://10.0.0.1:10001") == (ray, True)
    assert calls == ["ray://10.0.0.1:10001"] * 2 and shutdowns
    err = capsys.readouterr().err
    assert "could not start a session for this driver (RuntimeError: Proxy failed to Connect to backend!" in err
    assert "trying once more" in err
    # refused twice: the message gives the server's reason and where its logs are, not an empty first line
    calls.clear()
    outcomes[:] = [refusal, refusal]
    with pytest.raises(ConfigurationError, match=r"could not start a session for this driver, twice "
                                                  r"\(RuntimeError: Proxy failed.*ray_client_server\*\.err"):
        rx.connect("ray://10.0.0.1:10001")
    assert len(calls) == 2
    # not through Ray Client, or not this failure: no second try
    for address, error in (("10.0.0.1:6379", refusal), ("ray://10.0.0.1:10001", ConnectionError("refused"))):
        calls.clear()
        outcomes[:] = [error]
        monkeypatch.setattr(rx, "_check_reachable", lambda address: None)
        with pytest.raises(ConfigurationError):
            rx.connect(address)
        assert len(calls) == 1, address
