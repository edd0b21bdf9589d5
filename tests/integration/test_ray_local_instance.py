"""``backend: ray`` with no address (``pipe.run(backend="ray")`` in a notebook, no cluster started):
each run starts a REAL Ray instance on this machine and stops it when it ends. Four runs in one
Python process (tests/integration/ray_local_instance.py, inside ``unshare -n`` as every Ray test
here, with ``HOME`` and ``RAY_TMPDIR`` in a temporary folder: a plain local ``ray.init`` writes
``~/.ray/auth_token``). Skipped, with the reason, only where Ray cannot start (no Ray, no root for
``unshare -n``); under CI=true that is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.ray_cluster import namespaced
from tests.support import need_ray_namespace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def results():
    need_ray_namespace()
    # (short: Ray's socket paths live under RAY_TMPDIR and must stay under 107 characters)
    tmp = Path(tempfile.mkdtemp(prefix="dfrl-", dir="/tmp"))
    try:
        (tmp / "home").mkdir()
        (tmp / "rt").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
        env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp / "home"), RAY_TMPDIR=str(tmp / "rt"))
        proc = subprocess.run(namespaced([sys.executable, "-m", "tests.integration.ray_local_instance", str(tmp / "out.json")]),
                              cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
        out = tmp / "out.json"
        assert out.is_file(), f"the runs wrote nothing (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        got = json.loads(out.read_text())
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return got


def test_a_run_without_an_address_starts_ray_here_and_stops_it(results):
    first = results["first"]
    assert first["curated"] == 12 == first["local_curated"] and first["same_as_local"], first
    w = first["workers"]
    assert len(w["nodes"]) == 1 and sum(w["shards_per_node"].values()) == 4, w
    assert results["first_left_ray_running"] is False  # (the instance distillflow started is stopped)


def test_local_model_copies_start_anew_with_each_fresh_instance(results):
    runs = results["copies"]["runs"]
    assert [(r["curated"], r["new"]) for r in runs] == [(6, 6), (6, 6)], runs
    assert results["copies"]["same_as_local"] == [True, True] and results["copies"]["local_curated"] == 6
    copies = [r["workers"]["model_copies"]["local"] for r in runs]
    assert all(len(c) == 1 and c[0]["requests"] == 6 and "error" not in c[0] for c in copies), copies
    # the second run's instance is a new one: a new node, and a copy of its own (the first's went with it)
    assert runs[0]["workers"]["nodes"] != runs[1]["workers"]["nodes"]
    assert copies[0][0]["pid"] != copies[1][0]["pid"]


def test_a_later_run_in_the_same_process_works_on_its_own_fresh_instance(results):
    again = results["again"]
    assert again["curated"] == 12 and again["same_as_local"], again
    assert again["workers"]["nodes"] != results["first"]["workers"]["nodes"]
    assert results["left_ray_running"] is False
