"""Start the real ``transformers serve`` (OpenAI-compatible) server over a local model directory.

    with TransformersServe("path/to/model") as srv:
        requests.post(f"{srv.base_url}/chat/completions",
                      json={"model": srv.model, "messages": [...], "max_tokens": 8})

What the server does (transformers 5.16.1, extra ``transformers[serving]``; every point below
was checked by running it on CPU against the tiny model and the demo teacher):

* Command: ``transformers serve [FORCE_MODEL] --host H --port P`` (FastAPI + uvicorn). We pass the
  model directory as ``FORCE_MODEL``: the server loads it *before* it listens, so ``GET /health``
  answering 200 means the model is ready. Endpoints: ``POST /v1/chat/completions`` (streaming
  and not), ``POST /v1/completions``, ``POST /v1/responses``, ``GET /v1/models``, ``GET /health``.
* Model id: with ``FORCE_MODEL`` the request's ``model`` must be exactly the string given on the
  command line — here the resolved absolute path of the directory, :attr:`TransformersServe.model`
  — or be omitted; anything else is a 400 ("Server is pinned to '...'"). Responses name the
  model ``<that path>@main``. (A path containing ``@`` would be split as ``id@revision``.)
  ``GET /v1/models`` lists only models in the Hugging Face *cache*, never the forced directory,
  and answers 500 when no cache directory exists (``CacheNotFound``): readiness is ``/health``.
* Honoured per request: ``temperature`` (``0`` = greedy), ``top_p``, ``max_tokens``, ``stop``
  (as stop strings), ``frequency_penalty`` (as a repetition penalty), ``logit_bias``, ``stream``,
  and ``seed`` (it sets the *global* torch seed before generating: the same seed gives the same
  sample when requests do not overlap). Temperature only samples when the model's
  ``generation_config.json`` has ``do_sample: true`` — with ``do_sample: false`` every request is
  greedy whatever its temperature; the distillflow tiny and demo models set ``do_sample: true``.
  Without ``max_tokens`` the server raises the model's ``max_new_tokens`` to at least 1024.
* Accepted but silently **ignored** (a warning in the server log, no error): ``logprobs`` and
  ``top_logprobs`` (responses carry no logprobs, so logprob-based filters get ``None``), ``n``
  (always exactly one choice — distilabel's ``OpenAILLM`` with ``num_generations=3`` sends
  ``n=3`` and gets *one* generation back: send separate requests instead),
  ``max_completion_tokens`` (use ``max_tokens``), ``presence_penalty``, ``response_format``,
  ``tool_choice``, ``user``, ``stream_options``, ``parallel_tool_calls`` and a few more.
  Fields unknown to the OpenAI schema (e.g. ``top_k``) are a 422.
* Every response has ``usage`` (``prompt_tokens``, ``completion_tokens``, ``total_tokens``;
  the completion count includes the EOS token) and ``finish_reason`` ``stop`` or ``length``.
* Concurrency: concurrent requests are all accepted, but by default generation runs on one
  inference thread per model, one request after another: 32 requests to the demo teacher took
  10.0 s one at a time and 10.0 s sixteen at a time. ``continuous_batching=True`` adds
  ``--continuous-batching`` (paged attention; works on CPU): the same 32 requests took 4.4 s
  sixteen at a time (13 s one at a time). Caveat: with continuous batching the sampling
  parameters (``temperature``, ``top_p``, ``stop``) of the *first* request are used for all
  later ones; only ``max_tokens`` stays per request.

:class:`TransformersServe` starts the CLI in its own process group with ``HF_HUB_OFFLINE=1``,
waits for ``/health``, and ``stop()`` terminates the whole group (SIGTERM, then SIGKILL), so no
process outlives it. Server output goes to a log file (``log_path``) whose tail is quoted in
every start-up error.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from distillflow.errors import ConfigurationError

__all__ = ["TransformersServe", "free_port", "transformers_cli"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def transformers_cli() -> list[str]:
    """The command that runs the ``transformers`` CLI of *this* Python environment."""
    exe = Path(sys.executable).with_name("transformers")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("transformers")
    if found:
        return [found]
    # the console script's entry point, importable from this interpreter
    return [sys.executable, "-c", "from transformers.cli.transformers import main; main()"]


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return ""
    return data[-limit:]


class TransformersServe:
    """The real ``transformers serve`` over a local model directory, on 127.0.0.1.

    Args:
        model_path: a directory written by ``save_pretrained`` (model + tokenizer with a chat template).
        port: TCP port; a free one by default.
        host: listen address (default ``127.0.0.1``).
        startup_timeout: seconds to wait for ``/health``.
        continuous_batching: pass ``--continuous-batching``.
        extra_args: more CLI arguments (e.g. ``["--dtype", "float32"]``).
        env: extra environment variables for the server process.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` (what OpenAI clients and distilabel's
            ``OpenAILLM(base_url=...)`` want).
        model: the model id to put in requests (the absolute model directory).
        url: ``http://127.0.0.1:PORT`` (no ``/v1``).
        log_path: the file holding the server's stdout and stderr.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout: float = 180.0,
        continuous_batching: bool = False,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.model_path = Path(model_path).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.continuous_batching = continuous_batching
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.model = str(self.model_path)
        self.url = f"http://{host}:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.process: subprocess.Popen | None = None
        self._log_dir: str | None = None
        self.log_path: Path | None = None

    # ----- lifecycle -----

    def command(self) -> list[str]:
        cmd = [*transformers_cli(), "serve", self.model, "--host", self.host, "--port", str(self.port)]
        cmd += ["--device", "cpu"] if not self._has_cuda() else []
        if self.continuous_batching:
            cmd.append("--continuous-batching")
        return cmd + self.extra_args

    @staticmethod
    def _has_cuda() -> bool:
        # cheap check without importing torch: NVIDIA device nodes
        return os.path.exists("/dev/nvidiactl") or bool(os.environ.get("CUDA_VISIBLE_DEVICES", "").strip())

    def start(self) -> "TransformersServe":
        if self.process is not None:
            return self
        if not (self.model_path / "config.json").is_file():
            raise ConfigurationError(
                f"{self.model_path} is not a model directory (no config.json); "
                "point it at a directory saved with `save_pretrained` (config.json, weights, tokenizer)"
            )
        self._log_dir = tempfile.mkdtemp(prefix="distillflow-serve-")
        self.log_path = Path(self._log_dir) / "server.log"
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # own process group: stop() kills all of it
            )
        except OSError as exc:
            log.close()
            raise ConfigurationError(f"could not start `transformers serve`: {exc}") from exc
        finally:
            if self.process is not None:
                log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = ""
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ConfigurationError(
                    f"`transformers serve` exited with code {code} before it was ready "
                    f"(model {self.model}). Server output:\n{_tail(self.log_path)}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last_error = f"HTTP {resp.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(exc)
            time.sleep(0.25)
        raise ConfigurationError(
            f"`transformers serve` did not answer {self.url}/health within {self.startup_timeout:.0f}s "
            f"(last error: {last_error}). Server output:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server's whole process group; idempotent."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
                try:
                    if pgid is not None:
                        os.killpg(pgid, sig)
                    else:
                        proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # the leader is gone; make sure no straggler of its group survives
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def logs(self) -> str:
        """The server's output so far (stdout and stderr)."""
        return _tail(self.log_path, limit=1_000_000) if self.log_path else ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "TransformersServe":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        if self._log_dir and exc[0] is None:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def __del__(self) -> None:  # last resort: never leave a server behind
        try:
            self.stop(timeout=2)
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"TransformersServe({self.model!r}, base_url={self.base_url!r}, {state})"
