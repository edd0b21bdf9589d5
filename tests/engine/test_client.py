"""The aiohttp teacher client and its scheduler, against a real local HTTP endpoint."""

from __future__ import annotations

import asyncio
import email.utils
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.fake_endpoint import EndpointThread  # noqa: E402
from distillflow.engine.client import (  # noqa: E402
    ChatRequest,
    OpenAICompatibleClient,
    alist_models,
    list_models,
)
from distillflow.engine.distilabel_client import AsyncLLMClient, SyncLLMClient, map_params  # noqa: E402
from distillflow.engine.scheduler import (  # noqa: E402
    RateLimiter,
    RetryPolicy,
    TokenBucket,
    parse_retry_after,
)
from distillflow.errors import ConfigurationError  # noqa: E402

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(scope="module")
def ep():
    with EndpointThread(max_concurrency=256, latency=(0.005, 0.01)) as server:
        yield server


def req(i, content=None, **params) -> ChatRequest:
    return ChatRequest(str(i), [{"role": "user", "content": content or f"prompt {i}"}],
                       {"max_tokens": 16, **params}, meta={"i": i})


def run(client, requests, should_stop=None):
    out = []
    client.run(requests, out.append, should_stop)
    return out


def fast_client(ep, **kw):
    kw.setdefault("backoff_base_s", 0.001)
    return OpenAICompatibleClient(ep.base_url, "fake-teacher", api_key="sk-test", **kw)


def attempts(ep, content) -> int:
    return ep.stats["attempts"].get(content, 0)


# -- success path -------------------------------------------------------------------------------
def test_results_parsed_with_logprobs_and_meta(ep):
    results = run(fast_client(ep, concurrency=4), [req(i, logprobs=i % 2 == 0) for i in range(10)])
    assert sorted(int(r.key) for r in results) == list(range(10))
    for r in results:
        i = int(r.key)
        assert r.error is None and r.text == f"Answer: prompt {i}"
        assert r.finish_reason == "stop" and r.input_tokens > 0 and r.output_tokens > 0
        assert r.meta == {"i": i} and r.cached is False and r.latency_s > 0
        if i % 2 == 0:
            assert r.token_logprobs == [-0.01, -0.02, -0.03]
        else:
            assert r.token_logprobs is None


def test_window_stays_full_and_never_exceeds_concurrency():
    # Latencies spread 1:5, so batch-and-wait would idle most slots behind each batch's slowest.
    with EndpointThread(max_concurrency=100, latency=(0.01, 0.05)) as server:
        results = run(fast_client(server, concurrency=8), [req(i) for i in range(160)])
        s = server.stats
        assert len(results) == 160 and s["requests"] == 160
        assert s["max_in_flight"] == 8
        mean_in_flight = s["busy_s"] / (s["last_end"] - s["first_start"])
        # ~7.5 here even beside a CPU hog; batch-and-wait gives at most 8 * 0.03 / E[max of 8] = 5.3
        # (measured 4.4-4.9), so 6.0 leaves slack for a loaded machine and still catches it.
        assert mean_in_flight >= 6.0, mean_in_flight


def test_run_works_inside_a_running_event_loop(ep):
    async def notebook_cell():
        return run(fast_client(ep, concurrency=2), [req(i) for i in range(3)])

    assert len(asyncio.run(notebook_cell())) == 3


def test_on_result_exception_propagates(ep):
    def boom(res):
        raise ValueError("budget exceeded")

    with pytest.raises(ValueError, match="budget"):
        fast_client(ep, concurrency=2).run([req(i) for i in range(5)], boom)


def test_should_stop_stops_dispatch(ep):
    with EndpointThread(max_concurrency=64, latency=(0.01, 0.01)) as server:
        out = []
        client = fast_client(server, concurrency=4)
        client.run([req(i) for i in range(100)], out.append, should_stop=lambda: len(out) >= 5)
        assert 5 <= len(out) <= 5 + 4
        assert server.stats["requests"] == len(out)  # undispatched requests produce nothing
    out2 = []
    fast_client(ep).run([req(i) for i in range(3)], out2.append, should_stop=lambda: True)
    assert out2 == []


def test_an_unsendable_request_fails_alone(ep):
    bad = ChatRequest("bad", [{"role": "user", "content": object()}], {})
    results = {r.key: r for r in run(fast_client(ep), [bad, req(1)])}
    assert "TypeError" in results["bad"].error and results["1"].error is None


