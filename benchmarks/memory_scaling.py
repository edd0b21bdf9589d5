"""Peak memory against the number of prompts: generate -> judge -> filter -> exact dedup.

The pipeline runs through ``distillflow run`` (a subprocess per size, so each peak RSS is its own)
against a zero-latency local endpoint (``benchmarks/fake_endpoint.py``, its own process, grading
judge prompts with a parseable score). The engine streams shards through the steps, so peak
memory should depend on ``execution.shard_size`` x ``shards_in_flight``, not on the prompts:
the target is ``rss_large_mb <= 1.3 x rss_small_mb``.

    python -m benchmarks.memory_scaling                         # 20,000 and 200,000 prompts
    python -m benchmarks.memory_scaling --small 2000 --large 20000
    python -m benchmarks.memory_scaling --only 1000000          # one size (the README's 1M run)

    # the earlier in-memory engine as a same-run baseline for records/s (a checkout of c85de1a):
    git worktree add /tmp/df-old c85de1a
    python -m benchmarks.memory_scaling --baseline-tree /tmp/df-old --baseline-n 20000

Last line: ``rss_small_mb=A rss_large_mb=B records_per_s=C`` (records/s: prompts of the large run
per second of its whole CLI process, start to outputs written). With ``--baseline-tree`` the same
pipeline also runs, just before, on that source tree (no ``execution:`` section: the earlier engine
has none) and on this one at ``--baseline-n`` prompts, and a line ``baseline ...`` prints both
records/s and their ratio: machine load moves both alike, so the ratio is the number to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cli_run import time_cli_run  # noqa: E402
from benchmarks.fake_endpoint import endpoint_process  # noqa: E402


def write_prompts(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"Question {i}: why does topic {i % 997} matter to a student of "
                                           f"distributed systems? Give one example ({i})."}) + "\n")


PIPELINE = """name: memory
source: {{kind: jsonl, path: prompts.jsonl}}
teachers:
  - {{name: teacher, provider: openai, base_url: "{url}", model: fake-teacher, concurrency: 64,
     params: {{max_tokens: 64, temperature: 0.7}}}}
steps:
  - kind: generate
  - {{kind: judge, teacher: teacher}}
  - {{kind: filter, where: "judge_score >= 2"}}
  - {{kind: dedup}}
"""
EXECUTION = "execution: {{shard_size: {shard_size}, shards_in_flight: {in_flight}}}\n"


def measure(url: str, n: int, shard_size: int, in_flight: int, tree: Path = ROOT) -> dict:
    """One `distillflow run` of n prompts in a fresh directory: peak RSS (MiB), wall seconds, counts.

    ``tree``: the source tree whose ``distillflow`` runs (another one has no ``execution:`` section).
    """
    with tempfile.TemporaryDirectory(prefix="df-mem-") as tmp:
        tmp = Path(tmp)
        write_prompts(tmp / "prompts.jsonl", n)
        text = PIPELINE.format(url=url)
        if tree == ROOT:
            text += EXECUTION.format(shard_size=shard_size, in_flight=in_flight)
        (tmp / "p.yaml").write_text(text)
        # GNU time is not everywhere: a tiny wrapper reads the child's peak RSS from getrusage
        wrapper = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
                   "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)")
        wall, proc = time_cli_run(tmp, tree=tree, prefix=[sys.executable, "-c", wrapper])
        rss_kib = int(next(line.split()[1] for line in proc.stderr.splitlines() if line.startswith("MAXRSS")))
        manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    return {"n": n, "rss_mb": rss_kib / 1024, "wall_s": wall, "curated": manifest["curated"],
            "rejected": manifest["rejected"], "timings": manifest["timings"]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=20_000)
    ap.add_argument("--large", type=int, default=200_000)
    ap.add_argument("--only", type=int, help="measure one size only")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=4)
    ap.add_argument("--baseline-tree", type=Path, help="a source tree of an earlier engine (e.g. a worktree of c85de1a)")
    ap.add_argument("--baseline-n", type=int, default=20_000, help="prompts for the baseline comparison")
    args = ap.parse_args(argv)
    if args.baseline_tree and not (args.baseline_tree / "distillflow" / "__init__.py").is_file():
        ap.error(f"--baseline-tree {args.baseline_tree}: no distillflow/ package there (make one with "
                 "`git worktree add DIR c85de1a`)")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; shard_size {args.shard_size}, "
          f"{args.in_flight} shards in flight", flush=True)
    with endpoint_process(latency=(0.0, 0.0), max_concurrency=64, grade=True) as url:
        if args.baseline_tree:
            old = measure(url, args.baseline_n, args.shard_size, args.in_flight, tree=args.baseline_tree.resolve())
            new = measure(url, args.baseline_n, args.shard_size, args.in_flight)
            old_rps, new_rps = old["n"] / old["wall_s"], new["n"] / new["wall_s"]
            print(f"baseline n={args.baseline_n}: earlier engine {old_rps:.0f} records/s, peak RSS {old['rss_mb']:.0f} MiB, "
                  f"{old['curated']} curated; this engine {new_rps:.0f} records/s, peak RSS {new['rss_mb']:.0f} MiB, "
                  f"{new['curated']} curated; ratio {new_rps / old_rps:.2f}", flush=True)
        sizes = [args.only] if args.only else [args.small, args.large]
        got = []
        for n in sizes:
            r = measure(url, n, args.shard_size, args.in_flight)
            got.append(r)
            print(f"n={n}: peak RSS {r['rss_mb']:.0f} MiB, {r['wall_s']:.1f} s for the whole CLI run "
                  f"({n / r['wall_s']:.0f} records/s), {r['curated']} curated, {r['rejected']} rejected; "
                  f"step spans {r['timings']}", flush=True)
    if args.only:
        r = got[0]
        print(f"rss_mb={r['rss_mb']:.0f} wall_s={r['wall_s']:.1f} records_per_s={r['n'] / r['wall_s']:.0f}")
        return
    small, large = got
    print(f"ratio large/small RSS = {large['rss_mb'] / small['rss_mb']:.2f} (target <= 1.3)")
    print(f"rss_small_mb={small['rss_mb']:.0f} rss_large_mb={large['rss_mb']:.0f} "
          f"records_per_s={large['n'] / large['wall_s']:.0f}")


if __name__ == "__main__":
    main()
