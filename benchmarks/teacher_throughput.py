"""Teacher-request throughput: distillflow vs plain distilabel, on the same local endpoint.

The endpoint (``benchmarks/fake_endpoint.py``, its own process) serves 64 requests at once with
uniform 0.2–0.3 s latency, so its capacity is Z = 64 / 0.25 = 256 req/s. Both clients send the
same N prompts; the ratio to Z is what matters. A bare aiohttp window (no cache, keys or
retries) runs too, as a reference for what the transport reaches under the machine's current
load: other processes on a 2-core machine lower every number here. Then the distillflow path's own overhead:
records/s against a zero-latency endpoint and peak memory for ``--overhead-n`` prompts
(measured in a subprocess so that earlier runs do not inflate its peak RSS).

    python -m benchmarks.teacher_throughput            # N=5000, overhead-n=100000
    python -m benchmarks.teacher_throughput --quick    # N=500, overhead-n=5000 (CI smoke)

The last line printed is ``distillflow_rps=X distilabel_rps=Y capacity_rps=Z``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script as well as with -m
    sys.path.insert(0, str(ROOT))

from benchmarks.cli_run import time_cli_run  # noqa: E402
from benchmarks.fake_endpoint import endpoint_process, fetch_stats, reset_stats  # noqa: E402

MODEL = "fake-teacher"
CONCURRENCY = 64
LATENCY = (0.2, 0.3)
PARAMS = {"temperature": 0.7, "max_tokens": 64}


def make_prompts(n: int) -> list[str]:
    """Distinct prompts of realistic length (~200 characters)."""
    return [
        f"Question {i}: explain, in two or three sentences, why topic number {i % 997} matters "
        f"to a student learning distributed systems, and give one concrete example ({i})."
        for i in range(n)
    ]


# ------------------------------------------------------------------------------------------
# (a) distillflow: the full pipeline through `distillflow.run` (in a child process), and the
# whole CLI command timed from process start to outputs written.
# ------------------------------------------------------------------------------------------
def run_distillflow(base_url: str, prompts: list[str], workdir: Path) -> int:
    """Generate one answer per prompt through a full distillflow pipeline (`distillflow.run`).

    The JSONL source, the generate step (cache, sliding window), the step cache and every output
    (JSONL, Parquet, Distiset, manifest, card) are all part of the measured run. The generate
    step's own wall time is taken from the manifest (`timings.generate`).
    """
    import distillflow as df
    from distillflow.spec.loader import validate_data

    src = Path(workdir) / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    spec = validate_data({
        "name": "bench",
        "source": {"kind": "jsonl", "path": str(src)},
        "teachers": [{"name": "teacher", "provider": "openai", "base_url": base_url, "model": MODEL,
                      "params": PARAMS, "concurrency": CONCURRENCY}],
        "steps": [{"kind": "generate"}],
    }, base_dir=Path(workdir))
    res = df.run(spec, out=Path(workdir) / "run", progress=False)
    run_distillflow.generate_s = res.manifest["timings"]["generate"]
    return res.manifest["curated"]


# ------------------------------------------------------------------------------------------
# (b) plain distilabel: TextGeneration + OpenAILLM in a local Pipeline.
# ------------------------------------------------------------------------------------------
def run_distilabel(base_url: str, prompts: list[str], workdir: Path, batch_size: int = 64) -> int:
    """Generate one answer per prompt with distilabel 1.5.3 as its docs suggest."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    with Pipeline(name="bench-distilabel", cache_dir=str(Path(workdir) / "distilabel-cache")) as pipeline:
        load = LoadDataFromDicts(data=[{"instruction": p} for p in prompts], batch_size=batch_size)
        gen = TextGeneration(
            llm=OpenAILLM(model=MODEL, base_url=base_url, api_key="x",
                          generation_kwargs={"max_new_tokens": PARAMS["max_tokens"],
                                             "temperature": PARAMS["temperature"]}),
            input_batch_size=batch_size,
        )
        load >> gen
    distiset = pipeline.run(use_cache=False)
    return len(distiset["default"]["train"])


# ------------------------------------------------------------------------------------------
# (c) reference: bare aiohttp, a 64-slot window and nothing else (no cache, no keys, no
# retries). It shows what the transport reaches on this machine under its current load, so
# distillflow's number can be read against it when other processes compete for the CPUs.
# ------------------------------------------------------------------------------------------
def run_bare_aiohttp(base_url: str, prompts: list[str], workdir: Path) -> int:
    """Send every prompt with a bare aiohttp 64-slot window; returns the number of answers."""
    import asyncio

    import aiohttp

    async def main() -> int:
        it = iter(prompts)
        done = 0
        url = base_url.rstrip("/") + "/chat/completions"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY)) as session:
            async def worker() -> None:
                nonlocal done
                for prompt in it:
                    body = {"model": MODEL, "messages": [{"role": "user", "content": prompt}], **PARAMS}
                    async with session.post(url, json=body) as resp:
                        data = await resp.json()
                    done += bool(data["choices"][0]["message"]["content"])

            await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return done

    return asyncio.run(main())


