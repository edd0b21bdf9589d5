"""Time one `distillflow run` command in a child process: what the CLI benchmarks share.

    wall_s, proc = time_cli_run(workdir)             # python -m distillflow run p.yaml --out run --no-progress
    wall_s, proc = time_cli_run(workdir, tree=other)  # another source tree's distillflow first on PYTHONPATH
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def time_cli_run(workdir: Path, pipeline: str = "p.yaml", out: str = "run", tree: Path = ROOT,
                 prefix: list[str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """(wall seconds from process start to exit, the finished process) of ``distillflow run`` in ``workdir``.

    ``prefix``: a command the run is started through (e.g. a wrapper that reports the child's peak
    RSS). A failed run writes the tail of its stderr and raises.
    """
    cmd = [*(prefix or []), sys.executable, "-m", "distillflow", "run", pipeline, "--out", out, "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(tree) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(workdir), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"distillflow run failed with exit code {proc.returncode}")
    return wall, proc
