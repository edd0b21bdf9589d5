"""Faults that finish: a whole `distillflow run` against an endpoint failing 20% of attempts.

The endpoint (``benchmarks/fake_endpoint.py`` in fault mode, its own process) fails each
attempt with probability ``--fault-rate`` in one of these ways, chosen at random (seeded):
429 with Retry-After, 500, 503, a hang past the teacher's ``timeout_s``, a dropped connection,
a truncated body, an HTML page with status 200, a 200 without ``choices``, a 200 with empty
``choices``. Every answer it sends carries a random tag and is recorded, so the benchmark can
check that each kept answer is byte-identical to the one the endpoint sent, and that no answer
was bought twice. The run is the real CLI (a subprocess) with the default retries.

    python -m benchmarks.faults              # 5,000 prompts (about a minute or two on 2 cores)
    python -m benchmarks.faults --n 500      # quick
    python -m benchmarks.faults --n 1000 --max-retries 1   # ~4% quarantined, the run still completes

The last line printed is
``records=N kept=K quarantined=Q lost=L duplicated=D paid_twice=P exit=E``; the target is
L=0, D=0, E=0 (a completed run, quarantined records or not), Q <= 0.1% of N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script as well as with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.fake_endpoint import endpoint_process, fetch_answers, fetch_stats  # noqa: E402


def make_prompts(n: int) -> list[str]:
    """Distinct prompts, some with non-ASCII text (the byte-identity check covers it)."""
    return [f"Question {i}: why does topic {i % 997} matter? ({'é✓ 日本' if i % 7 == 0 else 'plain'})"
            for i in range(n)]


def pipeline_yaml(base_url: str, prompts_path: Path, timeout_s: float, concurrency: int,
                  max_retries: int | None = None) -> str:
    retries = "" if max_retries is None else f"\n    max_retries: {max_retries}"
    return f"""name: faults
source:
  kind: jsonl
  path: {json.dumps(str(prompts_path))}
teachers:
  - name: teacher
    provider: openai
    base_url: {base_url}
    model: fake-teacher
    params: {{temperature: 0.7, max_tokens: 64}}
    concurrency: {concurrency}
    timeout_s: {timeout_s}{retries}
steps:
  - kind: generate
"""


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--fault-rate", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout-s", type=float, default=1.0, help="the teacher's timeout_s (hangs last 3x longer)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-retries", type=int, default=None,
                    help="the teacher's max_retries (default: distillflow's default); 1 shows quarantine at work")
    args = ap.parse_args(argv)

    prompts = make_prompts(args.n)
    with tempfile.TemporaryDirectory(prefix="df-faults-") as tmp, \
            endpoint_process(latency=(0.02, 0.05), max_concurrency=256, logprobs=False,
                             fault_rate=args.fault_rate, fault_seed=args.seed, hang_s=3 * args.timeout_s) as url:
        work = Path(tmp)
        src = work / "prompts.jsonl"
        src.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts), encoding="utf-8")
        yaml_path = work / "pipeline.yaml"
        yaml_path.write_text(pipeline_yaml(url, src, args.timeout_s, args.concurrency, args.max_retries))
        out = work / "run"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "distillflow", "run", str(yaml_path), "--out", str(out),
                               "--no-progress"], env=env, capture_output=True, text=True, cwd=str(ROOT))
        wall = time.perf_counter() - t0
        stats, sent = fetch_stats(url), fetch_answers(url)
        curated = _read_jsonl(out / "data" / "curated.jsonl")
        rejected = _read_jsonl(out / "data" / "rejected.jsonl")

    quarantined = [r for r in rejected if r.get("reason") == "teacher_error"]
    kept_prompts = Counter(r["prompt"] for r in curated)
    accounted = set(kept_prompts) | {r["prompt"] for r in quarantined}
    lost = sum(1 for p in prompts if p not in accounted)
    duplicated = sum(c - 1 for c in kept_prompts.values()) + len(set(kept_prompts) & {r["prompt"] for r in quarantined})
    paid_twice = sum(len(texts) - 1 for texts in sent.values() if len(texts) > 1)
    identical = sum(1 for r in curated if r["response"] in sent.get(r["prompt"], ()) and len(sent[r["prompt"]]) == 1)

    if proc.returncode != 0 or proc.stderr.strip():
        print("--- distillflow stderr (last 2000 chars) ---\n" + proc.stderr[-2000:])
    faults = stats.get("faults", {})
    print(f"endpoint: {stats['requests']} attempts for {args.n} prompts, {sum(faults.values())} faults "
          f"({sum(faults.values()) / max(1, stats['requests']):.1%}): "
          + ", ".join(f"{k}={v}" for k, v in sorted(faults.items())))
    print(f"run: {wall:.1f}s wall, exit {proc.returncode}; kept answers byte-identical to the endpoint's: "
          f"{identical}/{len(curated)}")
    if quarantined:
        print("quarantined: " + "; ".join(f"{r['error'][:80]} ({r['attempts']} attempts)" for r in quarantined[:5]))
    print(f"records={args.n} kept={len(curated)} quarantined={len(quarantined)} lost={lost} "
          f"duplicated={duplicated} paid_twice={paid_twice} exit={proc.returncode}")


if __name__ == "__main__":
    main()
