"""Static checks that need engine knowledge: distilabel step columns, local source columns and each
step kind's own checks (``StepKind.check``); and the steps' "can it run here" checks
(``StepKind.preflight``: `distillflow preflight` and the start of a run).

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


def step_problems(spec, objects: dict | None = None, lines: dict | None = None) -> list:
    """Problems from each step kind's static ``check``, located by YAML path and line."""
    from distillflow.errors import Problem
    from distillflow.spec.loader import _line_for, format_path
    from distillflow.steps import registry

    objects, lines = objects or {}, lines or {}
    problems = []
    for i, step in enumerate(spec.steps):
        kind = registry.get(step.kind)
        if kind.check is None:
            continue
        for sub, message in kind.check(step, objects.get(step.id)) or ():
            loc = ("steps", i, *sub)
            problems.append(Problem(format_path(loc), message, _line_for(loc, lines)))
    return problems


def preflight_steps(plan) -> list[tuple[str, str]]:
    """Run each step kind's ``preflight`` (e.g. import a ``module:function`` verifier), all of them.

    Returns (step id, note) for the steps that checked something. Raises SpecError (exit 2) when a
    step's settings do not fit what it loaded, else ConfigurationError (exit 1) naming every step
    that cannot run here; nothing has been sent to a teacher yet.
    """
    from distillflow.errors import ConfigurationError, Problem, SpecError, UsageError
    from distillflow.spec.loader import _line_for, format_path
    from distillflow.steps import registry

    notes, spec_problems, config_problems = [], [], []
    for i, step in enumerate(plan.spec.steps):
        kind = registry.get(step.kind)
        if kind.preflight is None:
            continue
        loc = ("steps", i)
        try:
            note = kind.preflight(step, plan.objects.get(step.id))
        except UsageError as e:
            spec_problems.append(Problem(format_path(loc), str(e), _line_for(loc, plan.lines)))
        except ConfigurationError as e:
            line = _line_for(loc, plan.lines)
            where = format_path(loc) + (f" (line {line})" if line is not None else "")
            config_problems.append(f"{where}: step '{step.id}': {e}")
        else:
            if note:
                notes.append((step.id, note))
    if spec_problems:
        raise SpecError(spec_problems, plan.source)
    if config_problems:
        raise ConfigurationError("\n".join(config_problems))
    return notes
