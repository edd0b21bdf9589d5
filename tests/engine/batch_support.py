"""Helpers for the batch-API tests: teachers pointed at the local batch server, requests, a fake caller."""

from __future__ import annotations

import hashlib

from distillflow.engine.client import ChatRequest
from distillflow.spec.models import BatchSpec, PriceSpec, TeacherSpec

ANTHROPIC_KEY_ENV = "DF_TEST_ANTHROPIC_KEY"


def teacher(server, provider: str = "openai", **batch) -> TeacherSpec:
    """A mode: batch teacher on the local server, polling fast (2-core CI: still generous)."""
    settings = {"poll_initial_s": 0.02, "poll_max_s": 0.1, **batch}
    common = dict(name=f"{provider}_t", provider=provider, model="fake-model", mode="batch",
                  batch=BatchSpec(**settings), price=PriceSpec(input_per_1m=2.0, output_per_1m=8.0), max_retries=0)
    if provider == "anthropic":
        return TeacherSpec(base_url=server.root, api_key_env=ANTHROPIC_KEY_ENV, **common)
    return TeacherSpec(base_url=server.openai_url, **common)


def requests(prompts: list[str], max_tokens: int = 64) -> list[ChatRequest]:
    return [ChatRequest(hashlib.sha256(p.encode()).hexdigest(), [{"role": "user", "content": p}],
                        {"max_tokens": max_tokens}, {"prompt": p}) for p in prompts]


class Caller:
    """The engine's side, faked: its request cache is a dict; on_result caches and counts."""

    def __init__(self):
        self.answers: dict = {}
        self.delivered: list[str] = []

    def on_result(self, res) -> None:
        assert res.key not in self.answers, f"answer delivered twice: {res.key}"
        self.answers[res.key] = res
        self.delivered.append(res.key)

    def have(self, keys):
        return [k for k in keys if k in self.answers]


class Budget:
    def __init__(self, max_cost_usd, spent=0.0):
        self.max_cost_usd, self.spent, self.budget_hit = max_cost_usd, spent, False
