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
    missing = demo.compare_with_study({"quickstart": {"student": 0.5}}, tmp_path / "none.json")
    assert missing[0].startswith("study              none recorded")
