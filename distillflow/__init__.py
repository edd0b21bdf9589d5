"""distillflow: declarative, resumable black-box distillation pipelines on top of distilabel.

    import distillflow as df
    spec = df.load("pipelines/quickstart.yaml")
    df.run(spec, out="runs/quickstart")
"""

from distillflow.api import llm, load, run
from distillflow.errors import DistillflowError, SpecError
from distillflow.flow import (
    BestOf,
    Dedup,
    Distilabel,
    Filter,
    Generate,
    Judge,
    LengthFilter,
    Pipeline,
    RefusalFilter,
    Reward,
    Source,
    Teacher,
    Verify,
)

__version__ = "0.1.0"
__all__ = [
    "BestOf", "Dedup", "Distilabel", "DistillflowError", "Filter", "Generate", "Judge", "LengthFilter",
    "Pipeline", "RefusalFilter", "Reward", "Source", "SpecError", "Teacher", "Verify", "llm", "load", "run",
]
