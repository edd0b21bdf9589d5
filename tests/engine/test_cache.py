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


# -- the journal: WAL on one machine, a rollback journal where other hosts read the files ---------------
_MOUNTS = textwrap.dedent(
    r"""
    21 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
    30 21 0:40 / /mnt/shared\040runs rw,relatime shared:5 - nfs4 fs:/export rw,vers=4.2
    31 30 0:41 / /mnt/shared\040runs/bucket rw - fuse.gcsfuse bucket rw
    32 21 0:42 / /scratch rw - xfs /dev/vdb rw
    33 21 0:43 / /mnt/shared rw - tmpfs tmpfs rw
    """
)


@pytest.mark.parametrize("path,fstype", [
    ("/mnt/shared runs/qa/cache", "nfs4"),           # an escaped space in the mount point
    ("/mnt/shared runs/bucket/x", "fuse.gcsfuse"),    # the deeper mount wins
    ("/mnt/shared/x", "tmpfs"),                      # not the NFS mount: a prefix of the name only
    ("/scratch", "xfs"), ("/srv/runs", "ext4"),
])
def test_filesystem_type_from_mountinfo(path, fstype):
    from distillflow.engine.cache import filesystem_type

    assert filesystem_type(path, _MOUNTS) == fstype


def test_this_machines_filesystem_is_known_and_local(tmp_path):
    from distillflow.engine.cache import filesystem_type, is_network_fs

    fstype = filesystem_type(tmp_path)
    assert fstype and not is_network_fs(fstype), fstype
    assert all(is_network_fs(t) for t in ("nfs", "nfs4", "cifs", "ceph", "lustre", "fuse.sshfs", "fuse", None))


def test_cache_journal_by_filesystem_and_the_override(tmp_path, monkeypatch):
    from distillflow.engine import cache as cache_mod
    from distillflow.errors import ConfigurationError

    monkeypatch.delenv(cache_mod.JOURNAL_ENV, raising=False)
    assert cache_mod.cache_journal(tmp_path) == "wal"  # (a local disk: every reader is on this machine)
    monkeypatch.setattr(cache_mod, "filesystem_type", lambda p: "nfs4")
    assert cache_mod.cache_journal(tmp_path) == "truncate"
    monkeypatch.setenv(cache_mod.JOURNAL_ENV, " WAL ")
    assert cache_mod.cache_journal(tmp_path) == "wal"
    monkeypatch.setenv(cache_mod.JOURNAL_ENV, "delete")
    with pytest.raises(ConfigurationError, match="DISTILLFLOW_CACHE_JOURNAL='delete'.*'wal' or 'truncate'"):
        cache_mod.cache_journal(tmp_path)


_TRUNCATE_WRITER = textwrap.dedent(
    """
    import sys, time, types
    pkg = types.ModuleType("distillflow")
    pkg.__path__ = [{pkg_dir!r}]
    sys.modules["distillflow"] = pkg
    from distillflow.engine.cache import RequestCache
    from distillflow.engine.client import ChatResult

    cache = RequestCache({path!r}, journal="truncate")
    print(cache.journal, flush=True)
    for i in range(120):
        cache.put(ChatResult(f"k{{i}}", f"t{{i}}", 1, 1, None, "stop", None, 0.1))
    cache.flush()
    print("FLUSHED", flush=True)
    time.sleep(60)  # killed, never closed
    """
)


def test_a_rollback_journal_sibling_is_read_while_its_writer_lives_and_after_it_is_killed(tmp_path):
    """A worker's file in the mode used on network filesystems: another process (the retried
    shard, the driver) reads its answers while it writes, and after a SIGKILL; the driver's absorb
    folds them in and leaves no journal behind."""
    from distillflow.engine.cache import SharedCache, sibling_path

    main = tmp_path / "requests.sqlite"
    theirs = sibling_path(main, "nodeA-1")
    code = _TRUNCATE_WRITER.format(pkg_dir=str(ROOT / "distillflow"), path=str(theirs))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "truncate"
        assert proc.stdout.readline().strip() == "FLUSHED"
        assert not theirs.with_name(theirs.name + "-wal").exists()  # no WAL (its index is shared memory)
        mine = SharedCache(RequestCache(sibling_path(main, "nodeB-2"), journal="truncate"), main)
        got = mine.get_many([f"k{i}" for i in range(125)])  # the writer is alive, its file open
        assert len(got) == 120 and got["k7"].text == "t7" and got["k7"].cached
        mine.put(ok("mine"))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert len(mine.get_many([f"k{i}" for i in range(120)])) == 120
        mine.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    with RequestCache(main, journal="truncate") as driver:
        assert driver.journal == "truncate"
        assert driver.absorb() == 121
        assert driver.count() == 121
    # the siblings are gone with their journals; the main file keeps its own (empty: TRUNCATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "requests.sqlite", "requests.sqlite-journal", "requests.sqlite.reserve"]
    assert (tmp_path / "requests.sqlite-journal").stat().st_size == 0


def test_a_wal_file_switches_to_a_rollback_journal_and_back(tmp_path):
    path = tmp_path / "c.sqlite"
    with RequestCache(path) as c:
        assert c.journal == "wal"
        c.put(ok("a"))
    with RequestCache(path, journal="truncate") as c:
        assert c.journal == "truncate" and c.count() == 1
    with RequestCache(path) as c:
        assert c.journal == "wal" and c.count() == 1
    with pytest.raises(ValueError, match="journal"):
        RequestCache(path, journal="memory")
