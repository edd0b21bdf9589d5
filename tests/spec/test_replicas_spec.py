"""`base_url` as a list of replicas: the YAML and Python front doors, validation messages."""

from __future__ import annotations

import pytest

import distillflow as df
from distillflow.api import load
from distillflow.errors import SpecError
from tests.support import one_teacher_yaml

URLS = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "https://gpu3.example.org/v1"]


def _yaml(base_url: str, provider: str = "vllm_server") -> str:
    return one_teacher_yaml(f"    provider: {provider}\n    base_url: {base_url}\n    model: m")


def test_python_teacher_with_replicas_round_trips_through_yaml():
    teacher = df.Teacher("t", provider="vllm_server", model="m", base_url=URLS)
    assert teacher.spec.base_url == URLS
    pipe = df.Pipeline("r", df.Source.inline([{"prompt": "hi"}]) >> df.Generate(teacher))
    text = pipe.to_yaml()
    assert "base_url:\n  - http://10.0.0.1:8000/v1\n  - http://10.0.0.2:8000/v1\n  - https://gpu3.example.org/v1\n" in text
    assert load(text).teachers[0].base_url == URLS


def test_one_element_list_is_the_plain_url():
    assert load(_yaml("[http://10.0.0.1:8000/v1]")).teachers[0].base_url == "http://10.0.0.1:8000/v1"


@pytest.mark.parametrize("value, message", [
    ("[]", "base_url is an empty list — give one URL, or a list of replica URLs"),
    ("[http://10.0.0.1:8000/v1, 10.0.0.2:8000/v1]",
     "base_url '10.0.0.2:8000/v1' is not an http(s) URL — write it like http://127.0.0.1:8000/v1"),
    ("[http://10.0.0.1:8000/v1, http://10.0.0.1:8000/v1]",
     "base_url lists http://10.0.0.1:8000/v1 twice — each replica must be a different endpoint"),
    ("{a: 1}", "base_url must be a URL or a list of URLs, got {'a': 1}"),
])
def test_bad_replica_lists_name_the_cause(value, message):
    with pytest.raises(SpecError) as info:
        load(_yaml(value))
    assert f"teachers[0].base_url (line 8): {message}" in str(info.value)
    assert str(info.value).startswith("1 error in pipeline")


def test_replicas_only_for_openai_compatible_providers():
    with pytest.raises(SpecError) as info:
        load(_yaml("[http://a:1, http://b:1]", provider="hf_endpoint"))
    assert "provider 'hf_endpoint' takes one base_url, not a list: replicas are supported for OpenAI-compatible" in str(info.value)