def _child(args: argparse.Namespace) -> None:
    """Subprocess entry: run one client against ``--base-url`` and print a JSON line."""
    import resource

    prompts = make_prompts(args.n)
    # Imports are not what we measure: load them before the clock starts, for both clients.
    if args.child == "distillflow":
        import aiohttp, distillflow.api, distillflow.engine.runner, distillflow.engine.write  # noqa: E401,F401
        import datasets, distilabel.distiset, pyarrow.parquet  # noqa: E401,F401  (outputs)
    elif args.child == "bare":
        import aiohttp  # noqa: F401
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import distilabel.models, distilabel.pipeline, distilabel.steps.tasks  # noqa: E401,F401
    with tempfile.TemporaryDirectory(prefix="df-bench-") as tmp:
        t0 = time.perf_counter()
        fn = {"distillflow": run_distillflow, "distilabel": run_distilabel, "bare": run_bare_aiohttp}[args.child]
        done = fn(args.base_url, prompts, Path(tmp))
        wall = time.perf_counter() - t0
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    gen_s = getattr(fn, "generate_s", wall)
    print(json.dumps({"done": done, "wall_s": wall, "gen_s": gen_s, "maxrss_mb": maxrss_mb}), flush=True)


def _run_child(kind: str, base_url: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.teacher_throughput", "--child", kind,
           "--base-url", base_url, "--n", str(n)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # stderr is kept apart (distilabel's progress bars and warnings) and shown only on failure.
    proc = subprocess.run(cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"{kind} child failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(kind: str, base_url: str, n: int) -> tuple[float, dict]:
    reset_stats(base_url)
    res = _run_child(kind, base_url, n)
    stats = fetch_stats(base_url)
    if res["done"] != n:
        raise RuntimeError(f"{kind}: {res['done']} answers for {n} prompts")
    # distillflow: requests/s while its generate step runs (end to end is printed too);
    # the others have no steps around the requests, so their wall time is the generation time.
    return n / res.get("gen_s", res["wall_s"]), {**res, "server_requests": stats["requests"],
                               "server_max_in_flight": stats["max_in_flight"]}


def run_cli(base_url: str, n: int) -> float:
    """Seconds for `python -m distillflow run` from process start to exit (outputs written)."""
    with tempfile.TemporaryDirectory(prefix="df-cli-") as tmp:
        tmp = Path(tmp)
        (tmp / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in make_prompts(n)))
        (tmp / "p.yaml").write_text(json.dumps({
            "name": "bench", "source": {"kind": "jsonl", "path": "prompts.jsonl"},
            "teachers": [{"name": "teacher", "provider": "openai", "base_url": base_url, "model": MODEL,
                          "params": PARAMS, "concurrency": CONCURRENCY}],
            "steps": [{"kind": "generate"}]}))  # JSON is YAML
        # Bytecode as after any first run or a wheel install: with PYTHONDONTWRITEBYTECODE set (as on
        # this project's machines) a fresh checkout would otherwise compile every module on every start.
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "distillflow")], check=True,
                       stdout=subprocess.DEVNULL)
        wall, _ = time_cli_run(tmp)
    return wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="teacher request throughput benchmark")
    ap.add_argument("--n", type=int, default=5000, help="prompts per client (default 5000)")
    ap.add_argument("--overhead-n", type=int, default=100_000, help="prompts for the overhead/memory run")
    ap.add_argument("--quick", action="store_true", help="n=500, overhead-n=5000 (CI smoke)")
    ap.add_argument("--skip-distilabel", action="store_true", help="report distilabel_rps=0.0")
    ap.add_argument("--child", choices=["distillflow", "distilabel", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--base-url", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    if args.quick:
        args.n, args.overhead_n = 500, 5000

    capacity = CONCURRENCY / ((LATENCY[0] + LATENCY[1]) / 2)
    print(f"endpoint: {CONCURRENCY} concurrent, latency uniform{LATENCY} s, capacity {capacity:.1f} req/s; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with endpoint_process(latency=LATENCY, max_concurrency=CONCURRENCY) as url:
        df_rps, df = _measure("distillflow", url, args.n)
        print(f"distillflow  n={args.n}: {df_rps:7.1f} req/s ({df_rps / capacity:.0%} of capacity) "
              f"generate step {df['gen_s']:.2f}s; whole pipeline incl. outputs {df['wall_s']:.2f}s "
              f"= {args.n / df['wall_s']:.1f} records/s; server saw {df['server_requests']} requests, "
              f"max {df['server_max_in_flight']} in flight", flush=True)
        reset_stats(url)
        cli_s = run_cli(url, args.n)
        print(f"distillflow CLI n={args.n}: {args.n / cli_s:7.1f} req/s ({args.n / cli_s / capacity:.0%} of capacity) "
              f"from process start to outputs written ({cli_s:.2f}s)", flush=True)
        bare_rps, bare = _measure("bare", url, args.n)
        print(f"bare aiohttp n={args.n}: {bare_rps:7.1f} req/s ({bare_rps / capacity:.0%} of capacity) "
              f"reference: the transport alone under this machine's current load", flush=True)
        if args.skip_distilabel:
            dl_rps = 0.0
        else:
            dl_rps, dl = _measure("distilabel", url, args.n)
            print(f"distilabel   n={args.n}: {dl_rps:7.1f} req/s ({dl_rps / capacity:.0%} of capacity) "
                  f"wall {dl['wall_s']:.2f}s, server saw {dl['server_requests']} requests, "
                  f"max {dl['server_max_in_flight']} in flight", flush=True)
    with endpoint_process(latency=(0.0, 0.0), max_concurrency=CONCURRENCY) as url:
        ov_rps, ov = _measure("distillflow", url, args.overhead_n)
        print(f"overhead     n={args.overhead_n}: {ov_rps:7.1f} records/s in the generate step, "
              f"{args.overhead_n / ov['wall_s']:.1f} records/s for the whole pipeline, against a zero-latency endpoint "
              f"(client and endpoint share the CPUs), peak RSS {ov['maxrss_mb']:.0f} MiB", flush=True)
    print(f"distillflow_rps={df_rps:.1f} distilabel_rps={dl_rps:.1f} capacity_rps={capacity:.1f}", flush=True)


if __name__ == "__main__":
    main()
