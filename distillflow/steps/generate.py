"""`generate`: ask teachers to answer every prompt (1..n teachers × num_generations).

    - kind: generate
      teachers: [gpt, claude]     # default: every teacher
      num_generations: 2
      params: {temperature: 0.7}

Adds `id`, `response`, `teacher`, `generation_index`, token counts, `cost_usd`, logprob statistics
and the teacher's provenance. A request that fails for good quarantines its record into `rejected`
(steps/quarantine.py).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import math
from typing import Literal

from pydantic import Field

from distillflow.steps.base import GenerationParams, StepBase, StepKind, effective_params
from distillflow.steps.quarantine import quarantine_row

COLUMNS = {
    "id", "response", "teacher", "generation_index", "input_tokens", "output_tokens", "cost_usd",
    "logprob_mean", "logprob_min", "finish_reason",
}


class GenerateStep(StepBase):
    """Ask teachers to answer every prompt."""

    kind: Literal["generate"]
    teachers: list[str] | None = Field(None, description="Teacher names (default: all teachers).")
    num_generations: int = Field(1, ge=1, le=64, description="Answers per prompt per teacher.")
    params: GenerationParams | None = Field(None, description="Overrides of the teachers' params.")


def record_id(prompt_id: str, teacher: str, index: int, response: str) -> str:
    raw = f"{prompt_id}|{teacher}|{index}|{response}".encode()
    return hashlib.sha1(raw).hexdigest()[:16]


def _logprob_stats(lps):
    vals = [x for x in (lps or []) if x is not None and not math.isinf(x)]
    if not vals:
        return None, None
    return sum(vals) / len(vals), min(vals)


def _teacher_names(step, spec) -> list[str]:
    return list(step.teachers or [t.name for t in spec.teachers])


async def run(ctx, step: GenerateStep, rows: list[dict], state=None):
    names = _teacher_names(step, ctx.spec)

    async def one(name):
        teacher = ctx.teacher(name)
        requests = []
        for ri, row in enumerate(rows):
            for g in range(step.num_generations):
                params = effective_params(teacher, step.params)
                if params.get("seed") is not None:
                    params["seed"] = params["seed"] + g  # distinct samples, still reproducible
                requests.append(ctx.request(teacher, row["messages"], params, g, {"row": ri, "g": g}))
        results, failures = await ctx.ask(step.id, teacher, requests)
        return teacher, requests, results, failures

    answered = await asyncio.gather(*(one(n) for n in names))
    kept: list[dict] = []
    rejected: list[dict] = []
    for teacher, requests, results, failures in answered:
        for req in requests:
            row = rows[req.meta["row"]]
            g = req.meta["g"]
            res = results.get(req.key)
            if res is None:
                fail = failures.get(req.key)
                if fail is not None:
                    rejected.append(quarantine_row(row, step.id, fail, teacher=teacher.name, generation_index=g))
                continue  # not dispatched: budget reached or interrupted
            kept.append(answer_row(ctx, row, teacher, req.params, g, res))
    return kept, rejected


def answer_row(ctx, row, teacher, params, g, res) -> dict:
    text = res.text or ""
    lp_mean, lp_min = _logprob_stats(res.token_logprobs)
    cost = ctx.cost(teacher, res.input_tokens, res.output_tokens)
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


KIND = StepKind(
    "generate", GenerateStep, run,
    columns=lambda step: ({"prompt", "messages"}, set(COLUMNS)),
    scope="row", builder="Generate", generates=True,
    teachers=_teacher_names,
)
