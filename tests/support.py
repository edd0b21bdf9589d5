"""Helpers shared by test modules (import as `from tests.support import ...`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pipeline_yaml(base_url: str, steps: str, rows: str | None = None, extra: str = "", teacher_extra: str = "") -> str:
    """A small YAML pipeline over inline arithmetic-ish prompts and the given endpoint."""
    rows = rows or """
    - {question: "What is 2+2?", answer: "4"}
    - {question: "Say hi", answer: "hi"}
    - {question: "What is 3+3?", answer: "6"}
    - {question: "Name a colour", answer: "red"}"""
    return f"""name: t
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{rows}
teachers:
  - name: teacher
    provider: openai
    base_url: {base_url}
    model: fake-teacher
    params: {{temperature: 0.5, max_tokens: 32}}
    price: {{input_per_1m: 1.0, output_per_1m: 2.0}}
{teacher_extra}
steps:
{steps}
{extra}
"""
