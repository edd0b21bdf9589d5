"""Logprob distillation (``train.mode: kd``): tokenizer check and the Axolotl KD dataset rows.

    check_tokenizers("models/teacher", "models/student")          # raises ConfigurationError when they differ
    fields = kd_fields(messages, row["teacher_top_logprobs"], tok, top_k=5)
    fields["logprobs"][0], fields["target_token_ids"][0]          # [-0.07, -3.0, ...], [10, 9, ...]

Axolotl 0.19's KD loader (``type: axolotl.integrations.kd.chat_template``, the v2 strategy) reads per
row ``messages``, ``logprobs`` (per position: K floats) and ``target_token_ids`` (per position: K ids
in the student's vocabulary). A row shorter than the tokenized conversation is padded at the *front*,
so a row covers the tail of the conversation, from the position before the answer to the end. Its
trainer compares the student's hidden state at position p (which predicts token p + 1) with entry p,
so entry p holds the teacher's distribution over token p + 1. Axolotl masks entry p by the label of
token p: the answer's first token is learned from the cross-entropy only, and the entries after the
teacher's (the chat template's closing tokens) hold the true next token with probability ~1.

Axolotl's KD collator pads ``labels``/``input_ids`` on the tokenizer's padding side but the KD fields
always on the right: with a left-padding student tokenizer every row shorter than its batch gets its
teacher entries shifted against its tokens (the student is taught the wrong next token). A KD run
therefore trains with a right-padding copy of the student's tokenizer (:func:`right_padding_tokenizer`).
"""

from __future__ import annotations

from pathlib import Path

from distillflow.errors import ConfigurationError

__all__ = ["check_tokenizers", "kd_fields", "kd_teacher", "right_padding_tokenizer", "teacher_tokenizer_source"]

# Logprobs below this are clamped: Axolotl renormalises in log space, where exp() underflow gives -inf and NaN losses.
_FLOOR = -30.0


def kd_teacher(spec) -> str:
    """Name of the teacher whose log-probabilities train the student."""
    from distillflow.spec.train import kd_teacher_k

    if spec.train.kd.teacher:
        return spec.train.kd.teacher
    ks = kd_teacher_k(spec)
    return next((n for n, k in ks.items() if k), next(iter(ks), spec.teachers[0].name))


def teacher_tokenizer_source(spec, base_dir: Path | None) -> str:
    """Where the KD teacher's tokenizer is read: ``train.kd.teacher_tokenizer``, else a local teacher's model dir."""
    from distillflow.train.render import resolve_local

    if spec.train.kd.teacher_tokenizer:
        return resolve_local(spec.train.kd.teacher_tokenizer, base_dir)
    teacher = spec.teacher(kd_teacher(spec))
    local = resolve_local(teacher.model, base_dir)
    if Path(local).is_dir():
        return local
    raise ConfigurationError(
        f"train.mode: kd needs the tokenizer of teacher '{teacher.name}' ({teacher.model}) to check it matches the "
        "student's — set train.kd.teacher_tokenizer to its directory or Hub id"
    )


def _load_tokenizer(source: str, role: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as e:  # missing dir, offline hub, broken files
        raise ConfigurationError(f"cannot load the {role} tokenizer from {source}: {type(e).__name__}: {e} — "
                                 "fix the path (train.base_model / train.kd.teacher_tokenizer)") from None


def check_tokenizers(teacher_source: str, student_source: str, teacher_name: str = "teacher") -> None:
    """Refuse KD when the teacher's and the student's vocabularies differ (token ids would mean other tokens)."""
    tv = _load_tokenizer(teacher_source, f"teacher '{teacher_name}'").get_vocab()
    sv = _load_tokenizer(student_source, "student").get_vocab()
    if tv == sv:
        return
    only_t = sorted(set(tv) - set(sv))
    only_s = sorted(set(sv) - set(tv))
    moved = sorted(t for t in set(tv) & set(sv) if tv[t] != sv[t])
    detail = (f"teacher {len(tv)} tokens, student {len(sv)}; {len(only_t)} only in the teacher's (e.g. "
              f"{only_t[:3]}), {len(only_s)} only in the student's (e.g. {only_s[:3]}), {len(moved)} with other ids")
    raise ConfigurationError(
        f"train.mode: kd needs the teacher and the student to share a tokenizer, and teacher '{teacher_name}' "
        f"({teacher_source}) and the student ({student_source}) differ: {detail} — pick a student of the teacher's "
        "family, or use train.mode: sft"
    )


def right_padding_tokenizer(tok, dest: Path) -> Path | None:
    """Save a copy of the student's tokenizer that pads on the right into ``dest``; None when it already does.

    Axolotl's KD collator (``DataCollatorForKD``) pads ``target_logprobs``/``target_token_ids``/``target_mask``
    at the end of each row whatever ``tokenizer.padding_side`` says, while ``input_ids`` and ``labels`` follow
    it: a left-padding tokenizer misaligns the teacher's entries of every row shorter than its batch by the
    padding length. The rendered config points ``tokenizer_config`` at this copy.
    """
    if getattr(tok, "padding_side", "right") == "right":
        return None
    import copy

    right = copy.deepcopy(tok)
    right.padding_side = "right"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    right.save_pretrained(str(dest))
    return dest


def _token_id(token: str, tok) -> int | None:
    """``token_id:<id>`` (vLLM, local transformers) or token text mapped through the student's tokenizer."""
    if token.startswith("token_id:"):
        return int(token.split(":", 1)[1])
    ids = tok(token, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


def conversation_ids(messages: list[dict], tok) -> list[int]:
    """Token ids of the whole conversation as the chat template renders it (what Axolotl trains on)."""
    text = tok.apply_chat_template(messages, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def kd_fields(messages: list[dict], top_logprobs: list[list[list]], tok, top_k: int) -> dict | None:
    """``logprobs`` and ``target_token_ids`` for one conversation (the last turn is the teacher's answer).

    None when the answer cannot be located in the tokenized conversation or a position has fewer than
    ``top_k`` usable alternatives (the row is then left out, counted by the export).
    """
    ids = conversation_ids(messages, tok)
    answer = tok(messages[-1]["content"], add_special_tokens=False)["input_ids"]
    start = next((a for a in range(len(ids) - len(answer), -1, -1) if ids[a : a + len(answer)] == answer), None)
    if start is None or start == 0 or not answer:
        return None
    logprobs, targets = [], []
    for pos in range(start - 1, len(ids)):
        j = pos - start + 1  # entry j scores answer token j (the teacher's last entry: its end-of-turn token)
        if j < len(top_logprobs):
            pairs = [(_token_id(str(t), tok), float(lp)) for t, lp in top_logprobs[j]]
            pairs = [(i, max(lp, _FLOOR)) for i, lp in pairs if i is not None]
            seen: set[int] = set()
            pairs = [p for p in pairs if not (p[0] in seen or seen.add(p[0]))][:top_k]
            if len(pairs) < top_k:
                return None
        else:
            nxt = ids[pos + 1] if pos + 1 < len(ids) else tok.eos_token_id
            others = [i for i in range(top_k + 1) if i != nxt][: top_k - 1]
            pairs = [(nxt, 0.0)] + [(i, _FLOOR) for i in others]
        targets.append([p[0] for p in pairs])
        logprobs.append([round(p[1], 5) for p in pairs])
    return {"logprobs": logprobs, "target_token_ids": targets}
