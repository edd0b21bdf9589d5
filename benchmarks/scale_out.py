"""Records/s and CPU per record: the local backend vs the Ray backend with 1 and 2 workers, one invocation.

    python -m benchmarks.scale_out --prompts 2000          # re-executes itself inside `unshare -n`
    python -m benchmarks.scale_out --prompts 2000 --repeat 1 --breakdown   # one run each, CPU per process
    python -m benchmarks.scale_out --prompts 8000 --shard-size 1000 --repeat 3   # the engine's default shard size

Same zero-latency endpoint (its own process: its CPU is not counted) for every backend, same
pipeline (generate, shards of 250). The local backend runs in a process of its own, which never
joins a Ray cluster (its CPU: that process's); each Ray backend runs from this process on a
real cluster on loopback (ray1: a head with 1 CPU; ray2: a head with 1 CPU plus a worker node with
1 CPU, so shard tasks run in two worker processes on two raylets). CPU is counted for everything
that works for the run: this process (the driver) plus every process of the cluster (GCS, raylets,
the teacher hub, the task workers), sampled every 0.25 s by pid (the sampler's own CPU taken out), idle cluster overhead included.
That strict figure is the headline (``cpu vs local``). Beside it, ``job only`` counts the processes
the job itself runs (the driver and Ray's worker processes: task workers and the permit hub) and
leaves out the cluster's daemons, which run whether or not a job does (GCS, raylets, log monitors,
dashboard and runtime-env agents, ``ray start``): what a job adds to a cluster that is up anyway.
Each Ray backend runs ``--repeat`` times (default 5), each run right after a run of the local
backend, so that both see the same machine; the table holds medians (the local one over all its
runs), and each run's CPU per 1,000 records is printed above it: one run of a second or less
moves by ±20% from one to the next on 2 cores, and the first full-size run of a process costs
more than the later ones (its heap grows).
The last line is ``local_rps=A ray1_rps=B ray2_rps=C`` (median seconds per run).

On a machine with more cores, ``--workers 1,4,8 --endpoints 6 --concurrency 512`` measures how the
Ray backend scales: a cluster of 1, 4 and 8 one-CPU nodes, an endpoint served by six processes
(one process of it serves ~3,000 zero-latency requests/s, so a single one would be what limits
every run), shards in flight twice the largest worker count; the last line then has one
``rayN_rps`` per worker count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _pipeline(d: Path, base_url: str, n: int, tag: str, shard_size: int = 250, concurrency: int = 64,
              in_flight: int = 4, source: str = "jsonl") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    if source == "inline":  # the rows in the pipeline file: the driver parses them and writes them back out
        rows = "".join(f'\n    - {{question: "{tag} {i}: tell me about number {i}", answer: "{i}"}}' for i in range(n))
        src = f"kind: inline\n  columns: {{prompt: question, reference: answer}}\n  rows:{rows}"
    else:  # a prompts file beside it, as runs of many prompts have
        with open(d / "prompts.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(f'{{"question": "{tag} {i}: tell me about number {i}", "answer": "{i}"}}\n' for i in range(n))
        src = "kind: jsonl\n  path: prompts.jsonl\n  columns: {prompt: question, reference: answer}"
    text = f"""name: scale_out
source:
  {src}
teachers:
  - name: teacher
    provider: openai
    base_url: {base_url}
    model: fake-teacher
    params: {{temperature: 0.0, max_tokens: 32}}
    concurrency: {concurrency}
steps:
  - kind: generate
