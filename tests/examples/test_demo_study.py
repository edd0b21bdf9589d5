"""`make demo` prints where its numbers fall against the study's intervals (examples/quickstart/demo.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _demo():
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "examples" / "quickstart" / "demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_compares_its_run_with_the_study_intervals(tmp_path):
    demo = _demo()
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"seeds": 3, "steps": 200, "limit": None, "runs": {
        "verified_sft": [{"mixed": x} for x in (0.4, 0.5, 0.6)],
        "unfiltered_sft": [{"mixed": x} for x in (0.2, 0.2, 0.2)]}}))
    lines = demo.compare_with_study({"quickstart": {"student": 0.55, "steps": 200},
                                     "ablation": {"student": 0.31, "steps": 200}}, study)
    assert lines[0] == ("study              3 seeds x 200 steps per arm (benchmarks/study.py); "
                        "greedy exact match on the held-out prompts:")
    # mean 0.5, sd 0.1, t(2) = 4.303: [25.2%, 74.8%]
    assert lines[1] == ("  verified_sft     this run 55.0%; study mean 50.0%, 95% interval of the mean "
                        "[25.2%, 74.8%] (inside), single runs ranged 40.0%-60.0%")
    assert "unfiltered_sft   this run 31.0%" in lines[2] and "(outside)" in lines[2]
    assert len(lines) == 3  # same setting: no caveat
    other = demo.compare_with_study({"quickstart": {"student": 0.55, "steps": 200, "lr_scheduler": "constant_with_warmup"}},
                                    study)
    assert other[-1].startswith("  (the study's setting differs")  # the study ran the templates' cosine schedule
    missing = demo.compare_with_study({"quickstart": {"student": 0.5}}, tmp_path / "none.json")
    assert missing[0].startswith("study              none recorded")


def test_demo_trains_its_arms_side_by_side_and_reports_a_failed_stage(tmp_path, monkeypatch):
    """`parallel` runs the stages at once (each waits for a file the other writes: run one after the other,
    the first would never see it) and raises the failing stage's error after every stage has ended."""
    import sys

    import pytest

    demo = _demo()
    monkeypatch.setattr(demo, "_cli", lambda: [sys.executable, "-c"])
    wait = ("import pathlib, sys, time\n"
            "mine, other = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])\n"
            "mine.touch()\n"
            "deadline = time.monotonic() + 120\n"
            "while not other.exists():\n"
            "    assert time.monotonic() < deadline, 'the other stage never started'\n"
            "    time.sleep(0.05)\n")
    a, b = tmp_path / "a.started", tmp_path / "b.started"
    ta, tb = {}, {}
    demo.parallel([("train", [wait, str(a), str(b)], tmp_path / "a", ta),
                   ("train", [wait, str(b), str(a)], tmp_path / "b", tb)], verbose=False)
    assert set(ta) == set(tb) == {"train"}
    assert (tmp_path / "a" / "train.log").is_file() and (tmp_path / "b" / "train.log").is_file()

    tc, td = {}, {}
    with pytest.raises(SystemExit, match=r"stage 'train' failed \(exit 3\)"):
        demo.parallel([("train", ["import sys; sys.exit(3)"], tmp_path / "c", tc),
                       ("train", ["print('fine')"], tmp_path / "d", td)], verbose=False)
    assert "train" in td  # the other stage still ran to its end
