"""The distillation funnel: prompts -> generations -> judged -> kept -> reviewed -> trained.

    stages = funnel(data)
    [(s.name, s.count) for s in stages]   # [("prompts", 40), ("generations", 160), ...]

A stage the run has not reached (or that the pipeline has no step for) has ``count=None`` and a
``note`` saying why.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Stage", "funnel"]

_JUDGING = ("judge", "verify", "reward")


@dataclass
class Stage:
    name: str
    count: int | None
    note: str = ""


def _step_kinds(data) -> dict[str, str]:
    kinds = {sid: c.get("kind", "") for sid, c in (data.manifest.get("counts") or {}).items() if isinstance(c, dict)}
    if data.spec is not None:
        kinds.update({s.id: s.kind for s in data.spec.steps})
    return kinds


def funnel(data) -> list[Stage]:
    m = data.manifest
    counts = m.get("counts") or {}
    kinds = _step_kinds(data)
    src = counts.get("source") or {}
    prompts = src.get("out")
    held = int(src.get("heldout") or m.get("heldout") or 0)
    stages = [Stage("prompts", prompts, f"+ {held} held out for evaluation" if held else "")]

    gen_ids = [sid for sid, k in kinds.items() if k in ("generate", "distilabel") and sid in counts]
    gens = [counts[s].get("out") for s in gen_ids if kinds[s] == "generate"] or [counts[s].get("out") for s in gen_ids]
    gen_total = sum(g for g in gens if isinstance(g, int)) if gens else None
    stages.append(Stage("generations", gen_total, "" if gen_total is not None else "no generation step ran"))

    judged_ids = [sid for sid, k in kinds.items() if k in _JUDGING and sid in counts]
    if judged_ids:
        judged = max(int(counts[s].get("in") or 0) for s in judged_ids)
        stages.append(Stage("judged", judged, "by " + ", ".join(judged_ids)))
    else:
        stages.append(Stage("judged", None, "no judge, verify or reward step"))

    stages.append(Stage("kept", m.get("curated"), f"{m.get('rejected', 0)} rejected"))

    if data.review_dir and data.reviewed is not None:
        stages.append(Stage("reviewed", data.reviewed, "human decisions pulled from Argilla"))
    else:
        stages.append(Stage("reviewed", None, "no review"))

    trained_model = data.trainer_state_path is not None or (data.run_dir / "train" / "output").is_dir()
    if data.trained is not None and trained_model:
        stages.append(Stage("trained", data.trained, "examples in train/dataset.jsonl"))
    elif data.trained is not None:
        stages.append(Stage("trained", None, f"{data.trained} examples exported, not trained yet"))
    else:
        stages.append(Stage("trained", None, "not trained"))
    return stages
