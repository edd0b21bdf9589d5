"""Curated rows -> chat_template conversations, with the review gate."""

from __future__ import annotations

import json

import pytest

from distillflow.errors import ConfigurationError
from distillflow.spec.loader import validate_data
from distillflow.train.export import export_dataset, to_conversation


def _spec(pipeline_dict, review=None):
    return validate_data(pipeline_dict({"base_model": "m"}, review=review))


def _write(tmp_path, rows):
    p = tmp_path / "curated.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_conversation_keeps_system_and_appends_the_answer(tmp_path, pipeline_dict, curated_row):
    rows = [curated_row(1), curated_row(2, system=None, teacher="other")]
    stats = export_dataset(_spec(pipeline_dict), _write(tmp_path, rows), tmp_path / "out.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out[0]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1+1?"},
                                  {"role": "assistant", "content": "2"}]
    assert out[1]["messages"][0]["role"] == "user" and out[1]["teacher"] == "other" and out[1]["id"] == "r0002"
    assert stats.rows == 2 and dict(stats.by_teacher) == {"teacher": 1, "other": 1} and stats.review_mode == "none"


def test_rows_without_messages_are_rebuilt_and_empty_answers_dropped(tmp_path, pipeline_dict):
    assert to_conversation({"prompt": "hi", "system": "s", "response": "yo"}) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert to_conversation({"messages": [{"role": "user", "content": "x"}], "response": "  "}) is None
    rows = [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": None}]
    stats = export_dataset(_spec(pipeline_dict), _write(tmp_path, rows), tmp_path / "o.jsonl")
    assert stats.rows == 1 and stats.excluded["empty response"] == 1


def test_review_required_keeps_accepted_rows_only(tmp_path, pipeline_dict, curated_row):
    rows = [curated_row(1, review={"decision": "accepted"}), curated_row(2, review={"decision": "rejected"}),
            curated_row(3), curated_row(4, review={"decision": "accepted", "reviewer": "ana"})]
    stats = export_dataset(_spec(pipeline_dict, {"mode": "required"}), _write(tmp_path, rows), tmp_path / "o.jsonl")
    ids = [json.loads(line)["id"] for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert ids == ["r0001", "r0004"] and stats.review_mode == "required"
    assert stats.excluded == {"rejected in review": 1, "not yet accepted in review (review.mode: required)": 1}


def test_review_optional_trains_unreviewed_but_never_rejected(tmp_path, pipeline_dict, curated_row):
    rows = [curated_row(1, review={"decision": "rejected"}), curated_row(2)]
    stats = export_dataset(_spec(pipeline_dict, {"mode": "optional"}), _write(tmp_path, rows), tmp_path / "o.jsonl")
    assert stats.rows == 1 and stats.excluded["rejected in review"] == 1


def test_nothing_to_train_on_says_why_and_what_to_do(tmp_path, pipeline_dict, curated_row):
    rows = [curated_row(1), curated_row(2)]
    with pytest.raises(ConfigurationError) as e:
        export_dataset(_spec(pipeline_dict, {"mode": "required"}), _write(tmp_path, rows), tmp_path / "o.jsonl")
    assert "2 not yet accepted in review" in str(e.value) and "distillflow review pull" in str(e.value)
    assert not (tmp_path / "o.jsonl").exists()
    with pytest.raises(ConfigurationError, match="curated.jsonl not found — run the pipeline first"):
        export_dataset(_spec(pipeline_dict), tmp_path / "nope" / "curated.jsonl", tmp_path / "o.jsonl")
