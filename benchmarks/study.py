#!/usr/bin/env python
"""The demo study: unfiltered SFT vs verified SFT vs verified KD, on the same teacher data, over several seeds.

Seed i is one teacher draw and one training seed: a seeded teacher run (``pipelines/quickstart.yaml``
with the teacher's sampling ``seed: i``: two samples per prompt at T=1, top-5 log-probabilities kept)
feeds every arm of that seed (the unfiltered run reuses its request cache, so the arms of a seed see
the *same* teacher samples), and each arm trains the demo student through the real
``distillflow train`` (Axolotl on CPU, the pipeline's own recipe) with ``train.seed: i`` for the same
number of steps. So the spread covers both what a rerun with another teacher seed and another
training seed would see; ``--draws one`` keeps teacher draw 0 for every seed (training seeds only).
Seed 0 is exactly ``make demo``'s run (asking for log-probabilities does not change the samples).
Every student answers greedily:

- **unseen**: 200 problems neither the teacher nor any student trained on (the headline);
- **mixed**: the pipeline's 200 held-out prompts (most of them problems the teacher trained on).

It prints base -> student (mean ± sd [95% interval]) -> teacher, retention (student ÷ teacher) and the
differences between arms (paired by seed when the arms share each seed's teacher draw, Welch's
unpaired interval otherwise), and writes everything to ``--out/study.json``
(each finished run is recorded at once, so an interrupted study keeps its results).

    python benchmarks/study.py --seeds 5 --jobs 2                    # what docs/demo.md's table ran (~60 min)
    python benchmarks/study.py --seeds 5 --steps 150 --limit 1200    # a quicker, rougher study
    python benchmarks/study.py --seeds 2 --steps 20 --arms verified_kd   # a smoke run
    python benchmarks/study.py --seeds 5 --steps 1500 --jobs 2 --resume  # finish an interrupted study
    python benchmarks/study.py --seeds 5 --steps 1500 --jobs 2 --arms verified_sft   # one arm first ...
    python benchmarks/study.py --seeds 5 --steps 1500 --jobs 2 --resume             # ... then the others
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from distillflow.stats import study_table  # noqa: E402

ARMS = {  # arm -> (pipeline, train.mode)
    "unfiltered_sft": ("quickstart_unfiltered.yaml", "sft"),
    "verified_sft": ("quickstart.yaml", "sft"),
    "verified_kd": ("quickstart.yaml", "kd"),
}
#: How the local teacher's sampling seed is derived (engine.distilabel_client.batch_seed): 1 hashed the cache key
#: (until 2026-12-03), 2 hashes the sampling params, seeds and messages. A resume across schemes is refused.
SEED_SCHEME = 2
ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "AXOLOTL_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1",
       "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}


def cli(args: list[str], log: Path) -> float:
    """Run the distillflow CLI (this checkout's); its output goes to ``log``; returns seconds."""
    t0 = time.perf_counter()
    env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT)}
    with log.open("w") as fh:
        rc = subprocess.call([sys.executable, "-m", "distillflow", *args], cwd=ROOT, env=env, stdout=fh,
                             stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-20:])
        raise SystemExit(f"distillflow {' '.join(args)} failed (exit {rc}):\n{tail}\nfull log: {log}")
    return time.perf_counter() - t0


def absolute_pipeline(name: str) -> dict:
    """The pipeline as a dict with its relative paths made absolute (the copy lives in the study dir)."""
    import yaml

    data = yaml.safe_load((ROOT / "pipelines" / name).read_text())
    base = ROOT / "pipelines"
    data["source"]["path"] = str((base / data["source"]["path"]).resolve())
    for t in data["teachers"]:
        if (base / t["model"]).exists():
            t["model"] = str((base / t["model"]).resolve())
    data["train"]["base_model"] = str((base / data["train"]["base_model"]).resolve())
    return data


def unseen_problems(prompts_file: Path, n: int = 200) -> list[dict]:
    """``n`` held-out problems (the teacher never trained on them) that are not among the pipeline's prompts."""
    from examples.quickstart import arithmetic as demo

    asked = {json.loads(line)["question"] for line in prompts_file.open()}
    out = []
    for a, b in demo.sample_problems(600, seed=2024, heldout=True):
        q = demo.format_question(a, b)
        if q not in asked:
            out.append({"question": q, "answer": str(a + b)})
        if len(out) == n:
            break
    return out


def exact_match(model_dir: Path | str, items: list[dict]) -> float:
    from distillflow.evaluate.answer import generate_local

    answers = generate_local(model_dir, [[{"role": "user", "content": it["question"]}] for it in items],
                             max_new_tokens=6, batch_size=100)
    return sum(a.strip() == it["answer"] for a, it in zip(answers, items)) / len(items)


