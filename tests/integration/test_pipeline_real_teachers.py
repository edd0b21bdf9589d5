"""YAML pipelines end to end against real teachers: `transformers serve` (OpenAI-compatible HTTP)
and local transformers (distilabel's TransformersLLM), both over a tiny model built here."""

from __future__ import annotations

import json

import pytest

import distillflow as df
from distillflow.evaluate.serve import TransformersServe
from tests.support.tiny import build_tiny_chat_model



@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("models") / "tiny")


def _yaml(teacher_block: str) -> str:
    return f"""name: real-teacher
source:
  kind: inline
  rows: [{{q: "What is 1+1?"}}, {{q: "Name a fruit."}}, {{q: "Say hello."}}]
  columns: {{prompt: q}}
teachers:
{teacher_block}
steps:
  - kind: generate
    num_generations: 2
  - kind: length_filter
    min_chars: 1
"""


def test_transformers_serve_teacher(tiny_model, tmp_path):
    with TransformersServe(tiny_model) as srv:
        block = f"""  - name: served
    provider: transformers_serve
    base_url: {srv.base_url}
    model: {srv.model}
    params: {{temperature: 0.9, max_tokens: 8, seed: 1}}
    concurrency: 2"""
        path = tmp_path / "p.yaml"
        path.write_text(_yaml(block))
        spec = df.load(path)
        res = df.run(spec, out=tmp_path / "run", progress=False)
    m = res.manifest
    assert m["counts"]["generate"]["out"] == 6 and m["teachers"]["served"]["new"] == 6
    assert m["teachers"]["served"]["output_tokens"] > 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "data" / "curated.jsonl").read_text().splitlines()]
    rows += [json.loads(x) for x in (tmp_path / "run" / "data" / "rejected.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["provenance"]["teacher"]["provider"] == "transformers_serve" for r in rows)
    assert all(r.get("finish_reason") in ("stop", "length") for r in rows if "finish_reason" in r)


def test_local_transformers_teacher(tiny_model, tmp_path):
    block = f"""  - name: local
    provider: transformers
    model: {tiny_model}
    params: {{temperature: 0.9, max_tokens: 8}}"""
    path = tmp_path / "p.yaml"
    path.write_text(_yaml(block))
    res = df.run(df.load(path), out=tmp_path / "run", progress=False)
    m = res.manifest
    assert m["counts"]["generate"]["out"] == 6
    assert m["teachers"]["local"]["new"] == 6
    # a second run answers from the cache: the local model is not asked again
    res2 = df.run(df.load(path), out=tmp_path / "run", progress=False, fresh=False)
    assert res2.manifest["teachers"]["local"]["new"] == 0


def test_a_local_transformers_client_loads_its_model_once(tiny_model):
    # build_client loads the model; the client's first batch used to load it again (a second
    # transformers pipeline; a second vLLM engine would not fit on its GPU)
    from distillflow.engine.client import ChatRequest
    from distillflow.engine.providers import build_client
    from distillflow.spec.models import TeacherSpec

    client = build_client(TeacherSpec(name="t", provider="transformers", model=str(tiny_model), device="cpu"))
    pipe = client.llm._pipeline
    got = []
    client.run([ChatRequest("k", [{"role": "user", "content": "hi"}], {"max_tokens": 2})], got.append)
    assert got and got[0].error is None, got
    assert client.llm._pipeline is pipe
