import pytest

from distillflow.errors import DistillflowError
from distillflow.expr import (
    BoolOp,
    Column,
    Compare,
    ExprEvalError,
    ExprSyntaxError,
    Literal,
    Not,
    parse,
)


# --------------------------------------------------------------------------- parsing & precedence

def test_precedence_not_binds_tighter_than_and_than_or():
    e = parse("not a and b or c")
    assert e == BoolOp("or", (BoolOp("and", (Not(Column("a")), Column("b"))), Column("c")))
    assert e.evaluate({"a": False, "b": True, "c": False}) is True
    assert e.evaluate({"a": True, "b": True, "c": False}) is False
    assert e.evaluate({"a": True, "b": False, "c": True}) is True


def test_comparison_binds_tighter_than_not():
    e = parse("not score >= 4")
    assert e == Not(Compare(">=", Column("score"), Literal(4)))
    assert e.evaluate({"score": 2}) is True


def test_parentheses_override_precedence():
    e = parse("a and (b or c)")
    assert e.evaluate({"a": True, "b": False, "c": True}) is True
    assert e.evaluate({"a": False, "b": True, "c": True}) is False


@pytest.mark.parametrize(
    "text,expected",
    [
        ("judge_score>=4", "judge_score >= 4"),
        ("not a and b or c", "not a and b or c"),
        ("a and (b or c)", "a and (b or c)"),
        ("not (a == b)", "not a == b"),
        ("(not a) == b", "(not a) == b"),
        ("teacher in ['a',\"b\"]", "teacher in ['a', 'b']"),
        ("x not in 'abc'", "x not in 'abc'"),
        ("x == True or y != None", "x == true or y != null"),
        ("abs(-x) <= 1.5e1", "abs(-x) <= 15.0"),
        ("x > -3", "x > -3"),
        ("s == 'it\\'s\\n'", "s == 'it\\'s\\n'"),
        ("len( lower(response) ) < 10", "len(lower(response)) < 10"),
    ],
)
def test_str_is_canonical_and_round_trips(text, expected):
    e = parse(text)
    assert str(e) == expected
    assert parse(str(e)) == e


def test_literals():
    assert parse("42").evaluate({}) == 42
    assert parse("4.5").evaluate({}) == 4.5
    assert parse("'a\\tb'").evaluate({}) == "a\tb"
    assert parse('"dq \\" \\u00e9"').evaluate({}) == 'dq " é'
    assert parse("[1, 'x', null, true, False]").evaluate({}) == [1, "x", None, True, False]
    assert parse("[]").evaluate({}) == []
    assert parse("None").evaluate({}) is None


def test_columns_and_order():
    e = parse("judge_score >= 4 and len(response) < 2000 and teacher in [model_a] and judge_score < 5")
    assert e.columns() == {"judge_score", "response", "teacher", "model_a"}
    assert e.column_order() == ["judge_score", "response", "teacher", "model_a"]
    assert parse("1 == 1").columns() == set()


# --------------------------------------------------------------------------- evaluation

def test_in_list_and_string_containment():
    assert parse("teacher in ['gpt', 'claude']").evaluate({"teacher": "claude"}) is True
    assert parse("teacher not in ['gpt', 'claude']").evaluate({"teacher": "claude"}) is False
    assert parse("'sorry' in lower(response)").evaluate({"response": "I'm SORRY"}) is True
    assert parse("'sorry' not in response").evaluate({"response": "fine"}) is True
    assert parse("x in [null, 1]").evaluate({"x": None}) is True


def test_none_handling():
    row = {"score": None, "response": None}
    assert parse("score >= 4").evaluate(row) is False
    assert parse("score < 4").evaluate(row) is False
    assert parse("score == null").evaluate(row) is True
    assert parse("score != null").evaluate(row) is False
    assert parse("score != null").evaluate({"score": 3}) is True
    assert parse("len(response) > 0").evaluate(row) is False  # None propagates through functions
    assert parse("'a' in response").evaluate(row) is False
    assert parse("'a' not in response").evaluate(row) is False
    assert parse("-score < 0").evaluate(row) is False


