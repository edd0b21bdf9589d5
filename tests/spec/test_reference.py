"""docs/reference.md is generated from the spec and must be current."""

from pathlib import Path

from distillflow.spec.reference import render


def test_reference_is_up_to_date():
    doc = Path(__file__).resolve().parents[2] / "docs" / "reference.md"
    assert doc.read_text() == render(), "regenerate: python -m distillflow.spec.reference > docs/reference.md"
    assert "### JudgeStep" in doc.read_text() and "`max_cost_usd`" in doc.read_text()
