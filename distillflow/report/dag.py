"""Draw the pipeline DAG as inline SVG (no mermaid, no script, no network).

Nodes are placed in columns by their longest distance from the source, in pipeline order within
a column; edges are cubic curves with arrow heads.

    svg = dag_svg(dag_from_graph(graph, counts), extra=["review", "train", "eval"])
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

__all__ = ["DagNode", "dag_from_graph", "dag_from_mermaid", "dag_svg"]

COL_W, ROW_H, NODE_W, NODE_H, PAD = 172, 74, 140, 56, 12
COLORS = {
    "source": "#e0f2fe", "generate": "#dcfce7", "distilabel": "#dcfce7", "judge": "#fef9c3", "verify": "#fef9c3",
    "reward": "#fef9c3", "curated": "#ede9fe", "review": "#fce7f3", "train": "#ffedd5", "eval": "#e0e7ff",
    "heldout": "#f1f5f9",
}
FILTER_COLOR = "#fee2e2"


@dataclass
class DagNode:
    id: str
    kind: str
    parents: list[str] = field(default_factory=list)
    detail: str = ""
    dashed: bool = False


def dag_from_graph(graph, counts: dict | None = None) -> list[DagNode]:
    """Nodes of a :class:`distillflow.graph.Graph` (+ the curated sink), with in/out counts."""
    counts = counts or {}
    nodes = []
    for nid in graph.order:
        n = graph.nodes[nid]
        kind = "source" if n.step is None else n.step.kind
        c = counts.get(nid) or {}
        detail = f"{c.get('in')} → {c.get('out')}" if "in" in c and "out" in c else ""
        if kind == "source" and "out" in c:
            detail = f"{c['out']} prompts"
        nodes.append(DagNode(nid, kind, list(n.parents), detail))
    nodes.append(DagNode("curated", "curated", [graph.sink]))
    return nodes


_NODE_RE = re.compile(r'^\s*([A-Za-z_][\w]*)\[\(?"(.*?)"\)?\]\s*$')
_EDGE_RE = re.compile(r"^\s*([A-Za-z_][\w]*)\s*-->\s*([A-Za-z_][\w]*)")


def dag_from_mermaid(text: str) -> list[DagNode]:
    """Nodes from a run's ``graph.mmd`` (used when pipeline.yaml cannot be loaded)."""
    nodes: dict[str, DagNode] = {}
    for line in text.splitlines():
        m = _EDGE_RE.match(line)
        if m:
            a, b = m.groups()
            for x in (a, b):
                nodes.setdefault(x, DagNode(x, "curated" if x == "curated" else "step"))
            nodes[b].parents.append(a)
            continue
        m = _NODE_RE.match(line)
        if m:
            nid, label = m.groups()
            parts = label.split("<br/>")
            kind = parts[1] if len(parts) > 1 else ("source" if nid == "source" else nid)
            nodes.setdefault(nid, DagNode(nid, kind)).kind = kind
    return list(nodes.values())


def _layers(nodes: list[DagNode]) -> dict[str, int]:
    by_id = {n.id: n for n in nodes}
    layer: dict[str, int] = {}

    def depth(nid: str, seen: frozenset = frozenset()) -> int:
        if nid in layer:
            return layer[nid]
        if nid in seen:  # a cycle cannot come from a validated graph; do not loop on a bad file
            return 0
        parents = [p for p in by_id[nid].parents if p in by_id]
        layer[nid] = 0 if not parents else 1 + max(depth(p, seen | {nid}) for p in parents)
        return layer[nid]

    for n in nodes:
        depth(n.id)
    return layer


def _clip(text: str, n: int = 20) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def dag_svg(nodes: list[DagNode]) -> str:
    """An ``<svg>`` element drawing ``nodes`` (ids unique; parents refer to ids in the list)."""
    if not nodes:
        return ""
    layer = _layers(nodes)
    nodes_by_id = {n.id: n for n in nodes}
    columns: dict[int, list[DagNode]] = {}
    for n in nodes:
        columns.setdefault(layer[n.id], []).append(n)
    tallest = max(len(c) for c in columns.values())
    # an edge that skips columns runs in a lane below the nodes, so it never crosses one
    long_edges = [(p, n.id) for n in nodes for p in n.parents if p in layer and layer[n.id] - layer[p] > 1]
    width = PAD * 2 + (max(columns) + 1) * COL_W - (COL_W - NODE_W)
    nodes_bottom = PAD + tallest * ROW_H - (ROW_H - NODE_H)
    height = nodes_bottom + PAD + (10 * len(long_edges) + 6 if long_edges else 0)
    pos: dict[str, tuple[float, float]] = {}
    for col, members in columns.items():
        offset = (tallest - len(members)) * ROW_H / 2
        for i, n in enumerate(members):
            pos[n.id] = (PAD + col * COL_W, PAD + offset + i * ROW_H)

    out = [f'<svg class="dag" role="img" aria-label="pipeline graph" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" style="max-width:100%;height:auto">',
           '<defs><marker id="df-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker></defs>']
    for n in nodes:
        for p in n.parents:
            if p not in pos:
                continue
            x1, y1 = pos[p][0] + NODE_W, pos[p][1] + NODE_H / 2
            x2, y2 = pos[n.id][0], pos[n.id][1] + NODE_H / 2
            dash = ' stroke-dasharray="5 4"' if n.dashed or nodes_by_id[p].dashed else ""
            if (p, n.id) in long_edges:
                lane = nodes_bottom + 8 + 10 * long_edges.index((p, n.id))
                xt, yt = x2 + NODE_W / 2, pos[n.id][1] + NODE_H
                d = (f"M {x1:.1f} {y1:.1f} L {x1 + 10:.1f} {y1:.1f} L {x1 + 10:.1f} {lane:.1f} "
                     f"L {xt:.1f} {lane:.1f} L {xt:.1f} {yt + 2:.1f}")
            else:
                dx = (x2 - x1) / 2
                d = f"M {x1:.1f} {y1:.1f} C {x1 + dx:.1f} {y1:.1f}, {x2 - dx:.1f} {y2:.1f}, {x2 - 2:.1f} {y2:.1f}"
            out.append(f'<path d="{d}" fill="none" stroke="#64748b" stroke-width="1.5"{dash} marker-end="url(#df-arrow)"/>')
    for n in nodes:
        x, y = pos[n.id]
        fill = COLORS.get(n.kind, FILTER_COLOR)
        dash = ' stroke-dasharray="5 4"' if n.dashed else ""
        lines = [(_clip(n.id), "font-weight:600")]
        if n.kind != n.id:
            lines.append((_clip(n.kind), "fill:#475569"))
        if n.detail:
            lines.append((_clip(n.detail, 24), "fill:#0f172a"))
        out.append(f'<g class="dag-node" data-kind="{escape(n.kind)}"><title>{escape(n.id)} ({escape(n.kind)})'
                   f'{escape(" — " + n.detail) if n.detail else ""}</title>')
        out.append(f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="8" fill="{fill}" '
                   f'stroke="#94a3b8"{dash}/>')
        top = y + NODE_H / 2 - (len(lines) - 1) * 8 + 4
        for i, (text, style) in enumerate(lines):
            out.append(f'<text x="{x + NODE_W / 2}" y="{top + i * 16:.1f}" text-anchor="middle" '
                       f'style="font-size:12px;{style}">{escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
