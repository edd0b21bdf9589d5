"""RunLock: one run per run directory; a holder is named; a stale lock is taken over."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from distillflow.engine.lock import LOCK_NAME, RunLock, read_lock
from distillflow.errors import RunLockedError
from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(d, **info):
    d.mkdir(parents=True, exist_ok=True)
    (d / LOCK_NAME).write_text(json.dumps(info))


def test_lock_file_names_this_process_and_is_removed_on_exit(tmp_path):
    d = tmp_path / "run"
    with RunLock(d):
        info = read_lock(d)
        assert info["host"] == socket.gethostname() and info["pid"] == os.getpid()
        assert time.strptime(info["started"], "%Y-%m-%dT%H:%M:%SZ")
        assert abs(info["heartbeat"] - time.time()) < 60
    assert not (d / LOCK_NAME).exists() and read_lock(d) is None


def test_a_second_holder_is_refused_with_the_holder_named(tmp_path):
    d = tmp_path / "run"
    code = ("import sys, time\nfrom distillflow.engine.lock import RunLock\n"
            f"with RunLock({str(d)!r}):\n    print('held', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as info:
            RunLock(d).acquire()
        msg = str(info.value)
        assert f"the run directory {d} is in use by pid {holder.pid} on host {socket.gethostname()}, started " in msg
        assert "use another --out" in msg and info.value.exit_code == 2
    finally:
        holder.stdin.close()
        holder.wait(30)
    assert holder.returncode == 0 and read_lock(d) is None  # the holder released it
    with RunLock(d):  # and now it is free
        pass


def test_a_lock_left_by_a_dead_process_on_this_host_is_taken_over(tmp_path):
    d = tmp_path / "run"
    pid = _dead_pid()
    _write_lock(d, host=socket.gethostname(), pid=pid, started="2026-01-01T00:00:00Z", heartbeat=time.time())
    messages = []
    with RunLock(d, notify=messages.append) as lock:
        assert read_lock(d)["pid"] == os.getpid()
    assert messages == [f"note: took over the lock of {d} left by pid {pid} on host {socket.gethostname()}, "
                        "started 2026-01-01T00:00:00Z (its process is gone); resuming from its cache."]
    assert lock.took_over == messages[0]
    assert [p.name for p in d.iterdir()] == []  # no leftovers (the stale file moved aside is gone)


def test_a_reused_pid_is_not_mistaken_for_the_holder(tmp_path):
    d = tmp_path / "run"
    # Our own (live) pid, but with another process start time: the holder died and the pid was reused.
    _write_lock(d, host=socket.gethostname(), pid=os.getppid(), proc_start=1, started="x", heartbeat=time.time())
    messages = []
    with RunLock(d, notify=messages.append):
        pass
    assert len(messages) == 1 and "its pid now belongs to another process" in messages[0]


def test_other_host_lock_is_stale_only_after_its_heartbeat_stops(tmp_path):
    d = tmp_path / "run"
    _write_lock(d, host="node-7", pid=123, started="2026-01-01T00:00:00Z", heartbeat=time.time() - 10)
    with pytest.raises(RunLockedError) as info:
        RunLock(d, stale_after_s=300).acquire()
    assert "in use by pid 123 on host node-7, started 2026-01-01T00:00:00Z" in str(info.value)
    _write_lock(d, host="node-7", pid=123, started="2026-01-01T00:00:00Z", heartbeat=time.time() - 400)
    messages = []
    with RunLock(d, stale_after_s=300, notify=messages.append):
        assert read_lock(d)["host"] == socket.gethostname()
    # the age is measured on the real clock when the lock is read: a stall can make it 401s
    assert len(messages) == 1 and re.search(r"\(no heartbeat for 40\ds\)", messages[0]), messages


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    d = tmp_path / "run"
    with RunLock(d, heartbeat_s=0.05):
        first = read_lock(d)["heartbeat"]
        deadline = time.time() + 30
        while read_lock(d)["heartbeat"] == first and time.time() < deadline:
            time.sleep(0.02)
        assert read_lock(d)["heartbeat"] > first and read_lock(d)["pid"] == os.getpid()


def test_the_same_process_may_nest_locks_on_one_directory(tmp_path):
    d = tmp_path / "run"
    with RunLock(d):
        with RunLock(d):  # e.g. the CLI and the engine both wrap the run
            assert read_lock(d)["pid"] == os.getpid()
        assert read_lock(d) is not None  # the outer one still holds it
    assert read_lock(d) is None
