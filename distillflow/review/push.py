"""Push a run's curated records to Argilla for human review — idempotent and resumable.

    result = push("runs/qa")            # ARGILLA_API_URL / ARGILLA_API_KEY from the environment
    print(result.pushed, result.url)

Argilla record ids are the rows' stable content hashes, so pushing twice adds nothing and pushing
after more generations adds only the new rows. Records go in batches; after each batch the ids are
saved to ``RUN_DIR/review/state.json``, so an interrupted push resumes where it stopped.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from distillflow.engine.outputs import read_jsonl
from distillflow.errors import ConfigurationError, require_run_dir
from distillflow.review.connect import api_error, connect, dataset_url, find_dataset, find_workspace
from distillflow.review.schema import JudgeInfo, ReviewPlan, check_compatible, dataset_name, has_vector_field
from distillflow.spec.review import ReviewSpec

BATCH_SIZE = 100  # the SDK's bulk endpoint takes at most 500


@dataclass
class PushResult:
    dataset: str
    workspace: str
    url: str
    pushed: int  # records sent by this call
    already: int  # selected records that an earlier push had sent
    selected: int  # records chosen (all, or the stratified sample)
    curated: int  # rows in data/curated.jsonl

    def summary(self) -> str:
        sample = f" (a sample of {self.selected} of {self.curated})" if self.selected < self.curated else ""
        return (
            f"pushed {self.pushed} new record(s), {self.already} already there{sample} — "
            f"dataset '{self.dataset}' in workspace '{self.workspace}': {self.url}"
        )


def load_run(run_dir: Path):
    """The run's spec and review settings; a clear error when RUN_DIR is not a run directory."""
    from distillflow.spec.loader import load_spec

    run_dir = require_run_dir(run_dir, marker="pipeline.yaml")  # a bad path: exit 2, as in train, eval, report
    if not (run_dir / "data" / "curated.jsonl").exists():
        raise ConfigurationError(
            f"{run_dir}/data/curated.jsonl is missing — run `distillflow run PIPELINE.yaml --out {run_dir}` first"
        )
    spec = load_spec(run_dir / "pipeline.yaml")
    return spec, spec.review or ReviewSpec()


# ---------------------------------------------------------------------------- state


