"""Public functions: load, validate, run, llm.

    spec = distillflow.load("pipelines/quickstart.yaml")
    result = distillflow.run(spec, out="runs/quickstart")
    result.manifest["curated"]
"""

from __future__ import annotations

from pathlib import Path


def load(path):
    """Load and validate a YAML pipeline (schema + graph); raises SpecError with every problem."""
    from distillflow.engine.validate import validate
    from distillflow.spec.loader import load_spec

    spec = load_spec(path)
    validate(spec, source=str(path) if not isinstance(path, str) or "\n" not in path else "pipeline")
    return spec


def _as_spec(pipeline):
    from distillflow.flow import Pipeline

    if isinstance(pipeline, Pipeline):
        return pipeline.spec
    if isinstance(pipeline, (str, Path)):
        return load(pipeline)
    return pipeline


def run(pipeline, out=None, progress: bool = True, fresh: bool = False, objects: dict | None = None):
    """Run a pipeline (a YAML path, a PipelineSpec or a flow.Pipeline) into `out`; resumes from caches."""
    from distillflow.engine.progress import NullReporter, RichReporter
    from distillflow.engine.runner import run_pipeline

    spec = _as_spec(pipeline)
    reporter = RichReporter() if progress else NullReporter()
    try:
        result = run_pipeline(spec, out_dir=out, reporter=reporter, objects=objects, fresh=fresh)
    finally:
        reporter.close()
    if spec.review is not None:
        from distillflow.review.push import auto_push

        note = auto_push(result.out_dir)  # never raises: a failed push does not undo a finished run
        if note:
            result.notes.append(note)
    return result


def llm(teacher):
    """A distilabel LLM backed by a distillflow teacher, for distilabel tasks in Python pipelines.

        evol = EvolInstruct(llm=distillflow.llm(teacher), num_evolutions=1)
    """
    from distillflow.engine.distilabel_steps import llm_class

    obj = llm_class()(teacher_name=teacher.name)
    obj._teacher_obj = teacher
    return obj
