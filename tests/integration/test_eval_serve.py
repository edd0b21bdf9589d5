"""The `serve` backend: students answer through the real `transformers serve` (OpenAI-compatible)."""

from __future__ import annotations

import json

import pytest


PIPELINE = """name: served
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows: [{{question: q, answer: a}}]
  heldout: {{size: 1}}
teachers:
  - {{name: teacher, provider: openai, base_url: "{url}", model: fake-teacher, params: {{max_tokens: 8}}}}
steps:
  - kind: generate
eval: {{max_tokens: 6, metrics: [exact_match]}}
"""


def test_serve_backend_matches_local_generation(endpoint, tmp_path):
    from distillflow.evaluate import evaluate_run
    from tests.support.tiny import build_tiny_chat_model

    student = build_tiny_chat_model(tmp_path / "student", seed=3)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "pipeline.yaml").write_text(PIPELINE.format(url=endpoint.base_url))
    prompts = ["Repeat: apple", "What is 2+2?", "Say hi"]
    refs = ["Answer: Repeat: apple", "4", "Answer: Say hi"]  # the fake teacher matches 2 of 3 exactly
    rows = [{"prompt_id": f"p{i}", "prompt": p, "reference": r, "messages": [{"role": "user", "content": p}]}
            for i, (p, r) in enumerate(zip(prompts, refs))]
    (run / "data" / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    served = evaluate_run(run, student=student, backend="serve")
    served_answers = [json.loads(x)["answers"]["student"] for x in (run / "eval" / "answers.jsonl").read_text().splitlines()]
    local = evaluate_run(run, student=student, backend="local")
    local_answers = [json.loads(x)["answers"]["student"] for x in (run / "eval" / "answers.jsonl").read_text().splitlines()]

    assert served["settings"]["backend"] == "serve" and "base" not in served["models"]
    assert served["notes"][0] == "no base student: set train.base_model in the pipeline or pass --base DIR"
    # the run had no decontaminate step: eval says its held-out scores are not guarded against overlap
    assert served["notes"][1:] == [n for n in served["notes"] if "not decontaminated against 'heldout'" in n]
    assert len(served["notes"]) == 2
    (m,) = served["metrics"]
    assert m["id"] == "exact_match" and m["values"]["teacher"] == pytest.approx(2 / 3)
    assert len(served_answers) == 3 and all(isinstance(a, str) for a in served_answers)
    assert served_answers == local_answers  # both greedy over the same chat template
    assert local["metrics"][0]["values"] == m["values"]


def test_serve_backend_samples_with_a_seed(endpoint, tmp_path):
    """`transformers serve` takes temperature and seed per request: sampled answers sit beside greedy ones."""
    from distillflow.evaluate import evaluate_run
    from tests.support.tiny import build_tiny_chat_model

    student = build_tiny_chat_model(tmp_path / "student", seed=3)
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "pipeline.yaml").write_text(PIPELINE.format(url=endpoint.base_url))
    rows = [{"prompt_id": f"p{i}", "prompt": p, "reference": "4", "messages": [{"role": "user", "content": p}]}
            for i, p in enumerate(["What is 2+2?", "Say hi"])]
    (run / "data" / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def sampled(seed: int) -> tuple[dict, list[dict]]:
        text = PIPELINE.format(url=endpoint.base_url).replace("metrics: [exact_match]}", f"metrics: [exact_match], seed: {seed}}}")
        (run / "pipeline.yaml").write_text(text)
        res = evaluate_run(run, student=student, backend="serve", sample_temperature=1.0)
        return res, [json.loads(x) for x in (run / "eval" / "answers.jsonl").read_text().splitlines()]

    res, saved = sampled(0)
    assert [m["id"] for m in res["metrics"]] == ["exact_match", "exact_match@T1"]
    assert res["metrics"][1]["n"] == {"student": 2, "teacher": 2}
    assert res["settings"]["seed"] == 0
    samples = [r["sampled_answers"]["student"] for r in saved]
    greedy = [r["answers"]["student"] for r in saved]
    assert all(isinstance(a, str) and a for a in samples)
    # a random tiny model at temperature 1 does not sample its greedy answer
    assert samples != greedy
    # same seed, same samples (a fresh server); another seed, other samples
    _, again = sampled(0)
    assert [r["sampled_answers"]["student"] for r in again] == samples
    assert [r["answers"]["student"] for r in again] == greedy
    _, other = sampled(7)
    assert [r["sampled_answers"]["student"] for r in other] != samples
    assert [r["answers"]["student"] for r in other] == greedy  # greedy answers ignore the seed
