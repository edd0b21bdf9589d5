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
    "run": "distillflow.api",
    "llm": "distillflow.api",
    "DistillflowError": "distillflow.errors",
    "SpecError": "distillflow.errors",
    **{
        name: "distillflow.flow"
        for name in (
            "BestOf", "Dedup", "Distilabel", "Filter", "Generate", "Judge", "LengthFilter",
            "Pipeline", "RefusalFilter", "Reward", "Source", "Teacher", "Verify",
        )
    },
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'distillflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