@dataclass
class PushState:
    """Which row ids each Argilla dataset (by server-side id) already holds."""

    path: Path
    datasets: dict = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> "PushState":
        path = Path(run_dir) / "review" / "state.json"
        data = json.loads(path.read_text()) if path.exists() else {}
        return cls(path=path, datasets=data.get("datasets", {}))

    def pushed(self, dataset_id) -> set[str]:
        return set(self.datasets.get(str(dataset_id), {}).get("pushed", []))

    def add(self, dataset, ids: list[str]) -> None:
        entry = self.datasets.setdefault(
            str(dataset.id), {"name": dataset.name, "workspace": dataset.workspace.name, "pushed": []}
        )
        seen = set(entry["pushed"])
        entry["pushed"].extend(i for i in ids if i not in seen)
        entry["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"datasets": self.datasets}, indent=1) + "\n")
        tmp.replace(self.path)  # atomic: a crash mid-write never loses the ids already recorded


# ---------------------------------------------------------------------------- sampling


def score_band(row: dict, judge: JudgeInfo | None) -> str:
    score = None if judge is None else row.get(judge.column)
    if score is None:
        return "unscored"
    lo, hi = judge.scale
    if score >= judge.threshold:
        return "high"
    return "mid" if score >= (lo + hi) / 2 else "low"


def stratified_sample(rows: list[dict], k: int, judge: JudgeInfo | None, seed: int = 0, keep=frozenset()) -> list[dict]:
    """``k`` rows spread over (teacher, score band) strata in proportion to their sizes.

    Rows in ``keep`` (already pushed) count toward ``k`` first, so growing a run and pushing again
    tops the sample up instead of drawing a different one. Deterministic for a given ``seed``.
    """
    kept = [r for r in rows if r["id"] in keep]
    if len(kept) >= k:
        return kept
    need = k - len(kept)
    pool = sorted((r for r in rows if r["id"] not in keep), key=lambda r: r["id"])
    strata: dict[tuple, list[dict]] = defaultdict(list)
    for r in pool:
        strata[(str(r.get("teacher")), score_band(r, judge))].append(r)
    rng = random.Random(seed)
    for key in sorted(strata):
        rng.shuffle(strata[key])
    if need >= len(pool):
        return kept + pool
    # Largest-remainder allocation, at least one per stratum while the budget allows.
    total = len(pool)
    quota = {key: need * len(v) / total for key, v in strata.items()}
    alloc = {key: min(len(strata[key]), int(q)) for key, q in quota.items()}
    for key in sorted(strata, key=lambda s: len(strata[s]), reverse=True):
        if alloc[key] == 0 and sum(alloc.values()) < need:
            alloc[key] = 1
    for key in sorted(quota, key=lambda s: (quota[s] - int(quota[s]), s), reverse=True):
        if sum(alloc.values()) >= need:
            break
        if alloc[key] < len(strata[key]):
            alloc[key] += 1
    chosen = {r["id"] for key in sorted(strata) for r in strata[key][: alloc[key]]}
    return kept + [r for r in pool if r["id"] in chosen]


# ---------------------------------------------------------------------------- push


def ensure_dataset(client, plan: ReviewPlan, name: str, workspace: str):
    """Find or create the dataset; refuse one whose schema cannot take our records."""
    import argilla as rg

    dataset = find_dataset(client, name, workspace)
    if dataset is None:
        try:
            if find_workspace(client, workspace) is None:
                ws = rg.Workspace(name=workspace, client=client).create()
                try:
                    ws.add_user(client.me.username)
                except Exception:  # owners see every workspace anyway
                    pass
            dataset = rg.Dataset(name=name, workspace=workspace, settings=plan.settings(), client=client).create()
        except Exception as e:
            status, detail = api_error(e)
            raise ConfigurationError(
                f"could not create Argilla dataset '{name}' in workspace '{workspace}' ({status or 'error'}: {detail}) — "
                "use an owner/admin API key, or create the workspace in Argilla first"
            ) from None
        return dataset
    _, problems = check_compatible(dataset)
    if problems:
        raise ConfigurationError(
            f"Argilla dataset '{name}' in workspace '{workspace}' exists with an incompatible schema: "
            + "; ".join(problems)
            + " — set review.dataset in pipeline.yaml to a new name, or delete that dataset in Argilla "
            "(dataset settings → Delete) and push again"
        )
    return dataset


def push(
    run_dir,
    *,
    sample: int | None = None,
    batch_size: int = BATCH_SIZE,
    api_url: str | None = None,
    api_key: str | None = None,
) -> PushResult:
    """Create/update the run's Argilla dataset and send the records it does not have yet."""
    run_dir = Path(run_dir)
    spec, review = load_run(run_dir)
    rows = list({r["id"]: r for r in read_jsonl(run_dir / "data" / "curated.jsonl")}.values())
    plan = ReviewPlan.from_spec(spec, rows)
    client = connect(api_url, api_key)
    name, workspace = dataset_name(spec), review.workspace
    dataset = ensure_dataset(client, plan, name, workspace)
    chat, _ = check_compatible(dataset)
    with_vectors = review.vectors and has_vector_field(dataset)

    state = PushState.load(run_dir)
    pushed = state.pushed(dataset.id)
    k = sample or review.sample
    selected = stratified_sample(rows, k, plan.judge, review.seed, keep=pushed) if k else rows
    todo = [r for r in selected if r["id"] not in pushed]
    done = 0
    n_batches = (len(todo) + batch_size - 1) // batch_size
    for b in range(n_batches):
        batch = todo[b * batch_size : (b + 1) * batch_size]
        models = []
        for row in batch:
            record = plan.record(row, chat=chat, with_vectors=with_vectors)
            record.dataset = dataset
            models.append(record.api_model())
        try:
            client.api.records.bulk_upsert(dataset_id=dataset.id, records=models)
        except Exception as e:
            raise _push_error(e, run_dir, b, n_batches, done, len(todo)) from None
        state.add(dataset, [r["id"] for r in batch])
        done += len(batch)
    return PushResult(name, workspace, dataset_url(client, dataset), done, len(selected) - len(todo), len(selected), len(rows))


def _push_error(e: Exception, run_dir: Path, b: int, n_batches: int, done: int, total: int) -> ConfigurationError:
    status, detail = api_error(e)
    left = total - done
    what = f"Argilla answered {status}" if status else f"lost the connection to Argilla ({detail})"
    fix = "fix the server (see its log)" if not status or status >= 500 else "fix the cause above"
    return ConfigurationError(
        f"{what} while pushing batch {b + 1} of {n_batches}"
        + (f": {detail}" if status else "")
        + f". The {done} record(s) pushed before it are in Argilla and recorded in {run_dir}/review/state.json; "
        f"nothing is lost — {fix}, then run `distillflow review push {run_dir}` again to push the {left} left."
    )


def auto_push(run_dir) -> str | None:
    """After `distillflow run`: push when the pipeline has ``review:`` with ``auto_push``; never raises.

    Returns a one-line message for the user (None when the pipeline has no review section).
    """
    import os

    from distillflow.errors import DistillflowError
    from distillflow.review.connect import KEY_ENV, URL_ENV

    try:
        spec, review = load_run(run_dir)
    except DistillflowError:
        return None
    if spec.review is None or not review.auto_push:
        return None
    if not os.environ.get(URL_ENV) or not os.environ.get(KEY_ENV):
        return (
            f"review: {URL_ENV}/{KEY_ENV} not set, nothing pushed — set them "
            f"(or `distillflow review up`), then `distillflow review push {run_dir}`"
        )
    try:
        return "review: " + push(run_dir).summary()
    except DistillflowError as e:
        return f"review: push failed, the run's outputs are saved — {e}"
