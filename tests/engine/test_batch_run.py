"""mode: batch teachers through the whole engine: `distillflow run` -> shards -> BatchLane -> real
OpenAI SDK / anthropic SDK -> the local batch server (benchmarks/fake_batch_server.py). The
server's counters say what was submitted; nothing is mocked."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import distillflow as df
from benchmarks.fake_batch_server import BatchServerThread
from distillflow.cli import app
from distillflow.engine.batch import BatchStore, store_path
from tests.engine.batch_support import ANTHROPIC_KEY_ENV

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

PROMPTS = ["q one", "q two score=2", "q three", '@@{"error": 500, "times": 1} q flaky', "q five score=1",
           '@@{"error": 400} q refused', "q seven"]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, "test-key")


@pytest.fixture
def server():
    with BatchServerThread() as srv:
        yield srv


def pipeline(srv, prompts=PROMPTS, steps=None, extra="") -> str:
    rows = "\n".join(f"    - {{question: {json.dumps(p)}}}" for p in prompts)
    poll = "batch: {poll_initial_s: 0.02, poll_max_s: 0.2}"
    steps = steps or """  - kind: generate
    teachers: [gen]
  - kind: judge
    teacher: grader
  - kind: filter
    where: "judge_score >= 3"
"""
    return f"""name: batchrun
source:
  kind: inline
  columns: {{prompt: question}}
  rows:
{rows}
teachers:
  - name: gen
    provider: openai
    base_url: {srv.openai_url}
    model: fake-model
    mode: batch
    max_retries: 0
    {poll}
    price: {{input_per_1m: 2.0, output_per_1m: 8.0}}
  - name: grader
    provider: anthropic
    base_url: {srv.root}
    api_key_env: {ANTHROPIC_KEY_ENV}
    model: fake-judge
    mode: batch
    max_retries: 0
    {poll}
    price: {{input_per_1m: 2.0, output_per_1m: 8.0}}
