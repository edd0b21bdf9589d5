"""`distillflow eval RUN_DIR`: base student -> trained student -> teacher on the held-out prompts.

    results = evaluate_run("runs/quickstart", max_prompts=100)
    for m in results["metrics"]:
        print(m["label"], m["values"], m["retention"])     # retention = trained student / teacher

Writes ``RUN_DIR/eval/results.json`` (the numbers) and ``RUN_DIR/eval/answers.jsonl`` (every
prompt's three answers and how each was scored). Teacher and judge requests are cached in
``RUN_DIR/eval/cache/``: evaluating again only pays for what changed.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from distillflow.engine.outputs import read_json, read_jsonl
from distillflow.errors import ConfigurationError, UsageError, did_you_mean, error_text, literal_choices, run_pipeline_file
from distillflow.evaluate.contamination import decontamination_status, scored_sets

__all__ = ["evaluate_run", "retention", "plan_metrics", "RESULTS_VERSION"]

RESULTS_VERSION = 1
MODEL_KEYS = ("base", "student", "teacher")
LABELS = {"base": "base student", "student": "trained student", "teacher": "teacher"}


def retention(student: float | None, teacher: float | None) -> float | None:
    """student / teacher; None when either is missing or the teacher scores 0.

    >>> retention(0.6, 0.8)
    0.75
    """
    if student is None or teacher is None or teacher == 0:
        return None
    return student / teacher


def _load(run_dir: Path, config: Path | None):
    from distillflow.spec.loader import load_spec

    path = run_pipeline_file(run_dir, config)
    from distillflow.engine.providers import resolve_local_models

    spec, base = load_spec(path), path.resolve().parent
    spec = resolve_local_models(spec, base)  # local teacher directories are relative to the YAML, as in `run`
    return spec, base


# The options of `distillflow eval` that override a field of the pipeline's eval: section.
_OPTIONS = {"metrics": "--metric", "backend": "--backend", "teacher": "--teacher", "max_prompts": "--max-prompts",
            "sample_temperature": "--sample-temperature"}


def _option_error(err, overrides: dict) -> str:
    """One line per invalid value, naming the option (or the eval: key), the value and the allowed ones."""
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        field = str(loc[0]) if loc else ""
        name = _OPTIONS.get(field, f"eval.{field}") if field in overrides else f"eval.{field}"
        if e["type"] == "literal_error":
            allowed = literal_choices(e)
            hint = did_you_mean(e.get("input"), allowed)
            lines.append(f"{name}: unknown value '{e.get('input')}'" + (f" — {hint}" if hint else "")
                         + f" (allowed: {', '.join(allowed)})")
        else:
            lines.append(f"{name}: {error_text(e)} (got {e.get('input')!r})")
    return "invalid evaluation option " + "; ".join(lines)


def _step(spec, kind: str, step_id: str | None, field: str):
    steps = [s for s in spec.steps if s.kind == kind]
    if step_id is None:
        return steps[0] if steps else None
    for s in steps:
        if s.id == step_id:
            return s
    hint = did_you_mean(step_id, [s.id for s in steps])
    have = f"{kind} steps: {', '.join(s.id for s in steps)}" if steps else f"the pipeline has no {kind} step"
    raise UsageError(f"eval.{field}: no {kind} step '{step_id}' ({have})" + (f" — {hint}" if hint else ""))


def plan_metrics(spec, es, rows: list[dict]) -> tuple[list[str], object | None, object | None]:
    """(metrics to compute, verify step, judge step), checking that each metric can be computed."""
    verify = _step(spec, "verify", es.verifier, "verifier")
    judge = _step(spec, "judge", es.judge, "judge")
    has_reference = bool(rows) and all(r.get(es.reference) not in (None, "") for r in rows)
    if es.metrics is None:
        metrics = ["verifier"] if verify else (["exact_match"] if has_reference else [])
        metrics += ["judge", "winrate"] if judge else []
        if not metrics:
            raise ConfigurationError(
                "nothing to measure: the pipeline has no verify or judge step and the held-out prompts have no "
                f"'{es.reference}' column. Add a `kind: verify` or `kind: judge` step, or map a reference answer "
                "column (source.columns: {reference: ...}), then run the pipeline again."
            )
        return metrics, verify, judge
    metrics = list(dict.fromkeys(es.metrics))
    if "verifier" in metrics and verify is None:
        raise ConfigurationError("eval.metrics has 'verifier' but the pipeline has no verify step: add one "
                                 "(kind: verify, check: exact_match, reference: reference) or use 'exact_match'")
    if "exact_match" in metrics and not has_reference:
        raise ConfigurationError(f"eval.metrics has 'exact_match' but the held-out prompts lack a '{es.reference}' "
                                 "column: map one in source.columns, or set eval.reference to the column that holds answers")
    if ("judge" in metrics or "winrate" in metrics) and judge is None:
        raise ConfigurationError("eval.metrics has 'judge'/'winrate' but the pipeline has no judge step to reuse: "
                                 "add one (kind: judge, teacher: NAME, rubric: correctness)")
    return metrics, verify, judge


def _resolve_student(spec, run_dir: Path, config_dir: Path, student: str | Path | None) -> Path:
    if student is not None:
        p = Path(student)
        if not p.exists():
            raise ConfigurationError(f"no student model at {p}: check --student")
        return p
    out = spec.train.output_dir if spec.train and spec.train.output_dir else None
    if out:
        p = Path(out)
        candidates = [p] if p.is_absolute() else [config_dir / p, Path.cwd() / p]
    else:
        candidates = [run_dir / "train" / "output"]
    used = _axolotl_value(run_dir, "output_dir")  # where `distillflow train` really wrote it
    if used:
        candidates.append(Path(used))
    for c in candidates:
        if c.exists():
            return c
    raise ConfigurationError(f"no trained student at {candidates[0]}: run `distillflow train {run_dir}` first, "
                             "or pass --student DIR")


def _axolotl_value(run_dir: Path, key: str) -> str | None:
    """A setting of the Axolotl config that `distillflow train` rendered (paths there are absolute)."""
    import yaml

    for name in ("axolotl.yaml", "axolotl.yml", "config.yaml"):
        p = run_dir / "train" / name
        if p.is_file():
            try:
                data = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and data.get(key):
                return str(data[key])
    return None


def _resolve_base(spec, run_dir: Path, config_dir: Path, base: str | Path | None) -> str | None:
    from distillflow.evaluate.answer import resolve_model_path

    if base is not None:
        if not Path(base).is_dir():
            raise ConfigurationError(f"no base model directory at {base}: check --base")
        return str(Path(base).resolve())
    name = spec.train.base_model if spec.train else None
    if name is None:
        return None
    try:
        return resolve_model_path(name, [config_dir], "train.base_model")
    except ConfigurationError:
        used = _axolotl_value(run_dir, "base_model")
        if used and Path(used).is_dir():
            return str(Path(used).resolve())
        raise


def _answer_students(models: dict, conversations, max_tokens: int, es, log,
                     temperature: float | None = None) -> dict[str, list[str]]:
    from distillflow.evaluate.answer import generate_local, generate_served

    answers = {}
    how = "greedy" if temperature is None else f"sampled at T={temperature:g}"
    for key in ("base", "student"):
        info = models.get(key)
        if info is None:
            continue
        log(f"answering {len(conversations)} held-out prompts with the {LABELS[key]} ({info['path']}, {es.backend}, {how})")
        t0 = time.perf_counter()
        if es.backend == "serve":
            answers[key] = generate_served(info["path"], conversations, max_tokens, temperature=temperature, seed=es.seed)
        else:
            answers[key] = generate_local(info["path"], conversations, max_tokens, es.batch_size,
                                          temperature=temperature, seed=es.seed)
        info["seconds" if temperature is None else "sampled_seconds"] = round(time.perf_counter() - t0, 3)
        info["answered"] = len(answers[key])
    return answers


def _metric(mid: str, label: str, kind: str, scale, values: dict, n: dict, note: str = "") -> dict:
    return {
        "id": mid, "label": label, "kind": kind, "scale": list(scale), "values": values, "n": n,
        "retention": retention(values.get("student"), values.get("teacher")),
        "base_retention": retention(values.get("base"), values.get("teacher")),
        "note": note,
    }


def evaluate_run(
    run_dir: str | Path,
    config: str | Path | None = None,
    student: str | Path | None = None,
    base: str | Path | None = None,
    teacher: str | None = None,
    max_prompts: int | None = None,
    backend: str | None = None,
    metrics: list[str] | None = None,
    sample_temperature: float | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Evaluate base student, trained student and teacher on the run's held-out prompts.

    Arguments override the pipeline's ``eval:`` section. Returns the results dict that is also
    written to ``RUN_DIR/eval/results.json``.
    """
    from pydantic import ValidationError

    from distillflow.engine.session import TeacherSession
    from distillflow.evaluate.answer import ask_teacher, materialize_model
    from distillflow.spec.train import EvalSpec

    log = log or (lambda _msg: None)
    run_dir = Path(run_dir)
    spec, config_dir = _load(run_dir, Path(config) if config else None)
    overrides = {k: v for k, v in {"teacher": teacher, "max_prompts": max_prompts, "backend": backend,
                                    "metrics": metrics, "sample_temperature": sample_temperature}.items() if v is not None}
    try:
        es = EvalSpec.model_validate({**(spec.eval.model_dump(exclude_unset=True) if spec.eval else {}), **overrides})
    except ValidationError as err:
        raise UsageError(_option_error(err, overrides)) from None

    heldout_path = run_dir / "data" / "heldout.jsonl"
    rows = read_jsonl(heldout_path)
    if not rows:
        raise ConfigurationError(
            f"no held-out prompts in {heldout_path}: add `heldout: {{size: 50}}` (or `fraction: 0.05`) under "
            "`source:` in the pipeline and run it again — held-out prompts are reserved before generation, "
            "so a student is never evaluated on prompts it was trained on"
        )
    total_heldout = len(rows)
    rows = rows[: es.max_prompts] if es.max_prompts else rows
    metric_ids, verify_step, judge_step = plan_metrics(spec, es, rows)

    names = [t.name for t in spec.teachers]
    tname = es.teacher or names[0]
    if tname not in names:
        raise UsageError(f"unknown teacher '{tname}' (teachers: {', '.join(names)})"
                         + (f" — {did_you_mean(tname, names)}" if did_you_mean(tname, names) else ""))
    tspec = spec.teacher(tname)

    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    student_dir = _resolve_student(spec, run_dir, config_dir, student)
    base_dir = _resolve_base(spec, run_dir, config_dir, base)
    student_dir = materialize_model(student_dir, base_dir, eval_dir)
    models: dict[str, dict] = {"student": {"label": LABELS["student"], "path": str(student_dir.resolve())}}
    notes: list[str] = []
    if base_dir is not None:
        models["base"] = {"label": LABELS["base"], "path": base_dir}
    else:
        notes.append("no base student: set train.base_model in the pipeline or pass --base DIR")

    from distillflow.engine.providers import effective_params

    tparams = effective_params(tspec)
    tparams.pop("logprobs", None)
    tparams.pop("top_logprobs", None)  # kept for KD training data, not wanted when scoring answers
    tparams["temperature"] = 0.0  # greedy, like the students: evaluation should be repeatable
    tparams.pop("seed", None)
    max_tokens = es.max_tokens or tparams.get("max_tokens") or 256
    tparams["max_tokens"] = max_tokens

    conversations = [r["messages"] for r in rows]
    started = time.time()
    session = TeacherSession(eval_dir / "cache")
    try:
        # the teacher first: an unreachable endpoint fails in seconds, before minutes of student answers
        log(f"asking teacher '{tname}' ({tspec.model}) the held-out prompts")
        t0 = time.perf_counter()
        teacher_answers = ask_teacher(session, tspec, conversations, tparams, label=tname)
        teacher_info = {"label": LABELS["teacher"], "name": tname, "model": tspec.model, "provider": tspec.provider,
                        "seconds": round(time.perf_counter() - t0, 3),
                        "answered": sum(a is not None for a in teacher_answers)}
        answers = _answer_students(models, conversations, max_tokens, es, log)
        answers["teacher"], models["teacher"] = teacher_answers, teacher_info
        keys = [k for k in MODEL_KEYS if k in answers]
        per_row: list[dict] = [{"prompt_id": r.get("prompt_id"), "prompt": r.get("prompt"),
                                "reference": r.get(es.reference), "answers": {k: answers[k][i] for k in keys},
                                "scores": {}} for i, r in enumerate(rows)]
        out_metrics: list[dict] = []
        for mid in metric_ids:
            if mid == "verifier":
                out_metrics.append(_rate_metric(mid, f"verifier pass rate ({verify_step.id}: {verify_step.check})",
                                                verify_step.check, verify_step.params, verify_step.reference,
                                                rows, answers, keys, per_row))
            elif mid == "exact_match":
                out_metrics.append(_rate_metric(mid, "exact match", "exact_match", {}, es.reference,
                                                rows, answers, keys, per_row))
            elif mid == "judge":
                out_metrics.append(_judge_metric(session, spec, judge_step, rows, answers, keys, per_row, log))
            elif mid == "winrate":
                out_metrics.append(_winrate(session, spec, judge_step, rows, answers, keys, es, per_row, log))

        rate_ids = [m for m in metric_ids if m in ("verifier", "exact_match")]
        if es.sample_temperature is not None and rate_ids:
            # The same rate metrics on sampled answers: a model that is right greedily can still put
            # probability on wrong answers (e.g. mistakes it learned from unfiltered teacher output).
            temp = es.sample_temperature
            log(f"asking teacher '{tname}' again, sampling at T={temp:g}")
            # seeded like the students (prompt i: eval.seed + i), so two evaluations sample the same answers
            sparams = {**tparams, "temperature": temp, "top_p": 1.0, "seed": es.seed}
            sampled = {"teacher": ask_teacher(session, tspec, conversations, sparams, label=f"{tname} (sampled)",
                                              seed_by_index=True)}
            sampled.update(_answer_students(models, conversations, max_tokens, es, log, temperature=temp))
            for i, r in enumerate(per_row):
                r["sampled_answers"] = {k: sampled[k][i] for k in keys}
            for mid in rate_ids:
                sid = f"{mid}@T{temp:g}"
                if mid == "verifier":
                    m = _rate_metric(sid, f"verifier pass rate, sampled at T={temp:g} ({verify_step.id})",
                                     verify_step.check, verify_step.params, verify_step.reference,
                                     rows, sampled, keys, per_row)
                else:
                    m = _rate_metric(sid, f"exact match, sampled at T={temp:g}", "exact_match", {}, es.reference,
                                     rows, sampled, keys, per_row)
                m["note"] = (f"one answer per prompt sampled at temperature {temp:g} from every model (students "
                             f"and teacher seeded with {es.seed} + the prompt's index)")
                out_metrics.append(m)

        lm = _lm_eval(es, models, tspec, config_dir, log)
        for task, task_metrics in lm.get("tasks", {}).items():
            for metric, values in task_metrics.items():
                out_metrics.append(_metric(f"lm_eval/{task}/{metric}", f"{task} {metric} (lm-eval)", "lm_eval", (0, 1),
                                           values, {k: es.lm_eval_limit for k in values}))
    finally:
        session.close()

    decon = decontamination_status(read_json(run_dir / "manifest.json") or {}, scored_sets({"lm_eval": lm}))
    notes += decon["warnings"]
    results = {
        "version": RESULTS_VERSION,
        "pipeline": spec.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.time() - started, 3),
        "heldout": total_heldout,
        "prompts": len(rows),
        "settings": {"backend": es.backend, "max_tokens": max_tokens, "seed": es.seed, "metrics": metric_ids,
                     "sample_temperature": es.sample_temperature},
        "models": models,
        "metrics": out_metrics,
        "lm_eval": lm,
        "usage": session.ledger.to_dict(),
        "cost_usd": round(session.ledger.spent, 6),
        "notes": notes,
        "decontamination": decon["sets"],
    }
    tmp = eval_dir / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(eval_dir / "results.json")
    with (eval_dir / "answers.jsonl").open("w", encoding="utf-8") as fh:
        for r in per_row:
            fh.write(json.dumps(r, ensure_ascii=False, default=str) + "\n")
    return results


