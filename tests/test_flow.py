"""The Python front door builds the same spec as YAML; distilabel steps are nodes too."""

from __future__ import annotations

import pytest
import yaml

import distillflow as df
from tests.support import pipeline_yaml
from distillflow.errors import UsageError
from distillflow.spec.loader import load_spec


def ends_in_four(response: str, row: dict) -> bool:
    return "2+2" in response


def _python_pipeline(base_url: str):
    teacher = df.Teacher("teacher", provider="openai", base_url=base_url, model="fake-teacher",
                         params={"temperature": 0.5, "max_tokens": 32}, price={"input_per_1m": 1.0, "output_per_1m": 2.0})
    prompts = df.Source.inline(
        [{"question": "What is 2+2?", "answer": "4"}, {"question": "Say hi", "answer": "hi"}],
        columns={"prompt": "question", "reference": "answer"},
    )
    return df.Pipeline(
        "t",
        prompts >> df.Generate(teacher, num_generations=2) >> df.Verify("contains", reference="reference") >> df.Filter("verify_pass"),
    )


YAML_STEPS = """  - kind: generate
    teachers: [teacher]
    num_generations: 2
  - kind: verify
    check: contains
    reference: reference
  - kind: filter
    where: verify_pass
"""
ROWS = """
    - {question: "What is 2+2?", answer: "4"}
    - {question: "Say hi", answer: "hi"}"""


def test_python_and_yaml_build_the_same_spec(endpoint):
    py = _python_pipeline(endpoint.base_url).spec
    ym = load_spec(pipeline_yaml(endpoint.base_url, YAML_STEPS, rows=ROWS))
    assert py.to_dict() == ym.to_dict()


def test_to_yaml_round_trips(endpoint):
    pipe = _python_pipeline(endpoint.base_url)
    text = pipe.to_yaml()
    again = load_spec(text)
    assert again.to_dict() == pipe.spec.to_dict()
    assert "after" not in text  # a linear chain needs no explicit edges
    assert yaml.safe_load(text)["steps"][0] == {"id": "generate", "kind": "generate", "teachers": ["teacher"], "num_generations": 2}


def test_to_yaml_keeps_line_separators_in_rows(endpoint):
    # text scraped from the web holds U+0085 and U+2028; PyYAML's pure emitter put such a string in
    # single quotes and folded it over lines, so the reloaded row read " " where it had "\x85"
    rows = [{"question": f"first line{sep}second line", "answer": "4"} for sep in ("\x85", "\u2028", "\u2029", "\r\n", "\t")]
    rows.append({"question": 'it\'s "quoted"\x85and more', "answer": "4"})
    teacher = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")
    pipe = df.Pipeline("t", df.Source.inline(rows, columns={"prompt": "question"}) >> df.Generate(teacher))
    again = load_spec(pipe.to_yaml())
    assert again.to_dict() == pipe.spec.to_dict()
    assert [r["question"] for r in again.source.rows] == [r["question"] for r in rows]


def test_branches_and_python_verifier_run(endpoint, tmp_path):
    teacher = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")
    gen = df.Source.inline([{"prompt": "What is 2+2?"}, {"prompt": "What is 3+3?"}]) >> df.Generate(teacher)
    check = df.Verify(ends_in_four, id="four")
    judge = df.Judge(teacher, rubric="correctness", id="grade")
    last = gen >> [check, judge] >> df.Filter("four_pass", id="keep")
    pipe = df.Pipeline("branch", last)
    assert pipe.spec.steps[-1].after == ["four", "grade"]
    res = pipe.run(out=tmp_path / "run", progress=False)
    assert [r["prompt"] for r in res.curated] == ["What is 2+2?"]
    assert "grade_status" in res.curated[0]
    text = pipe.to_yaml()  # a module-level function is addressable as module:function
    assert "check: test_flow:ends_in_four" in text


def test_lambda_verifier_cannot_go_to_yaml(endpoint):
    teacher = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="m")
    pipe = df.Pipeline("x", df.Source.inline([{"prompt": "a"}]) >> df.Generate(teacher) >> df.Verify(lambda r, row: True))
    with pytest.raises(UsageError, match="cannot be written to YAML"):
        pipe.to_yaml()


def test_bad_composition_is_a_clear_error():
    with pytest.raises(UsageError, match="expected a distillflow step"):
        df.Source.inline([{"prompt": "a"}]) >> 42


def test_distilabel_task_by_name_in_yaml(endpoint, write_yaml, tmp_path):
    steps = """  - kind: generate
  - kind: distilabel
    step: TextGeneration
    teacher: teacher
    input_mappings: {instruction: prompt}
    output_mappings: {generation: second_opinion}
  - kind: filter
    where: "len(second_opinion) > 0"
"""
    res = df.run(df.load(write_yaml(pipeline_yaml(endpoint.base_url, steps))), out=tmp_path / "r", progress=False)
    row = res.curated[0]
    assert row["second_opinion"].startswith("Answer: ")
    assert res.manifest["teachers"]["teacher"]["requests"] == 8  # 4 generate + 4 through distilabel, same ledger


def test_distilabel_unknown_step_and_bad_param(endpoint, write_yaml):
    from distillflow.errors import SpecError

    steps = "  - kind: generate\n  - {kind: distilabel, step: TextGenration, teacher: teacher}\n"
    with pytest.raises(SpecError, match="did you mean 'TextGeneration'"):
        df.load(write_yaml(pipeline_yaml(endpoint.base_url, steps)))


def test_distilabel_problems_name_their_yaml_line_on_one_line(endpoint, write_yaml):
    """A distilabel class's own refusal (Magpie needs an LLM with its chat-template mixin) and a
    misspelled parameter: each with the step's YAML line, on one line (before: no line, and
    distilabel's multi-line text with "Value error, " and a path ending in "params.")."""
    from distillflow.errors import SpecError

    steps = ("  - kind: generate\n"
             "  - {id: mg, kind: distilabel, step: Magpie, teacher: teacher, params: {n_turns: 1}}\n"
             "  - id: ev\n    kind: distilabel\n    step: EvolInstruct\n    teacher: teacher\n"
             "    params:\n      num_evolutions: 1\n      num_evolutionz: 2\n")
    path = write_yaml(pipeline_yaml(endpoint.base_url, steps))
    with pytest.raises(SpecError) as info:
        df.load(path)
    text = path.read_text().splitlines()
    by_path = {p.path: p for p in info.value.problems}
    magpie = by_path["steps[mg].params"]
    assert "MagpieChatTemplateMixin" in magpie.message and "\n" not in magpie.message
    assert not magpie.message.startswith("Value error")
    assert "Magpie" in text[magpie.line - 1]
    typo = by_path["steps[ev].params.num_evolutionz"]
    assert typo.hint == "did you mean 'num_evolutions'?" and "num_evolutionz" in text[typo.line - 1]


def test_distilabel_object_in_python_pipeline(endpoint, tmp_path):
    from distilabel.steps.tasks import TextGeneration

    teacher = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")
    task = TextGeneration(llm=df.llm(teacher), input_mappings={"instruction": "prompt"},
                          output_mappings={"generation": "response"})
    pipe = df.Pipeline("obj", df.Source.inline([{"prompt": "Hello there"}]) >> task >> df.Filter("len(response) > 3"))
    res = pipe.run(out=tmp_path / "r", progress=False)
    assert res.curated[0]["response"] == "Answer: Hello there" and res.curated[0]["id"]
