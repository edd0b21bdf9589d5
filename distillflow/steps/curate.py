"""Curation over rows: filters, dedup and best-of selection, standard library only.

Every function takes rows (``list[dict]``, see docs/internals.md) and returns
``(kept, rejected)``. Input rows are never mutated: kept rows are copies whose
``provenance["filters_passed"]`` ends with the step id; rejected rows are copies carrying
``rejected_by`` (the step id) and ``reason`` (human-readable). Both lists keep input order.

>>> kept, rejected = length_filter(rows, "not_empty", min_words=3)
>>> rejected[0]["reason"]
'response has 1 word, fewer than min_words=3'
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import re
import zlib
from array import array
from itertools import repeat
from typing import Any, Iterable, Sequence

from distillflow.errors import UsageError, did_you_mean
from distillflow.expr import Expr, ExprEvalError, parse

__all__ = [
    "REFUSAL_PATTERNS", "filter_rows", "length_filter", "refusal_filter", "exact_dedup",
    "near_dedup", "ExactDedup", "NearDedup", "best_of", "normalize_text",
]

Rows = list[dict]


# --------------------------------------------------------------------------- helpers

def _keep(row: dict, step_id: str) -> dict:
    # Shallow copies suffice: we only replace `provenance` and its `filters_passed` list.
    out = dict(row)
    prov = dict(row.get("provenance") or {})
    prov["filters_passed"] = [*(prov.get("filters_passed") or []), step_id]
    out["provenance"] = prov
    return out


def _reject(row: dict, step_id: str, reason: str) -> dict:
    return {**row, "rejected_by": step_id, "reason": reason}


def _ref(row: dict, index: int) -> str:
    """How a reason names a row: its record id when it has one."""
    return str(row.get("id") or row.get("prompt_id") or f"row {index}")


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


_WS = re.compile(r"\s+")


def normalize_text(text: Any) -> str:
    """Casefold and collapse whitespace: ``normalize_text(" Hi\\n THERE ") == "hi there"``."""
    return _WS.sub(" ", _text(text).casefold()).strip()


def _check_columns(rows: Rows, columns: Iterable[str], step_id: str) -> None:
    """A column absent from *every* row is a typo, not data: say so instead of rejecting all."""
    if not rows:
        return
    seen: set[str] = set()
    for row in rows:
        seen.update(row)
    for col in columns:
        if col not in seen:
            hint = did_you_mean(col, seen)
            raise UsageError(f"step '{step_id}': no row has a column '{col}'" + (f" — {hint}" if hint else ""))


# --------------------------------------------------------------------------- filters

def filter_rows(rows: Rows, expr: str | Expr, step_id: str, on_error: str = "reject") -> tuple[Rows, Rows]:
    """Keep rows where a filter expression (see ``distillflow.expr``) is true.

    >>> kept, rej = filter_rows(rows, "judge_score >= 4", "good")
    >>> rej[0]["reason"]
    "filter 'judge_score >= 4' was false (judge_score=2.0)"

    A row whose values break the expression (``len(5)``) is rejected with the error as its
    reason (``on_error="reject"``) or raises ``ExprEvalError`` (``on_error="raise"``).
    """
    if on_error not in ("reject", "raise"):
        raise UsageError(f"on_error must be 'reject' or 'raise', got {on_error!r}")
    tree = parse(expr) if isinstance(expr, str) else expr
    cols = tree.column_order()
    _check_columns(rows, cols, step_id)
    kept, rejected = [], []
    for row in rows:
        try:
            ok = bool(tree.evaluate(row))
        except ExprEvalError as err:
            if on_error == "raise":
                raise ExprEvalError(f"step '{step_id}', record {_ref(row, len(kept) + len(rejected))}: {err}") from err
            rejected.append(_reject(row, step_id, f"filter '{tree}' could not be evaluated: {err}"))
            continue
        if ok:
            kept.append(_keep(row, step_id))
        else:
            values = ", ".join(f"{c}={_show(row.get(c))}" for c in cols)
            rejected.append(_reject(row, step_id, f"filter '{tree}' was false" + (f" ({values})" if values else "")))
    return kept, rejected


def length_filter(
    rows: Rows,
    step_id: str,
    column: str = "response",
    min_chars: int | None = None,
    max_chars: int | None = None,
    min_words: int | None = None,
    max_words: int | None = None,
) -> tuple[Rows, Rows]:
    """Keep rows whose ``column`` length is within bounds (chars and/or whitespace-split words).

    >>> kept, rej = length_filter(rows, "len", max_chars=2000, min_words=3)
    A missing/None value counts as the empty string.
    """
    bounds = {"min_chars": min_chars, "max_chars": max_chars, "min_words": min_words, "max_words": max_words}
    for name, value in bounds.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UsageError(f"length_filter '{step_id}': {name} must be a non-negative integer, got {value!r}")
    if all(v is None for v in bounds.values()):
        raise UsageError(f"length_filter '{step_id}': set at least one of {', '.join(bounds)}")
    for unit in ("chars", "words"):
        lo, hi = bounds[f"min_{unit}"], bounds[f"max_{unit}"]
        if lo is not None and hi is not None and lo > hi:
            raise UsageError(f"length_filter '{step_id}': min_{unit}={lo} is greater than max_{unit}={hi}")
    _check_columns(rows, [column], step_id)

    def problem(text: str) -> str | None:
        n_chars = len(text)
        if min_chars is not None and n_chars < min_chars:
            return f"{column} has {n_chars} chars, fewer than min_chars={min_chars}"
        if max_chars is not None and n_chars > max_chars:
            return f"{column} has {n_chars} chars, more than max_chars={max_chars}"
        if min_words is None and max_words is None:
            return None
        n_words = len(text.split())
        plural = "word" if n_words == 1 else "words"
        if min_words is not None and n_words < min_words:
            return f"{column} has {n_words} {plural}, fewer than min_words={min_words}"
        if max_words is not None and n_words > max_words:
            return f"{column} has {n_words} {plural}, more than max_words={max_words}"
        return None

    kept, rejected = [], []
    for row in rows:
        why = problem(_text(row.get(column)))
        if why is None:
            kept.append(_keep(row, step_id))
        else:
            rejected.append(_reject(row, step_id, why))
    return kept, rejected


_APOS = "[’']"
# Phrases that, in a teacher's answer, almost always mean the teacher declined the task.
REFUSAL_PATTERNS: tuple[str, ...] = (
    rf"\bI{_APOS}?m (?:so |very |really )?sorry,? but (?:I|as an AI)\b[^.!?\n]{{0,40}}?\b(?:can(?:{_APOS}?t|not)|won{_APOS}?t|unable|not able)\b",
    rf"\bI apologi[sz]e,? but I (?:can(?:{_APOS}?t|not)|won{_APOS}?t|am unable|{_APOS}?m unable|am not able)\b",
    r"\bas an AI (?:language )?model\b",
    rf"\bas an AI assistant,? I (?:can(?:{_APOS}?t|not)|don{_APOS}?t|do not|am not able)\b",
    rf"\bI (?:cannot|can{_APOS}?t|can not|won{_APOS}?t|will not|am unable to|{_APOS}?m unable to|am not able to|{_APOS}?m not able to)"
    r" (?:help|assist|comply|fulfil{1,2}|provide|complete|support|engage|do that|create|generate|answer)\b(?! but\b)",
    r"\bI must (?:respectfully |politely )?decline\b",
    rf"\bI (?:do not|don{_APOS}?t) feel comfortable\b",
    r"\b(?:goes |is )?against my (?:programming|guidelines|policies|policy|ethical guidelines)\b",
    r"\b(?:it|that) (?:would be|is) (?:inappropriate|unethical|irresponsible) for me to\b",
    rf"\bI{_APOS}?m not (?:allowed|permitted) to\b",
)


def refusal_filter(
    rows: Rows, step_id: str, column: str = "response", extra_patterns: Sequence[str] = ()
) -> tuple[Rows, Rows]:
    """Reject rows whose ``column`` matches a refusal phrase (case-insensitive regexes).

    >>> kept, rej = refusal_filter(rows, "no_refusals", extra_patterns=[r"\\bnope\\b"])
    >>> rej[0]["reason"]
    'refusal: response contains "I\\'m sorry, but I can\\'t" (built-in pattern 1)'
    """
    compiled = []
    for i, pat in enumerate(REFUSAL_PATTERNS):
        compiled.append((re.compile(pat, re.IGNORECASE), f"built-in pattern {i + 1}"))
    for pat in extra_patterns:
        try:
            compiled.append((re.compile(pat, re.IGNORECASE), f"extra pattern {pat!r}"))
        except re.error as err:
            raise UsageError(f"refusal_filter '{step_id}': invalid regex {pat!r}: {err}") from err
    _check_columns(rows, [column], step_id)
    kept, rejected = [], []
    for row in rows:
        text = _text(row.get(column))
        for regex, label in compiled:
            m = regex.search(text)
            if m:
                rejected.append(_reject(row, step_id, f'refusal: {column} contains "{m.group(0)}" ({label})'))
                break
        else:
            kept.append(_keep(row, step_id))
    return kept, rejected


# --------------------------------------------------------------------------- dedup

class ExactDedup:
    """Streaming exact dedup: remembers an 8-byte hash and the record id of each kept row.

    Feed rows in order with :meth:`apply` (one shard after another); ``first`` wins across calls.
    About 100 bytes of memory per distinct row, never the rows themselves.
    """

    def __init__(self, columns: Sequence[str] = ("prompt", "response")):
        self.columns = [columns] if isinstance(columns, str) else list(columns)
        self.first: dict[bytes, str] = {}
        self.seen = 0

    def _key(self, row: dict) -> bytes:
        # Unit separator between columns so ("ab","c") and ("a","bc") hash differently.
        return hashlib.blake2b("\x1f".join(normalize_text(row.get(c)) for c in self.columns).encode(), digest_size=8).digest()

    def add(self, row: dict, index: int | None = None) -> None:
        """Remember a kept row (restoring the state of an interrupted run)."""
        self.first.setdefault(self._key(row), _ref(row, self.seen if index is None else index))
        self.seen += 1

    def apply(self, rows: Rows, step_id: str) -> tuple[Rows, Rows]:
        kept, rejected = [], []
        for row in rows:
            key = self._key(row)
            first = self.first.get(key)
            if first is not None:
                rejected.append(_reject(row, step_id, f"exact duplicate of {first} ({', '.join(self.columns)}, normalized)"))
            else:
                self.first[key] = _ref(row, self.seen)
                kept.append(_keep(row, step_id))
            self.seen += 1
        return kept, rejected


def exact_dedup(rows: Rows, step_id: str, columns: Sequence[str] = ("prompt", "response")) -> tuple[Rows, Rows]:
    """Drop rows whose normalized ``columns`` (casefold, collapsed whitespace) were seen before.

    >>> kept, rej = exact_dedup(rows, "dedup")
    >>> rej[0]["reason"]
    'exact duplicate of 3f2a9c0d1e4b5a6f (prompt, response, normalized)'
    """
    state = ExactDedup(columns)
    if not state.columns:
        raise UsageError(f"exact_dedup '{step_id}': columns must not be empty")
    _check_columns(rows, state.columns, step_id)
    return state.apply(rows, step_id)


_WORD = re.compile(r"\w+")
_M64 = (1 << 64) - 1


def _lsh_params(num_perm: int, threshold: float, recall: float = 0.9) -> tuple[int, int]:
    """Pick (bands, rows per band): the longest bands that still make a pair at ``threshold``
    a candidate with probability >= ``recall``. Spurious candidates only cost one signature
    comparison, missed ones are duplicates kept, so we favour recall.
    """
    for r in range(num_perm, 0, -1):
        b = num_perm // r
        if 1 - (1 - threshold**r) ** b >= recall:
            return b, r
    return num_perm, 1


def _signature(text: str, ngram: int, num_perm: int, mask: int, mult: int) -> list[int] | None:
    """One-permutation MinHash (OPH) with rotation densification; None for text with no words.

    Classic MinHash costs num_perm hash evaluations per shingle, which pure Python cannot
    afford at 50k rows; OPH hashes each shingle once and splits the hash space into
    num_perm bins (Li, Owen & Zhang 2012), then fills empty bins from their right
    neighbour (Shrivastava & Li 2014) so that signatures stay comparable position by position.
    """
    words = _WORD.findall(text.casefold())
    if not words:
        return None
    if len(words) < ngram:
        shingles = [" ".join(words)]
    else:
        shingles = map(" ".join, zip(*(words[k:] for k in range(ngram))))
    # crc32 is a fast, stable C hash; xor + odd multiplier mod 2^64 spreads it over 64 bits.
    crcs = map(zlib.crc32, map(str.encode, shingles))
    hashes = set(map(operator.and_, map(operator.mul, map(operator.xor, crcs, repeat(mask)), repeat(mult)), repeat(_M64)))
    bits = (num_perm - 1).bit_length()
    shift = 64 - bits
    low = (1 << shift) - 1
    # Sorting descending makes dict() keep the smallest value per bin (last write wins).
    ordered = sorted(hashes, reverse=True)
    bins = dict(zip(map(operator.rshift, ordered, repeat(shift)), map(operator.and_, ordered, repeat(low))))
    sig = [bins.get(b) for b in range(num_perm)]
    if None in sig:
        # Two passes around the ring so every empty bin finds its nearest filled right neighbour.
        nxt, dist = None, 0
        filled = [None] * num_perm
        for j in range(2 * num_perm - 1, -1, -1):
            v = sig[j % num_perm]
            if v is not None:
                nxt, dist = v, 0
            elif nxt is not None:
                dist += 1
                filled[j % num_perm] = (nxt + dist * 0x9E3779B97F4A7C15) & _M64  # offset by distance
        sig = [v if v is not None else filled[j] for j, v in enumerate(sig)]
    return sig


class NearDedup:
    """Streaming near-duplicate detection: MinHash signatures + LSH bands of the kept rows.

    Rows are compared only with earlier *kept* rows, so the first of each cluster survives, across
    :meth:`apply` calls too. Keeps per kept row its signature (``num_perm`` × 8 bytes) and its
    band keys, never the rows.
    """

    def __init__(self, column: str = "response", threshold: float = 0.85, num_perm: int = 64, ngram: int = 3,
                 seed: int = 0, step_id: str = "near_dedup"):
        if not 0.0 < threshold <= 1.0:
            raise UsageError(f"near_dedup '{step_id}': threshold must be in (0, 1], got {threshold!r}")
        if num_perm < 2 or num_perm & (num_perm - 1):
            raise UsageError(f"near_dedup '{step_id}': num_perm must be a power of two >= 2, got {num_perm!r}")
        if ngram < 1:
            raise UsageError(f"near_dedup '{step_id}': ngram must be >= 1, got {ngram!r}")
        self.column, self.threshold, self.num_perm, self.ngram = column, threshold, num_perm, ngram
        seed_bytes = hashlib.blake2b(str(seed).encode(), digest_size=16).digest()
        self.mask = int.from_bytes(seed_bytes[:4], "little")
        self.mult = int.from_bytes(seed_bytes[8:], "little") | 1
        self.bands, self.per_band = _lsh_params(num_perm, threshold)
        self.buckets: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]
        self.sigs: list[array] = []
        self.refs: list[str] = []
        self.seen = 0

    def _sig(self, row: dict):
        return _signature(_text(row.get(self.column)), self.ngram, self.num_perm, self.mask, self.mult)

    def _keys(self, sig) -> list[int]:
        p = self.per_band
        return [hash(tuple(sig[b * p : (b + 1) * p])) for b in range(self.bands)]

    def _remember(self, row: dict, sig, keys, index: int) -> None:
        j = len(self.sigs)
        self.sigs.append(array("Q", sig))
        self.refs.append(_ref(row, index))
        for b, key in enumerate(keys):
            self.buckets[b].setdefault(key, []).append(j)

    def add(self, row: dict) -> None:
        """Remember a kept row (restoring the state of an interrupted run)."""
        sig = self._sig(row)
        if sig is not None:
            self._remember(row, sig, self._keys(sig), self.seen)
        self.seen += 1

    def apply(self, rows: Rows, step_id: str) -> tuple[Rows, Rows]:
        kept, rejected = [], []
        for row in rows:
            index = self.seen
            self.seen += 1
            sig = self._sig(row)
            if sig is None:
                kept.append(_keep(row, step_id))
                continue
            keys = self._keys(sig)
            candidates: set[int] = set()
            for b, key in enumerate(keys):
                candidates.update(self.buckets[b].get(key, ()))
            match = None
            for j in sorted(candidates):  # earliest kept row wins, for determinism
                est = sum(map(operator.eq, sig, self.sigs[j])) / self.num_perm
                if est >= self.threshold:
                    match = (j, est)
                    break
            if match is not None:
                j, est = match
                reason = (
                    f"near-duplicate of {self.refs[j]} (estimated Jaccard {est:.2f} >= {self.threshold} "
                    f"on {self.column} {self.ngram}-grams)"
                )
                rejected.append(_reject(row, step_id, reason))
                continue
            self._remember(row, sig, keys, index)
            kept.append(_keep(row, step_id))
        return kept, rejected


def near_dedup(
    rows: Rows,
    step_id: str,
    column: str = "response",
    threshold: float = 0.85,
    num_perm: int = 64,
    ngram: int = 3,
    seed: int = 0,
) -> tuple[Rows, Rows]:
    """Drop rows whose ``column`` is a near-duplicate (word n-gram Jaccard ≥ threshold) of a kept row.

    MinHash signatures + LSH banding find candidates; a candidate counts when the estimated
    Jaccard (share of equal signature slots) reaches ``threshold``. Rows are compared only
    with earlier *kept* rows, so the first of each cluster survives. Deterministic for a seed.
    Empty texts are never treated as duplicates (use ``length_filter`` for those).

    >>> kept, rej = near_dedup(rows, "near", threshold=0.8)
    >>> rej[0]["reason"]
    'near-duplicate of 3f2a9c0d1e4b5a6f (estimated Jaccard 0.91 >= 0.8 on response 3-grams)'
    """
    state = NearDedup(column, threshold, num_perm, ngram, seed, step_id)
    _check_columns(rows, [column], step_id)
    return state.apply(rows, step_id)


# --------------------------------------------------------------------------- best-of

def _score(value: Any, by: str, row: dict, index: int) -> float | None:
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, (int, float)):
        return None if math.isnan(value) else float(value)
    raise UsageError(
        f"best_of: column '{by}' must be a number or a bool, got {type(value).__name__} {_show(value)} "
        f"in record {_ref(row, index)}"
    )


def best_of(
    rows: Rows,
    step_id: str,
    by: str,
    group_by: str | Sequence[str] = "prompt_id",
    higher_is_better: bool = True,
) -> tuple[Rows, Rows]:
    """Keep the best row per group by column ``by`` (number or bool; None/NaN rank last).

    Ties go to the lowest ``generation_index``, then the teacher name, then input order.

    >>> kept, rej = best_of(rows, "pick", by="judge_score")
    >>> rej[0]["reason"]
    'best_of: 3f2a9c0d1e4b5a6f scored higher (by=judge_score: 5.0 vs 3.0)'
    """
    group_cols = [group_by] if isinstance(group_by, str) else list(group_by)
    _check_columns(rows, [by, *group_cols], step_id)
    groups: dict[Any, list[int]] = {}
    scores = []
    for i, row in enumerate(rows):
        scores.append(_score(row.get(by), by, row, i))
        key = tuple(_text(row.get(c)) for c in group_cols)
        groups.setdefault(key, []).append(i)

    def rank(i: int) -> tuple:
        s, row = scores[i], rows[i]
        gen = row.get("generation_index")
        gen = gen if isinstance(gen, (int, float)) and not isinstance(gen, bool) else math.inf
        primary = math.inf if s is None else (-s if higher_is_better else s)
        return (s is None, primary, gen, str(row.get("teacher") or ""), i)

    winner_of: dict[int, int] = {}
    for members in groups.values():
        best = min(members, key=rank)
        for i in members:
            winner_of[i] = best

    kept, rejected = [], []
    for i, row in enumerate(rows):
        w = winner_of[i]
        if w == i:
            kept.append(_keep(row, step_id))
            continue
        sw, si = scores[w], scores[i]
        if sw == si:
            detail = f"by={by}: tie at {sw}, won on generation_index/teacher order"
            rejected.append(_reject(row, step_id, f"best_of: {_ref(rows[w], w)} won the tie ({detail})"))
        else:
            word = "higher" if higher_is_better else "lower"
            rejected.append(
                _reject(row, step_id, f"best_of: {_ref(rows[w], w)} scored {word} (by={by}: {sw} vs {si})")
            )
    return kept, rejected