# -- retries ------------------------------------------------------------------------------------
def test_429_honors_retry_after_then_succeeds(ep):
    content = '@@{"status": 429, "times": 2, "retry_after": "0.2"}'
    t0 = time.perf_counter()
    [res] = run(fast_client(ep), [req(0, content)])
    assert res.error is None and res.text.startswith("Answer:")
    assert attempts(ep, content) == 3
    assert time.perf_counter() - t0 >= 0.4  # two Retry-After waits, not the 1 ms backoff
    assert res.latency_s >= 0.4


def test_5xx_retried_then_succeeds_and_others_unaffected(ep):
    content = '@@{"status": 500, "times": 3}'
    results = run(fast_client(ep, concurrency=4), [req(0, content)] + [req(i) for i in range(1, 6)])
    assert all(r.error is None for r in results) and len(results) == 6
    assert attempts(ep, content) == 4


def test_gives_up_after_max_retries_and_run_continues(ep):
    content = '@@{"status": 503, "message": "overloaded"}'
    results = run(fast_client(ep, max_retries=2), [req(0, content), req(1)])
    by_key = {r.key: r for r in results}
    assert "HTTP 503" in by_key["0"].error and "overloaded" in by_key["0"].error
    assert "3 attempts" in by_key["0"].error and by_key["0"].text is None
    assert attempts(ep, content) == 3
    assert by_key["1"].error is None


def test_400_is_not_retried_and_carries_server_message(ep):
    content = '@@{"status": 400, "message": "maximum context length exceeded"}'
    [res] = run(fast_client(ep), [req(0, content)])
    assert "HTTP 400" in res.error and "maximum context length exceeded" in res.error
    assert attempts(ep, content) == 1


@pytest.mark.parametrize("directive", [
    '"body": "<html>proxy error</html>"',           # a proxy's HTML page with status 200
    '"body": "{\\"id\\": \\"x\\", \\"object\\": \\"chat.completion\\"}"',  # a 200 without choices
    '"body": "{\\"choices\\": []}"',               # empty choices
    '"truncate": true',                             # the body stops half-way
    '"drop": true',                                 # the connection is closed without an answer
])
def test_transient_garbage_is_retried_then_answered(ep, directive):
    content = '@@{' + directive + ', "times": 2}'
    [res] = run(fast_client(ep), [req(0, content)])
    assert res.error is None and res.text == "Answer: " + content
    assert attempts(ep, content) == 3 and res.attempts == 3


def test_malformed_200_gives_up_as_a_transient_error_and_is_never_cached(ep, tmp_path):
    from distillflow.engine.cache import RequestCache

    content = '@@{"body": "<html>proxy error</html>", "tag": "always"}'
    [res] = run(fast_client(ep, max_retries=2), [req(0, content)])
    assert "invalid chat completion" in res.error and "proxy error" in res.error
    assert "gave up after 3 attempts" in res.error
    assert res.transient is True and res.attempts == 3 and res.text is None
    assert attempts(ep, content) == 3
    with RequestCache(tmp_path / "c.sqlite") as cache:
        cache.put(res)
        assert cache.count() == 0 and cache.get_many([res.key]) == {}


def test_permanent_4xx_is_not_retried_but_408_409_429_are(ep):
    for status, tries in ((404, 1), (422, 1), (408, 2), (409, 2), (429, 2)):
        content = f'@@{{"status": {status}, "times": 1, "retry_after": "0"}}'
        [res] = run(fast_client(ep), [req(0, content)])
        assert attempts(ep, content) == tries, status
        assert res.attempts == tries
        assert (res.error is None) == (tries == 2), (status, res.error)


def test_401_mentions_the_api_key_env_var(ep):
    content = '@@{"status": 401, "message": "invalid key"}'
    client = fast_client(ep, api_key_env="MY_TEACHER_KEY")
    [res] = run(client, [req(0, content)])
    assert "API key" in res.error and "MY_TEACHER_KEY" in res.error and "invalid key" in res.error
    assert attempts(ep, content) == 1


def test_timeout_is_retried(ep):
    # 1 s, not less: the second (unscripted) attempt must answer within the timeout even on a loaded
    # machine, else a third attempt is made; the first attempt's 3 s hang still always times out.
    content = '@@{"sleep": 3, "times": 1}'
    [res] = run(fast_client(ep, timeout_s=1.0), [req(0, content)])
    assert res.error is None and attempts(ep, content) == 2