execution: {{shard_size: {shard_size}, shards_in_flight: {in_flight}}}
"""
    (d / "pipeline.yaml").write_text(text)
    return d / "pipeline.yaml"


class CpuSampler:
    """CPU seconds used by a set of processes (and their descendants) while it runs, by pid."""

    def __init__(self, alone, roots):
        import psutil

        self.psutil = psutil
        self.alone = [psutil.Process(p) for p in alone]  # counted without their children (the endpoint)
        self.roots = [psutil.Process(p) for p in roots]
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._sample()
        self.first = dict(self.last)
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _sample(self) -> None:
        procs = list(self.alone)
        for r in self.roots:
            try:
                procs += [r, *r.children(recursive=True)]
            except self.psutil.Error:
                pass
        for p in procs:
            try:
                t = p.cpu_times()
                self.last[p.pid] = t.user + t.system
                if p.pid not in self.names:
                    self.names[p.pid] = " ".join(p.cmdline()[:2])[-60:]
            except self.psutil.Error:
                pass

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()
        self.own = time.thread_time()  # the sampler's own CPU, counted in this process: taken out

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        self._sample()
        return sum(v - self.first.get(pid, 0.0) for pid, v in self.last.items()) - self.own

    def job_cpu(self) -> float:
        """CPU seconds of the driver and Ray's worker processes only (``ray::...``, agents excluded)."""
        own = {p.pid for p in self.alone}
        total = 0.0
        for pid, v in self.last.items():
            name = self.names.get(pid, "")
            if pid in own or (name.startswith("ray::") and not name.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))):
                total += v - self.first.get(pid, 0.0)
        return total - self.own

    def by_process(self) -> dict[str, float]:
        """CPU seconds per process kind (its command line's first word), largest first."""
        out: dict[str, float] = {}
        for pid, v in self.last.items():
            name = self.names.get(pid, f"pid {pid}")
            out[name] = out.get(name, 0.0) + v - self.first.get(pid, 0.0)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _run(path: Path, out: Path, **kw) -> tuple[float, int]:
    import distillflow

    t0 = time.perf_counter()
    r = distillflow.run(str(path), out=out, progress=False, **kw)
    return time.perf_counter() - t0, r.manifest["curated"]


def _local_runner(conn, url: str, tmp: str, shape: dict) -> None:
    """The local backend's runs, in a process of their own that never joins the Ray cluster (in the
    driver's process, Ray's threads would count towards the local figure): warmed up once, then one
    run per request, answered with (seconds, CPU seconds of this process, records)."""
    tmp_p = Path(tmp)
    _run(_pipeline(tmp_p / "warm-local", url, 200, "warm", **shape), tmp_p / "warm-local" / "run")
    conn.send("ready")
    while (msg := conn.recv()) is not None:
        n, tag = msg
        p = _pipeline(tmp_p / tag, url, n, tag, **shape)
        c0 = time.process_time()
        secs, got = _run(p, tmp_p / tag / "run")
        conn.send((secs, time.process_time() - c0, got))


def _say(tag: str, secs: float, cpu: float, got: int) -> None:
    """One line per run as it ends, so that a run cut short by a time limit still shows what it measured."""
    print(f"  run {tag}: {got} records in {secs:.2f}s ({got / secs:.0f} rec/s), "
          f"{1000 * cpu / max(1, got):.2f} CPU-s per 1k", flush=True)