execution: {{shard_size: 2, shards_in_flight: 2}}
{extra}
steps:
{steps}"""


def _wait_for(pred, deadline_s=120.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_batch_teacher_and_batch_judge_no_wait_then_collect(server, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(pipeline(server))
    out = tmp_path / "run"
    server.set(hold=True)  # the provider takes its time: --no-wait submits and exits
    r = runner.invoke(app, ["run", str(p), "--out", str(out), "--no-progress", "--no-wait"], terminal_width=300)
    assert r.exit_code == 0, r.output
    assert "submitted — provider batches pending" in r.output
    assert (f"7 requests in 1 provider batch(es) are being answered; nothing final was written. Collect them with "
            f"the same `distillflow run` command (nothing is resubmitted), or see their state with "
            f"`distillflow status {out}`") in r.output.replace("\n", " ")
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "batches_pending" and m["batches"]["teachers"]["gen"]["lines_waiting"] == 7
    assert not (out / "data" / "curated.jsonl").exists()  # nothing final written
    # the 7 prompts of 4 shards went out as ONE provider batch; the judge has nothing to grade yet
    assert dict(server.stats["batches_created"]) == {"openai": 1}
    assert server.stats["lines_submitted"]["openai"] == 7

    st = runner.invoke(app, ["status", str(out)], env={"COLUMNS": "250"})
    with BatchStore(store_path(out)) as store:
        (row,) = store.summary()
    assert st.exit_code == 0 and row["batch_id"] in st.output and row["state"] == "submitted"
    assert "1 batch(es) still with the provider" in st.output

    # a second --no-wait while the provider still holds the batch: nothing resubmitted, still pending
    r = runner.invoke(app, ["run", str(p), "--out", str(out), "--no-progress", "--no-wait"], terminal_width=300)
    assert r.exit_code == 0 and "provider batches pending" in r.output, r.output
    assert server.stats["lines_submitted"]["openai"] == 7

    server.set(hold=False)
    r = runner.invoke(app, ["run", str(p), "--out", str(out), "--no-progress"], terminal_width=300)
    assert r.exit_code == 0, r.output
    assert "done 4 curated, 3 rejected" in r.output
    # generate: 7 lines once + the transient 500 resubmitted alone; judge: the 5 first answers in one
    # batch, the resubmitted line's answer in the next pass's
    subs = server.stats["submissions"]
    assert server.stats["lines_submitted"]["openai"] == 8 and server.stats["batches_created"]["openai"] == 2
    assert server.stats["lines_submitted"]["anthropic"] == 6 and server.stats["batches_created"]["anthropic"] == 2
    assert sorted(subs.values()) == [1] * 12 + [2]  # 13 distinct custom ids; only the flaky one twice
    curated = [json.loads(x) for x in (out / "data" / "curated.jsonl").read_text().splitlines()]
    assert sorted((c["prompt"], c["response"], c["judge_score"]) for c in curated) == sorted([
        ("q one", "Answer: q one", 4.0), ("q three", "Answer: q three", 4.0), ("q seven", "Answer: q seven", 4.0),
        ('@@{"error": 500, "times": 1} q flaky', 'Answer: @@{"error": 500, "times": 1} q flaky', 4.0)])
    rejected = [json.loads(x) for x in (out / "data" / "rejected.jsonl").read_text().splitlines()]
    reasons = sorted((x["prompt"], x["rejected_by"]) for x in rejected)
    assert reasons == [('@@{"error": 400} q refused', "generate"), ("q five score=1", "filter"),
                       ("q two score=2", "filter")]
    refused = next(x for x in rejected if x["rejected_by"] == "generate")
    assert "HTTP 400: scripted 400" in json.dumps(refused)

    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete"
    b = m["batches"]["teachers"]
    assert (b["gen"]["answers"], b["gen"]["batches"], b["gen"]["live_batches"]) == (6, 2, 0)
    assert (b["grader"]["answers"], b["grader"]["batches"]) == (6, 2)
    assert (b["gen"]["resubmitted_this_run"], b["gen"]["failed"]) == (1, 1)
    # batch prices (half of 2/8 per 1M): the ledger and the records use them
    with BatchStore(store_path(out)) as store:
        totals = store.totals()
    assert m["teachers"]["gen"]["cost_usd"] == pytest.approx(totals["gen"]["cost_usd"], abs=1e-6)
    assert m["teachers"]["grader (judge)"]["cost_usd"] == pytest.approx(totals["grader"]["cost_usd"], abs=1e-6)
    c0 = next(c for c in curated if c["prompt"] == "q one")
    assert c0["cost_usd"] == pytest.approx((c0["input_tokens"] * 1.0 + c0["output_tokens"] * 4.0) / 1e6)
    card = (out / "README.md").read_text()
    assert "## Answers through provider batch APIs" in card
    assert f"| gen | 6 | 2 | {totals['gen']['cost_usd']:.4f} |" in card
    rep = runner.invoke(app, ["report", str(out), "-o", str(tmp_path / "report.html")])
    assert rep.exit_code == 0, rep.output
    html = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (tmp_path / "report.html").read_text()))
    assert "Answers through provider batch APIs" in html
    assert f" gen 6 2 ${totals['gen']['cost_usd']:.4f} " in html
    assert f" grader 6 2 ${totals['grader']['cost_usd']:.4f} " in html

    # a rerun: everything cached, nothing goes to the provider
    before = json.dumps(server.stats["submissions"], sort_keys=True)
    r = runner.invoke(app, ["run", str(p), "--out", str(out), "--no-progress"], terminal_width=300)
    assert r.exit_code == 0 and "done 4 curated, 3 rejected" in r.output
    assert json.dumps(server.stats["submissions"], sort_keys=True) == before


def test_kill_9_after_submission_then_resume_without_resubmitting(server, tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(pipeline(server, prompts=[f"survivor {i}" for i in range(5)]))
    out = tmp_path / "run"
    server.set(hold=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), ANTHROPIC_KEY_ENV: "test-key"}
    proc = subprocess.Popen([sys.executable, "-m", "distillflow", "run", str(p), "--out", str(out), "--no-progress"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = store_path(out)
    try:
        def submitted():
            if not path.exists():
                return False
            with BatchStore(path) as s:
                return any(r["state"] == "submitted" for r in s.summary())

        assert _wait_for(submitted), proc.communicate(timeout=5) if proc.poll() is not None else "nothing submitted"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert dict(server.stats["batches_created"]) == {"openai": 1}
    server.set(hold=False)
    r = subprocess.run([sys.executable, "-m", "distillflow", "run", str(p), "--out", str(out), "--no-progress"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "done 5 curated, 0 rejected" in r.stdout
    # the killed run's batch was collected, not submitted again; each line went to the provider once
    assert server.stats["batches_created"]["openai"] == 1 and server.stats["lines_submitted"]["openai"] == 5
    assert server.stats["lines_submitted"]["anthropic"] == 5
    assert max(server.stats["submissions"].values()) == 1
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "complete" and m["batches"]["teachers"]["gen"]["submitted_this_run"] == 0


def test_budget_cap_holds_before_submission_in_a_run(server, tmp_path):
    # one request is estimated at (chars//4+8)*1 + 1000*4 USD per 1M at batch prices (~0.00401): the
    # first pass submits the 3 that fit under 0.0125; once their (small) real cost is known, the rest
    def run_with(cap, out):
        p = tmp_path / f"{out}.yaml"
        text = pipeline(server, prompts=[f"b {i}" for i in range(6)], steps="  - kind: generate\n    teachers: [gen]\n",
                        extra=f"budget: {{max_cost_usd: {cap}}}")
        p.write_text(text.replace("model: fake-model\n", "model: fake-model\n    params: {max_tokens: 1000}\n"))
        return df.run(df.load(p), out=tmp_path / out, progress=False)

    res = run_with(0.0125, "fits")
    assert [n for n, _ in server.stats["batch_sizes"]] == [3, 3]
    assert res.manifest["status"] == "complete" and res.manifest["curated"] == 6
    assert res.manifest["batches"]["teachers"]["gen"]["budget_blocked"] == 3
    assert res.manifest["cost_usd"] <= 0.0125 and max(server.stats["submissions"].values()) == 1
    # a cap below one request's estimate: nothing is submitted at all
    res = run_with(0.003, "tight")
    assert [n for n, _ in server.stats["batch_sizes"]] == [3, 3]
    assert res.manifest["status"] == "budget_exhausted" and res.manifest["curated"] == 0
    assert res.manifest["batches"]["teachers"]["gen"]["budget_blocked"] == 6


def test_distilabel_task_with_a_batch_teacher(server, tmp_path):
    steps = """  - kind: distilabel
    step: TextGeneration
    teacher: gen
    input_mappings: {instruction: prompt}
    output_mappings: {generation: second_opinion}
