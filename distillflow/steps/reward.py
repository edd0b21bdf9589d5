"""Reward-model scoring: a sequence-classification model scores each (prompt, response) chat.

distilabel 1.5.3's `RewardModelScore` passes the BatchEncoding that transformers 5 returns from
`apply_chat_template` straight to the model and fails, so we score with transformers directly,
the same way: the chat (system, user, assistant) through the model's chat template, logit 0.

    - kind: reward
      model: models/my-reward-model     # adds <id>_score
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from distillflow.errors import ConfigurationError
from distillflow.steps.base import StepBase, StepKind


class RewardStep(StepBase):
    """Score answers with a local sequence-classification reward model."""

    kind: Literal["reward"]
    model: str = Field(description="Local directory or id of a sequence-classification reward model.")
    device: str | None = None


def _load(model_path: str, device: str):
    try:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForSequenceClassification.from_pretrained(model_path).to(device).eval()
    except (OSError, ValueError) as e:
        raise ConfigurationError(f"reward model '{model_path}' could not be loaded ({e}) — give a local "
                                 "sequence-classification model directory or a Hub id") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok, model


def score(rows: list[dict], loaded, device: str = "cpu", batch_size: int = 16) -> list[float]:
    """Scores of (prompt, response) rows; ``loaded`` is a model path or ``_load``'s (tokenizer, model)."""
    import torch

    tok, model = _load(loaded, device) if isinstance(loaded, str) else loaded
    scores: list[float] = []
    for i in range(0, len(rows), batch_size):
        chats = [list(r.get("messages") or [{"role": "user", "content": r["prompt"]}])
                 + [{"role": "assistant", "content": r["response"]}] for r in rows[i : i + batch_size]]
        texts = [tok.apply_chat_template(c, tokenize=False) for c in chats]
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.no_grad():
            logits = model(**enc).logits
        scores += [float(x) for x in logits[:, 0].tolist()]
    return scores


def _prepare(ctx, step: RewardStep):
    from pathlib import Path

    model = step.model
    if not Path(model).is_absolute() and (Path(ctx.base_dir) / model).exists():
        model = str((Path(ctx.base_dir) / model).resolve())
    return _load(model, step.device or "cpu")  # once per run, before the first shard that needs it


def _run(ctx, step: RewardStep, rows: list[dict], loaded):
    values = score(rows, loaded, step.device or "cpu") if rows else []
    out = []
    for r, v in zip(rows, values):
        row = {**r, f"{step.id}_score": v}
        prov = dict(row.get("provenance") or {})
        prov["judges"] = {**(prov.get("judges") or {}), step.id: {"score": v, "model": step.model}}
        row["provenance"] = prov
        out.append(row)
    return out, []


KIND = StepKind("reward", RewardStep, _run, prepare=_prepare, scope="row", builder="Reward",
                columns=lambda step: ({"prompt", "response"}, {f"{step.id}_score"}))
