"""Render a pipeline graph to SVG/PNG with graphviz's `dot`, when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from distillflow.errors import MissingDependencyError


def to_dot(graph) -> str:
    lines = ["digraph distillflow {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor="#eef3ff", fontname="Helvetica"];']
    for nid in graph.order:
        step = graph.nodes[nid].step
        label = nid if step is None else f"{nid}\\n({step.kind})"
        shape = ', shape=cylinder, fillcolor="#e8f5e9"' if step is None else ""
        lines.append(f'  "{nid}" [label="{label}"{shape}];')
    for nid in graph.order:
        for p in graph.nodes[nid].parents:
            lines.append(f'  "{p}" -> "{nid}";')
    lines.append('  "curated" [shape=cylinder, fillcolor="#e8f5e9"];')
    lines.append(f'  "{graph.sink}" -> "curated";')
    lines.append("}")
    return "\n".join(lines)


def render(graph, output: Path) -> None:
    dot = shutil.which("dot")
    if dot is None:
        raise MissingDependencyError("rendering SVG/PNG needs graphviz: apt-get install graphviz (or write .mmd for mermaid)")
    fmt = output.suffix.lstrip(".")
    subprocess.run([dot, f"-T{fmt}", "-o", str(output)], input=to_dot(graph), text=True, check=True)
