"""The reward step scores each answer with a real (tiny, locally built) sequence-classification model."""

from __future__ import annotations

import pytest

import distillflow as df
from tests.support import pipeline_yaml


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from tests.support.tiny import build_tiny_chat_model

    base = build_tiny_chat_model(tmp_path_factory.mktemp("m") / "tiny")
    out = tmp_path_factory.mktemp("m") / "rm"
    cfg = AutoConfig.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    cfg.num_labels, cfg.pad_token_id = 1, tok.pad_token_id
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_reward_scores_are_filterable(endpoint, write_yaml, tmp_path, reward_model):
    steps = f"  - kind: generate\n  - {{id: rm, kind: reward, model: {reward_model}}}\n  - {{kind: best_of, by: rm_score}}\n"
    res = df.run(df.load(write_yaml(pipeline_yaml(endpoint.base_url, steps))), out=tmp_path / "r", progress=False)
    scores = [r["rm_score"] for r in res.curated]
    assert len(scores) == 4 and all(isinstance(s, float) for s in scores)
    assert len(set(scores)) > 1  # different answers get different scores
    assert res.curated[0]["provenance"]["judges"]["rm"]["model"] == str(reward_model)


def test_missing_reward_model_is_a_clear_error(endpoint, write_yaml, tmp_path):
    from distillflow.errors import ConfigurationError

    steps = "  - kind: generate\n  - {id: rm, kind: reward, model: /nonexistent/rm}\n"
    with pytest.raises(ConfigurationError, match="reward model '/nonexistent/rm' could not be loaded"):
        df.run(df.load(write_yaml(pipeline_yaml(endpoint.base_url, steps))), out=tmp_path / "r", progress=False)