def test_timeout_after_retries_is_an_error(ep):
    content = '@@{"sleep": 1.5, "times": 5, "tag": "b"}'
    [res] = run(fast_client(ep, timeout_s=0.2, max_retries=1), [req(0, content)])
    assert "timeout" in res.error.lower() and "2 attempts" in res.error


def test_connection_refused_is_retried_then_reported():
    client = OpenAICompatibleClient("http://127.0.0.1:9/v1", "m", max_retries=1, backoff_base_s=0.001)
    [res] = run(client, [req(0)])
    assert "connection error" in res.error and "127.0.0.1:9" in res.error


# -- rate limits and backoff math ---------------------------------------------------------------
def test_token_bucket_math_with_a_fake_clock():
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, capacity=2.0, clock=lambda: now[0])  # rpm=120
    assert bucket.try_take(1) == 0.0 and bucket.try_take(1) == 0.0
    assert bucket.try_take(1) == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.try_take(1) == 0.0
    # A request larger than the burst passes when the bucket is full, leaving a debt.
    now[0] = 10.0
    assert bucket.try_take(10) == 0.0 and bucket.tokens == pytest.approx(-8.0)
    assert bucket.try_take(1) == pytest.approx(4.5)
    bucket.adjust(+6)  # actual usage came in lower than estimated
    assert bucket.try_take(1) == pytest.approx(1.5)


def test_rate_limiter_buckets_hold_one_second():
    lim = RateLimiter(rpm=120, tpm=60_000)
    assert lim.rpm_bucket.rate == 2.0 and lim.rpm_bucket.capacity == 2.0
    assert lim.tpm_bucket.rate == 1000.0 and lim.tpm_bucket.capacity == 1000.0
    # The same bucket on a frozen clock: on the real one it refills 1000 tokens/s, so a scheduling
    # stall between these lines would add tokens and the check would measure the machine's load.
    lim.tpm_bucket = TokenBucket(lim.tpm_bucket.rate, lim.tpm_bucket.capacity, clock=lambda: 0.0)
    lim.tpm_bucket.tokens = 0
    lim.correct(est_tokens=500, actual_tokens=200)
    assert lim.tpm_bucket.tokens == pytest.approx(300)
    assert RateLimiter().rpm_bucket is None and not RateLimiter(rpm=60).counts_tokens


def test_rpm_limit_is_respected(ep):
    # rpm=600: a 10-request burst, then one every 0.1 s -> 15 requests need >= 0.5 s.
    t0 = time.perf_counter()
    results = run(fast_client(ep, concurrency=16, rpm=600), [req(i) for i in range(15)])
    assert len(results) == 15 and time.perf_counter() - t0 >= 0.45


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 10, usegmt=True)
    assert 8 <= parse_retry_after(date, now=now) <= 10.5
    assert parse_retry_after(email.utils.formatdate(now - 100, usegmt=True)) == 0.0


def test_backoff_full_jitter_bounds():
    policy = RetryPolicy(max_retries=6, base_s=0.5, max_s=4.0)
    for attempt in range(8):
        for _ in range(50):
            assert 0 <= policy.delay(attempt) <= min(4.0, 0.5 * 2**attempt)
    assert 2.0 <= policy.delay(0, retry_after=2.0) <= 2.0 + 0.25


# -- preflight ------------------------------------------------------------------------------------
def test_list_models(ep):
    assert list_models(ep.base_url, "k") == ["fake-teacher"]
    assert asyncio.run(alist_models(ep.base_url + "/")) == ["fake-teacher"]


def test_list_models_errors_name_the_url_and_fix(ep):
    with pytest.raises(ConfigurationError, match=r"127\.0\.0\.1:9/v1/models.*base_url"):
        list_models("http://127.0.0.1:9/v1", timeout_s=2)
    with pytest.raises(ConfigurationError, match=r"rejected the API key.*\$ACME_KEY"):
        list_models(ep.base_url, "bad-key", api_key_env="ACME_KEY")


# -- distilabel adapters (duck-typed LLMs: the real classes need provider SDKs) -----------------
class _StatusError(Exception):
    def __init__(self, status):
        super().__init__(f"status {status}")
        self.status_code = status


