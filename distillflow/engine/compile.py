"""Compile a spec once into an immutable Plan: graph, column checks (distilabel classes included),
local model paths resolved against the YAML's folder.

    plan = compile_spec(doc.spec, base_dir=doc.base_dir, lines=doc.lines, objects={...})
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from distillflow.engine.validate import describe_step_factory, source_columns, step_problems
from distillflow.errors import Problem, SpecError
from distillflow.graph import build_graph
from distillflow.plan import Plan


def compile_spec(spec, base_dir: Path | None = None, lines: dict | None = None, objects: dict | None = None,
                 source: str = "pipeline") -> Plan:
    """Validate the graph and column flow (every problem at once) and freeze the result."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    objects = dict(objects or {})
    problems: list[Problem] = []
    inner = describe_step_factory(objects)

    index = {step.id: i for i, step in enumerate(spec.steps)}

    def describe(step):
        try:
            return inner(step)
        except SpecError as e:  # (paths name the step by id: steps[<id>].params.x) with the YAML line
            problems.extend(_at_line(p, step.id, index.get(step.id), lines) for p in e.problems)
            return set(), set()

    checked = step_problems(spec, objects, lines)  # each kind's own static checks (judge rubric, verifier)
    try:
        graph = build_graph(spec, source=source, describe=describe, extra_source_columns=source_columns(spec, base),
                            lines=lines)
    except SpecError as e:
        raise SpecError(problems + sorted(e.problems + checked, key=lambda p: p.line or 0), source) from None
    if problems or checked:
        raise SpecError(problems + checked, source)
    from distillflow.engine.providers import resolve_local_models

    resolved = resolve_local_models(spec, base)
    # the graph's nodes point at the resolved spec's steps (same objects: steps are not copied)
    return Plan(resolved, graph, base, MappingProxyType(objects), MappingProxyType(dict(lines or {})), source)


def _at_line(problem: Problem, step_id: str, i: int | None, lines: dict | None) -> Problem:
    """A step's problem named by its id (``steps[<id>].params.n_turns``) with the YAML line of the
    deepest part of that path the file has (the step's own line at least)."""
    from distillflow.spec.loader import _line_for, parse_path

    prefix = f"steps[{step_id}]"
    if problem.line is not None or i is None or not lines or not problem.path.startswith(prefix):
        return problem
    rest = parse_path(problem.path[len(prefix):])
    return Problem(problem.path, problem.message, _line_for(("steps", i, *rest), lines), problem.hint)

