"""Run directories for the train tests, written directly through the spec models (no pipeline run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def curated_row(i: int, teacher: str = "teacher", review: dict | None = None, system: str | None = "Be brief.") -> dict:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": f"What is {i}+1?"}]
    return {
        "id": f"r{i:04d}", "prompt_id": f"p{i:04d}", "prompt": f"What is {i}+1?", "system": system,
        "messages": messages, "response": str(i + 1), "teacher": teacher, "generation_index": 0,
        "provenance": {"teacher": {"name": teacher}, "filters_passed": ["keep"], "review": review},
    }


def pipeline_dict(train: dict | None, teachers: list[dict] | None = None, review: dict | None = None) -> dict:
    data = {
        "name": "qa",
        "source": {"kind": "inline", "rows": [{"q": "What is 1+1?"}], "columns": {"prompt": "q"}},
        "teachers": teachers or [{"name": "teacher", "provider": "openai", "model": "gpt-x",
                                  "terms": {"allows_training": True, "source": "https://example.com/terms"}}],
        "steps": [{"kind": "generate"}, {"kind": "judge", "teacher": "teacher"},
                  {"kind": "filter", "id": "keep", "where": "judge_score >= 4"}],
    }
    if train is not None:
        data["train"] = train
    if review is not None:
        data["review"] = review
    return data


@pytest.fixture(name="pipeline_dict")
def _pipeline_dict_fixture():
    return pipeline_dict


@pytest.fixture(name="curated_row")
def _curated_row_fixture():
    return curated_row


@pytest.fixture
def make_run(tmp_path):
    """``make_run(train={...}, rows=[...])`` -> a RUN_DIR with pipeline.yaml, manifest.json, data/curated.jsonl."""
    from distillflow.spec.loader import validate_data

    def _make(train: dict | None = None, *, rows: list[dict] | None = None, teachers: list[dict] | None = None,
              review: dict | None = None, name: str = "run") -> Path:
        spec = validate_data(pipeline_dict(train, teachers, review))
        run = tmp_path / name
        (run / "data").mkdir(parents=True)
        rows = [curated_row(i) for i in range(20)] if rows is None else rows
        (run / "pipeline.yaml").write_text(spec.to_yaml())
        manifest = {"spec_hash": spec.spec_hash(), "status": "complete", "curated": len(rows), "rejected": 3,
                    "heldout": 0, "counts": {"generate": {"in": 23, "out": 23, "rejected": 0},
                                             "judge": {"in": 23, "out": 23, "rejected": 0},
                                             "keep": {"in": 23, "out": len(rows), "rejected": 3}}}
        (run / "manifest.json").write_text(json.dumps(manifest))
        (run / "data" / "curated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return run

    return _make
