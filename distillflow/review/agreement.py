"""Agreement numbers: judge vs humans, and reviewer vs reviewer. Pure functions, no I/O.

    >>> judge_vs_human([(True, True), (True, False), (False, False), (False, False)])["agreement"]
    0.75
"""

from __future__ import annotations

from itertools import combinations


def cohen_kappa(pairs: list[tuple[bool, bool]]) -> float | None:
    """Cohen's kappa of two binary raters; None when undefined (no items, or chance agreement is 1)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    pa = sum(a for a, _ in pairs) / n
    pb = sum(b for _, b in pairs) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    if expected >= 1:
        return None
    return round((observed - expected) / (1 - expected), 4)


def judge_vs_human(pairs: list[tuple[bool, bool]]) -> dict:
    """``pairs`` of (judge accepts: score >= threshold, humans accepted).

    ``agreement`` is how often they matched; ``judge_precision`` how often a judge "accept" was
    accepted by the humans (trust the judge's filter); ``judge_recall`` how many human-accepted
    records the judge would have kept.
    """
    n = len(pairs)
    tp = sum(1 for j, h in pairs if j and h)
    fp = sum(1 for j, h in pairs if j and not h)
    fn = sum(1 for j, h in pairs if not j and h)
    tn = n - tp - fp - fn
    return {
        "n": n,
        "agreement": round((tp + tn) / n, 4) if n else None,
        "kappa": cohen_kappa(pairs),
        "judge_precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "judge_recall": round(tp / (tp + fn), 4) if tp + fn else None,
        "confusion": {"judge_accept_human_accept": tp, "judge_accept_human_reject": fp,
                      "judge_reject_human_accept": fn, "judge_reject_human_reject": tn},
    }


def between_reviewers(decisions: list[dict[str, bool]]) -> dict:
    """Agreement on records that several reviewers decided: ``decisions`` = per record {reviewer: accepted}.

    Every pair of reviewers on a record is one comparison; ``kappa`` is Cohen's kappa pooled over
    those comparisons; ``pairs`` breaks agreement down per reviewer pair.
    """
    pooled: list[tuple[bool, bool]] = []
    per_pair: dict[str, list[tuple[bool, bool]]] = {}
    overlapping = 0
    for votes in decisions:
        if len(votes) < 2:
            continue
        overlapping += 1
        for a, b in combinations(sorted(votes), 2):
            pooled.append((votes[a], votes[b]))
            per_pair.setdefault(f"{a} ~ {b}", []).append((votes[a], votes[b]))
    return {
        "records": overlapping,
        "comparisons": len(pooled),
        "agreement": round(sum(a == b for a, b in pooled) / len(pooled), 4) if pooled else None,
        "kappa": cohen_kappa(pooled),
        "pairs": {
            k: {"n": len(v), "agreement": round(sum(a == b for a, b in v) / len(v), 4), "kappa": cohen_kappa(v)}
            for k, v in sorted(per_pair.items())
        },
    }


def quality_gap(pairs: list[tuple[float, float]]) -> dict:
    """Mean absolute difference between two 1-5 ratings (e.g. judge score mapped to 1-5 vs humans)."""
    if not pairs:
        return {"n": 0, "mean_abs_diff": None}
    return {"n": len(pairs), "mean_abs_diff": round(sum(abs(a - b) for a, b in pairs) / len(pairs), 4)}
