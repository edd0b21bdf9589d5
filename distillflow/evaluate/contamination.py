"""Was the training data decontaminated against the sets being scored? Read from the run manifest.

    status = decontamination_status(manifest, ["heldout", "gsm8k"])
    status["sets"]["gsm8k"]    # {"decontaminated": False, "steps": [], "ngram": None}
    status["warnings"]         # ["training data was not decontaminated against 'gsm8k': ..."]

The manifest records ``"decontamination": {step_id: {"sets": [names], "ngram": n}}``, one entry per
``decontaminate`` step that ran. Set names match case-insensitively; an lm-eval task is covered
when a decontaminate step lists a set of the same name (``name: gsm8k``).
"""

from __future__ import annotations

__all__ = ["decontamination_status", "scored_sets", "HELDOUT"]

HELDOUT = "heldout"


def scored_sets(results: dict) -> list[str]:
    """The eval sets a results dict scores: the held-out prompts, then every lm-eval task."""
    tasks = ((results.get("lm_eval") or {}).get("tasks") or {}) if isinstance(results, dict) else {}
    return [HELDOUT, *(str(t) for t in tasks if str(t).casefold() != HELDOUT)]


def _entries(manifest: dict) -> dict[str, dict]:
    raw = manifest.get("decontamination") if isinstance(manifest, dict) else None
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, dict) and isinstance(v.get("sets"), list)}


def decontamination_status(manifest: dict, scored: list[str]) -> dict:
    """Per scored set: covered or not, by which steps, at which n; plus one warning per uncovered set."""
    entries = _entries(manifest)
    sets: dict[str, dict] = {}
    warnings: list[str] = []
    for name in scored:
        steps = [sid for sid, e in entries.items() if name.casefold() in {str(s).casefold() for s in e["sets"]}]
        ngrams = [e.get("ngram") for sid, e in entries.items() if sid in steps and isinstance(e.get("ngram"), int)]
        sets[name] = {"decontaminated": bool(steps), "steps": steps, "ngram": min(ngrams) if ngrams else None}
        if steps:
            continue
        if name == HELDOUT:
            how = ("add a `decontaminate` step to the pipeline (it always covers the held-out prompts) and run it again "
                   "— held-out prompts are never generated for training, but duplicates and near-copies of them in the "
                   "source can be")
        else:
            how = (f"add `{{path: <your local copy>, column: <text column>, name: {name}}}` to a `decontaminate` "
                   "step's `sets` and run the pipeline again")
        warnings.append(f"training data was not decontaminated against '{name}': its scores may be inflated "
                        f"by overlap — {how}")
    return {"sets": sets, "warnings": warnings}
