"""The GPU check scripts' plumbing on CPU (`--dry-run`): what runs on a GPU machine must not first
fail there on a typo. Their real results come from a GPU (docs/gpu/h200_deepspeed_check.log)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "SKIP_PARTB": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("DRY_DS", None)
    env.update(env_extra)
    return subprocess.run(["bash", str(ROOT / "scripts" / script), "--dry-run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_deepspeed_check_dry_run_plumbing_without_deepspeed(tmp_path):
    """Only the no-DeepSpeed config runs here: this checks the script's plumbing, not ZeRO. No ZeRO engine
    runs in this suite: DRY_DS=1 (ZeRO-2/3 on DeepSpeed's CPU accelerator) did not finish its first run
    within 15 minutes on a 2-core machine; the ZeRO path is checked on a GPU (docs/gpu/)."""
    proc = _run("gpu_deepspeed_check.sh", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== A. HF Trainer + DeepSpeed (distillflow's rendered zero2/zero3 JSON): nods, --steps 2 --cpu" in proc.stdout
    assert "PART A: PASS" in proc.stdout
    assert (tmp_path / "out" / "gpu_deepspeed_check.log").is_file()
