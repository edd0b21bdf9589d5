"""The judge step writes the judge's verdicts into rows and provenance (issue 15).

Two real local servers: the fake teacher (answers "Answer: <question>") and a deterministic grading
endpoint (tests/evaluate/grader.py: "Score: 5" when the response contains the reference shown to the
judge, else "Score: 1"), so every score below is known in advance and a judge whose scores are dropped,
swapped or never parsed fails here.
"""

from __future__ import annotations

import json

import pytest

import distillflow as df
from tests.evaluate.grader import Grader

# question -> (reference, the score the grader gives "Answer: <question>")
CASES = {
    "Say hi": ("hi", 5.0),
    "What is 2+2?": ("4", 1.0),
    "Repeat the word red": ("red", 5.0),
    "Name a colour": ("blue", 1.0),
}


def _yaml(teacher_url: str, judge_url: str, steps: str) -> str:
    rows = "".join(f'\n    - {{question: "{q}", answer: "{a}"}}' for q, (a, _) in CASES.items())
    return f"""name: judged
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{rows}
teachers:
  - {{name: teacher, provider: openai, base_url: {teacher_url}, model: fake-teacher, params: {{temperature: 0, max_tokens: 32}}}}
  - {{name: grader, provider: openai, base_url: {judge_url}, model: grader-model, params: {{temperature: 0, max_tokens: 64}}}}
steps:
{steps}"""


@pytest.fixture
def grader():
    with Grader() as g:
        yield g


def test_judge_scores_rationales_and_provenance_per_row(endpoint, grader, write_yaml, tmp_path):
    steps = "  - {kind: generate, teachers: [teacher]}\n  - {id: grade, kind: judge, teacher: grader, rubric: correctness, reference: reference}\n"
    res = df.run(df.load(write_yaml(_yaml(endpoint.base_url, grader.base_url, steps))), out=tmp_path / "run", progress=False)
    rows = {r["prompt"]: r for r in res.curated}
    assert set(rows) == set(CASES)
    for q, (_, score) in CASES.items():
        row = rows[q]
        assert row["response"] == f"Answer: {q}"
        assert (row["grade_score"], row["grade_status"]) == (score, "scored")
        assert row["grade_rationale"] == ("contains the reference." if score == 5.0 else "wrong.")
        judged = row["provenance"]["judges"]["grade"]
        assert (judged["score"], judged["rationale"], judged["model"]) == (score, row["grade_rationale"], "grader-model")
    assert grader.requests == len(CASES)  # one verdict per answer, asked of the judge's own endpoint
    # the files in the run directory carry the same verdicts
    on_disk = [json.loads(line) for line in (res.out_dir / "data" / "curated.jsonl").read_text().splitlines()]
    assert {r["prompt"]: r["grade_score"] for r in on_disk} == {q: s for q, (_, s) in CASES.items()}


def test_a_filter_on_the_judge_score_keeps_exactly_the_good_answers(endpoint, grader, tmp_path):
    teacher = df.Teacher("teacher", provider="openai", base_url=endpoint.base_url, model="fake-teacher")
    judge = df.Teacher("grader", provider="openai", base_url=grader.base_url, model="grader-model")
    rows = [{"prompt": q, "reference": a} for q, (a, _) in CASES.items()]
    pipe = df.Pipeline("py-judged", df.Source.inline(rows) >> df.Generate(teacher)
                       >> df.Judge(judge, rubric="correctness", id="grade", reference="reference")
                       >> df.Filter("grade_score >= 4", id="good"))
    res = pipe.run(out=tmp_path / "run", progress=False)
    good = sorted(q for q, (_, s) in CASES.items() if s == 5.0)
    assert sorted(r["prompt"] for r in res.curated) == good
    rejected = {r["prompt"]: r for r in res.rejected}
    assert sorted(rejected) == sorted(set(CASES) - set(good))
    assert all(r["rejected_by"] == "good" and r["grade_score"] == 1.0 for r in rejected.values())
    assert res.manifest["counts"]["good"]["rejected"] == 2
