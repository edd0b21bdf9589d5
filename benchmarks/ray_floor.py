"""Ray's own floor under a two-worker run: what the cluster costs before distillflow does any work in it.

    python -m benchmarks.ray_floor --prompts 2000          # re-executes itself inside `unshare -n`

``benchmarks/scale_out.py`` compares the Ray backend's CPU per record with the local backend's.
This one asks how much of the two-worker figure Ray itself puts there, on the same cluster (two
1-CPU nodes on loopback), the same endpoint and the same pipeline, in one invocation:

1. the local backend's runs (a process of its own), alternated with the Ray backend's two-worker
   runs, as ``scale_out`` does: CPU per run of every process that works for it, wall time, the
   shard tasks it sent and the permit hub's calls (``cache/ray-workers.json``);
2. the idle cluster: the CPU its processes (and this driver) burn per second with nothing running;
3. a shard task that does nothing: the same Ray options (1 CPU, SPREAD, retries) and arguments of
   the same shape (the plan's holder, the hub's handle, the options, a reply like a shard's), four
   in flight; its CPU per task in all processes, the idle burn over the same seconds taken out;
4. a call to an actor that does nothing (an async actor, as the hub is), the same way.

Ray's floor for a run is then ``idle rate x the run's seconds + tasks x task CPU + hub calls x call
CPU`` (the workers' calls as the run's record counts them, and the driver's three): what a run of that length with that many tasks and calls costs in Ray's processes even if
each task and call did nothing. Its ratio to the local backend's CPU per run is the part of the
two-worker figure that engine work cannot remove (the hub's calls are the global limits' protocol,
which the backend must keep). The last line is ``local_cpu=A ray2_cpu=B floor=C floor_ratio=D``
(CPU-seconds per run, medians).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

IN_FLIGHT = 4
DRIVER_CALLS = 3  # the driver's own calls to the hub each run: open, status, close (its record counts the workers')


def floor_cpu(run: dict, idle_rate: float, task_cpu: float, call_cpu: float) -> dict:
    """Ray's floor under one run (``secs``, ``tasks``, hub ``calls``), by part, and its ``total``."""
    parts = {"idle": idle_rate * run["secs"], "tasks": run["tasks"] * task_cpu,
             "hub calls": (run["calls"] + DRIVER_CALLS) * call_cpu}
    return {**parts, "total": sum(parts.values())}


def _noop_task(box_holder, hub, run_id, opts, k, nids, inputs, keep, read_source=False, recomputed=()):
    """A shard task's signature and reply, with no work in between."""
    return {"outputs": {}, "complete": {n: True for n in nids}, "pid": os.getpid(), "node": "n" * 56,
            "part": f"{k:07d}-{'0' * 12}.part", "stats": {n: {"in": 250, "out": 250, "rejected": 0, "cached": False,
                                                              "units": 250, "errors": 0} for n in nids},
            "ledger": {"teacher": {"requests": 250, "input_tokens": 5000, "output_tokens": 2500, "cost": 0.0}},
            "budget_hit": False, "worker": "w" * 30, "replicas": {}}


class _NoopActor:
    async def call(self, *args, **kwargs):
        return {"slots": 0, "rate": 0, "wait": 0.0, "budget_hit": False, "held": 0}


def _cluster_cpu(cluster):
    from benchmarks.scale_out import CpuSampler

    return CpuSampler([os.getpid()], [p.pid for p in cluster.procs])


def _per_call(ray, cluster, submit, n: int, idle_rate: float) -> float:
    """CPU seconds per call of ``submit(i)`` (an ObjectRef), ``IN_FLIGHT`` at a time, idle burn taken out."""
    ray.get([submit(i) for i in range(20)])  # warm: workers started, functions exported
    sampler, t0 = _cluster_cpu(cluster), time.perf_counter()
    pending, sent, done = [], 0, 0
    while done < n:
        while len(pending) < IN_FLIGHT and sent < n:
            pending.append(submit(sent))
            sent += 1
        ready, pending = ray.wait(pending, num_returns=1)
        ray.get(ready)
        done += 1
    cpu, secs = sampler.stop(), time.perf_counter() - t0
    return max(0.0, cpu - idle_rate * secs) / n


def measure(args) -> None:
    with tempfile.TemporaryDirectory(prefix="ray-floor-", ignore_cleanup_errors=True) as tmp:
        _measure(args, Path(tmp))


