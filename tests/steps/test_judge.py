import copy

import pytest

from distillflow.errors import UsageError
from distillflow.steps.judge import (
    RUBRICS,
    apply_judgements,
    build_judge_messages,
    distilabel_judge_messages,
    distilabel_judge_parse,
    parse_judge_output,
    resolve_rubric,
)

ROW = {
    "id": "rec1",
    "prompt_id": "p1",
    "prompt": "What is 2+2?",
    "system": "Answer briefly.",
    "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 2+2?"}],
    "response": "4",
    "reference": "four (4)",
    "provenance": {"judges": {"old": {"score": 1.0, "rationale": "", "model": "m0"}}, "filters_passed": []},
}


# --------------------------------------------------------------------------- prompt building

def test_build_judge_messages_contains_rubric_conversation_and_format():
    msgs = build_judge_messages(ROW, RUBRICS["helpfulness"])
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    assert RUBRICS["helpfulness"] in user
    assert "<instruction>\nWhat is 2+2?\n</instruction>" in user
    assert "<response>\n4\n</response>" in user
    assert "<system_prompt>\nAnswer briefly.\n</system_prompt>" in user
    assert "reference_answer" not in user
    assert user.splitlines()[-2:] == [
        "Rationale: <a few sentences justifying the grade>",
        "Score: N   (N is an integer from 1 to 5)",
    ]


def test_build_judge_messages_reference_and_scale():
    user = build_judge_messages(ROW, RUBRICS["correctness"], reference_column="reference")[1]["content"]
    assert "<reference_answer>\nfour (4)\n</reference_answer>" in user
    no_ref = dict(ROW, reference=None)
    assert "reference_answer" not in build_judge_messages(no_ref, "Be correct.", reference_column="reference")[1]["content"]
    user10 = build_judge_messages(ROW, "Rate clarity.", scale=(0, 10))[1]["content"]
    assert "Rubric (scale 0 to 10):\nRate clarity." in user10
    assert user10.endswith("N is an integer from 0 to 10)")


def test_build_judge_messages_multi_turn_renders_transcript():
    row = dict(ROW, messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "What is 2+2?"},
    ])
    user = build_judge_messages(row, "Rate it.")[1]["content"]
    assert "[user]: Hi\n\n[assistant]: Hello!\n\n[user]: What is 2+2?" in user


def test_resolve_rubric():
    assert resolve_rubric("harmlessness") == RUBRICS["harmlessness"]
    assert resolve_rubric("  Is the answer polite? 1 = rude, 5 = polite. ") == "Is the answer polite? 1 = rude, 5 = polite."
    with pytest.raises(UsageError, match="unknown rubric 'helpfulnes'.*did you mean 'helpfulness'"):
        resolve_rubric("helpfulnes")
    with pytest.raises(UsageError, match="written for a 1-5 scale"):
        resolve_rubric("helpfulness", scale=(0, 10))


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize(
    "text,expected",
    [
        ("Rationale: Correct and concise.\nScore: 4", (4.0, "Correct and concise.", "scored")),
        ("The answer is right.\n**Score**: 4/5", (4.0, "The answer is right.", "scored")),
        ("**Rationale:** good\n**Score:** 5", (5.0, "good", "scored")),
        ("Rating: 4", (4.0, "", "scored")),
        ("Solid answer overall. [[4]]", (4.0, "Solid answer overall.", "scored")),
        ('{"score": 4, "rationale": "mostly right"}', (4.0, "mostly right", "scored")),
        ('```json\n{"Rating": "3/5", "explanation": "partial"}\n```', (3.0, "partial", "scored")),
        ('Here is my verdict: {"score": 2, "reasoning": "wrong"}', (2.0, "wrong", "scored")),
        ("Feedback: fine [RESULT] 3", (3.0, "fine", "scored")),
        ("score = 2", (2.0, "", "scored")),
        ("Final score: 4 out of 5", (4.0, "", "scored")),
        ("Score: 3.5", (3.5, "", "scored")),
        ("Score: 2 at first.\nOn reflection...\nScore: 4", (4.0, "Score: 2 at first.\nOn reflection...", "scored")),
        ("<think>Maybe Score: 1</think>Rationale: fine\nScore: 5", (5.0, "fine", "scored")),
        ("Great.\nScore: 6", (None, "Great.", "unscored")),
        ("Score: 0", (None, "", "unscored")),
        ("Score: 8/10", (None, "", "unscored")),
        ('{"score": 9}', (None, '{"score": 9}', "unscored")),
        ("I liked it a lot.", (None, "I liked it a lot.", "unscored")),
        ("Score: N/A", (None, "Score: N/A", "unscored")),
        ("", (None, "", "unscored")),
        (None, (None, "", "unscored")),
    ],
)
def test_parse_judge_output_table(text, expected):
    assert parse_judge_output(text, (1, 5)) == expected


def test_parse_judge_output_other_scale_and_garbage():
    assert parse_judge_output("Score: 8/10", (0, 10)) == (8.0, "", "scored")
    assert parse_judge_output("Score: 0", (0, 10))[0] == 0.0
    assert parse_judge_output(12345, (1, 5)) == (None, "", "unscored")  # type: ignore[arg-type]
    assert parse_judge_output("{" * 10000 + "Score: 3", (1, 5))[0] == 3.0


# --------------------------------------------------------------------------- applying

