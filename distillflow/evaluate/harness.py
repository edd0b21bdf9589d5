"""Hook into lm-evaluation-harness (``lm_eval``), only when it is installed.

Students (local directories) run as lm_eval's ``hf`` model on this machine; an OpenAI-compatible
teacher runs as ``local-chat-completions`` (generation tasks only: chat APIs give no
log-likelihoods), a local ``transformers`` teacher as ``hf``. Every model's failure is recorded,
never raised, so one unsupported task does not lose the other numbers.

    out = run_lm_eval(["gsm8k"], {"base": "models/s", "student": "runs/x/train/output"}, teacher, limit=50)
    out["tasks"]["gsm8k"]["exact_match,strict-match"]["student"]
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

__all__ = ["lm_eval_available", "run_lm_eval", "NOT_INSTALLED"]

NOT_INSTALLED = ("lm-evaluation-harness is not installed, so eval.lm_eval_tasks were skipped: "
                 "pip install lm-eval (then run `distillflow eval` again)")


def lm_eval_available() -> bool:
    return importlib.util.find_spec("lm_eval") is not None


def _teacher_model(teacher) -> tuple[str, dict] | None:
    from distillflow.engine.providers import api_key, base_url
    from distillflow.spec.models import OPENAI_COMPATIBLE

    if teacher.provider in OPENAI_COMPATIBLE:
        args = {"base_url": base_url(teacher) + "/chat/completions", "model": teacher.model,
                "num_concurrent": min(teacher.concurrency, 8), "max_retries": teacher.max_retries,
                "tokenizer_backend": None, "tokenized_requests": False}
        key = api_key(teacher, required=False)
        if key:
            args["auth_token"] = key
        return "local-chat-completions", args
    if teacher.provider == "transformers":
        return "hf", {"pretrained": teacher.model, "dtype": "float32"}
    return None


def _flatten(results: dict) -> dict[str, dict[str, float]]:
    """``{task: {"metric,filter": value}}`` of numbers (stderr entries dropped)."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in (results or {}).items():
        for name, value in metrics.items():
            if name == "alias" or "_stderr" in name or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            out.setdefault(task, {})[name] = float(value)
    return out


def run_lm_eval(tasks: list[str], students: dict[str, str], teacher, limit: int | None = None,
                include_path: str | Path | None = None, log=print) -> dict:
    """Run ``tasks`` for each local model in ``students`` ({key: dir}) and for the teacher.

    Returns ``{"status": "ok"|"skipped", "reason"?, "tasks": {task: {metric: {model_key: value}}},
    "errors": {model_key: message}}``.
    """
    if not tasks:
        return {"status": "skipped", "reason": "no eval.lm_eval_tasks", "tasks": {}, "errors": {}}
    if not lm_eval_available():
        return {"status": "skipped", "reason": NOT_INSTALLED, "tasks": {}, "errors": {}}
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path) if include_path else None)
    models: dict[str, tuple[str, dict]] = {
        key: ("hf", {"pretrained": str(path), "dtype": "float32"}) for key, path in students.items()
    }
    errors: dict[str, str] = {}
    spec = _teacher_model(teacher)
    if spec is None:
        errors["teacher"] = f"provider '{teacher.provider}' is not supported by the lm_eval hook"
    else:
        models["teacher"] = spec
    table: dict[str, dict[str, dict[str, float]]] = {}
    for key, (model, args) in models.items():
        log(f"lm_eval: {', '.join(tasks)} on {key}")
        try:
            res = lm_eval.simple_evaluate(
                model=model, model_args=args, tasks=list(tasks), limit=limit, task_manager=manager,
                apply_chat_template=True, batch_size=1, device=_device(teacher, key) if model == "hf" else None,
                log_samples=False, bootstrap_iters=0, verbosity="ERROR",
            )
        except Exception as err:  # one model's failure must not lose the others' numbers
            errors[key] = f"{type(err).__name__}: {err}"[:500]
            continue
        for task, metrics in _flatten((res or {}).get("results", {})).items():
            for metric, value in metrics.items():
                table.setdefault(task, {}).setdefault(metric, {})[key] = value
    status = "ok" if table else "failed"
    return {"status": status, "tasks": table, "errors": errors, "limit": limit}


def _device(teacher, key: str) -> str:
    return (teacher.device or "cpu") if key == "teacher" else "cpu"
