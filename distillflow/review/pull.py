"""Pull submitted reviews from Argilla and apply them to the run's curated data.

    result = pull("runs/qa")                   # fetch + apply + agreement report
    result = pull("runs/qa", offline=True)     # re-apply the responses saved by the last pull

Applying is a pure function of (rows, responses): rows a previous pull moved or corrected are first
restored, so pulling again after reviewers change their minds gives the right result. Before the
data files are rewritten, the previous versions are kept as ``data/*.jsonl.bak``; the raw responses
are saved in ``review/responses.jsonl`` and the agreement numbers in ``review/report.json``.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from distillflow.engine.outputs import read_jsonl, write_jsonl, write_parquet
from distillflow.errors import ConfigurationError
from distillflow.review import agreement
from distillflow.review.connect import api_error, connect, find_dataset
from distillflow.review.push import load_run
from distillflow.review.schema import ACCEPT, COMMENT, CORRECTION, DECISION, QUALITY, REJECT, ReviewPlan, dataset_name

ACCEPTED, REJECTED, UNREVIEWED = "accepted", "rejected", "unreviewed"
REVIEW_STEP = "review"


@dataclass
class PullResult:
    accepted: int
    rejected: int
    corrected: int
    unreviewed: int
    curated: int  # rows in curated.jsonl after applying
    report: dict
    report_path: Path

    def summary(self) -> str:
        jh = self.report["agreement"]["judge_vs_human"]
        rr = self.report["agreement"]["between_reviewers"]
        parts = [
            f"{self.accepted} accepted ({self.corrected} corrected), {self.rejected} rejected, "
            f"{self.unreviewed} unreviewed — curated now {self.curated} rows"
        ]
        if jh["n"]:
            parts.append(f"judge vs human: {jh['agreement']:.0%} agreement on {jh['n']} records (kappa {jh['kappa']})")
        if rr["comparisons"]:
            parts.append(f"between reviewers: {rr['agreement']:.0%} on {rr['records']} shared records (kappa {rr['kappa']})")
        return "\n".join(parts)


# ---------------------------------------------------------------------------- fetch


def fetch_responses(client, dataset) -> list[dict]:
    """``[{"id": row id, "responses": [{"user", "status", "values": {question: value}}]}]`` for every record."""
    users: dict[str, str] = {}
    try:
        users = {str(u.id): u.username for u in client.users.list()}
    except Exception:  # annotator keys may not list users: fall back to ids
        pass
    out = []
    for record in dataset.records(with_responses=True, with_suggestions=False, with_vectors=False):
        by_user: dict[str, dict] = {}
        for resp in record.responses:
            uid = str(resp.user_id)
            entry = by_user.setdefault(
                uid, {"user": users.get(uid, uid), "status": getattr(resp.status, "value", resp.status), "values": {}}
            )
            entry["values"][resp.question_name] = resp.value
        out.append({"id": str(record.id), "responses": sorted(by_user.values(), key=lambda r: r["user"])})
    return out


# ---------------------------------------------------------------------------- decide


def decide(responses: list[dict], original_response: str) -> dict | None:
    """Merge one record's submitted responses into a decision; None when nobody submitted one.

    Majority vote of submitted decisions; a tie rejects (the conservative reading of "reviewers
    disagree"). A correction counts when the record is accepted and the text differs from the
    teacher's answer; with several, the first reviewer's (by name) wins.
    """
    submitted = [r for r in responses if r.get("status") == "submitted" and r["values"].get(DECISION) in (ACCEPT, REJECT)]
    if not submitted:
        return None
    accepts = sum(r["values"][DECISION] == ACCEPT for r in submitted)
    decision = ACCEPTED if accepts > len(submitted) - accepts else REJECTED
    qualities = [r["values"][QUALITY] for r in submitted if isinstance(r["values"].get(QUALITY), (int, float))]
    many = len(submitted) > 1
    comments = [
        (f"{r['user']}: " if many else "") + str(r["values"][COMMENT]).strip()
        for r in submitted
        if str(r["values"].get(COMMENT) or "").strip()
    ]
    correction = None
    if decision == ACCEPTED:
        for r in submitted:
            text = str(r["values"].get(CORRECTION) or "").strip()
            if r["values"][DECISION] == ACCEPT and text and text != (original_response or "").strip():
                correction = text
                break
    return {
        "decision": decision,
        "reviewer": ", ".join(r["user"] for r in submitted),
        "quality": round(sum(qualities) / len(qualities), 2) if qualities else None,
        "comment": "; ".join(comments) or None,
        "corrected": correction is not None,
        "reviewers": {r["user"]: r["values"][DECISION] == ACCEPT for r in submitted},
        "correction": correction,
    }


# ---------------------------------------------------------------------------- apply


def _restore(row: dict) -> dict:
    """Undo what an earlier pull did to a row, so applying is idempotent."""
    row = copy.deepcopy(row)
    prov = row.setdefault("provenance", {}) or {}
    row["provenance"] = prov
    previous = prov.get("review") or {}
    if "original_response" in previous:
        row["response"] = previous["original_response"]
    prov["review"] = None
    if row.get("rejected_by") == REVIEW_STEP:
        row.pop("rejected_by", None)
        row.pop("reason", None)
    return row


def apply(curated: list[dict], rejected: list[dict], records: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """Apply pulled ``records`` (see fetch_responses) to the rows: ``(curated, rejected, decisions)``.

    Every row reviewable again (curated + rows a previous pull rejected) gets ``provenance.review``:
    ``decision`` is accepted | rejected | unreviewed; unreviewed rows also say whether they were
    ever pushed. Rejected rows move to ``rejected`` with ``rejected_by="review"``.
    """
    by_id = {r["id"]: r["responses"] for r in records}
    pool = [_restore(r) for r in curated] + [_restore(r) for r in rejected if r.get("rejected_by") == REVIEW_STEP]
    kept_rejected = [r for r in rejected if r.get("rejected_by") != REVIEW_STEP]
    new_curated, new_rejected, decisions = [], [], {}
    for row in pool:
        dec = decide(by_id.get(row["id"], []), row.get("response") or "") if row["id"] in by_id else None
        if dec is None:
            row["provenance"]["review"] = {"decision": UNREVIEWED, "pushed": row["id"] in by_id}
            new_curated.append(row)
            continue
        decisions[row["id"]] = dec
        review = {k: dec[k] for k in ("decision", "reviewer", "quality", "comment", "corrected")}
        if dec["correction"] is not None:
            review["original_response"] = row.get("response")
            row["response"] = dec["correction"]
        row["provenance"]["review"] = review
        if dec["decision"] == REJECTED:
            row["rejected_by"] = REVIEW_STEP
            row["reason"] = f"review: {dec['comment'] or 'rejected by ' + dec['reviewer']}"
            new_rejected.append(row)
        else:
            new_curated.append(row)
    return new_curated, kept_rejected + new_rejected, decisions


def report(rows_by_id: dict[str, dict], decisions: dict[str, dict], plan: ReviewPlan, records: list[dict]) -> dict:
    judge_pairs, quality_pairs = [], []
    if plan.judge is not None:
        for rid, dec in decisions.items():
            score = rows_by_id.get(rid, {}).get(plan.judge.column)
            if score is not None:
                judge_pairs.append((plan.judge.accepts(score), dec["decision"] == ACCEPTED))
                if dec["quality"] is not None:
                    quality_pairs.append((plan.judge.to_quality(score), dec["quality"]))
    statuses: dict[str, int] = {}
    for rec in records:
        for r in rec["responses"]:
            statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "records_in_argilla": len(records),
        "responses_by_status": statuses,
        "not_in_run": sorted(r["id"] for r in records if r["id"] not in rows_by_id),
        "judge": None if plan.judge is None else {
            "column": plan.judge.column, "threshold": plan.judge.threshold, "scale": list(plan.judge.scale)
        },
        "agreement": {
            "judge_vs_human": agreement.judge_vs_human(judge_pairs),
            "judge_vs_human_quality": agreement.quality_gap(quality_pairs),
            "between_reviewers": agreement.between_reviewers([d["reviewers"] for d in decisions.values()]),
        },
    }


# ---------------------------------------------------------------------------- pull


def pull(run_dir, *, offline: bool = False, api_url: str | None = None, api_key: str | None = None) -> PullResult:
    """Fetch submitted responses (or reuse the saved ones with ``offline``) and apply them."""
    run_dir = Path(run_dir)
    spec, review = load_run(run_dir)
    review_dir = run_dir / "review"
    saved = review_dir / "responses.jsonl"
    if offline:
        if not saved.exists():
            raise ConfigurationError(f"no saved responses in {saved} — run `distillflow review pull {run_dir}` online first")
        records = read_jsonl(saved)
    else:
        client = connect(api_url, api_key)
        name = dataset_name(spec)
        dataset = find_dataset(client, name, review.workspace)
        if dataset is None:
            raise ConfigurationError(
                f"no Argilla dataset '{name}' in workspace '{review.workspace}' — run `distillflow review push {run_dir}` first"
            )
        try:
            records = fetch_responses(client, dataset)
        except Exception as e:
            status, detail = api_error(e)
            raise ConfigurationError(
                f"reading responses from Argilla failed ({status or 'network'}: {detail}) — nothing was changed in "
                f"{run_dir}; fix the server and run `distillflow review pull {run_dir}` again"
            ) from None
        review_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(saved, records)

    data = run_dir / "data"
    curated, rejected = read_jsonl(data / "curated.jsonl"), read_jsonl(data / "rejected.jsonl")
    plan = ReviewPlan.from_spec(spec, curated + rejected)
    new_curated, new_rejected, decisions = apply(curated, rejected, records)
    rows_by_id = {r["id"]: r for r in curated + rejected}
    rep = report(rows_by_id, decisions, plan, records)
    rep["mode"] = review.mode

    for name in ("curated", "rejected"):
        src = data / f"{name}.jsonl"
        if src.exists():
            shutil.copy2(src, data / f"{name}.jsonl.bak")
    write_jsonl(data / "curated.jsonl", new_curated)
    write_jsonl(data / "rejected.jsonl", new_rejected)
    write_parquet(data / "curated.parquet", new_curated)
    write_parquet(data / "rejected.parquet", new_rejected)

    counts = {k: sum(1 for d in decisions.values() if d["decision"] == k) for k in (ACCEPTED, REJECTED)}
    unreviewed = sum(1 for r in new_curated if r["provenance"]["review"]["decision"] == UNREVIEWED)
    rep["counts"] = {
        "accepted": counts[ACCEPTED], "rejected": counts[REJECTED],
        "corrected": sum(d["corrected"] for d in decisions.values()), "unreviewed": unreviewed,
        "curated": len(new_curated), "trainable": len(new_curated) - (unreviewed if review.mode == "required" else 0),
    }
    report_path = review_dir / "report.json"
    review_dir.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(rep, indent=2) + "\n")
    return PullResult(counts[ACCEPTED], counts[REJECTED], rep["counts"]["corrected"], unreviewed, len(new_curated), rep, report_path)


def trainable(rows: list[dict], mode: str) -> list[dict]:
    """The curated rows training may use: all (``optional``) or only human-accepted (``required``)."""
    if mode != "required":
        return rows
    return [r for r in rows if ((r.get("provenance") or {}).get("review") or {}).get("decision") == ACCEPTED]
