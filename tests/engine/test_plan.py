"""A pipeline is validated and compiled once into an immutable Plan; nothing downstream mutates it."""

from __future__ import annotations

import dataclasses

import pytest

import distillflow as df
from distillflow.plan import Plan
from tests.support import pipeline_yaml

STEPS = "  - kind: generate\n  - {kind: verify, check: contains, reference: reference}\n  - {kind: filter, where: verify_pass}\n"


def test_load_returns_a_frozen_plan_that_reads_like_its_spec(write_yaml):
    plan = df.load(write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", STEPS)))
    assert isinstance(plan, Plan)
    assert plan.graph.order == ["source", "generate", "verify", "filter"] and plan.graph.sink == "filter"
    assert plan.name == plan.spec.name == "t" and [t.name for t in plan.teachers] == ["teacher"]
    assert plan.lines[("steps", 1, "kind")] > plan.lines[("steps", 0, "kind")]  # YAML lines travel with it
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.spec = None
    with pytest.raises(TypeError):
        plan.objects["x"] = 1  # a read-only mapping
    # the spec carries no private side channels any more
    assert not any(hasattr(plan.spec, a) for a in ("_lines", "_base_dir", "_objects"))
    assert df.compile(plan) is plan


def test_a_run_does_not_mutate_the_validated_spec(endpoint, write_yaml, tmp_path):
    plan = df.load(write_yaml(pipeline_yaml(endpoint.base_url, STEPS)))
    before = plan.spec.model_dump(mode="json")
    res = df.run(plan, out=tmp_path / "run", progress=False)
    assert [r["prompt"] for r in res.curated] == ["Say hi"]  # the only answer that contains its reference
    assert plan.spec.model_dump(mode="json") == before


def test_local_model_paths_are_resolved_in_a_copy(tmp_path):
    (tmp_path / "models" / "teacher").mkdir(parents=True)
    yaml_text = pipeline_yaml("http://127.0.0.1:9/v1", "  - kind: generate\n").replace(
        "provider: openai\n    base_url: http://127.0.0.1:9/v1\n    model: fake-teacher", "provider: transformers\n    model: models/teacher")
    p = tmp_path / "p.yaml"
    p.write_text(yaml_text)
    from distillflow.spec.loader import load_document

    doc = load_document(p)
    plan = df.load(p)
    assert plan.teachers[0].model == str((tmp_path / "models" / "teacher").resolve())
    assert doc.spec.teachers[0].model == "models/teacher"  # the loaded spec is left as written


def test_python_pipeline_compiles_once_with_its_objects(endpoint, tmp_path):
    def is_short(response, row):
        return len(response) < 500

    t = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")
    pipe = df.Pipeline("p", df.Source.inline([{"prompt": "a"}, {"prompt": "b"}]) >> df.Generate(t) >> df.Verify(is_short))
    plan = pipe.compile()
    assert plan.objects["verify"] is is_short
    assert pipe.spec.steps[1].after is None  # a linear chain needs no `after:`
    res = df.run(plan, out=tmp_path / "run", progress=False)
    assert [r["verify_pass"] for r in res.curated] == [True, True]
