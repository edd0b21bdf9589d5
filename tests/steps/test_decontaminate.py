"""The decontaminate step against a tiny fake run context (what the engine will pass as ``ctx``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from distillflow.errors import ConfigurationError
from distillflow.steps.decontaminate import (
    KIND, DecontaminateStep, build_index, manifest_entry, match_text, normalize,
)

GSM = [
    {"id": "gsm-0", "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"},
    {"id": "gsm-1", "question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"},
]
HELDOUT = [{"prompt_id": "p1", "prompt": "Write a limerick about a cat who learns to play the violin at midnight in Paris.",
            "reference": None}]


class FakeCtx:
    """The two things decontaminate asks of a run: its base folder and its held-out prompts."""

    def __init__(self, base_dir: Path, heldout=HELDOUT):
        self.base_dir = base_dir
        self._heldout = heldout

    def heldout(self):
        return iter(self._heldout)


def step(**kw) -> DecontaminateStep:
    return DecontaminateStep(kind="decontaminate", id="decon", **kw)


def run(ctx, s, rows):
    return KIND.run(ctx, s, rows, KIND.prepare(ctx, s))


def test_normalize():
    assert normalize("  It's 4,  NOT\t5!! ") == ["it", "s", "4", "not", "5"]
    assert normalize(None) == []


def test_index_holds_hashes_not_strings():
    index = build_index([("s", "0", " ".join(f"w{i}" for i in range(20)))], ngram=13)
    assert len(index.grams) == 8 and all(isinstance(h, int) and h < 2**64 for h in index.grams)


def test_heldout_always_and_files_of_every_kind(tmp_path):
    (tmp_path / "gsm.jsonl").write_text("".join(json.dumps(r) + "\n" for r in GSM))
    with open(tmp_path / "gsm.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, ["id", "question"])
        w.writeheader()
        w.writerows(GSM)
    (tmp_path / "lines.txt").write_text("\n" + GSM[1]["question"] + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(GSM), tmp_path / "gsm.parquet")
    rows = [
        {"id": "a", "prompt": "How many clips?", "response": "natalia SOLD clips to 48 of her friends in april and then she sold half as many"},
        {"id": "b", "prompt": "Write a limerick about a cat who learns to play the violin at midnight in Paris!", "response": "..."},
        {"id": "c", "prompt": "What is 2+2?", "response": "4", "provenance": {"filters_passed": ["gen"]}},
        {"id": "d", "prompt": "q", "response": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes"},
    ]
    for spec, name, item in [
        ({"path": "gsm.jsonl", "column": "question", "id_column": "id", "name": "gsm8k"}, "gsm8k", "gsm-0"),
        ({"path": "gsm.csv", "column": "question"}, "gsm", "0"),
        ({"path": "gsm.parquet", "column": "question", "id_column": "id"}, "gsm", "gsm-0"),
    ]:
        kept, rejected = run(FakeCtx(tmp_path), step(sets=[spec]), rows)
        assert [r["id"] for r in kept] == ["c"]
        assert kept[0]["provenance"]["filters_passed"] == ["gen", "decon"]
        assert [r["rejected_by"] for r in rejected] == ["decon"] * 3
        assert rejected[0]["reason"] == (
            f"decontaminate: response overlaps eval set '{name}' item {item} (shares the 13-word run "
            "'natalia sold clips to 48 of her friends in april and then she')"
        )
        assert rejected[1]["reason"].startswith("decontaminate: prompt overlaps eval set 'heldout' item p1 ")
    kept, rejected = run(FakeCtx(tmp_path), step(sets=[{"path": "lines.txt"}]), rows)
    assert [r["id"] for r in rejected] == ["b", "d"] and "eval set 'lines' item 1 " in rejected[1]["reason"]


def test_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(GSM)}).save_to_disk(str(tmp_path / "gsm8k"))
    rows = [{"prompt": GSM[1]["question"].upper(), "response": "x"}]
    kept, rejected = run(FakeCtx(tmp_path, []), step(sets=[{"path": "gsm8k", "column": "question", "split": "test"}]), rows)
    assert kept == [] and "eval set 'gsm8k' item 1 " in rejected[0]["reason"]
    with pytest.raises(ConfigurationError, match="no split 'tset' .* did you mean 'test'"):
        KIND.prepare(FakeCtx(tmp_path, []), step(sets=[{"path": "gsm8k", "column": "question", "split": "tset"}]))


def test_short_items_match_whole_and_tiny_ones_are_skipped():
    index = build_index([("s", "0", "The capital of France?"), ("s", "1", "Name three primary colours please")], ngram=13)
    assert index.skipped == 1
    assert match_text(index, "Quiz: name three primary colours, please.").item == "1"
    assert match_text(index, "the capital of france is paris") is None


def test_near_duplicates_only_when_asked():
    item = "Natalia sold clips to forty eight of her friends in April and then she sold half as many clips in May"
    edited = "Natalia sold clips to 48 of her pals during April and then she sold half as many clips in May"
    assert match_text(build_index([("g", "0", item)]), edited) is None
    m = match_text(build_index([("g", "0", item)], near=0.4), edited)
    assert (m.set, m.item, m.share) == ("g", "0", 0.412)
    assert match_text(build_index([("g", "0", item)], near=0.5), edited) is None


def test_errors_name_path_and_column(tmp_path):
    (tmp_path / "g.jsonl").write_text(json.dumps(GSM[0]) + "\n")
    with pytest.raises(ConfigurationError, match=r"eval set 'g' .*g.jsonl\): no column 'questoin' — did you mean 'question'"):
        KIND.prepare(FakeCtx(tmp_path), step(sets=[{"path": "g.jsonl", "column": "questoin"}]))
    with pytest.raises(ConfigurationError, match=r"eval set 'missing' .* not found — check `path`"):
        KIND.prepare(FakeCtx(tmp_path), step(sets=[{"path": "missing.jsonl"}]))
    (tmp_path / "g.xlsx").write_text("x")
    with pytest.raises(ConfigurationError, match="unsupported file type '.xlsx'"):
        KIND.prepare(FakeCtx(tmp_path), step(sets=[{"path": "g.xlsx"}]))
    with pytest.raises(ValidationError, match="two eval sets are named 'heldout'"):
        step(sets=[{"path": "heldout.jsonl"}])


def test_kind_declaration_and_manifest_entry():
    s = step(sets=[{"path": "evals/gsm8k_test.jsonl", "name": "gsm8k"}, {"path": "evals/mmlu"}], ngram=8)
    assert KIND.columns(s) == ({"prompt", "response"}, set()) and KIND.scope == "row"
    assert manifest_entry(s) == {"sets": ["heldout", "gsm8k", "mmlu"], "ngram": 8}