def _measure(args, tmp: Path) -> None:
    import multiprocessing as mp

    from benchmarks.fake_endpoint import endpoint_process
    from benchmarks.ray_cluster import LocalRayCluster
    from benchmarks.scale_out import _local_runner, _pipeline, _run

    n, reps = args.prompts, max(1, args.repeat)
    shape = {"concurrency": 64, "in_flight": IN_FLIGHT, "source": "jsonl", "shard_size": args.shard_size}
    local: list[float] = []
    runs: list[dict] = []
    with endpoint_process(latency=(0.0, 0.0), max_concurrency=64) as url:
        ctx = mp.get_context("spawn")
        conn, child = ctx.Pipe()
        runner = ctx.Process(target=_local_runner, args=(child, url, str(tmp), shape), daemon=True)
        runner.start()
        assert conn.recv() == "ready"
        with LocalRayCluster(node_cpus=[1, 1], port=6398) as cluster:
            ray = cluster.connect()
            warm = tmp / "ray-warm"
            _run(_pipeline(warm, url, 200, "warm", **dict(shape, shard_size=50)), warm / "run",
                 backend="ray", address=cluster.address)
            time.sleep(1.0)
            for r in range(reps):  # alternated: both see the same machine
                conn.send((n, f"local-{r}"))
                _, cpu, got = conn.recv()
                local.append(cpu)
                d = tmp / f"ray-{r}"
                p = _pipeline(d, url, n, f"ray{r}", **shape)
                sampler, t0 = _cluster_cpu(cluster), time.perf_counter()
                _, got = _run(p, d / "run", backend="ray", address=cluster.address)
                cpu, secs = sampler.stop(), time.perf_counter() - t0
                rec = json.loads((d / "run" / "cache" / "ray-workers.json").read_text())
                man = json.loads((d / "run" / "manifest.json").read_text())
                calls = (rec.get("hub_calls") or 0) + (rec.get("hub_watch_calls") or 0)  # (the workers')
                runs.append({"cpu": cpu, "secs": secs, "tasks": man["execution"]["shards"], "calls": calls})
                print(f"  run {r}: local {local[-1]:.3f} CPU-s; ray2 {cpu:.3f} CPU-s in {secs:.2f}s, "
                      f"{runs[-1]['tasks']} shard tasks, {calls} hub calls", flush=True)

            time.sleep(1.0)  # the last run's slots and watches settle
            sampler = _cluster_cpu(cluster)
            time.sleep(args.idle_s)
            idle_rate = sampler.stop() / args.idle_s

            from distillflow.engine.ray_executor import TASK_RETRIES, permit_hub

            task = ray.remote(num_cpus=1, max_retries=TASK_RETRIES, scheduling_strategy="SPREAD")(_noop_task)
            holder = [ray.put({"spec": {f"field{i}": "x" * 40 for i in range(60)}, "env": {}})]
            hub = permit_hub(ray)
            opts = {"out_dir": str(tmp), "prompts_dir": str(tmp / "p"), "shard_size": args.shard_size,
                    "hashes": {"__source__": "0" * 16, "generate": "1" * 16}, "retry_errors": False,
                    "retry_transient": (), "parts_dir": str(tmp / "parts"), "attempt": "a" * 12, "copies": {},
                    "journal": "wal"}
            task_cpu = _per_call(ray, cluster, lambda k: task.remote(holder, hub, "r" * 32, opts, k, ["generate"], {},
                                                                      [], True, ()), args.calls, idle_rate)
            actor = ray.remote(_NoopActor).options(num_cpus=0, max_concurrency=1000).remote()
            call_cpu = _per_call(ray, cluster, lambda k: actor.call.remote("r" * 32, worker="w" * 30, teacher="teacher",
                                                                            give_back=0, cost=0.0, want=32),
                                 args.calls, idle_rate)
            ray.shutdown()
        conn.send(None)
        runner.join(30)

    floors = [floor_cpu(x, idle_rate, task_cpu, call_cpu) for x in runs]
    loc, ray2, floor = median(local), median(x["cpu"] for x in runs), median(f["total"] for f in floors)
    print(f"idle cluster (two nodes, this driver): {idle_rate:.3f} CPU-s per second")
    print(f"a shard task that does nothing: {1000 * task_cpu:.2f} ms of CPU; a call to an actor that does "
          f"nothing: {1000 * call_cpu:.2f} ms")
    print(f"per run of {n} prompts (medians of {reps}): local {loc:.3f} CPU-s; ray2 {ray2:.3f} ({ray2 / loc:.2f}x); "
          f"Ray's floor {floor:.3f} = "
          + " + ".join(f"{part} {median(f[part] for f in floors):.3f}" for part in ("idle", "tasks", "hub calls")))
    print(f"Ray's floor is {floor / loc:.2f}x of the local run's CPU: of ray2's extra ({ray2 - loc:.3f} CPU-s), "
          f"{floor:.3f} is the floor and {ray2 - loc - floor:.3f} the rest")
    print(f"local_cpu={loc:.3f} ray2_cpu={ray2:.3f} floor={floor:.3f} floor_ratio={floor / loc:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each backend, alternated (default 5)")
    ap.add_argument("--shard-size", type=int, default=250, help="prompts per shard (default 250, as scale_out)")
    ap.add_argument("--idle-s", type=float, default=10.0, help="seconds the idle cluster is measured (default 10)")
    ap.add_argument("--calls", type=int, default=200, help="no-op tasks and actor calls measured (default 200 each)")
    args = ap.parse_args()
    if args.prompts < 1 or args.repeat < 1 or args.shard_size < 1 or args.idle_s <= 0 or args.calls < 1:
        ap.error("--prompts, --repeat, --shard-size, --idle-s and --calls take positive numbers")
    from benchmarks.ray_cluster import run_namespaced

    run_namespaced("benchmarks.ray_floor")  # (Ray must run in a network namespace of its own, on loopback)
    measure(args)


if __name__ == "__main__":
    main()
