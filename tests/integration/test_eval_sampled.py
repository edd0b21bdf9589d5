"""Sampled evaluation (`eval.sample_temperature`) with the real demo models: the shipped arithmetic
teacher (a local transformers teacher) and an untrained (random) demo student, no endpoint, no mocks."""

from __future__ import annotations

import json
import shutil

import pytest

from examples.quickstart import arithmetic as demo



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import distillflow as df

    root = tmp_path_factory.mktemp("sampled")
    problems = demo.sample_problems(60, seed=7, heldout=True)
    rows = "".join(f'\n    - {{question: "{demo.format_question(a, b)}", answer: "{a + b}"}}' for a, b in problems)
    (root / "pipeline.yaml").write_text(f"""name: sampled
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{rows}
  heldout: {{size: 40, seed: 0}}
teachers:
  - name: teacher
    provider: transformers
    model: {demo.demo_teacher_path()}
    params: {{temperature: 1.0, max_tokens: 6}}
steps:
  - kind: generate
  - kind: verify
    check: exact_match
    reference: reference
train:
  base_model: {demo.build_demo_student(root / "student")}
  gpus_per_node: 0
eval:
  metrics: [verifier]
  sample_temperature: 1.5
  batch_size: 40
""")
    df.run(df.load(root / "pipeline.yaml"), out=root / "run", progress=False)
    return root / "run"


def test_sampled_rates_sit_beside_greedy_ones_and_repeat(run):
    from distillflow.evaluate import evaluate_run

    # the "trained student" is the teacher model itself: right greedily, often wrong when sampled hot
    res = evaluate_run(run, student=demo.demo_teacher_path())
    assert [m["id"] for m in res["metrics"]] == ["verifier", "verifier@T1.5"]
    greedy, sampled = res["metrics"]
    assert res["settings"]["sample_temperature"] == 1.5
    assert "sampled at T=1.5" in sampled["label"] and sampled["n"]["student"] == 40
    assert greedy["values"]["student"] >= 0.9 and greedy["values"]["teacher"] >= 0.9
    assert greedy["values"]["base"] <= 0.1  # random init
    assert sampled["values"]["student"] < greedy["values"]["student"]
    assert sampled["values"]["teacher"] < greedy["values"]["teacher"]
    assert sampled["retention"] == pytest.approx(sampled["values"]["student"] / sampled["values"]["teacher"])

    rows = [json.loads(line) for line in (run / "eval" / "answers.jsonl").read_text().splitlines()]
    assert all(set(r["sampled_answers"]) == {"base", "student", "teacher"} for r in rows)
    student_ok = [demo.check_answer(r["prompt"], r["sampled_answers"]["student"]) for r in rows]
    assert sum(student_ok) / len(rows) == pytest.approx(sampled["values"]["student"])
    assert [r["scores"]["verifier@T1.5"]["student"] for r in rows] == student_ok

    again = evaluate_run(run, student=demo.demo_teacher_path())  # seeded students, cached teacher
    assert again["metrics"][1]["values"] == sampled["values"]
    # the teacher's samples are seeded too: without its cache an evaluation draws the same answers
    teacher_sampled = [r["sampled_answers"]["teacher"] for r in rows]
    shutil.rmtree(run / "eval" / "cache")
    fresh = evaluate_run(run, student=demo.demo_teacher_path())
    assert fresh["metrics"][1]["values"] == sampled["values"]
    assert [json.loads(line)["sampled_answers"]["teacher"]
            for line in (run / "eval" / "answers.jsonl").read_text().splitlines()] == teacher_sampled
    assert len(set(teacher_sampled)) > 10  # (sampled hot: the answers are not all alike)


def test_sample_temperature_from_the_cli_and_its_bounds(run):
    from typer.testing import CliRunner

    from distillflow.cli import app

    result = CliRunner().invoke(app, ["eval", str(run), "--student", str(demo.demo_teacher_path()),
                                      "--sample-temperature", "0.7", "--max-prompts", "10"])
    assert result.exit_code == 0, result.output
    assert "sampled at T=0.7" in result.output
    bad = CliRunner().invoke(app, ["eval", str(run), "--sample-temperature", "5"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
