"""Fixtures of the review tests; the rows and spec they build on are in tests/review/records.py."""

from __future__ import annotations

import pytest

from tests.review.records import SPEC_YAML


@pytest.fixture
def spec():
    from distillflow.spec.loader import load_spec

    return load_spec(SPEC_YAML)
