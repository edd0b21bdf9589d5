"""`distillflow train`: dry run, terms refusal, exit codes, error messages (no training here)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from distillflow.cli import app

runner = CliRunner()
HUB = "Qwen/Qwen2.5-0.5B-Instruct"
FORBIDDEN = [{"name": "teacher", "provider": "openai", "model": "gpt-x",
              "terms": {"allows_training": False, "source": "https://example.com/no-training"}}]


def _invoke(*args):
    return runner.invoke(app, ["train", *map(str, args)])


def test_terms_forbid_training_refuses_with_exit_1(make_run):
    run = make_run({"base_model": HUB}, teachers=FORBIDDEN)
    r = _invoke(run)
    assert r.exit_code == 1, r.output
    assert "teacher(s) teacher (https://example.com/no-training) do not allow training" in r.output
    assert "--accept-terms" in r.output and "Traceback" not in r.output
    assert not (run / "train").exists()  # refused before anything was written
    r = _invoke(run, "--dry-run")
    assert r.exit_code == 1


def test_missing_run_dir_and_missing_train_section_exit_2(make_run, tmp_path):
    r = _invoke(tmp_path / "nope")
    assert r.exit_code == 2 and "run directory" in r.output and "distillflow run" in r.output
    run = make_run(None)
    r = _invoke(run)
    assert r.exit_code == 2 and "the pipeline has no train: section" in r.output


def test_dry_run_eight_gpus_two_nodes_zero3(make_run, monkeypatch):
    import distillflow.train.plan as plan

    monkeypatch.setattr(plan, "gpus_found", lambda: 2)  # injected: the same text on a GPU host and on CPU
    run = make_run({"base_model": HUB, "adapter": "lora", "gpus_per_node": 8, "nodes": 2,
                    "main_process_ip": "10.0.0.1", "deepspeed": "zero3", "micro_batch_size": 2,
                    "gradient_accumulation_steps": 4})
    r = _invoke(run, "--dry-run", "--machine-rank", "1")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "processes: 16 — global batch 128 examples/step" in out and "requested 8, found here 2" in out
    assert "--num_processes 16 --num_machines 2 --multi_gpu --machine_rank 1 --main_process_ip 10.0.0.1" in out
    assert "axolotl.cli.preprocess" in out and "dry run: nothing started" in out
    train = run / "train"
    cfg = yaml.safe_load((train / "axolotl.yaml").read_text())
    assert cfg["adapter"] == "lora" and cfg["deepspeed"] == str((train / "deepspeed_zero3.json").resolve())
    assert json.loads((train / "deepspeed_zero3.json").read_text())["zero_optimization"]["stage"] == 3
    assert len((train / "dataset.jsonl").read_text().splitlines()) == 20
    assert (train / "axolotl.yaml").read_text().startswith("# Rendered by distillflow from lora.yaml")
    assert not (train / "logs").exists() and not (train / "README.md").exists()  # nothing ran
    assert json.loads((train / "plan.json").read_text())["commands"][-1].endswith(str((train / "axolotl.yaml").resolve()))


def test_accept_terms_allows_and_discloses(make_run):
    run = make_run({"base_model": HUB, "gpus_per_node": 0}, teachers=FORBIDDEN)
    r = _invoke(run, "--dry-run", "--accept-terms")
    assert r.exit_code == 0, r.output
    assert "training despite the declared terms of teacher" in r.output


def test_invalid_override_exit_2_names_key(make_run):
    run = make_run({"base_model": HUB, "gpus_per_node": 0, "overrides": {"lerning_rate": 0.1}})
    (run / "train").mkdir()
    (run / "train" / "axolotl.yaml").write_text("# a valid config from an earlier prepare\n")
    r = _invoke(run, "--dry-run")
    assert r.exit_code == 2, r.output
    assert "train.overrides.lerning_rate" in r.output and "did you mean 'learning_rate'" in r.output
    assert not (run / "train" / "axolotl.yaml").exists()  # an invalid config is never written


def test_gpus_requested_but_absent_exit_1(make_run):
    run = make_run({"base_model": HUB, "gpus_per_node": 1})
    r = _invoke(run)
    assert r.exit_code == 1, r.output
    assert "train.gpus_per_node is 1 but 0 GPU(s) are visible here" in r.output and "--dry-run" in r.output


def test_config_option_and_bad_cli_override(make_run, tmp_path, pipeline_dict):
    run = make_run(None)
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(pipeline_dict({"base_model": HUB, "gpus_per_node": 0})))
    r = _invoke(run, "--config", other, "--dry-run")
    assert r.exit_code == 0, r.output
    r = _invoke(run, "--config", other, "--dry-run", "--machine-rank", "3")
    assert r.exit_code == 2 and "machine_rank 3 must be below nodes (1)" in r.output


def test_review_required_without_accepted_rows_exit_1(make_run):
    run = make_run({"base_model": HUB, "gpus_per_node": 0}, review={"mode": "required"})
    r = _invoke(run, "--dry-run")
    assert r.exit_code == 1 and "not yet accepted in review" in r.output and "review pull" in r.output


def test_model_card_discloses_terms_counts_and_loss(make_run):
    from distillflow.train.card import Outcome, render_model_card
    from distillflow.train.plan import prepare

    run = make_run({"base_model": HUB, "gpus_per_node": 0, "num_epochs": 1}, teachers=FORBIDDEN)
    plan = prepare(run, accept_terms=True)
    text = render_model_card(plan, Outcome(metrics=[{"loss": 3.0, "step": 1}, {"loss": 1.25, "step": 2}],
                                           summary={"train_loss": 2.1, "train_runtime": 5.0},
                                           hardware="CPU (2 cores)", seconds=60, accepted_terms=True))
    assert text.startswith("---\nbase_model: Qwen/Qwen2.5-0.5B-Instruct\n")
    assert "training on outputs **NOT allowed** ([terms](https://example.com/no-training))" in text
    assert "`--accept-terms`" in text
    assert "| teacher | openai | `gpt-x` |" in text and "| 20 |" in text
    assert "| keep | filter | `{\"where\": \"judge_score >= 4\"}` | 23 | 20 | 3 |" in text
    assert "| judge | judge |" in text and "Review mode: none" in text
    assert "first logged 3.0000, final 1.2500" in text and "| hardware | CPU (2 cores) |" in text
    assert "| sharding | none (single process) |" in text and "axolotl.cli.train" in text


FAKE_PY = """#!/bin/sh
# stands for another environment's python: validates (prints the check line), then fails to preprocess
case "$*" in
  *axolotl_check.py*) echo 'DISTILLFLOW_CHECK {"problems": [], "warnings": ["checked elsewhere"]}' ;;
  *) echo "starting $*"; echo "Traceback: CUDA out of memory"; exit 3 ;;
