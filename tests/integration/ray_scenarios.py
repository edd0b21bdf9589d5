"""The Ray backend against a real local cluster (head + one worker node), run inside ``unshare -n``.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.integration.ray_scenarios OUT.json'

Started by tests/integration/test_ray_cluster.py (which asserts on OUT.json): one cluster for every
scenario, because starting Ray takes tens of seconds on a loaded 2-core machine. Each scenario
records facts (counts, endpoint stats, file contents) without judging them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.fake_endpoint import EndpointThread  # noqa: E402
from benchmarks.ray_cluster import LocalRayCluster  # noqa: E402
from distillflow.engine.progress import NullReporter  # noqa: E402
from tests.support import local_model_yaml, pipeline_yaml  # noqa: E402


def rows(n: int, tag: str = "") -> str:
    return "".join(f'\n    - {{question: "{tag}question {i}: what is {i}+{i}?", answer: "{2 * i}"}}' for i in range(n))


def write(d: Path, base_url: str, n: int, steps: str, execution: str, teacher_extra: str = "", extra: str = "",
          rows_text: str | None = None) -> Path:
    """``d``/pipeline.yaml: ``n`` arithmetic prompts (or the YAML rows ``rows_text``) through ``steps``."""
    d.mkdir(parents=True, exist_ok=True)
    text = pipeline_yaml(base_url, steps, rows=rows_text or rows(n, d.name), extra=f"execution: {execution}\n{extra}",
                         teacher_extra=teacher_extra)
    p = d / "pipeline.yaml"
    p.write_text(text)
    return p


def curated(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "data" / "curated.jsonl").read_text().splitlines() if line.strip()]


def deadline_poll(pred, timeout: float, what: str, every: float = 0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise TimeoutError(f"waited {timeout}s for {what}")


def scenario_limits(tmp: Path, address: str) -> dict:
    """Several workers, one teacher limited to 3 in flight and 600 RPM, against an endpoint that
    rejects a 4th concurrent request; then a budget cap across nodes."""
    import distillflow

    out: dict = {}
    with EndpointThread(latency=(0.05, 0.1), reject_above=3) as ep:
        p = write(tmp / "limits", ep.base_url, 48, "  - kind: generate\n", "{shard_size: 4, shards_in_flight: 6}",
                  teacher_extra="    concurrency: 3\n    rpm: 600")
        t0 = time.perf_counter()
        r = distillflow.run(str(p), out=tmp / "limits" / "run", progress=False, backend="ray", address=address)
        out["seconds"] = time.perf_counter() - t0
        out["curated"] = r.manifest["curated"]
        out["quarantined"] = r.manifest["quarantined"]
        out["max_in_flight"] = ep.stats["max_in_flight"]
        out["rejected_by_endpoint"] = ep.stats["rejected"]
        out["requests"] = ep.stats["requests"]
        starts = sorted(ep.stats["starts"])
        # most requests that started within any 1-second window (600 RPM = 10/s; the bucket holds 1 s)
        out["max_per_1s"] = max(sum(1 for t in starts[i:] if t - s < 1.0) for i, s in enumerate(starts))
        out["workers"] = json.loads((tmp / "limits" / "run" / "cache" / "ray-workers.json").read_text())

    def spent(r, ep) -> dict:
        return {"status": r.manifest["status"], "cost_usd": r.manifest["cost_usd"], "curated": r.manifest["curated"],
                "completions": ep.stats["completions"]}

    # a budget cap across nodes; then the cap is on what the run's answers cost, cached ones included
    # (as on the local backend): the same command again sends (almost) nothing; a doubled cap buys
    # about as much again. The same three runs on the local backend beside them.
    for backend, key, names in (("ray", None, ("budget", "budget_again", "budget_doubled")),
                                ("local", "budget_local", ("first", "again", "doubled"))):
        with EndpointThread(latency=(0.02, 0.04)) as ep:
            d = tmp / ("budget" if backend == "ray" else "budget_local")
            p = write(d, ep.base_url, 60, "  - kind: generate\n", "{shard_size: 5, shards_in_flight: 6}",
                      extra="budget: {max_cost_usd: 0.0012}")
            for name, cap in zip(names, (0.0012, 0.0012, 0.0024)):
                p.write_text(p.read_text().replace("max_cost_usd: 0.0012", f"max_cost_usd: {cap}"))
                r = distillflow.run(str(p), out=d / "run", progress=False, backend=backend,
                                    address=address if backend == "ray" else None)
                (out.setdefault(key, {}) if key else out)[name] = spent(r, ep)
    return out


def scenario_retries(tmp: Path, address: str) -> dict:
    """Every prompt gets two 503s before its answer, one teacher at 600 RPM: the retries take RPM
    tokens from the hub too, so the endpoint never sees more attempts per second than the limit."""
    import distillflow

    with EndpointThread(latency=(0.01, 0.02), reject_above=8) as ep:
        rows_ = "".join(f"""\n    - {{question: '@@{{"status": 503, "times": 2}} q{i}', answer: "{i}"}}""" for i in range(36))
        p = write(tmp / "retries", ep.base_url, 0, "  - kind: generate\n", "{shard_size: 4, shards_in_flight: 6}",
                  teacher_extra="    concurrency: 8\n    rpm: 600", rows_text=rows_)
        r = distillflow.run(str(p), out=tmp / "retries" / "run", progress=False, backend="ray", address=address)
        starts = sorted(ep.stats["starts"])
        return {"curated": r.manifest["curated"], "requests": ep.stats["requests"],
                "completions": ep.stats["completions"], "rejected_by_endpoint": ep.stats["rejected"],
                "max_per_1s": max(sum(1 for t in starts[i:] if t - s < 1.0) for i, s in enumerate(starts)),
                "span_s": starts[-1] - starts[0]}


def scenario_tpm(tmp: Path, address: str) -> dict:
    """One teacher at 36,000 TPM (600 tokens a second, a one-second bucket) and 8 in flight for both
    nodes' workers; two shards of 32 prompts, one per worker, each ending with 4 long prompts (~340
    tokens against ~14), which its window reaches only after the short ones: each worker's estimate
    grows while it holds tokens leased at the short one. Records each answered request's start and
    actual tokens at the endpoint."""
    import distillflow

    long = "tell me more about it " * 55  # ~1,200 characters
    rows_ = "".join(f'\n    - {{question: "q{i}: {long if i % 32 >= 28 else ""}what is {i}+{i}?", answer: "{2 * i}"}}'
                    for i in range(64))
    with EndpointThread(latency=(0.01, 0.02), reject_above=8) as ep:
        p = write(tmp / "tpm", ep.base_url, 0, "  - kind: generate\n", "{shard_size: 32, shards_in_flight: 2}",
                  teacher_extra="    concurrency: 8\n    tpm: 36000", rows_text=rows_)
        r = distillflow.run(str(p), out=tmp / "tpm" / "run", progress=False, backend="ray", address=address)
        return {"curated": r.manifest["curated"], "requests": ep.stats["requests"],
                "rejected_by_endpoint": ep.stats["rejected"], "usage": sorted(ep.stats["usage"]),
                "workers": json.loads((tmp / "tpm" / "run" / "cache" / "ray-workers.json").read_text())}


def scenario_shares(tmp: Path, address: str) -> dict:
    """Both nodes' workers generate at once for one teacher limited to 4 in flight, each always
    with requests queued: neither may keep every slot while the other waits (fair shares)."""
    import distillflow

    with EndpointThread(latency=(0.01, 0.02), reject_above=4) as ep:
        p = write(tmp / "shares", ep.base_url, 96, "  - kind: generate\n", "{shard_size: 8, shards_in_flight: 4}",
                  teacher_extra="    concurrency: 4")
        t0 = time.perf_counter()
        r = distillflow.run(str(p), out=tmp / "shares" / "run", progress=False, backend="ray", address=address)
        out = {"seconds": time.perf_counter() - t0, "curated": r.manifest["curated"],
               "rejected_by_endpoint": ep.stats["rejected"], "max_in_flight": ep.stats["max_in_flight"],
               "workers": json.loads((tmp / "shares" / "run" / "cache" / "ray-workers.json").read_text())}
    out["heaps"] = probe_worker_heaps()
    return out


def probe_worker_heaps() -> list:
    """(pid, objects the garbage collector leaves alone) of a 1-CPU task on each node: Ray runs it
    in the worker process that ran the shards there, if that one is idle."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def probe():
        import gc
        import os

        return [os.getpid(), gc.get_freeze_count()]

    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = [ray.remote(num_cpus=1, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))(probe).remote()
            for n in nodes]
    return ray.get(refs, timeout=120)


