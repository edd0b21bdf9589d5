#!/usr/bin/env python
"""The offline demo (`make demo`): distil the shipped arithmetic teacher into a smaller student on CPU.

Runs the real CLI, one subprocess per stage, for ``pipelines/quickstart.yaml``:

    distillflow run PIPELINE --out runs/quickstart     # teacher samples -> verify -> filter -> dedup
    distillflow train runs/quickstart                  # Axolotl, CPU, full fine-tune of the student
    distillflow eval runs/quickstart                   # held-out exact match: base -> student -> teacher
    distillflow report runs/quickstart                 # runs/quickstart/report.html

``--ablation`` then does the same for ``pipelines/quickstart_unfiltered.yaml`` (no verify/filter:
the student trains on the raw teacher samples, wrong answers included) into
``runs/quickstart_unfiltered``. Its run starts from a copy of the quickstart's request cache, so
both students see the *same* teacher samples and differ only by the filter (and no teacher call is
paid twice). Finally a summary with the measured numbers and the wall time of every stage.

    python examples/quickstart/demo.py                 # quickstart only
    python examples/quickstart/demo.py --ablation      # + the unfiltered ablation (what `make demo` runs)
    python examples/quickstart/demo.py --fresh         # delete the run directories first

Everything is local: the teacher and the student live in ``examples/quickstart/models/``, the prompts in
``examples/quickstart/data/``; nothing is downloaded (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "pipelines"
ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TQDM_DISABLE": "1",
}


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("distillflow")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "distillflow"]


def stage(name: str, args: list[str], log_dir: Path, timings: dict, verbose: bool) -> None:
    """Run one CLI stage; its output goes to LOG_DIR/<name>.log (and the terminal with --verbose)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    cmd = _cli() + args
    print(f"\n==> {' '.join(['distillflow'] + args)}", flush=True)
    env = {**os.environ, **ENV}
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            fh.write(line)
            if verbose:
                sys.stdout.write(line)
        rc = proc.wait()
    timings[name] = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        print(tail, file=sys.stderr)
        raise SystemExit(f"stage '{name}' failed (exit {rc}); full log: {log}")
    print(f"    done in {timings[name]:.0f} s (log: {_rel(log)})", flush=True)


def seed_cache(src_run: Path, dst_run: Path) -> bool:
    """Copy SRC_RUN's request cache into DST_RUN (SQLite backup API: a consistent copy)."""
    src = src_run / "cache" / "requests.sqlite"
    if not src.is_file():
        return False
    dst = dst_run / "cache" / "requests.sqlite"
    dst.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return True


def run_and_train(arms: list[tuple[Path, Path, dict]], verbose: bool) -> None:
    """``distillflow run`` for each arm in turn, then every arm's ``train`` at once, then ``eval`` and ``report``.

    The runs go one after another (the ablation reuses the quickstart's request cache, seeded below);
    the trainings run side by side: each Axolotl process uses one CPU thread (``train.cpu_threads``),
    so the quickstart and its ablation together take about the wall time of one on a 2-core machine.
    """
    for i, (pipeline, run_dir, timings) in enumerate(arms):
        if i and seed_cache(arms[0][1], run_dir):
            print("\n(ablation: reusing the quickstart's teacher samples from its request cache)")
        stage("run", ["run", str(pipeline.relative_to(ROOT)), "--out", _rel(run_dir)], _logs(run_dir), timings, verbose)
        if STUDY.is_file():  # the report and the model card show the study's table from RUN_DIR/study.json
            shutil.copy(STUDY, run_dir / "study.json")
    # --config: the pipeline's own YAML, so train.base_model resolves relative to pipelines/
    parallel([("train", ["train", _rel(run_dir), "--config", str(pipeline.relative_to(ROOT))], _logs(run_dir), timings)
              for pipeline, run_dir, timings in arms], verbose)
    for pipeline, run_dir, timings in arms:
        stage("eval", ["eval", _rel(run_dir), "--config", str(pipeline.relative_to(ROOT))], _logs(run_dir), timings,
              verbose)
        stage("report", ["report", _rel(run_dir)], _logs(run_dir), timings, verbose)


def _logs(run_dir: Path) -> Path:
    return ROOT / "runs" / "logs" / run_dir.name


