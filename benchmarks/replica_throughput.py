"""Throughput of one teacher on 1 vs 3 replicas of a latency-bound endpoint, in one run.

Each replica is ``benchmarks/fake_endpoint.py`` in its own process with its own slot limit
(``--slots``, default 16 completions at once, uniform 0.2–0.3 s each), so one replica serves
about slots / 0.25 s = 64 req/s whatever the client sends. The teacher's window
(``--concurrency``, default 48) is the same in both runs: with one replica most of it queues at
the server; with three, least-loaded routing spreads it over all of them.

    python -m benchmarks.replica_throughput            # n=1500 per run
    python -m benchmarks.replica_throughput --quick    # n=300

The last line printed is ``rps_1=X rps_3=Y ratio=Y/X capacity_1=A capacity_3=B``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script as well as with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.fake_endpoint import endpoint_process, fetch_stats, reset_stats  # noqa: E402

LATENCY = (0.2, 0.3)


def measure(urls: list[str], n: int, concurrency: int) -> tuple[float, list[dict]]:
    """Send n requests through the teacher client over ``urls``; (req/s, per-replica stats)."""
    from distillflow.engine.client import ChatRequest, OpenAICompatibleClient

    client = OpenAICompatibleClient(urls if len(urls) > 1 else urls[0], "fake-teacher",
                                    concurrency=concurrency, timeout_s=60)
    reqs = [ChatRequest(f"k{i}", [{"role": "user", "content": f"Question {i}: why does topic {i % 97} matter?"}],
                        {"max_tokens": 64, "temperature": 0.7}) for i in range(n)]
    done = []
    for u in urls:
        reset_stats(u)
    t0 = time.perf_counter()
    client.run(reqs, lambda r: done.append(r.error))
    wall = time.perf_counter() - t0
    errors = [e for e in done if e]
    if len(done) != n or errors:
        raise RuntimeError(f"{len(done)} results for {n} requests, {len(errors)} errors: {errors[:3]}")
    return n / wall, [fetch_stats(u) for u in urls]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="teacher throughput on 1 vs 3 replicas")
    ap.add_argument("--n", type=int, default=1500, help="requests per run")
    ap.add_argument("--slots", type=int, default=16, help="completions each replica serves at once")
    ap.add_argument("--concurrency", type=int, default=48, help="the teacher's window (both runs)")
    ap.add_argument("--quick", action="store_true", help="n=300")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 300
    per_replica = args.slots / ((LATENCY[0] + LATENCY[1]) / 2)
    print(f"each replica: {args.slots} slots, latency uniform{LATENCY} s, capacity {per_replica:.1f} req/s; "
          f"teacher window {args.concurrency}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
          flush=True)
    with ExitStack() as stack:
        urls = [stack.enter_context(endpoint_process(latency=LATENCY, max_concurrency=args.slots)) for _ in range(3)]
        rps_1, s1 = measure(urls[:1], args.n, args.concurrency)
        print(f"1 replica : {rps_1:6.1f} req/s ({rps_1 / per_replica:.0%} of its capacity), "
              f"max {s1[0]['max_in_flight']} in flight at the server", flush=True)
        rps_3, s3 = measure(urls, args.n, args.concurrency)
        split = ", ".join(str(s["requests"]) for s in s3)
        print(f"3 replicas: {rps_3:6.1f} req/s ({rps_3 / (3 * per_replica):.0%} of their capacity), "
              f"requests per replica {split}, max in flight per replica "
              f"{', '.join(str(s['max_in_flight']) for s in s3)}", flush=True)
    print(f"rps_1={rps_1:.1f} rps_3={rps_3:.1f} ratio={rps_3 / rps_1:.2f} "
          f"capacity_1={per_replica:.1f} capacity_3={3 * per_replica:.1f}", flush=True)


if __name__ == "__main__":
    main()