esac
"""


def test_other_env_python_validates_there_and_launch_failure_returns_its_code(make_run, tmp_path):
    py = tmp_path / "env" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(FAKE_PY)
    py.chmod(0o755)
    run = make_run({"base_model": HUB, "gpus_per_node": 0, "python": str(py)})
    r = _invoke(run)
    assert r.exit_code == 3, r.output
    assert "checked elsewhere" in r.output  # the validator ran with train.python
    assert f"{py} -m axolotl.cli.preprocess" in r.output
    assert "CUDA out of memory" in r.output and "preprocess failed (exit 3)" in r.output
    assert (run / "train" / "logs" / "preprocess.log").is_file()
    assert not (run / "train" / "logs" / "train.log").exists()  # stopped at the first failure
    assert not (run / "train" / "README.md").exists()  # no card for a model that was not trained


def test_other_env_python_that_cannot_validate_is_a_clear_error(make_run, tmp_path):
    py = tmp_path / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named axolotl' >&2\nexit 1\n")
    py.chmod(0o755)
    run = make_run({"base_model": HUB, "gpus_per_node": 0, "python": str(py)})
    r = _invoke(run, "--dry-run")
    assert r.exit_code == 1
    assert "could not validate the config (exit 1)" in r.output and "No module named axolotl" in r.output
    assert "axolotl[deepspeed]" in r.output


def test_relative_output_dir_stays_inside_the_run(make_run):
    run = make_run({"base_model": HUB, "gpus_per_node": 0, "output_dir": "student-v1"})
    r = _invoke(run, "--dry-run")
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load((run / "train" / "axolotl.yaml").read_text())
    assert cfg["output_dir"] == str((run / "student-v1").resolve())
    assert "is not a local directory: Axolotl will fetch it from the Hugging Face Hub" in r.output


def _two_node_config(tmp_path, pipeline_dict, **train):
    """A pipeline YAML whose train: section asks for two nodes of 8 GPUs; its `nodes:` line number."""
    path = tmp_path / "two_nodes.yaml"
    path.write_text(yaml.safe_dump(pipeline_dict({"base_model": HUB, "adapter": "lora", "gpus_per_node": 8,
                                                  "nodes": 2, **train}), sort_keys=False))
    return path, path.read_text().splitlines().index("  nodes: 2") + 1


def test_main_process_ip_flag_satisfies_multi_node_without_yaml_key(make_run, tmp_path, pipeline_dict, monkeypatch):
    import distillflow.train.plan as plan

    monkeypatch.setattr(plan, "gpus_found", lambda: 2)
    run = make_run({"base_model": HUB, "gpus_per_node": 0})
    config, _ = _two_node_config(tmp_path, pipeline_dict)  # no main_process_ip: node 0's address is given per node
    r = _invoke(run, "--config", config, "--dry-run", "--machine-rank", "1", "--main-process-ip", "10.0.0.1")
    assert r.exit_code == 0, r.output
    assert "--num_machines 2 --multi_gpu --machine_rank 1 --main_process_ip 10.0.0.1" in r.output
    # the Python API, the same way
    from distillflow.train.run import train

    result = train(run, config=config, dry_run=True, machine_rank=1, main_process_ip="10.0.0.2")
    assert result.plan.train.main_process_ip == "10.0.0.2" and "--main_process_ip 10.0.0.2" in result.plan.commands[-1].shell()


def test_multi_node_without_any_main_process_ip_is_refused_at_the_nodes_line(make_run, tmp_path, pipeline_dict):
    from distillflow.errors import SpecError
    from distillflow.train.plan import prepare

    run = make_run({"base_model": HUB, "gpus_per_node": 0})
    config, line = _two_node_config(tmp_path, pipeline_dict)
    r = _invoke(run, "--config", config, "--dry-run", "--machine-rank", "1")
    assert r.exit_code == 2, r.output
    assert f"train.nodes (line {line}): multi-node training" in r.output
    assert "main_process_ip" in r.output and "--main-process-ip" in r.output and "Traceback" not in r.output
    assert not (run / "train" / "axolotl.yaml").exists()  # refused before anything was rendered
    with pytest.raises(SpecError, match="--main-process-ip"):
        prepare(run, config=config, machine_rank=1)
