"""Retention evaluation end to end: a real run dir, tiny local students, the fake teacher, a grader."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.support import need_module
from typer.testing import CliRunner

from tests.evaluate.grader import Grader
from tests.evaluate.rundir_fixture import build_run



@pytest.fixture(scope="module")
def grader():
    with Grader() as g:
        yield g


@pytest.fixture(scope="module")
def run(endpoint, grader, tmp_path_factory):
    from tests.support.tiny import build_tiny_chat_model

    root = tmp_path_factory.mktemp("eval")
    base = build_tiny_chat_model(root / "base", seed=0)
    build_tiny_chat_model(root / "run" / "train" / "output", seed=1)  # stands in for the trained student
    return build_run(root, endpoint.base_url, grader.base_url, str(base))


def _rows(run):
    return [json.loads(line) for line in (run / "eval" / "answers.jsonl").read_text().splitlines()]


def test_three_models_three_metrics_and_retention(run):
    from distillflow.evaluate import evaluate_run

    res = evaluate_run(run)
    assert json.loads((run / "eval" / "results.json").read_text())["metrics"] == res["metrics"]
    assert res["prompts"] == res["heldout"] == 6
    assert set(res["models"]) == {"base", "student", "teacher"}
    assert res["models"]["student"]["path"] == str((run / "train" / "output").resolve())
    assert [m["id"] for m in res["metrics"]] == ["verifier", "judge", "winrate"]
    verifier, judge, winrate = res["metrics"]

    heldout = [json.loads(line) for line in (run / "data" / "heldout.jsonl").read_text().splitlines()]
    # the fake teacher answers "Answer: <prompt>": it passes `contains` exactly when the prompt holds the answer
    teacher_pass = [r["reference"].casefold() in f"Answer: {r['prompt']}".casefold() for r in heldout]
    t_rate = sum(teacher_pass) / 6
    assert 0 < t_rate < 1
    assert verifier["values"]["teacher"] == pytest.approx(t_rate)
    assert judge["values"]["teacher"] == pytest.approx(1 + 4 * t_rate)  # the grader gives 5 or 1
    assert winrate["values"]["teacher"] == 0.5

    rows = _rows(run)
    assert [r["prompt_id"] for r in rows] == [r["prompt_id"] for r in heldout]
    for key in ("base", "student"):
        passes = [r["reference"].casefold() in (r["answers"][key] or "").casefold() for r in rows]
        assert [r["scores"]["verifier"][key] for r in rows] == passes
        assert verifier["values"][key] == pytest.approx(sum(passes) / 6)
        assert judge["values"][key] == pytest.approx(1 + 4 * sum(passes) / 6)
        wins = [0.5 if s == t else float(s) for s, t in zip(passes, teacher_pass)]
        assert winrate["values"][key] == pytest.approx(sum(wins) / 6)
        for m in res["metrics"]:
            want = m["values"][key] / m["values"]["teacher"]
            assert (m["retention"] if key == "student" else m["base_retention"]) == pytest.approx(want)
    firsts = {r["scores"]["winrate"]["student"]["student_first"] for r in rows}
    assert firsts == {True, False}  # answer order is randomized per prompt
    assert res["usage"]["teacher"]["requests"] == 6 and res["usage"]["grader (eval judge)"]["requests"] == 18


def test_evaluating_again_pays_nothing(run, endpoint, grader):
    from distillflow.evaluate import evaluate_run

    evaluate_run(run)
    before_t, before_g = endpoint.stats["requests"], grader.requests
    res = evaluate_run(run)
    assert endpoint.stats["requests"] == before_t and grader.requests == before_g
    assert res["usage"]["teacher"]["cached"] == 6 and res["cost_usd"] > 0


def test_cli_prints_the_retention_table(run, monkeypatch):
    from distillflow.cli import app
    from distillflow.evaluate import harness

    def fake_lm_eval(tasks, students, teacher, **kw):  # lm_eval's own run is tested in test_eval_lm_harness.py
        return {"status": "ok", "errors": {}, "tasks": {"toy": {"acc,none": {"base": 0.25, "student": 0.5, "teacher": 1.0}}}}

    monkeypatch.setattr(harness, "run_lm_eval", fake_lm_eval)
    cfg = run / "with_lm_eval.yaml"
    cfg.write_text((run / "pipeline.yaml").read_text() + "\n")
    text = cfg.read_text().replace("eval:\n  max_tokens: 8", "eval:\n  max_tokens: 8\n  lm_eval_tasks: [toy]")
    assert text != cfg.read_text()
    cfg.write_text(text)
    res = CliRunner().invoke(app, ["eval", str(run), "--config", str(cfg), "--max-prompts", "3", "-m", "verifier"],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    for want in ("base student", "trained student", "teacher", "retention", "verifier pass rate",
                 "toy acc,none (lm-eval)", "0.500", "50%", "Retention on 3 held-out prompts", "results.json"):
        assert want in res.output, want
    saved = json.loads((run / "eval" / "results.json").read_text())
    assert saved["prompts"] == 3 and [m["id"] for m in saved["metrics"]] == ["verifier", "lm_eval/toy/acc,none"]
    assert saved["metrics"][1]["retention"] == 0.5


def test_lora_adapter_student_is_merged(run, tmp_path):
    peft = need_module("peft", "pip install -e '.[dev]'")
    import torch
    from transformers import AutoModelForCausalLM

    from distillflow.evaluate import evaluate_run

    base_dir = run.parent / "base"
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    base_sd = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(0)
    # init_lora_weights=False: B is random, not zero, so a merge that drops the adapter is caught
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                      init_lora_weights=False))
    adapter = tmp_path / "adapter"
    lora.save_pretrained(adapter)
    shutil.copy(base_dir / "tokenizer.json", adapter / "tokenizer.json")
    shutil.copy(base_dir / "tokenizer_config.json", adapter / "tokenizer_config.json")
    expected = lora.merge_and_unload().state_dict()  # peft's own merge, computed here independently

    res = evaluate_run(run, student=adapter, metrics=["verifier"])
    merged = run / "eval" / "merged-student"
    assert (merged / "config.json").is_file() and res["models"]["student"]["path"] == str(merged.resolve())
    got = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    adapted = [k for k in expected if k.endswith(("q_proj.weight", "v_proj.weight"))]
    assert len(adapted) == 2 * 2  # two layers, two projections each
    for k in adapted:
        assert torch.allclose(got[k], expected[k], atol=1e-5), k
        assert not torch.allclose(got[k], base_sd[k], atol=1e-3), k  # the adapter really changed the weights
    for k in expected:
        if k not in adapted and k in got:
            assert torch.equal(got[k], base_sd[k]), k
    rows = _rows(run)
    assert any(r["answers"]["student"] != r["answers"]["base"] for r in rows)  # a different model answers
