"""The Argilla dataset a pipeline's review gets: fields, questions, metadata, suggestions, vectors.

    plan = ReviewPlan.from_spec(spec, rows)
    settings = plan.settings()                 # an argilla.Settings (argilla imported lazily)
    record = plan.record(row)                  # an argilla.Record whose id is the row's stable id

Everything that decides *what* goes to Argilla lives here as plain data, so it is unit-tested
without a server; push.py only moves it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field

from distillflow.errors import ConfigurationError
from distillflow.spec.review import ReviewSpec

# Names shared by push, pull and the README: changing one breaks datasets already pushed.
PROMPT, SYSTEM, RESPONSE, JUDGE = "prompt", "system", "response", "judge"
DECISION, QUALITY, CORRECTION, COMMENT = "decision", "quality", "corrected_response", "comment"
ACCEPT, REJECT = "accept", "reject"
VECTOR = "embedding"
VECTOR_DIMS = 256
QUALITY_VALUES = [1, 2, 3, 4, 5]

GUIDELINES = """\
You are reviewing answers a teacher model gave, before they are used to train a student model.

* **decision** — *accept* keeps the record for training; *reject* removes it (it moves to the
  rejected split with your comment as the reason). To fix an answer rather than drop it, choose
  *accept* and write the fixed text in **corrected_response**.
* **quality** — 1 (useless) to 5 (excellent); optional, used to measure the judge.
* **corrected_response** — optional: the answer as it should be. It replaces the teacher's
  answer in training; the original is kept in the record's provenance.
* **comment** — optional: why. For a rejection it becomes the recorded reason.

