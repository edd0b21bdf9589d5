"""Graph rendering: mermaid text and graphviz dot (SVG/PNG need the `dot` binary)."""

from __future__ import annotations

import shutil

import pytest

import distillflow as df
from distillflow.errors import MissingDependencyError
from distillflow.graphviz import render, to_dot
from tests.support import pipeline_yaml

STEPS = """  - kind: generate
  - {id: v, kind: verify, check: json_valid}
  - {id: j, kind: judge, teacher: teacher, after: [generate]}
  - {id: keep, kind: filter, where: "v_pass or j_score >= 4", after: [v, j]}
"""


def _graph():
    return df.load(pipeline_yaml("http://127.0.0.1:9/v1", STEPS)).graph


def test_mermaid_and_dot_show_the_branches():
    g = _graph()
    assert g.order[0] == "source" and g.sink == "keep"
    text = g.mermaid()
    for edge in ("generate --> v", "generate --> j", "v --> keep", "j --> keep", "keep --> curated"):
        assert edge in text
    dot = to_dot(g)
    assert '"v" -> "keep";' in dot and '"j" -> "keep";' in dot and "rankdir=LR" in dot


def test_render_needs_graphviz(tmp_path):
    if shutil.which("dot"):
        render(_graph(), tmp_path / "g.svg")
        assert "<svg" in (tmp_path / "g.svg").read_text()
    else:
        with pytest.raises(MissingDependencyError, match="apt-get install graphviz"):
            render(_graph(), tmp_path / "g.svg")
