"""distilabel stays open: any public distilabel Step/Task by name (YAML) or as an object (Python).

Tasks get a `DistillflowLLM` — a distilabel LLM whose requests go through our cache, budget and
sliding-window client — so `EvolInstruct`, `UltraFeedback`, `TextGeneration`... resume and are billed like
our own steps.

    - kind: distilabel
      step: EvolInstruct
      teacher: gpt
      params: {num_evolutions: 1}
"""

from __future__ import annotations

import copy
import functools
import inspect

from typing import Any, Literal

from pydantic import Field

from distillflow.errors import Problem, SpecError, TeacherError, did_you_mean, error_text
from distillflow.steps.base import StepBase, StepKind, effective_params, prompt_id
from distillflow.steps.generate import record_id


class DistilabelStep(StepBase):
    """Any public distilabel step or task by class name, e.g. EvolInstruct."""

    kind: Literal["distilabel"]
    step: str = Field(description="distilabel class name, e.g. 'EvolInstruct', 'UltraFeedback'.")
    teacher: str | None = Field(None, description="Teacher that serves as the task's LLM (tasks only).")
    params: dict[str, Any] = Field(default_factory=dict, description="Constructor arguments, validated by the class.")
    input_mappings: dict[str, str] = Field(default_factory=dict, description="{task_input: our_column}")
    output_mappings: dict[str, str] = Field(default_factory=dict, description="{task_output: our_column}")


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, type]:
    """Public distilabel step and task classes by name (no module paths in YAML)."""
    with _quiet():
        import distilabel.steps as S
        import distilabel.steps.tasks as T
        from distilabel.steps.base import _Step

    out: dict[str, type] = {}
    for mod in (S, T):
        for name in getattr(mod, "__all__", dir(mod)):
            obj = getattr(mod, name, None)
            if inspect.isclass(obj) and issubclass(obj, _Step) and not inspect.isabstract(obj) and not name.startswith("_"):
                out[name] = obj
    return out


def distilabel_class(name: str, loc: str = "step"):
    reg = registry()
    if name not in reg:
        raise SpecError([Problem(loc, f"unknown distilabel step '{name}'", None, did_you_mean(name, reg) or "see distilabel's step gallery")])
    return reg[name]


def _llm_class():
    from typing import Any

    from distilabel.models.llms.base import LLM
    from pydantic import PrivateAttr

    class DistillflowLLM(LLM):
        """A distilabel LLM backed by a distillflow teacher (cache, budget, sliding window)."""

        teacher_name: str
        step_id: str = "distilabel"
        _ctx: Any = PrivateAttr(default=None)
        _teacher_obj: Any = PrivateAttr(default=None)

        @property
        def model_name(self) -> str:
            return self.teacher_name

        def load(self) -> None:
            super().load()

        def generate(self, inputs, num_generations: int = 1, **kwargs):
            ctx = self._ctx  # type: ignore[attr-defined]
            if ctx is None:
                raise TeacherError(f"distillflow.llm('{self.teacher_name}') answers only inside a distillflow run")
            teacher = ctx.teacher(self.teacher_name)
            params = effective_params(teacher)
            params.update({k: v for k, v in kwargs.items() if k in ("temperature", "max_tokens", "top_p") and v is not None})
            reqs = [
                ctx.request(teacher, list(conv), params, g, {"i": i, "g": g})
                for i, conv in enumerate(inputs)
                for g in range(num_generations)
            ]
            results, failures = ctx.ask_blocking(self.step_id, teacher, reqs)
            outs = [{"generations": [], "statistics": {"input_tokens": [], "output_tokens": []}} for _ in inputs]
            for r in reqs:
                res = results.get(r.key)
                o = outs[r.meta["i"]]
                o["generations"].append(res.text if res else None)
                o["statistics"]["input_tokens"].append(res.input_tokens if res else 0)
                o["statistics"]["output_tokens"].append(res.output_tokens if res else 0)
            return outs

    return DistillflowLLM


@functools.lru_cache(maxsize=1)
def llm_class():
    return _llm_class()


