"""Public functions: load, compile, run, llm, with_execution.

    plan = distillflow.load("pipelines/quickstart.yaml")     # validated and compiled once
    result = distillflow.run(plan, out="runs/quickstart")
    result.manifest["curated"], result.dataset("curated")

``load`` and ``compile`` return a :class:`~distillflow.plan.Plan` (it reads like its spec:
``plan.name``, ``plan.teachers``); ``run`` also takes a YAML path, a ``PipelineSpec`` or a
``flow.Pipeline`` and compiles it first. ``with_execution`` returns a plan with another backend or
Ray address (what ``run(backend=..., address=...)``, and so the CLI's ``--backend``, uses). There is no
separate ``validate`` function: ``load``/``compile`` validate (``distillflow validate`` on the command
line, ``Pipeline.validate()`` for a pipeline built in Python).
"""

from __future__ import annotations

from pathlib import Path


def load(path):
    """Load, validate and compile a YAML pipeline; raises SpecError listing every problem."""
    from distillflow.spec.loader import load_document

    doc = load_document(path)
    return _compile_doc(doc)


def _compile_doc(doc, objects: dict | None = None):
    from distillflow.engine.compile import compile_spec

    return compile_spec(doc.spec, base_dir=doc.base_dir, lines=doc.lines, objects=objects, source=doc.source)


def compile(pipeline, objects: dict | None = None):  # noqa: A001 - the public verb
    """A Plan from a YAML path, a PipelineSpec, a flow.Pipeline, or a Plan (returned as is)."""
    from distillflow.engine.compile import compile_spec
    from distillflow.plan import Plan

    if isinstance(pipeline, Plan):
        return pipeline
    if isinstance(pipeline, (str, Path)):
        return load(pipeline)
    compile_self = getattr(pipeline, "compile", None)  # a flow.Pipeline compiles itself
    if callable(compile_self):
        return compile_self()
    return compile_spec(pipeline, base_dir=Path.cwd(), objects=objects)


def run(pipeline, out=None, progress: bool = True, fresh: bool = False, objects: dict | None = None,
        retry_errors: bool = False, backend: str | None = None, address: str | None = None, wait: bool = True):
    """Run a pipeline (a Plan, YAML path, PipelineSpec or flow.Pipeline) into `out`; resumes from caches.

    ``backend`` ("local" or "ray") and ``address`` (a Ray cluster) override the pipeline's ``execution``.
    ``wait=False``: ``mode: batch`` teachers submit their provider batches and the call returns
    (``result.manifest["status"] == "batches_pending"``); calling it again collects them."""
    from distillflow.engine.progress import NullReporter, RichReporter
    from distillflow.engine.runner import run_plan

    plan = with_execution(compile(pipeline, objects=objects), backend, address)
    reporter = RichReporter() if progress else NullReporter()
    try:
        result = run_plan(plan, out_dir=out, reporter=reporter, fresh=fresh, retry_errors=retry_errors, wait=wait)
    finally:
        reporter.close()
    if plan.spec.review is not None and result.manifest.get("status") != "batches_pending":
        from distillflow.review.push import auto_push

        note = auto_push(result.out_dir)  # never raises: a failed push does not undo a finished run
        if note:
            result.notes.append(note)
    return result


def with_execution(plan, backend: str | None = None, address: str | None = None):
    """``plan`` with its ``execution.backend`` / ``address`` replaced (None keeps the pipeline's)."""
    import dataclasses

    from distillflow.errors import UsageError, error_text
    from distillflow.spec.models import ExecutionSpec, address_problem

    if backend is None and address is None:
        return plan
    address = address.strip() if address is not None else None
    if backend is not None and backend not in ("local", "ray"):
        hint = f" (did you mean {backend.strip().lower()!r}?)" if backend.strip().lower() in ("local", "ray") else ""
        raise UsageError(f"backend {backend!r} is not one of: local, ray{hint}")
    problem = address_problem(address) if address is not None else None
    if problem:
        raise UsageError(problem)
    if backend == "local" and address is not None:
        raise UsageError(f"address {address!r} is for the Ray backend; backend local runs in this process: "
                         "drop the address, or use backend ray")
    current = plan.spec.execution
    fields = current.model_dump()
    if backend is not None:
        fields["backend"] = backend
        if backend != "ray":
            fields["address"] = None
    if address is not None:
        fields["backend"] = "ray" if backend is None else fields["backend"]
        fields["address"] = address
    try:
        execution = ExecutionSpec.model_validate(fields)
    except ValueError as e:  # pydantic's ValidationError (the checks above name the fix first)
        first = e.errors()[0] if hasattr(e, "errors") else {"msg": str(e)}
        msg = error_text(first)
        raise UsageError(f"backend={backend!r}, address={address!r}: {msg}") from None
    return dataclasses.replace(plan, spec=plan.spec.model_copy(update={"execution": execution}))


def llm(teacher):
    """A distilabel LLM backed by a distillflow teacher, for distilabel tasks in Python pipelines.

        evol = EvolInstruct(llm=distillflow.llm(teacher), num_evolutions=1)
    """
    from distillflow.steps.distilabel_step import llm_class

    obj = llm_class()(teacher_name=teacher.name)
    obj._teacher_obj = teacher
    return obj
