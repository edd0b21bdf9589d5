"""Online vs batch mode on the same 10,000 prompts, against local servers (no network).

Online: the OpenAICompatibleClient against benchmarks/fake_endpoint.py. Batch: answer_batch
against benchmarks/fake_batch_server.py (OpenAI files + batches). Both servers report the same
token usage for the same prompt, so the cost ratio is the price ratio; prices are the teacher's
(batch = half the online price by default). Each server runs in its own process, so the CPU time
printed is distillflow's own. The batch run is then repeated on the same store, the way a rerun
after an interruption would be: it must submit nothing.

    python -m benchmarks.batch_cost [--n 10000]

Last line: ``online_usd=A batch_usd=B paid_twice=0``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
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
from distillflow.engine.batch import BatchStore, answer_batch  # noqa: E402
from distillflow.engine.client import ChatRequest, OpenAICompatibleClient  # noqa: E402
from distillflow.engine.ledger import cost_of  # noqa: E402
from distillflow.spec.models import BatchSpec, PriceSpec, TeacherSpec  # noqa: E402


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


def make_requests(n: int) -> list[ChatRequest]:
    out = []
    for i in range(n):
        p = f"Explain item {i} of the benchmark in one short paragraph."
        out.append(ChatRequest(hashlib.sha256(p.encode()).hexdigest(), [{"role": "user", "content": p}],
                               {"max_tokens": 128}, {}))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    args = ap.parse_args(argv)
    reqs = make_requests(args.n)
    price = PriceSpec(input_per_1m=2.5, output_per_1m=10.0)  # gpt-4o-like list prices

    # -- online ------------------------------------------------------------------------------
    with endpoint_process(latency=(0.0, 0.0), max_concurrency=64, logprobs=False) as url:
        online = TeacherSpec(name="online", provider="openai", model="fake-teacher", base_url=url, price=price)
        answers: dict[str, float] = {}
        paid = {"n": 0}

        def on_online(res) -> None:
            if res.error is None:
                paid["n"] += 1
                answers[res.key] = cost_of(online, res.input_tokens, res.output_tokens)

        c0, w0 = time.process_time(), time.perf_counter()
        OpenAICompatibleClient(url, "fake-teacher", concurrency=64).run(reqs, on_online)
        online_cpu, online_wall = time.process_time() - c0, time.perf_counter() - w0
        online_requests = fetch_stats(url)["requests"]
    online_usd = sum(answers.values())
    online_twice = paid["n"] - len(answers)

    # -- batch -------------------------------------------------------------------------------
    with batch_server_process() as root, tempfile.TemporaryDirectory() as tmp:
        teacher = TeacherSpec(name="batch", provider="openai", model="fake-teacher", base_url=root + "/v1",
                              price=price, mode="batch", batch=BatchSpec(poll_initial_s=0.05, poll_max_s=0.5))
        got: dict = {}
        batch_paid = {"n": 0}

        def on_batch(res) -> None:
            batch_paid["n"] += 1
            got[res.key] = cost_of(teacher, res.input_tokens, res.output_tokens, batch=True)

        store = BatchStore(Path(tmp) / "batches.sqlite")
        c0, w0 = time.process_time(), time.perf_counter()
        out = asyncio.run(answer_batch(teacher, reqs, store=store, on_result=on_batch))
        batch_cpu, batch_wall = time.process_time() - c0, time.perf_counter() - w0
        rerun = asyncio.run(answer_batch(teacher, reqs, store=store, on_result=on_batch,
                                         have=lambda keys: [k for k in keys if k in got]))
        with urllib.request.urlopen(root + "/stats", timeout=10) as r:
            stats = json.loads(r.read())
        store.close()
    batch_usd = sum(got.values())
    lines = stats["lines_submitted"].get("openai", 0)
    batch_twice = (batch_paid["n"] - len(got)) + (lines - len(reqs))

    print(f"prompts={args.n} answered online={len(answers)} batch={len(got)} "
          f"(batches={stats['batches_created'].get('openai', 0)}, lines submitted={lines})")
    print(f"requests_submitted online={online_requests} batch={lines} rerun_submitted={rerun.submitted}")
    print(f"wall_s online={online_wall:.1f} batch={batch_wall:.1f} (local servers: no 24 h wait)")
    print(f"cpu_ms_per_1k online={online_cpu / args.n * 1e6:.0f} batch={batch_cpu / args.n * 1e6:.0f} "
          f"ratio_batch/online={batch_cpu / max(online_cpu, 1e-9):.2f}")
    print(f"cost_ratio batch/online={batch_usd / online_usd:.3f}")
    print(f"online_usd={online_usd:.4f} batch_usd={batch_usd:.4f} paid_twice={online_twice + batch_twice}")


if __name__ == "__main__":
    main()
