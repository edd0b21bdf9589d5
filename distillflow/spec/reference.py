"""Generate the pipeline schema reference (docs/reference.md) from the pydantic models.

    python -m distillflow.spec.reference > docs/reference.md
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from distillflow.spec import models as M


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
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    return getattr(ann, "__name__", str(ann))


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


def _section(model: type[BaseModel], yaml_key: str) -> list[str]:
    doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    lines = [f"### {model.__name__}", "", f"`{yaml_key}` — {doc}" if doc else f"`{yaml_key}`", "", "| key | type | default | description |", "| --- | --- | --- | --- |"]
    for name, f in model.model_fields.items():
        desc = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_type_name(f.annotation)} | {_default(f)} | {desc} |")
    return lines + [""]


def render() -> str:
    from distillflow.spec.review import ReviewSpec
    from distillflow.spec.train import EvalSpec, TrainSpec

    out = [
        "# Pipeline schema reference",
        "",
        "Generated from `distillflow/spec/` by `python -m distillflow.spec.reference` — do not edit by hand.",
        "Unknown keys are errors everywhere (with a did-you-mean).",
        "",
    ]
    sections = [
        (M.PipelineSpec, "top level"),
        (M.ExecutionSpec, "execution"),
        (M.SourceSpec, "source"),
        (M.HeldoutSpec, "source.heldout"),
        (M.TeacherSpec, "teachers[]"),
        (M.GenerationParams, "teachers[].params, steps[].params (generate)"),
        (M.OutageSpec, "teachers[].outage"),
        (M.PriceSpec, "teachers[].price"),
        (M.BatchSpec, "teachers[].batch"),
        (M.TermsSpec, "teachers[].terms"),
    ]
    for model, key in sections:
        out += _section(model, key)
    out += ["## Steps", "", "Every step has `id` (default: its kind, numbered if repeated) and `after` (default: the previous step).", ""]
    from distillflow.steps import registry

    for name, kind in sorted(registry.kinds().items()):
        if kind.spec.__module__.startswith("distillflow."):  # built-ins (plugins document themselves)
            out += _section(kind.spec, f"steps[] with kind: {name}")
    for model, key in ((M.OutputSpec, "output"), (M.HubPushSpec, "output.push_to_hub"), (M.BudgetSpec, "budget"),
                       (ReviewSpec, "review"), (TrainSpec, "train"), (EvalSpec, "eval")):
        out += _section(model, key)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
