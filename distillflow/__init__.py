"""distillflow: declarative, resumable black-box distillation pipelines on top of distilabel.

    import distillflow as df
    spec = df.load("pipelines/quickstart.yaml")
    df.run(spec, out="runs/quickstart")

The names below load on first use, so `import distillflow.spec` stays light and the root
package does not tie the layers together.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load": "distillflow.api",
    "compile": "distillflow.api",
    "run": "distillflow.api",
    "Plan": "distillflow.plan",
    "register_step": "distillflow.steps.registry",
    "StepKind": "distillflow.steps.base",
    "StepBase": "distillflow.steps.base",
    "llm": "distillflow.api",
    "DistillflowError": "distillflow.errors",
    "SpecError": "distillflow.errors",
    **{
        name: "distillflow.flow"
        for name in (
            "BestOf", "Dedup", "Decontaminate", "Distilabel", "Filter", "Generate", "Judge", "LengthFilter",
            "Pipeline", "RefusalFilter", "Reward", "Screen", "Source", "Teacher", "Verify",
        )
    },
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        # a step kind registered by a plugin or from Python has its builder here too
        flow = importlib.import_module("distillflow.flow")
        value = flow.builders().get(name)
        if value is None:
            raise AttributeError(f"module 'distillflow' has no attribute {name!r}")
        return value
    if name == "register_step":
        return importlib.import_module(module).register
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
