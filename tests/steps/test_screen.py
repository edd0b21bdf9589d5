"""The screen step: every rule fires on its positives and stays quiet on its negatives; the row contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from distillflow.steps.screen import KIND, RULES, ScreenStep, compile_rules, iban_ok, luhn_ok, screen_rows, screen_text

from tests.steps.screen_cases import CASES


def fired(text: str, rules=None) -> list[str]:
    return [rule.name for rule, _at, _hit in screen_text(text, rules or compile_rules())]


def test_every_rule_has_cases():
    assert sorted(CASES) == sorted(RULES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_on_positives(name):
    rule = [RULES[name]]
    for text in CASES[name][0]:
        assert fired(text, rule) == [name], text


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_quiet_on_negatives(name):
    rule = [RULES[name]]
    for text in CASES[name][1]:
        assert fired(text, rule) == [], text


def test_checksums():
    assert luhn_ok("4539578763621486") and not luhn_ok("4539578763621487")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and iban_ok("DE89370400440532013000")
    assert not iban_ok("DE89370400440532013001") and not iban_ok("DE8937040044053201300")  # check digit / length


ROWS = [
    {"id": "a", "response": "The answer is 4.", "provenance": {"filters_passed": ["gen"]}},
    {"id": "b", "response": "I am Claude. Mail me at dana.whitfield@gmail.com", "provenance": {}},
    {"id": "c", "response": None},
]


def test_reject_names_rules_column_and_offset():
    kept, rejected = screen_rows(ROWS, "scr", compile_rules())
    assert [r["id"] for r in kept] == ["a", "c"]
    assert kept[0]["provenance"]["filters_passed"] == ["gen", "scr"]
    assert ROWS[0]["provenance"]["filters_passed"] == ["gen"]  # input not mutated
    assert rejected[0]["rejected_by"] == "scr"
    assert rejected[0]["reason"] == (
        "screen: email (personal data) in response at char 24: 'dana.whitfield@gmail.com'; "
        "model_name_claim (teacher identity) in response at char 0: 'I am Claude'"
    )


def test_secrets_are_redacted_in_reasons():
    key = "sk-" + "proj-" + "A" * 40
    _kept, rejected = screen_rows([{"response": f"key={key}"}], "scr", compile_rules())
    assert rejected[0]["reason"] == "screen: openai_key (secrets) in response at char 4: 'sk-p…'"
    assert "A" * 10 not in rejected[0]["reason"]


def test_flag_keeps_every_row_and_lists_rules():
    kept, rejected = screen_rows(ROWS, "scr", compile_rules(), action="flag")
    assert rejected == []
    assert [r["scr_flags"] for r in kept] == [[], ["email", "model_name_claim"], []]
    assert "scr_flags" not in ROWS[1]


def test_disable_rules_and_categories_and_user_patterns():
    step = ScreenStep(kind="screen", id="s", disable=["personal_data", "model_name_claim"],
                      patterns={"internal_host": r"\bcorp\.internal\b"}, columns=["prompt", "response"])
    names = [r.name for r in compile_rules(step)]
    assert "email" not in names and "phone" not in names and "model_name_claim" not in names
    assert names[-1] == "internal_host" and "openai_key" in names
    rows = [{"prompt": "where?", "response": "see wiki.corp.internal; I am Claude; bob.jones@gmail.com"}]
    kept, rejected = KIND.run(None, step, rows, KIND.prepare(None, step))
    assert kept == [] and rejected[0]["reason"] == "screen: internal_host (custom) in response at char 9: 'corp.internal'"
    only = ScreenStep(kind="screen", rules=["secrets"])
    assert {r.category for r in compile_rules(only)} == {"secrets"}


def test_columns_declared_for_the_graph():
    assert KIND.columns(ScreenStep(kind="screen", id="s")) == ({"response"}, set())
    assert KIND.columns(ScreenStep(kind="screen", id="s", action="flag", columns=["prompt"])) == ({"prompt"}, {"s_flags"})
    assert KIND.scope == "row" and KIND.builder == "Screen"


@pytest.mark.parametrize("kwargs, message", [
    ({"disable": ["phon"]}, "unknown screen rule or category 'phon' — did you mean 'phone'?"),
    ({"rules": ["secret"]}, "did you mean 'secrets'?"),
    ({"patterns": {"bad": "(unclosed"}}, "pattern 'bad' is not a valid regex: missing ), unterminated subpattern"),
    ({"patterns": {"email": "x"}}, "pattern name 'email' is a built-in rule"),
    ({"patterns": {"two words": "x"}}, "must be an identifier"),
    ({"rules": ["email"], "disable": ["email"]}, "every screen rule is switched off"),
    ({"action": "drop"}, "Input should be 'reject' or 'flag'"),
])
def test_spec_errors_name_the_cause(kwargs, message):
    with pytest.raises(ValidationError) as info:
        ScreenStep(kind="screen", **kwargs)
    assert message in str(info.value)


def test_readme_example_runs_and_prints_what_it_says():
    import subprocess
    import sys

    from tests.support import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("Their pure functions, for use outside a run (runnable as is)")
    code = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "screen: ai_developer_claim (teacher identity) in response at char 0: 'As an AI developed by OpenAI'",
        "[[], ['pipe_to_shell', 'ai_developer_claim']]",
        "decontaminate: prompt overlaps eval set 'gsm8k' item 12 (shares the 13-word run "
        "'natalia sold clips to 48 of her friends in april and then she')",
    ]


def test_every_unknown_name_is_reported_with_its_hint():
    # `validate` promises every problem at once: two typos are two problems, each with its did-you-mean.
    with pytest.raises(ValidationError) as info:
        ScreenStep(kind="screen", disable=["dangerus", "secretz"], rules=["emial"])
    messages = [e["msg"] for e in info.value.errors()]
    assert len(messages) == 3, messages
    assert any("'dangerus' — did you mean 'dangerous'?" in m for m in messages)
    assert any("'secretz' — did you mean 'secrets'?" in m for m in messages)
    assert any("'emial' — did you mean 'email'?" in m for m in messages)

    from distillflow.errors import SpecError
    from distillflow.spec.loader import load_spec

    text = """name: s
source: {kind: inline, rows: [{prompt: hi}]}
teachers: [{name: t, provider: openai, base_url: "http://127.0.0.1:9/v1", model: m}]
steps:
  - kind: generate
  - kind: screen
    disable: [dangerus, secretz]
"""
    with pytest.raises(SpecError) as spec_info:
        load_spec(text)
    problems = {p.path: str(p) for p in spec_info.value.problems}
    assert set(problems) == {"steps[1].disable[0]", "steps[1].disable[1]"}, problems
    assert "did you mean 'dangerous'?" in problems["steps[1].disable[0]"]
    assert "did you mean 'secrets'?" in problems["steps[1].disable[1]"]


def test_readme_screen_table_names_categories_as_yaml_takes_them():
    # The category column must show what `disable:` / `rules:` accept (`injection`), not only the
    # display name ("prompt injection"), which YAML rejects.
    from tests.support import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| rule | category | false positives on benign answers |")
    rows = [line for line in text[start:].split("\n\n", 1)[0].splitlines()[2:]]
    assert len(rows) == len(RULES)
    for row in rows:
        rule, category = (cell.strip() for cell in row.strip("|").split("|")[:2])
        name = rule.strip("`")
        assert category.startswith(f"`{RULES[name].category}`"), row
        ScreenStep(kind="screen", disable=[RULES[name].category])  # the name shown is accepted
