"""The README's first example: its YAML validates, its Python builds the same pipeline, and it runs.

The README shows one pipeline twice (a YAML file saved in the repository root, and Python objects built
from the repository root); a reader who copies either gets the other. This keeps the two in step and
keeps both working against the real schema and the demo's models.
"""

from __future__ import annotations

import yaml

import distillflow as df
from distillflow.spec.loader import validate_data
from tests.support import ROOT

HEADING = "## A first pipeline, in YAML and in Python"


def _blocks() -> tuple[str, str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(HEADING):]
    section = section[: section.index("\n## ", len(HEADING))]
    yaml_text = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    bash_text = section.split("```bash\n", 1)[1].split("```", 1)[0]
    python_text = section.split("```python\n", 1)[1].split("```", 1)[0]
    return yaml_text, bash_text, python_text


def _yaml_spec():
    return validate_data(yaml.safe_load(_blocks()[0]), source="README first.yaml", base_dir=ROOT)


def test_readme_first_yaml_validates_and_compiles():
    spec = _yaml_spec()
    plan = df.compile(spec)  # graph and column checks, as `distillflow validate` does
    assert plan.name == "first"
    assert [s.kind for s in spec.steps] == ["generate", "verify", "filter", "dedup"]
    assert spec.train is not None and spec.eval is not None  # the example covers every stage
    for rel in (spec.source.path, spec.teachers[0].model, spec.train.base_model):
        assert (ROOT / rel).exists(), rel
    # the commands under it use the file name and run directory the text gives
    _, bash_text, _ = _blocks()
    for cmd in ("validate first.yaml", "run first.yaml --out runs/first", "train runs/first", "eval runs/first",
                "report runs/first"):
        assert f"distillflow {cmd}" in bash_text, cmd


def test_readme_python_builds_the_same_pipeline_as_its_yaml(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(df.Pipeline, "run", lambda self, **kw: calls.append(kw) or _Stop.throw())
    monkeypatch.chdir(ROOT)  # the README runs it from the repository root
    namespace: dict = {}
    try:
        exec(compile(_blocks()[2], "README.md (python)", "exec"), namespace)
    except _Stop:
        pass
    pipe = namespace["pipe"]
    assert calls == [{"out": "runs/first"}]
    assert pipe.spec.model_dump() == _yaml_spec().model_dump()
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) == yaml.safe_load(pipe.to_yaml())


def test_readme_first_pipeline_runs(tmp_path):
    """The YAML as written, on 16 of its prompts (the full 1,000 take minutes on two cores)."""
    data = yaml.safe_load(_blocks()[0])
    data["source"].update(limit=16, heldout={"size": 4, "seed": 0})
    spec = validate_data(data, source="README first.yaml", base_dir=ROOT)
    result = df.run(spec, out=tmp_path / "run", progress=False)
    m = result.manifest
    assert m["status"] == "complete"
    assert m["counts"]["generate"]["out"] == 24  # 12 prompts x 2 samples
    assert m["curated"] > 0
    row = result.curated[0]
    assert row["verify_pass"] is True and row["provenance"]["teacher"]
    assert len(result.heldout) == 4


class _Stop(Exception):
    @classmethod
    def throw(cls):
        raise cls()


def _section_block(heading: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return section.split(f"```{lang}\n", 1)[1].split("```", 1)[0]


def test_readme_judge_pipeline_in_python_is_the_yaml_above_it(monkeypatch, capsys):
    """"The same pipeline in Python" builds the (abridged) openai_judge.yaml shown above it: the same
    spec, dedup, rate limits, prices, terms, system prompt and held-out prompts included."""
    yaml_text = _section_block("### A pipeline with judges, in YAML", "yaml")
    want = validate_data(yaml.safe_load(yaml_text), source="README openai_judge.yaml", base_dir=ROOT / "pipelines")
    monkeypatch.setattr(df.Pipeline, "run", lambda self, **kw: _Stop.throw())
    monkeypatch.chdir(ROOT / "pipelines")  # where its prompts file lies
    namespace: dict = {}
    try:
        exec(compile(_section_block("### The same pipeline in Python", "python"), "README.md (judge python)", "exec"),
             namespace)
    except _Stop:
        pass
    assert namespace["pipe"].spec.model_dump() == want.model_dump()
    assert [s.kind for s in want.steps][-1] == "dedup"