def measure(args) -> None:
    import shutil

    n, reps = args.prompts, max(1, args.repeat)
    tmp = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        _measure(args, n, reps, tmp)
    finally:  # (each invocation writes ~10 run directories of its own)
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args, n: int, reps: int, tmp: Path) -> None:
    from benchmarks.fake_endpoint import endpoint_process
    from benchmarks.ray_cluster import LocalRayCluster

    import multiprocessing as mp

    workers = args.workers
    # in flight: enough shards for every worker (the default's 4 for one and two workers)
    shape = {"concurrency": args.concurrency, "in_flight": max(4, 2 * max(workers)), "source": args.source,
             "shard_size": args.shard_size}
    runs: dict[str, list[tuple[float, float, float, int]]] = {"local": []}  # (s, cpu, job cpu, records)
    runs.update({f"ray{w}": [] for w in workers})
    # each endpoint process takes the whole limit: the teacher's concurrency bounds the total
    lat = (args.latency, args.latency)
    with endpoint_process(latency=lat, max_concurrency=args.concurrency, processes=args.endpoints) as url:
        # warm-up: imports, the aiohttp session, the parquet writer
        _run(_pipeline(tmp / "warm", url, 200, "warm", **shape), tmp / "warm" / "run")
        ctx = mp.get_context("spawn")
        conn, child_conn = ctx.Pipe()
        runner = ctx.Process(target=_local_runner, args=(child_conn, url, str(tmp), shape), daemon=True)
        runner.start()
        assert conn.recv() == "ready"

        def local(tag: str) -> None:
            conn.send((n, tag))
            secs, cpu, got = conn.recv()
            runs["local"].append((secs, cpu, cpu, got))
            _say(tag, secs, cpu, got)

        for w in workers:  # w nodes of 1 CPU each: w task workers, each on a raylet of its own
            name = f"ray{w}"
            with LocalRayCluster(node_cpus=[1] * w, port=6390 + w) as cluster:
                ray = cluster.connect()
                # workers started on every node, modules imported: shards of 50, at least one per node
                warm = max(200, 100 * w)
                _run(_pipeline(tmp / f"{name}-warm", url, warm, f"{name}-warm", **dict(shape, shard_size=50)),
                     tmp / f"{name}-warm" / "run", backend="ray", address=cluster.address)
                time.sleep(1.0)
                for r in range(reps):  # alternated with local runs: both see the same machine
                    local(f"local-{name}-{r}")
                    tag = f"{name}-{r}"
                    p = _pipeline(tmp / tag, url, n, tag, **shape)
                    sampler = CpuSampler([os.getpid()], [pr.pid for pr in cluster.procs])
                    secs, got = _run(p, tmp / tag / "run", backend="ray", address=cluster.address)
                    runs[name].append((secs, sampler.stop(), sampler.job_cpu(), got))
                    _say(tag, secs, runs[name][-1][1], got)
                    if args.breakdown:
                        for what, cpu in sampler.by_process().items():
                            if cpu >= 0.05:
                                print(f"  {tag} cpu {cpu:6.2f}s  {what}")
                ray.shutdown()
        conn.send(None)
        runner.join(30)
    per_k = {name: [1000 * cpu / max(1, got) for _, cpu, _, got in rs] for name, rs in runs.items()}
    job_k = {name: [1000 * job / max(1, got) for _, _, job, got in rs] for name, rs in runs.items()}
    base = median(per_k["local"])
    if reps > 1:
        print(f"each run's CPU-s per 1,000 records ({reps} runs of each Ray backend, each after a local run):")
        for name in runs:
            print(f"  {name:6} " + " ".join(f"{x:.2f}" for x in per_k[name]))
    print(f"{'backend':8} {'records':>8} {'seconds':>8} {'rec/s':>8} {'cpu_s/1k':>9} {'cpu vs local':>13} {'job only':>9}")
    rps = {}
    for name, rs in runs.items():
        secs = median([s for s, _, _, _ in rs])
        got = rs[0][3]
        rps[name] = got / secs
        per, job = median(per_k[name]), median(job_k[name])
        print(f"{name:8} {got:8d} {secs:8.2f} {rps[name]:8.1f} {per:9.2f} {per / base:12.2f}x {job / base:8.2f}x")
    if reps > 1:
        print(f"(medians of {len(runs['local'])} local runs and {reps} runs of each Ray backend)")
    print(" ".join(f"{name}_rps={rps[name]:.1f}" for name in runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--breakdown", action="store_true", help="print each Ray run's CPU seconds per process")
    ap.add_argument("--repeat", type=int, default=5,
                    help="runs of each Ray backend, each after a run of the local one; medians are reported (default 5)")
    ap.add_argument("--workers", default="1,2",
                    help="comma-separated worker counts: a cluster of that many 1-CPU nodes each (default 1,2)")
    ap.add_argument("--endpoints", type=int, default=1,
                    help="endpoint processes serving the port (default 1; give a many-worker run enough of them)")
    ap.add_argument("--concurrency", type=int, default=64, help="the teacher's concurrency (default 64)")
    ap.add_argument("--shard-size", type=int, default=250, help="prompts per shard (default 250)")
    ap.add_argument("--source", choices=("jsonl", "inline"), default="jsonl",
                    help="prompts in a JSONL file beside the pipeline (default), or inline in its YAML, as "
                         "figures before 2026-12-04 were measured (the driver then parses and re-emits every row)")
    ap.add_argument("--latency", type=float, default=0.0,
                    help="seconds the endpoint takes per answer (default 0: the issue's zero-latency endpoint; "
                         "a real teacher's latency leaves the cores idle between answers)")
    args = ap.parse_args()
    try:
        args.workers = sorted({int(w) for w in args.workers.split(",")})
    except ValueError:
        ap.error(f"--workers takes worker counts such as 1,4,8, not {args.workers!r}")
    if args.workers[0] < 1 or args.endpoints < 1 or args.concurrency < 1 or args.shard_size < 1:
        ap.error("--workers, --endpoints, --concurrency and --shard-size take positive numbers")
    if args.latency < 0:
        ap.error(f"--latency takes seconds >= 0, not {args.latency}")
    from benchmarks.ray_cluster import run_namespaced

    run_namespaced("benchmarks.scale_out")  # (Ray must run in a network namespace of its own, on loopback)
    measure(args)


if __name__ == "__main__":
    main()
