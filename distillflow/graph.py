"""A validated DAG from a PipelineSpec: ids, edges, cycles, teachers and column flow. No I/O.

    graph = build_graph(spec)
    graph.order            # ["source", "generate", "judge", "filter"]
    graph.mermaid()        # "flowchart LR ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from distillflow.errors import Problem, SpecError, did_you_mean
from distillflow.steps import registry

SOURCE = "source"
SOURCE_COLUMNS = {"prompt_id", "prompt", "system", "messages", "source", "provenance"}
@dataclass
class Node:
    id: str
    step: object | None  # None for the source
    parents: list[str]
    index: int | None = None  # position in spec.steps
    columns_in: set[str] = field(default_factory=set)
    columns_out: set[str] = field(default_factory=set)
    open_columns: bool = False  # an upstream step's outputs are unknown statically


@dataclass
class Graph:
    nodes: dict[str, Node]
    order: list[str]
    sink: str

    def children(self, node_id: str) -> list[str]:
        return [n for n in self.order if node_id in self.nodes[n].parents]

    def downstream(self, node_id: str) -> set[str]:
        out, todo = set(), [node_id]
        while todo:
            for c in self.children(todo.pop()):
                if c not in out:
                    out.add(c)
                    todo.append(c)
        return out

    def mermaid(self) -> str:
        lines = ["flowchart LR"]
        for nid in self.order:
            node = self.nodes[nid]
            label = nid if node.step is None else f"{nid}<br/>{node.step.kind}"
            shape = f'{nid}[("{label}")]' if node.step is None else f'{nid}["{label}"]'
            lines.append(f"    {shape}")
        for nid in self.order:
            for p in self.nodes[nid].parents:
                lines.append(f"    {p} --> {nid}")
        lines.append(f'    {self.sink} --> curated[("curated")]')
        return "\n".join(lines)


def step_columns(step, spec=None) -> tuple[set[str], set[str]] | None:
    """(columns the step reads, columns it adds) from its kind; None when only known at compile time."""
    return registry.get(step.kind).columns(step)


def _source_columns(spec) -> set[str]:
    src = spec.source
    cols = set(SOURCE_COLUMNS) | set(src.columns)
    renamed = set(src.columns.values())
    if src.rows:
        for r in src.rows:
            cols |= {c for c in r if c not in renamed}
    return cols


def build_graph(
    spec,
    source: str = "pipeline",
    describe: Callable[[object], tuple[set[str], set[str]] | None] | None = None,
    extra_source_columns: set[str] | None = None,
    lines: dict | None = None,
) -> Graph:
    """Validate the DAG and column flow; raise SpecError with *all* problems.

    ``describe(step)`` may return (inputs, outputs) for steps the graph cannot know statically
    (distilabel steps: the engine inspects the class). ``extra_source_columns`` lets the caller
    add columns found by peeking at a local prompt file; ``lines`` maps YAML paths to lines.
    """
    lines = lines or {}
    problems: list[Problem] = []

    def prob(loc: tuple, msg: str, hint: str | None = None):
        from distillflow.spec.loader import _line_for, format_path

        problems.append(Problem(format_path(loc), msg, _line_for(loc, lines), hint))

    teacher_names = [t.name for t in spec.teachers]
    seen_t = set()
    for i, t in enumerate(spec.teachers):
        if t.name in seen_t:
            prob(("teachers", i, "name"), f"duplicate teacher name '{t.name}'")
        seen_t.add(t.name)

    nodes: dict[str, Node] = {SOURCE: Node(SOURCE, None, [], None)}
    ids = [s.id for s in spec.steps]
    for i, step in enumerate(spec.steps):
        if step.id == SOURCE or step.id in nodes:
            prob(("steps", i, "id"), f"duplicate step id '{step.id}'", "give each step a unique id")
            continue
        parents = list(step.after) if step.after is not None else [SOURCE if i == 0 else ids[i - 1]]
        for j, p in enumerate(parents):
            if p != SOURCE and p not in ids:
                prob(("steps", i, "after", j), f"unknown step '{p}'", did_you_mean(p, ids + [SOURCE]))
        nodes[step.id] = Node(step.id, step, [p for p in parents if p == SOURCE or p in ids], i)

        # teachers referenced by the step (by convention, a `teachers` list or a `teacher` field)
        refs = [(("steps", i, "teachers", j), n) for j, n in enumerate(getattr(step, "teachers", None) or [])]
        if isinstance(getattr(step, "teacher", None), str):
            refs.append((("steps", i, "teacher"), step.teacher))
        for loc, name in refs:
            if name not in teacher_names:
                prob(loc, f"unknown teacher '{name}'", did_you_mean(name, teacher_names) or f"teachers: {', '.join(teacher_names)}")

    order = _toposort(nodes, problems, lines)  # on a cycle: the acyclic part, so other checks still run

    # column flow
    for nid in order:
        node = nodes[nid]
        if any(p not in order for p in node.parents):
            continue
        if node.step is None:
            node.columns_out = _source_columns(spec) | (extra_source_columns or set())
            continue
        available: set[str] = set()
        for p in node.parents:
            available |= nodes[p].columns_out
        step = node.step
        kind = registry.get(step.kind)
        try:
            cols = kind.columns(step)
        except ValueError as e:  # e.g. expression syntax
            prob(("steps", node.index) + ((kind.field,) if kind.field else ()), str(e))
            cols = (set(), set())
        node.open_columns = any(nodes[p].open_columns for p in node.parents)
        if cols is None:  # only known once the class is imported: the engine describes it
            described = describe(step) if describe is not None else None
            if described is not None:
                cols = described
            else:
                node.open_columns = True
                cols = (set(), set(getattr(step, "output_mappings", {}).values()))
        needs, adds = cols
        node.columns_in = available
        key = kind.field
        for col in sorted(needs - available) if not node.open_columns else []:
            loc = ("steps", node.index) + ((key,) if key else ())
            hint = did_you_mean(col, available)
            if col == "response" and "response" not in available:
                prob(loc, f"step '{nid}' reads column 'response', but no step before it produces one", "put a `kind: generate` step before it")
            else:
                prob(loc, f"unknown column '{col}'", hint or f"columns here: {', '.join(sorted(available))}")
        node.columns_out = available | adds

    leaves = [n for n in order if n != SOURCE and not any(n in nodes[m].parents for m in nodes)]
    unreachable = [n for n in order if n == SOURCE and not any(SOURCE in nodes[m].parents for m in nodes)]
    if unreachable:
        prob(("steps",), "no step reads from the source")
    if len(leaves) > 1:
        prob(
            ("steps",),
            f"the pipeline has {len(leaves)} final steps ({', '.join(leaves)})",
            f"join them: give the last step `after: [{', '.join(leaves)}]`",
        )
    if not any(nodes[n].step is not None and registry.get(nodes[n].step.kind).generates for n in order):
        prob(("steps",), "no step generates answers", "add a step with `kind: generate`")
    problems.sort(key=lambda p: p.line or 0)
    if problems:
        raise SpecError(problems, source)
    return Graph(nodes, order, leaves[0] if leaves else order[-1])


def _toposort(nodes: dict[str, Node], problems: list[Problem], lines) -> list[str]:
    from distillflow.spec.loader import _line_for

    indeg = {n: 0 for n in nodes}
    for n in nodes.values():
        indeg[n.id] = len(set(n.parents))
    ready = [n for n in nodes if indeg[n] == 0]
    order: list[str] = []
    while ready:
        cur = ready.pop(0)
        order.append(cur)
        for n in nodes.values():
            if cur in n.parents:
                indeg[n.id] -= 1
                if indeg[n.id] == 0:
                    ready.append(n.id)
    if len(order) != len(nodes):
        stuck = [n for n in nodes if n not in order]
        cycle = _find_cycle(nodes, stuck)
        first = nodes[cycle[0]]
        problems.append(
            Problem(
                f"steps[{first.index}].after",
                "cycle: " + " -> ".join(cycle + [cycle[0]]),
                _line_for(("steps", first.index, "after"), lines),
                "a step cannot (indirectly) read its own output",
            )
        )
    return order


def _find_cycle(nodes: dict[str, Node], stuck: list[str]) -> list[str]:
    start = stuck[0]
    path, cur = [], start
    while cur not in path:
        path.append(cur)
        cur = next(p for p in nodes[cur].parents if p in stuck)
    return path[path.index(cur) :][::-1]
