"""Providers that cannot run here are constructed and validated through distilabel's classes."""

from __future__ import annotations

import importlib.util

import pytest

from distillflow.engine.providers import api_key, build_distilabel_llm
from distillflow.errors import ConfigurationError, MissingDependencyError
from distillflow.spec.models import TeacherSpec
from tests.support import need_module

real_find = importlib.util.find_spec


def _t(**kw):
    return TeacherSpec.model_validate({"name": "t", **kw})


def test_hf_endpoint_and_openai_are_constructed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN_X", "hf_dummy")
    llm = build_distilabel_llm(_t(provider="hf_endpoint", model="meta-llama/Llama-3.1-8B-Instruct", api_key_env="HF_TOKEN_X"))
    assert type(llm).__name__ == "InferenceEndpointsLLM" and llm.model_id == "meta-llama/Llama-3.1-8B-Instruct"
    monkeypatch.setenv("OPENAI_KEY_X", "sk-dummy")
    llm = build_distilabel_llm(_t(provider="vllm_server", model="m", base_url="http://h:8000/v1", api_key_env="OPENAI_KEY_X"))
    assert type(llm).__name__ == "OpenAILLM" and llm.base_url == "http://h:8000/v1"


def test_anthropic_teacher_is_constructed(monkeypatch):
    need_module("anthropic", "pip install -e '.[dev]' (the dev extra declares anthropic)")
    monkeypatch.setenv("ANTHROPIC_KEY_X", "dummy")
    teacher = _t(provider="anthropic", model="claude-3-5-sonnet-20241022", api_key_env="ANTHROPIC_KEY_X", timeout_s=42)
    llm = build_distilabel_llm(teacher)
    assert type(llm).__name__ == "AnthropicLLM" and llm.model == "claude-3-5-sonnet-20241022"
    assert llm.api_key.get_secret_value() == "dummy" and llm.timeout == 42


def test_anthropic_missing_names_the_install(monkeypatch):
    # the SDK is installed here (dev extra): hide it from the check to see the message
    monkeypatch.setenv("ANTHROPIC_KEY_X", "dummy")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "anthropic" else real_find(name, *a))
    with pytest.raises(MissingDependencyError, match=r"needs anthropic: pip install anthropic"):
        build_distilabel_llm(_t(provider="anthropic", model="claude", api_key_env="ANTHROPIC_KEY_X"))


def test_local_vllm_without_vllm_names_the_install():
    if importlib.util.find_spec("vllm"):
        pytest.skip("vllm is installed here")
    with pytest.raises(MissingDependencyError, match="pip install vllm"):
        build_distilabel_llm(_t(provider="vllm", model="/models/x"))


def test_keys_come_only_from_the_environment(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="NOPE_KEY is not set"):
        api_key(_t(provider="openai", model="gpt-4o-mini", api_key_env="NOPE_KEY"))
    with pytest.raises(ConfigurationError, match="needs an API key"):
        api_key(_t(provider="anthropic", model="claude"))
