"""The real `transformers serve` over local models (a tiny random one and the demo teacher)."""

from __future__ import annotations

import os
import time

import pytest
import requests

from distillflow.errors import ConfigurationError
from examples.quickstart import arithmetic as demo
from distillflow.evaluate.serve import TransformersServe, free_port
from tests.support.tiny import build_tiny_chat_model

pytestmark = pytest.mark.timeout(600)


def _chat(srv: TransformersServe, content: str, **params) -> dict:
    body = {"model": srv.model, "messages": [{"role": "user", "content": content}], **params}
    resp = requests.post(f"{srv.base_url}/chat/completions", json=body, timeout=120)
    assert resp.status_code == 200, resp.text
    return resp.json()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_free_port():
    port = free_port()
    assert 1024 < port < 65536


def test_tiny_model_chat_completion(tmp_path):
    path = build_tiny_chat_model(tmp_path / "tiny")
    with TransformersServe(path) as srv:
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        assert srv.model == str(path.resolve())
        pid = srv.process.pid
        assert requests.get(f"{srv.url}/health", timeout=10).json() == {"status": "ok"}

        data = _chat(srv, "What is the capital of France?", max_tokens=8, temperature=1.0, seed=0)
        text = data["choices"][0]["message"]["content"]
        assert text  # random weights: gibberish, but never nothing
        assert data["usage"]["prompt_tokens"] > 0
        assert 0 < data["usage"]["completion_tokens"] <= 8
        assert data["choices"][0]["finish_reason"] in {"stop", "length"}
        assert data["model"].startswith(srv.model)

        # temperature is honoured (do_sample: true in the generation config); temperature 0 is greedy
        greedy = [_chat(srv, "Hello", max_tokens=6, temperature=0)["choices"][0]["message"]["content"] for _ in range(2)]
        assert greedy[0] == greedy[1]
        sampled = {_chat(srv, "Hello", max_tokens=6, temperature=1.0, seed=s)["choices"][0]["message"]["content"] for s in range(3)}
        assert len(sampled) > 1

        # the request's model must be the served path (or omitted)
        bad = requests.post(
            f"{srv.base_url}/chat/completions",
            json={"model": "some-other-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            timeout=60,
        )
        assert bad.status_code == 400
    assert not _alive(pid)
    assert not srv.running


def test_demo_teacher_adds(tmp_path):
    with TransformersServe(demo.demo_teacher_path()) as srv:
        data = _chat(srv, "What is 23+45?", temperature=0, max_tokens=8)
        assert data["choices"][0]["message"]["content"].strip() == "68"
        assert data["choices"][0]["finish_reason"] == "stop"
        assert data["usage"]["completion_tokens"] == 3  # "6", "8", "<|end|>"


def test_startup_failure_names_the_cause(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    start = time.monotonic()
    with pytest.raises(ConfigurationError, match="exited with code") as info:
        TransformersServe(broken, startup_timeout=300).start()
    assert "no-such-architecture" in str(info.value) or "Traceback" in str(info.value)
    assert time.monotonic() - start < 300


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ConfigurationError, match="not a model directory"):
        TransformersServe(tmp_path).start()
