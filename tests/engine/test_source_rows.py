"""The source reader's row contract, asserted whole (kills the mutants `make mutation` found surviving
in `engine/source.py`: default column mapping, dropped-row reasons, message validation, system prompt
position, provenance fields)."""

from __future__ import annotations

import hashlib
import json

import pytest

from distillflow.engine.source import load_source
from distillflow.errors import SpecError
from distillflow.spec.models import SourceSpec


def _inline(rows, **kw):
    return load_source(SourceSpec.model_validate({"kind": "inline", "rows": rows, **kw}))


def _pid(messages) -> str:  # the documented id: sha1 of the sorted-key JSON, 16 hex digits
    return hashlib.sha1(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def test_one_row_whole_mapped_columns_renamed_extra_columns_kept(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"q": "What is 2+2?", "a": "4", "topic": "math"}) + "\n")
    src = SourceSpec.model_validate({"kind": "jsonl", "path": "p.jsonl", "columns": {"prompt": "q", "reference": "a"},
                                     "system_prompt": "Be terse."})
    rows, held, dropped = load_source(src, tmp_path)
    msgs = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "What is 2+2?"}]
    where = {"name": "p.jsonl", "kind": "jsonl", "row": 0}
    assert rows == [{
        "topic": "math", "prompt": "What is 2+2?", "reference": "4", "messages": msgs, "system": "Be terse.",
        "prompt_id": _pid(msgs), "source": where, "provenance": {"source": where, "filters_passed": []},
    }]
    assert held == [] and dropped == []


def test_default_mapping_prompt_or_messages():
    rows, _, _ = _inline([{"prompt": "hi"}])
    assert rows[0]["messages"] == [{"role": "user", "content": "hi"}] and rows[0]["system"] is None
    conv = [{"role": "user", "content": "hello"}]
    rows, _, _ = _inline([{"messages": conv}])
    assert rows[0]["messages"] == conv and rows[0]["prompt"] == "hello"
    # both columns present: `prompt` wins (messages is then just another column)
    rows, _, _ = _inline([{"messages": [{"role": "user", "content": "from messages"}], "prompt": "from prompt"}])
    assert rows[0]["prompt"] == "from prompt" and rows[0]["messages"] == [{"role": "user", "content": "from prompt"}]
    # the first row decides; a later row with messages only has no prompt
    rows, _, dropped = _inline([{"prompt": "a"}, {"messages": conv}])
    assert [r["prompt"] for r in rows] == ["a"] and dropped[0]["reason"] == "empty prompt"


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_empty_prompts_are_dropped_with_the_reason(value):
    rows, _, dropped = _inline([{"prompt": "ok"}, {"prompt": value}])
    assert [r["prompt"] for r in rows] == ["ok"]
    assert [(d["rejected_by"], d["reason"], d["source"]["row"]) for d in dropped] == [("source", "empty prompt", 1)]


BAD_MESSAGES = [
    "not json",
    [],
    [{"role": "user"}],                       # no content
    [{"role": "robot", "content": "x"}],      # unknown role
    [{"role": "user", "content": 3}],         # content not text
    ["user: hi"],                             # not a dict
]


@pytest.mark.parametrize("msgs", BAD_MESSAGES)
def test_malformed_messages_are_dropped(msgs):
    rows, _, dropped = _inline([{"messages": [{"role": "user", "content": "fine"}]}, {"messages": msgs}])
    assert len(rows) == 1 and len(dropped) == 1
    assert dropped[0]["reason"] == "messages is not a list of {role, content} with roles system/user/assistant"


def test_messages_as_json_text_and_conversations_without_a_user_turn():
    conv = [{"role": "user", "content": "hi", "name": "dropped"}]
    rows, _, dropped = _inline([{"messages": json.dumps(conv)}, {"messages": [{"role": "system", "content": "s"}]}])
    assert rows[0]["messages"] == [{"role": "user", "content": "hi"}]  # only role and content are kept
    assert [d["reason"] for d in dropped] == ["no user message"] and dropped[0]["prompt"] == ""


def test_system_prompt_goes_first_and_only_when_missing():
    rows, _, _ = _inline([{"messages": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
                                        {"role": "user", "content": "u2"}]}], system_prompt="S")
    assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant", "user"]
    assert rows[0]["messages"][0]["content"] == "S" and rows[0]["system"] == "S" and rows[0]["prompt"] == "u2"


def test_missing_column_error_names_the_file(tmp_path):
    (tmp_path / "p.jsonl").write_text(json.dumps({"q": "x", "a": "1"}) + "\n")
    with pytest.raises(SpecError) as err:
        load_source(SourceSpec.model_validate({"kind": "jsonl", "path": "p.jsonl", "columns": {"prompt": "qq"}}), tmp_path)
    assert str(err.value) == ("1 error in p.jsonl:\n  source.columns.prompt: column 'qq' is not in the source"
                              " — did you mean 'q'?")


def test_duplicate_prompts_keep_the_first():
    rows, _, dropped = _inline([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}, {"prompt": "a"}])
    assert [r["prompt"] for r in rows] == ["a", "b"] and [r["source"]["row"] for r in rows] == [0, 1]
    assert [(d["source"]["row"], d["reason"]) for d in dropped] == [(2, "duplicate prompt"), (3, "duplicate prompt")]
    # an empty prompt is dropped as empty, and its conversation holds "" (not "None")
    _, _, dropped = _inline([{"prompt": "a"}, {"prompt": None}])
    assert dropped[0]["messages"] == [{"role": "user", "content": ""}] and dropped[0]["reason"] == "empty prompt"
