"""The lm-evaluation-harness hook, run for real (lm_eval is installed here) on a local custom task."""

from __future__ import annotations

import json

import pytest

from tests.support import ROOT, need_module


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
  until: ["<|im_end|>", "<|end|>"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
"""


def test_lm_eval_scores_student_and_teacher_exactly(endpoint, tmp_path):
    """Known answers on both sides: the student's greedy answers (computed here with local transformers,
    same chat template) and the fake teacher's "Answer: <question>"; each row is right for one of them."""
    need_module("lm_eval", "pip install -e '.[dev]'")
    need_module("tenacity", "pip install -e '.[dev]' (lm-eval[api]: lm_eval's API models need it)")
    from distillflow.evaluate.answer import generate_local
    from distillflow.evaluate.harness import run_lm_eval
    from distillflow.spec.models import TeacherSpec
    
    # the shipped demo student subtracts (tests/examples/test_demo.py): its right answers are known
    student = ROOT / "examples" / "quickstart" / "models" / "student"
    from examples.quickstart import arithmetic as demo

    pairs = [(max(a, b), min(a, b)) for a, b in demo.sample_problems(12, seed=3, heldout=True)]
    asked = [f"What is {a}-{b}?" for a, b in pairs]
    said = generate_local(student, [[{"role": "user", "content": q}] for q in asked], max_new_tokens=4)
    right = [q for q, g, (a, b) in zip(asked, said, pairs) if g == str(a - b)]  # checked by arithmetic
    assert len(right) >= 3, list(zip(asked, said))
    questions = right[:3]
    truth = {q: str(a - b) for q, (a, b) in zip(asked, pairs)}
    answers = [truth[questions[0]], f"Answer: {questions[1]}", truth[questions[2]]]  # student, teacher, student
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    data = tasks / "data.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in zip(questions, answers)))
    (tasks / "df_echo.yaml").write_text(TASK.format(data=data))
    teacher = TeacherSpec(name="teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")

    out = run_lm_eval(["df_echo"], {"student": str(student)}, teacher, limit=3, include_path=tasks, log=lambda m: None)

    assert out["status"] == "ok", out
    errors = str(out["errors"])
    assert errors == "{}", errors
    scores = out["tasks"]["df_echo"]["exact_match,none"]
    got = {k: round(v, 6) for k, v in scores.items()}
    assert got == {"student": round(2 / 3, 6), "teacher": round(1 / 3, 6)}, scores