The form starts from the LLM judge's opinion (its decision and score are pre-filled as
suggestions, its rationale is shown above the answer): change what you disagree with.
"""


def dataset_name(spec) -> str:
    """Argilla dataset names allow letters, digits, '-', '_' and spaces."""
    review = spec.review or ReviewSpec()
    return re.sub(r"[^A-Za-z0-9_ -]", "-", review.dataset or spec.name)


def _meta_name(column: str) -> str:
    # Argilla metadata names: lowercase letters, digits, '_' and '-'.
    return re.sub(r"[^a-z0-9_-]", "_", column.lower())


def embed(text: str, dims: int = VECTOR_DIMS) -> list[float]:
    """A deterministic hashed bag-of-words vector (unit length) for similarity browsing.

    No model to download: words and word pairs are hashed into ``dims`` signed buckets, so texts
    sharing vocabulary land close together.
    """
    words = re.findall(r"\w+", text.lower())
    vec = [0.0] * dims
    for gram in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
        h = hashlib.blake2b(gram.encode(), digest_size=8).digest()
        vec[int.from_bytes(h[:4], "little") % dims] += 1.0 if h[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    if not norm:
        vec[0] = 1.0  # Argilla refuses all-zero vectors
        return vec
    return [v / norm for v in vec]


def _conversation_text(messages: list[dict]) -> str:
    return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages)


@dataclass
class JudgeInfo:
    """The judge step whose score pre-fills the form and is compared with the humans."""

    step_id: str
    column: str
    scale: tuple[float, float]
    threshold: float

    def accepts(self, score) -> bool | None:
        return None if score is None else float(score) >= self.threshold

    def to_quality(self, score) -> int | None:
        """Map a judge score on its scale onto the 1-5 quality rating."""
        if score is None:
            return None
        lo, hi = self.scale
        frac = 0.0 if hi == lo else (float(score) - lo) / (hi - lo)
        return max(1, min(5, math.floor(1.5 + 4 * frac)))  # half up: 4.5 -> 5


@dataclass
class ReviewPlan:
    """What a run's records look like in Argilla (see module docstring)."""

    review: ReviewSpec
    chat: bool
    judge: JudgeInfo | None
    judge_columns: list[str] = field(default_factory=list)
    verify_columns: list[str] = field(default_factory=list)
    teachers: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec, rows: list[dict]) -> "ReviewPlan":
        review = spec.review or ReviewSpec()
        judges = [s for s in spec.steps if s.kind == "judge"]
        judge = None
        score_column = review.score_column or (f"{judges[0].id}_score" if judges else None)
        if score_column is not None:
            step = next((s for s in judges if f"{s.id}_score" == score_column), None)
            if step is None and review.score_column and not any(score_column in r for r in rows):
                from distillflow.errors import did_you_mean

                cols = sorted({k for r in rows for k in r if k.endswith("_score")})
                hint = did_you_mean(score_column, cols)
                raise ConfigurationError(
                    f"review.score_column: no column '{score_column}' in the curated rows"
                    + (f" — {hint}" if hint else f" (score columns: {', '.join(cols) or 'none'})")
                )
            scale = tuple(float(x) for x in (step.scale if step else (1, 5)))
            threshold = review.accept_threshold
            if threshold is None:  # the top quarter of the scale: 4 on 1-5
                threshold = scale[0] + 0.75 * (scale[1] - scale[0])
            judge = JudgeInfo(step.id if step else score_column, score_column, scale, float(threshold))
        return cls(
            review=review,
            chat=any(len([m for m in r.get("messages") or [] if m.get("role") != "system"]) > 1 for r in rows),
            judge=judge,
            judge_columns=[f"{s.id}_score" for s in judges],
            verify_columns=[f"{s.id}_pass" for s in spec.steps if s.kind == "verify"],
            teachers=[t.name for t in spec.teachers],
        )

    # ------------------------------------------------------------------ settings

    def settings(self):
        import argilla as rg

        prompt_field = (
            rg.ChatField(PROMPT, title="Prompt", required=True)
            if self.chat
            else rg.TextField(PROMPT, title="Prompt", required=True, use_markdown=True)
        )
        metadata = [
            rg.TermsMetadataProperty("teacher", options=self.teachers or None, title="Teacher"),
            rg.IntegerMetadataProperty("prompt_chars", title="Prompt length (chars)"),
            rg.IntegerMetadataProperty("response_chars", title="Response length (chars)"),
            rg.IntegerMetadataProperty("output_tokens", title="Output tokens"),
            rg.FloatMetadataProperty("cost_usd", title="Cost (USD)"),
        ]
        metadata += [rg.FloatMetadataProperty(_meta_name(c), title=c) for c in self.judge_columns]
        metadata += [rg.TermsMetadataProperty(_meta_name(c), options=["true", "false"], title=c) for c in self.verify_columns]
        return rg.Settings(
            guidelines=GUIDELINES,
            fields=[
                prompt_field,
                rg.TextField(SYSTEM, title="System prompt", required=False),
                rg.TextField(RESPONSE, title="Teacher response", required=True, use_markdown=True),
                rg.TextField(JUDGE, title="Judge's opinion", required=False, use_markdown=True),
            ],
            questions=[
                rg.LabelQuestion(
                    DECISION, labels={ACCEPT: "Accept", REJECT: "Reject"}, title="Keep this answer for training?",
                    required=True,
                ),
                rg.RatingQuestion(QUALITY, values=QUALITY_VALUES, title="Quality (1-5)", required=False),
                rg.TextQuestion(
                    CORRECTION, title="Corrected response (optional: replaces the teacher's answer)",
                    required=False, use_markdown=True,
                ),
                rg.TextQuestion(COMMENT, title="Comment (the reason, for a rejection)", required=False),
            ],
            metadata=metadata,
            vectors=[rg.VectorField(VECTOR, dimensions=VECTOR_DIMS, title="Similar prompt+response")]
            if self.review.vectors
            else [],
            allow_extra_metadata=True,
        )

    # ------------------------------------------------------------------ records

    def prompt_value(self, row: dict, chat: bool):
        turns = [m for m in row.get("messages") or [] if m.get("role") != "system"]
        if not turns:
            turns = [{"role": "user", "content": str(row.get("prompt") or "")}]
        if chat:
            return [{"role": str(m.get("role", "user")), "content": str(m.get("content") or "")} for m in turns]
        return turns[0]["content"] if len(turns) == 1 else _conversation_text(turns)

    def judge_text(self, row: dict) -> str:
        parts = []
        prov = row.get("provenance") or {}
        for jid, j in (prov.get("judges") or {}).items():
            score = j.get("score")
            head = f"**{jid}**: score {score:g}" if isinstance(score, (int, float)) else f"**{jid}**: no score"
            rationale = (j.get("rationale") or "").strip()
            parts.append(head + (f" — {rationale}" if rationale else ""))
        for vid, v in (prov.get("verifiers") or {}).items():
            parts.append(f"**{vid}**: {'pass' if v.get('pass') else 'fail'}" + (f" ({v['detail']})" if v.get("detail") else ""))
        return "\n\n".join(parts)

    def metadata(self, row: dict) -> dict:
        meta = {
            "teacher": row.get("teacher"),
            "prompt_chars": len(str(row.get("prompt") or "")),
            "response_chars": len(str(row.get("response") or "")),
            "output_tokens": row.get("output_tokens"),
            "cost_usd": row.get("cost_usd"),
        }
        for c in self.judge_columns:
            meta[_meta_name(c)] = row.get(c)
        for c in self.verify_columns:
            meta[_meta_name(c)] = None if row.get(c) is None else str(bool(row.get(c))).lower()
        return {k: v for k, v in meta.items() if v is not None}

    def suggestions(self, row: dict) -> list[tuple[str, object, str]]:
        """``(question, value, agent)`` pre-filled from the judge: the reviewer starts from its opinion."""
        if self.judge is None:
            return []
        score = row.get(self.judge.column)
        if score is None:
            return []
        model = ((row.get("provenance") or {}).get("judges") or {}).get(self.judge.step_id, {}).get("model")
        # Argilla agents allow letters, digits and - _ : . / only.
        agent = re.sub(r"[^A-Za-z0-9_:./-]", "-", f"judge:{self.judge.step_id}" + (f"/{model}" if model else ""))[:200]
        return [
            (DECISION, ACCEPT if self.judge.accepts(score) else REJECT, agent),
            (QUALITY, self.judge.to_quality(score), agent),
        ]

    def record(self, row: dict, *, chat: bool | None = None, with_vectors: bool | None = None):
        import argilla as rg

        chat = self.chat if chat is None else chat
        system = row.get("system") or next(
            (m.get("content") for m in row.get("messages") or [] if m.get("role") == "system"), None
        )
        fields = {PROMPT: self.prompt_value(row, chat), RESPONSE: str(row.get("response") or "")}
        if system:
            fields[SYSTEM] = str(system)
        judge = self.judge_text(row)
        if judge:
            fields[JUDGE] = judge
        vectors = None
        if self.review.vectors if with_vectors is None else with_vectors:
            vectors = {VECTOR: embed(f"{row.get('prompt') or ''}\n{row.get('response') or ''}")}
        return rg.Record(
            id=str(row["id"]),
            fields=fields,
            metadata=self.metadata(row),
            vectors=vectors,
            suggestions=[rg.Suggestion(q, v, agent=a) for q, v, a in self.suggestions(row)],
        )


