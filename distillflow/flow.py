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
from distillflow.spec import models as M  # Source and Teacher specs


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
    """A step node of a registered kind; positional arguments fill the kind's fields in order."""

    kind: str = ""

    def __init__(self, *args, **fields):
        from distillflow.steps import registry

        spec_cls = registry.get(self.kind).spec
        names = [n for n in spec_cls.model_fields if n not in ("kind", "id", "after")]
        if len(args) > len(names):
            raise UsageError(f"{type(self).__name__} takes at most {len(names)} positional arguments ({', '.join(names)})")
        for name, value in zip(names, args):
            if name in fields:
                raise UsageError(f"{type(self).__name__}: '{name}' given twice")
            fields[name] = value
        self.teacher_objs: dict[str, Teacher] = {}
        for key in ("teachers", "teacher"):
            if key in fields and fields[key] is not None:
                got = _teacher_names(fields[key], self.teacher_objs)
                fields[key] = got if key == "teachers" else got[0]
        super().__init__(spec_cls, kind=self.kind, **fields)


class Verify(_Step):
    """`check` is a verifier name, `module:function`, or a Python function (Python pipelines only)."""

    kind = "verify"

    def __init__(self, check: str | Callable, reference: str | None = None, id=None, **params):
        fn = None
        if callable(check):
            fn, check = check, f"{check.__module__}:{check.__qualname__}"
        super().__init__(check=check, reference=reference, params=params or None, id=id)
        self.obj = fn


class Distilabel(_Step):
    """A distilabel step: by class name (`Distilabel("EvolInstruct", teacher=t, params={...})`) or an object."""

    kind = "distilabel"

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


_CUSTOM = {"verify": Verify, "distilabel": Distilabel}


def builders() -> dict[str, type]:
    """The Python builder class of every registered step kind, by builder name (Generate, Filter, ...)."""
    from distillflow.steps import registry

    out = {}
    for kind in registry.kinds().values():
        if not kind.builder:
            continue
        cls = _CUSTOM.get(kind.name)
        if cls is None:
            cls = _BUILT.get((kind.name, kind.spec))
            if cls is None:
                cls = type(kind.builder, (_Step,), {"kind": kind.name, "__doc__": kind.spec.__doc__,
                                                    "__module__": __name__})
                _BUILT[(kind.name, kind.spec)] = cls
        out[kind.builder] = cls
    return out


_BUILT: dict[tuple, type] = {}


def __getattr__(name: str):
    cls = builders().get(name)
    if cls is None:
        raise AttributeError(f"module 'distillflow.flow' has no attribute {name!r}")
    return cls


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
                 train: dict | None = None, eval: dict | None = None, execution: dict | None = None):
        from distillflow.spec.loader import validate_data

        nodes = _collect(last)
        sources = [n for n in nodes if isinstance(n, Source)]
        if len(sources) != 1:
            raise UsageError(f"a pipeline needs exactly one Source at its start (found {len(sources)})")
        step_nodes = [n for n in nodes if not isinstance(n, Source)]
        treg = {t.name: t for t in teachers or []}
        for n in step_nodes:
            treg.update(n.teacher_objs)
        data = {"name": name, "source": dict(sources[0]._fields),
                "teachers": [t.spec.model_dump(mode="json", exclude_defaults=True) for t in treg.values()],
                "steps": [dict(n._fields) for n in step_nodes]}
        for key, val in (("description", description), ("output", output), ("budget", budget), ("review", review),
                         ("train", train), ("eval", eval), ("execution", execution)):
            if val is not None:
                data[key] = val
        origin = f"pipeline '{name}'"
        # Ids are assigned by the schema (kind, numbered); the edges recorded on the nodes become `after`,
        # written only where they differ from the default (the previous step), before the one validation.
        ids = [s.id for s in validate_data(data, source=origin).steps]
        index = {id(n): i for i, n in enumerate(step_nodes)}
        prev = "source"
        for i, n in enumerate(step_nodes):
            parents = [ids[index[id(p)]] if id(p) in index else "source" for p in n.parents] or ["source"]
            data["steps"][i] = {**data["steps"][i], "id": ids[i]}
            if parents != [prev]:
                data["steps"][i]["after"] = parents
            prev = ids[i]
        self.spec = validate_data(data, source=origin, base_dir=Path.cwd())
        self.objects = {ids[i]: n.obj for i, n in enumerate(step_nodes) if n.obj is not None}

    def compile(self):
        """The immutable Plan (graph checked, distilabel classes described) for this pipeline."""
        from distillflow.engine.compile import compile_spec

        return compile_spec(self.spec, base_dir=Path.cwd(), objects=self.objects, source=f"pipeline '{self.spec.name}'")

    def to_yaml(self) -> str:
        python_only = [k for k, v in self.objects.items() if not _yaml_safe(self.spec, k, v)]
        if python_only:
            raise UsageError(
                f"step(s) {', '.join(python_only)} hold Python objects and cannot be written to YAML; "
                "register verifiers as module:function, and use distilabel steps by class name"
            )
        return self.spec.to_yaml()

    def validate(self):
        return self.compile().graph

    def run(self, out: str | Path | None = None, progress: bool = True, fresh: bool = False,
            backend: str | None = None, address: str | None = None):
        from distillflow.api import run

        return run(self, out=out, progress=progress, fresh=fresh, backend=backend, address=address)


def _yaml_safe(spec, step_id, obj) -> bool:
    step = next(s for s in spec.steps if s.id == step_id)
    if step.kind == "verify":
        mod, _, name = step.check.partition(":")
        return mod not in ("__main__",) and "<locals>" not in name and "<lambda>" not in name
    return False
