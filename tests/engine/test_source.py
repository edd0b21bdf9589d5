"""Prompt sources: every kind reads real files; mapping, messages, limit/shuffle and errors."""

from __future__ import annotations

import json

import pytest

from distillflow.engine.source import load_source
from distillflow.errors import ConfigurationError, SpecError
from distillflow.spec.models import SourceSpec

ROWS = [{"q": f"question {i}", "a": str(i)} for i in range(6)]


def _src(**kw):
    return SourceSpec.model_validate({"columns": {"prompt": "q", "reference": "a"}, **kw})


@pytest.fixture
def files(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (tmp_path / "p.csv").write_text("q,a\n" + "".join(f"{r['q']},{r['a']}\n" for r in ROWS))
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "p.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "disk"))
    hub = tmp_path / "hubrepo"
    hub.mkdir()
    (hub / "train.jsonl").write_text((tmp_path / "p.jsonl").read_text())
    return tmp_path


@pytest.mark.parametrize("kind,path", [("jsonl", "p.jsonl"), ("csv", "p.csv"), ("parquet", "p.parquet"), ("disk", "disk")])
def test_file_kinds(files, kind, path):
    rows, heldout, dropped = load_source(_src(kind=kind, path=path), files)
    assert [r["prompt"] for r in rows] == [r["q"] for r in ROWS]
    assert rows[2]["reference"] == "2" and rows[2]["messages"] == [{"role": "user", "content": "question 2"}]
    assert rows[2]["source"]["row"] == 2 and len(rows[2]["prompt_id"]) == 16 and not dropped


def test_hub_kind_uses_datasets_load_dataset(files):
    # no hub is reachable here: load_dataset resolves a local dataset repo directory the same way
    rows, _, _ = load_source(_src(kind="hub", dataset=str(files / "hubrepo")), files)
    assert len(rows) == 6 and rows[0]["prompt"] == "question 0"


def test_hub_unreachable_is_a_clear_error(files):
    with pytest.raises(ConfigurationError, match="could not load Hub dataset 'nobody/nothing'"):
        load_source(_src(kind="hub", dataset="nobody/nothing"), files)


def test_limit_shuffle_heldout_are_seeded(tmp_path):
    # 20 rows: a shuffle that leaves them in file order, or ignores its seed, is caught here
    n = 20
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"q": f"question {i}", "a": str(i)}) + "\n" for i in range(n)))
    file_order = [f"question {i}" for i in range(n)]

    def order(**kw):
        rows, held, _ = load_source(_src(kind="jsonl", path="p.jsonl", **kw), tmp_path)
        return [r["prompt"] for r in rows], [r["prompt"] for r in held]

    assert order() == (file_order, [])  # no shuffle: file order
    s3, _ = order(shuffle=True, seed=3)
    assert sorted(s3) == sorted(file_order) and s3 != file_order  # every row, another order
    assert order(shuffle=True, seed=3) == (s3, [])  # same seed, same order
    s4, _ = order(shuffle=True, seed=4)
    assert sorted(s4) == sorted(file_order) and s4 != s3  # another seed, another order
    # limit keeps the first rows of the shuffled order, not of the file
    assert order(shuffle=True, seed=3, limit=5) == (s3[:5], [])
    assert order(limit=5) == (file_order[:5], [])
    # held-out prompts come out of the limited rows, seeded on their own, disjoint from training
    kept, held = order(shuffle=True, seed=3, limit=10, heldout={"size": 3, "seed": 0})
    assert len(held) == 3 and len(kept) == 7 and sorted(kept + held) == sorted(s3[:10])
    assert [p for p in s3[:10] if p in kept] == kept  # the training rows keep their shuffled order
    assert order(shuffle=True, seed=3, limit=10, heldout={"size": 3, "seed": 0}) == (kept, held)
    _, held_other = order(shuffle=True, seed=3, limit=10, heldout={"size": 3, "seed": 1})
    assert held_other != held


def test_chat_messages_and_system_prompt(tmp_path):
    conv = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "old answer"}]
    src = SourceSpec.model_validate({"kind": "inline", "rows": [{"messages": conv}, {"messages": "not a list"}],
                                     "system_prompt": "ignored: the conversation has one"})
    rows, _, dropped = load_source(src, tmp_path)
    assert rows[0]["messages"] == conv[:2] and rows[0]["system"] == "Be terse." and rows[0]["prompt"] == "hi"
    assert dropped[0]["rejected_by"] == "source" and "messages" in dropped[0]["reason"]


def test_mapping_to_missing_column_names_the_column(files):
    with pytest.raises(SpecError, match=r"source.columns.prompt: column 'question' is not in the source — source columns: a, q"):
        load_source(SourceSpec.model_validate({"kind": "jsonl", "path": "p.jsonl", "columns": {"prompt": "question"}}), files)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_source(_src(kind="jsonl", path="nope.jsonl"), tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"q": "x"}\n{oops\n')
    with pytest.raises(ConfigurationError, match=r"bad.jsonl:2: not valid JSON"):
        load_source(_src(kind="jsonl", path="bad.jsonl"), tmp_path)


def test_heldout_larger_than_data(files):
    with pytest.raises(ConfigurationError, match="lower heldout.size"):
        load_source(_src(kind="jsonl", path="p.jsonl", heldout={"size": 6}), files)