def test_apply_judgements_adds_columns_and_provenance():
    rows = [ROW, dict(ROW, id="rec2"), dict(ROW, id="rec3")]
    before = copy.deepcopy(rows)
    out = apply_judgements(rows, "quality", ["Rationale: ok\nScore: 4", "no verdict", None], model="judge-m")
    assert rows == before
    assert out[0]["quality_score"] == 4.0 and out[0]["quality_status"] == "scored"
    assert out[0]["quality_rationale"] == "ok" and out[0]["quality_raw"] == "Rationale: ok\nScore: 4"
    assert out[1]["quality_score"] is None and out[1]["quality_status"] == "unscored"
    assert out[1]["quality_rationale"] == "no verdict"
    assert out[2]["quality_raw"] == "" and out[2]["quality_status"] == "unscored"
    assert out[0]["provenance"]["judges"]["quality"] == {"score": 4.0, "rationale": "ok", "model": "judge-m"}
    assert out[0]["provenance"]["judges"]["old"]["model"] == "m0"


def test_apply_judgements_custom_parser_and_errors():
    def parser(text, row):
        if text == "bad":
            raise ValueError("cannot read")
        return 5, f"for {row['id']}", "scored"

    out = apply_judgements([ROW, ROW], "j", ["x", "bad"], model="m", parser=parser)
    assert out[0]["j_score"] == 5.0 and isinstance(out[0]["j_score"], float)
    assert out[0]["j_rationale"] == "for rec1"
    assert out[1]["j_status"] == "unscored" and "cannot read" in out[1]["j_rationale"]
    with pytest.raises(ValueError, match="1 results for 2 rows"):
        apply_judgements([ROW, ROW], "j", ["x"], model="m")


# --------------------------------------------------------------------------- distilabel back-ends

def test_prometheus_messages_use_distilabel_template():
    msgs = distilabel_judge_messages("prometheus", ROW, rubric="helpfulness")
    assert msgs[0]["role"] == "system" and msgs[0]["content"].startswith("You are a fair judge assistant")
    user = msgs[1]["content"]
    assert "###The instruction to evaluate:" in user and "What is 2+2?" in user
    assert "###Response to evaluate:\n4" in user
    assert "Does the model provide relevant and useful responses" in user  # distilabel's own rubric
    assert "Reference Answer" not in user


def test_prometheus_with_our_rubric_and_reference():
    user = distilabel_judge_messages("PrometheusEval", ROW, rubric="correctness", reference_column="reference")[1]["content"]
    assert RUBRICS["correctness"] in user
    assert "###Reference Answer (Score 5):\nfour (4)" in user
    no_ref = distilabel_judge_messages("prometheus", dict(ROW, reference=""), rubric="correctness", reference_column="reference")
    assert "Reference Answer" not in no_ref[1]["content"]


def test_prometheus_parse():
    assert distilabel_judge_parse("prometheus", "Feedback: Solid work.\n[RESULT] 4", ROW) == (4.0, "Solid work.", "scored")
    assert distilabel_judge_parse("prometheus", "Feedback: hmm [RESULT] 7", ROW)[2] == "unscored"
    assert distilabel_judge_parse("prometheus", "no result marker", ROW) == (None, "no result marker", "unscored")
    assert distilabel_judge_parse("prometheus", None, ROW) == (None, "", "unscored")


def test_prometheus_config_errors():
    with pytest.raises(UsageError, match="only mode='absolute'"):
        distilabel_judge_messages("prometheus", ROW, mode="relative")
    with pytest.raises(UsageError, match="custom rubric must read '\\[criteria\\]'.*correctness"):
        distilabel_judge_messages("prometheus", ROW, rubric="Rate it from 1 to 5 please.")
    with pytest.raises(UsageError, match="unknown parameter"):
        distilabel_judge_messages("prometheus", ROW, aspect="honesty")


def test_ultrafeedback_messages_and_parse():
    msgs = distilabel_judge_messages("ultrafeedback", ROW, aspect="honesty")
    assert "1 text outputs" in msgs[0]["content"]
    assert "Instruction: What is 2+2?" in msgs[1]["content"] and "<text 1> 4" in msgs[1]["content"]
    assert "Honesty and Uncertainty" in msgs[1]["content"]
    reply = "#### Output for Text 1\nRating: 5\nRationale: Correct and confident."
    assert distilabel_judge_parse("ultrafeedback", reply, ROW, aspect="honesty") == (5.0, "Correct and confident.", "scored")


def test_ultrafeedback_helpfulness_uses_rating_rationale():
    reply = (
        "#### Output for Text 1\nType: 1, 3\nRationale: Clear and relevant.\n"
        "Rating: 4\nRationale: Accurate but brief."
    )
    assert distilabel_judge_parse("ultrafeedback", reply, ROW, aspect="helpfulness") == (4.0, "Accurate but brief.", "scored")
    assert distilabel_judge_parse("ultrafeedback", "Rating: great\nRationale: x", ROW, aspect="honesty")[2] == "unscored"


def test_ultrafeedback_errors():
    with pytest.raises(UsageError, match="aspect 'helpfullness'.*did you mean 'helpfulness'"):
        distilabel_judge_messages("ultrafeedback", ROW, aspect="helpfullness")
    with pytest.raises(UsageError, match="unknown distilabel judge 'ultrafedback'.*did you mean 'ultrafeedback'"):
        distilabel_judge_messages("ultrafedback", ROW)


def test_backend_does_not_join_an_open_distilabel_pipeline():
    from distilabel.pipeline import Pipeline

    with Pipeline(name="distillflow-test") as pipeline:
        distilabel_judge_messages("prometheus", ROW, rubric="harmlessness")
    assert list(pipeline.dag.G.nodes) == []
