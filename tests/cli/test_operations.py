"""Operations a real run meets, with real `distillflow run` subprocesses against the local endpoint:
a second run on a locked directory, SIGTERM, a full disk and a read-only output directory."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from benchmarks.fake_endpoint import EndpointThread
from distillflow.engine.lock import LOCK_NAME
from tests.support import ROOT, cached_answers, pipeline_yaml, small_disk

pytestmark = pytest.mark.timeout(240)


def _pipeline(tmp_path, ep, n, concurrency):
    rows = "".join(f'\n    - {{question: "Question {i}?", answer: "{i}"}}' for i in range(n))
    path = tmp_path / "p.yaml"
    path.write_text(pipeline_yaml(ep.base_url, "  - kind: generate\n", rows=rows).replace(
        "    price:", f"    concurrency: {concurrency}\n    price:"))
    return path


def _cmd(path, out):
    return [sys.executable, "-m", "distillflow", "run", str(path), "--out", str(out), "--no-progress"]


ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def _wait_for(predicate, what, timeout=90):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_locked_run_dir_then_sigterm_stops_cleanly_and_resume_pays_nothing_twice(tmp_path):
    n = 80  # ~10 s of work, 2 at a time: the second command's start-up on a loaded machine ends well before it
    with EndpointThread(latency=(0.2, 0.3)) as ep:
        path = _pipeline(tmp_path, ep, n, concurrency=2)
        out = tmp_path / "run"
        db = out / "cache" / "requests.sqlite"
        first = subprocess.Popen(_cmd(path, out), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: cached_answers(db) >= 4, "4 cached answers")

        # A second run on the same directory: exit 2, the holder named (and nothing asked: checked
        # at the end, where every prompt was paid for once, plus at most the window cut by SIGTERM).
        second = subprocess.run(_cmd(path, out), env=ENV, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"is in use by pid {first.pid} on host " in second.stderr and "Traceback" not in second.stderr

        assert first.poll() is None, f"the first run ended before it could be stopped: {first.communicate()}"
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
        assert first.returncode == 143, err
        assert "terminated (SIGTERM) — every answer received so far is cached; run the same command again to resume" in err
        assert "Traceback" not in err
        assert not (out / LOCK_NAME).exists()  # released on the way out
        cached, sent = cached_answers(db), ep.stats["requests"]
        assert 4 <= cached < n and sent - cached <= 2  # at most the window was in flight

        done = subprocess.run(_cmd(path, out), env=ENV, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        assert ep.stats["requests"] - sent == n - cached  # no answer paid twice
        assert cached_answers(db) == n
        assert ep.stats["requests"] <= n + 2


def test_a_run_with_quarantined_records_exits_0_with_a_warning(tmp_path):
    rows = """
    - {question: '@@{"status": 500, "message": "boom"}', answer: "x"}
    - {question: "Say hi", answer: "hi"}"""
    with EndpointThread(latency=(0.001, 0.002)) as ep:
        path = tmp_path / "p.yaml"
        path.write_text(pipeline_yaml(ep.base_url, "  - kind: generate\n", rows=rows).replace(
            "    price:", "    max_retries: 1\n    price:"))
        done = subprocess.run(_cmd(path, tmp_path / "run"), env=ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 curated, 1 rejected" in done.stdout
    assert ("warning: 1 record(s) quarantined after teacher errors (rejected with reason 'teacher_error', "
            "see data/rejected.jsonl); run `distillflow run --retry-errors` to ask them again") in done.stderr


# -- full disk and read-only output, on a real (tmpfs) filesystem ------------------------------------
def test_full_disk_stops_with_one_message_and_the_rerun_resumes_once_space_is_freed(tmp_path):
    n = 400
    with EndpointThread(latency=(0.01, 0.02)) as ep, small_disk(tmp_path / "disk", "4m") as disk:
        path = _pipeline(tmp_path, ep, n, concurrency=8)
        filler = disk / "filler"
        # Leave the cache's 1 MiB reserve + ~160 KB: the cache (its WAL grows by a page or more per
        # commit) fills that mid-run; the reserve then makes room to store what was received.
        free = shutil.disk_usage(disk).free
        # (+ room for the run's prompt store, written before the first request)
        filler.write_bytes(b"\0" * (free - 1024 * 1024 - 160 * 1024 - 512 * 1024))
        out = disk / "run"
        db = out / "cache" / "requests.sqlite"
        first = subprocess.run(_cmd(path, out), env=ENV, capture_output=True, text=True, timeout=180)
        assert first.returncode == 1, (first.returncode, first.stderr[-3000:])
        err = first.stderr
        assert "Traceback" not in err and "Exception in callback" not in err, err[-3000:]
        assert err.count("error: ") == 1 and str(out) in err
        cached, sent = cached_answers(db), ep.stats["requests"]
        m = re.search(r"read-only\. (\d+) answers are stored there \(every answer received is stored\)\. Free space", err)
        assert err.startswith(f"error: cannot write the answer cache {db} (database or disk is full): ") and m, err
        assert int(m.group(1)) <= cached  # (answers finishing while the run stopped were stored too)
        assert "run the same command again to resume" in err
        assert 0 < cached < n and sent - cached <= 8, (cached, sent)  # lost: at most the window in flight

        filler.unlink()  # free the space
        done = subprocess.run(_cmd(path, out), env=ENV, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{n} curated" in done.stdout
        # Everything stored before the disk filled is reused; only the rest is asked again.
        assert ep.stats["requests"] - sent == n - cached
        assert cached_answers(db) == n


def test_read_only_output_directory_is_one_clear_message(tmp_path):
    with EndpointThread(latency=(0.001, 0.002)) as ep, small_disk(tmp_path / "ro", "1m") as disk:
        path = _pipeline(tmp_path, ep, 4, concurrency=2)
        out = disk / "run"
        out.mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        first = subprocess.run(_cmd(path, out), env=ENV, capture_output=True, text=True, timeout=120)
        assert first.returncode == 1, first.stderr
        assert first.stderr.startswith(f"error: cannot write to the run directory {out} (Read-only file system)")
        assert "Traceback" not in first.stderr and ep.stats["requests"] == 0  # nothing asked, nothing paid
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        done = subprocess.run(_cmd(path, out), env=ENV, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "4 curated" in done.stdout, done.stderr