def _rate_metric(mid, label, check, params, reference, rows, answers, keys, per_row) -> dict:
    """Pass rate of a verifier check (the verify step's, or exact_match) for every model."""
    from distillflow.evaluate import metrics as M

    values, n = {}, {}
    for k in keys:
        res = M.verifier_scores(rows, answers[k], check, params, reference)
        for i, r in enumerate(res):
            per_row[i]["scores"].setdefault(mid, {})[k] = r["pass"]
        values[k], n[k] = sum(r["pass"] for r in res) / len(res), len(res)
    return _metric(mid, label, "rate", (0, 1), values, n)


def _judge_metric(session, spec, judge_step, rows, answers, keys, per_row, log) -> dict:
    """Mean score of the judge step (its teacher, rubric and parser) over every model's answers."""
    from distillflow.evaluate import metrics as M
    from distillflow.evaluate.answer import ask_teacher

    jt = spec.teacher(judge_step.teacher)
    values, n = {}, {}
    for k in keys:
        log(f"judging the {LABELS[k]}'s answers with '{jt.name}' ({judge_step.id})")
        msgs = [M.judge_messages(r, a, judge_step) for r, a in zip(rows, answers[k])]
        texts = ask_teacher(session, jt, msgs, _judge_params(jt), label=f"{jt.name} (eval judge)")
        scores = M.judge_scores(rows, texts, judge_step)
        for i, s in enumerate(scores):
            per_row[i]["scores"].setdefault("judge", {})[k] = s
        values[k], n[k] = M.summarize(scores)
    unscored = {k: len(rows) - n[k] for k in keys if n[k] < len(rows)}
    what = judge_step.rubric if judge_step.backend == "rubric" else judge_step.backend
    what = what if len(what) <= 24 else "custom rubric"
    return _metric("judge", f"judge score ({what}, by {jt.name})", "score", judge_step.scale, values, n,
                   f"unscored judge replies: {unscored}" if unscored else "")


