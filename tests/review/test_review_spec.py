"""The `review:` section's own validation: enum-like keys get the project's did-you-mean."""

from __future__ import annotations

import pytest

from distillflow.errors import SpecError
from distillflow.spec.loader import load_spec
from tests.review.records import SPEC_YAML


def test_mode_typo_names_the_choices_and_suggests_the_fix():
    assert "  mode: required\n" in SPEC_YAML
    with pytest.raises(SpecError) as info:
        load_spec(SPEC_YAML.replace("  mode: required\n", "  mode: requierd\n"))
    (problem,) = info.value.problems
    assert problem.path == "review.mode"
    assert "'requierd' is not one of 'optional' or 'required'" in str(problem)
    assert "did you mean 'required'?" in str(problem)
    assert "String should match pattern" not in str(info.value)


def test_both_modes_load():
    for mode in ("optional", "required"):
        assert load_spec(SPEC_YAML.replace("mode: required", f"mode: {mode}")).review.mode == mode
