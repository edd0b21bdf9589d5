"""Launch commands for `axolotl preprocess` + `axolotl train`, and running them with streamed logs.

    cmds = build_commands(spec.train, Path("runs/x/train/axolotl.yaml"), python="/usr/bin/python3", run_id="x")
    print(cmds[1].shell())
    # AXOLOTL_DO_NOT_TRACK=1 ... accelerate launch --num_processes 16 --num_machines 2 ... -m axolotl.cli.train ...

Processes = GPUs per node x nodes. ``accelerate launch`` (default) or ``torchrun`` start one process
per GPU; ``gpus_per_node: 0`` (CPU) or ``launcher: python`` run a single ``python -m axolotl.cli.train``.
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from distillflow.errors import UsageError
from distillflow.train.render import effective_precision

# Without these every axolotl command finishes and then retries a telemetry upload for ~10 minutes.
BASE_ENV = {"AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1", "PYTHONUNBUFFERED": "1"}


@dataclass
class Command:
    """One process to start: its argv and the environment variables we add to the caller's."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)

    def shell(self) -> str:
        """A copy-pasteable shell line (what ``--dry-run`` prints)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + shlex.join(self.argv)


def _tool(python: str, exe: str, module: list[str]) -> list[str]:
    """The env's own console script when it sits next to its python, else ``python -m module``."""
    sibling = Path(python).with_name(exe)
    return [str(sibling)] if sibling.is_file() and os.access(sibling, os.X_OK) else [python, "-m", *module]


def rdzv_id(run_id: str) -> str:
    """Rendezvous id shared by every node: derived from the run, never random (nodes must agree)."""
    return "distillflow-" + hashlib.sha1(run_id.encode()).hexdigest()[:10]


