"""SIGTERM while the CLI joins a Ray cluster: ``ray.init`` puts Ray's own SIGTERM handler in before
it connects (it exits with status 15 and no word); the run must stop as it does everywhere else
(exit 143, the resume hint). Real Ray (the driver's own client), inside ``unshare -n`` as every
Ray test here; the cluster is a listener that never answers (tests/integration/ray_join_sigterm.py).
Skipped, with the reason, only where that cannot run (no Ray, no root); under CI=true a failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.ray_cluster import namespaced
from tests.support import need_ray_namespace

ROOT = Path(__file__).resolve().parents[2]


def test_sigterm_while_joining_a_cluster_stops_the_run_with_exit_143_and_the_resume_hint(tmp_path):
    need_ray_namespace()
    (tmp_path / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
    env.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp_path / "home"))
    out = tmp_path / "out.json"
    proc = subprocess.run(namespaced([sys.executable, "-m", "tests.integration.ray_join_sigterm", str(out)]),
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
    assert out.is_file(), f"nothing recorded (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert r["joining_when_signalled"] and r["connections"] >= 2, r
    assert r["rc"] == 143, r["err"]
    assert "terminated (SIGTERM)" in r["err"] and "run the same command again to resume" in r["err"], r["err"]
    assert "Traceback" not in r["err"], r["err"]
