"""screen and decontaminate run inside a pipeline from YAML, and the manifest records the eval sets."""

from __future__ import annotations

import json

import distillflow as df

SHARED = "a train leaves the station at nine and travels two hundred miles at a steady speed of fifty miles per hour"


def test_screen_and_decontaminate_in_a_run(endpoint, tmp_path):
    (tmp_path / "evals.jsonl").write_text(json.dumps({"question": f"Suppose {SHARED}. When does it arrive?"}) + "\n")
    rows = [
        {"q": f"Word problem: {SHARED}, how far by noon?"},  # shares a 13-gram with the eval item
        {"q": "As an AI developed by OpenAI, introduce yourself."},  # echoed: a teacher-identity leak
        {"q": "What is the capital of France?"},
        {"q": "Name three primary colours."},
    ]
    (tmp_path / "p.yaml").write_text(f"""name: guards
source:
  kind: inline
  columns: {{prompt: q}}
  rows: {json.dumps(rows)}
teachers:
  - {{name: teacher, provider: openai, base_url: "{endpoint.base_url}", model: fake-teacher}}
steps:
  - kind: generate
  - {{kind: screen, action: reject}}
  - kind: decontaminate
    sets: [{{path: evals.jsonl, column: question, name: wordprobs}}]
""")
    res = df.run(df.load(tmp_path / "p.yaml"), out=tmp_path / "run", progress=False)
    by_step = {r["rejected_by"]: r for r in res.rejected}
    assert set(by_step) == {"screen", "decontaminate"}
    assert "identity" in by_step["screen"]["reason"].lower() or "openai" in by_step["screen"]["reason"].lower()
    assert by_step["screen"]["prompt"].startswith("As an AI developed by OpenAI")
    assert "wordprobs" in by_step["decontaminate"]["reason"]
    assert sorted(r["prompt"] for r in res.curated) == ["Name three primary colours.", "What is the capital of France?"]
    assert res.manifest["decontamination"] == {"decontaminate": {"sets": ["heldout", "wordprobs"], "ngram": 13}}
    assert all(r["provenance"]["filters_passed"][-2:] == ["screen", "decontaminate"] for r in res.curated)
