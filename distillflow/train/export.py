"""Curated rows -> Axolotl ``chat_template`` dataset (``messages`` with the teacher's answer).

    stats = export_dataset(spec, run_dir / "data" / "curated.jsonl", run_dir / "train" / "dataset.jsonl")
    stats.rows, stats.by_teacher        # 120, {"gpt": 80, "claude": 40}

Each curated row becomes one conversation: the prompt conversation exactly as it was sent to the
teacher (system prompt included) followed by ``{"role": "assistant", "content": response}``.
Axolotl trains on the assistant turn only (``roles_to_train: [assistant]`` in the rendered YAML).
"""

from __future__ import annotations

from distillflow.engine.outputs import read_jsonl

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from distillflow.errors import ConfigurationError


@dataclass
class ExportStats:
    """What went into the training set and what was left out (and why)."""

    curated: int = 0
    rows: int = 0
    by_teacher: Counter = field(default_factory=Counter)
    excluded: Counter = field(default_factory=Counter)
    review_mode: str = "none"

    def to_dict(self) -> dict:
        return {
            "curated": self.curated,
            "rows": self.rows,
            "by_teacher": dict(self.by_teacher),
            "excluded": dict(self.excluded),
            "review_mode": self.review_mode,
        }


def review_decision(row: dict) -> str | None:
    """``accepted`` / ``rejected`` when a reviewer decided on the row, else None."""
    review = (row.get("provenance") or {}).get("review")
    if isinstance(review, dict):
        decision = review.get("decision")
        return str(decision) if decision else None
    return None


def to_conversation(row: dict) -> list[dict] | None:
    """The training conversation of one curated row, or None when it has no usable answer.

    >>> to_conversation({"messages": [{"role": "user", "content": "2+2?"}], "response": "4"})
    [{'role': 'user', 'content': '2+2?'}, {'role': 'assistant', 'content': '4'}]
    """
    response = row.get("response")
    if not isinstance(response, str) or not response.strip():
        return None
    messages = row.get("messages")
    if not messages:
        # rows from older runs may only carry prompt/system: rebuild the conversation the teacher saw
        prompt = row.get("prompt")
        if not isinstance(prompt, str):
            return None
        messages = ([{"role": "system", "content": row["system"]}] if row.get("system") else []) + [
            {"role": "user", "content": prompt}
        ]
    convo = [{"role": str(m["role"]), "content": str(m.get("content") or "")} for m in messages]
    return convo + [{"role": "assistant", "content": response}]


def select_rows(rows: list[dict], review_mode: str | None, stats: ExportStats) -> list[dict]:
    """Apply the review gate: ``required`` keeps accepted rows only; a reviewer's rejection always drops a row."""
    kept = []
    for row in rows:
        decision = review_decision(row)
        if decision == "rejected":
            stats.excluded["rejected in review"] += 1
            continue
        if review_mode == "required" and decision != "accepted":
            stats.excluded["not yet accepted in review (review.mode: required)"] += 1
            continue
        kept.append(row)
    return kept


def export_dataset(spec, curated_path: Path, out_path: Path, student_tokenizer=None) -> ExportStats:
    """Write the Axolotl dataset (JSONL, one ``{"id", "teacher", "messages"}`` per line) and return its stats.

    With ``train.mode: kd`` (``student_tokenizer`` given) each line also carries ``logprobs`` and
    ``target_token_ids`` (:mod:`distillflow.train.kd`), and only the KD teacher's answers are kept.
    Raises ConfigurationError when nothing is left to train on, naming why and what to do.
    """
    curated_path, out_path = Path(curated_path), Path(out_path)
    if not curated_path.is_file():
        raise ConfigurationError(
            f"{curated_path} not found — run the pipeline first (`distillflow run PIPELINE.yaml --out RUN_DIR`) "
            "and pass that RUN_DIR"
        )
    rows = read_jsonl(curated_path)
    review_mode = spec.review.mode if spec.review else None
    stats = ExportStats(curated=len(rows), review_mode=review_mode or "none")
    kd = spec.train is not None and spec.train.mode == "kd"
    if kd:
        from distillflow.spec.train import kd_teacher_k
        from distillflow.train.kd import kd_fields, kd_teacher

        kd_name = kd_teacher(spec)
        top_k = spec.train.kd.top_k or kd_teacher_k(spec).get(kd_name) or 5
    out = []
    for row in select_rows(rows, review_mode, stats):
        convo = to_conversation(row)
        if convo is None:
            stats.excluded["empty response"] += 1
            continue
        teacher = str(row.get("teacher") or "unknown")
        record = {"id": str(row.get("id") or len(out)), "teacher": teacher, "messages": convo}
        if kd:
            if teacher != kd_name:
                stats.excluded[f"answered by {teacher}, not the KD teacher {kd_name}"] += 1
                continue
            tops = row.get("teacher_top_logprobs")
            fields = kd_fields(convo, tops, student_tokenizer, top_k) if tops else None
            if fields is None:
                stats.excluded["no teacher log-probabilities" if not tops else
                               f"log-probabilities not alignable with the student's tokens (top-{top_k})"] += 1
                continue
            record.update(fields)
        stats.by_teacher[teacher] += 1
        out.append(record)
    stats.rows = len(out)
    if kd and not out and stats.excluded.get("no teacher log-probabilities"):
        raise ConfigurationError(
            f"train.mode: kd, but teacher '{kd_name}' returned no log-probabilities in {curated_path} — its provider "
            "sent none: use train.mode: sft, or an endpoint that returns top_logprobs (vLLM, OpenAI)"
        )
    if not out:
        why = "; ".join(f"{n} {reason}" for reason, n in stats.excluded.items()) or "the curated dataset is empty"
        fix = (
            "review records in Argilla and run `distillflow review pull RUN_DIR`, or set review.mode: optional"
            if review_mode == "required"
            else "loosen the pipeline's filters and run it again"
        )
        raise ConfigurationError(f"no rows to train on in {curated_path} ({why}) — {fix}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in out:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
    return stats