class FakeAsyncLLM:
    """Mimics AnthropicLLM.agenerate: no num_generations, stop_sequences, pops the system turn."""

    def __init__(self, fail_first=0, status=429):
        self.calls, self.fail_first, self.status, self.loaded = 0, fail_first, status, 0
        self.in_flight = self.max_in_flight = 0

    def load(self):
        self.loaded += 1

    async def agenerate(self, input, max_tokens: int = 128, stop_sequences=None, temperature: float = 1.0):
        self.calls += 1
        if self.calls <= self.fail_first:
            raise _StatusError(self.status)
        if input and input[0]["role"] == "system":
            input.pop(0)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        text = f"{input[-1]['content']}|{max_tokens}|{stop_sequences}"
        return {"generations": [text], "statistics": {"input_tokens": [3], "output_tokens": [5]}}


def test_async_llm_client_maps_params_retries_and_bounds_concurrency():
    llm = FakeAsyncLLM(fail_first=2)
    client = AsyncLLMClient(llm, concurrency=3, backoff_base_s=0.001)
    messages = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    reqs = [ChatRequest(str(i), messages, {"max_tokens": 7, "stop": ["\n"], "seed": 1}) for i in range(9)]
    out = run(client, reqs)
    assert len(out) == 9 and all(r.error is None for r in out)
    assert out[0].text == "hi|7|['\\n']" and out[0].input_tokens == 3 and out[0].output_tokens == 5
    assert llm.max_in_flight <= 3 and llm.calls == 11 and llm.loaded == 1
    assert messages[0]["role"] == "system"  # the caller's messages are not mutated


def test_async_llm_client_permanent_error_and_key_hint():
    out = run(AsyncLLMClient(FakeAsyncLLM(fail_first=99, status=401), api_key_env="ANTHROPIC_API_KEY"),
              [ChatRequest("k", [{"role": "user", "content": "x"}], {})])
    assert "HTTP 401" in out[0].error and "ANTHROPIC_API_KEY" in out[0].error


class FakeSyncLLM:
    def __init__(self):
        self.batches = []

    def load(self):
        pass

    def generate(self, inputs, num_generations: int = 1, max_new_tokens: int = 128, temperature: float = 0.1):
        self.batches.append((len(inputs), max_new_tokens, temperature))
        return [{"generations": [m[-1]["content"].upper()], "statistics": {"input_tokens": [1], "output_tokens": [2]}}
                for m in inputs]


def test_sync_llm_client_batches_by_params():
    llm = FakeSyncLLM()
    reqs = [ChatRequest(str(i), [{"role": "user", "content": f"p{i}"}], {"max_tokens": 9, "temperature": 0.5})
            for i in range(5)]
    reqs.append(ChatRequest("x", [{"role": "user", "content": "px"}], {"max_tokens": 3}))
    out = run(SyncLLMClient(llm, batch_size=2), reqs)
    assert [r.text for r in out] == ["P0", "P1", "P2", "P3", "P4", "PX"]
    assert llm.batches == [(2, 9, 0.5), (2, 9, 0.5), (1, 9, 0.5), (1, 3, 0.1)]


def test_map_params_aliases():
    import inspect

    def vllm_like(inputs, max_new_tokens=1, stop=None, logprobs=None):
        pass

    accepted = inspect.signature(vllm_like).parameters
    assert map_params({"max_tokens": 5, "stop": ["x"], "logprobs": True, "seed": 3, "top_p": None}, accepted) == {
        "max_new_tokens": 5, "stop": ["x"], "logprobs": 1}


_NOTEBOOK_CTRL_C = r'''
import asyncio
from distillflow.engine.client import run_coroutine_sync

done = []

async def run():  # a run: waits on its teachers, then cleans up (which itself awaits)
    try:
        print("started", flush=True)
        await asyncio.sleep(120)
    finally:
        await asyncio.sleep(0.05)
        done.append("cleaned up")

async def cell():  # a notebook cell: Jupyter's loop is running in this thread
    try:
        run_coroutine_sync(run)
    except KeyboardInterrupt:
        print("KeyboardInterrupt after:", done, flush=True)

asyncio.new_event_loop().run_until_complete(cell())  # (no SIGINT handler of asyncio.run's: as in ipykernel)
'''


def test_ctrl_c_inside_a_running_loop_cancels_the_run_and_waits_for_its_cleanup():
    """In a notebook the run's loop is in a worker thread and Ctrl-C lands in the caller's: the run
    is cancelled and its cleanup (cache flush, a Ray run's hub read back) finishes before
    KeyboardInterrupt reaches the cell. (Before: raised at once, the run still going on behind.)"""
    import os
    import signal
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", _NOTEBOOK_CTRL_C], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "started", proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert out.strip() == "KeyboardInterrupt after: ['cleaned up']", (out, err[-2000:])
