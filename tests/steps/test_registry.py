"""The step-kind registry drives the schema, the Python builders, column checks and the reference."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Literal

import pytest

import distillflow as df
from distillflow.errors import ConfigurationError, SpecError
from distillflow.spec.reference import render
from distillflow.steps import registry
from distillflow.steps.base import StepBase, StepKind
from tests.support import ROOT, pipeline_yaml

BUILTIN = {"best_of", "decontaminate", "dedup", "distilabel", "filter", "generate", "judge", "length_filter",
           "refusal_filter", "reward", "screen", "verify"}

# The smallest valid settings of each built-in kind, to check its column rules and builder.
MINIMAL = {
    "best_of": {"by": "judge_score"}, "decontaminate": {}, "dedup": {}, "distilabel": {"step": "EvolInstruct"},
    "filter": {"where": "len(response) > 3"}, "generate": {}, "judge": {"teacher": "teacher"},
    "length_filter": {"min_words": 2}, "refusal_filter": {}, "reward": {"model": "rm"}, "screen": {},
    "verify": {"check": "json_valid"},
}


def test_every_builtin_kind_is_registered_with_docs_builder_and_columns():
    kinds = registry.kinds()
    assert BUILTIN <= set(kinds)
    reference = render()
    for name in BUILTIN:
        kind = kinds[name]
        assert kind.spec.model_fields["kind"].annotation == Literal[name]
        assert (kind.spec.__doc__ or "").strip() or kind.doc, f"{name} has no docs"
        assert f"`steps[] with kind: {name}`" in reference, f"{name} missing from docs/reference.md"
        assert kind.builder and getattr(df, kind.builder) is not None, f"{name} has no Python builder"
        step = kind.spec.model_validate({"kind": name, "id": "s", **MINIMAL[name]})
        cols = kind.columns(step)
        if name == "distilabel":
            assert cols is None  # described from the class at compile time
        else:
            reads, adds = cols
            assert isinstance(reads, set) and isinstance(adds, set)
        node = getattr(df, kind.builder)(**MINIMAL[name])
        assert node._fields["kind"] == name


def test_unknown_kind_lists_registered_kinds(write_yaml):
    path = write_yaml(pipeline_yaml("http://127.0.0.1:9/v1", "  - kind: generate\n  - kind: shuot\n"))
    with pytest.raises(SpecError) as e:
        df.load(path)
    msg = str(e.value)
    assert "unknown step kind 'shuot'" in msg and "known kinds:" in msg and "screen" in msg


class ShoutStep(StepBase):
    """Upper-case a column (a user's own step kind, for the test)."""

    kind: Literal["shout"]
    column: str = "response"


def _shout(ctx, step, rows, state):
    return [{**r, f"{step.id}_text": str(r[step.column]).upper()} for r in rows], []


SHOUT = StepKind("shout", ShoutStep, _shout, columns=lambda s: ({s.column}, {f"{s.id}_text"}), builder="Shout")


@pytest.fixture
def shout_registered():
    df.register_step(SHOUT)
    try:
        yield
    finally:
        registry.unregister("shout")


def test_a_user_kind_registered_from_python_runs_from_yaml_and_python(shout_registered, endpoint, write_yaml, tmp_path):
    steps = "  - kind: generate\n  - {kind: shout, id: loud}\n"
    res = df.run(df.load(write_yaml(pipeline_yaml(endpoint.base_url, steps))), out=tmp_path / "yaml", progress=False)
    rows = list(res.curated)
    assert len(rows) == 4 and all(r["loud_text"] == r["response"].upper() for r in rows)
    # the column rules hold at compile time: a later filter may read the new column, a typo is caught
    bad = steps + "  - {kind: filter, where: \"len(loud_txt) > 0\"}\n"
    with pytest.raises(SpecError, match="unknown column 'loud_txt'"):
        df.load(write_yaml(pipeline_yaml(endpoint.base_url, bad), "bad.yaml"))
    # and the same kind from Python, through its builder
    t = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")
    pipe = df.Pipeline("py", df.Source.inline([{"prompt": "say hi"}]) >> df.Generate(t) >> df.Shout(id="loud"))
    out = list(pipe.run(out=tmp_path / "py", progress=False).curated)
    assert out[0]["loud_text"] == out[0]["response"].upper()
    assert "kind: shout" in pipe.to_yaml()


def test_registering_a_taken_name_is_refused():
    clash = StepKind("filter", ShoutStep, _shout, columns=lambda s: (set(), set()))
    with pytest.raises(ConfigurationError, match="already registered"):
        registry.register(clash)
    with pytest.raises(ValueError, match="needs a field `kind"):
        StepKind("nokind", StepBase, _shout, columns=lambda s: (set(), set()))


def test_a_kind_from_an_installed_package_entry_point_is_usable_from_yaml(tmp_path):
    """A real distribution on sys.path declares `[distillflow.steps]`; a fresh process finds it."""
    pkg = tmp_path / "site"
    (pkg / "echo_kind").mkdir(parents=True)
    (pkg / "echo_kind" / "__init__.py").write_text(textwrap.dedent('''
        from typing import Literal
        from distillflow.steps.base import StepBase, StepKind

        class EchoStep(StepBase):
            """Copy the prompt into a column."""
            kind: Literal["echo"]

        def run(ctx, step, rows, state):
            return [{**r, "echo": r["prompt"]} for r in rows], []

        KIND = StepKind("echo", EchoStep, run, columns=lambda s: ({"prompt"}, {"echo"}), builder="Echo")
    '''))
    dist = pkg / "echo_kind-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-kind\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[distillflow.steps]\necho = echo_kind\n")
    yaml_text = pipeline_yaml("http://127.0.0.1:9/v1", "  - kind: generate\n  - kind: echo\n  - {kind: filter, where: \"len(echo) > 0\"}\n")
    (tmp_path / "p.yaml").write_text(yaml_text)
    code = ("import distillflow as df; p = df.load('p.yaml'); "
            "print(p.graph.order, type(df.Echo()).__name__)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pkg), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['source', 'generate', 'echo', 'filter'] Echo"
