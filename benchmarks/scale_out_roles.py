"""Where the Ray backend's CPU goes: per role and per thread, for 1 and 2 workers, against the local backend.

    python -m benchmarks.scale_out_roles --prompts 2000            # re-executes itself inside `unshare -n`
    python -m benchmarks.scale_out_roles --shard-size 500          # the same at another shard size

``benchmarks/scale_out.py`` gives the headline (CPU per record against the local backend); this
one says where a Ray run's CPU goes, from each thread's user and system time in /proc: the driver's
main thread and its other threads (Ray's, and the threads the run's steps use), each task worker's
busiest thread (its event loop: the requests) and its other threads, the permit hub, and the
cluster's daemons (GCS, raylets, agents). The local backend runs in this process first (the
same pipeline, the same endpoint, before any Ray import): its main thread, and everything else
it used (its helper threads end with each run, so only the process's total sees them).
Figures are CPU-seconds per 1,000 records, ``user+sys``, summed over ``--repeat`` runs of each
backend after a warm-up; on 2 shared cores they move by about ±0.02 from one invocation to the next.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TICK = os.sysconf("SC_CLK_TCK")


def _times(path: str) -> complex:
    """(user + sys*1j) seconds from a /proc stat file."""
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return complex(int(fields[11]), int(fields[12])) / TICK


def snapshot(pids: list[int]) -> dict:
    """(pid, tid) -> CPU of each thread, and (pid, "all") -> the process's (ended threads included)."""
    out: dict = {}
    for pid in pids:
        for task in glob.glob(f"/proc/{pid}/task/*"):
            try:
                out[(pid, int(task.rsplit("/", 1)[1]))] = _times(task + "/stat")
            except (OSError, ValueError):
                pass
        try:
            out[(pid, "all")] = _times(f"/proc/{pid}/stat")
        except OSError:
            pass
    return out


def _delta(before: dict, after: dict, into: dict) -> None:
    for key, v in after.items():
        into[key] = into.get(key, 0j) + v - before.get(key, 0j)


def _fmt(roles: dict, records: int) -> str:
    k = 1000 / records
    parts = [f"{name} {v.real * k:.3f}+{v.imag * k:.3f}" for name, v in roles.items()]
    total = sum(v.real + v.imag for v in roles.values()) * k
    return f"{', '.join(parts)} | total {total:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=4, help="runs of each backend (default 4)")
    ap.add_argument("--shard-size", type=int, default=250, help="prompts per shard (default 250, as scale_out)")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds the endpoint takes per answer (default 0)")
    args = ap.parse_args()
    if args.latency < 0:
        ap.error(f"--latency takes seconds >= 0, not {args.latency}")
    from benchmarks.ray_cluster import run_namespaced

    run_namespaced("benchmarks.scale_out_roles")  # (Ray must run in a network namespace of its own, on loopback)
    measure(args)


def measure(args) -> None:
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix="scale-roles-"))
    try:
        _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args, tmp: Path) -> None:
    import psutil

    from benchmarks.fake_endpoint import endpoint_process
    from benchmarks.ray_cluster import LocalRayCluster
    from benchmarks.scale_out import _pipeline, _run

    n, reps, me = args.prompts, max(1, args.repeat), os.getpid()
    shape = {"concurrency": 64, "in_flight": 4, "source": "jsonl", "shard_size": args.shard_size}
    print(f"CPU-s per 1,000 records (user+sys), {n} prompts, shards of {args.shard_size}, {reps} runs each, "
          f"endpoint latency {args.latency:g} s", flush=True)
    with endpoint_process(latency=(args.latency, args.latency), max_concurrency=64) as url:
        _run(_pipeline(tmp / "warm", url, 400, "warm", **shape), tmp / "warm" / "run")
        tot: dict = {}
        for r in range(reps):
            before = snapshot([me])
            _run(_pipeline(tmp / f"local{r}", url, n, f"local{r}", **shape), tmp / f"local{r}" / "run")
            _delta(before, snapshot([me]), tot)
        main_thread = tot.get((me, me), 0j)
        print("local  " + _fmt({"main": main_thread, "other": tot[(me, "all")] - main_thread}, n * reps), flush=True)
        for w in (1, 2):
            with LocalRayCluster(node_cpus=[1] * w, port=6390 + w) as cluster:
                ray = cluster.connect()
                warm = tmp / f"warm{w}"
                _run(_pipeline(warm, url, 400, "warm", **dict(shape, shard_size=50)), warm / "run",
                     backend="ray", address=cluster.address)
                pids = [me]
                for proc in cluster.procs:
                    p = psutil.Process(proc.pid)
                    pids += [p.pid, *(c.pid for c in p.children(recursive=True))]
                names = {}
                for pid in pids:
                    try:
                        names[pid] = " ".join(psutil.Process(pid).cmdline()[:1])
                    except psutil.Error:
                        names[pid] = "?"
                tot = {}
                for r in range(reps):
                    before = snapshot(pids)
                    d = tmp / f"ray{w}-{r}"
                    _run(_pipeline(d, url, n, f"ray{w}-{r}", **shape), d / "run", backend="ray", address=cluster.address)
                    _delta(before, snapshot(pids), tot)
                ray.shutdown()
            roles: dict = {}

            def add(role: str, v: complex) -> None:
                roles[role] = roles.get(role, 0j) + v

            for pid in pids:
                whole = tot.get((pid, "all"), 0j)
                threads = {k[1]: v for k, v in tot.items() if k[0] == pid and k[1] != "all"}
                if pid == me:
                    add("driver main", threads.get(me, 0j))
                    add("driver other", whole - threads.get(me, 0j))
                elif names[pid].startswith("ray::") and "PermitHub" not in names[pid] and whole.real + whole.imag > 0.1 * reps:
                    loop = max(threads.values(), key=lambda c: c.real + c.imag)  # its event loop: the requests
                    add("worker loop", loop)
                    add("worker other", whole - loop)
                elif "PermitHub" in names[pid]:
                    add("hub", whole)
                else:
                    add("daemons", whole)
            print(f"ray{w}   " + _fmt(roles, n * reps), flush=True)


if __name__ == "__main__":
    main()
