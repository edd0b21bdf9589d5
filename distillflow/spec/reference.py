"""Generate the pipeline schema reference (docs/reference.md) from the pydantic models.

    python -m distillflow.spec.reference > docs/reference.md
"""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from distillflow.spec import models as M


def _anchor(model: type[BaseModel]) -> str:
    from distillflow.steps.base import StepBase

    # `steps` holds any step kind: link the section that lists them all.
    return "steps" if model is StepBase else model.__name__.lower()


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    args = typing.get_args(ann)
    if origin is typing.Literal:
        return " \\| ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        return " \\| ".join(_type_name(a) for a in args if a is not type(None)) + (" \\| null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list[{', '.join(_type_name(a) for a in args if a is not Ellipsis)}]"
    if origin is dict:
        return f"map[{_type_name(args[0])}, {_type_name(args[1])}]" if args else "map"
    if origin is typing.Annotated:
        return _type_name(args[0])
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[{ann.__name__}](#{_anchor(ann)})"
    return getattr(ann, "__name__", str(ann))


def _nested(ann) -> list[tuple[type[BaseModel], bool]]:
    """The models a field's type links to, each with whether it sits in a list (``key[]``)."""
    origin = typing.get_origin(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [(ann, False)]
    if origin is typing.Literal:
        return []
    found = []
    for a in typing.get_args(ann):
        found += [(m, m_list or origin in (list, tuple)) for m, m_list in _nested(a)]
    return found


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        return f"`{field.default!r}`" if field.default is not None else ""
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return ""
        return "(defaults)" if isinstance(value, BaseModel) else f"`{value!r}`"
    return "**required**"


def _rst_to_md(text: str) -> str:
    """``code`` (docstrings) -> `code` (markdown); code fences (```) are left alone."""
    return re.sub(r"(?<!`)``(?!`)", "`", text)


# Rows whose description points at a section the generator adds (see _verify_checks).
_SEE = {("VerifyStep", "params"): ("Keyword arguments of the check", "see [verify checks](#verify-checks)")}


def _section(model: type[BaseModel], yaml_key: str) -> list[str]:
    doc = _rst_to_md(" ".join((model.__doc__ or "").strip().split("\n\n")[0].split()))
    lines = [f"### {model.__name__}", "", f"`{yaml_key}` — {doc}" if doc else f"`{yaml_key}`", "", "| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, f in model.model_fields.items():
        desc = (f.description or "").replace("|", "\\|")
        if (model.__name__, name) in _SEE:
            fallback, see = _SEE[model.__name__, name]
            desc = f"{(desc or fallback).rstrip('.')}: {see}."
        lines.append(f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {desc} |")
    return lines + [""]


def _verify_checks() -> list[str]:
    """The built-in verify checks and their `params`, read from the verifiers' signatures (what
    `check_params` validates against)."""
    import inspect

    from distillflow.steps.verify import VERIFIERS

    lines = [
        "#### Verify checks",
        "",
        "`steps[].params` (kind: verify) — keyword arguments of the `check`, checked against its signature "
        "before the step's first row (an unknown name is an error with a did-you-mean). The step's `reference:` sets `reference_column`. "
        "A `module:function` check takes the keyword arguments of its function after `(response, row)`.",
        "",
        "| check | params | what it does |",
        "| --- | --- | --- |",
    ]
    for name, fn in VERIFIERS.items():
        if not fn.__module__.startswith("distillflow."):  # user-registered ones document themselves
            continue
        params = []
        for p in list(inspect.signature(fn).parameters.values())[2:]:
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            kind = f"{p.annotation}: " if p.annotation is not p.empty else ""
            default = "**required**" if p.default is p.empty else f"`{p.default!r}`"
            params.append(f"`{p.name}` ({kind}{default})")
        doc = inspect.getdoc(fn) or ""
        paras = [" ".join(par.split()) for par in doc.split("\n\n") if par.strip() and not par.lstrip().startswith(">>>")]
        what = _rst_to_md(" ".join(paras)).replace("|", "\\|")
        lines.append(f"| `{name}` | {', '.join(params).replace('|', chr(92) + '|') or '—'} | {what} |")
    return lines + [""]


def render() -> str:
    from distillflow.spec.review import ReviewSpec
    from distillflow.spec.train import EvalSpec, TrainSpec
    from distillflow.steps import registry

    out = [
        "# Pipeline schema reference",
        "",
        "Generated from `distillflow/spec/` by `python -m distillflow.spec.reference` — do not edit by hand.",
        "Unknown keys are errors everywhere (with a did-you-mean).",
        "",
    ]
    head = [
        (M.PipelineSpec, "top level", ""),
        (M.ExecutionSpec, "execution", "execution"),
        (M.SourceSpec, "source", "source"),
        (M.HeldoutSpec, "source.heldout", "source.heldout"),
        (M.TeacherSpec, "teachers[]", "teachers[]"),
        (M.GenerationParams, "teachers[].params, steps[].params (generate)", "teachers[].params"),
        (M.OutageSpec, "teachers[].outage", "teachers[].outage"),
        (M.PriceSpec, "teachers[].price", "teachers[].price"),
        (M.BatchSpec, "teachers[].batch", "teachers[].batch"),
        (M.TermsSpec, "teachers[].terms", "teachers[].terms"),
    ]
    steps = [(kind.spec, f"steps[] with kind: {name}", "steps[]", f" (kind: {name})")
             for name, kind in sorted(registry.kinds().items())
             if kind.spec.__module__.startswith("distillflow.")]  # built-ins (plugins document themselves)
    tail = [(M.OutputSpec, "output", "output"), (M.HubPushSpec, "output.push_to_hub", "output.push_to_hub"),
            (M.BudgetSpec, "budget", "budget"), (ReviewSpec, "review", "review"), (TrainSpec, "train", "train"),
            (EvalSpec, "eval", "eval")]
    # Models with a section of their own above; any other model a field links to gets one right
    # after the first section that links it (walked depth-first), so every link has its target.
    done = {m for m, *_ in head + steps + tail}

    def emit(model, key, path, suffix=""):
        lines = _section(model, key)
        if model.__name__ == "VerifyStep":
            lines += _verify_checks()
        for name, f in model.model_fields.items():
            for sub, in_list in _nested(f.annotation):
                if sub not in done and _anchor(sub) != "steps":
                    done.add(sub)
                    sub_path = f"{path}.{name}{'[]' if in_list else ''}".lstrip(".")
                    lines += emit(sub, sub_path + suffix, sub_path, suffix)
        return lines

    for model, key, path in head:
        out += emit(model, key, path)
    out += ["## Steps", "", "Every step has `id` (default: its kind, numbered if repeated) and `after` (default: the previous step).", ""]
    for model, key, path, suffix in steps:
        out += emit(model, key, path, suffix)
    for model, key, path in tail:
        out += emit(model, key, path)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
