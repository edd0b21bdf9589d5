"""Static checks that need engine knowledge: distilabel step columns and local source columns.

Used by :func:`distillflow.engine.compile.compile_spec`; no network.
"""

from __future__ import annotations

from pathlib import Path

from distillflow.graph import SOURCE_COLUMNS


def source_columns(spec, base_dir: Path | None) -> set[str]:
    """Columns of a local prompt file (peeked), renamed by the mapping."""
    from distillflow.engine.source import peek_columns

    cols = peek_columns(spec.source, base_dir) or set()
    renamed = set(spec.source.columns.values())
    return {c for c in cols if c not in renamed} | (SOURCE_COLUMNS if cols else set())


def describe_step_factory(objects: dict):
    """``describe(step)`` for steps whose columns are known only from their class (distilabel).

    Instantiates the class once and keeps the object in ``objects`` so the run uses the same one.
    """

    def describe(step):
        from distillflow.steps.distilabel_step import describe_object, instantiate

        obj = objects.get(step.id)
        if obj is None:
            obj = objects[step.id] = instantiate(step, None, f"steps[{step.id}]")
        return describe_object(obj)

    return describe
