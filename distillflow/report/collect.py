"""Read what a run directory holds, stage by stage; absent stages come back as None.

    data = collect("runs/quickstart")
    data.manifest["curated"], data.eval_results, data.loss_history

Other integrations are read from their files only (never imported): ``review/agreement.json``,
``train/**/trainer_state.json`` and the training dataset, ``eval/results.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distillflow.engine.outputs import read_json, read_jsonl
from distillflow.errors import not_a_run_dir, require_run_dir

__all__ = ["RunData", "collect", "find_trainer_state", "find_training_examples"]


@dataclass
class RunData:
    run_dir: Path
    manifest: dict
    spec: object | None = None
    spec_error: str | None = None
    graph: object | None = None
    mermaid: str | None = None
    curated: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    heldout_count: int = 0
    review_dir: bool = False
    agreement: dict | None = None
    reviewed: int | None = None
    trained: int | None = None
    train_dir: bool = False
    trainer_state_path: Path | None = None
    loss_history: list[dict] = field(default_factory=list)
    eval_results: dict | None = None


def find_trainer_state(train_dir: Path) -> Path | None:
    """The trainer_state.json with the longest log: the output dir's own, else the latest checkpoint's."""
    if not train_dir.is_dir():
        return None
    best, best_len = None, -1
    for p in sorted(train_dir.rglob("trainer_state.json")):
        state = read_json(p) or {}
        n = len(state.get("log_history") or [])
        if n > best_len:
            best, best_len = p, n
    return best


def find_training_examples(train_dir: Path) -> int | None:
    """How many examples the student was trained on, from the exported training dataset."""
    if not train_dir.is_dir():
        return None
    path = train_dir / "dataset.jsonl"  # written by `distillflow train` (Axolotl chat_template rows)
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def _review_count(rows: list[dict]) -> int:
    """Rows a human decided (provenance.review with a decision other than "unreviewed")."""
    n = 0
    for r in rows:
        prov = r.get("provenance") or {}
        review = prov.get("review") if isinstance(prov, dict) else None
        if isinstance(review, dict) and review.get("decision") not in (None, "", "unreviewed"):
            n += 1
    return n


def _agreement(review_dir: Path) -> dict | None:
    """``review/agreement.json``, else the ``agreement`` block of ``review/report.json`` (review pull)."""
    found = read_json(review_dir / "agreement.json")
    if found is not None:
        return found
    report = read_json(review_dir / "report.json") or {}
    return report.get("agreement") if isinstance(report.get("agreement"), dict) else None


def collect(run_dir: str | Path) -> RunData:
    run_dir = require_run_dir(run_dir)
    manifest = read_json(run_dir / "manifest.json")
    if manifest is None:
        raise not_a_run_dir(run_dir, "no readable manifest.json")
    data = RunData(run_dir=run_dir, manifest=manifest)
    pipeline = run_dir / "pipeline.yaml"
    if pipeline.is_file():
        from distillflow.errors import DistillflowError
        from distillflow.graph import build_graph
        from distillflow.spec.loader import load_spec

        try:
            data.spec = load_spec(pipeline)
            data.graph = build_graph(data.spec, source=str(pipeline))
        except DistillflowError as err:
            data.spec_error = str(err).splitlines()[0]
    if (run_dir / "graph.mmd").is_file():
        data.mermaid = (run_dir / "graph.mmd").read_text(encoding="utf-8")
    # tolerant: a torn last line after a crash must not stop a report
    data.curated = read_jsonl(run_dir / "data" / "curated.jsonl", tolerant=True)
    data.rejected = read_jsonl(run_dir / "data" / "rejected.jsonl", tolerant=True)
    data.heldout_count = int(manifest.get("heldout") or 0)

    review = run_dir / "review"
    data.review_dir = review.is_dir()
    if data.review_dir:
        data.agreement = _agreement(review)
        counts = (read_json(review / "report.json") or {}).get("counts") or {}
        if isinstance(counts.get("accepted"), int) and isinstance(counts.get("rejected"), int):
            data.reviewed = counts["accepted"] + counts["rejected"]
        else:
            data.reviewed = _review_count(data.curated) + _review_count(data.rejected)

    train = run_dir / "train"
    data.train_dir = train.is_dir()
    data.trained = find_training_examples(train)
    state_path = find_trainer_state(train)
    if state_path is not None:
        data.trainer_state_path = state_path
        data.loss_history = [e for e in (read_json(state_path) or {}).get("log_history") or [] if isinstance(e, dict)]
    data.eval_results = read_json(run_dir / "eval" / "results.json")
    return data
