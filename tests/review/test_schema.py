import math

import pytest

from distillflow.errors import ConfigurationError
from distillflow.review.schema import ACCEPT, DECISION, QUALITY, REJECT, ReviewPlan, dataset_name, embed
from tests.review.records import make_row


def _cos(a, b):
    return sum(x * y for x, y in zip(a, b))


def test_plan_defaults_follow_the_pipeline(spec):
    plan = ReviewPlan.from_spec(spec, [make_row(1)])
    assert dataset_name(spec) == "qa-review"  # '.' is not allowed in Argilla names
    assert plan.review.workspace == "team"
    assert plan.chat is False
    assert plan.judge.column == "judge_score" and plan.judge.threshold == 4.0  # top quarter of 1-5
    assert plan.judge_columns == ["judge_score"] and plan.verify_columns == ["verify_pass"]
    assert plan.teachers == ["big", "small"]


def test_multi_turn_prompts_become_a_chat_field(spec):
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "2+2?"}]
    plan = ReviewPlan.from_spec(spec, [make_row(1), make_row(2, messages=turns)])
    assert plan.chat is True
    assert plan.prompt_value(make_row(2, messages=turns), chat=True) == turns
    assert plan.prompt_value(make_row(2, messages=turns), chat=False) == "user: hi\n\nassistant: hello\n\nuser: 2+2?"
    # a single-turn row into a chat dataset is a one-message conversation
    assert plan.prompt_value(make_row(1), chat=True) == [{"role": "user", "content": "question 1"}]


def test_suggestions_start_from_the_judge(spec):
    plan = ReviewPlan.from_spec(spec, [make_row(1)])
    good = dict((q, v) for q, v, _ in plan.suggestions(make_row(1, score=4.5)))
    bad = dict((q, v) for q, v, _ in plan.suggestions(make_row(2, score=2.0)))
    assert good == {DECISION: ACCEPT, QUALITY: 5}
    assert bad == {DECISION: REJECT, QUALITY: 2}
    assert plan.suggestions(make_row(3, score=None)) == []
    agent = plan.suggestions(make_row(1))[0][2]
    assert agent == "judge:judge/m1"


def test_judge_scale_maps_onto_quality_and_threshold_overrides(spec):
    spec.review.accept_threshold = 3
    plan = ReviewPlan.from_spec(spec, [make_row(1)])
    assert plan.judge.accepts(3) is True and plan.judge.accepts(2.9) is False
    plan.judge.scale = (1.0, 10.0)
    assert [plan.judge.to_quality(s) for s in (1, 5.5, 10)] == [1, 3, 5]


def test_unknown_score_column_names_the_columns(spec):
    spec.review.score_column = "judge_scroe"
    with pytest.raises(ConfigurationError, match="did you mean 'judge_score'"):
        ReviewPlan.from_spec(spec, [make_row(1)])


def test_record_carries_the_stable_id_fields_metadata_and_judge_opinion(spec):
    spec.review.vectors = True
    plan = ReviewPlan.from_spec(spec, [make_row(1)])
    rec = plan.record(make_row(7, system="Be brief."))
    assert rec.id == make_row(7)["id"]
    assert rec.fields["prompt"] == "question 7"
    assert rec.fields["system"] == "Be brief."
    assert rec.fields["response"] == "answer 7"
    assert "score 4" in rec.fields["judge"] and "rationale 7" in rec.fields["judge"]
    assert rec.metadata["teacher"] == "big" and rec.metadata["judge_score"] == 4.0
    assert rec.metadata["verify_pass"] == "true" and rec.metadata["response_chars"] == len("answer 7")
    assert len(rec.vectors["embedding"]) == 256


def test_embedding_is_deterministic_unit_length_and_similar_for_similar_text():
    a = embed("what is the capital of france? paris")
    assert a == embed("what is the capital of france? paris")
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-9)
    near = embed("what is the capital of france? it is paris")
    far = embed("write a haskell function that reverses a list")
    assert _cos(a, near) > 0.6 > _cos(a, far)
    assert any(embed(""))  # never all-zero: Argilla refuses those
