"""Seeded teacher sampling end to end, and a real `distillflow train` with `train.mode: kd` on CPU.

The teacher is the demo teacher through local transformers (distilabel's TransformersLLM, seeded by
distillflow per batch); the student the demo student (same tokenizer). Two fresh runs with the same
seed must curate identical data; KD through Axolotl's plugin must lower the loss and save a
checkpoint that loads.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner



def _pipeline(tmp_path, seed: int = 0, train_seed: int = 0) -> str:
    from examples.quickstart.arithmetic import demo_teacher_path

    teacher = demo_teacher_path()
    rows = "\n".join(f'    - {{question: "What is {a}+{b}?", answer: "{a + b}"}}'
                     for a, b in [(11 + 3 * i, 40 + 5 * i) for i in range(24)])
    return f"""name: kd-tiny
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:
{rows}
teachers:
  - name: teacher
    provider: transformers
    model: {teacher}
    params: {{temperature: 1.0, max_tokens: 6, seed: {seed}, top_logprobs: 5}}
    concurrency: 16
steps:
  - kind: generate
    num_generations: 2
  - kind: verify
    check: exact_match
    reference: reference
train:
  mode: kd
  kd: {{alpha: 0.9, ce_alpha: 0.1}}
  base_model: {teacher.parent / "student"}
  gpus_per_node: 0
  launcher: python
  cpu_threads: 1
  sequence_len: 64
  micro_batch_size: 16
  max_steps: 8
  learning_rate: 0.003
  seed: {train_seed}
  preprocess: false
  overrides: {{save_strategy: "no", logging_steps: 1, warmup_ratio: 0.0}}
"""


def _run(tmp_path, name: str) -> list[dict]:
    from distillflow.cli import app

    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(_pipeline(tmp_path))
    r = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / name), "--no-progress"])
    assert r.exit_code == 0, r.output[-3000:]
    return [json.loads(line) for line in (tmp_path / name / "data" / "curated.jsonl").read_text().splitlines()]


@pytest.mark.timeout(1200)
def test_seeded_runs_repeat_and_kd_trains_on_cpu(tmp_path):
    pytest.importorskip("axolotl")
    from distillflow.cli import app

    a, b = _run(tmp_path, "first"), _run(tmp_path, "second")
    assert len(a) == 48
    keep = ("id", "prompt", "response", "generation_index", "verify_pass", "teacher_top_logprobs")
    assert [{k: r[k] for k in keep} for r in a] == [{k: r[k] for k in keep} for r in b]
    assert a[0]["provenance"]["teacher"]["params"]["seed"] in (0, 1)  # seed + sample index, in the provenance
    assert {r["generation_index"]: r["provenance"]["teacher"]["params"]["seed"] for r in a} == {0: 0, 1: 1}

    run = tmp_path / "first"
    r = CliRunner().invoke(app, ["train", str(run), "--no-progress"])
    assert r.exit_code == 0, r.output[-4000:]
    train = run / "train"
    first = json.loads((train / "dataset.jsonl").read_text().splitlines()[0])
    assert len(first["logprobs"]) == len(first["target_token_ids"]) and len(first["logprobs"][0]) == 5
    losses = [m["loss"] for m in map(json.loads, (train / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert len(losses) == 8, losses
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(train / "output")
    assert model.config.num_hidden_layers == 2
    card = (train / "README.md").read_text()
    assert "| training mode | kd (Axolotl KD plugin: kd_alpha 0.9, kd_ce_alpha 0.1, kd_temperature 1, top-5) |" in card
    assert "| teacher sampling seeds | teacher: 0 (+ sample index) |" in card

    # the rerun trains to the same bytes (same data, same train.seed); another train.seed does not
    r = CliRunner().invoke(app, ["train", str(tmp_path / "second"), "--no-progress"])
    assert r.exit_code == 0, r.output[-4000:]
    weights = (train / "output" / "model.safetensors").read_bytes()
    assert (tmp_path / "second" / "train" / "output" / "model.safetensors").read_bytes() == weights
    (tmp_path / "seed1.yaml").write_text(_pipeline(tmp_path, train_seed=1))
    r = CliRunner().invoke(app, ["train", str(tmp_path / "second"), "--config", str(tmp_path / "seed1.yaml"),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output[-4000:]
    assert (tmp_path / "second" / "train" / "output" / "model.safetensors").read_bytes() != weights
