"""Python front door: pipeline objects composed with `>>` build the same PipelineSpec as YAML.

    import distillflow as df
    teacher = df.Teacher("gpt", provider="openai", model="gpt-4o-mini", api_key_env="OPENAI_API_KEY")
    pipe = df.Pipeline("qa", df.Source.jsonl("prompts.jsonl") >> df.Generate(teacher) >> df.Filter("len(response) > 20"))
    pipe.to_yaml(); pipe.run(out="runs/qa")

Edges are recorded on the objects themselves (no global "current pipeline").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from distillflow.errors import UsageError
from distillflow.spec import models as M


class Node:
    """A pipeline node. `a >> b` records `a` as b's input and returns `b`."""

    def __init__(self, spec_cls, **fields):
        self._spec_cls = spec_cls
        self._fields = {k: v for k, v in fields.items() if v is not None}
        self.parents: list[Node] = []
        self.obj: Any = None  # a Python object (distilabel step, verifier function)

    @property
    def id(self) -> str | None:
        return self._fields.get("id")

    def __rshift__(self, other):
        if isinstance(other, (list, tuple)):
            nodes = [_as_node(o) for o in other]
            for n in nodes:
                n.parents.append(self)
            return Group(nodes)
        node = _as_node(other)
        node.parents.append(self)
        return node

    def __rrshift__(self, other):
        if isinstance(other, (list, tuple)):
            for o in other:
                self.parents.append(_as_node(o))
            return self
        return NotImplemented

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._fields})"


