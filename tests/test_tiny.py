"""tests.support.tiny: a tiny random chat model built locally in seconds."""

from __future__ import annotations

import hashlib

import pytest

from distillflow.errors import UsageError
from tests.support.tiny import build_tiny_chat_model

MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "model"
    return build_tiny_chat_model(path)


def _digest(path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


def test_builds_a_fresh_model(tiny, tmp_path):
    """Every file a loader needs is written (build time is measured in benchmarks, not asserted here)."""
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (tiny / name).is_file(), name
    fresh = build_tiny_chat_model(tmp_path / "fresh", seed=3)
    assert fresh == tmp_path / "fresh"
    assert sorted(f.name for f in fresh.iterdir()) == sorted(f.name for f in tiny.iterdir())


def test_loads_and_generates(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    text = tok.apply_chat_template(MESSAGES, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")

    enc = tok.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None


def test_assistant_mask_covers_only_the_answer(tiny):
    from transformers import AutoTokenizer

    path = tiny
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok.apply_chat_template(MESSAGES, return_assistant_tokens_mask=True, return_dict=True)
    ids = [i for i, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(ids) == "Paris.<|im_end|>"


def test_tokenizer_round_trips_any_text(tiny):
    from transformers import AutoTokenizer

    path = tiny
    tok = AutoTokenizer.from_pretrained(path)
    for text in ["Héllo wörld — 日本語 🙂", "  two  spaces\n\ttab", "What is 352+417?"]:
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == text


def test_idempotent_and_deterministic(tiny, tmp_path):
    path = tiny
    before = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    assert build_tiny_chat_model(path) == path  # skipped: nothing rebuilt (no file rewritten)
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == before

    again = build_tiny_chat_model(tmp_path / "again")
    assert _digest(again) == _digest(path)

    other = build_tiny_chat_model(tmp_path / "other", seed=1)
    assert _digest(other)["model.safetensors"] != _digest(path)["model.safetensors"]


def test_vocab_texts_and_size(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_chat_model(tmp_path / "m", vocab_texts=["zyzzyva quokka"] * 20, layers=1, hidden=32)
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok("zyzzyva quokka")["input_ids"]) <= 3
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 32


def test_refuses_a_foreign_directory(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not built by build_tiny_chat_model"):
        build_tiny_chat_model(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
