"""Online vs batch mode: the same 10,000-prompt pipeline through `distillflow.run`, against local servers.

The pipeline (JSONL source -> generate -> every output: JSONL, Parquet, Distiset, manifest, card)
runs twice, once with an online teacher against benchmarks/fake_endpoint.py and once with the
same teacher in ``mode: batch`` against benchmarks/fake_batch_server.py (OpenAI files + batches).
Both servers report the same token usage for the same prompt, so the cost ratio is the price
ratio (batch = half the online price by default); costs are the runs' own manifests. Each server
runs in its own process, so the CPU time printed is distillflow's own (the whole run: source,
shards, cache, outputs). The batch run is then repeated on the same run directory, the way a rerun
after an interruption would be: it must submit nothing.

    python -m benchmarks.batch_cost [--n 10000]

Last line: ``online_usd=A batch_usd=B paid_twice=0``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.fake_endpoint import endpoint_process, fetch_stats  # noqa: E402

PRICE = {"input_per_1m": 2.5, "output_per_1m": 10.0}  # gpt-4o-like list prices


@contextmanager
def batch_server_process():
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fake_batch_server"], stdout=subprocess.PIPE,
                            text=True, cwd=str(ROOT))
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"batch server failed to start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(10)


def _stats(root: str) -> dict:
    with urllib.request.urlopen(root + "/stats", timeout=10) as r:
        return json.loads(r.read())


def run_pipeline(workdir: Path, name: str, teacher: dict):
    """One distillflow run of the benchmark pipeline; returns (result, cpu_s, wall_s)."""
    import distillflow as df
    from distillflow.spec.loader import validate_data

    spec = validate_data({
        "name": name,
        "source": {"kind": "jsonl", "path": str(workdir / "prompts.jsonl")},
        "teachers": [{"name": "teacher", "model": "fake-teacher", "provider": "openai", "price": PRICE,
                      "params": {"max_tokens": 128}, **teacher}],
        "steps": [{"kind": "generate"}],
    }, base_dir=workdir)
    c0, w0 = time.process_time(), time.perf_counter()
    res = df.run(spec, out=workdir / name, progress=False)
    return res, time.process_time() - c0, time.perf_counter() - w0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "prompts.jsonl").write_text("".join(
            json.dumps({"prompt": f"Explain item {i} of the benchmark in one short paragraph."}) + "\n"
            for i in range(args.n)))
        import distillflow  # noqa: F401  (imports outside the measured CPU time)
        from distillflow.engine import runner  # noqa: F401

        with endpoint_process(latency=(0.0, 0.0), max_concurrency=64, logprobs=False) as url:
            online, online_cpu, online_wall = run_pipeline(work, "online", {"base_url": url, "concurrency": 64})
            online_requests = fetch_stats(url)["requests"]

        with batch_server_process() as root:
            batch_teacher = {"base_url": root + "/v1", "mode": "batch",
                             "batch": {"poll_initial_s": 0.05, "poll_max_s": 0.5}}
            batch, batch_cpu, batch_wall = run_pipeline(work, "batch", batch_teacher)
            stats = _stats(root)
            again, _, _ = run_pipeline(work, "batch", batch_teacher)  # a rerun on the same run directory
            stats2 = _stats(root)

    lines = stats["lines_submitted"].get("openai", 0)
    rerun_submitted = stats2["lines_submitted"].get("openai", 0) - lines
    # paid twice: requests the provider answered more than once (distinct prompts = args.n)
    online_twice = online_requests - online.manifest["teachers"]["teacher"]["new"]
    batch_twice = sum(stats2["lines_submitted"].values()) - stats2["distinct_lines"]  # lines sent more than once
    online_usd, batch_usd = online.manifest["cost_usd"], batch.manifest["cost_usd"]
    b = batch.manifest["batches"]["teachers"]["teacher"]

    print(f"prompts={args.n} curated online={online.manifest['curated']} batch={batch.manifest['curated']} "
          f"(batches={b['batches']}, passes={batch.manifest['batches']['passes']}, answers through batches={b['answers']})")
    print(f"requests_submitted online={online_requests} batch={lines} rerun_submitted={rerun_submitted} "
          f"rerun_status={again.manifest['status']}")
    print(f"wall_s online={online_wall:.1f} batch={batch_wall:.1f} (local servers: no 24 h wait)")
    print(f"cpu_ms_per_1k online={online_cpu / args.n * 1e6:.0f} batch={batch_cpu / args.n * 1e6:.0f} "
          f"ratio_batch/online={batch_cpu / max(online_cpu, 1e-9):.2f}")
    print(f"cost_ratio batch/online={batch_usd / online_usd:.3f}")
    print(f"online_usd={online_usd:.4f} batch_usd={batch_usd:.4f} paid_twice={online_twice + batch_twice}")


if __name__ == "__main__":
    main()