def instantiate(step, ctx=None, path: str = "step"):
    """Build the distilabel object for a `kind: distilabel` spec; errors name the bad parameter."""
    from distilabel.steps.tasks.base import _Task
    from pydantic import ValidationError

    cls = distilabel_class(step.step, f"{path}.step")
    kwargs = dict(step.params)
    if step.input_mappings:
        kwargs["input_mappings"] = dict(step.input_mappings)
    if step.output_mappings:
        kwargs["output_mappings"] = dict(step.output_mappings)
    if issubclass(cls, _Task):
        if not step.teacher:
            raise SpecError([Problem(f"{path}.teacher", f"distilabel task '{step.step}' needs a teacher to act as its LLM", None)])
        llm = llm_class()(teacher_name=step.teacher, step_id=step.id)
        llm._ctx = ctx
        kwargs["llm"] = llm
    try:
        with _quiet():
            return cls(**kwargs)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            fields = list(getattr(cls, "model_fields", {}))
            hint = did_you_mean(key, fields) if err["type"] == "extra_forbidden" else None
            # one line: distilabel's validators add "Value error, " and a paragraph with a gallery URL
            msg = " ".join(error_text(err).split())
            problems.append(Problem(f"{path}.params" + (f".{key}" if key else ""), msg, None, hint))
        raise SpecError(problems) from None
    except TypeError as e:
        raise SpecError([Problem(f"{path}.params", str(e), None)]) from None


class _quiet:
    """Silence distilabel's 'created outside a Pipeline context' notices: we run steps directly."""

    def __enter__(self):
        import logging
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")
        self._loggers = [logging.getLogger(n) for n in ("distilabel", "distilabel.step")]
        self._levels = [lg.level for lg in self._loggers]
        for lg in self._loggers:
            lg.setLevel(logging.ERROR)
        return self

    def __exit__(self, *exc):
        for lg, lv in zip(self._loggers, self._levels):
            lg.setLevel(lv)
        self._w.__exit__(*exc)


def _cols(spec_cols) -> tuple[set[str], set[str]]:
    """distilabel StepColumns (list or {name: required}) -> (required, all)."""
    if isinstance(spec_cols, dict):
        return {k for k, v in spec_cols.items() if v}, set(spec_cols)
    return set(spec_cols or []), set(spec_cols or [])


def describe_object(obj) -> tuple[set[str], set[str]]:
    req, _ = _cols(obj.inputs)
    _, outs = _cols(obj.outputs)
    in_map = getattr(obj, "input_mappings", {}) or {}
    out_map = getattr(obj, "output_mappings", {}) or {}
    needs = {in_map.get(c, c) for c in req}
    adds = {out_map.get(c, c) for c in outs} | {"distilabel_metadata"}
    return needs, adds


def _prepare(ctx, step):
    obj = ctx.objects.get(step.id)
    if obj is None:
        obj = instantiate(step, ctx, f"steps[{step.id}]")
    else:
        llm = getattr(obj, "llm", None)
        if llm is not None and hasattr(llm, "teacher_name"):
            llm._ctx = ctx
    with _quiet():
        obj.load()
    return obj


def _run(ctx, step, rows: list[dict], obj) -> tuple[list[dict], list[dict]]:
    batch = [copy.deepcopy(r) for r in rows]
    out: list[dict] = []
    for chunk in obj.process_applying_mappings(batch):
        out.extend(chunk)
    for r in out:
        users = [m for m in r.get("messages") or [] if m.get("role") == "user"]
        if "prompt" in r and (not users or users[-1]["content"] != r["prompt"]):
            # the step rewrote the prompt (EvolInstruct -> prompt): the conversation follows it
            sys_msgs = [m for m in r.get("messages") or [] if m.get("role") == "system"]
            r["messages"] = sys_msgs[:1] + [{"role": "user", "content": str(r["prompt"])}]
            r["prompt_id"] = prompt_id(r["messages"])
        prov = r.setdefault("provenance", {})
        prov.setdefault("steps", []).append({"id": step.id, "distilabel": type(obj).__name__})
        if "response" in r and "id" not in r:
            r["id"] = record_id(r["prompt_id"], step.teacher or step.id, 0, str(r["response"]))
    return out, []


KIND = StepKind(
    "distilabel", DistilabelStep, _run, prepare=_prepare, scope="row", builder="Distilabel", generates=True,
    columns=lambda step: None,  # known once the class is imported: the engine describes it at compile time
    teachers=lambda step, spec: [step.teacher] if step.teacher else [],
)