def make_data(out: Path, limit: int | None, draw: int = 0) -> dict[str, Path]:
    """One teacher run sampled with ``seed: draw`` for the verified arms, and the unfiltered run on its
    cached samples."""
    import sqlite3

    import yaml

    runs = {"quickstart.yaml": out / f"data_verified_d{draw}", "quickstart_unfiltered.yaml": out / f"data_unfiltered_d{draw}"}
    for name, run in runs.items():
        if (run / "data" / "curated.jsonl").is_file():
            continue
        if name == "quickstart_unfiltered.yaml":
            src = runs["quickstart.yaml"] / "cache" / "requests.sqlite"
            (run / "cache").mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(src) as a, sqlite3.connect(run / "cache" / "requests.sqlite") as b:
                a.backup(b)
        data = absolute_pipeline(name)
        # every arm reads the same samples: the KD arm needs their top-5 log-probabilities, so all ask for them
        data["teachers"][0]["params"]["top_logprobs"] = 5
        data["teachers"][0]["params"]["seed"] = draw
        if limit:
            data["source"]["limit"] = limit  # the first LIMIT prompts (held-out ones drawn from them)
        cfg = out / f"data_d{draw}_{name}"
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        print(f"teacher data, draw {draw}: distillflow run pipelines/{name}" + (f" (first {limit} prompts)" if limit else ""),
              flush=True)
        cli(["run", str(cfg), "--out", str(run)], out / f"run_{run.name}.log")
    return runs


def draw_counts(runs: dict[str, Path]) -> dict:
    """What one teacher draw gave each arm: examples kept, and the filter's rejections (from the run manifests)."""
    verified = json.loads((runs["quickstart.yaml"] / "manifest.json").read_text())["counts"]
    unfiltered = json.loads((runs["quickstart_unfiltered.yaml"] / "manifest.json").read_text())["counts"]
    last = list(verified)[-1]
    return {"samples": verified["generate"]["out"], "filter_rejected": verified["filter"]["rejected"],
            "verified": verified[last]["out"], "unfiltered": unfiltered[list(unfiltered)[-1]]["out"]}


