"""Build a small real run directory for evaluation tests: `distillflow.run` over inline prompts,
the fake teacher endpoint (answers "Answer: <question>") and the deterministic grader."""

from __future__ import annotations

from pathlib import Path

QA = [
    ("Repeat: apple", "apple"), ("What is 2+2?", "4"), ("Repeat: pear", "pear"), ("What is 3+3?", "6"),
    ("Repeat: plum", "plum"), ("Name a colour", "red"), ("Repeat: fig", "fig"), ("What is 5+5?", "10"),
    ("Repeat: kiwi", "kiwi"), ("Capital of France?", "Paris"), ("Repeat: lime", "lime"), ("What is 1+1?", "2"),
]


def pipeline_text(teacher_url: str, grader_url: str, base_model: str | None, heldout: int = 6,
                  eval_section: str = "eval: {max_tokens: 8}") -> str:
    rows = "".join(f'\n    - {{question: "{q}", answer: "{a}"}}' for q, a in QA)
    train = f"train:\n  base_model: {base_model}\n" if base_model else ""
    return f"""name: evalt
source:
  kind: inline
  columns: {{prompt: question, reference: answer}}
  rows:{rows}
  heldout: {{size: {heldout}, seed: 0}}
teachers:
  - name: teacher
    provider: openai
    base_url: {teacher_url}
    model: fake-teacher
    params: {{temperature: 0.5, max_tokens: 16}}
    price: {{input_per_1m: 1.0, output_per_1m: 2.0}}
  - name: grader
    provider: openai
    base_url: {grader_url}
    model: grader
steps:
  - kind: generate
    teachers: [teacher]
    num_generations: 2
  - kind: verify
    check: contains
    reference: reference
  - kind: judge
    teacher: grader
    rubric: correctness
    reference: reference
  - kind: filter
    where: "verify_pass"
{train}{eval_section}
"""


def build_run(root: Path, teacher_url: str, grader_url: str, base_model: str | None, **kw) -> Path:
    import distillflow as df

    path = root / "pipeline.yaml"
    path.write_text(pipeline_text(teacher_url, grader_url, base_model, **kw))
    df.run(df.load(path), out=root / "run", progress=False)
    return root / "run"
