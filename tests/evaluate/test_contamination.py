"""`distillflow eval` says whether the training data was decontaminated against each scored set."""

from __future__ import annotations

from distillflow.evaluate.contamination import decontamination_status, scored_sets

MANIFEST = {"decontamination": {"decon": {"sets": ["heldout", "GSM8K"], "ngram": 13},
                                "decon_near": {"sets": ["heldout"], "ngram": 8}}}


def test_scored_sets_are_heldout_then_lm_eval_tasks():
    assert scored_sets({"lm_eval": {"tasks": {"gsm8k": {}, "mmlu": {}}}}) == ["heldout", "gsm8k", "mmlu"]
    assert scored_sets({"lm_eval": {"status": "skipped"}}) == ["heldout"]


def test_covered_and_uncovered_sets():
    status = decontamination_status(MANIFEST, ["heldout", "gsm8k", "mmlu"])
    assert status["sets"] == {
        "heldout": {"decontaminated": True, "steps": ["decon", "decon_near"], "ngram": 8},
        "gsm8k": {"decontaminated": True, "steps": ["decon"], "ngram": 13},
        "mmlu": {"decontaminated": False, "steps": [], "ngram": None},
    }
    assert status["warnings"] == [
        "training data was not decontaminated against 'mmlu': its scores may be inflated by overlap — add "
        "`{path: <your local copy>, column: <text column>, name: mmlu}` to a `decontaminate` step's `sets` "
        "and run the pipeline again"
    ]


def test_old_or_malformed_manifests_warn_for_heldout():
    for manifest in ({}, {"decontamination": None}, {"decontamination": {"x": "bad"}}, {"decontamination": []}):
        status = decontamination_status(manifest, ["heldout"])
        assert status["sets"]["heldout"]["decontaminated"] is False
        assert status["warnings"][0].startswith("training data was not decontaminated against 'heldout'")
        assert "add a `decontaminate` step" in status["warnings"][0]
