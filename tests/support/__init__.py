"""Helpers shared by test modules (import as `from tests.support import ...`).

pytest is imported inside the helpers that need it: scripts/gpu_check.sh imports
``tests.support.tiny`` on machines without pytest.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def pipeline_yaml(base_url: str, steps: str, rows: str | None = None, extra: str = "", teacher_extra: str = "") -> str:
    """A small YAML pipeline over inline arithmetic-ish prompts and the given endpoint."""
    rows = rows or """
    - {question: "What is 2+2?", answer: "4"}
    - {question: "Say hi", answer: "hi"}
    - {question: "What is 3+3?", answer: "6"}
    - {question: "Name a colour", answer: "red"}"""
    return f"""name: t
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{rows}
teachers:
  - name: teacher
    provider: openai
    base_url: {base_url}
    model: fake-teacher
    params: {{temperature: 0.5, max_tokens: 32}}
    price: {{input_per_1m: 1.0, output_per_1m: 2.0}}
{teacher_extra}
steps:
{steps}
{extra}
"""


def one_teacher_yaml(teacher_lines: str) -> str:
    """A one-prompt pipeline whose one teacher, ``t``, has the given YAML lines (indented 4)."""
    return f"""name: t
source:
  kind: inline
  rows: [{{prompt: "hi"}}]
teachers:
  - name: t
{teacher_lines}
steps:
  - kind: generate
"""


def local_model_yaml(model: Path, n: int, teacher_extra: str, execution: str, max_tokens: int = 6,
                     concurrency: int = 4, name: str = "copies") -> str:
    """A pipeline of ``n`` arithmetic questions answered greedily by a local transformers teacher
    (``model``: a tiny model's folder, tests/support/tiny.py) on CPU; ``teacher_extra``: more lines of
    the teacher (``    copies: 2``), ``execution``: the flow mapping's contents."""
    import json

    rows = "".join(f'\n    - {{question: "question {i}: what is {i}+{i}?"}}' for i in range(n))
    return f"""name: {name}
source:
  kind: inline
  columns: {{prompt: question}}
  rows:{rows}
teachers:
  - name: local
    provider: transformers
    model: {json.dumps(str(model))}
    device: cpu
    params: {{temperature: 0.0, max_tokens: {max_tokens}}}
    concurrency: {concurrency}
{teacher_extra}
steps:
  - kind: generate
execution: {{{execution}}}
"""


def cached_answers(db: Path) -> int:
    """How many answers a run's request cache holds (0 while it is absent or busy: poll again)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)
        try:
            return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@contextmanager
def small_disk(where: Path, size: str):
    """A real tmpfs of ``size`` (e.g. "2m") mounted at ``where``, unmounted on exit. It needs root
    with CAP_SYS_ADMIN (as on the project's machines); elsewhere the test is skipped."""
    import pytest

    where.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (the full-disk tests use a real filesystem)")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def in_ci() -> bool:
    """CI sets CI=true; there a missing test dependency is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require(present: bool, what: str, fix: str) -> None:
    """Skip the test naming the fix when `what` is absent — or fail under CI=true (issue 15)."""
    if present:
        return
    import pytest

    message = f"{what} is not installed: {fix}"
    if in_ci():
        pytest.fail(f"{message} (CI=true: a missing test dependency fails the run)", pytrace=False)
    pytest.skip(message)


def need_module(name: str, fix: str):
    """Import and return module `name`, or skip/fail through `require`."""
    require(importlib.util.find_spec(name.split(".")[0]) is not None, f"Python package '{name}'", fix)
    return importlib.import_module(name)


def need_binary(name: str, fix: str) -> str:
    """The path of executable `name` on the PATH, or skip/fail through `require`."""
    path = shutil.which(name)
    require(path is not None, f"'{name}'", fix)
    return path


def need_ray_namespace() -> None:
    """Skip a Ray test naming why Ray cannot run here (no Ray, no root for ``unshare -n``), or fail
    under CI=true (every Ray test runs in a private network namespace: benchmarks/ray_cluster.py)."""
    import pytest

    from benchmarks.ray_cluster import namespace_problem

    problem = namespace_problem()
    if problem is None:
        return
    if in_ci():
        pytest.fail(f"Ray cannot run here: {problem}", pytrace=False)
    pytest.skip(f"Ray cannot run here: {problem}")
