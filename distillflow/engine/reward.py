"""Reward-model scoring: a sequence-classification model scores each (prompt, response) chat.

distilabel 1.5.3's `RewardModelScore` passes the BatchEncoding that transformers 5 returns from
`apply_chat_template` straight to the model and fails, so we score with transformers directly,
the same way: the chat (system, user, assistant) through the model's chat template, logit 0.

    out, _ = run_reward_step(ctx, step, rows)     # adds <id>_score
"""

from __future__ import annotations

from distillflow.errors import ConfigurationError


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


def score(rows: list[dict], model_path: str, device: str = "cpu", batch_size: int = 16) -> list[float]:
    import torch

    tok, model = _load(model_path, device)
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


def run_reward_step(ctx, step, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    ctx.reporter.step_start(step.id, "reward", len(rows))
    values = score(rows, step.model, step.device or "cpu") if rows else []
    out = []
    for r, v in zip(rows, values):
        row = {**r, f"{step.id}_score": v}
        prov = dict(row.get("provenance") or {})
        prov["judges"] = {**(prov.get("judges") or {}), step.id: {"score": v, "model": step.model}}
        row["provenance"] = prov
        out.append(row)
    ctx.reporter.advance(step.id, len(rows), ctx.ledger.spent)
    return out, []
