"""No tracked file holds an absolute path of the machine it was made on (issue 13)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.support import ROOT

_ABS = re.compile(r"""["' ](/work|/root|/home)/""")


def test_tracked_files_hold_no_absolute_machine_paths():
    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    offenders = []
    for name in files:
        if name.endswith((".ipynb", ".log", ".png", ".safetensors", ".bin", ".parquet")):
            continue
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if _ABS.search(line):
                offenders.append(f"{name}:{i}: {line.strip()[:100]}")
    assert not offenders, "absolute machine paths in tracked files:\n" + "\n".join(offenders)