class Group:
    """Several nodes side by side: `a >> [b, c] >> d` makes d read from both b and c."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes

    def __rshift__(self, other):
        node = _as_node(other)
        node.parents.extend(self.nodes)
        return node


def _as_node(obj) -> Node:
    if isinstance(obj, Node):
        return obj
    if _is_distilabel_step(obj):
        return Distilabel(obj)
    raise UsageError(f"cannot use {obj!r} in a pipeline: expected a distillflow step or a distilabel Step/Task")


def _is_distilabel_step(obj) -> bool:
    return any(c.__module__.startswith("distilabel.") and c.__name__ == "_Step" for c in type(obj).__mro__)


class Source(Node):
    """Prompt source. Constructors: Source.jsonl/csv/parquet/disk/hub/inline."""

    def __init__(self, kind: str, **fields):
        super().__init__(M.SourceSpec, kind=kind, **fields)

    @classmethod
    def jsonl(cls, path, **kw):
        return cls("jsonl", path=str(path), **kw)

    @classmethod
    def csv(cls, path, **kw):
        return cls("csv", path=str(path), **kw)

    @classmethod
    def parquet(cls, path, **kw):
        return cls("parquet", path=str(path), **kw)

    @classmethod
    def disk(cls, path, **kw):
        return cls("disk", path=str(path), **kw)

    @classmethod
    def hub(cls, dataset, **kw):
        return cls("hub", dataset=dataset, **kw)

    @classmethod
    def inline(cls, rows, **kw):
        return cls("inline", rows=list(rows), **kw)


class Teacher:
    """A teacher LLM; pass it to Generate/Judge (or by name)."""

    def __init__(self, name: str, provider: str, model: str, **fields):
        self.spec = M.TeacherSpec.model_validate({"name": name, "provider": provider, "model": model, **fields})

    @property
    def name(self) -> str:
        return self.spec.name


def _teacher_names(teachers, registry: dict) -> list[str]:
    out = []
    for t in teachers if isinstance(teachers, (list, tuple)) else [teachers]:
        if isinstance(t, Teacher):
            registry[t.name] = t
            out.append(t.name)
        else:
            out.append(str(t))
    return out


class _Step(Node):
    kind: str = ""
    spec_cls: type = M.StepBase

    def __init__(self, **fields):
        self.teacher_objs: dict[str, Teacher] = {}
        for key in ("teachers", "teacher"):
            if key in fields and fields[key] is not None:
                names = _teacher_names(fields[key], self.teacher_objs)
                fields[key] = names if key == "teachers" else names[0]
        super().__init__(self.spec_cls, kind=self.kind, **fields)


class Generate(_Step):
    kind, spec_cls = "generate", M.GenerateStep

    def __init__(self, teachers=None, num_generations: int = 1, id=None, **kw):
        super().__init__(teachers=teachers, num_generations=num_generations, id=id, **kw)


class Judge(_Step):
    kind, spec_cls = "judge", M.JudgeStep

    def __init__(self, teacher, rubric: str = "helpfulness", id=None, **kw):
        super().__init__(teacher=teacher, rubric=rubric, id=id, **kw)


class Verify(_Step):
    """`check` is a verifier name, `module:function`, or a Python function (Python pipelines only)."""

    kind, spec_cls = "verify", M.VerifyStep

    def __init__(self, check: str | Callable, reference: str | None = None, id=None, **params):
        fn = None
        if callable(check):
            fn, check = check, f"{check.__module__}:{check.__qualname__}"
        super().__init__(check=check, reference=reference, params=params or None, id=id)
        self.obj = fn


class Filter(_Step):
    kind, spec_cls = "filter", M.FilterStep

    def __init__(self, where: str, id=None):
        super().__init__(where=where, id=id)


class LengthFilter(_Step):
    kind, spec_cls = "length_filter", M.LengthFilterStep


class RefusalFilter(_Step):
    kind, spec_cls = "refusal_filter", M.RefusalFilterStep


class Dedup(_Step):
    kind, spec_cls = "dedup", M.DedupStep


class BestOf(_Step):
    kind, spec_cls = "best_of", M.BestOfStep

    def __init__(self, by: str, id=None, **kw):
        super().__init__(by=by, id=id, **kw)


class Reward(_Step):
    kind, spec_cls = "reward", M.RewardStep


class Distilabel(_Step):
    """A distilabel step: by class name (`Distilabel("EvolInstruct", teacher=t, params={...})`) or an object."""

    kind, spec_cls = "distilabel", M.DistilabelStep

    def __init__(self, step, teacher=None, params: dict | None = None, id=None, **kw):
        if isinstance(step, str):
            super().__init__(step=step, teacher=teacher, params=params, id=id, **kw)
            return
        obj = step
        llm = getattr(obj, "llm", None)
        if teacher is None and llm is not None and hasattr(llm, "teacher_name"):
            teacher = getattr(llm, "_teacher_obj", None) or llm.teacher_name
        super().__init__(step=type(obj).__name__, teacher=teacher, id=id or getattr(obj, "name", None), **kw)
        self.obj = obj


def _collect(last) -> list[Node]:
    if isinstance(last, Group):
        raise UsageError("a pipeline must end in one step; join the branches: `a >> [b, c] >> d`")
    order: list[Node] = []
    seen: set[int] = set()

    def visit(n: Node, stack: tuple):
        if id(n) in stack:
            raise UsageError("the pipeline has a cycle")
        if id(n) in seen:
            return
        for p in n.parents:
            visit(p, stack + (id(n),))
        seen.add(id(n))
        order.append(n)

    visit(last, ())
    return order


class Pipeline:
    """A named pipeline from the last node of a `>>` chain, plus run settings."""

    def __init__(self, name: str, last: Node, *, teachers: list[Teacher] | None = None, description: str | None = None,
                 output: dict | None = None, budget: dict | None = None, review: dict | None = None,
                 train: dict | None = None, eval: dict | None = None):
        nodes = _collect(last)
        sources = [n for n in nodes if isinstance(n, Source)]
        if len(sources) != 1:
            raise UsageError(f"a pipeline needs exactly one Source at its start (found {len(sources)})")
        steps, objects, treg = [], {}, {t.name: t for t in teachers or []}
        ids: dict[int, str] = {}
        for n in nodes:
            if isinstance(n, Source):
                continue
            treg.update(n.teacher_objs)
            fields = dict(n._fields)
            steps.append(fields)
        data = {"name": name, "source": dict(sources[0]._fields), "teachers": [t.spec.model_dump(mode="json", exclude_defaults=True) for t in treg.values()], "steps": steps}
        for key, val in (("description", description), ("output", output), ("budget", budget), ("review", review), ("train", train), ("eval", eval)):
            if val is not None:
                data[key] = val
        from distillflow.spec.loader import validate_data

        spec = validate_data(data, source=f"pipeline '{name}'", base_dir=Path.cwd())
        # ids are assigned by the spec; wire `after` from the recorded edges
        step_nodes = [n for n in nodes if not isinstance(n, Source)]
        for n, s in zip(step_nodes, spec.steps):
            ids[id(n)] = s.id
        for n, s in zip(step_nodes, spec.steps):
            parents = [ids.get(id(p), "source") for p in n.parents]
            s.after = parents or ["source"]
            if n.obj is not None:
                objects[s.id] = n.obj
        _drop_default_after(spec)
        spec._objects = objects
        self.spec = spec

    def to_yaml(self) -> str:
        python_only = [k for k, v in self.spec._objects.items() if not _yaml_safe(self.spec, k, v)]
        if python_only:
            raise UsageError(
                f"step(s) {', '.join(python_only)} hold Python objects and cannot be written to YAML; "
                "register verifiers as module:function, and use distilabel steps by class name"
            )
        return self.spec.to_yaml()

    def validate(self):
        from distillflow.engine.validate import validate

        return validate(self.spec, source=f"pipeline '{self.spec.name}'")

    def run(self, out: str | Path | None = None, progress: bool = True, fresh: bool = False):
        from distillflow.api import run

        return run(self.spec, out=out, progress=progress, fresh=fresh)


def _yaml_safe(spec, step_id, obj) -> bool:
    step = next(s for s in spec.steps if s.id == step_id)
    if step.kind == "verify":
        mod, _, name = step.check.partition(":")
        return mod not in ("__main__",) and "<locals>" not in name and "<lambda>" not in name
    return False


def _drop_default_after(spec) -> None:
    """Linear chains need no `after:` in YAML; keep it only where it differs from the default."""
    prev = "source"
    for s in spec.steps:
        if s.after == [prev]:
            s.after = None
        prev = s.id
