"""The per-teacher circuit breaker: unit rules on an injected clock, then run_window against a real endpoint."""

from __future__ import annotations

import pytest

from benchmarks.fake_endpoint import EndpointThread
from distillflow.engine.client import ChatRequest, OpenAICompatibleClient
from distillflow.engine.scheduler import CircuitBreaker
from distillflow.errors import TeacherError, TeacherOutageError

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_n_failures_in_a_row_and_a_success_resets_the_count():
    b = CircuitBreaker("gpt", failures_in_a_row=3, seconds_without_success=None, clock=Clock())
    assert b.record(False, "HTTP 503") is False
    assert b.record(False, "HTTP 503") is False
    assert b.record(True) is False and b.consecutive == 0  # an answer: not an outage
    assert b.record(False, "a") is False and b.record(False, "b") is False
    assert b.record(False, "HTTP 500: down") is True
    assert b.is_open and b.reason == "3 requests in a row failed after their retries"
    err = b.error()
    assert isinstance(err, TeacherOutageError) and isinstance(err, TeacherError) and err.exit_code == 1
    assert str(err).startswith("teacher 'gpt' looks down: 3 requests in a row failed after their retries "
                               "(last error: HTTP 500: down).")
    assert "run the same command to resume" in str(err)


def test_on_open_is_called_once_and_a_breaker_opened_elsewhere_names_where():
    b = CircuitBreaker("gpt", failures_in_a_row=2, seconds_without_success=None, clock=Clock())
    heard = []
    b.on_open = lambda reason, error: heard.append((reason, error))
    b.record(False, "HTTP 500: down")
    assert heard == []
    b.record(False, "HTTP 500: down")
    b.record(False, "HTTP 500: down")  # already open: not told again
    assert heard == [("2 requests in a row failed after their retries", "HTTP 500: down")]
    other = CircuitBreaker("gpt", clock=Clock())
    other.on_open = lambda *a: heard.append(a)
    other.open_elsewhere(b.reason, b.last_error, "Ray worker 3f2a-41")
    assert other.is_open and len(heard) == 1  # (opened by another's word: nothing to tell)
    msg = str(other.error())
    assert "teacher 'gpt' looks down: 2 requests in a row failed after their retries in Ray worker 3f2a-41" in msg
    assert "(last error: HTTP 500: down)" in msg and "run the same command to resume" in msg


def test_opens_when_no_success_for_t_seconds_while_requests_keep_failing():
    clock = Clock()
    b = CircuitBreaker("t", failures_in_a_row=100, seconds_without_success=60, min_failures=3, clock=clock)
    b.record(True)
    clock.t += 61
    assert b.record(False, "timeout") is False  # one slow failure after a quiet minute: no outage
    assert b.record(False, "timeout") is False
    assert b.record(False, "timeout") is True
    assert b.reason == "no request succeeded for 61s while 3 requests in a row failed after their retries"


def test_time_rule_counts_from_start_not_from_construction():
    clock = Clock()
    b = CircuitBreaker("t", failures_in_a_row=100, seconds_without_success=60, min_failures=1, clock=clock)
    clock.t += 3600  # the teacher sat idle while other steps ran
    b.start()
    clock.t += 10
    assert b.record(False, "x") is False
    clock.t += 51
    assert b.record(False, "x") is True


def test_time_rule_can_be_switched_off():
    clock = Clock()
    b = CircuitBreaker("t", failures_in_a_row=5, seconds_without_success=None, clock=clock)
    clock.t += 10**6
    assert not any(b.record(False, "x") for _ in range(4))


def _reqs(contents):
    return [ChatRequest(str(i), [{"role": "user", "content": c}], {"max_tokens": 8}) for i, c in enumerate(contents)]


def test_run_window_quarantines_isolated_failures_and_finishes():
    with EndpointThread(latency=(0.001, 0.002)) as ep:
        breaker = CircuitBreaker("t", failures_in_a_row=3)
        client = OpenAICompatibleClient(ep.base_url, "m", concurrency=4, max_retries=1, backoff_base_s=0.001,
                                        breaker=breaker)
        bad = '@@{"status": 503, "message": "overloaded"}'
        contents = [f"p{i}" if i % 5 else bad + f" {i}" for i in range(40)]  # 8 failures, never 3 in a row
        out = []
        client.run(_reqs(contents), out.append)
    assert len(out) == 40 and not breaker.is_open
    failed = sorted(int(r.key) for r in out if r.error)
    assert failed == list(range(0, 40, 5))
    assert all(r.transient and r.attempts == 2 and "HTTP 503: overloaded" in r.error for r in out if r.error)


def test_run_window_stops_dispatching_when_the_breaker_opens():
    with EndpointThread(latency=(0.001, 0.002)) as ep:
        breaker = CircuitBreaker("teach", failures_in_a_row=4)
        client = OpenAICompatibleClient(ep.base_url, "m", concurrency=2, max_retries=1, backoff_base_s=0.001,
                                        breaker=breaker)
        contents = [f'@@{{"status": 500, "message": "dead"}} {i}' for i in range(200)]
        out = []
        with pytest.raises(TeacherOutageError) as info:
            client.run(_reqs(contents), out.append)
        sent = ep.stats["requests"]
    assert "teacher 'teach' looks down: 4 requests in a row failed" in str(info.value)
    assert "HTTP 500: dead" in str(info.value)
    # Stopped after the 4th failure: at most the other in-flight request finished besides.
    assert 4 <= len(out) <= 5 and sent <= 2 * 5
