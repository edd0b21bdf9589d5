"""Assertions that kill mutants `make mutation` found surviving in the expression language, the
verifiers and the curation steps: comparison boundaries, unary minus, length bounds at their limits,
numpy booleans from verifiers, and the exact reasons and provenance each step writes."""

from __future__ import annotations

import pytest

from distillflow.errors import UsageError
from distillflow.expr import ExprEvalError, parse
from distillflow.steps.curate import exact_dedup, filter_rows, length_filter
from distillflow.steps.verify import verify_rows


# ----------------------------------------------------------------------------- expressions

@pytest.mark.parametrize("expr,want", [
    ("score < 4", False), ("score <= 4", True), ("score > 4", False), ("score >= 4", True),
    ("score < 5", True), ("score > 3", True), ("score == 4", True), ("score != 4", False),
])
def test_comparisons_at_the_boundary(expr, want):
    assert parse(expr).evaluate({"score": 4}) is want


def test_unary_minus():
    assert parse("-x").evaluate({"x": 3}) == -3
    assert parse("-x").evaluate({"x": -2.5}) == 2.5
    assert parse("-x").evaluate({"x": None}) is None
    assert parse("-x < -2").evaluate({"x": 3}) is True
    with pytest.raises(ExprEvalError) as err:
        parse("-s").evaluate({"s": "a"})
    assert str(err.value) == "unary '-' needs a number, but column 's' is str 'a'"


def test_comparing_text_with_a_number_names_both_sides():
    with pytest.raises(ExprEvalError) as err:
        parse("score < s").evaluate({"score": 1, "s": "a"})
    assert str(err.value) == "cannot compare column 'score' = int 1 < column 's' = str 'a'"


# ----------------------------------------------------------------------------- curation

def test_filter_reason_and_provenance_exact():
    kept, rejected = filter_rows([{"id": "r1", "score": 3}, {"id": "r2", "score": 4}], "score >= 4", "keep")
    assert kept == [{"id": "r2", "score": 4, "provenance": {"filters_passed": ["keep"]}}]
    assert rejected == [{"id": "r1", "score": 3, "rejected_by": "keep", "reason": "filter 'score >= 4' was false (score=3)"}]


def test_length_bounds_are_inclusive():
    rows = [{"id": str(n), "response": " ".join(["ab"] * n)} for n in (1, 2, 3)]  # 2, 5, 8 chars; 1-3 words
    kept, rejected = length_filter(rows, "len", min_chars=5, max_chars=5)
    assert [r["id"] for r in kept] == ["2"] and kept[0]["provenance"] == {"filters_passed": ["len"]}
    assert [r["rejected_by"] for r in rejected] == ["len", "len"]
    kept, _ = length_filter(rows, "len", min_words=2, max_words=2)
    assert [r["id"] for r in kept] == ["2"]
    kept, _ = length_filter(rows, "len", min_chars=0)  # zero is a valid bound
    assert len(kept) == 3
    with pytest.raises(UsageError):
        length_filter(rows, "len", min_chars=-1)
    with pytest.raises(UsageError):
        length_filter(rows, "len", min_chars=6, max_chars=5)


def test_exact_dedup_names_the_first_and_the_step():
    rows = [{"id": "a", "prompt": "P", "response": "x"}, {"id": "b", "prompt": "p", "response": " X "}]
    kept, rejected = exact_dedup(rows, "dd")
    assert kept == [{"id": "a", "prompt": "P", "response": "x", "provenance": {"filters_passed": ["dd"]}}]
    assert rejected == [{"id": "b", "prompt": "p", "response": " X ", "rejected_by": "dd",
                         "reason": "exact duplicate of a (prompt, response, normalized)"}]
    kept, rejected = exact_dedup([{"response": "x"}, {"response": "X"}], "dd", columns="response")
    assert len(kept) == 1 and rejected[0]["reason"] == "exact duplicate of row 0 (response, normalized)"


# ----------------------------------------------------------------------------- verifiers

def test_verifier_results_numpy_bools_and_non_text_responses():
    np = pytest.importorskip("numpy")  # numpy comes with torch/pyarrow: always installed here
    seen = []

    def check(response, row):
        seen.append(response)
        return np.bool_(response == "42")

    out = verify_rows([{"response": 42}, {"response": None}, {"response": "42"}], "v", check)
    assert seen == ["42", "", "42"]  # non-text answers are checked as text, None as ""
    assert [(r["v_pass"], r["v_detail"]) for r in out] == [(True, "passed"), (False, "failed"), (True, "passed")]
    out = verify_rows([{"response": "x"}], "v", lambda response, row: (np.bool_(False), None))
    assert (out[0]["v_pass"], out[0]["v_detail"]) == (False, "")
    assert type(out[0]["v_pass"]) is bool
