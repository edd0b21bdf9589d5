import copy
import sys
import textwrap

import pytest

from distillflow.errors import ConfigurationError, UsageError
from distillflow.steps.verify import (
    VERIFIERS,
    check_params,
    contains,
    exact_match,
    json_valid,
    python_parses,
    regex,
    register_verifier,
    resolve_verifier,
    verify_rows,
)


def row(response, **extra):
    return {"id": "r1", "response": response, "provenance": {"verifiers": {"old": {"pass": True, "detail": ""}}}, **extra}


# --------------------------------------------------------------------------- built-ins

def test_registry_has_builtins():
    assert {"exact_match", "contains", "json_valid", "regex", "python_parses"} <= set(VERIFIERS)
    assert resolve_verifier("json_valid") is json_valid


def test_exact_match_normalizes():
    assert exact_match("  Paris \n", {"reference": "paris"}) == (True, "matches the reference")
    ok, detail = exact_match("Lyon", {"reference": "Paris"})
    assert not ok and detail == "expected 'Paris', got 'Lyon'"
    assert exact_match("x", {"answer": "X"}, reference_column="answer")[0]
    assert exact_match("7", {}, expected=7)[0]
    ok, detail = exact_match("x", {})
    assert not ok and detail == "no expected value: row has no 'reference' and no 'expected' parameter"


@pytest.mark.parametrize(
    "response,reference,ok",
    [
        ("2 + 2 = 4, so the answer is 4.", "4", True),
        ("Total: 1,234 apples", "#### 1234", True),
        ("The result is -3.50", "-3.5", True),
        ("I think it's 41", "42", False),
        ("Step 1 gives 10, step 2 gives 12. Final: 12", "The answer is 12", True),
    ],
)
def test_exact_match_last_number(response, reference, ok):
    result, detail = exact_match(response, {"reference": reference}, extract="last_number")
    assert result is ok
    assert detail.startswith("expected ")


def test_exact_match_last_number_missing_numbers():
    assert exact_match("no digits", {"reference": "4"}, extract="last_number") == (
        False, "expected 4, but the response contains no number")
    ok, detail = exact_match("4", {"reference": "four"}, extract="last_number")
    assert not ok and "contains no number" in detail


def test_exact_match_boxed_and_bad_extract():
    assert exact_match("so \\boxed{\\frac{1}{2}}", {"reference": "\\frac{1}{2}"}, extract="boxed")[0]
    assert not exact_match("no box", {"reference": "1"}, extract="boxed")[0]
    with pytest.raises(UsageError, match="extract must be"):
        exact_match("1", {"reference": "1"}, extract="first_number")


def test_contains():
    assert contains("Paris is the capital", {}, text="PARIS") == (True, "contains 'PARIS'")
    assert contains("Paris", {}, text="paris", case_sensitive=True) == (False, "does not contain 'paris'")
    assert contains("the answer is Berlin", {"reference": "berlin"})[0]
    assert not contains("x", {})[0]


def test_json_valid():
    assert json_valid('{"a": 1}', {}) == (True, "valid JSON dict")
    assert json_valid('Here:\n```json\n[1, 2]\n```', {}) == (True, "valid JSON list")
    ok, detail = json_valid("{a: 1}", {})
    assert not ok and detail.startswith("invalid JSON: Expecting property name")
    assert json_valid('{"a": 1}', {}, required_keys=["a", "b"]) == (False, "JSON object lacks keys: 'b'")
    assert not json_valid("[1]", {}, required_keys=["a"])[0]
    assert not json_valid('```json\n{"a": 1}\n```', {}, allow_fence=False)[0]


def test_regex():
    assert regex("Answer: B", {}, pattern=r"Answer: [A-D]") == (True, "matched 'Answer: B'")
    assert regex("answer: b", {}, pattern=r"answer: [A-D]", ignore_case=True)[0]
    assert not regex("The Answer: B", {}, pattern=r"Answer: [A-D]", mode="fullmatch")[0]
    assert regex(" 123 \n", {}, pattern=r"\d+", mode="fullmatch")[0]
    with pytest.raises(UsageError, match="invalid pattern"):
        regex("x", {}, pattern="(")
    with pytest.raises(UsageError, match="mode must be"):
        regex("x", {}, pattern="x", mode="match")


def test_python_parses():
    assert python_parses("def f(x):\n    return x\n", {}) == (True, "the response parses")
    fenced = "Here you go:\n```python\nimport os\nprint(os.sep)\n```\nHope it helps!"
    assert python_parses(fenced, {}) == (True, "the ```python block parses")
    ok, detail = python_parses("```python\ndef f(:\n    pass\n```", {})
    assert not ok and detail.startswith("SyntaxError:") and "(line 1)" in detail
    assert not python_parses("Sure! Here is some prose, not code.", {})[0]
    assert python_parses("```python\n\n```", {}) == (False, "the ```python block is empty")