def scenario_same_as_local(tmp: Path, address: str) -> dict:
    """The same pipeline (generate two answers per prompt ▸ best_of, grouped by prompt ▸ dedup, a
    global step in the middle ▸ filter) on both backends."""
    import distillflow

    steps = """  - kind: generate
    num_generations: 2
  - kind: best_of
    by: logprob_mean
  - kind: dedup
    columns: [reference]
  - kind: filter
    where: "len(response) > 12"
"""
    with EndpointThread(latency=(0.005, 0.01)) as ep:
        rowsets = rows(30) + '\n    - {question: "twin a", answer: "1"}\n    - {question: "twin b", answer: "1"}'
        d = tmp / "same"
        d.mkdir(parents=True)
        (d / "pipeline.yaml").write_text(pipeline_yaml(ep.base_url, steps, rows=rowsets,
                                                      extra="execution: {shard_size: 4, shards_in_flight: 4}"))
        rr = distillflow.run(str(d / "pipeline.yaml"), out=d / "ray", progress=False, backend="ray", address=address)
        rl = distillflow.run(str(d / "pipeline.yaml"), out=d / "local", progress=False)

        def files(o):
            return {n: (o / "data" / n).read_text() for n in ("curated.jsonl", "rejected.jsonl")}

        return {"ray": files(d / "ray"), "local": files(d / "local"),
                "ray_counts": rr.manifest["counts"], "local_counts": rl.manifest["counts"],
                "ray_backend": rr.manifest["execution"]["backend"],
                "requests": ep.stats["requests"],
                "ray_teachers": rr.manifest["teachers"], "local_teachers": rl.manifest["teachers"],
                "workers": json.loads((d / "ray" / "cache" / "ray-workers.json").read_text())}


def scenario_kill_worker(tmp: Path, address: str) -> dict:
    """SIGKILL a worker process while it runs a shard: Ray retries it; every record once, no answer paid twice."""
    import threading

    import distillflow

    n = 24
    with EndpointThread(latency=(0.15, 0.25)) as ep:
        p = write(tmp / "killw", ep.base_url, n, "  - kind: generate\n", "{shard_size: 3, shards_in_flight: 2}",
                  teacher_extra="    concurrency: 2")
        killed: list[int] = []

        def killer():
            def running():
                pids = _shard_task_processes()
                return pids[0] if pids else None

            try:
                pid = deadline_poll(lambda: ep.stats["completions"] >= 4 and running(), 120, "a running shard task")
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except TimeoutError:
                pass

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        # the caches as on a network filesystem (a rollback journal, not WAL): the retried shard
        # reads the killed worker's file through it
        os.environ["DISTILLFLOW_CACHE_JOURNAL"] = "truncate"
        try:
            r = distillflow.run(str(p), out=tmp / "killw" / "run", progress=False, backend="ray", address=address)
        finally:
            del os.environ["DISTILLFLOW_CACHE_JOURNAL"]
        t.join(5)
        got = curated(tmp / "killw" / "run")
        return {"killed": killed, "n": n, "curated_ids": [g["id"] for g in got],
                "prompts": sorted(g["prompt"] for g in got), "status": r.manifest["status"],
                "requests": ep.stats["requests"], "completions": ep.stats["completions"],
                "workers": json.loads((tmp / "killw" / "run" / "cache" / "ray-workers.json").read_text())}


