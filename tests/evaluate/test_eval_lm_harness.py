"""The lm-evaluation-harness hook, run for real (lm_eval is installed here) on a local custom task."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.support import need_module

pytestmark = pytest.mark.integration

TASK = """task: df_echo
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["<|im_end|>"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""


def test_lm_eval_runs_a_local_task_on_the_student(endpoint, tmp_path):
    need_module("lm_eval", "pip install -e '.[dev]'")
    from distillflow.evaluate.harness import run_lm_eval
    from distillflow.spec.models import TeacherSpec
    from distillflow.testing.tiny import build_tiny_chat_model

    student = build_tiny_chat_model(tmp_path / "student", seed=2)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "data.jsonl"
    rows = [{"question": "Repeat: apple", "answer": "Answer: Repeat: apple"},
            {"question": "Repeat: pear", "answer": "Answer: Repeat: pear"},
            {"question": "What is 2+2?", "answer": "4"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tasks / "df_echo.yaml").write_text(TASK.format(data=data))
    teacher = TeacherSpec(name="teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")

    out = run_lm_eval(["df_echo"], {"student": str(student)}, teacher, limit=3, include_path=tasks, log=lambda m: None)

    assert out["status"] == "ok"
    value = out["tasks"]["df_echo"]["exact_match,none"]["student"]
    assert 0.0 <= value <= 1.0
    if importlib.util.find_spec("tenacity") is not None:  # lm_eval's API models need lm-eval[api]
        assert out["tasks"]["df_echo"]["exact_match,none"]["teacher"] == pytest.approx(2 / 3)
    else:
        assert "lm-eval[api]" in out["errors"]["teacher"]
