"""Launch command lines (1 GPU, 8 GPUs x 1 node, 8 x 2 nodes, CPU) and streamed log parsing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from distillflow.spec.train import TrainSpec
from distillflow.train.launch import BASE_ENV, Command, LogParser, build_commands, rdzv_id, run_command

CFG = Path("/runs/qa/train/axolotl.yaml")
PY = "/envs/ax/bin/python"  # no accelerate/torchrun next to it: commands use `python -m`


def _train(**kw) -> list[str]:
    cmds = build_commands(TrainSpec(base_model="m", **kw), CFG, python=PY, run_id="/runs/qa")
    assert cmds[-1].name == "train"
    return cmds[-1].argv


def test_preprocess_then_train_with_telemetry_off():
    cmds = build_commands(TrainSpec(base_model="m"), CFG, python=PY, run_id="r")
    assert [c.name for c in cmds] == ["preprocess", "train"]
    assert cmds[0].argv == [PY, "-m", "axolotl.cli.preprocess", str(CFG)]
    for c in cmds:
        assert c.env["AXOLOTL_DO_NOT_TRACK"] == "1" and c.env["DO_NOT_TRACK"] == "1"
        assert c.shell().startswith("AXOLOTL_DO_NOT_TRACK=1 DO_NOT_TRACK=1")
    assert [c.name for c in build_commands(TrainSpec(base_model="m", preprocess=False), CFG, python=PY, run_id="r")] == ["train"]


def test_one_gpu_accelerate():
    assert _train() == [PY, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                        "--mixed_precision", "bf16", "--dynamo_backend", "no", "-m", "axolotl.cli.train", str(CFG)]


def test_eight_gpus_one_node_accelerate():
    argv = _train(gpus_per_node=8, deepspeed="zero2")
    assert argv == [PY, "-m", "accelerate.commands.launch", "--num_processes", "8", "--num_machines", "1",
                    "--multi_gpu", "--mixed_precision", "bf16", "--dynamo_backend", "no",
                    "-m", "axolotl.cli.train", str(CFG)]


def test_eight_gpus_two_nodes_accelerate():
    argv = _train(gpus_per_node=8, nodes=2, machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29600,
                  deepspeed="zero3", precision="fp16")
    assert argv == [PY, "-m", "accelerate.commands.launch", "--num_processes", "16", "--num_machines", "2",
                    "--multi_gpu", "--machine_rank", "1", "--main_process_ip", "10.0.0.1", "--main_process_port", "29600",
                    "--mixed_precision", "fp16", "--dynamo_backend", "no", "-m", "axolotl.cli.train", str(CFG)]


def test_two_nodes_without_node_0_address_load_but_give_no_commands():
    from distillflow.errors import UsageError

    # valid as YAML (`distillflow train --main-process-ip` may give the address) but not launchable without it
    train = TrainSpec(base_model="m", gpus_per_node=8, nodes=2)
    assert "--main-process-ip" in train.rendezvous_problem()
    with pytest.raises(UsageError, match="set main_process_ip in the train: section, or pass --main-process-ip"):
        build_commands(train, CFG, python=PY, run_id="r")
    assert TrainSpec(base_model="m", gpus_per_node=8, nodes=2, main_process_ip="10.0.0.1").rendezvous_problem() is None


def test_torchrun_one_and_two_nodes():
    assert _train(launcher="torchrun", gpus_per_node=8) == [
        PY, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "8", "--standalone",
        "-m", "axolotl.cli.train", str(CFG)]
    argv = _train(launcher="torchrun", gpus_per_node=8, nodes=2, machine_rank=1, main_process_ip="10.0.0.1")
    assert argv == [PY, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "8",
                    "--rdzv_backend", "c10d", "--rdzv_endpoint", "10.0.0.1:29500", "--rdzv_id", rdzv_id("/runs/qa"),
                    "-m", "axolotl.cli.train", str(CFG)]
    # every node derives the same id from the run: a random one per node would never rendezvous
    assert rdzv_id("/runs/qa") == rdzv_id("/runs/qa") != rdzv_id("/runs/other")


def test_cpu_is_one_plain_process_without_gpus():
    cmds = build_commands(TrainSpec(base_model="m", gpus_per_node=0), CFG, python=PY, run_id="r")
    assert cmds[-1].argv == [PY, "-m", "axolotl.cli.train", str(CFG)]
    assert cmds[-1].env["CUDA_VISIBLE_DEVICES"] == ""


def test_env_console_scripts_are_used_when_next_to_python(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for exe in ("python", "accelerate", "torchrun"):
        (bindir / exe).write_text("#!/bin/sh\n")
        (bindir / exe).chmod(0o755)
    py = str(bindir / "python")
    acc = build_commands(TrainSpec(base_model="m", gpus_per_node=2), CFG, python=py, run_id="r")[-1].argv
    assert acc[:2] == [str(bindir / "accelerate"), "launch"] and acc[2:4] == ["--num_processes", "2"]
    tr = build_commands(TrainSpec(base_model="m", gpus_per_node=2, launcher="torchrun"), CFG, python=py, run_id="r")[-1].argv
    assert tr[0] == str(bindir / "torchrun") and tr[1:3] == ["--nnodes", "1"]


SAMPLE = (
    "Tokenizing Prompts (num_proc=2):  50%|#####     | 30/60 [00:00<00:00, 65.5 examples/s]\r"
    "  0%|          | 0/4 [00:00<?, ?it/s]\r 25%|##5       | 1/4 [00:01<00:03,  1.0s/it]\r          \r"
    "{'loss': '2.5', 'grad_norm': '1.2', 'learning_rate': '0.001', 'epoch': '0.25'}\n"
    " 50%|#####     | 2/4 [00:02<00:02,  1.0s/it]\r{'loss': '1.5', 'learning_rate': '0.0005', 'epoch': '0.5'}\n"
    "[2026-01-01 00:00:00,000] [INFO] [axolotl.train] Starting trainer...\n"
    "{'train_runtime': '3.1', 'train_loss': '2.0', 'epoch': '1'}\n"
    "{'loss': __import__('os').system('echo pwned')}\n"
)


def test_log_parser_reads_steps_and_metrics_safely():
    import re

    p = LogParser()
    events = [e for seg in re.split(r"[\r\n]", SAMPLE) if (e := p.feed(seg))]
    kinds = [k for k, _ in events]
    assert ("step", (1, 4)) in events and ("step", (2, 4)) in events
    assert ("step", (30, 60)) not in events  # a dataset-map bar is not a training step
    assert [m["loss"] for m in p.metrics] == [2.5, 1.5] and [m["step"] for m in p.metrics] == [1, 2]
    assert p.summary == {"train_runtime": 3.1, "train_loss": 2.0, "epoch": 1.0}
    assert kinds.count("line") >= 2
    assert events[-1] == ("line", "{'loss': __import__('os').system('echo pwned')}")  # never evaluated


def test_run_command_streams_logs_and_returns_the_exit_code(tmp_path):
    script = ("import sys,time\n"
              "sys.stdout.write(' 50%|#    | 1/2 [00:00<00:00]\\r'); sys.stdout.flush()\n"
              "print(\"{'loss': '0.75', 'epoch': '1'}\"); print('über done'); sys.exit(3)\n")
    events = []
    log = tmp_path / "logs" / "x.log"
    rc = run_command(Command("train", [sys.executable, "-c", script], dict(BASE_ENV)), log,
                     on_event=lambda k, d: events.append((k, d)))
    assert rc == 3
    assert ("step", (1, 2)) in events and ("line", "über done") in events
    assert any(k == "metrics" and d["loss"] == 0.75 for k, d in events)
    text = log.read_text()
    assert text.startswith("$ AXOLOTL_DO_NOT_TRACK=1") and "über done" in text


def test_run_command_missing_executable_is_a_clean_error(tmp_path):
    from distillflow.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="could not start /nope/python"):
        run_command(Command("train", ["/nope/python", "-V"]), tmp_path / "x.log")


def test_log_parser_numbers_steps_when_the_progress_bar_is_silent():
    from distillflow.train.launch import LogParser

    p = LogParser(logging_steps=5)
    for loss in ("4.1", "2.7", "1.9"):
        p.feed("{'loss': '%s', 'epoch': '0.5'}" % loss)
    assert [m["step"] for m in p.metrics] == [5, 10, 15]
    q = LogParser(logging_steps=5)
    q.feed(" 40%|████      | 12/30 [00:01<00:02, 9.1it/s]")
    q.feed("{'loss': '2.0', 'epoch': '0.4'}")
    assert q.metrics[0]["step"] == 12  # the bar, when present, is the truth


def test_cpu_threads_set_the_thread_variables_of_the_training_process_only():
    cmds = build_commands(TrainSpec(base_model="m", gpus_per_node=0, cpu_threads=1), CFG, python=PY, run_id="r")
    assert cmds[-1].env["OMP_NUM_THREADS"] == cmds[-1].env["MKL_NUM_THREADS"] == "1"
    assert "OMP_NUM_THREADS" not in cmds[0].env  # preprocess (tokenising) keeps the default
    assert "OMP_NUM_THREADS=1" in cmds[-1].shell()
    default = build_commands(TrainSpec(base_model="m", gpus_per_node=0), CFG, python=PY, run_id="r")
    assert "OMP_NUM_THREADS" not in default[-1].env
