"""Every user-facing spec error names the cause, the YAML path and line, and a fix where one fits."""

from __future__ import annotations

import subprocess
import sys

import pytest

from distillflow.errors import SpecError
from distillflow.api import load as load_spec

GOOD = """name: ok
source:
  kind: inline
  rows: [{prompt: "hi"}]
teachers:
  - name: t
    provider: openai
    base_url: http://127.0.0.1:9/v1
    model: m
steps:
  - kind: generate
  - kind: filter
    where: "len(response) > 2"
"""


def errors_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(text if "\n" in text else text + "\n")
    return str(info.value)


def test_good_pipeline_loads():
    spec = load_spec(GOOD)
    assert [s.id for s in spec.steps] == ["generate", "filter"]


def test_empty_file(tmp_path):
    p = tmp_path / "e.yaml"
    p.write_text("")
    msg = errors_of_path(p)
    assert "empty" in msg and "distillflow init" in msg


def errors_of_path(p) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(p)
    return str(info.value)


def test_top_level_list():
    assert "top level must be a mapping" in errors_of("- a\n- b\n")


def test_tab_indentation():
    msg = errors_of("name: x\nsource:\n\tkind: jsonl\n")
    assert "tab" in msg and "line 3" in msg


def test_unterminated_string():
    msg = errors_of('name: "x\nsource: 1\n')
    assert "invalid YAML" in msg and "quoted scalar" in msg


def test_misspelled_top_level_key_with_suggestion():
    msg = errors_of(GOOD.replace("source:", "sorce:"))
    assert "sorce (line 2): unknown key 'sorce'" in msg
    assert "did you mean 'source'?" in msg
    assert "required key 'source' is missing" in msg


def test_unknown_step_kind():
    msg = errors_of(GOOD.replace("kind: filter", "kind: filtr"))
    assert "steps[1].kind (line 12): unknown step kind 'filtr'" in msg and "did you mean 'filter'?" in msg


def test_unknown_column_in_filter():
    msg = errors_of(GOOD.replace("len(response) > 2", "respnse == 'x'"))
    assert "steps[1].where (line 13): unknown column 'respnse'" in msg
    assert "did you mean 'response'?" in msg


def test_filter_syntax_error():
    msg = errors_of(GOOD.replace("len(response) > 2", "len(response >"))
    assert "steps[1].where" in msg and "invalid expression" in msg


def test_cycle():
    text = GOOD + """  - {id: a, kind: filter, where: "true", after: [b]}
  - {id: b, kind: filter, where: "true", after: [a]}
"""
    assert "cycle: " in errors_of(text) and "a -> b" in errors_of(text).replace("b -> a -> b", "a -> b")


def test_step_reading_column_nothing_produces():
    text = GOOD.replace("  - kind: generate\n", "  - {kind: judge, teacher: t}\n  - kind: generate\n")
    msg = errors_of(text)
    assert "reads column 'response', but no step before it produces one" in msg
    assert "kind: generate" in msg


def test_unknown_teacher_and_after_with_suggestions():
    text = GOOD.replace("  - kind: generate\n", "  - {kind: generate, teachers: [tt]}\n  - {kind: filter, where: 'true', after: [generat]}\n")
    msg = errors_of(text)
    assert "unknown teacher 'tt'" in msg
    assert "unknown step 'generat'" in msg and "did you mean 'generate'?" in msg


def test_all_errors_at_once():
    text = GOOD.replace("sorce", "x").replace("provider: openai", "provider: opnai\n    colour: red")
    msg = errors_of(text)
    assert "2 errors" in msg and "did you mean 'openai'?" in msg and "unknown key 'colour'" in msg


def test_api_key_must_be_a_name_not_a_key():
    msg = errors_of(GOOD.replace("model: m", "model: m\n    api_key_env: sk-abc123"))
    assert "NAME of an environment variable" in msg


def test_two_final_steps():
    text = GOOD + '  - {id: side, kind: filter, where: "true", after: [generate]}\n'
    msg = errors_of(text)
    assert "final steps" in msg and "after: [" in msg


def test_cli_prints_no_traceback_and_exits_2(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace("kind: filter", "kind: filtr"))
    proc = subprocess.run([sys.executable, "-m", "distillflow.cli", "validate", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "unknown step kind 'filtr'" in proc.stderr