def _shard_task_processes() -> list[int]:
    """Worker processes running a shard task now (Ray titles them after the task)."""
    return _processes("ray::_segment_task")


def _processes(title: str) -> list[int]:
    """Processes whose title (Ray's: the task or actor method it runs) starts with ``title``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if cmd and cmd[0].startswith(title):
            found.append(proc.info["pid"])
    return found


def _two_at_a_time(d: Path, base_url: str, n: int, address: str) -> tuple[Path, list[str]]:
    """A pipeline of ``n`` prompts in shards of 4, answered two at a time, and the CLI command that
    runs it on the cluster: (its run directory, the command)."""
    p = write(d, base_url, n, "  - kind: generate\n", "{shard_size: 4, shards_in_flight: 2}",
              teacher_extra="    concurrency: 2")
    run_dir = d / "run"
    return run_dir, [sys.executable, "-m", "distillflow", "run", str(p), "--out", str(run_dir), "--no-progress",
                     "--address", address]


def scenario_kill_driver(tmp: Path, address: str) -> dict:
    """SIGKILL the driver (the `distillflow run` CLI) after some shards committed; rerun resumes."""
    n = 40
    with EndpointThread(latency=(0.15, 0.25)) as ep:
        run_dir, cmd = _two_at_a_time(tmp / "killd", ep.base_url, n, address)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        first = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        shards = run_dir / "cache" / "shards" / "generate"

        def committed():
            return sum(1 for _ in shards.glob("*/*/meta.json")) if shards.is_dir() else 0

        try:
            deadline_poll(lambda: committed() >= 2 or first.poll() is not None, 300, "two committed shards")
        finally:
            if first.poll() is None:
                first.send_signal(signal.SIGKILL)
        first_rc = first.wait(30)
        # Ray ends the dead driver's shard tasks on its own time: the rerun starts once none is left
        # (else their last requests land beside the rerun's and blur what the kill cost)
        deadline_poll(lambda: not _shard_task_processes(), 120, "the killed driver's shard tasks to end")
        before = committed()
        requests_first = ep.stats["requests"]
        second = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
        got = curated(run_dir) if (run_dir / "data" / "curated.jsonl").is_file() else []
        manifest = json.loads((run_dir / "manifest.json").read_text()) if (run_dir / "manifest.json").is_file() else {}
        return {"n": n, "first_rc": first_rc, "committed_before": before, "requests_first": requests_first,
                "requests_total": ep.stats["requests"], "second_rc": second.returncode,
                "second_out": (second.stdout + second.stderr)[-2000:], "curated_ids": [g["id"] for g in got],
                "prompts": sorted(g["prompt"] for g in got), "teachers": manifest.get("teachers"),
                "shards": manifest.get("execution", {}).get("shards")}


def scenario_cli(tmp: Path, address: str) -> dict:
    """The CLI on the cluster as people type it: SIGTERM in the middle of a run (Slurm, Kubernetes,
    systemd stopping the job) stops it as on the local backend (exit 143, the resume hint; ray.init
    had put Ray's own handler in: exit 15 with a stack dump) and the same command resumes; a relative
    ``--out`` from a working directory other than the one the nodes were started in (the workers get
    the absolute path: they used to read it from their own)."""
    n = 40
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["PYTHONPATH"] = str(ROOT)
    with EndpointThread(latency=(0.15, 0.25)) as ep:
        run_dir, cmd = _two_at_a_time(tmp / "term", ep.base_url, n, address)
        first = subprocess.Popen(cmd, env=env, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline_poll(lambda: ep.stats["completions"] >= 4 or first.poll() is not None, 300, "four answers")
        finally:
            if first.poll() is None:
                first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=120)
        requests_first = ep.stats["requests"]
        second = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
        requests_total = ep.stats["requests"]
        got = curated(run_dir) if (run_dir / "data" / "curated.jsonl").is_file() else []

        elsewhere = tmp / "elsewhere"
        (elsewhere / "pipelines").mkdir(parents=True)
        rel = write(elsewhere / "pipelines", ep.base_url, 12, "  - kind: generate\n", "{shard_size: 3}")
        name = f"runs/ray-rel-{os.getpid()}"  # (a name of its own: what a regression strays into is removed)
        rel_run = subprocess.run([*cmd[:4], str(rel.relative_to(elsewhere)), "--out", name, *cmd[7:]], env=env,
                                 cwd=str(elsewhere), capture_output=True, text=True, timeout=600)
        rel_out, stray_dir = elsewhere / name, ROOT / name
        # no --address, RAY_ADDRESS set (as a job submitted to the cluster finds it): Ray's rule joins
        # that cluster, with both its nodes, instead of starting an instance of one node here
        joined = subprocess.run([*cmd[:4], str(rel), "--out", str(tmp / "joined"), "--no-progress", "--backend", "ray"],
                                env=dict(env, RAY_ADDRESS=address), cwd=str(ROOT), capture_output=True, text=True,
                                timeout=600)
        joined_record = tmp / "joined" / "cache" / "ray-workers.json"
        stray = sorted(str(q.relative_to(ROOT)) for q in stray_dir.rglob("*")) if stray_dir.exists() else []
        shutil.rmtree(stray_dir, ignore_errors=True)
        return {"n": n, "first_rc": first.returncode, "first_err": err[-3000:], "requests_first": requests_first,
                "second_rc": second.returncode, "second_err": second.stderr[-2000:], "requests_total": requests_total,
                "curated_ids": [g["id"] for g in got],
                "rel_rc": rel_run.returncode, "rel_err": rel_run.stderr[-2000:],
                "rel_curated": len(curated(rel_out)) if (rel_out / "data" / "curated.jsonl").is_file() else None,
                "rel_nodes": json.loads((rel_out / "cache" / "ray-workers.json").read_text())["nodes"]
                if (rel_out / "cache" / "ray-workers.json").is_file() else None,
                "stray": stray, "joined_rc": joined.returncode, "joined_err": joined.stderr[-2000:],
                "joined_curated": len(curated(tmp / "joined")) if (tmp / "joined" / "data" / "curated.jsonl").is_file() else None,
                "joined_nodes": json.loads(joined_record.read_text())["nodes"] if joined_record.is_file() else None}


def scenario_outage(tmp: Path, address: str) -> dict:
    """The teacher goes down after 16 answers (HTTP 500 to everything): the run stops with the
    outage message and keeps what was committed; once it is back, the same command finishes and
    asks again what failed while it was down (through a global step in the driver, dedup, and a
    filter in the tasks after it, which must see the records that came back)."""
    import distillflow
    from distillflow.errors import DistillflowError

    n = 64
    with EndpointThread(latency=(0.01, 0.02), down_after=16) as ep:
        steps = "  - kind: generate\n  - {kind: dedup, columns: [reference]}\n  - kind: filter\n    where: \"len(response) > 1\"\n"
        p = write(tmp / "outage", ep.base_url, n, steps, "{shard_size: 4, shards_in_flight: 4}",
                  teacher_extra="    max_retries: 0\n    concurrency: 4\n    outage: {failures_in_a_row: 6}")
        run_dir = tmp / "outage" / "run"
        out: dict = {"n": n}
        t0 = time.perf_counter()
        try:
            distillflow.run(str(p), out=run_dir, progress=False, backend="ray", address=address)
            out["first"] = "completed"
        except DistillflowError as e:
            out["first"], out["first_message"] = type(e).__name__, str(e)
            out["first_exit_code"] = getattr(e, "exit_code", None)
        out["first_seconds"] = time.perf_counter() - t0
        out["first_answered"], out["refused_down"] = ep.stats["completions"], ep.stats["refused_down"]
        shards = run_dir / "cache" / "shards" / "generate"
        out["committed"] = sum(1 for _ in shards.glob("*/*/meta.json")) if shards.is_dir() else 0
        out["workers"] = json.loads((run_dir / "cache" / "ray-workers.json").read_text())
        ep.stats["down"] = False  # the teacher is back
        out["marker"] = (run_dir / "cache" / "outage.json").is_file()
        r = distillflow.run(str(p), out=run_dir, progress=False, backend="ray", address=address)
        out["second_curated"], out["second_quarantined"] = r.manifest["curated"], r.manifest["quarantined"]
        out["second_status"], out["second_answered"] = r.manifest["status"], ep.stats["completions"]
        out["marker_after"] = (run_dir / "cache" / "outage.json").is_file()
        r = distillflow.run(str(p), out=run_dir, progress=False, backend="ray", address=address)  # nothing left to ask
        out["third_curated"], out["third_quarantined"] = r.manifest["curated"], r.manifest["quarantined"]
        out["answered"], out["repeats"] = ep.stats["completions"], ep.stats["repeats"]
        out["prompts"] = sorted(g["prompt"] for g in curated(run_dir))
        return out


def _register_halt() -> None:
    """A step kind that fails the shard holding a marked row (a user's step with a bug), once the
    teacher has had ``after_requests`` requests (``stats_url``: the endpoint's counters), so that
    other shards are sending when it fails."""
    from typing import Literal

    from distillflow.errors import DistillflowError
    from distillflow.steps.base import StepBase, StepKind
    from distillflow.steps.registry import kinds, register

    class HaltStep(StepBase):
        kind: Literal["halt"]
        marker: str
        stats_url: str = ""
        after_requests: int = 0
        record: str = ""  # a file: the endpoint's request count as the step fails

    def halt(ctx, step, rows, state):
        if not any(step.marker in r["prompt"] for r in rows):
            return rows, []
        from benchmarks.fake_endpoint import fetch_stats

        def count() -> int:  # one call per poll: the count the step records is the one it saw
            n = fetch_stats(step.stats_url)["requests"]
            return n if n >= step.after_requests else 0

        seen = deadline_poll(count, 120, f"{step.after_requests} requests at the endpoint")
        if step.record:
            Path(step.record).write_text(str(seen))
        raise DistillflowError(f"halt: a row holds {step.marker!r}")

    if "halt" not in kinds():
        register(StepKind("halt", HaltStep, scope="row", run=halt, columns=lambda s: ({"prompt"}, set())))


def scenario_stop(tmp: Path, address: str) -> dict:
    """One shard fails while another is sending (0.8-1 s per answer, 2 in flight): the run
    stops; a shard task still running stops sending and those not started never start
    (ray.cancel), and nothing reaches the teacher once the run has returned. The failing step
    records the endpoint's request count as it fails."""
    import distillflow
    from distillflow.errors import DistillflowError

    _register_halt()
    n = 64
    with EndpointThread(latency=(0.8, 1.0)) as ep:
        raised_at = tmp / "raised_at"
        steps = (f"  - {{kind: halt, marker: 'stopquestion 0:', stats_url: '{ep.base_url}', after_requests: 2, "
                 f"record: '{raised_at}'}}\n"
                 "  - kind: generate\n")
        p = write(tmp / "stop", ep.base_url, n, steps, "{shard_size: 16, shards_in_flight: 4}",
                  teacher_extra="    concurrency: 2")
        out: dict = {"n": n}
        t0 = time.perf_counter()
        try:
            distillflow.run(str(p), out=tmp / "stop" / "run", progress=False, backend="ray", address=address)
            out["first"] = "completed"
        except DistillflowError as e:
            out["first"], out["first_message"] = type(e).__name__, str(e)
        out["seconds"] = time.perf_counter() - t0
        out["requests_at_return"] = ep.stats["requests"]
        # (what matters is what was sent after the step failed: Ray need not start shard 0 first)
        out["requests_at_raise"] = int(raised_at.read_text()) if raised_at.is_file() else None
        time.sleep(2.0)  # (what a task left running would send meanwhile: ~2 requests a second)
        out["requests_later"] = ep.stats["requests"]
        return out


def scenario_retry_downstream(tmp: Path, address: str) -> dict:
    """--retry-errors on a shard whose generation failed: generate in a task, dedup in the driver,
    the filter in a task after it; each must compute that shard again to see the record, and dedup
    every later shard (the last one has a record with the same reference, kept while the first was
    missing)."""
    import distillflow

    steps = "  - kind: generate\n  - {kind: dedup, columns: [reference]}\n  - kind: filter\n    where: \"len(response) > 1\"\n"
    rowsets = ("""\n    - {question: '@@{"status": 503, "times": 2, "retry_after": 0} early', answer: "dup"}"""
               + rows(6) + '\n    - {question: "a twin of the early one", answer: "dup"}')
    with EndpointThread(latency=(0.0, 0.0)) as ep:
        d = tmp / "retry"
        d.mkdir(parents=True)
        (d / "pipeline.yaml").write_text(pipeline_yaml(ep.base_url, steps, rows=rowsets, teacher_extra="    max_retries: 1",
                                                      extra="execution: {shard_size: 2, shards_in_flight: 2}"))
        out = {}
        for i, retry in enumerate((False, True)):
            r = distillflow.run(str(d / "pipeline.yaml"), out=d / "run", progress=False, backend="ray", address=address,
                                retry_errors=retry)
            out[f"run{i}"] = {"curated": r.manifest["curated"], "quarantined": r.manifest["quarantined"],
                              "references": sorted(g["reference"] for g in curated(d / "run")),
                              "dup": [g["prompt"] for g in curated(d / "run") if g["reference"] == "dup"]}
        out["requests"] = ep.stats["requests"]
        return out


class PassProgress(NullReporter):
    """A reporter recording [total, done] per step for each pass over the shards (a batch
    teacher's run makes one pass per round of provider batches; the bars restart each pass)."""

    def __init__(self):
        self.passes: list[dict] = [{}]
        self._restarting = False

    def restart(self, step_id: str) -> None:
        if not self._restarting:
            self.passes.append({})
            self._restarting = True

    def add_total(self, step_id: str, n: int) -> None:
        self._restarting = False
        self.passes[-1].setdefault(step_id, [0, 0])[0] += n

    def advance(self, step_id: str, n: int, cost_usd: float = 0.0, cached: bool = False) -> None:
        self._restarting = False
        self.passes[-1].setdefault(step_id, [0, 0])[1] += n


def scenario_batch_judge(tmp: Path, address: str) -> dict:
    """generate (online teacher, in tasks) ▸ judge (a mode: batch teacher: in the driver, through
    the local batch server) ▸ filter (in tasks), on both backends: the same curated output, the
    judge's requests pooled into provider batches."""
    import distillflow
    from benchmarks.fake_batch_server import BatchServerThread

    steps = """  - kind: generate
    teachers: [teacher]
  - kind: judge
    teacher: grader
  - kind: filter
    where: "judge_score >= 3"
"""
    rowsets = rows(10) + '\n    - {question: "rate me score=2", answer: "low"}\n    - {question: "and me score=1", answer: "low"}'
    with EndpointThread(latency=(0.0, 0.005)) as ep, BatchServerThread() as srv:
        grader = f"""  - name: grader
    provider: openai
    base_url: {srv.openai_url}
    model: fake-judge
    mode: batch
    max_retries: 0
    batch: {{poll_initial_s: 0.02, poll_max_s: 0.2}}
    price: {{input_per_1m: 2.0, output_per_1m: 8.0}}"""
        d = tmp / "batch"
        d.mkdir(parents=True)
        (d / "pipeline.yaml").write_text(pipeline_yaml(ep.base_url, steps, rows=rowsets, teacher_extra=grader,
                                                      extra="execution: {shard_size: 3, shards_in_flight: 4}"))
        from distillflow.api import with_execution
        from distillflow.engine.runner import run_plan

        progress = {"ray": PassProgress(), "local": PassProgress()}
        rr = run_plan(with_execution(distillflow.compile(str(d / "pipeline.yaml")), "ray", address), out_dir=d / "ray",
                      reporter=progress["ray"])
        ray_lines = sum(srv.stats["lines_submitted"].values())
        ray_batches = sum(srv.stats["batches_created"].values())
        again = distillflow.run(str(d / "pipeline.yaml"), out=d / "ray", progress=False, backend="ray", address=address)
        rerun_lines = sum(srv.stats["lines_submitted"].values()) - ray_lines
        rl = run_plan(distillflow.compile(str(d / "pipeline.yaml")), out_dir=d / "local", reporter=progress["local"])

        def files(o):
            return {n: (o / "data" / n).read_text() for n in ("curated.jsonl", "rejected.jsonl")}

        # a batch teacher as the generator: the driver reads the shards' prompts for it
        gen = d / "gen"
        gen.mkdir()
        (gen / "pipeline.yaml").write_text(pipeline_yaml(
            ep.base_url, '  - kind: generate\n    teachers: [grader]\n  - kind: filter\n    where: "len(response) > 12"\n',
            rows=rowsets, teacher_extra=grader, extra="execution: {shard_size: 3, shards_in_flight: 4}"))
        gr = distillflow.run(str(gen / "pipeline.yaml"), out=gen / "ray", progress=False, backend="ray", address=address)
        gl = distillflow.run(str(gen / "pipeline.yaml"), out=gen / "local", progress=False)
        generator = {"ray": files(gen / "ray"), "local": files(gen / "local"), "status": gr.manifest["status"],
                     "curated": gr.manifest["curated"], "local_curated": gl.manifest["curated"],
                     "answers": gr.manifest["batches"]["teachers"]["grader"]["answers"]}

        return {"generator": generator, "ray": files(d / "ray"), "local": files(d / "local"), "status": rr.manifest["status"],
                "ray_counts": rr.manifest["counts"], "local_counts": rl.manifest["counts"],
                "ray_batches": rr.manifest["batches"]["teachers"], "local_batches": rl.manifest["batches"]["teachers"],
                "ray_lines": ray_lines, "ray_batches_created": ray_batches,
                "lines_after_rerun": rerun_lines, "local_lines": sum(srv.stats["lines_submitted"].values()) - ray_lines - rerun_lines,
                "again_status": again.manifest["status"], "again_curated": again.manifest["curated"],
                "requests": ep.stats["requests"], "progress": {k: v.passes for k, v in progress.items()},
                "workers": json.loads((d / "ray" / "cache" / "ray-workers.json").read_text())}


def scenario_token(tmp: Path, address: str) -> dict:
    """A cluster with token authentication on, as Ray 2.60 turns it on for a head that finds a token in
    its HOME (any earlier plain ray.init() there writes one): the CLI on the same machine (same HOME)
    joins it; a driver whose HOME has no token is told how to get one; the same HOME still joins the
    shared cluster, which runs without authentication. A cluster of its own (head only, port 6396)."""
    import uuid

    home, bare = tmp / "home", tmp / "bare"
    (home / ".ray").mkdir(parents=True)
    bare.mkdir()
    token = uuid.uuid4().hex
    (home / ".ray" / "auth_token").write_text(token)
    own = "127.0.0.1:6396"
    with EndpointThread(latency=(0.0, 0.01)) as ep, \
            LocalRayCluster(node_cpus=[1], port=6396, env={"HOME": str(home), "RAY_AUTH_MODE": None}) as cluster:
        p = write(tmp / "tok", ep.base_url, 6, "  - kind: generate\n", "{shard_size: 3}")
        cluster.wait_head_started()
        head_log = (cluster.tmp / "head.log").read_text(errors="replace")
        base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        base["PYTHONPATH"] = str(ROOT)

        def cli(home_dir: Path, out: Path, at: str = own) -> subprocess.CompletedProcess:
            cmd = [sys.executable, "-m", "distillflow", "run", str(p), "--out", str(out), "--no-progress", "--address", at]
            return subprocess.run(cmd, env=dict(base, HOME=str(home_dir)), cwd=str(ROOT), capture_output=True,
                                  text=True, timeout=600)

        t0 = time.perf_counter()
        refused = cli(bare, tmp / "tok" / "bare-run")
        refused_s = time.perf_counter() - t0
        joined = cli(home, tmp / "tok" / "run")
        got = curated(tmp / "tok" / "run") if (tmp / "tok" / "run" / "data" / "curated.jsonl").is_file() else []
        # the same home (a token in it) against the shared cluster, which runs without authentication:
        # a driver in token mode there cannot start its actors, so the token must not be sent at once
        plain = cli(home, tmp / "tok" / "plain-run", at=address)
        got_plain = curated(tmp / "tok" / "plain-run") if (tmp / "tok" / "plain-run" / "data" / "curated.jsonl").is_file() else []
        return {"head_says_token": "Token authentication is enabled" in head_log,
                "joined_rc": joined.returncode, "joined_out": (joined.stdout + joined.stderr)[-2000:],
                "joined_said_retry": "requires its authentication token: joining again" in joined.stderr,
                "refused_said_fix": "requires Ray's authentication token" in refused.stderr
                                    and "~/.ray/auth_token" in refused.stderr,
                "refused_traceback": "Traceback" in refused.stdout + refused.stderr,
                "curated": len(got), "requests": ep.stats["requests"],
                "plain_rc": plain.returncode, "plain_out": (plain.stdout + plain.stderr)[-2000:], "plain_curated": len(got_plain),
                "refused_rc": refused.returncode, "refused_out": (refused.stdout + refused.stderr)[-2000:],
                "refused_s": round(refused_s, 1),
                "token_shown": token in joined.stdout + joined.stderr + refused.stdout + refused.stderr + plain.stdout + plain.stderr,
                "token_in_run_dir": [str(f) for f in (tmp / "tok").rglob("*") if f.is_file() and token in f.read_text(errors="replace")]}


def scenario_blind_node(tmp: Path, address: str) -> dict:
    """A node that does not see the run directory (the shared storage not mounted there): a cluster
    of its own (port 6397) whose head has no CPU and whose one worker node runs in a mount namespace
    where the run directory's parent is an empty folder (``view``). The CLI, on this machine, runs
    a pipeline there: it must stop with the message that names the cause and the fix, and the node
    must not have written anything at that path (what it writes lands in ``view``)."""
    shown, view = tmp / "shared", tmp / "view"
    shown.mkdir(parents=True)
    view.mkdir()
    blind = ["unshare", "-m", "sh", "-c", f'mount --bind "{view}" "{shown}" && exec "$0" "$@"']
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["PYTHONPATH"] = str(ROOT)
    with EndpointThread(latency=(0.0, 0.01)) as ep, \
            LocalRayCluster(node_cpus=[0, 1], port=6397, wrap={1: blind}) as cluster:
        p = write(tmp / "pipe", ep.base_url, 6, "  - kind: generate\n", "{shard_size: 3}")
        cluster.wait_head_started()
        cluster.wait_head_started(node=1)
        cmd = [sys.executable, "-m", "distillflow", "run", str(p), "--out", str(shown / "run"), "--no-progress",
               "--address", cluster.address]
        run = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
        return {"rc": run.returncode, "err": run.stderr[-3000:], "requests": ep.stats["requests"],
                "in_view": sorted(str(q.relative_to(view)) for q in view.rglob("*")),
                "run_dir": (shown / "run").is_dir()}


def scenario_copies(tmp: Path, address: str) -> dict:
    """A local transformers teacher with ``copies: 2`` (tiny model, CPU): two actors load it, the
    shard tasks send them their batches, the curated output is the local backend's; a second run of
    the same driver reuses the copies; a copy asking for a GPU the cluster lacks is refused by the
    CLI with the fix; a model that cannot load is named."""
    import distillflow
    from tests.support.tiny import build_tiny_chat_model

    model = build_tiny_chat_model(tmp / "tiny")

    def pipeline(d: Path, n: int, extra: str, max_tokens: int = 6) -> Path:
        d.mkdir(parents=True, exist_ok=True)
        (d / "pipeline.yaml").write_text(local_model_yaml(model, n, extra, "shard_size: 3, shards_in_flight: 4", max_tokens))
        return d / "pipeline.yaml"

    p = pipeline(tmp / "two", 12, "    copies: 2")
    t0 = time.perf_counter()
    rr = distillflow.run(str(p), out=tmp / "two" / "ray", progress=False, backend="ray", address=address)
    ray_s = time.perf_counter() - t0
    rl = distillflow.run(str(p), out=tmp / "two" / "local", progress=False)
    again = distillflow.run(str(p), out=tmp / "two" / "again", progress=False, backend="ray", address=address)

    def record(out: Path) -> dict:
        return json.loads((out / "cache" / "ray-workers.json").read_text())

    # a copy's process killed (kill -9): Ray starts it again and the next run is whole
    killed = record(tmp / "two" / "again")["model_copies"]["local"][0]["pid"]
    os.kill(killed, signal.SIGKILL)
    deadline_poll(lambda: not Path(f"/proc/{killed}").exists(), 60, f"copy process {killed} to end")
    after = distillflow.run(str(p), out=tmp / "two" / "after-kill", progress=False, backend="ray", address=address)

    # a copy killed (-9) in the middle of a batch (Ray titles the process after the method it runs):
    # Ray starts it again and sends it that batch again; nothing lost, nothing answered twice.
    # Answers of 256 tokens make a batch take seconds on this CPU (~2.5 s for 4 prompts)
    import threading

    slow = pipeline(tmp / "slow", 8, "    copies: 2", max_tokens=256)
    mid: dict = {}
    run_over = threading.Event()

    def killer() -> None:
        def generating():
            pids = _processes("ray::_RayModelCopy.generate")
            return pids[0] if pids else None

        try:
            pid = deadline_poll(lambda: run_over.is_set() or generating(), 300, "a model copy generating a batch", every=0.02)
            if pid is True:  # (the run ended first: no kill, and the test says so)
                mid["error"] = "the run ended before a copy was seen generating"
                return
            mid["pid"] = pid
            os.kill(pid, signal.SIGKILL)
        except (TimeoutError, OSError) as exc:
            mid["error"] = repr(exc)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    try:
        slow_r = distillflow.run(str(slow), out=tmp / "slow" / "ray", progress=False, backend="ray", address=address)
    finally:
        run_over.set()  # (a killer still looking stops: it must not kill a copy the next part uses)
        t.join(30)
    slow_l = distillflow.run(str(slow), out=tmp / "slow" / "local", progress=False)

    # batches queued on a copy when their run stops are not generated (a run's processes send their
    # batches with its stop mark, created as the run stops: ModelCopy.generate). Here one of the
    # slow teacher's copies, kept by the driver for a later run, generates a long batch (6 answers
    # of 256 tokens, seconds; sent with the mark of another run that does not stop); two more
    # batches of a "run" are queued behind it, and that run stops while the first is generated:
    # the two queued are skipped
    import ray

    from distillflow.engine.client import ChatRequest
    from distillflow.engine.ray_executor import _COPIES

    copy = next(h for key, h in _COPIES.items() if '"max_tokens": 256' in key[2])[0]
    run_dir, other = tmp / "skip" / "parts", tmp / "skip" / "other"
    run_dir.mkdir(parents=True)
    other.mkdir()
    mark = run_dir / "STOPPING"
    asks = [ChatRequest(f"s{i}", [{"role": "user", "content": f"question {i}: what is {i}+{i}?"}],
                        {"temperature": 0.0, "max_tokens": 256}) for i in range(10)]
    before = ray.get(copy.info.remote())
    refs = [copy.generate.remote(asks[:6], str(other / "STOPPING"))]
    deadline_poll(lambda: _processes("ray::_RayModelCopy.generate"), 120, "the copy generating the first batch", every=0.01)
    # the copy answers info() while it generates (a concurrency group of its own): its count of
    # batches is still the one before the long batch (answered after it, it would be one more)
    during = ray.get(copy.info.remote(), timeout=120)
    first_done = bool(ray.wait(refs[:1], timeout=0)[0])
    refs += [copy.generate.remote(asks[j:j + 2], str(mark)) for j in (6, 8)]
    mark.touch()
    skip = {"got": [None if r is None else [x.key for x in r] for r in ray.get(refs, timeout=600)],
            "before": before, "during": during, "first_done_at_info": first_done, "after": ray.get(copy.info.remote())}

    def cli(path: Path, out: Path) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-m", "distillflow", "run", str(path), "--out", str(out), "--no-progress", "--address", address]
        return subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)

    gpu = cli(pipeline(tmp / "gpu", 3, "    copies: 2\n    gpus_per_copy: 1"), tmp / "gpu" / "run")
    broken = pipeline(tmp / "broken", 3, "    copies: 1")
    (broken.parent / "pipeline.yaml").write_text(broken.read_text().replace(json.dumps(str(model)), json.dumps(str(tmp / "no-model"))))
    bad = cli(broken, tmp / "broken" / "run")
    return {"ray": (tmp / "two" / "ray" / "data" / "curated.jsonl").read_text(),
            "local": (tmp / "two" / "local" / "data" / "curated.jsonl").read_text(),
            "ray_curated": rr.manifest["curated"], "ray_new": rr.manifest["teachers"]["local"]["new"],
            "ray_s": round(ray_s, 1), "first": record(tmp / "two" / "ray"), "again": record(tmp / "two" / "again"),
            "again_new": again.manifest["teachers"]["local"]["new"],
            "killed": killed, "after": record(tmp / "two" / "after-kill"), "after_new": after.manifest["teachers"]["local"]["new"],
            "after_curated": (tmp / "two" / "after-kill" / "data" / "curated.jsonl").read_text(),
            "skip": skip, "mid_kill": mid, "mid": record(tmp / "slow" / "ray"), "mid_new": slow_r.manifest["teachers"]["local"]["new"],
            "mid_curated": (tmp / "slow" / "ray" / "data" / "curated.jsonl").read_text(),
            "mid_local": (tmp / "slow" / "local" / "data" / "curated.jsonl").read_text(),
            "gpu_rc": gpu.returncode, "gpu_err": gpu.stderr[-2000:], "gpu_out": gpu.stdout[-1000:],
            "bad_rc": bad.returncode, "bad_err": bad.stderr[-2000:], "bad_out": bad.stdout[-1000:]}


def scenario_client(tmp: Path, address: str) -> dict:
    """The same pipeline through Ray Client (``--address ray://HEAD:10001``: the head's client server,
    which ``ray start --head`` starts), from the CLI in another process; the local backend's output
    for comparison."""
    import socket

    import distillflow

    host = address.split(":")[0]

    def client_port_open() -> bool:
        try:
            socket.create_connection((host, 10001), timeout=1).close()
            return True
        except OSError:
            return False

    deadline_poll(client_port_open, 120, "the head's Ray Client server (port 10001)", every=0.5)
    with EndpointThread(latency=(0.0, 0.01)) as ep:
        p = write(tmp / "client", ep.base_url, 12, "  - kind: generate\n", "{shard_size: 3}")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        env["PYTHONPATH"] = str(ROOT)
        cmd = [sys.executable, "-m", "distillflow", "run", str(p), "--out", str(tmp / "client" / "ray"), "--no-progress",
               "--address", f"ray://{host}:10001"]
        proc = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
        distillflow.run(str(p), out=tmp / "client" / "local", progress=False)
        requests = ep.stats["requests"]

    # a local-model teacher in model copies, through Ray Client too (the copies' actor class and its
    # concurrency group go through the client server)
    from tests.support.tiny import build_tiny_chat_model

    model = build_tiny_chat_model(tmp / "tiny")
    (tmp / "copies").mkdir()
    cp = tmp / "copies" / "pipeline.yaml"
    cp.write_text(local_model_yaml(model, 8, "    copies: 2", "shard_size: 2, shards_in_flight: 4"))
    ccmd = [sys.executable, "-m", "distillflow", "run", str(cp), "--out", str(tmp / "copies" / "ray"), "--no-progress",
            "--address", f"ray://{host}:10001"]
    cproc = subprocess.run(ccmd, env=env, cwd=str(ROOT), capture_output=True, text=True, timeout=600)
    distillflow.run(str(cp), out=tmp / "copies" / "local", progress=False)

    def read(out: Path, name: str, parse=False):
        f = out / name
        return (json.loads(f.read_text()) if parse else f.read_text()) if f.is_file() else None

    ray_out, copies_out = tmp / "client" / "ray", tmp / "copies" / "ray"
    return {"rc": proc.returncode, "err": proc.stderr[-2000:], "out": proc.stdout[-1000:], "requests": requests,
            "ray": read(ray_out, "data/curated.jsonl"), "local": read(tmp / "client" / "local", "data/curated.jsonl"),
            "workers": read(ray_out, "cache/ray-workers.json", parse=True),
            "copies_rc": cproc.returncode, "copies_err": cproc.stderr[-2000:],
            "copies_ray": read(copies_out, "data/curated.jsonl"),
            "copies_local": read(tmp / "copies" / "local", "data/curated.jsonl"),
            "copies_workers": read(copies_out, "cache/ray-workers.json", parse=True)}


SCENARIOS = {"limits": scenario_limits, "retries": scenario_retries, "tpm": scenario_tpm, "shares": scenario_shares, "same_as_local": scenario_same_as_local,
             "kill_worker": scenario_kill_worker, "kill_driver": scenario_kill_driver, "outage": scenario_outage,
             "retry_downstream": scenario_retry_downstream, "batch_judge": scenario_batch_judge, "stop": scenario_stop,
             "token": scenario_token, "blind_node": scenario_blind_node, "copies": scenario_copies, "client": scenario_client, "cli": scenario_cli}


def main() -> None:
    result_path = Path(sys.argv[1])
    names = sys.argv[2:] or list(SCENARIOS)
    results: dict = {}
    tmp = Path(tempfile.mkdtemp(prefix="dfray-"))
    with LocalRayCluster(node_cpus=[1, 1]) as cluster:
        t0 = time.perf_counter()
        ray = cluster.connect()
        results["cluster_start_s"] = time.perf_counter() - t0
        results["nodes"] = len([x for x in ray.nodes() if x.get("Alive")])
        for name in names:
            t0 = time.perf_counter()
            try:
                results[name] = SCENARIOS[name](tmp / name, cluster.address)
            except Exception:
                results[name] = {"error": traceback.format_exc()}
            results[name]["_seconds"] = round(time.perf_counter() - t0, 1)
            result_path.write_text(json.dumps(results, indent=1, default=str))
        ray.shutdown()
    result_path.write_text(json.dumps(results, indent=1, default=str))
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
