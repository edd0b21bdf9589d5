"""The compiled plan: a pipeline validated and compiled once, then only read.

    plan = distillflow.compile("pipelines/quickstart.yaml")   # or a flow.Pipeline / PipelineSpec
    plan.graph.order          # ["source", "generate", "verify", "filter", "dedup"]
    plan.name, plan.teachers  # a plan reads like its spec
    distillflow.run(plan, out="runs/quickstart")

The runner, review push, train and report take a plan (or a run directory); nothing downstream
re-validates, re-builds the graph or re-instantiates distilabel steps. See docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from distillflow.graph import Graph


@dataclass(frozen=True)
class Plan:
    spec: Any  # the validated PipelineSpec, local model paths resolved; never mutated
    graph: Graph
    base_dir: Path  # relative paths in the spec are relative to this (the YAML file's folder)
    objects: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # Python objects by step id
    lines: Mapping[tuple, int] = field(default_factory=lambda: MappingProxyType({}))  # YAML path -> line
    source: str = "pipeline"  # where it came from, for messages

    def __getattr__(self, name: str):
        # Only reached for names a Plan does not have: read them from the spec (plan.name, plan.teachers).
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.spec, name)

    def step(self, step_id: str):
        return self.graph.nodes[step_id].step

    def step_teachers(self, step) -> list[str]:
        """The names of the teachers ``step`` calls (none for a kind that calls no teacher)."""
        from distillflow.steps import registry

        kind = registry.get(step.kind)
        return list(kind.teachers(step, self.spec)) if kind.teachers is not None else []

    def teachers_used(self) -> set[str]:
        """Teachers some step of the graph calls."""
        used: set[str] = set()
        for nid in self.graph.order:
            st = self.graph.nodes[nid].step
            if st is not None:
                used |= set(self.step_teachers(st))
        return used
