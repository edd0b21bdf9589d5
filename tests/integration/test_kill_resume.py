"""kill -9 at random moments of a 20,000-prompt run: the final outputs hold every record exactly once,
and each kill costs at most the answers in flight or not yet committed (never a committed shard)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.fake_endpoint import EndpointThread
from tests.support import ROOT


N = 20_000
CONCURRENCY = 16
FLUSH_EVERY = 50  # engine/cache.py: answers wait for a commit in batches of at most 50 (20 ms)


def test_random_kills_lose_nothing_and_duplicate_nothing(tmp_path):
    src = tmp_path / "prompts.jsonl"
    with src.open("w") as fh:
        for i in range(N):
            fh.write(json.dumps({"prompt": f"Prompt number {i}: say something about {i % 101}."}) + "\n")
    rng = random.Random(20261203)
    kills = 0
    with EndpointThread(latency=(0.001, 0.003), max_concurrency=CONCURRENCY) as ep:
        (tmp_path / "p.yaml").write_text(f"""name: kills
source: {{kind: jsonl, path: prompts.jsonl}}
teachers:
  - {{name: teacher, provider: openai, base_url: "{ep.base_url}", model: fake-teacher, concurrency: {CONCURRENCY}}}
steps:
  - kind: generate
  - {{kind: filter, where: "len(response) > 10"}}
  - {{kind: dedup, columns: [prompt]}}
execution: {{shard_size: 500, shards_in_flight: 3}}
""")
        cmd = [sys.executable, "-m", "distillflow", "run", "p.yaml", "--out", "run", "--no-progress"]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for _ in range(3):
            before = ep.stats["repeats"]
            proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # a random moment once requests flow: between 0 and 6,000 more answers into this attempt
            target = ep.stats["completions"] + rng.randrange(0, 6000)
            deadline = time.time() + 120
            while ep.stats["completions"] < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
            # answers repeated by the run after this kill are counted when the next attempt runs
            assert ep.stats["repeats"] - before <= CONCURRENCY + FLUSH_EVERY
        before = ep.stats["repeats"]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        repeats_total = ep.stats["repeats"]
        completions = ep.stats["completions"]
    assert kills >= 2
    # each kill costs at most the window in flight plus the answers not yet committed
    assert repeats_total <= kills * (CONCURRENCY + FLUSH_EVERY), (repeats_total, kills)
    assert completions == N + repeats_total
    curated = [json.loads(line) for line in (tmp_path / "run" / "data" / "curated.jsonl").open()]
    prompts = [r["prompt"] for r in curated]
    assert len(prompts) == N and len(set(prompts)) == N  # every record, exactly once
    assert [r["source"]["row"] for r in curated] == list(range(N))  # in source order
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["curated"] == N and manifest["rejected"] == 0
    assert manifest["teachers"]["teacher"]["requests"] == N
