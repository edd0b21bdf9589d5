"""A step's own settings that the run would refuse (a judge's rubric against its scale, a verifier's
name and parameters) are reported by `distillflow validate`, with the YAML path and line, together
with every other problem, before anything runs; a `module:function` verifier (user code) is imported
by `distillflow preflight` and at the start of a run, never by the static `validate`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import distillflow as df
from distillflow.api import load
from distillflow.cli import app
from distillflow.errors import SpecError

HEAD = """name: t
source:
  kind: inline
  columns: {prompt: question, reference: answer}
  rows: [{question: "2+2?", answer: "4"}]
teachers:
  - name: t
    provider: openai
    base_url: http://127.0.0.1:9/v1
    model: m
steps:
  - kind: generate
"""  # the first step after HEAD is steps[1], its first line is line 13


def errors_of(steps: str) -> str:
    with pytest.raises(SpecError) as info:
        load(HEAD + steps)
    return str(info.value)


def test_a_builtin_rubric_on_another_scale_is_a_validation_error_at_its_line():
    msg = errors_of("  - kind: judge\n    teacher: t\n    rubric: correctness\n    scale: [1, 10]\n")
    assert "steps[1].scale (line 16): built-in rubric 'correctness' is written for a 1-5 scale, not (1, 10)" in msg


def test_a_misspelled_rubric_is_a_validation_error_with_a_suggestion():
    msg = errors_of("  - kind: judge\n    teacher: t\n    rubric: corectness\n")
    assert "steps[1].rubric (line 15): unknown rubric 'corectness'" in msg
    assert "did you mean 'correctness'?" in msg


def test_free_rubric_text_on_any_scale_and_distilabel_backends_still_validate():
    load(HEAD + "  - {kind: judge, teacher: t, rubric: 'Is it right? 1 wrong, 10 right', scale: [1, 10]}\n"
                "  - {kind: judge, id: uf, teacher: t, backend: ultrafeedback, rubric: anything}\n")


def test_a_misspelled_verifier_is_a_validation_error_with_a_suggestion():
    msg = errors_of("  - kind: verify\n    check: exact_matc\n")
    assert "steps[1].check (line 14): unknown verifier 'exact_matc'" in msg and "did you mean 'exact_match'?" in msg


def test_a_bad_verifier_parameter_value_is_a_validation_error():
    msg = errors_of("  - kind: verify\n    check: exact_match\n    params: {extract: last_numbr}\n")
    assert "steps[1].params (line 15): exact_match: extract must be 'last_number', 'boxed' or omitted" in msg
    msg = errors_of("  - {kind: verify, check: regex, params: {pattern: '(', mode: search}}\n")
    assert "steps[1].params (line 13): regex verifier: invalid pattern" in msg


def test_an_unknown_verifier_parameter_is_a_validation_error_with_a_suggestion():
    msg = errors_of("  - kind: verify\n    check: regex\n    params: {patern: x}\n")
    assert "steps[1].params (line 15): verifier 'regex': unknown parameter 'patern'" in msg
    assert "did you mean 'pattern'?" in msg


def test_a_malformed_module_function_is_a_validation_error():
    assert "steps[1].check (line 13): verifier 'mymod:' must look like 'package.module:function'" in errors_of(
        "  - {kind: verify, check: 'mymod:'}\n")


def test_every_step_problem_is_reported_at_once_with_graph_problems_in_line_order():
    msg = errors_of(
        "  - {kind: judge, teacher: t, rubric: correctness, scale: [1, 10]}\n"
        "  - {kind: judge, id: j2, teacher: t, rubric: corectness}\n"
        "  - {kind: verify, check: exact_matc}\n"
        "  - {kind: filter, where: 'respnse == 1'}\n"
        "  - {kind: verify, id: v2, check: exact_match, params: {extract: last_numbr}}\n"
        "  - {kind: verify, id: v3, check: regex, params: {patern: x}}\n"
    )
    assert msg.startswith("6 errors in pipeline:")
    order = ["steps[1].scale (line 13)", "steps[2].rubric (line 14)", "steps[3].check (line 15)",
             "steps[4].where (line 16)", "steps[5].params (line 17)", "steps[6].params (line 18)"]
    assert [msg.index(o) for o in order] == sorted(msg.index(o) for o in order)


def test_validate_does_not_import_a_module_function_verifier(tmp_path):
    # static: user code is imported by preflight and at the start of a run, not by validate
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "  - {kind: verify, check: 'no_such_module_xyz:fn'}\n")
    res = CliRunner().invoke(app, ["validate", str(p)])
    assert res.exit_code == 0, res.output


def test_the_cli_validate_exits_2_naming_the_yaml_line(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "  - kind: judge\n    teacher: t\n    rubric: corectness\n")
    res = CliRunner().invoke(app, ["validate", str(p)])
    assert res.exit_code == 2
    assert "steps[1].rubric (line 15): unknown rubric 'corectness'" in res.output + str(res.stderr or "")


def test_preflight_imports_a_module_function_verifier_and_names_the_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "  - {kind: verify, id: mine, check: 'no_such_module_xyz:fn'}\n")
    res = CliRunner().invoke(app, ["preflight", str(p)])
    out = res.output + str(res.stderr or "")
    assert res.exit_code == 1
    assert "FAIL steps[1] (line 13): step 'mine': cannot import module 'no_such_module_xyz'" in out


def test_a_verifier_module_that_fails_while_importing_is_named_without_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken_checks_xyz.py").write_text("def fn(response, row):\n    return (True\n")  # a syntax error
    (tmp_path / "bad_import_xyz.py").write_text("from os import no_such_name_xyz\n\ndef fn(response, row):\n    return True\n")
    p = tmp_path / "p.yaml"
    p.write_text(HEAD + "  - {kind: verify, id: a, check: 'broken_checks_xyz:fn'}\n"
                        "  - {kind: verify, id: b, check: 'bad_import_xyz:fn'}\n")
    res = CliRunner().invoke(app, ["preflight", str(p)])
    out = res.output + str(res.stderr or "")
    assert res.exit_code == 1 and "Traceback" not in out
    assert "module 'broken_checks_xyz' for verifier 'broken_checks_xyz:fn' failed to import" in out
    assert "broken_checks_xyz.py, line 2" in out and "SyntaxError" in out
    assert "module 'bad_import_xyz' for verifier 'bad_import_xyz:fn' failed to import" in out and "ImportError" in out


def _python_pipeline(step):
    teacher = df.Teacher("t", provider="openai", base_url="http://127.0.0.1:9/v1", model="m")
    return df.Pipeline("py", df.Source.inline([{"prompt": "a", "answer": "1"}]) >> df.Generate(teacher) >> step(teacher))


@pytest.mark.parametrize("step, expected", [
    (lambda t: df.Judge(teacher=t, rubric="corectness"), "steps[1].rubric: unknown rubric 'corectness'"),
    (lambda t: df.Judge(teacher=t, rubric="correctness", scale=(1, 10)), "steps[1].scale: built-in rubric 'correctness'"),
    (lambda t: df.Verify("exact_matc"), "steps[1].check: unknown verifier 'exact_matc'"),
    (lambda t: df.Verify("exact_match", extract="last_numbr"), "steps[1].params: exact_match: extract must be"),
    (lambda t: df.Verify("regex", patern="x"), "steps[1].params: verifier 'regex': unknown parameter 'patern'"),
    (lambda t: df.Verify(lambda response, row, limit=1: True, limt=2), "steps[1].params: verifier"),
])
def test_the_python_front_door_gets_the_same_errors(step, expected):
    pipe = _python_pipeline(step)
    with pytest.raises(SpecError, match=None) as info:
        pipe.compile()
    assert expected in str(info.value)
    with pytest.raises(SpecError):
        df.compile(pipe)
