"""Pipeline schema (pydantic) and the YAML loader. No I/O beyond reading the YAML file.

Step models live with their kinds in `distillflow.steps` (see `distillflow.steps.registry`)."""

from distillflow.spec.loader import dump_yaml, load_spec, parse_yaml, validate_data
from distillflow.spec.models import (
    BudgetSpec,
    ExecutionSpec,
    GenerationParams,
    HeldoutSpec,
    OutputSpec,
    PipelineSpec,
    PriceSpec,
    SourceSpec,
    TeacherSpec,
    TermsSpec,
)
from distillflow.spec.review import ReviewSpec
from distillflow.spec.train import EvalSpec, TrainSpec

__all__ = [n for n in dir() if n[0].isupper()] + ["load_spec", "parse_yaml", "validate_data", "dump_yaml"]
