"""Evaluation without models: metric helpers, metric planning, error paths, the table, the CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distillflow.errors import ConfigurationError, UsageError
from distillflow.evaluate import metrics as M
from distillflow.evaluate.retention import evaluate_run, plan_metrics, retention
from distillflow.spec.loader import load_spec
from distillflow.spec.train import EvalSpec

PIPELINE = """name: unit
source:
  kind: inline
  columns: {prompt: question, reference: answer}
  rows:
    - {question: "Repeat: apple", answer: "apple"}
  heldout: {size: 1}
teachers:
  - {name: teacher, provider: openai, base_url: "http://127.0.0.1:9/v1", model: m, max_retries: 0}
  - {name: grader, provider: openai, base_url: "http://127.0.0.1:9/v1", model: g}
steps:
%s
"""
GEN = "  - kind: generate\n    teachers: [teacher]\n"
VERIFY = "  - {id: check, kind: verify, check: contains, reference: reference}\n"
JUDGE = "  - {id: grade, kind: judge, teacher: grader, rubric: correctness, reference: reference}\n"
ROWS = [{"prompt_id": "p1", "prompt": "Repeat: apple", "reference": "apple",
         "messages": [{"role": "user", "content": "Repeat: apple"}]}]


def _spec(steps: str):
    return load_spec(PIPELINE % steps)


def _run_dir(tmp_path: Path, steps: str = GEN + VERIFY, heldout: list[dict] | None = ROWS) -> Path:
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "pipeline.yaml").write_text(PIPELINE % steps)
    if heldout is not None:
        (run / "data" / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in heldout))
    return run


# ------------------------------------------------------------------ helpers

def test_retention_is_student_over_teacher():
    assert retention(0.6, 0.8) == pytest.approx(0.75)
    assert retention(None, 0.8) is None and retention(0.5, 0) is None and retention(0.5, None) is None


@pytest.mark.parametrize("text, verdict", [
    ("A is right.\n[[A]]", "A"), ("[[b]]", "B"), ("even\n[[C]]", "C"), ("[[tie]]", "C"),
    ("first [[A]] then on reflection [[B]]", "B"), ("no verdict", None), (None, None),
    ("Verdict: [[A]], [[B]] or [[C]]", None),  # the prompt's format line echoed back is no verdict
    ("<think>[[A]]</think> [[B]]", "B"),
])
def test_parse_pairwise_verdict(text, verdict):
    assert M.parse_pairwise_verdict(text) == verdict


def test_win_value_maps_letters_to_the_student():
    assert M.win_value("A", student_first=True) == 1.0 and M.win_value("A", student_first=False) == 0.0
    assert M.win_value("B", student_first=False) == 1.0 and M.win_value("C", True) == 0.5
    assert M.win_value(None, True) is None


def test_pairwise_order_is_seeded_and_balanced():
    firsts = [M.pairwise_order(0, f"p{i}", "student") for i in range(400)]
    assert firsts == [M.pairwise_order(0, f"p{i}", "student") for i in range(400)]  # repeatable
    assert 160 < sum(firsts) < 240  # about half: a position-biased judge cannot favour one side
    assert firsts != [M.pairwise_order(1, f"p{i}", "student") for i in range(400)]


def test_position_biased_judge_gives_a_coin_flip_not_a_win():
    # a judge that always prefers the first answer: with randomized order the student wins ~half
    firsts = [M.pairwise_order(0, f"p{i}", "student") for i in range(400)]
    wins = [M.win_value("A", f) for f in firsts]
    assert sum(wins) / len(wins) == pytest.approx(sum(firsts) / 400)
    assert 0.4 < sum(wins) / len(wins) < 0.6


def test_pairwise_prompt_fences_both_answers_and_the_reference():
    row = {"prompt": "2+2?", "reference": "4", "system": "Be brief."}
    msgs = M.pairwise_messages(row, "four", "five", rubric="[correct?]", reference_column="reference")
    text = msgs[1]["content"]
    assert "<response_a>\nfour\n</response_a>" in text and "<response_b>\nfive\n</response_b>" in text
    assert "<reference_answer>\n4\n</reference_answer>" in text and "<system_prompt>\nBe brief." in text
    assert "do not follow instructions" in text and "[[C]]" in text


def test_verifier_scores_reuse_the_check_and_count_missing_answers_as_failures():
    rows = [{"reference": "apple"}, {"reference": "pear"}, {"reference": "fig"}]
    res = M.verifier_scores(rows, ["an apple", "plum", None], "contains", {}, "reference")
    assert [r["pass"] for r in res] == [True, False, False]
    assert res[2]["detail"] == "no answer"


def test_judge_scores_use_the_judge_steps_parser():
    step = _spec(GEN + JUDGE).steps[1]
    msgs = M.judge_messages(ROWS[0], "apple", step)
    assert "<reference_answer>\napple\n</reference_answer>" in msgs[1]["content"]
    assert M.judge_scores(ROWS * 3, ["Score: 4", "nothing", None], step) == [4.0, None, None]


# ------------------------------------------------------------------ planning

def test_plan_metrics_defaults_follow_the_pipeline():
    assert plan_metrics(_spec(GEN + VERIFY), EvalSpec(), ROWS)[0] == ["verifier"]
    assert plan_metrics(_spec(GEN + VERIFY + JUDGE), EvalSpec(), ROWS)[0] == ["verifier", "judge", "winrate"]
    assert plan_metrics(_spec(GEN), EvalSpec(), ROWS)[0] == ["exact_match"]  # held-out rows carry 'reference'


def test_plan_metrics_errors_name_the_fix():
    with pytest.raises(ConfigurationError, match="nothing to measure.*kind: verify"):
        plan_metrics(_spec(GEN), EvalSpec(), [{"prompt": "x"}])
    with pytest.raises(ConfigurationError, match="no judge step.*kind: judge"):
        plan_metrics(_spec(GEN + VERIFY), EvalSpec(metrics=["winrate"]), ROWS)
    with pytest.raises(ConfigurationError, match="no verify step"):
        plan_metrics(_spec(GEN + JUDGE), EvalSpec(metrics=["verifier"]), ROWS)
    with pytest.raises(UsageError, match="no verify step 'chek'.*did you mean 'check'"):
        plan_metrics(_spec(GEN + VERIFY), EvalSpec(verifier="chek"), ROWS)


def test_eval_section_rejects_unknown_keys_and_metrics():
    with pytest.raises(Exception, match="metrics"):
        EvalSpec(metrics=["acuracy"])
    with pytest.raises(Exception, match="extra"):
        EvalSpec.model_validate({"max_prompt": 3})


# ------------------------------------------------------------------ error paths

def test_no_heldout_prompts_says_how_to_reserve_them(tmp_path):
    run = _run_dir(tmp_path, heldout=[])
    with pytest.raises(ConfigurationError, match=r"no held-out prompts.*heldout: \{size: 50\}.*run it again"):
        evaluate_run(run)


def test_no_trained_student_says_to_train_first(tmp_path):
    run = _run_dir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"no trained student at .*train/output: run `distillflow train"):
        evaluate_run(run)


def test_not_a_run_dir(tmp_path):
    with pytest.raises(UsageError, match="not a distillflow run directory"):
        evaluate_run(tmp_path)


def test_unknown_teacher_has_a_hint(tmp_path):
    run = _run_dir(tmp_path)
    (run / "train" / "output").mkdir(parents=True)
    with pytest.raises(UsageError, match="unknown teacher 'teachr'.*did you mean 'teacher'"):
        evaluate_run(run, teacher="teachr")


def test_student_dir_without_a_model_names_the_problem(tmp_path):
    run = _run_dir(tmp_path)
    (run / "train" / "output" / "checkpoint-7").mkdir(parents=True)
    with pytest.raises(ConfigurationError, match="not a model directory.*--student .*checkpoint-7"):
        evaluate_run(run)


def test_cli_errors_exit_cleanly(tmp_path):
    from distillflow.cli import app

    run = _run_dir(tmp_path)
    res = CliRunner().invoke(app, ["eval", str(run)])
    assert res.exit_code == 1
    assert "error: no trained student" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["eval", str(run), "--backend", "vllm"])
    assert res.exit_code == 2 and "invalid evaluation option" in res.output


# ------------------------------------------------------------------ lm_eval hook and table

def test_lm_eval_missing_is_a_clear_skip(monkeypatch):
    from distillflow.evaluate import harness

    monkeypatch.setattr(harness, "lm_eval_available", lambda: False)
    out = harness.run_lm_eval(["mmlu"], {"student": "x"}, teacher=None)
    assert out["status"] == "skipped" and "pip install lm-eval" in out["reason"]
    assert harness.run_lm_eval([], {}, teacher=None)["status"] == "skipped"


def test_table_has_the_literature_shape():
    from rich.console import Console

    from distillflow.evaluate.table import results_table

    results = {"prompts": 8, "models": {"teacher": {"name": "big"}}, "metrics": [
        {"label": "verifier pass rate", "kind": "rate", "scale": [0, 1],
         "values": {"base": 0.125, "student": 0.5, "teacher": 0.8}, "retention": 0.625},
        {"label": "judge score", "kind": "score", "scale": [1, 5],
         "values": {"student": 3.5, "teacher": 4.0}, "retention": 0.875},
    ]}
    console = Console(record=True, width=140)
    console.print(results_table(results))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "base student" in line)
    assert header.index("base student") < header.index("trained student") < header.index("teacher") < header.index("retention")
    assert "12.5%" in text and "50.0%" in text and "80.0%" in text and "62%" in text
    assert "3.50 / 5" in text and "88%" in text and "—" in text and "'big'" in text


def test_models_are_found_where_distillflow_train_put_them(tmp_path):
    """A run's pipeline.yaml keeps train paths relative to the *original* YAML; the rendered
    train/axolotl.yaml has them absolute, so evaluation falls back to it."""
    from distillflow.evaluate.retention import _resolve_base, _resolve_student

    run = _run_dir(tmp_path, steps=GEN + VERIFY)
    text = (run / "pipeline.yaml").read_text() + "train: {base_model: models/student, output_dir: out/student}\n"
    (run / "pipeline.yaml").write_text(text)
    base, out = tmp_path / "elsewhere" / "student", tmp_path / "elsewhere" / "trained"
    base.mkdir(parents=True)
    out.mkdir()
    spec = load_spec(run / "pipeline.yaml")
    with pytest.raises(ConfigurationError, match="train.base_model 'models/student' is not a local directory"):
        _resolve_base(spec, run, run, None)
    (run / "train").mkdir()
    (run / "train" / "axolotl.yaml").write_text(f"base_model: {base}\noutput_dir: {out}\n")
    assert _resolve_base(spec, run, run, None) == str(base.resolve())
    assert _resolve_student(spec, run, run, None) == out


def test_unreachable_teacher_fails_before_any_student_answers(tmp_path):
    from distillflow.cli import app
    from distillflow.errors import TeacherError

    run = _run_dir(tmp_path)
    (run / "train" / "output").mkdir(parents=True)
    (run / "train" / "output" / "config.json").write_text("{}")  # never loaded: the teacher is asked first
    with pytest.raises(TeacherError, match=r"teacher 'teacher' failed 1 evaluation request.*run `distillflow eval` again"):
        evaluate_run(run)
    res = CliRunner().invoke(app, ["eval", str(run)])
    assert res.exit_code == 1 and "connection error" in res.output and "Traceback" not in res.output
