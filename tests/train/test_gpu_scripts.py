"""The GPU check scripts' plumbing on CPU (`--dry-run`): what runs on a GPU machine must not first
fail there on a typo. Their real results come from a GPU (docs/gpu/h200_deepspeed_check.log)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, tmp_path: Path, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "WORK": str(tmp_path / "work"),
           "SKIP_PARTB": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("DRY_DS", None)
    env.update(env_extra)
    return subprocess.run(["bash", str(ROOT / "scripts" / script), "--dry-run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=3000)


def test_deepspeed_check_dry_run_plumbing_without_deepspeed(tmp_path):
    """Only the no-DeepSpeed config runs here: this checks the script's plumbing, not ZeRO."""
    proc = _run("gpu_deepspeed_check.sh", tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "== A. HF Trainer + DeepSpeed (distillflow's rendered zero2/zero3 JSON): nods, --steps 2 --cpu" in proc.stdout
    assert "PART A: PASS" in proc.stdout
    assert (tmp_path / "out" / "gpu_deepspeed_check.log").is_file()


@pytest.mark.slow
def test_deepspeed_check_dry_run_runs_zero2_and_zero3_engines_on_cpu(tmp_path):
    """DRY_DS=1: the rendered ZeRO-2/3 JSON drive real DeepSpeed engines on DeepSpeed's CPU accelerator
    (HF Trainer; Axolotl's own DeepSpeed setup needs NCCL, so that path runs on a GPU machine only)."""
    # a loaded 2-core machine JIT-builds DeepSpeed's CPU comm op on the first run: minutes, not 150 s
    proc = _run("gpu_deepspeed_check.sh", tmp_path, DRY_DS="1", A_TIMEOUT_S="900")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "zero2 zero3, --steps 2 --cpu" in proc.stdout and "PART A: PASS" in proc.stdout
    log = (tmp_path / "out" / "gpu_deepspeed_check.log").read_text()
    for stage in ("zero2", "zero3"):
        assert stage in log, log[-3000:]

