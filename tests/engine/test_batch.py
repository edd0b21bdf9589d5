"""Provider batch APIs end to end: answer_batch -> real SDK/HTTP client code -> the local batch
server (benchmarks/fake_batch_server.py: both providers' endpoints, limits, expiry, partial
failures, counters). The "caller" (the engine's cache) is a dict; nothing else is mocked."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.fake_batch_server import BatchServerThread
from distillflow.engine.batch import BatchStore, answer_batch, split_lines
from tests.engine.batch_support import ANTHROPIC_KEY_ENV, Budget, Caller, requests, teacher

PROVIDERS = ["openai", "anthropic"]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, "test-key")


@pytest.fixture
def server():
    with BatchServerThread() as srv:
        yield srv


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_end_to_end_maps_every_line_back_by_custom_id(server, tmp_path, provider):
    t = teacher(server, provider)
    caller = Caller()
    prompts = [f"question {i}" for i in range(7)]
    reqs = requests(prompts)
    caller.answers[reqs[0].key] = "already cached"  # the caller has this one: never submitted
    store = BatchStore(tmp_path / "batches.sqlite")
    out = run(answer_batch(t, reqs, store=store, on_result=caller.on_result, have=caller.have))
    assert (out.requested, out.skipped, out.submitted, out.delivered, out.resubmitted) == (7, 1, 6, 6, 0)
    assert out.done and not out.failures and not out.notes
    for r in reqs[1:]:
        got = caller.answers[r.key]
        assert got.text == "Answer: " + r.meta["prompt"]
        assert got.meta == {"prompt": r.meta["prompt"]} and got.error is None and got.cached is False
    assert server.stats["batches_created"][provider] == 1
    assert server.stats["lines_submitted"][provider] == 6
    assert reqs[0].key not in server.stats["submissions"]
    # cost at batch prices: half of 2/8 USD per 1M tokens
    r1 = caller.answers[reqs[1].key]
    assert r1.input_tokens == len("question 1") // 4 + 1
    expected = sum((caller.answers[r.key].input_tokens * 1.0 + caller.answers[r.key].output_tokens * 4.0) / 1e6
                   for r in reqs[1:])
    assert out.cost_usd == pytest.approx(expected)
    row = store.summary()[0]
    assert (row["state"], row["succeeded"], row["n_requests"]) == ("collected", 6, 6)
    assert store.totals() == {t.name: {"answers": 6, "cost_usd": round(expected, 6)}}
    # a second call with the same requests: everything is had, nothing goes to the server
    again = run(answer_batch(t, reqs, store=store, on_result=caller.on_result, have=caller.have))
    assert (again.skipped, again.submitted, again.delivered) == (7, 0, 0)
    assert server.stats["batches_created"][provider] == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_errored_and_expired_lines_are_resubmitted_alone(server, tmp_path, provider):
    t = teacher(server, provider)
    caller = Caller()
    prompts = [f"{provider} fine {i}" for i in range(4)] + [
        '@@{"error": 500, "times": 1} ' + provider + " transient",
        '@@{"error": 400} ' + provider + " bad request",
        '@@{"expire": 1} ' + provider + " expires once",  # last: OpenAI expires the lines after it too
    ]
    reqs = requests(prompts)
    out = run(answer_batch(t, reqs, store=BatchStore(tmp_path / "b.sqlite"), on_result=caller.on_result))
    subs = server.stats["submissions"]
    # the 4 fine lines and the permanent error went once; the transient and expired ones twice
    assert [subs[r.key] for r in reqs] == [1, 1, 1, 1, 2, 1, 2]
    assert server.stats["batches_created"][provider] == 2
    assert server.stats["lines_submitted"][provider] == 7 + 2
    assert (out.submitted, out.resubmitted, out.delivered) == (7, 2, 6)
    assert list(out.failures) == [reqs[5].key]
    err = out.failures[reqs[5].key].error
    assert ("HTTP 400: scripted 400" if provider == "openai" else "invalid_request_error: scripted 400") in err
    assert caller.answers[reqs[6].key].text == "Answer: " + prompts[6]
    if provider == "openai":  # one expired line expires the whole OpenAI batch
        assert out.notes == [f"batch {out.batch_ids[0]} (expired): 4 of 7 answers recovered, 1 expired, 2 resubmitted"]
    else:  # Anthropic ends the batch and marks the one line expired
        assert out.notes == [f"batch {out.batch_ids[0]} (ended): 4 of 7 answers recovered, 1 expired, 2 resubmitted"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_budget_cap_holds_before_submission(server, tmp_path, provider):
    t = teacher(server, provider)
    reqs = requests([f"budget {i}" for i in range(10)], max_tokens=1000)
    # one request is estimated at (10//4+8)*1 + 1000*4 USD per 1M = 0.00401 at batch prices
    budget = Budget(max_cost_usd=0.0125, spent=0.0)
    caller = Caller()
    out = run(answer_batch(t, reqs, store=BatchStore(tmp_path / "b.sqlite"), on_result=caller.on_result,
                           budget=budget))
    assert server.stats["lines_submitted"][provider] == 3  # 3 x 0.00401 fits, 4 would not
    assert out.budget_blocked == [r.key for r in reqs[3:]] and budget.budget_hit
    assert out.delivered == 3 and not out.done
    # already spent beyond the cap: nothing is submitted at all
    budget2 = Budget(max_cost_usd=0.0125, spent=0.012)
    out2 = run(answer_batch(t, reqs[3:], store=BatchStore(tmp_path / "b2.sqlite"), on_result=caller.on_result,
                            budget=budget2))
    assert server.stats["lines_submitted"][provider] == 3 and len(out2.budget_blocked) == 7


def test_live_batches_count_against_the_budget(server, tmp_path):
    t = teacher(server, "openai")
    server.set(hold=True)
    store = BatchStore(tmp_path / "b.sqlite")
    reqs = requests([f"held {i}" for i in range(3)], max_tokens=1000)
    out = run(answer_batch(t, reqs, store=store, on_result=Caller().on_result, wait=False,
                           budget=Budget(max_cost_usd=0.0125)))
    assert out.pending == [r.key for r in reqs] and out.submitted == 3
    more = requests(["another"], max_tokens=1000)
    out2 = run(answer_batch(t, more, store=store, on_result=Caller().on_result, wait=False,
                            budget=Budget(max_cost_usd=0.0125)))
    assert out2.budget_blocked == [more[0].key]  # the 3 live lines hold 0.01203 of the 0.0125
    assert server.stats["lines_submitted"]["openai"] == 3


@pytest.mark.parametrize("provider", PROVIDERS)
def test_split_by_requests_and_bytes_within_the_servers_limits(tmp_path, provider):
    limits = {f"{provider}_max_requests": 4, f"{provider}_max_bytes": 4096}
    with BatchServerThread(**limits) as srv:
        t = teacher(srv, provider, max_requests=4, max_bytes=4096)
        long = ["x" * 1200 + f" long {i}" for i in range(6)]  # ~1.3 KB lines: 2 fit in 4096 - margin
        short = [f"short {i}" for i in range(9)]
        caller = Caller()
        out = run(answer_batch(t, requests(short + long), store=BatchStore(tmp_path / "b.sqlite"),
                               on_result=caller.on_result))
        assert out.delivered == 15 and not out.failures
        assert srv.stats["rejected"] == 0  # the server enforces the same limits: none was refused
        sizes = srv.stats["batch_sizes"]
        assert all(n <= 4 and size <= 4096 for n, size in sizes), sizes
        assert sum(size for _, size in sizes) > 2 * 4096  # more than two full batches: the limits split it
        # 4 + 4 short lines by count; then 1 short + 2 long, 2 long, 2 long by bytes (~1.3 KB a line)
        assert [n for n, _ in sizes] == [4, 4, 3, 2, 2]
        assert srv.stats["lines_submitted"][provider] == 15
        assert max(srv.stats["submissions"].values()) == 1


def test_split_lines_unit():
    lines = [(f"k{i}", b"a" * 100) for i in range(25)] + [("huge", b"b" * 5000)]
    groups, too_large = split_lines(lines, max_requests=4, max_bytes=3000)
    assert [len(g) for g in groups] == [4] * 6 + [1] and too_large == ["huge"]
    # 2554 bytes minus the 1024-byte envelope margin = 1530: 15 lines of 101 bytes (newline included)
    groups, _ = split_lines(lines[:25], max_requests=100, max_bytes=2554)
    assert [len(g) for g in groups] == [15, 10]
    assert [k for g in groups for k, _ in g] == [f"k{i}" for i in range(25)]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_wait_returns_after_submission_then_a_rerun_collects(server, tmp_path, provider):
    t = teacher(server, provider)
    server.set(hold=True)
    store = BatchStore(tmp_path / "b.sqlite")
    reqs = requests([f"later {i}" for i in range(5)])
    caller = Caller()
    out = run(answer_batch(t, reqs, store=store, on_result=caller.on_result, wait=False))
    assert out.pending == [r.key for r in reqs] and out.delivered == 0
    assert store.summary()[0]["state"] == "submitted"
    server.set(hold=False)
    out2 = run(answer_batch(t, reqs, store=store, on_result=caller.on_result, have=caller.have))
    assert (out2.submitted, out2.recovered, out2.delivered) == (0, 5, 5) and out2.done
    assert server.stats["lines_submitted"][provider] == 5


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancelled_and_expired_batches_are_reported(server, tmp_path, provider):
    t = teacher(server, provider, max_resubmits=0)
    server.set(hold=True)
    store = BatchStore(tmp_path / "b.sqlite")
    reqs = requests([f"{provider} doomed {i}" for i in range(3)])
    run(answer_batch(t, reqs, store=store, on_result=Caller().on_result, wait=False))
    server.set(expire_held=True)  # the 24 h window passes with nothing processed
    caller = Caller()
    out = run(answer_batch(t, reqs, store=store, on_result=caller.on_result))
    assert out.delivered == 0 and set(out.failures) == {r.key for r in reqs}
    status = "expired" if provider == "openai" else "ended"
    assert out.notes == [f"batch {out.batch_ids[0]} ({status}): 0 of 3 answers recovered, 3 expired"]
    # a cancelled batch: its lines are reported, not resubmitted in the same call
    server.set(expire_held=False)
    reqs2 = requests([f"{provider} cancel {i}" for i in range(2)])
    run(answer_batch(t, reqs2, store=store, on_result=caller.on_result, wait=False))
    bid = store.summary()[-1]["batch_id"]
    from distillflow.engine.batch import backend_for

    async def cancel():
        b = backend_for(t)
        await b.cancel(bid)
        await b.aclose()

    run(cancel())
    out2 = run(answer_batch(teacher(server, provider), reqs2, store=store, on_result=caller.on_result))
    assert out2.notes == [f"batch {bid} ({'cancelled' if provider == 'openai' else 'ended'}): "
                          "0 of 2 answers recovered, 2 cancelled"]
    assert out2.resubmitted == 0 and set(out2.failures) == {r.key for r in reqs2}


def _wait_for(pred, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("provider", PROVIDERS)
def test_kill_9_after_submission_then_resume_collects_without_resubmitting(server, tmp_path, provider):
    t = teacher(server, provider)
    server.set(hold=True)
    path = tmp_path / "cache" / "batches.sqlite"
    prompts = [f"{provider} survive {i}" for i in range(6)]
    child = Path(__file__).with_name("batch_child.py")
    proc = subprocess.Popen([sys.executable, str(child), t.model_dump_json(), json.dumps(prompts), str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: path.exists() and any(r["state"] == "submitted" for r in BatchStore(path).summary())), \
            proc.stderr.read() if proc.poll() is not None else "no batch submitted in time"
        assert server.stats["batches_created"][provider] == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    server.set(hold=False)
    caller = Caller()
    out = run(answer_batch(t, requests(prompts), store=BatchStore(path), on_result=caller.on_result,
                           have=caller.have))
    assert (out.submitted, out.recovered, out.delivered) == (0, 6, 6) and out.done
    assert server.stats["batches_created"][provider] == 1  # collected, never resubmitted
    assert server.stats["lines_submitted"][provider] == 6
    assert max(server.stats["submissions"].values()) == 1
    assert sorted(r.text for r in caller.answers.values()) == sorted("Answer: " + p for p in prompts)


def test_interrupted_submission_is_adopted_not_resubmitted(server, tmp_path):
    """kill -9 between 'create batch' and recording its id: the pending row finds it by metadata."""
    t = teacher(server, "openai")
    store = BatchStore(tmp_path / "b.sqlite")
    reqs = requests(["orphan 1", "orphan 2"])
    from distillflow.engine.batch import backend_for

    async def create_without_recording():
        b = backend_for(t)
        store.add_pending("df-interrupted", t.name, "openai", "x", {r.key: r.key for r in reqs}, 100, 0.0)
        await b.submit([b.encode(r) for r in reqs], "df-interrupted")
        await b.aclose()

    run(create_without_recording())
    caller = Caller()
    out = run(answer_batch(t, reqs, store=store, on_result=caller.on_result))
    assert out.notes[0].startswith("adopted batch batch_") and out.delivered == 2 and out.submitted == 0
    assert server.stats["batches_created"]["openai"] == 1


def test_spec_mode_batch_needs_a_batch_provider_and_batch_prices_default_to_half():
    from pydantic import ValidationError

    from distillflow.engine.ledger import cost_of
    from distillflow.spec.models import PriceSpec, TeacherSpec

    with pytest.raises(ValidationError, match="mode: batch needs a provider with a batch API"):
        TeacherSpec(name="t", provider="ollama", model="m", base_url="http://x/v1", mode="batch")
    t = TeacherSpec(name="t", provider="openai", model="m", mode="batch", price=PriceSpec(input_per_1m=2, output_per_1m=8))
    assert t.price.rates(batch=True) == (1.0, 4.0) and cost_of(t, 1_000_000, 0, batch=True) == 1.0
    t2 = TeacherSpec(name="t", provider="anthropic", model="m", mode="batch",
                     price=PriceSpec(input_per_1m=2, output_per_1m=8, batch_output_per_1m=3))
    assert t2.price.rates(batch=True) == (1.0, 3.0) and cost_of(t2, 0, 1_000_000) == 8.0