def parallel(stages: list[tuple[str, list[str], Path, dict]], verbose: bool) -> None:
    """Run several stages at once (one thread each, waiting on its subprocess); the first failure is raised."""
    errors: list[BaseException] = []

    def one(args) -> None:
        try:
            stage(*args, verbose=verbose)
        except BaseException as exc:  # SystemExit from stage(): re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(st,)) for st in stages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def summarize(run_dir: Path) -> dict:
    """The numbers of one finished run: curation counts, training loss, held-out exact match."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    results = json.loads((run_dir / "eval" / "results.json").read_text())
    metric = next(m for m in results["metrics"] if m["id"] in ("exact_match", "verifier"))
    sampled = next((m for m in results["metrics"] if m["id"].startswith(metric["id"] + "@T")), None)
    curated = sum(1 for _ in (run_dir / "data" / "curated.jsonl").open())
    rejected_by: dict[str, int] = {}
    rejected_path = run_dir / "data" / "rejected.jsonl"
    if rejected_path.is_file():
        for line in rejected_path.open():
            step = json.loads(line).get("rejected_by", "?")
            rejected_by[step] = rejected_by.get(step, 0) + 1
    wrong_kept = 0
    for line in (run_dir / "data" / "curated.jsonl").open():
        row = json.loads(line)
        wrong_kept += row["response"].strip() != str(row.get("reference", "")).strip()
    losses = []
    metrics_path = run_dir / "train" / "metrics.jsonl"
    if metrics_path.is_file():
        for line in metrics_path.open():
            rec = json.loads(line)
            if isinstance(rec.get("loss"), (int, float)):
                losses.append(rec["loss"])
    return {
        "run_dir": _rel(run_dir),  # relative to the repository: no machine paths in tracked files
        "prompts": (manifest.get("counts", {}).get("source") or {}).get("out"),
        "heldout": results["heldout"],
        "eval_prompts": results["prompts"],
        "curated": curated,
        "wrong_in_training_data": wrong_kept,
        "rejected_by": rejected_by,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "metric": metric["label"],
        "teacher": metric["values"].get("teacher"),
        "base": metric["values"].get("base"),
        "student": metric["values"].get("student"),
        "retention": metric.get("retention"),
        "sampled_metric": sampled["label"] if sampled else None,
        "sampled_teacher": sampled["values"].get("teacher") if sampled else None,
        "sampled_base": sampled["values"].get("base") if sampled else None,
        "sampled_student": sampled["values"].get("student") if sampled else None,
        "sampled_retention": sampled.get("retention") if sampled else None,
        "steps": _steps(run_dir),
        "lr_scheduler": _scheduler(run_dir),
        "report": _rel(run_dir / "report.html"),
    }


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _steps(run_dir: Path) -> int | None:
    state = run_dir / "train" / "trainer_state.json"
    if not state.is_file():
        return None
    return json.loads(state.read_text()).get("global_step")


def _scheduler(run_dir: Path) -> str | None:
    """The learning-rate schedule the training ran with (from the Axolotl config it rendered)."""
    import yaml

    cfg = run_dir / "train" / "axolotl.yaml"
    return yaml.safe_load(cfg.read_text()).get("lr_scheduler") if cfg.is_file() else None


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def print_summary(main: dict, timings: dict, ablation: dict | None, ab_timings: dict | None, total: float) -> None:
    print("\n" + "=" * 72)
    print("distillflow offline demo — 2-digit addition, teacher 1.06M params -> student 0.54M params (CPU)")
    print("=" * 72)
    print(f"training data      {main['curated']} curated examples (wrong answers kept: {main['wrong_in_training_data']}; "
          f"rejected: {', '.join(f'{k} {v}' for k, v in sorted(main['rejected_by'].items())) or 'none'})")
    if main["loss_first"] is not None:
        print(f"training loss      {main['loss_first']:.3f} -> {main['loss_last']:.3f}")
    print(f"prompts            {main['prompts']} sent to the teacher; {main['eval_prompts']} held out "
          "(reserved before generation, never trained on)")
    print(f"teacher            {_pct(main['teacher'])} exact match (greedy)"
          + (f", {_pct(main['sampled_teacher'])} sampled at T=1" if main["sampled_teacher"] is not None else ""))
    print(f"student            {_pct(main['base'])} before training -> {_pct(main['student'])} after "
          f"({main['steps']} steps)"
          + (f"; sampled: {_pct(main['sampled_base'])} -> {_pct(main['sampled_student'])}"
             if main["sampled_student"] is not None else ""))
    print(f"retention          {_pct(main['retention'])} of the teacher's accuracy (greedy)"
          + (f", {_pct(main['sampled_retention'])} sampled" if main["sampled_retention"] is not None else ""))
    if ablation is not None:
        print(f"ablation           same teacher samples, same {main['steps']} steps; greedy / sampled exact match:")
        print(f"  verified only    {main['curated']} examples, {main['wrong_in_training_data']} wrong: "
              f"{_pct(main['student'])} / {_pct(main['sampled_student'])}")
        print(f"  unfiltered       {ablation['curated']} examples, {ablation['wrong_in_training_data']} wrong: "
              f"{_pct(ablation['student'])} / {_pct(ablation['sampled_student'])}  ({ablation['steps']} steps)")
    print("wall time          " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + (f"; ablation: " + ", ".join(f"{k} {v:.0f} s" for k, v in ab_timings.items()) if ab_timings else "")
          + f"; total {total / 60:.1f} min")
    print(f"report             {main['report']}")
    if ablation is not None:
        print(f"ablation report    {ablation['report']}")


STUDY = ROOT / "docs" / "study_results.json"
_ARM_OF = {"quickstart": "verified_sft", "ablation": "unfiltered_sft"}


def compare_with_study(results: dict, study_path: Path = STUDY) -> list[str]:
    """Lines saying where this run's greedy held-out score falls against the study's 95% interval per arm."""
    if not study_path.is_file():
        return [f"study              none recorded ({study_path.name}): run benchmarks/study.py to see the spread"]
    sys.path.insert(0, str(ROOT))
    from distillflow.stats import summarize

    study = json.loads(study_path.read_text())
    out = [f"study              {study['seeds']} seeds x {study['steps']} steps per arm"
           + (f" on the first {study['limit']} prompts" if study.get("limit") else "")
           + " (benchmarks/study.py); greedy exact match on the held-out prompts:"]
    for key, arm in _ARM_OF.items():
        run, recs = results.get(key), study["runs"].get(arm) or []
        if run is None or not recs or run.get("student") is None:
            continue
        s = summarize([r["mixed"] for r in recs])
        where = "inside" if s.lo <= run["student"] <= s.hi else "outside"
        lo, hi = min(r["mixed"] for r in recs), max(r["mixed"] for r in recs)
        out.append(f"  {arm:<16} this run {_pct(run['student'])}; study mean {_pct(s.mean)}, 95% interval of the "
                   f"mean [{_pct(s.lo)}, {_pct(s.hi)}] ({where}), single runs ranged {_pct(lo)}-{_pct(hi)}")
    mine = results.get("quickstart") or {}
    if (study.get("limit") or study["steps"] != mine.get("steps")
            or study.get("lr_scheduler", "cosine") != (mine.get("lr_scheduler") or "cosine")):
        out.append("  (the study's setting differs from this run's — a rough guide to the spread, not a test)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ablation", action="store_true", help="also train a student on the unfiltered teacher samples")
    p.add_argument("--fresh", action="store_true", help="delete runs/quickstart* first (otherwise cached stages are reused)")
    p.add_argument("--verbose", "-v", action="store_true", help="stream every stage's output")
    p.add_argument("--json", type=Path, help="also write the summary numbers to this JSON file")
    args = p.parse_args(argv)

    started = time.perf_counter()
    runs = ROOT / "runs"
    main_dir, ab_dir = runs / "quickstart", runs / "quickstart_unfiltered"
    if args.fresh:
        for d in (main_dir, ab_dir):
            shutil.rmtree(d, ignore_errors=True)

    # the student ships in the repo; pretrain it again only if it went missing
    sys.path.insert(0, str(ROOT))
    student = ROOT / "examples" / "quickstart" / "models" / "student"
    if not (student / "model.safetensors").is_file():
        print("the demo student is missing: pretraining it (examples/quickstart/train_student.py, ~6 min)", flush=True)
        subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart" / "train_student.py")], check=True)

    timings: dict[str, float] = {}
    ab_timings: dict[str, float] | None = {} if args.ablation else None
    arms = [(PIPELINES / "quickstart.yaml", main_dir, timings)]
    if ab_timings is not None:
        arms.append((PIPELINES / "quickstart_unfiltered.yaml", ab_dir, ab_timings))
    run_and_train(arms, args.verbose)
    summary = summarize(main_dir)
    ab_summary = summarize(ab_dir) if args.ablation else None
    total = time.perf_counter() - started
    print_summary(summary, timings, ab_summary, ab_timings, total)
    print("\n".join(compare_with_study({"quickstart": summary, "ablation": ab_summary})))
    if args.json:
        args.json.write_text(json.dumps({"quickstart": summary, "timings": timings, "ablation": ab_summary,
                                         "ablation_timings": ab_timings, "total_seconds": total}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
