"""Pipeline schema (pydantic) and the YAML loader. No I/O beyond reading the YAML file."""

from distillflow.spec.loader import dump_yaml, load_spec, parse_yaml, validate_data
from distillflow.spec.models import (
    BestOfStep,
    BudgetSpec,
    DedupStep,
    DistilabelStep,
    FilterStep,
    GenerateStep,
    GenerationParams,
    HeldoutSpec,
    JudgeStep,
    LengthFilterStep,
    OutputSpec,
    PipelineSpec,
    PriceSpec,
    RefusalFilterStep,
    RewardStep,
    SourceSpec,
    TeacherSpec,
    TermsSpec,
    VerifyStep,
)
from distillflow.spec.review import ReviewSpec
from distillflow.spec.train import EvalSpec, TrainSpec

__all__ = [n for n in dir() if n[0].isupper()] + ["load_spec", "parse_yaml", "validate_data", "dump_yaml"]