"""
    p = tmp_path / "p.yaml"
    p.write_text(pipeline(server, prompts=["alpha", "beta", "gamma"], steps=steps))
    res = df.run(df.load(p), out=tmp_path / "run", progress=False)
    assert res.manifest["status"] == "complete"
    assert sorted(r["second_opinion"] for r in res.curated) == ["Answer: alpha", "Answer: beta", "Answer: gamma"]
    assert server.stats["batches_created"]["openai"] == 1 and server.stats["lines_submitted"]["openai"] == 3
    assert res.manifest["batches"]["passes"] == 2


def test_readme_example_runs_and_prints_what_it_says():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("A runnable example: a batch teacher and a batch judge")
    code = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    expected = text[start:].split("It prints", 1)[1].split("```\n", 1)[1].split("```", 1)[0].splitlines()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == expected == [
        "batches_pending -> complete 2 curated",
        "claude 3 answers through 1 batch(es), $0.001170",
        "gpt 3 answers through 1 batch(es), $0.000117",
    ]


def test_expired_batch_is_reported_and_its_records_quarantined(server, tmp_path):
    p = tmp_path / "p.yaml"
    text = pipeline(server, prompts=["x one", "x two", "x three"], steps="  - kind: generate\n    teachers: [gen]\n")
    p.write_text(text.replace("batch: {poll_initial_s: 0.02,", "batch: {max_resubmits: 0, poll_initial_s: 0.02,", 1))
    out = tmp_path / "run"
    server.set(hold=True)
    first = df.run(df.load(p), out=out, progress=False, wait=False)
    assert first.manifest["status"] == "batches_pending"
    server.set(expire_held=True)  # the 24 h window passes with nothing processed
    r = runner.invoke(app, ["run", str(p), "--out", str(out), "--no-progress"], terminal_width=300)
    assert r.exit_code == 0, r.output
    with BatchStore(store_path(out)) as store:
        (row,) = store.summary()
    assert f"batch {row['batch_id']} (expired): 0 of 3 answers recovered, 3 expired" in r.output
    assert "done 0 curated, 3 rejected" in r.output
    rejected = [json.loads(x) for x in (out / "data" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(x["prompt"] for x in rejected) == ["x one", "x three", "x two"]
    assert all(x["rejected_by"] == "generate" and "batch line expired" in json.dumps(x) for x in rejected)
    assert server.stats["lines_submitted"]["openai"] == 3  # max_resubmits: 0 — not sent again


def test_store_line_history_and_an_older_store_gains_the_retryable_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)  # the lines table as stores written before retryability was recorded
    db.executescript("CREATE TABLE lines (submission TEXT NOT NULL, key TEXT NOT NULL, custom_id TEXT NOT NULL,"
                     " outcome TEXT, error TEXT, PRIMARY KEY (submission, key));")
    db.close()
    with BatchStore(path) as store:
        store.add_pending("s1", "t", "openai", "m@x", {"a": "a", "b": "b"}, 10, 0.0)
        store.set_submitted("s1", "batch_1")
        assert store.line_history(["a", "zz"]) == {"a": {"attempts": 1, "outcome": None, "error": None,
                                                         "retryable": False, "created_at": pytest.approx(time.time(), abs=60)}}
        store.collect("s1", "completed", [("a", "errored", "HTTP 500: boom", True), ("b", "errored", "HTTP 400: no")], [])
        store.add_pending("s2", "t", "openai", "m@x", {"a": "a"}, 5, 0.0)
        store.set_abandoned("s2")  # never reached the provider: not an attempt
        h = store.line_history(["a", "b"])
        assert (h["a"]["attempts"], h["a"]["outcome"], h["a"]["error"], h["a"]["retryable"]) == (1, "errored", "HTTP 500: boom", True)
        assert (h["b"]["retryable"], h["b"]["error"]) == (False, "HTTP 400: no")
        assert store.live_teachers() == set()


def test_a_record_retried_online_reaches_the_batch_judge_after_it(server, tmp_path):
    # generate is online (the endpoint), the judge a batch teacher: the record whose generation failed
    # twice is answered by --retry-errors, and the judge's next pass must judge it rather than reuse
    # the shard it had stored without it
    from benchmarks.fake_endpoint import EndpointThread

    prompts = ["q one", '@@{"status": 503, "times": 2, "retry_after": 0} q two', "q three"]
    with EndpointThread(latency=(0.0, 0.0)) as ep:
        text = pipeline(server, prompts=prompts, steps="  - kind: generate\n    teachers: [gen]\n  - kind: judge\n    teacher: grader\n")
        text = text.replace(f"base_url: {server.openai_url}\n    model: fake-model\n    mode: batch\n    max_retries: 0",
                            f"base_url: {ep.base_url}\n    model: fake-model\n    max_retries: 1")
        text = text.replace("execution: {shard_size: 2, shards_in_flight: 2}", "execution: {shard_size: 3}")
        p = tmp_path / "p.yaml"
        p.write_text(text)
        res = df.run(df.load(p), out=tmp_path / "run", progress=False)
        assert (res.manifest["curated"], res.manifest["quarantined"]) == (2, 1)
        res = df.run(df.load(p), out=tmp_path / "run", progress=False, retry_errors=True)
        assert res.manifest["status"] == "complete" and res.manifest["quarantined"] == 0
        assert res.manifest["counts"]["judge"]["out"] == 3 and res.manifest["curated"] == 3
        assert any("q two" in r["prompt"] for r in res.curated)
