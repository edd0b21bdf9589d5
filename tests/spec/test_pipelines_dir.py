"""Every YAML in pipelines/ validates and round-trips through to_yaml()."""

from __future__ import annotations

from pathlib import Path

import pytest

import distillflow as df
from distillflow.spec.loader import load_spec

PIPELINES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


def test_there_are_example_pipelines():
    assert any(p.name == "quickstart.yaml" for p in PIPELINES)


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_round_trip(path):
    spec = df.load(path)
    again = load_spec(spec.to_yaml())
    assert again.to_dict() == spec.to_dict()
    assert again.spec_hash() == spec.spec_hash()