def _judge_params(judge_teacher) -> dict:
    from distillflow.engine.providers import effective_params

    params = effective_params(judge_teacher)
    params.pop("logprobs", None)
    params.pop("top_logprobs", None)
    if params.get("temperature") is None:
        params["temperature"] = 0.0  # as in the pipeline's judge step: repeatable
    return params


def _winrate(session, spec, judge_step, rows, answers, keys, es, per_row, log) -> dict:
    from distillflow.evaluate import metrics as M
    from distillflow.evaluate.answer import ask_teacher
    from distillflow.steps.judge import resolve_rubric

    jt = spec.teacher(judge_step.teacher)
    rubric = resolve_rubric(judge_step.rubric, tuple(judge_step.scale)) if judge_step.backend == "rubric" else None
    values: dict = {}
    n: dict = {}
    for k in keys:
        if k == "teacher":
            continue
        log(f"pairwise judging: {LABELS[k]} vs teacher, with '{jt.name}'")
        firsts, msgs = [], []
        for r, s_ans, t_ans in zip(rows, answers[k], answers["teacher"]):
            first = M.pairwise_order(es.seed, str(r.get("prompt_id")), k)
            a, b = (s_ans or "", t_ans or "") if first else (t_ans or "", s_ans or "")
            firsts.append(first)
            msgs.append(M.pairwise_messages(r, a, b, rubric, judge_step.reference))
        texts = ask_teacher(session, jt, msgs, _judge_params(jt), label=f"{jt.name} (eval pairwise)")
        wins = []
        for i, (text, first) in enumerate(zip(texts, firsts)):
            verdict = M.parse_pairwise_verdict(text)
            w = M.win_value(verdict, first)
            wins.append(w)
            per_row[i]["scores"].setdefault("winrate", {})[k] = {"verdict": verdict, "student_first": first, "value": w}
        values[k], n[k] = M.summarize(wins)
    values["teacher"], n["teacher"] = 0.5, len(rows)
    return _metric("winrate", f"win-rate vs teacher (pairwise, by {jt.name})", "winrate", (0, 1), values, n,
                   "wins + ties/2 against the teacher's answer, order randomized; the teacher against itself is 0.5")


def _lm_eval(es, models: dict, tspec, config_dir: Path, log) -> dict:
    from distillflow.evaluate.harness import run_lm_eval

    if not es.lm_eval_tasks:
        return {"status": "skipped", "reason": "no eval.lm_eval_tasks", "tasks": {}, "errors": {}}
    include = es.lm_eval_include
    if include and not Path(include).is_absolute():
        include = str(config_dir / include)
    students = {k: models[k]["path"] for k in ("base", "student") if k in models}
    out = run_lm_eval(es.lm_eval_tasks, students, tspec, limit=es.lm_eval_limit, include_path=include, log=log)
    if out["status"] == "skipped":
        log(out["reason"])
    return out
