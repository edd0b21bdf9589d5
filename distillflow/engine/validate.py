"""Static validation with engine knowledge: distilabel step columns and local source columns.

    graph = validate(spec)        # SpecError with every problem, no network
"""

from __future__ import annotations

from pathlib import Path

from distillflow.errors import Problem, SpecError
from distillflow.graph import SOURCE_COLUMNS, build_graph


def source_columns(spec, base_dir: Path | None) -> set[str]:
    """Columns of a local prompt file (peeked), renamed by the mapping."""
    from distillflow.engine.source import peek_columns

    cols = peek_columns(spec.source, base_dir) or set()
    renamed = set(spec.source.columns.values())
    return {c for c in cols if c not in renamed} | (SOURCE_COLUMNS if cols else set())


def describe_step_factory(objects: dict | None = None):
    objects = objects or {}

    def describe(step):
        from distillflow.engine.distilabel_steps import describe_object, instantiate

        obj = objects.get(step.id)
        if obj is None:
            obj = instantiate(step, None, f"steps[{step.id}]")
        return describe_object(obj)

    return describe


def validate(spec, source: str = "pipeline", objects: dict | None = None):
    """Graph + column flow, including distilabel steps (imports distilabel only when used)."""
    base = Path(getattr(spec, "_base_dir", None) or Path.cwd())
    has_distilabel = any(s.kind == "distilabel" for s in spec.steps)
    problems: list[Problem] = []
    describe = None
    if has_distilabel:
        inner = describe_step_factory({**(getattr(spec, "_objects", None) or {}), **(objects or {})})

        def describe(step):
            try:
                return inner(step)
            except SpecError as e:
                problems.extend(e.problems)
                return set(), set()

    try:
        graph = build_graph(spec, source=source, describe=describe, extra_source_columns=source_columns(spec, base))
    except SpecError as e:
        raise SpecError(problems + e.problems, source) from None
    if problems:
        raise SpecError(problems, source)
    return graph
