"""Steps that call teachers: generate (1..n teachers × num_generations) and LLM-as-judge.

Both build keyed requests, let `ledger.ask` serve them from the cache or the endpoint, and turn
answers into rows with provenance. Permanent per-request failures reject that record; an outage
(retries exhausted) raises TeacherError after everything received is cached.
"""

from __future__ import annotations

import copy
import hashlib
import math

from distillflow.engine.ledger import ask, cost_of, is_outage
from distillflow.engine.providers import base_url, effective_params
from distillflow.errors import TeacherError


def make_request(teacher, messages, params, index, meta):
    """A ChatRequest keyed for the cache by teacher identity, params, messages and sample index."""
    from distillflow.engine.cache import request_key
    from distillflow.engine.client import ChatRequest

    key = request_key(teacher.provider, teacher.model, base_url(teacher) or "", params, messages, index)
    return ChatRequest(key=key, messages=messages, params=params, meta=meta)


def _raise_outage(teacher, failures, received: int, ctx) -> None:
    outages = [f for f in failures.values() if is_outage(f)]
    if outages:
        raise TeacherError(
            f"teacher '{teacher.name}' failed {len(outages)} request(s) after retries (last error: {outages[-1].error}). "
            f"{received} answers are cached in {ctx.cache_path}; fix the endpoint and run the same command to resume "
            "— cached answers are not requested again."
        )


def record_id(prompt_id: str, teacher: str, index: int, response: str) -> str:
    raw = f"{prompt_id}|{teacher}|{index}|{response}".encode()
    return hashlib.sha1(raw).hexdigest()[:16]


def _logprob_stats(lps):
    vals = [x for x in (lps or []) if x is not None and not math.isinf(x)]
    if not vals:
        return None, None
    return sum(vals) / len(vals), min(vals)


def run_generate(ctx, step, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    spec = ctx.spec
    names = step.teachers or [t.name for t in spec.teachers]
    kept: list[dict] = []
    rejected: list[dict] = []
    ctx.reporter.step_start(step.id, "generate", len(rows) * len(names) * step.num_generations)
    for name in names:
        teacher = spec.teacher(name)
        requests = []
        for ri, row in enumerate(rows):
            for g in range(step.num_generations):
                params = effective_params(teacher, step.params)
                if params.get("seed") is not None:
                    params["seed"] = params["seed"] + g  # distinct samples, still reproducible
                requests.append(make_request(teacher, row["messages"], params, g, {"row": ri, "g": g}))
        results, failures = ask(ctx, teacher, requests, step.id, label=name)
        _raise_outage(teacher, failures, len(results), ctx)
        for req in requests:
            row = rows[req.meta["row"]]
            g = req.meta["g"]
            res = results.get(req.key)
            if res is None:
                fail = failures.get(req.key)
                if fail is not None:
                    rejected.append({**row, "teacher": name, "generation_index": g, "rejected_by": step.id,
                                     "reason": f"teacher error: {fail.error}"})
                continue  # not dispatched: budget reached or interrupted
            kept.append(_answer_row(row, teacher, req.params, g, res))
    return kept, rejected


def _answer_row(row, teacher, params, g, res) -> dict:
    text = res.text or ""
    lp_mean, lp_min = _logprob_stats(res.token_logprobs)
    cost = cost_of(teacher, res.input_tokens, res.output_tokens)
    prov = copy.deepcopy(row.get("provenance") or {})
    prov["teacher"] = {"name": teacher.name, "provider": teacher.provider, "model": teacher.model,
                       "params": params, "generation_index": g}
    prov["tokens"] = {"input": res.input_tokens, "output": res.output_tokens}
    prov["cost_usd"] = round(cost, 8)
    prov.setdefault("filters_passed", [])
    out = {
        **row,
        "id": record_id(row["prompt_id"], teacher.name, g, text),
        "response": text,
        "teacher": teacher.name,
        "generation_index": g,
        "input_tokens": res.input_tokens,
        "output_tokens": res.output_tokens,
        "cost_usd": cost,
        "logprob_mean": lp_mean,
        "logprob_min": lp_min,
        "finish_reason": res.finish_reason,
        "provenance": prov,
    }
    if params.get("top_logprobs"):  # only when asked: the column is large (K pairs per token)
        out["teacher_top_logprobs"] = res.top_logprobs
    return out


def run_judge(ctx, step, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    from distillflow.steps import judge as J

    teacher = ctx.spec.teacher(step.teacher)
    params = effective_params(teacher)
    params.pop("logprobs", None)
    params.pop("top_logprobs", None)
    if params.get("temperature") is None:
        params["temperature"] = 0.0  # judges should be repeatable
    ctx.reporter.step_start(step.id, "judge", len(rows))
    requests = []
    scale = tuple(step.scale)
    for i, row in enumerate(rows):
        if step.backend == "rubric":
            rubric = J.resolve_rubric(step.rubric, scale)
            msgs = J.build_judge_messages(row, rubric, scale=scale, reference_column=step.reference)
        else:
            msgs = J.distilabel_judge_messages(step.backend, row, **_backend_params(step))
        requests.append(make_request(teacher, msgs, params, 0, {"row": i}))
    results, failures = ask(ctx, teacher, requests, step.id, label=f"{teacher.name} (judge)")
    _raise_outage(teacher, failures, len(results), ctx)
    texts = []
    for req in requests:
        res = results.get(req.key)
        texts.append(None if res is None else (res.text or ""))
    parser = None
    if step.backend != "rubric":
        bp = _backend_params(step)

        def parser(text, row):
            return J.distilabel_judge_parse(step.backend, text, row, **bp)

    out = J.apply_judgements(rows, step.id, texts, teacher.model, scale=scale, parser=parser)
    return out, []


def _backend_params(step) -> dict:
    if step.backend == "ultrafeedback":
        return {"aspect": step.aspect}
    if step.backend == "prometheus":
        rubric = step.rubric
        return {"rubric": rubric, "reference_column": step.reference}
    return {}