def check_compatible(dataset) -> tuple[bool, list[str]]:
    """Whether an existing Argilla dataset can take our records: ``(prompt_is_chat, problems)``."""
    import argilla as rg

    problems: list[str] = []
    fields = {f.name: f for f in dataset.settings.fields}
    questions = {q.name: q for q in dataset.settings.questions}
    prompt = fields.get(PROMPT)
    if prompt is None or not isinstance(prompt, (rg.TextField, rg.ChatField)):
        problems.append(f"no text or chat field '{PROMPT}'")
    if not isinstance(fields.get(RESPONSE), rg.TextField):
        problems.append(f"no text field '{RESPONSE}'")
    for name, f in fields.items():
        if name not in (PROMPT, SYSTEM, RESPONSE, JUDGE) and f.required:
            problems.append(f"required field '{name}' that distillflow does not fill")
    decision = questions.get(DECISION)
    if not isinstance(decision, rg.LabelQuestion) or not {ACCEPT, REJECT} <= set(decision.labels or []):
        problems.append(f"no label question '{DECISION}' with labels '{ACCEPT}' and '{REJECT}'")
    expected = {QUALITY: rg.RatingQuestion, CORRECTION: rg.TextQuestion, COMMENT: rg.TextQuestion}
    for name, kind in expected.items():
        if name in questions and not isinstance(questions[name], kind):
            problems.append(f"question '{name}' is a {type(questions[name]).__name__}, expected a {kind.__name__}")
    if QUALITY in questions and isinstance(questions[QUALITY], rg.RatingQuestion):
        if set(questions[QUALITY].values or []) != set(QUALITY_VALUES):
            problems.append(f"question '{QUALITY}' rates {questions[QUALITY].values}, expected 1-5")
    return isinstance(prompt, rg.ChatField), problems


def has_vector_field(dataset) -> bool:
    return any(v.name == VECTOR for v in dataset.settings.vectors)
