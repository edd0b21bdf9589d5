"""The per-request SQLite answer cache and its keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distillflow.engine.cache import RequestCache, request_key
from distillflow.engine.client import ChatResult

pytestmark = pytest.mark.timeout(15)
ROOT = Path(__file__).resolve().parents[2]


def ok(key: str, text: str = "answer", **kw) -> ChatResult:
    fields = dict(input_tokens=3, output_tokens=4, token_logprobs=[-0.5, -0.25], finish_reason="stop",
                  error=None, latency_s=0.1)
    fields.update(kw)
    return ChatResult(key=key, text=text, **fields)


def test_round_trip_marks_cached_and_skips_errors(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        cache.put(ok("a", "héllo ✓", meta={"row": 1}))
        cache.put(ok("b", error="HTTP 500", text=None))  # failures are never cached
        cache.put(ok("c", token_logprobs=None, finish_reason=None))
        assert cache.count() == 2
        got = cache.get_many(["a", "b", "c", "zz"])
    assert set(got) == {"a", "c"}
    a = got["a"]
    assert a.cached is True and a.meta == {} and a.error is None
    assert (a.text, a.input_tokens, a.output_tokens, a.token_logprobs, a.finish_reason) == (
        "héllo ✓", 3, 4, [-0.5, -0.25], "stop")
    assert got["c"].token_logprobs is None


def test_persists_across_reopen_and_chunks_many_keys(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    with RequestCache(path) as cache:
        for i in range(1234):
            cache.put(ok(f"k{i}", f"t{i}"))
    with RequestCache(path) as cache:
        assert len(cache) == 1234
        got = cache.get_many([f"k{i}" for i in range(0, 1300)])
        assert len(got) == 1234 and got["k1233"].text == "t1233"
        cache.put(ok("k0", "newer"))  # a re-answer replaces the old one
        assert cache.get_many(["k0"])["k0"].text == "newer"


def _committed(path) -> int:
    """Rows visible to another connection, i.e. committed."""
    import sqlite3

    con = sqlite3.connect(str(path))
    try:
        return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    finally:
        con.close()


def test_commits_at_once_when_slow_and_by_timer_when_fast(tmp_path):
    import time

    path = tmp_path / "c.sqlite"
    cache = RequestCache(path)
    cache.put(ok("first"))
    assert _committed(path) == 1  # the last commit is old: this one commits immediately
    for i in range(20):
        cache.put(ok(f"k{i}"))
    # nothing else is put: the timer commits the stragglers (poll the state, never race the 20 ms timer)
    deadline = time.monotonic() + 60
    while _committed(path) < 21 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _committed(path) == 21
    cache.close()


def test_cached_results_are_not_rewritten(tmp_path):
    with RequestCache(tmp_path / "c.sqlite") as cache:
        cache.put(ok("a", cached=True))
        assert cache.count() == 0


def test_put_after_close_raises(tmp_path):
    cache = RequestCache(tmp_path / "c.sqlite")
    cache.close()
    cache.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        cache.put(ok("a"))


def test_request_key_is_canonical():
    msgs = [{"role": "user", "content": "hi"}]
    k = request_key("openai", "m", "http://h/v1", {"temperature": 0.5, "max_tokens": 8}, msgs, 0)
    assert len(k) == 64 and int(k, 16) >= 0
    # Param order, None-valued params and a trailing slash do not change the key.
    assert k == request_key("openai", "m", "http://h/v1/", {"max_tokens": 8, "temperature": 0.5, "seed": None}, msgs, 0)
    for other in [
        request_key("openai", "m", "http://h/v1", {"temperature": 0.5, "max_tokens": 8}, msgs, 1),
        request_key("openai", "m2", "http://h/v1", {"temperature": 0.5, "max_tokens": 8}, msgs, 0),
        request_key("openai", "m", "http://h/v1", {"temperature": 0.6, "max_tokens": 8}, msgs, 0),
        request_key("openai", "m", "http://h/v1", {"temperature": 0.5, "max_tokens": 8},
                    [{"role": "user", "content": "hi!"}], 0),
        request_key("anthropic", "m", "http://h/v1", {"temperature": 0.5, "max_tokens": 8}, msgs, 0),
    ]:
        assert other != k


_WRITER = textwrap.dedent(
    """
    import asyncio, sys, time, types
    # A bare package object: skips distillflow/__init__ (pydantic, spec...), which this child
    # does not need, so the test stays fast.
    pkg = types.ModuleType("distillflow")
    pkg.__path__ = [{pkg_dir!r}]
    sys.modules["distillflow"] = pkg
    from distillflow.engine.cache import RequestCache
    from distillflow.engine.client import ChatResult

    cache = RequestCache({path!r})

    def put_all():
        for i in range(230):  # commits by time and by count; the last few wait for the timer
            cache.put(ChatResult(f"k{{i}}", "t", 1, 1, None, "stop", None, 0.1))
        print("PUT", flush=True)

    async def in_loop():
        put_all()
        await asyncio.sleep(60)  # the loop's call_later timer commits; never closed

    if {use_loop!r}:
        asyncio.run(in_loop())
    else:
        put_all()
        time.sleep(60)  # a threading.Timer commits; never closed
    """
)


@pytest.mark.parametrize("use_loop", [False, True], ids=["thread-timer", "asyncio-timer"])
def test_kill_9_loses_nothing_older_than_the_flush_interval(tmp_path, use_loop):
    path = tmp_path / "c.sqlite"
    code = _WRITER.format(pkg_dir=str(ROOT / "distillflow"), path=str(path), use_loop=use_loop)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "PUT"
        import time

        # the writer never closes the cache: only its flush timer can commit; wait for that state
        deadline = time.monotonic() + 60
        while _committed(path) < 230 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None  # still running, never closed
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
    with RequestCache(path) as cache:
        assert cache.count() == 230
