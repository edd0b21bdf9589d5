"""Graph rendering: mermaid text and graphviz dot (SVG/PNG need the `dot` binary)."""

from __future__ import annotations

import re

import pytest

import distillflow as df
from distillflow.errors import MissingDependencyError
from distillflow.graphviz import render, to_dot
from tests.support import need_binary, pipeline_yaml

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


def test_render_svg_with_graphviz(tmp_path):
    need_binary("dot", "apt-get install -y graphviz (make browser does it as root)")
    render(_graph(), tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # every step is a node and every edge is drawn: dot wrote the graph we gave it
    titles = re.findall(r"<title>(.*?)</title>", svg)
    for node in ("source", "generate", "v", "j", "keep"):
        assert node in titles
    for edge in ("generate&#45;&gt;v", "generate&#45;&gt;j", "v&#45;&gt;keep", "j&#45;&gt;keep"):
        assert edge in titles


def test_render_without_graphviz_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on this PATH
    with pytest.raises(MissingDependencyError, match="apt-get install graphviz"):
        render(_graph(), tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()
