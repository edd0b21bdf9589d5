"""Steps at the same time: generate -> judge with two latency-bound teachers, pipelined vs one after the other.

Each teacher is its own local endpoint (``benchmarks/fake_endpoint.py``, own process) serving 32
requests at once with 0.2-0.3 s latency (capacity 128 req/s each). The same pipeline runs twice
through ``distillflow run`` in fresh directories:

- one after the other: one shard holding every prompt (``shard_size: N, shards_in_flight: 1``), so
  the judge starts when the last answer is in — what the engine did before it streamed;
- pipelined: the defaults (shards of 1,000... here 250, 4 in flight), so shard k is judged while
  shard k+1 is generated.

    python -m benchmarks.pipelining            # N = 3000
    python -m benchmarks.pipelining --n 1000

Last line: ``sequential_s=A pipelined_s=B ratio=C`` (target C <= 0.6).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.cli_run import time_cli_run  # noqa: E402
from benchmarks.fake_endpoint import endpoint_process  # noqa: E402

LATENCY = (0.2, 0.3)
SLOTS = 32

PIPELINE = """name: pipelining
source: {{kind: jsonl, path: prompts.jsonl}}
teachers:
  - {{name: teacher, provider: openai, base_url: "{gen}", model: fake-teacher, concurrency: {slots}}}
  - {{name: referee, provider: openai, base_url: "{judge}", model: fake-judge, concurrency: {slots}}}
steps:
  - {{kind: generate, teachers: [teacher]}}
  - {{kind: judge, teacher: referee}}
execution: {{shard_size: {shard_size}, shards_in_flight: {in_flight}}}
"""


def run_once(gen: str, judge: str, n: int, shard_size: int, in_flight: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="df-pipe-") as tmp:
        tmp = Path(tmp)
        with (tmp / "prompts.jsonl").open("w") as fh:
            for i in range(n):
                fh.write(json.dumps({"prompt": f"Question {i}: explain topic {i % 97} in two sentences."}) + "\n")
        (tmp / "p.yaml").write_text(PIPELINE.format(gen=gen, judge=judge, slots=SLOTS, shard_size=shard_size,
                                                    in_flight=in_flight))
        wall, _ = time_cli_run(tmp)
        manifest = json.loads((tmp / "run" / "manifest.json").read_text())
    return wall, manifest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--shard-size", type=int, default=250)
    ap.add_argument("--in-flight", type=int, default=4)
    args = ap.parse_args(argv)
    cap = SLOTS / (sum(LATENCY) / 2)
    print(f"two endpoints, {SLOTS} slots each, latency uniform{LATENCY} s ({cap:.0f} req/s each); "
          f"{args.n} prompts; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with ExitStack() as stack:
        gen = stack.enter_context(endpoint_process(latency=LATENCY, max_concurrency=SLOTS))
        judge = stack.enter_context(endpoint_process(latency=LATENCY, max_concurrency=SLOTS, grade=True))
        seq, m1 = run_once(gen, judge, args.n, args.n, 1)
        print(f"one after the other: {seq:.1f} s (generate span {m1['step_spans']['generate']}, "
              f"judge span {m1['step_spans']['judge']})", flush=True)
        pipe, m2 = run_once(gen, judge, args.n, args.shard_size, args.in_flight)
        print(f"pipelined ({args.shard_size} prompts/shard, {args.in_flight} in flight): {pipe:.1f} s "
              f"(generate span {m2['step_spans']['generate']}, judge span {m2['step_spans']['judge']})", flush=True)
        assert m1["curated"] == m2["curated"] == args.n
    print(f"sequential_s={seq:.1f} pipelined_s={pipe:.1f} ratio={pipe / seq:.2f}")


if __name__ == "__main__":
    main()