# --------------------------------------------------------------------------- verify_rows

def test_verify_rows_adds_columns_and_provenance_without_mutating():
    rows = [row("The answer is 42.", reference="42"), row("It is 41", reference="42"), row(None, reference="1")]
    before = copy.deepcopy(rows)
    out = verify_rows(rows, "math_ok", "exact_match", {"extract": "last_number"})
    assert rows == before
    assert [r["math_ok_pass"] for r in out] == [True, False, False]
    assert out[0]["math_ok_detail"] == "expected 42, got 42"
    assert out[1]["math_ok_detail"] == "expected 42, got 41"
    assert out[0]["provenance"]["verifiers"]["math_ok"] == {"pass": True, "detail": "expected 42, got 42"}
    assert out[0]["provenance"]["verifiers"]["old"] == {"pass": True, "detail": ""}
    assert len(out) == 3  # never rejects


def test_verify_rows_survives_exceptions_and_bad_returns():
    def boom(response, row):
        raise KeyError("missing_field")

    out = verify_rows([row("x")], "v", boom)
    assert out[0]["v_pass"] is False
    assert out[0]["v_detail"] == "verifier raised KeyError: 'missing_field'"

    out = verify_rows([row("x")], "v", lambda response, row: "yes")
    assert out[0]["v_pass"] is False and "expected bool or (bool, str)" in out[0]["v_detail"]

    out = verify_rows([row("abc")], "v", lambda response, row: response == "abc")
    assert out[0]["v_pass"] is True and out[0]["v_detail"] == "passed"


def test_verify_rows_checks_params_once():
    with pytest.raises(UsageError, match="unknown parameter 'patern'.*did you mean 'pattern'"):
        verify_rows([row("x")], "v", "regex", {"patern": "x"})
    with pytest.raises(UsageError, match="missing a required argument: 'pattern'"):
        verify_rows([row("x")], "v", "regex", {})
    with pytest.raises(UsageError, match="invalid pattern"):
        verify_rows([row("x"), row("y")], "v", "regex", {"pattern": "("})
    check_params(regex, {"pattern": "x", "mode": "search"})


def test_verify_rows_other_column():
    out = verify_rows([row("x", answer='{"k": 1}')], "v", "json_valid", column="answer")
    assert out[0]["v_pass"] is True


# --------------------------------------------------------------------------- registry & resolution

def test_register_verifier_and_clash():
    @register_verifier("test_non_empty")
    def non_empty(response, row):
        return bool(response.strip()), "empty" if not response.strip() else "ok"

    try:
        assert resolve_verifier("test_non_empty") is non_empty
        assert verify_rows([row("  ")], "ne", "test_non_empty")[0]["ne_detail"] == "empty"
        with pytest.raises(UsageError, match="already registered"):
            register_verifier("test_non_empty")(lambda response, row: True)
    finally:
        VERIFIERS.pop("test_non_empty", None)
    with pytest.raises(UsageError, match="identifier-like"):
        register_verifier("bad name")


def test_resolve_unknown_name_suggests():
    with pytest.raises(UsageError, match="unknown verifier 'json_vaild'.*did you mean 'json_valid'"):
        resolve_verifier("json_vaild")


def test_resolve_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_checks_mod.py").write_text(textwrap.dedent(
        """
        def is_upper(response, row):
            return response.isupper(), "upper" if response.isupper() else "not upper"
        NOT_CALLABLE = 3
        """
    ))
    monkeypatch.chdir(tmp_path)  # not on sys.path: resolution falls back to the cwd
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        fn = resolve_verifier("my_checks_mod:is_upper")
        assert fn("ABC", {}) == (True, "upper")
        assert str(tmp_path) not in sys.path  # the fallback does not leave sys.path changed
        with pytest.raises(ConfigurationError, match="has no function 'is_uper'.*did you mean 'is_upper'"):
            resolve_verifier("my_checks_mod:is_uper")
        with pytest.raises(ConfigurationError, match="not a function"):
            resolve_verifier("my_checks_mod:NOT_CALLABLE")
    finally:
        sys.modules.pop("my_checks_mod", None)
    with pytest.raises(ConfigurationError, match="cannot import module 'no_such_module_xyz'"):
        resolve_verifier("no_such_module_xyz:f")
    with pytest.raises(UsageError, match="must look like"):
        resolve_verifier("mod:")
