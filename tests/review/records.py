"""Rows and specs shaped like a real run's (see docs/internals.md), without running anything.

    from tests.review.records import SPEC_YAML, make_row
"""

from __future__ import annotations

SPEC_YAML = """name: qa.review
source:
  kind: inline
  rows: [{q: "What is 2+2?", a: "4"}]
  columns: {prompt: q, reference: a}
teachers:
  - {name: big, provider: openai, base_url: "http://127.0.0.1:9/v1", model: m1}
  - {name: small, provider: openai, base_url: "http://127.0.0.1:9/v1", model: m2}
steps:
  - kind: generate
  - {kind: judge, id: judge, teacher: big}
  - {kind: verify, id: verify, check: contains, reference: reference}
review:
  workspace: team
  mode: required
"""


def make_row(i: int, *, score=4.0, teacher="big", response=None, messages=None, system=None) -> dict:
    prompt = f"question {i}"
    msgs = messages or ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    return {
        "id": f"{i:016x}",
        "prompt_id": f"p{i}",
        "prompt": prompt,
        "system": system,
        "messages": msgs,
        "response": response if response is not None else f"answer {i}",
        "teacher": teacher,
        "generation_index": 0,
        "input_tokens": 5,
        "output_tokens": 7,
        "cost_usd": 0.001,
        "judge_score": score,
        "judge_rationale": f"rationale {i}",
        "judge_status": "scored" if score is not None else "unscored",
        "verify_pass": True,
        "verify_detail": "ok",
        "provenance": {
            "teacher": {"name": teacher},
            "judges": {"judge": {"score": score, "rationale": f"rationale {i}", "model": "m1"}},
            "verifiers": {"verify": {"pass": True, "detail": "ok"}},
            "filters_passed": ["filter"],
            "review": None,
        },
    }