def test_functions():
    row = {"response": "Hello World", "items": [1, 2, 3], "delta": -2.5}
    assert parse("len(response)").evaluate(row) == 11
    assert parse("len(items) == 3").evaluate(row) is True
    assert parse("lower(response) == 'hello world'").evaluate(row) is True
    assert parse("abs(delta) > 2").evaluate(row) is True


def test_bool_result_of_and_or():
    assert parse("a or b").evaluate({"a": 0, "b": "x"}) is True
    assert parse("a and b").evaluate({"a": 1, "b": ""}) is False


def test_eval_error_names_column_and_value():
    with pytest.raises(ExprEvalError) as err:
        parse("len(score) > 1").evaluate({"score": 5})
    assert "len()" in str(err.value) and "column 'score'" in str(err.value) and "int 5" in str(err.value)
    with pytest.raises(ExprEvalError) as err:
        parse("len(5)").evaluate({})
    assert "'5'" in str(err.value)
    with pytest.raises(ExprEvalError) as err:
        parse("teacher > 3").evaluate({"teacher": "gpt"})
    assert "column 'teacher'" in str(err.value) and "'gpt'" in str(err.value)
    with pytest.raises(ExprEvalError, match="lower\\(\\) needs a string"):
        parse("lower(x) == 'a'").evaluate({"x": 3})
    with pytest.raises(ExprEvalError, match="abs\\(\\) needs a number"):
        parse("abs(x) > 1").evaluate({"x": "3"})
    with pytest.raises(ExprEvalError, match="'in' needs a list or a string"):
        parse("x in 5").evaluate({"x": "a"})


def test_unknown_column_at_evaluation_suggests_name():
    with pytest.raises(ExprEvalError, match="unknown column 'scroe' — did you mean 'score'"):
        parse("scroe > 1").evaluate({"score": 5})


# --------------------------------------------------------------------------- syntax errors

@pytest.mark.parametrize(
    "text,message,position",
    [
        ("len(x) > 3)", "unexpected ')' at column 11", 10),
        ("score >= ", "unexpected end of expression at column 10", 9),
        ("a = 1", "unexpected character '=' at column 3 (use '==' to compare)", 2),
        ("a < b < c", "chained comparison at column 7", 6),
        ("'abc", "unterminated string starting at column 1", 0),
        ("x == 'a\\q'", "unknown escape '\\q' at column 8", 7),
        ("foo(x)", "unknown function 'foo' at column 1", 0),
        ("lenn(x) > 1", "did you mean 'len'?", 0),
        ("len(a, b)", "len() takes one argument", 5),
        ("3abc > 1", "invalid number at column 1", 0),
        ("(a or b", "unexpected end of expression at column 8 (expected ')')", 7),
        ("[1, 2", "expected ',' or ']'", 5),
        ("a b", "unexpected 'b' at column 3", 2),
        ("", "empty expression", 0),
        ("x.y", "unexpected character '.' at column 2", 1),
    ],
)
def test_syntax_errors_have_positions(text, message, position):
    with pytest.raises(ExprSyntaxError) as err:
        parse(text)
    assert message in err.value.message
    assert err.value.position == position
    assert err.value.column == position + 1


def test_syntax_error_is_value_error_with_caret():
    with pytest.raises(ValueError) as err:
        parse("len(x) > 3)")
    assert isinstance(err.value, DistillflowError) and err.value.exit_code == 2
    lines = str(err.value).splitlines()
    assert lines[0].startswith("unexpected ')' at column 11")
    assert lines[1] == "  len(x) > 3)"
    assert lines[2] == "  " + " " * 10 + "^"


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('rm -rf /')",
        "eval('1')",
        "open('/etc/passwd')",
        "response.__class__",
        "().__class__.__bases__",
        "x[0]",
        "lambda: 1",
        "len(x) if x else 0",
        "a; b",
        "1 + 1",
        "f'{x}'",
    ],
)
def test_injection_attempts_are_syntax_errors(text):
    with pytest.raises(ExprSyntaxError):
        parse(text)


def test_deep_nesting_is_a_syntax_error_not_a_crash():
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse("(" * 5000 + "a" + ")" * 5000)
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse("not " * 5000 + "a")


def test_non_string_input():
    with pytest.raises(ExprSyntaxError, match="must be a string"):
        parse(42)  # type: ignore[arg-type]