def _rel(path: Path) -> str:
    """PATH relative to the repository when it lies inside it (no machine paths in docs/study_results.json)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def train_arm(out: Path, runs: dict, arm: str, seed: int, steps: int, draw: int) -> dict:
    import yaml

    pipeline, mode = ARMS[arm]
    data = absolute_pipeline(pipeline)
    data["teachers"][0]["params"].update(top_logprobs=5, seed=draw)  # as in make_data (kd needs them asked for)
    data["train"].update({"mode": mode, "seed": seed, "max_steps": steps, "preprocess": False})
    run = out / f"{arm}_s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    (run / "data").mkdir(parents=True)
    shutil.copy(runs[pipeline] / "data" / "curated.jsonl", run / "data" / "curated.jsonl")
    cfg = out / f"{arm}_s{seed}.yaml"
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    seconds = cli(["train", str(run), "--config", str(cfg)], out / f"train_{arm}_s{seed}.log")
    losses = [r["loss"] for r in map(json.loads, (run / "train" / "metrics.jsonl").open()) if "loss" in r]
    return {"run": _rel(run), "draw": draw, "seconds": seconds, "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=5, help="seeds per arm (0..N-1): seed i is teacher draw i (see --draws) and training seed i")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per student (equal in every arm)")
    p.add_argument("--limit", type=int, help="use the first N prompts only (default: all 4,000)")
    p.add_argument("--jobs", type=int, default=1, help="trainings run at a time (each uses one CPU thread)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--draws", choices=["per-seed", "one"], default="per-seed",
                   help="per-seed: seed i samples the teacher with seed i too (default); one: teacher draw 0 for all")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "study")
    p.add_argument("--resume", action="store_true",
                   help="keep the runs already recorded in --out/study.json (same --steps and --limit) and train only the rest")
    p.add_argument("--json", type=Path, help="also copy study.json here (e.g. docs/study_results.json)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    quickstart = absolute_pipeline("quickstart.yaml")
    scheduler = (quickstart["train"].get("overrides") or {}).get("lr_scheduler", "cosine")  # the templates' default
    old = json.loads((out / "study.json").read_text()) if args.resume and (out / "study.json").is_file() else None
    if old is not None:  # refuse before any teacher data is made
        if old.get("seed_scheme", 1) != SEED_SCHEME:
            raise SystemExit(f"--resume: {out / 'study.json'} was sampled under the earlier teacher seed scheme "
                             "(the seed hashed the model's path and the request's log-probability params): its "
                             "teacher data would not be this checkout's. Start over without --resume.")
        was = (old.get("steps"), old.get("limit"), old.get("draws", "one"), old.get("lr_scheduler", "cosine"))
        if was != (args.steps, args.limit, args.draws, scheduler):
            raise SystemExit(f"--resume: {out / 'study.json'} was run with --steps {was[0]} --limit {was[1]} "
                             f"--draws {was[2]} and a {was[3]} learning rate; rerun with those, or without "
                             "--resume to start over")
    draws = list(range(args.seeds)) if args.draws == "per-seed" else [0]
    data_runs = {d: make_data(out, args.limit, d) for d in draws}
    runs = data_runs[0]
    draw_of = (lambda seed: seed) if args.draws == "per-seed" else (lambda seed: 0)
    items_unseen = unseen_problems(ROOT / "examples" / "quickstart" / "data" / "arithmetic_prompts.jsonl")
    items_mixed = [{"question": r["prompt"], "answer": str(r["reference"])}
                   for r in map(json.loads, (runs["quickstart.yaml"] / "data" / "heldout.jsonl").open())]
    student, teacher = quickstart["train"]["base_model"], quickstart["teachers"][0]["model"]
    ref = {"teacher_unseen": exact_match(teacher, items_unseen), "teacher_mixed": exact_match(teacher, items_mixed),
           "base_unseen": exact_match(student, items_unseen), "base_mixed": exact_match(student, items_mixed)}
    results = {"seeds": args.seeds, "steps": args.steps, "limit": args.limit, "draws": args.draws,
               "seed_scheme": SEED_SCHEME, "teacher_data": {str(d): draw_counts(r) for d, r in data_runs.items()},
               "lr_scheduler": scheduler, "reference": ref, "runs": {a: [] for a in args.arms},
               "unseen_prompts": len(items_unseen), "mixed_prompts": len(items_mixed)}
    before = 0.0  # seconds of the invocations this one resumes
    if old is not None:
        for arm, recs in old["runs"].items():  # every recorded arm stays, also those not in --arms
            results["runs"][arm] = [r for r in recs if r["seed"] < args.seeds]
        results["runs"] = {a: results["runs"][a] for a in ARMS if a in results["runs"]}
        before = float(old.get("total_seconds") or 0.0)
    done = {(r["seed"], arm) for arm, recs in results["runs"].items() for r in recs}
    if old is not None:
        print(f"resuming: {len(done)} runs already recorded", flush=True)
    print(f"teacher {ref['teacher_unseen']:.3f} unseen / {ref['teacher_mixed']:.3f} mixed; base student "
          f"{ref['base_unseen']:.3f} / {ref['base_mixed']:.3f}", flush=True)
    eval_lock = threading.Lock()  # one evaluation at a time: trainings run in parallel, evals are short

    def save() -> None:  # after each finished run, so an interrupted study keeps its results
        results["total_seconds"] = before + time.perf_counter() - started
        (out / "study.json").write_text(json.dumps(results, indent=2))

    def one(seed: int, arm: str) -> dict:
        rec = train_arm(out, data_runs[draw_of(seed)], arm, seed, args.steps, draw_of(seed))
        model = ROOT / rec["run"] / "train" / "output"
        with eval_lock:
            rec.update(seed=seed, unseen=exact_match(model, items_unseen), mixed=exact_match(model, items_mixed))
        shutil.rmtree(model, ignore_errors=True)  # ~2 MB each; scores kept
        return rec

    # seeds outermost: an interrupted study still compares every arm; --jobs trainings at a time
    # (each Axolotl run uses train.cpu_threads = 1 thread, so --jobs 2 fills a 2-core machine)
    todo = [(seed, arm) for seed in range(args.seeds) for arm in args.arms if (seed, arm) not in done]
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one, seed, arm): (seed, arm) for seed, arm in todo}
        for fut in concurrent.futures.as_completed(futures):
            seed, arm = futures[fut]
            rec = fut.result()
            results["runs"][arm].append(rec)
            results["runs"][arm].sort(key=lambda r: r["seed"])
            save()
            print(f"{arm} seed {seed}: unseen {rec['unseen']:.3f}, mixed {rec['mixed']:.3f}, loss "
                  f"{rec['loss_first']} -> {rec['loss_last']} ({rec['seconds']:.0f} s)", flush=True)
    save()
    print("\n" + study_table(results))
    print(f"\ntotal {results['total_seconds'] / 60:.1f} min; results: {out / 'study.json'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