def build_commands(train, config_path: Path, *, python: str, run_id: str) -> list[Command]:
    """``[preprocess, train]`` (or ``[train]`` with ``train.preprocess: false``) for this node.

    >>> from distillflow.spec.train import TrainSpec
    >>> [c.argv[-2:] for c in build_commands(TrainSpec(base_model="m", gpus_per_node=0), Path("a.yaml"), python="py", run_id="r")]
    [['axolotl.cli.preprocess', 'a.yaml'], ['axolotl.cli.train', 'a.yaml']]
    """
    problem = train.rendezvous_problem()
    if problem:  # prepare() says so with the YAML line; a TrainSpec built in Python gets here unchecked
        raise UsageError(problem)
    cfg = str(config_path)
    env = dict(BASE_ENV)
    cmds = []
    if train.preprocess:
        # Tokenise once, in one process, before N training processes would each do it.
        cmds.append(Command("preprocess", [python, "-m", "axolotl.cli.preprocess", cfg], env))
    world = train.world_size()
    target = ["-m", "axolotl.cli.train", cfg]
    if train.gpus_per_node == 0 or train.launcher == "python":
        argv = [python, *target]
    elif train.launcher == "torchrun":
        argv = _tool(python, "torchrun", ["torch.distributed.run"]) + ["--nnodes", str(train.nodes),
                                                                      "--nproc_per_node", str(train.gpus_per_node)]
        if train.nodes > 1:
            argv += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"{train.main_process_ip}:{train.main_process_port}",
                     "--rdzv_id", rdzv_id(run_id)]
        else:
            argv += ["--standalone"]
        argv += target
    else:
        argv = _tool(python, "accelerate", ["accelerate.commands.launch"])
        if argv[0] != python:
            argv.append("launch")
        argv += ["--num_processes", str(world), "--num_machines", str(train.nodes)]
        if world > 1:
            argv += ["--multi_gpu"]
        if train.nodes > 1:
            argv += ["--machine_rank", str(train.machine_rank), "--main_process_ip", str(train.main_process_ip),
                     "--main_process_port", str(train.main_process_port)]
        # The same precision as the Axolotl config's bf16/fp16 keys, so accelerate's FSDP/DeepSpeed
        # plugins and the HF Trainer agree (accelerate otherwise warns and assumes "no").
        precision = {"bf16": "bf16", "fp16": "fp16"}.get(effective_precision(train), "no")
        argv += ["--mixed_precision", precision, "--dynamo_backend", "no"]
        argv += target
    if train.gpus_per_node == 0:
        env = {**env, "CUDA_VISIBLE_DEVICES": ""}  # CPU training must not grab a GPU that happens to be there
    if train.cpu_threads:
        threads = str(train.cpu_threads)
        env = {**env, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    cmds.append(Command("train", argv, env))
    return cmds


# ----------------------------------------------------------------------------- log parsing

_BAR = re.compile(r"^\s*(\d+)%\|[^|]*\|\s*(\d+)/(\d+)\s*\[")


class LogParser:
    """Turns Axolotl/HF Trainer output into progress and metrics events.

    The trainer's tqdm bar (``' 32%|███| 16/50 [00:13<00:27, 1.23it/s]'``) gives the step; its logged
    dicts (``{'loss': '2.13', 'epoch': '0.68'}``) give the metrics. Dataset-map bars carry a label
    before the percentage, so they are not mistaken for training steps.
    """

    def __init__(self, logging_steps: int = 1):
        self.step = 0
        self.total = 0
        self.metrics: list[dict] = []
        self.summary: dict = {}
        # without a terminal the trainer's tqdm bar is silent; logged dicts then arrive every
        # `logging_steps` optimizer steps, which gives their step
        self.logging_steps = max(1, int(logging_steps or 1))
        self._bar_seen = False

    def feed(self, segment: str) -> tuple[str, object] | None:
        """One line (split on \\r or \\n); returns ("step", (n, total)), ("metrics", dict) or ("line", text)."""
        text = segment.strip()
        if not text:
            return None
        m = _BAR.match(segment)
        if m:
            self.step, self.total = int(m.group(2)), int(m.group(3))
            self._bar_seen = True
            return "step", (self.step, self.total)
        if text.startswith("{") and text.endswith("}") and ("'loss'" in text or "'train_runtime'" in text
                                                              or "'eval_loss'" in text):
            try:
                raw = ast.literal_eval(text)  # a Python dict literal; literal_eval never executes code
            except (ValueError, SyntaxError):
                return "line", text
            values = {str(k): _num(v) for k, v in raw.items()}
            if "train_runtime" in values:
                self.summary = values
            else:
                if not self._bar_seen:
                    self.step = (len(self.metrics) + 1) * self.logging_steps
                values["step"] = self.step
                self.metrics.append(values)
            return "metrics", values
        return "line", text


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def run_command(cmd: Command, log_path: Path, on_event: Callable[[str, object], None] | None = None,
                parser: LogParser | None = None, cwd: Path | None = None) -> int:
    """Run ``cmd``, append its raw output to ``log_path``, feed each line to ``parser``/``on_event``.

    Returns the process's exit code. Ctrl-C stops the whole process group (accelerate/torchrun
    children included) and re-raises KeyboardInterrupt.
    """
    parser = parser or LogParser()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for k, v in cmd.env.items():
        # telemetry defaults yield to a user who set them; the rest (CUDA_VISIBLE_DEVICES on CPU) is ours
        if k in BASE_ENV:
            env.setdefault(k, v)
        else:
            env[k] = v
    with log_path.open("ab") as log:
        log.write(f"$ {cmd.shell()}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(cmd.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd, start_new_session=True)
        except OSError as e:
            from distillflow.errors import ConfigurationError

            raise ConfigurationError(f"could not start {cmd.argv[0]} ({e}) — check train.python / the launcher") from None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        try:
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                pending += decoder.decode(chunk)
                *segments, pending = re.split(r"[\r\n]", pending)
                for seg in segments:
                    event = parser.feed(seg)
                    if event and on_event:
                        on_event(*event)
            if pending and (event := parser.feed(pending)) and on_event:
                on_event(*event)
            return proc.wait()
        except KeyboardInterrupt:
            _stop(proc)
            raise


def log_tail(path: Path, n: int = 15) -> list[str]:
    """The last ``n`` meaningful lines of a log (progress-bar redraws dropped): what a failure message shows."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    lines = [seg.rstrip() for seg in re.split(r"[\r\n]", text) if seg.strip() and not _BAR.match(seg)]
    return lines[-n:]


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT the process group (lets the trainer exit cleanly), then SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
