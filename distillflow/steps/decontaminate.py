"""The ``decontaminate`` step: drop training rows that overlap an evaluation set.

    - kind: decontaminate
      sets:
        - {path: evals/gsm8k_test.jsonl, column: question, name: gsm8k}
        - {path: evals/mmlu, column: question, split: test}     # a `datasets` save_to_disk folder
      ngram: 13                                                 # as in the GPT-3 paper
      near: 0.5                                                 # optional near-duplicate matching

The run's own held-out prompts (``ctx.heldout()``: their ``prompt`` and ``reference``) are always
indexed as set ``heldout``. Text is normalised (casefold, punctuation stripped, whitespace
collapsed), split into words, and every n-gram of every eval item is stored as an 8-byte hash.
A training row is rejected when any n-gram of its checked columns is in the index; the reason
names the set, the item (its id column or index) and the shared words. An eval item shorter than
``ngram`` words (but at least ``min_words``) is matched as a whole. With ``near`` set, a row is
also rejected when it contains at least that share of one item's ``near_ngram``-grams (catches
light edits that break every 13-gram).

>>> index = build_index([("gsm8k", "7", "Natalia sold clips to 48 of her friends in April, and then she sold half")], ngram=8)
>>> match_text(index, "natalia sold clips to 48 of her friends in april!")
Match(set='gsm8k', item='7', words='natalia sold clips to 48 of her friends', share=None)
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Literal

from pydantic import Field, field_validator

from distillflow.errors import ConfigurationError, MissingDependencyError, did_you_mean
from distillflow.steps.base import Spec, StepBase, StepKind

__all__ = ["EvalSetSpec", "DecontaminateStep", "Index", "Match", "normalize", "build_index", "match_text",
           "decontaminate_rows", "read_eval_set", "manifest_entry", "KIND"]

Rows = list[dict]
HELDOUT = "heldout"
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


class EvalSetSpec(Spec):
    """One evaluation set: a file (jsonl, json, csv, parquet, txt) or a `datasets` save_to_disk folder."""

    path: str = Field(description="File or `datasets` folder, relative to the pipeline file.")
    column: str | list[str] = Field("prompt", description="Column(s) whose text is indexed (txt files: one item per line).")
    name: str | None = Field(None, description="Set name in reasons and reports (default: the file's stem); use the "
                                               "lm-eval task name (e.g. gsm8k) so `distillflow eval` can match it.")
    id_column: str | None = Field(None, description="Column naming each item (default: its 0-based index).")
    split: str | None = Field(None, description="Split of a `datasets` DatasetDict folder (default: every split).")

    @property
    def set_name(self) -> str:
        return self.name or Path(self.path).stem or self.path


class DecontaminateStep(StepBase):
    """Reject training rows whose prompt or response overlaps an evaluation set (n-gram overlap)."""

    kind: Literal["decontaminate"]
    sets: list[EvalSetSpec] = Field(default_factory=list, description="Eval sets besides the run's held-out prompts.")
    ngram: int = Field(13, ge=3, le=64, description="n of the overlapping word n-grams (GPT-3 paper: 13).")
    min_words: int = Field(5, ge=1, description="Eval items shorter than ngram but at least this long match whole.")
    columns: list[str] = Field(default_factory=lambda: ["prompt", "response"], min_length=1,
                               description="Training columns checked.")
    near: float | None = Field(None, gt=0, le=1, description="Also reject rows holding this share of one item's "
                                                             "near_ngram-grams (near-duplicates).")
    near_ngram: int = Field(5, ge=2, le=64, description="n for near-duplicate matching.")

    @field_validator("sets")
    @classmethod
    def _unique_names(cls, sets):
        seen = {HELDOUT}
        for s in sets:
            if s.set_name in seen:
                raise ValueError(f"two eval sets are named '{s.set_name}': give one a different `name`")
            seen.add(s.set_name)
        return sets


# --------------------------------------------------------------------------- normalisation + hashing

def normalize(text) -> list[str]:
    """Words of ``text`` after casefolding and stripping punctuation: ``normalize("It's 4!") == ["it", "s", "4"]``."""
    if text is None:
        return []
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False, sort_keys=True, default=str)
    return _NON_WORD.sub(" ", text.casefold()).split()


def _h(words: list[str] | tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest(), "little")


def _grams(words: list[str], n: int) -> Iterator[tuple[int, int]]:
    """(start, hash) of every n-gram."""
    for i in range(len(words) - n + 1):
        yield i, _h(words[i : i + n])


@dataclass
class Match:
    set: str
    item: str
    words: str
    share: float | None = None


@dataclass
class Index:
    """n-gram hashes of every eval item; items referenced by position in ``items`` (set, id)."""

    ngram: int = 13
    min_words: int = 5
    near: float | None = None
    near_ngram: int = 5
    items: list[tuple[str, str]] = field(default_factory=list)
    grams: dict[int, int] = field(default_factory=dict)  # hash -> first item
    short_lengths: set[int] = field(default_factory=set)  # word counts of items indexed whole
    near_grams: dict[int, list[int]] = field(default_factory=dict)  # hash -> items (near mode)
    near_sizes: list[int] = field(default_factory=list)  # distinct near-grams per item
    skipped: int = 0  # items shorter than min_words
    sets: dict[str, int] = field(default_factory=dict)  # set name -> items

    def add(self, set_name: str, item_id: str, text, count: bool = True) -> None:
        words = normalize(text)
        self.sets[set_name] = self.sets.get(set_name, 0) + count
        if len(words) < self.min_words:
            self.skipped += 1
            return
        k = len(self.items)
        self.items.append((set_name, item_id))
        if len(words) < self.ngram:
            self.short_lengths.add(len(words))
            self.grams.setdefault(_h(words), k)
        else:
            for _i, h in _grams(words, self.ngram):
                self.grams.setdefault(h, k)
        if self.near is not None:
            hs = {h for _i, h in _grams(words, min(self.near_ngram, len(words)))}
            for h in hs:
                self.near_grams.setdefault(h, []).append(k)
            self.near_sizes.append(len(hs))
        else:
            self.near_sizes.append(0)


def build_index(items: Iterable[tuple[str, str, object]], ngram: int = 13, min_words: int = 5,
                near: float | None = None, near_ngram: int = 5) -> Index:
    """An index over (set name, item id, text) triples."""
    index = Index(ngram=ngram, min_words=min_words, near=near, near_ngram=near_ngram)
    for set_name, item_id, text in items:
        index.add(set_name, str(item_id), text)
    return index


def match_text(index: Index, text) -> Match | None:
    """The first eval item ``text`` overlaps (n-gram, whole short item, or near-duplicate), or None."""
    words = normalize(text)
    for n in (index.ngram, *sorted(index.short_lengths, reverse=True)):
        for i, h in _grams(words, n):
            k = index.grams.get(h)
            if k is not None:
                set_name, item_id = index.items[k]
                return Match(set_name, item_id, " ".join(words[i : i + n]))
    if index.near is not None and index.near_grams:
        counts: dict[int, int] = defaultdict(int)
        for h in {h for _i, h in _grams(words, index.near_ngram)}:
            for k in index.near_grams.get(h, ()):
                counts[k] += 1
        best = max(counts, key=lambda k: (counts[k] / index.near_sizes[k], -k), default=None)
        if best is not None and index.near_sizes[best] and counts[best] / index.near_sizes[best] >= index.near:
            set_name, item_id = index.items[best]
            return Match(set_name, item_id, "", round(counts[best] / index.near_sizes[best], 3))
    return None


def decontaminate_rows(rows: Rows, step_id: str, index: Index, columns=("prompt", "response")) -> tuple[Rows, Rows]:
    """(kept, rejected), input order; rejected rows name the column, the eval set, the item and the words shared."""
    kept, rejected = [], []
    for row in rows:
        reason = None
        for col in columns:
            m = match_text(index, row.get(col))
            if m is not None:
                what = (f"shares the {len(m.words.split())}-word run '{_clip(m.words)}'" if m.share is None
                        else f"is a near-duplicate ({m.share:.0%} of its {index.near_ngram}-grams)")
                reason = f"decontaminate: {col} overlaps eval set '{m.set}' item {m.item} ({what})"
                break
        if reason is None:
            out = dict(row)
            prov = dict(row.get("provenance") or {})
            prov["filters_passed"] = [*(prov.get("filters_passed") or []), step_id]
            out["provenance"] = prov
            kept.append(out)
        else:
            rejected.append({**row, "rejected_by": step_id, "reason": reason})
    return kept, rejected


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- reading eval sets

def read_eval_set(spec: EvalSetSpec, base_dir: Path) -> Iterator[tuple[str, str]]:
    """(item id, text) of every item of one eval set; ConfigurationError naming the path or column."""
    path = Path(spec.path)
    path = path if path.is_absolute() else Path(base_dir) / path
    cols = [spec.column] if isinstance(spec.column, str) else list(spec.column)
    where = f"decontaminate: eval set '{spec.set_name}' ({path})"
    if not path.exists():
        raise ConfigurationError(f"{where} not found — check `path` (relative to the pipeline file)")
    if path.is_dir():
        yield from _rows_to_items(_dataset_rows(path, spec.split, where), cols, spec.id_column, where)
        return
    suffix = path.suffix.lower()
    if suffix == ".txt":
        with path.open(encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh):
                if line.strip():
                    yield str(i), line
        return
    if suffix in (".jsonl", ".json"):
        rows = _jsonl(path, where) if suffix == ".jsonl" else _json(path, where)
    elif suffix == ".csv":
        rows = _csv(path)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = (r for batch in pq.ParquetFile(path).iter_batches(batch_size=4096) for r in batch.to_pylist())
    else:
        raise ConfigurationError(f"{where}: unsupported file type '{suffix}' — use jsonl, json, csv, parquet, txt "
                                 "or a `datasets` save_to_disk folder")
    yield from _rows_to_items(rows, cols, spec.id_column, where)


def _jsonl(path: Path, where: str):
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as e:
                    raise ConfigurationError(f"{where}: line {n} is not JSON ({e})") from None


def _json(path: Path, where: str):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigurationError(f"{where}: not JSON ({e})") from None
    if not isinstance(data, list):
        raise ConfigurationError(f"{where}: a .json eval set must hold a list of objects — or use .jsonl")
    yield from data


def _csv(path: Path):
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


def _dataset_rows(path: Path, split: str | None, where: str):
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError("reading a `datasets` folder needs datasets: pip install datasets") from None
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # datasets raises FileNotFoundError for folders it did not write
        raise ConfigurationError(f"{where}: not a `datasets` save_to_disk folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is not None:
            if split not in ds:
                hint = did_you_mean(split, list(ds))
                raise ConfigurationError(f"{where}: no split '{split}' (splits: {', '.join(ds)})" + (f" — {hint}" if hint else ""))
            yield from ds[split]
        else:
            for name in ds:
                yield from ds[name]
    else:
        yield from ds


def _rows_to_items(rows, cols: list[str], id_column: str | None, where: str):
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigurationError(f"{where}: item {i} is a {type(row).__name__}, not an object with columns")
        if i == 0:
            for c in [*cols, *([id_column] if id_column else [])]:
                if c not in row:
                    hint = did_you_mean(c, list(row))
                    raise ConfigurationError(f"{where}: no column '{c}'" + (f" — {hint}" if hint else f" (columns: {', '.join(map(str, row))})"))
        item_id = str(row.get(id_column)) if id_column else str(i)
        for c in cols:
            yield item_id, row.get(c)


# --------------------------------------------------------------------------- the kind

def _prepare(ctx, step: DecontaminateStep) -> Index:
    index = Index(ngram=step.ngram, min_words=step.min_words, near=step.near, near_ngram=step.near_ngram)
    index.sets[HELDOUT] = 0
    for i, row in enumerate(ctx.heldout()):
        item_id = str(row.get("prompt_id") or i)
        index.add(HELDOUT, item_id, row.get("prompt"))
        if row.get("reference") not in (None, ""):  # a student trained on the reference answer is contaminated too
            index.add(HELDOUT, item_id, row.get("reference"), count=False)
    for s in step.sets:
        cols = 1 if isinstance(s.column, str) else len(s.column)
        for j, (item_id, text) in enumerate(read_eval_set(s, ctx.base_dir)):
            index.add(s.set_name, item_id, text, count=j % cols == 0)
    return index


def _run(ctx, step: DecontaminateStep, rows: Rows, state: Index) -> tuple[Rows, Rows]:
    index = state if state is not None else _prepare(ctx, step)
    return decontaminate_rows(rows, step.id or "decontaminate", index, step.columns)


def _columns(step: DecontaminateStep) -> tuple[set[str], set[str]]:
    return set(step.columns), set()


def manifest_entry(step: DecontaminateStep) -> dict:
    """What the run manifest records under ``decontamination[step_id]``: the sets and n."""
    return {"sets": [HELDOUT, *(s.set_name for s in step.sets)], "ngram": step.ngram}


KIND = StepKind(
    name="decontaminate", spec=DecontaminateStep, run=_run, columns=_columns, scope="row", prepare=_prepare,
    builder="Decontaminate", manifest=lambda step: ("decontamination", manifest_entry(step)),
    doc="Reject training rows whose prompt or response overlaps an eval set (held-out prompts + listed sets).",
)
