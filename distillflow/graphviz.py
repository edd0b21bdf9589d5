"""Render a pipeline graph to SVG/PNG/PDF with graphviz's `dot`, when it is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from distillflow.errors import ConfigurationError, MissingDependencyError, UsageError, make_parent


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


MERMAID = (".mmd", ".md", "")  # mermaid text (no extension: mermaid too)
RENDERED = (".svg", ".png", ".pdf", ".jpg", ".jpeg", ".gif", ".dot", ".gv", ".json")  # `dot -T<ext>` writes each


def output_format(output: Path) -> str:
    """``"mermaid"`` or the `dot` format (svg, png, pdf) for ``output``'s extension, in any case;
    a UsageError naming the accepted extensions for any other."""
    suffix = Path(output).suffix.lower()
    if suffix in MERMAID:
        return "mermaid"
    if suffix in RENDERED:
        return suffix[1:]
    raise UsageError(f"cannot write a graph as '{Path(output).suffix}' ({output}): use .mmd or .md (mermaid text), "
                     ".svg, .png, .pdf, .jpg, .gif (drawn with graphviz), .dot/.gv (graphviz source) or .json")


def render(graph, output: Path) -> None:
    """Write ``graph`` to ``output``: mermaid text (.mmd, .md) or drawn by `dot` (.svg, .png, .pdf).
    A missing parent folder is created, as `run --out` and `report -o` do."""
    output = Path(output)
    fmt = output_format(output)
    dot = None if fmt == "mermaid" else shutil.which("dot")
    if fmt != "mermaid" and dot is None:
        raise MissingDependencyError("rendering SVG/PNG/PDF needs graphviz: apt-get install graphviz "
                                     "(or write .mmd for mermaid)")
    if output.is_dir():
        raise UsageError(f"{output} is a directory — pass a file path such as {output / 'dag.svg'}")
    make_parent(output)
    if fmt == "mermaid":
        output.write_text(graph.mermaid() + "\n", encoding="utf-8")
        return
    done = subprocess.run([dot, f"-T{fmt}", "-o", str(output)], input=to_dot(graph), text=True, capture_output=True)
    if done.returncode != 0:
        said = " ".join(done.stderr.split()) or "no message"
        raise ConfigurationError(f"graphviz `dot -T{fmt}` could not write {output} (exit {done.returncode}): {said} "
                                 "— check that path, or write .mmd for mermaid text")
