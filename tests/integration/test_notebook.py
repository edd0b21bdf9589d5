"""Execute notebooks/quickstart.ipynb with nbclient and check what its cells printed.

The notebook runs the offline demo through the Python front door (pipeline objects and ``>>``),
trains the student with Axolotl on CPU, evaluates retention and renders the report. The kernel is
``python3``, which ipykernel provides for the interpreter running the tests (the project's
``.venv``): no ``ipykernel install`` is needed on a fresh clone.
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.support import need_module


ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o and "text/plain" in o["data"]:
            out.append(o["data"]["text/plain"])
    return "".join(out)


def test_quickstart_notebook_executes_and_reports(tmp_path):
    need_module("axolotl", "pip install -e '.[train,dev]'")
    nbformat = need_module("nbformat", "pip install -e '.[dev]'")
    nbclient = need_module("nbclient", "pip install -e '.[dev]'")
    need_module("ipykernel", "pip install -e '.[dev]'")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel inherits this environment: the run goes to a temporary directory
    env_keys = {"DISTILLFLOW_NOTEBOOK_RUN": str(tmp_path / "run"), "HF_HUB_OFFLINE": "1",
                "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)
    # the kernel must be this interpreter (the venv), whatever jupyter kernelspecs exist elsewhere
    old_path = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old_path
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(ROOT / "notebooks")}})
        client.execute()
    finally:
        os.environ["PATH"] = old_path
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    # the pipeline came from Python objects and ran: the verifier rejected some teacher answers
    assert "kind: verify" in text and "kind: generate" in text
    curated = int(re.search(r"CURATED: (\d+)", text).group(1))
    assert curated > 500
    assert re.search(r"rejected: \d+ \{.*'filter': \d+", text)
    # training ran and the loss fell by more than half: the first loss is the subtraction-pretrained
    # student being confidently wrong about additions (~6); even a run still on its plateau is far below
    # half of it, and a trainer that does not update (or trains on masked labels only) stays there
    m = re.search(r"exit code 0; loss ([\d.]+) -> ([\d.]+)", text)
    assert m, text[-3000:]
    first_loss, last_loss = float(m.group(1)), float(m.group(2))
    assert last_loss <= 0.5 * first_loss, (first_loss, last_loss)
    # retention numbers: the teacher is good, training helped the student
    m = re.search(r"TEACHER: ([\d.]+)\s+BASE STUDENT: ([\d.]+)\s+TRAINED STUDENT: ([\d.]+)\s+RETENTION: ([\d.]+)", text)
    assert m, text[-3000:]
    teacher, base, student, retention = map(float, m.groups())
    assert teacher >= 0.9
    # the base knows subtraction, not addition. How far 400 CPU steps take the student varies: it
    # learns addition in a sudden drop of the loss whose step moves from run to run (docs/demo_variance.md:
    # 48-100% in most runs, but 6-16% in about one of six, stalled on the plateau before it; two CI
    # runs stalled at 6%). So the test asks what even a stalled run shows and a trainer that did not
    # learn cannot: most of the trained student's answers are within 10 of the true sum (94-100% in every
    # run checked, stalled ones included; the base: 2%); exact match only must not fall below the base's.
    assert base <= 0.05
    assert student >= base, (base, student)
    answers = [json.loads(line) for line in (tmp_path / "run" / "eval" / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 100

    def near(who: str) -> float:
        return sum(a["answers"][who].strip().isdigit() and abs(int(a["answers"][who]) - int(a["reference"])) <= 10
                   for a in answers) / len(answers)

    assert near("student") >= 0.6 and near("base") <= 0.2, (near("base"), near("student"), student)
    assert retention == pytest.approx(student / teacher, abs=1e-3)
    m = re.search(r"SAMPLED: TEACHER ([\d.]+)\s+BASE ([\d.]+)\s+TRAINED ([\d.]+)", text)
    assert m, text[-3000:]
    s_teacher, s_base, s_student = map(float, m.groups())
    assert s_teacher < teacher  # sampling at T=1 costs the teacher some answers
    assert s_student >= s_base
    # the report exists and its figures are shown inline as PNGs
    report = Path(re.search(r"REPORT: (\S+)", text).group(1))
    assert report.is_file() and "<html" in report.read_text()[:500].lower()
    pngs = [o["data"]["image/png"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "data" in o and "image/png" in o["data"]]
    assert len(pngs) == 2
    assert all(base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
